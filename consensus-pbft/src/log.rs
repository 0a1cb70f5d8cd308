//! The message log of one sequence number.

use std::collections::{BTreeMap, HashMap};

use medchain_crypto::Hash32;
use medchain_proto::v1;

use crate::ReplicaId;

/// Votes of one kind for one (view, digest), by sender.
pub type Votes = BTreeMap<ReplicaId, v1::PbftMessage>;

/// Everything known about one sequence number.
#[derive(Clone, Debug, Default)]
pub struct Slot {
    /// The accepted pre-prepare: (view, digest, message with batch).
    pub pre_prepare: Option<(u64, Hash32, v1::PbftMessage)>,
    /// Batches seen for this slot, by digest.
    pub batches: HashMap<Hash32, v1::PbftBatch>,
    pub prepares: BTreeMap<(u64, Hash32), Votes>,
    pub commits: BTreeMap<(u64, Hash32), Votes>,
    /// Highest-view prepared certificate: (view, digest, pre-prepare, prepares).
    pub prepared: Option<(u64, Hash32, v1::PbftMessage, Vec<v1::PbftMessage>)>,
    pub sent_prepare: Option<(u64, Hash32)>,
    pub sent_commit: Option<(u64, Hash32)>,
    /// Committed here: (view, digest, the commit messages of the certificate, the signature of
    /// the pre-prepare that proposed it).
    pub committed: Option<(u64, Hash32, Vec<v1::PbftMessage>, Vec<u8>)>,
}

impl Slot {
    /// The digest of the accepted pre-prepare in `view`, if any.
    pub fn accepted_in(&self, view: u64) -> Option<Hash32> {
        match &self.pre_prepare {
            Some((v, d, _)) if *v == view => Some(*d),
            _ => None,
        }
    }

    /// The accepted batch, if its pre-prepare was accepted.
    pub fn accepted_batch(&self) -> Option<&v1::PbftBatch> {
        let (_, d, _) = self.pre_prepare.as_ref()?;
        self.batches.get(d)
    }
}
