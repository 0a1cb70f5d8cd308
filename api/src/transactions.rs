//! `POST /v1/transactions` and `GET /v1/transactions/{id}`.

use serde::{Deserialize, Serialize};

/// A client's transaction: the hex of its canonical protobuf bytes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubmitRequest {
    pub transaction: String,
}

/// 202: accepted for ordering, not yet committed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Accepted {
    /// Hex transaction id (BLAKE3 digest of the body).
    pub id: String,
    /// Always `pending`.
    pub status: String,
}

/// A committed transaction and where it is.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransactionInfo {
    pub id: String,
    /// The contract's reason when the transaction was ordered but refused by a chain rule (it
    /// takes no effect); `None` when it took effect.
    pub failed: Option<String>,
    pub height: u64,
    pub index: u32,
    pub block_hash: String,
    /// Hex of the canonical `Transaction` bytes.
    pub transaction: String,
    /// With `?proof=true`: its inclusion and its outcome, proved.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proof: Option<crate::TransactionProof>,
}
