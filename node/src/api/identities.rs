//! `GET /v1/chain` and `GET /v1/identities/{id}`: the chain a client builds transactions and
//! grants for, and who is registered on it with which keys.

use axum::extract::{Path, State};
use axum::Json;
use medchain_api::{ChainInfo, IdentityInfo, Role, SuspensionInfo};
use medchain_proto::v1;

use crate::api::auth::Caller;
use crate::api::{ident_text, internal, not_found, parse_identity, queries, ApiError};
use crate::private::NodeHandle;

fn role_of(role: i32) -> Role {
    match v1::Role::try_from(role) {
        Ok(v1::Role::Patient) => Role::Patient,
        Ok(v1::Role::Doctor) => Role::Doctor,
        Ok(v1::Role::Insurer) => Role::Insurer,
        Ok(v1::Role::Researcher) => Role::Researcher,
        _ => Role::Unspecified,
    }
}

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
/// else it is not registered.
pub async fn identity(
    State(node): State<NodeHandle>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<IdentityInfo>, ApiError> {
    let id = parse_identity(&id)?;
    let q = queries(&node);
    let unknown = || not_found(format!("{id} is not registered on this chain"));
    let entry = q.identity(&id).map_err(internal)?.ok_or_else(unknown)?;
    if !caller.may_see_identity(&id, &entry) {
        return Err(unknown());
    }
    let suspended = q.suspension(&id).map_err(internal)?;
    Ok(Json(IdentityInfo {
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
    }))
}
