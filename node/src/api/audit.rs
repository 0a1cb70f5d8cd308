//! `GET /v1/audit`: the provenance trail of a record, a patient or an actor, in chain order.

use axum::extract::{Query, State};
use axum::Json;
use medchain_api::{AuditEntry, AuditTrail};
use serde::Deserialize;

use crate::api::auth::Caller;
use crate::api::{bad, ident_text, internal, parse_hash, parse_identity, queries, ApiError};
use crate::private::NodeHandle;
use medchain_ledger::contracts::queries::AuditSubject;

#[derive(Debug, Deserialize)]
pub struct AuditQuery {
    record: Option<String>,
    patient: Option<String>,
    actor: Option<String>,
}

/// `GET /v1/audit?record=SLIP | patient=ID | actor=ID`: the provenance trail in chain order,
/// holding the lines the caller may see (`access.rs`): her own acts and what was done about
/// her; all of it for an authority.
pub async fn audit(
    State(node): State<NodeHandle>,
    caller: Caller,
    Query(q): Query<AuditQuery>,
) -> Result<Json<AuditTrail>, ApiError> {
    let (record, patient, actor);
    let subject = match (&q.record, &q.patient, &q.actor) {
        (Some(r), None, None) => {
            record = parse_hash(r, "record")?;
            AuditSubject::Record(&record)
        }
        (None, Some(p), None) => {
            patient = parse_identity(p)?;
            AuditSubject::Patient(&patient)
        }
        (None, None, Some(a)) => {
            actor = parse_identity(a)?;
            AuditSubject::Actor(&actor)
        }
        _ => {
            return Err(bad(
                "give exactly one of ?record=SLIP, ?patient=ID or ?actor=ID",
            ))
        }
    };
    let by_patient = matches!(subject, AuditSubject::Patient(_)).then_some(());
    let events = queries(&node)
        .audit(subject)
        .map_err(internal)?
        .into_iter()
        .filter(|e| caller.may_see_audit_event(e))
        // A line whose patient the caller may not see cannot be listed under that patient
        // either (it would name her all the same).
        .filter(|e| by_patient.is_none() || caller.may_see_patient_of(e))
        .map(|e| AuditEntry {
            patient: e
                .patient
                .as_deref()
                .filter(|_| caller.may_see_patient_of(&e))
                .map(ident_text),
            op: e.op,
            height: e.height,
            index: e.index,
            time_ms: e.time_ms,
            actor: ident_text(&e.actor),
            record: e.record.map(hex::encode),
            detail: e.detail,
            transaction: hex::encode(e.transaction),
        })
        .collect();
    Ok(Json(AuditTrail { events }))
}
