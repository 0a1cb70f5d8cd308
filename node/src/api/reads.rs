//! `POST /v1/records/{slip}/read`: a record read through this node as a proxy.
//!
//! The body is a `SignedReadRequest` (protobuf). A read is answered only after its access
//! record (who, what, when, result) was accepted for the chain: no read goes unaudited, granted
//! or refused. The patient gets the ciphertext; a grantee also this proxy's capsule fragment.

use std::net::SocketAddr;

use axum::body::Bytes;
use axum::extract::{ConnectInfo, Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use medchain_crypto::delegation::{check_fragment, reencrypt_for_grantee, DelegationVerifyingKey};
use medchain_crypto::keys::EncryptionPublicKey;
use medchain_crypto::record::EncryptedRecord;
use medchain_crypto::{Hash32, Identity};
use medchain_proto::canonical::Canonical;
use medchain_proto::records::verify_read_request;
use medchain_proto::v1;

use crate::api::{bad, internal, not_found, parse_hash, queries, ApiError};
use crate::client::records::ciphertext_address;
use crate::private::access_guard::Refusal;
use crate::private::proxy_fragments::open_fragment;
use crate::private::{now_ms, NodeHandle};
use medchain_ledger::contracts::{self, state::Overlay};

fn refused(status: StatusCode, m: impl Into<String>) -> ApiError {
    ApiError(status, m.into())
}

/// `POST /v1/records/{slip}/read`: a `SignedReadRequest`. See the module docs.
pub async fn read(
    State(node): State<NodeHandle>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(slip): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let result = read_checked(&node, peer, slip, body).await;
    let outcome = match &result {
        Ok(_) => "granted",
        Err(ApiError(StatusCode::FORBIDDEN | StatusCode::GONE, _)) => "refused",
        Err(ApiError(StatusCode::TOO_MANY_REQUESTS, _)) => "throttled",
        Err(ApiError(StatusCode::BAD_REQUEST | StatusCode::CONFLICT, _)) => "bad_request",
        Err(_) => "error",
    };
    node.metrics.record_call("read", outcome);
    result
}

async fn read_checked(
    node: &NodeHandle,
    peer: SocketAddr,
    slip: String,
    body: Bytes,
) -> Result<Response, ApiError> {
    let slip = parse_hash(&slip, "slip id")?;
    let signed = v1::SignedReadRequest::decode_canonical(&body).map_err(|e| {
        bad(format!(
            "the body is not a canonical SignedReadRequest: {e}"
        ))
    })?;
    let req = verify_read_request(&signed).map_err(|e| bad(e.to_string()))?;
    if req.request.chain_id != node.chain_id() {
        return Err(bad(format!(
            "the read request is for chain {:?}; this node serves {:?}",
            req.request.chain_id,
            node.chain_id()
        )));
    }
    if req.slip_id != slip {
        return Err(bad("the signed request names another record than the URL"));
    }
    let me = node.node_key.signing_key().identity();
    if req.node != me {
        return Err(bad(format!(
            "the read request is signed for validator {}; this node is {me}: sign it for the node you send it to",
            req.node
        )));
    }
    // A request some node already recorded on chain is a replay, even after this node restarted
    // (its in-memory replay window starts empty).
    if queries(node).read_recorded(&req.digest).map_err(internal)? {
        return Err(refused(StatusCode::CONFLICT, Refusal::Replay.to_string()));
    }
    // An unregistered key is nobody the chain knows: refused here, with nothing written (an
    // access record per attempt would let any key pair make this node sign transactions).
    if queries(node)
        .identity(&req.reader)
        .map_err(internal)?
        .is_none()
    {
        return Err(refused(
            StatusCode::FORBIDDEN,
            format!(
                "{} is not registered on this chain; an authority registers it with `medchain identity register`",
                req.reader
            ),
        ));
    }
    let now = now_ms();
    let admitted = node.access.lock().unwrap_or_else(|p| p.into_inner()).admit(
        now,
        &req.reader,
        peer.ip(),
        &req.digest,
        req.request.timestamp_ms,
    );
    if !matches!(admitted, Err(Refusal::Replay | Refusal::Stale { .. })) {
        remember(node, &req.digest, now).await?;
    }
    if let Err(refusal) = admitted {
        return match refusal {
            // Not a read attempt at all: nothing to audit twice.
            Refusal::Replay => Err(refused(StatusCode::CONFLICT, refusal.to_string())),
            Refusal::Stale { .. } => Err(bad(refusal.to_string())),
            Refusal::SourceOverLimit { .. } => {
                node.record_access(&req, false, &refusal.to_string(), None)
                    .await?;
                Err(refused(StatusCode::TOO_MANY_REQUESTS, refusal.to_string()))
            }
            Refusal::IdentityOverLimit { newly, .. } => {
                node.record_access(&req, false, &refusal.to_string(), None)
                    .await?;
                if newly {
                    node.suspend(&req.reader, &refusal.to_string()).await?;
                }
                Err(refused(StatusCode::TOO_MANY_REQUESTS, refusal.to_string()))
            }
        };
    }
    match serve_read(node, &req, now) {
        Ok((resp, reason, grant)) => {
            node.record_access(&req, true, &reason, grant).await?;
            Ok((
                [(header::CONTENT_TYPE, "application/x-protobuf")],
                resp.canonical_bytes(),
            )
                .into_response())
        }
        Err(e) => {
            node.record_access(&req, false, &e.1, None).await?;
            Err(e)
        }
    }
}

/// Makes an admitted request durable before anything is served or recorded for it: a node
/// that restarts remembers it (until it could no longer be fresh), so it cannot be replayed
/// there before its access record commits.
async fn remember(node: &NodeHandle, request: &Hash32, now: u64) -> Result<(), ApiError> {
    /// Every this many admitted requests, the expired ones are forgotten on disk too.
    const PRUNE_EVERY: u64 = 256;
    static ADMITTED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let prune = ADMITTED
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        .is_multiple_of(PRUNE_EVERY);
    let store = node.store.clone();
    let request = *request;
    tokio::task::spawn_blocking(move || {
        if prune {
            store.forget_expired_read_requests(now)?;
        }
        store.remember_read_request(&request, now + crate::private::access_guard::REMEMBER_MS)
    })
    .await
    .map_err(internal)?
    .map_err(|e| {
        ApiError(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("this node cannot record the read request now ({e}); retry shortly with a newly signed request"),
        )
    })
}

/// Decides a read and builds the answer: (response, reason for the audit, grant used).
fn serve_read(
    node: &NodeHandle,
    req: &medchain_proto::records::VerifiedReadRequest,
    now: u64,
) -> Result<(v1::ReadResponse, String, Option<Hash32>), ApiError> {
    let ov = Overlay::new(&node.store);
    let forbidden = |m: String| refused(StatusCode::FORBIDDEN, m);
    contracts::registered(&ov, &req.reader, "reader", None)
        .map_err(|e| forbidden(e.to_string()))?;
    contracts::not_suspended(&ov, &req.reader).map_err(|e| forbidden(e.to_string()))?;
    let entry = contracts::slip_entry(&ov, &req.slip_id).map_err(|e| not_found(e.to_string()))?;
    // Access first: a reader without it learns nothing more of the record (not that it was
    // deleted, nor where it is stored).
    let grant = if req.reader.as_bytes() == entry.patient.as_slice() {
        None
    } else {
        let found = contracts::find_grant(
            &ov,
            &req.reader,
            &req.slip_id,
            &entry,
            v1::ConsentAction::Read,
            now,
            &node.store,
        )
        .map_err(internal)?;
        let Some(found) = found else {
            return Err(forbidden(format!(
                "{} holds no valid grant to read record {} (none, expired or revoked); ask the patient with `medchain consent request`",
                req.reader, req.slip_id
            )));
        };
        Some(found)
    };
    if let Some(h) = entry.deleted_height {
        return Err(refused(
            StatusCode::GONE,
            format!(
                "record {} was deleted at height {h}; its ciphertext is erased",
                req.slip_id
            ),
        ));
    }
    let address = Hash32(entry.ciphertext_hash);
    let blob = node
        .store
        .record(&address)
        .map_err(internal)?
        .ok_or_else(|| {
            refused(
                StatusCode::SERVICE_UNAVAILABLE,
                format!(
                    "this node does not hold record {} yet; retry shortly or ask another node",
                    req.slip_id
                ),
            )
        })?;
    if ciphertext_address(&blob) != address {
        tracing::error!(record = %req.slip_id, "stored ciphertext does not match its hash on chain");
        return Err(refused(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!(
                "the stored ciphertext of record {} is corrupted (its hash differs from the chain); this node refuses to serve it — restore it from another node",
                req.slip_id
            ),
        ));
    }
    let Some((grant_id, grant)) = grant else {
        return Ok((
            v1::ReadResponse {
                ciphertext: blob,
                ..Default::default()
            },
            "owner".into(),
            None,
        ));
    };
    let fragment = open_fragment(&node.node_key, &node.store, &grant_id)
        .map_err(internal)?
        .ok_or_else(|| {
            refused(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("this node holds no re-encryption fragment for grant {grant_id}; ask another proxy of the chain"),
            )
        })?;
    let q = queries(node);
    let owner = q
        .identity(&Identity::from_bytes(&grant.patient).map_err(internal)?)
        .map_err(internal)?
        .ok_or_else(|| internal("the grant's patient is not registered"))?;
    let reader = q
        .identity(&req.reader)
        .map_err(internal)?
        .ok_or_else(|| internal("the reader is not registered"))?;
    let owner_key = EncryptionPublicKey::from_bytes(&owner.encryption_key).map_err(internal)?;
    let reader_key = EncryptionPublicKey::from_bytes(&reader.encryption_key).map_err(internal)?;
    let vk = DelegationVerifyingKey::from_bytes(&grant.delegation_key).map_err(internal)?;
    let checked = check_fragment(&fragment, &vk, &owner_key, &reader_key).map_err(internal)?;
    let record = EncryptedRecord::from_bytes(&blob).map_err(internal)?;
    let capsule_fragment = reencrypt_for_grantee(&record, &checked);
    Ok((
        v1::ReadResponse {
            ciphertext: blob,
            capsule_fragment,
            grant: grant_id.as_bytes().to_vec(),
            owner_encryption_key: owner.encryption_key.clone(),
            delegation_key: grant.delegation_key.clone(),
            threshold: grant.threshold,
            proxy: node.me,
        },
        format!("grant {grant_id}"),
        Some(grant_id),
    ))
}
