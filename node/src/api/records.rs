//! The record workflow's client API (described in `docs/api/openapi.yaml`): chain description,
//! identities, record upload and reads through the proxy, tamper check, consent listings and the
//! audit trail.
//!
//! Uploads and reads carry protobuf bodies (`application/x-protobuf`): a record is up to 16 MiB
//! of ciphertext, which JSON would double. A read is answered only after its access record (who,
//! what, when, result) was accepted for the chain: no read goes unaudited, granted or refused.

use std::net::SocketAddr;

use axum::body::Bytes;
use axum::extract::{ConnectInfo, Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use medchain_api::{
    AuditEntry, AuditTrail, ChainInfo, ConsentList, GrantInfo, GrantStatus, IdentityInfo,
    IntegrityStatus, PatientRecords, RecordAccepted, RecordSlip, RecordView, RequestInfo,
    RequestOutcome as OutcomeInfo, RequestStatus, Role, SuspensionInfo, VerifyReport,
};
use medchain_crypto::delegation::{check_fragment, reencrypt_for_grantee, DelegationVerifyingKey};
use medchain_crypto::keys::EncryptionPublicKey;
use medchain_crypto::record::EncryptedRecord;
use medchain_crypto::{Hash32, Identity};
use medchain_proto::canonical::{limits, Canonical};
use medchain_proto::records::{action_names, verify_read_request};
use medchain_proto::v1::{self, transaction_body::Payload};
use serde::Deserialize;

use crate::api::{internal, parse_hash, slip_json, ApiError};
use crate::client::records::ciphertext_address;
use crate::contracts::queries::{AuditSubject, Queries};
use crate::contracts::state::{GrantEntry, RequestEntry, RequestOutcome, SlipEntry};
use crate::contracts::{self, state::Overlay};
use crate::private::access_guard::Refusal;
use crate::private::proxy_fragments::fragment_key;
use crate::private::{now_ms, NodeHandle};

fn bad(m: impl Into<String>) -> ApiError {
    ApiError(StatusCode::BAD_REQUEST, m.into())
}

fn not_found(m: impl Into<String>) -> ApiError {
    ApiError(StatusCode::NOT_FOUND, m.into())
}

fn parse_identity(text: &str) -> Result<Identity, ApiError> {
    text.parse::<Identity>()
        .map_err(|e| bad(format!("identity {text:?}: {e}")))
}

fn queries(node: &NodeHandle) -> Queries<'_> {
    node.ledger.queries()
}

fn role_of(role: i32) -> Role {
    match v1::Role::try_from(role) {
        Ok(v1::Role::Patient) => Role::Patient,
        Ok(v1::Role::Doctor) => Role::Doctor,
        _ => Role::Unspecified,
    }
}

fn ident_text(bytes: &[u8]) -> String {
    Identity::from_bytes(bytes)
        .map(|i| i.to_string())
        .unwrap_or_else(|_| hex::encode(bytes))
}

/// `GET /v1/chain`: what a client needs to build transactions and grants.
pub async fn chain(State(node): State<NodeHandle>) -> Json<ChainInfo> {
    Json((*node.chain).clone())
}

