//! `GET /v1/consent`: a patient's or a grantee's grants and requests.

use serde::{Deserialize, Serialize};

/// Grants and requests, in chain order.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsentList {
    pub grants: Vec<GrantInfo>,
    pub requests: Vec<RequestInfo>,
    /// With `?proof=true` (rules 6): both counted lists whole (the grants', then the
    /// requests'), each as its length, its entries and the grant or request each names.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proof: Option<crate::StateProofs>,
}

/// Whether a grant still lets its grantee act.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum GrantStatus {
    Active,
    Expired,
    Revoked,
}

impl std::fmt::Display for GrantStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            GrantStatus::Active => "active",
            GrantStatus::Expired => "expired",
            GrantStatus::Revoked => "revoked",
        })
    }
}

/// A patient's consent to a grantee.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GrantInfo {
    pub grant: String,
    pub patient: String,
    pub grantee: String,
    /// `all`, `record:SLIP` or `type:TYPE`.
    pub scope: String,
    /// `read`, `write`, ...
    pub actions: Vec<String>,
    pub expires_ms: u64,
    /// Fragments needed to re-encrypt.
    pub threshold: u32,
    /// Validator indexes holding a re-encryption fragment.
    pub proxies: Vec<u32>,
    /// The request this grant approved, if any.
    pub request: Option<String>,
    pub height: u64,
    pub revoked_height: Option<u64>,
    pub status: GrantStatus,
}

/// Where a request stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RequestStatus {
    Open,
    Approved,
    Denied,
}

impl std::fmt::Display for RequestStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            RequestStatus::Open => "open",
            RequestStatus::Approved => "approved",
            RequestStatus::Denied => "denied",
        })
    }
}

/// How a request was answered: the grant that approved it, or the denial's reason.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestOutcome {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grant: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub height: u64,
}

/// A doctor's request for a patient's consent.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestInfo {
    pub request: String,
    pub requester: String,
    pub patient: String,
    pub scope: String,
    pub actions: Vec<String>,
    pub expires_ms: u64,
    pub purpose: String,
    pub height: u64,
    pub status: RequestStatus,
    /// `None` while open.
    pub outcome: Option<RequestOutcome>,
}
