//! `GET /v1/consent`: the grants and requests of a patient or of a grantee.

use axum::extract::{Query, State};
use axum::Json;
use medchain_api::{
    ConsentList, GrantInfo, GrantStatus, RequestInfo, RequestOutcome as OutcomeInfo, RequestStatus,
};
use medchain_crypto::Hash32;
use medchain_proto::records::action_names;
use serde::Deserialize;

use crate::api::auth::Caller;
use crate::api::{bad, ident_text, internal, parse_identity, queries, ApiError};
use crate::private::{now_ms, NodeHandle};
use medchain_ledger::contracts::state::{GrantEntry, RequestEntry, RequestOutcome};

#[derive(Debug, Deserialize)]
pub struct ConsentQuery {
    patient: Option<String>,
    grantee: Option<String>,
}

fn grant_json(id: &Hash32, g: &GrantEntry, now: u64) -> GrantInfo {
    let status = if g.revoked_height.is_some() {
        GrantStatus::Revoked
    } else if g.expires_ms <= now {
        GrantStatus::Expired
    } else {
        GrantStatus::Active
    };
    GrantInfo {
        grant: id.to_hex(),
        patient: ident_text(&g.patient),
        grantee: ident_text(&g.grantee),
        scope: g.scope.describe(),
        actions: action_names(g.actions)
            .into_iter()
            .map(String::from)
            .collect(),
        expires_ms: g.expires_ms,
        threshold: g.threshold,
        proxies: g.proxies.clone(),
        request: g.request.map(hex::encode),
        height: g.height,
        revoked_height: g.revoked_height,
        status,
    }
}

fn request_json(id: &Hash32, r: &RequestEntry) -> RequestInfo {
    let (status, outcome) = match &r.outcome {
        RequestOutcome::Open => (RequestStatus::Open, None),
        RequestOutcome::Approved { grant, height } => (
            RequestStatus::Approved,
            Some(OutcomeInfo {
                grant: Some(hex::encode(grant)),
                reason: None,
                height: *height,
            }),
        ),
        RequestOutcome::Denied { reason, height } => (
            RequestStatus::Denied,
            Some(OutcomeInfo {
                grant: None,
                reason: Some(reason.clone()),
                height: *height,
            }),
        ),
    };
    RequestInfo {
        request: id.to_hex(),
        requester: ident_text(&r.requester),
        patient: ident_text(&r.patient),
        scope: r.scope.describe(),
        actions: action_names(r.actions)
            .into_iter()
            .map(String::from)
            .collect(),
        expires_ms: r.expires_ms,
        purpose: r.purpose.clone(),
        height: r.height,
        status,
        outcome,
    }
}

/// `GET /v1/consent?patient=ID` or `?grantee=ID`: the grants and requests the caller is a
/// party to (all of them for an authority).
pub async fn consent(
    State(node): State<NodeHandle>,
    caller: Caller,
    Query(q): Query<ConsentQuery>,
) -> Result<Json<ConsentList>, ApiError> {
    let now = now_ms();
    let queries = queries(&node);
    let (grants, requests) = match (&q.patient, &q.grantee) {
        (Some(p), None) => {
            let p = parse_identity(p)?;
            (queries.grants_of_patient(&p), queries.requests_to(&p))
        }
        (None, Some(g)) => {
            let g = parse_identity(g)?;
            (queries.grants_to(&g), queries.requests_by(&g))
        }
        _ => return Err(bad("give exactly one of ?patient=ID or ?grantee=ID")),
    };
    let grants = grants
        .map_err(internal)?
        .iter()
        .filter(|(_, g)| caller.may_see_grant(g))
        .map(|(id, g)| grant_json(id, g, now))
        .collect();
    let requests = requests
        .map_err(internal)?
        .iter()
        .filter(|(_, r)| caller.may_see_request(r))
        .map(|(id, r)| request_json(id, r))
        .collect();
    Ok(Json(ConsentList { grants, requests }))
}
