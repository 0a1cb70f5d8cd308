//! Proof-carrying answers: what a client checks an answer against instead of trusting the node.
//!
//! A [`CertifiedHeader`] is a block header with its header certificate (2f + 1 validators'
//! signatures over the header's hash); a [`StateProofs`] adds Merkle proofs of chain-state
//! entries against that header's state root. All bytes travel as hex of their canonical
//! encoding, so the client re-derives every hash itself.

use serde::{Deserialize, Serialize};

/// A header and, once the validators' votes are in, its certificate.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CertifiedHeader {
    pub height: u64,
    /// Hex of the canonical `BlockHeader` bytes.
    pub header: String,
    /// Hex of the canonical `HeaderCertificate` bytes; absent if this node has none for it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate: Option<String>,
}

/// `GET /v1/headers?from=H&count=N`: consecutive headers from `from`, for header-only sync.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeaderList {
    pub headers: Vec<CertifiedHeader>,
    /// This node's tip.
    pub tip: u64,
}

/// One chain-state entry and its proof.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProvedEntry {
    /// Hex of the chain-state key.
    pub key: String,
    /// Hex of the value's bytes; absent for a proof of absence.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    /// Hex of the Merkle proof (the `jmt` crate's borsh encoding).
    pub proof: String,
}

/// Entries of the state after block `header.height`, with their proofs against its root.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateProofs {
    pub header: CertifiedHeader,
    pub entries: Vec<ProvedEntry>,
}

/// `?proof=true` on an endpoint that can prove its answer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProofQuery {
    #[serde(default)]
    pub proof: bool,
}

/// A transaction's inclusion in its block: a Merkle path from the transaction's canonical bytes
/// to the `merkle_root` of the block's header.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InclusionProof {
    /// The block's header (with its certificate if this node holds one).
    pub header: CertifiedHeader,
    /// Hex of the transaction's canonical bytes.
    pub transaction: String,
    /// The transaction's position in the block, and how many the block has.
    pub index: u64,
    pub leaf_count: u64,
    /// Hex of the sibling hashes from the leaf level upwards.
    pub siblings: Vec<String>,
}

/// `GET /v1/records/{slip}?proof=true`: the slip's chain-state entry (who, ciphertext hash,
/// confirmed, deleted, corrected) proved against a certified state root, and the transaction
/// that wrote the slip (content, doctor's signature, H(M)) proved in its block.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordProof {
    pub state: StateProofs,
    pub inclusion: InclusionProof,
}

/// `GET /v1/transactions/{id}?proof=true`: the transaction in its block (a Merkle path to the
/// header's `merkle_root`), and its outcome in the state: the `fail/` entry with the contract's
/// reason, or its proved absence (it took effect).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransactionProof {
    pub inclusion: InclusionProof,
    pub outcome: StateProofs,
}
