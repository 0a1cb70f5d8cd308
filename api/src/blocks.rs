//! Committed blocks: `GET /v1/blocks/{height}` and the events of `GET /v1/events`.

use serde::{Deserialize, Serialize};

/// A committed block as the API shows it. `header` and `certificate` carry the canonical bytes
/// of the header and its commit certificate (public: light clients check them); `block`, the
/// whole block with every transaction, only for a validator or an authority.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Block {
    pub height: u64,
    /// Hex of the block hash.
    pub hash: String,
    pub previous_hash: String,
    pub timestamp_ms: u64,
    /// `mcid1…` identity of the validator that built the batch.
    pub creator: String,
    pub merkle_root: String,
    /// Hex of the root of the authenticated chain state after this block (rules 5; empty
    /// before).
    pub state_root: String,
    pub transaction_count: u32,
    /// Hex ids of its transactions, in order.
    pub transactions: Vec<String>,
    pub commit: CommitInfo,
    /// Hex of the `BlockHeader` bytes.
    pub header: String,
    /// Hex of the `CommitCertificate` bytes.
    pub certificate: String,
    /// Hex of the canonical `Block` bytes, with its commit certificate: for validators and
    /// authorities only (absent otherwise).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub block: Option<String>,
}

/// Who certified a block.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommitInfo {
    pub view: u64,
    /// Validator indexes whose commit signatures the certificate holds.
    pub signers: Vec<u32>,
}

/// `event: block` of `GET /v1/events`: a block this node committed, in commit order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlockEvent {
    pub height: u64,
    pub hash: String,
    pub timestamp_ms: u64,
    /// Hex ids of the transactions that took effect.
    pub transactions: Vec<String>,
    /// Hex ids of the transactions ordered in the block but refused by a chain rule (final as
    /// well; `GET /v1/transactions/{id}` says why). Absent from nodes before it was added.
    #[serde(default)]
    pub failed: Vec<String>,
}

impl BlockEvent {
    /// Whether the block settled transaction `id` (hex), taking effect or refused.
    pub fn settles(&self, id: &str) -> bool {
        self.transactions
            .iter()
            .chain(&self.failed)
            .any(|t| t == id)
    }
}

/// `event: lagged` of `GET /v1/events`: the client read too slowly and missed `missed` blocks;
/// it should look up what it waits for directly.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lagged {
    pub missed: u64,
}
