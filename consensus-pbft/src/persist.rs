//! What a replica must remember across a crash so that it never contradicts itself.
//!
//! Executed batches are not here: the ledger is the record of what was executed, and
//! [`crate::Replica::restore`] takes its tip. What is here bounds what the replica may sign next:
//! its view and status, the last sequence number it assigned as primary, and, for every sequence
//! number in the window, the pre-prepare it accepted, the prepare and commit it sent, and its
//! prepared certificate (which a later view change must report). Messages are kept as their
//! canonical bytes.

use serde::{Deserialize, Serialize};

/// One sequence number's durable record.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SlotRecord {
    pub seq: u64,
    /// The accepted pre-prepare (with its batch), as canonical bytes.
    pub pre_prepare: Option<Vec<u8>>,
    /// (view, digest) of the prepare this replica sent.
    pub sent_prepare: Option<(u64, [u8; 32])>,
    /// (view, digest) of the commit this replica sent.
    pub sent_commit: Option<(u64, [u8; 32])>,
    /// Prepared certificate: the pre-prepare followed by the prepares, canonical bytes.
    pub prepared: Option<Vec<Vec<u8>>>,
}

/// The durable state of a replica.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PersistedState {
    pub view: u64,
    /// True while changing to `view` (no new view accepted yet).
    pub view_changing: bool,
    /// Highest sequence number this replica assigned as primary.
    pub next_seq: u64,
    pub stable_seq: u64,
    pub stable_digest: [u8; 32],
    /// The quorum of checkpoint messages proving the stable checkpoint.
    pub stable_proof: Vec<Vec<u8>>,
    pub slots: Vec<SlotRecord>,
    /// The last view change this replica sent, re-sent after a restart.
    pub last_view_change: Option<Vec<u8>>,
}
