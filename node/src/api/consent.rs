//! `GET /v1/consent`: the grants and requests of a patient or of a grantee.

use axum::extract::{Query, State};
use axum::Json;
use medchain_api::{ConsentList, GrantInfo, RequestInfo};
use serde::Deserialize;

use crate::api::auth::Caller;
use crate::api::{bad, forbidden, internal, parse_identity, proofs, queries, ApiError};
use crate::private::{now_ms, NodeHandle};
use crate::views;
use medchain_ledger::contracts::state::keys;
use medchain_ledger::ListRange;

#[derive(Debug, Deserialize)]
pub struct ConsentQuery {
    patient: Option<String>,
    grantee: Option<String>,
    #[serde(default)]
    proof: bool,
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
    let (grants, requests, lists) = match (&q.patient, &q.grantee) {
        (Some(p), None) => {
            let p = parse_identity(p)?;
            let lists = [
                keys::grants_by_patient(p.as_bytes()),
                keys::requests_by_patient(p.as_bytes()),
            ];
            (
                queries.grants_of_patient(&p),
                queries.requests_to(&p),
                lists,
            )
        }
        (None, Some(g)) => {
            let g = parse_identity(g)?;
            let lists = [
                keys::grants_by_grantee(g.as_bytes()),
                keys::requests_by_requester(g.as_bytes()),
            ];
            (queries.grants_to(&g), queries.requests_by(&g), lists)
        }
        _ => return Err(bad("give exactly one of ?patient=ID or ?grantee=ID")),
    };
    let (grants, requests) = (grants.map_err(internal)?, requests.map_err(internal)?);
    let shown_grants: Vec<GrantInfo> = grants
        .iter()
        .filter(|(_, g)| caller.may_see_grant(g))
        .map(|(id, g)| views::grant_info(id, g, now))
        .collect();
    let shown_requests: Vec<RequestInfo> = requests
        .iter()
        .filter(|(_, r)| caller.may_see_request(r))
        .map(|(id, r)| views::request_info(id, r))
        .collect();
    let proof = if q.proof {
        // A proof shows every entry of both lists, so only to a caller who may see them all.
        if shown_grants.len() < grants.len() || shown_requests.len() < requests.len() {
            return Err(forbidden(
                "a proof covers these lists whole, and they hold grants or requests you are no \
                 party to: ask without ?proof=true",
            ));
        }
        let [grant_list, request_list] = lists;
        let pages = [
            ListRange::first(grant_list, true),
            ListRange::first(request_list, true),
        ];
        Some(proofs::prove_lists(&node, &pages).await?)
    } else {
        None
    };
    Ok(Json(ConsentList {
        grants: shown_grants,
        requests: shown_requests,
        proof,
    }))
}
