//! `GET /v1/identities/{id}`: a registered participant.

use serde::{Deserialize, Serialize};

/// A participant's role on the chain.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Patient,
    Doctor,
    /// A data user (contract rules 2): requests access and reads under a grant, never writes.
    Insurer,
    /// A data user (contract rules 2), as an insurer.
    Researcher,
    Unspecified,
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Role::Patient => "patient",
            Role::Doctor => "doctor",
            Role::Insurer => "insurer",
            Role::Researcher => "researcher",
            Role::Unspecified => "unspecified",
        })
    }
}

/// A registration: role, name, the public keys others encrypt and search with, suspension.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdentityInfo {
    pub identity: String,
    pub role: Role,
    /// Display name; empty for a patient registered under rules 3 or later, whose name is not
    /// on chain.
    pub name: String,
    /// Hex of the record-encryption public key.
    pub encryption_key: String,
    /// Hex of the keyword-search public key.
    pub search_key: String,
    /// Height of the registration.
    pub height: u64,
    pub registered_by: String,
    pub suspended: Option<SuspensionInfo>,
    /// With `?proof=true`: the registration and suspension entries with their proofs against a
    /// certified header; the client reads the keys from the proved entries.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proof: Option<crate::proofs::StateProofs>,
}

/// Why and by whom a participant is suspended.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SuspensionInfo {
    pub reason: String,
    pub height: u64,
    pub by: String,
}
