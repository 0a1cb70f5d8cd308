//! `GET /v1/chain` and `GET /v1/identities/{id}`: the chain a client builds transactions and
//! grants for, and who is registered on it with which keys.

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use medchain_api::{ChainInfo, ErrorBody, IdentityInfo, ProofQuery, SuspensionInfo};
use medchain_ledger::contracts::state::keys;

use crate::api::auth::Caller;
use crate::api::{ident_text, internal, not_found, parse_identity, queries, ApiError};
use crate::client::role_of;
use crate::private::NodeHandle;

/// `GET /v1/chain`: what a client needs to build transactions and grants, with the rules the
/// next block runs and the upgrade scheduled on chain (read from the committed state).
pub async fn chain(State(node): State<NodeHandle>) -> Result<Json<ChainInfo>, ApiError> {
    let mut info = (*node.chain).clone();
    let (rules, upgrade) = node.ledger.rules_now().map_err(internal)?;
    info.rules = rules;
    info.rules_upgrade = upgrade.map(|u| medchain_api::RulesUpgradeInfo {
        version: u.version,
        activation_height: u.activation_height,
        scheduled_at: u.scheduled_at,
    });
    Ok(Json(info))
}

/// `GET /v1/identities/{id}`: for whoever may see that participant (`access.rs`); to anyone
/// else it is not registered. With `?proof=true` the registration and suspension entries come
/// with their proofs against a certified header.
pub async fn identity(
    State(node): State<NodeHandle>,
    caller: Caller,
    Path(id): Path<String>,
    Query(query): Query<ProofQuery>,
) -> Result<Response, ApiError> {
    let id = parse_identity(&id)?;
    let q = queries(&node);
    let unknown = || not_found(format!("{id} is not registered on this chain"));
    let Some(entry) = q.identity(&id).map_err(internal)? else {
        if query.proof && caller.may_learn_absence() {
            let proof =
                super::proofs::prove(&node, &[keys::identity(&id), keys::suspension(&id)]).await?;
            let body = ErrorBody {
                error: format!("{id} is not registered on this chain (proved)"),
                proof: Some(proof),
            };
            return Ok((StatusCode::NOT_FOUND, Json(body)).into_response());
        }
        return Err(unknown());
    };
    if !caller.may_see_identity(&id, &entry) {
        return Err(unknown());
    }
    let suspended = q.suspension(&id).map_err(internal)?;
    let proof = if query.proof {
        Some(super::proofs::prove(&node, &[keys::identity(&id), keys::suspension(&id)]).await?)
    } else {
        None
    };
    Ok(Json(IdentityInfo {
        proof,
        identity: id.to_string(),
        role: role_of(entry.role),
        name: entry.name,
        encryption_key: hex::encode(&entry.encryption_key),
        search_key: hex::encode(&entry.search_key),
        height: entry.height,
        registered_by: ident_text(&entry.registered_by),
        suspended: suspended.map(|s| SuspensionInfo {
            reason: s.reason,
            height: s.height,
            by: ident_text(&s.by),
        }),
    })
    .into_response())
}
