//! Records: slips (`GET /v1/slips/{id}`), their state (`GET /v1/records/{slip}`), a patient's
//! list, uploads and the tamper check.

use serde::{Deserialize, Serialize};

/// A committed private slip's public fields: hashes, encrypted address and keywords, parties.
/// `slip` carries the signed protobuf, which the other fields only repeat.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Slip {
    pub slip_id: String,
    pub height: u64,
    pub index: u32,
    pub timestamp_ms: u64,
    pub record_type: String,
    pub summary: String,
    pub doctor: String,
    pub patient: String,
    /// Hex of H(M), the plaintext's hash: a reader checks what it decrypts against it.
    pub record_hash: String,
    pub encrypted_address: String,
    pub encrypted_keywords: Vec<String>,
    pub patient_confirmed: bool,
    pub ciphertext_hash: String,
    pub ciphertext_size: u64,
    /// Hex of the slip this one corrects, empty when none.
    pub replaces: String,
    /// Hex of the `PrivateSlip` protobuf.
    pub slip: String,
}

/// A slip with its state on chain and on this node.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordSlip {
    #[serde(flatten)]
    pub slip: Slip,
    pub confirmed_height: Option<u64>,
    pub deleted_height: Option<u64>,
    /// Hex of the slip that corrected this one.
    pub replaced_by: Option<String>,
    /// Whether this node holds the ciphertext.
    pub stored_here: bool,
}

impl RecordSlip {
    /// The record's state in words, for listings.
    pub fn state_text(&self) -> String {
        if let Some(h) = self.deleted_height {
            format!("deleted at height {h}")
        } else if let Some(h) = self.confirmed_height {
            format!("confirmed at height {h}")
        } else {
            "awaiting the patient's confirmation".into()
        }
    }
}

/// `GET /v1/records/{slip}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordView {
    pub slip: RecordSlip,
    /// With `?proof=true`: what the client checks this answer against.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proof: Option<crate::RecordProof>,
}

/// `GET /v1/patients/{id}/records`: a patient's records in chain order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PatientRecords {
    pub patient: String,
    pub records: Vec<RecordSlip>,
}

/// 202 of `POST /v1/records`: the slip's transaction is queued.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordAccepted {
    pub id: String,
    pub slip_id: String,
    /// Always `pending`.
    pub status: String,
}

/// What the tamper check found.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum IntegrityStatus {
    /// The stored ciphertext hashes to the value on chain.
    Intact,
    /// It does not: the copy on this node was altered.
    Corrupted,
    /// This node holds no copy (not replicated here yet, or lost).
    Missing,
    /// The record was deleted; its ciphertext is erased everywhere.
    Deleted,
}

impl std::fmt::Display for IntegrityStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            IntegrityStatus::Intact => "intact",
            IntegrityStatus::Corrupted => "corrupted",
            IntegrityStatus::Missing => "missing",
            IntegrityStatus::Deleted => "deleted",
        })
    }
}

/// `GET /v1/records/{slip}/verify`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VerifyReport {
    pub slip_id: String,
    pub status: IntegrityStatus,
    pub ciphertext_hash_on_chain: String,
    pub ciphertext_hash_stored: Option<String>,
    pub record_hash_on_chain: String,
    /// The node that checked its copy.
    pub node: String,
}