/// `GET /v1/identities/{id}`.
pub async fn identity(
    State(node): State<NodeHandle>,
    Path(id): Path<String>,
) -> Result<Json<IdentityInfo>, ApiError> {
    let id = parse_identity(&id)?;
    let q = queries(&node);
    let entry = q
        .identity(&id)
        .map_err(internal)?
        .ok_or_else(|| not_found(format!("{id} is not registered on this chain")))?;
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

/// `POST /v1/records`: a `RecordUpload` (signed slip transaction + ciphertext). The node checks
/// the transaction like any other (signatures, registration, replay), checks the ciphertext
/// against the slip's content address and size, stores it, pushes it to the other validators and
/// queues the transaction. Nothing is stored if any check fails.
pub async fn upload(State(node): State<NodeHandle>, body: Bytes) -> Result<Response, ApiError> {
    let result = upload_checked(&node, body).await;
    let outcome = if result.is_ok() {
        "accepted"
    } else {
        "refused"
    };
    node.metrics.record_call("upload", outcome);
    result
}

async fn upload_checked(node: &NodeHandle, body: Bytes) -> Result<Response, ApiError> {
    if body.len() > limits::RECORD_MESSAGE {
        return Err(ApiError(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "upload of {} bytes: records are limited to {} bytes (16 MiB) of plaintext",
                body.len(),
                limits::RECORD_PLAINTEXT
            ),
        ));
    }
    let upload = v1::RecordUpload::decode_canonical(&body)
        .map_err(|e| bad(format!("the body is not a canonical RecordUpload: {e}")))?;
    let tx = upload
        .transaction
        .ok_or_else(|| bad("the upload carries no transaction"))?;
    let content = match tx.body.as_ref().and_then(|b| b.payload.as_ref()) {
        Some(Payload::PrivateSlip(s)) => s.content.clone().unwrap_or_default(),
        _ => return Err(bad("the upload's transaction must carry a private slip")),
    };
    medchain_proto::records::check_slip_fields(&content).map_err(|e| bad(e.to_string()))?;
    let address = ciphertext_address(&upload.ciphertext);
    if address.as_bytes() != content.ciphertext_hash.as_slice()
        || upload.ciphertext.len() as u64 != content.ciphertext_size
    {
        return Err(bad(
            "the ciphertext does not match the slip's ciphertext_hash and ciphertext_size",
        ));
    }
    // The framing only: the node cannot decrypt it, and the patient's client checks the rest.
    EncryptedRecord::check_format(&upload.ciphertext)
        .map_err(|e| bad(format!("the ciphertext is not an encrypted record: {e}")))?;
    let bytes = tx.canonical_bytes();
    let slip_id = slip_id_of(&tx);
    let checked = node
        .check_client_decoded(tx, bytes)
        .await
        .map_err(|e| submit_error(node, e))?;
    // Store before the slip can commit anywhere, then let the other stores have it.
    let store = node.store.clone();
    let ciphertext = upload.ciphertext;
    let ciphertext = tokio::task::spawn_blocking(move || {
        store.put_record(&address, &ciphertext).map(|()| ciphertext)
    })
    .await
    .map_err(internal)?
    .map_err(internal)?;
    node.push_blob(ciphertext).await;
    let id = node
        .queue(checked)
        .await
        .map_err(|e| submit_error(node, e))?;
    Ok((
        StatusCode::ACCEPTED,
        Json(RecordAccepted {
            id: id.to_hex(),
            slip_id: slip_id.to_hex(),
            status: "pending".into(),
        }),
    )
        .into_response())
}

fn slip_id_of(tx: &v1::Transaction) -> Hash32 {
    match tx.body.as_ref().and_then(|b| b.payload.as_ref()) {
        Some(Payload::PrivateSlip(s)) => Hash32::from_slice(&s.slip_id).unwrap_or_default(),
        _ => Hash32::default(),
    }
}

fn submit_error(node: &NodeHandle, e: crate::private::SubmitError) -> ApiError {
    node.metrics.reject(crate::api::reject_reason(&e));
    crate::api::submit_error(e)
}

fn record_state(node: &NodeHandle, slip: &Hash32) -> Result<(RecordSlip, SlipEntry), ApiError> {
    let (loc, s) = node
        .store
        .slip(slip)
        .map_err(internal)?
        .ok_or_else(|| not_found(format!("record {slip} does not exist on this chain")))?;
    let entry = queries(node)
        .slip(slip)
        .map_err(internal)?
        .ok_or_else(|| internal(format!("record {slip} has no state entry")))?;
    let stored = node.store.has_record(&Hash32(entry.ciphertext_hash));
    let mut public = slip_json(slip, loc, &s)?;
    public.patient_confirmed = entry.confirmed_height.is_some();
    let state = RecordSlip {
        slip: public,
        confirmed_height: entry.confirmed_height,
        deleted_height: entry.deleted_height,
        replaced_by: entry.replaced_by.map(hex::encode),
        stored_here: stored,
    };
    Ok((state, entry))
}

/// `GET /v1/records/{slip}`: the slip and its state (confirmed, deleted, corrected).
pub async fn record(
    State(node): State<NodeHandle>,
    Path(slip): Path<String>,
) -> Result<Json<RecordView>, ApiError> {
    let slip = parse_hash(&slip, "slip id")?;
    Ok(Json(RecordView {
        slip: record_state(&node, &slip)?.0,
    }))
}

