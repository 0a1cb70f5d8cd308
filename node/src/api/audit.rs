//! `GET /v1/audit`: the provenance trail of a record, a patient or an actor, in chain order.

use axum::extract::{Query, State};
use axum::Json;
use medchain_api::{AuditEntry, AuditTrail};
use serde::Deserialize;

use crate::api::auth::Caller;
use crate::api::{bad, forbidden, internal, parse_hash, parse_identity, proofs, queries, ApiError};
use crate::private::NodeHandle;
use crate::views;
use medchain_ledger::contracts::queries::AuditSubject;
use medchain_ledger::ListRange;

#[derive(Debug, Deserialize)]
pub struct AuditQuery {
    record: Option<String>,
    patient: Option<String>,
    actor: Option<String>,
    #[serde(default)]
    proof: bool,
    /// With `proof`: the first position of the page proved (default 0).
    #[serde(default)]
    from: u64,
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
    let list = subject.trail();
    let all = queries(&node).audit(subject).map_err(internal)?;
    let total = all.len();
    let patient_hidden = all
        .iter()
        .any(|e| e.patient.is_some() && !caller.may_see_patient_of(e));
    let events: Vec<AuditEntry> = all
        .into_iter()
        .filter(|e| caller.may_see_audit_event(e))
        // A line whose patient the caller may not see cannot be listed under that patient
        // either (it would name her all the same).
        .filter(|e| by_patient.is_none() || caller.may_see_patient_of(e))
        .map(|e| {
            let show = caller.may_see_patient_of(&e);
            views::audit_entry(e, show)
        })
        .collect();
    let proof = if q.proof {
        // A proof shows every event of the trail, so only to a caller who may see them all
        // (and each event's patient: the proved event names her).
        if events.len() < total || patient_hidden {
            return Err(forbidden(
                "a proof covers this trail whole, and it holds events you may not see: ask \
                 without ?proof=true",
            ));
        }
        let page = ListRange {
            list,
            refs: false,
            from: q.from,
        };
        Some(proofs::prove_lists(&node, &[page]).await?)
    } else {
        None
    };
    Ok(Json(AuditTrail { events, proof }))
}
