//! What a node must remember across a crash so that it never contradicts itself: everything it
//! signed at the current height, its lock, and the block it would re-propose. The final chain is
//! not here; it is the driver's ledger, handed back through [`crate::ChainState`].

use serde::{Deserialize, Serialize};

/// The durable consensus state of one height.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PersistedState {
    pub height: u64,
    pub round: u64,
    /// (round, canonical block bytes) of the block this auditor is locked on.
    pub locked: Option<(u64, Vec<u8>)>,
    /// (round, canonical block bytes) of the latest block a quorum prevoted.
    pub valid: Option<(u64, Vec<u8>)>,
    /// Canonical bytes of every proposal this node signed at `height`, with its block.
    pub proposals: Vec<(Vec<u8>, Vec<u8>)>,
    /// Canonical bytes of every vote this node signed at `height`.
    pub votes: Vec<Vec<u8>>,
}