/// `GET /v1/records/{slip}/verify`: recompute the stored ciphertext's hash and compare it with
/// the chain. (The plaintext hash H(M) is checked by whoever decrypts: the client does.)
pub async fn verify(
    State(node): State<NodeHandle>,
    Path(slip): Path<String>,
) -> Result<Json<VerifyReport>, ApiError> {
    let slip = parse_hash(&slip, "slip id")?;
    let (state, entry) = record_state(&node, &slip)?;
    let expected = Hash32(entry.ciphertext_hash);
    let stored = node.store.record(&expected).map_err(internal)?;
    let (status, actual) = match (&stored, entry.deleted_height) {
        (_, Some(_)) => (IntegrityStatus::Deleted, None),
        (None, None) => (IntegrityStatus::Missing, None),
        (Some(b), None) => {
            let h = ciphertext_address(b);
            let status = if h == expected {
                IntegrityStatus::Intact
            } else {
                IntegrityStatus::Corrupted
            };
            (status, Some(h))
        }
    };
    Ok(Json(VerifyReport {
        slip_id: slip.to_hex(),
        status,
        ciphertext_hash_on_chain: expected.to_hex(),
        ciphertext_hash_stored: actual.map(|h| h.to_hex()),
        record_hash_on_chain: state.slip.record_hash,
        node: node.name().to_string(),
    }))
}

#[derive(Debug, Deserialize)]
pub struct PatientQuery {
    #[serde(default)]
    pending: bool,
}

/// `GET /v1/patients/{id}/records[?pending=true]`: a patient's records in chain order.
pub async fn patient_records(
    State(node): State<NodeHandle>,
    Path(id): Path<String>,
    Query(q): Query<PatientQuery>,
) -> Result<Json<PatientRecords>, ApiError> {
    let id = parse_identity(&id)?;
    let mut out = Vec::new();
    for slip in node.store.patient_slips(id.as_bytes()).map_err(internal)? {
        let (v, entry) = record_state(&node, &slip)?;
        if q.pending && (entry.confirmed_height.is_some() || entry.deleted_height.is_some()) {
            continue;
        }
        out.push(v);
    }
    Ok(Json(PatientRecords {
        patient: id.to_string(),
        records: out,
    }))
}

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

/// `GET /v1/consent?patient=ID` or `?grantee=ID`: grants and requests.
pub async fn consent(
    State(node): State<NodeHandle>,
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
        .map(|(id, g)| grant_json(id, g, now))
        .collect();
    let requests = requests
        .map_err(internal)?
        .iter()
        .map(|(id, r)| request_json(id, r))
        .collect();
    Ok(Json(ConsentList { grants, requests }))
}

#[derive(Debug, Deserialize)]
pub struct AuditQuery {
    record: Option<String>,
    patient: Option<String>,
    actor: Option<String>,
}

/// `GET /v1/audit?record=SLIP | patient=ID | actor=ID`: the provenance trail in chain order.
pub async fn audit(
    State(node): State<NodeHandle>,
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
    let events = queries(&node)
        .audit(subject)
        .map_err(internal)?
        .into_iter()
        .map(|e| AuditEntry {
            op: e.op,
            height: e.height,
            index: e.index,
            time_ms: e.time_ms,
            actor: ident_text(&e.actor),
            patient: e.patient.as_deref().map(ident_text),
            record: e.record.map(hex::encode),
            detail: e.detail,
            transaction: hex::encode(e.transaction),
        })
        .collect();
    Ok(Json(AuditTrail { events }))
}

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
    // A request some node already recorded on chain is a replay, even after this node restarted
    // (its in-memory replay window starts empty).
    if queries(node).read_recorded(&req.digest).map_err(internal)? {
        return Err(refused(StatusCode::CONFLICT, Refusal::Replay.to_string()));
    }
    let now = now_ms();
    let admitted = node.access.lock().unwrap_or_else(|p| p.into_inner()).admit(
        now,
        &req.reader,
        peer.ip(),
        &req.digest,
        req.request.timestamp_ms,
    );
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
    if req.reader.as_bytes() == entry.patient.as_slice() {
        return Ok((
            v1::ReadResponse {
                ciphertext: blob,
                ..Default::default()
            },
            "owner".into(),
            None,
        ));
    }
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
    let Some((grant_id, grant)) = found else {
        return Err(forbidden(format!(
            "{} holds no valid grant to read record {} (none, expired or revoked); ask the patient with `medchain consent request`",
            req.reader, req.slip_id
        )));
    };
    let fragment = node
        .store
        .node_secret(&fragment_key(&grant_id))
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
