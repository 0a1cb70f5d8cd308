//! `GET /v1/audit`: the provenance trail of a record, a patient or an actor.

use serde::{Deserialize, Serialize};

/// Events in chain order.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditTrail {
    pub events: Vec<AuditEntry>,
    /// With `?proof=true` (rules 6): the subject's counted list whole, its length and then
    /// every event. Events of the trail from before rules 6 are not in it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proof: Option<crate::StateProofs>,
}

/// One thing that happened: a write, confirmation, grant, read (granted or refused), ...
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEntry {
    pub op: String,
    pub height: u64,
    pub index: u32,
    pub time_ms: u64,
    pub actor: String,
    pub patient: Option<String>,
    pub record: Option<String>,
    pub detail: String,
    /// Hex id of the transaction that recorded it.
    pub transaction: String,
}
