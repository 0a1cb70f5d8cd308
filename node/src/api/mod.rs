//! The client API: HTTP/JSON (axum), described in `docs/api/openapi.yaml`, answering with the
//! types of the `medchain-api` crate. This file holds the router, errors and the node, transaction,
//! block and slip routes; each other resource family has its own file.
//!
//! Why HTTP/JSON and not gRPC: hospital integration engines, web clients and operators' tools all
//! speak HTTP and JSON natively (curl works), and the payloads that matter are already canonical
//! protobuf bytes signed on the client, which travel hex-encoded inside JSON untouched. gRPC would
//! add an HTTP/2 stack and generated stubs on every client for no gain in what is signed.
//!
//! Errors are JSON `{"error": "..."}` with a status that says what to do: 400 for a malformed or
//! invalid transaction (fix it), 409 for a replay (it is already there), 503 when the mempool is full
//! (retry later), 404 for unknown objects.

use std::net::SocketAddr;

use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use medchain_api::{
    Accepted, Block, CommitInfo, ErrorBody, Health, Ready, Slip, Status, SubmitRequest,
    TransactionInfo,
};
use medchain_crypto::{Hash32, Identity};
use medchain_proto::canonical::{limits, Canonical, Hashed};
use medchain_proto::ledger::{block_hash, verify_private_slip};
use medchain_proto::v1;

use crate::api::auth::Caller;
use crate::mempool::MempoolError;
use crate::private::{NodeHandle, OwnTxError, SubmitError};
use medchain_ledger::TxError;

/// An API error: the status that tells the client what to do, and the message.
#[derive(Debug)]
pub struct ApiError(pub StatusCode, pub String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: self.1.clone(),
            proof: None,
        };
        let mut response = (self.0, Json(body)).into_response();
        if self.0 == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                axum::http::header::WWW_AUTHENTICATE,
                axum::http::HeaderValue::from_static("Bearer realm=\"medchain\""),
            );
        }
        response.extensions_mut().insert(Refusal(self.1));
        response
    }
}

impl From<OwnTxError> for ApiError {
    fn from(e: OwnTxError) -> Self {
        let status = match e {
            OwnTxError::Refused(_) => StatusCode::INTERNAL_SERVER_ERROR,
            OwnTxError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        };
        ApiError(status, e.to_string())
    }
}

/// The message of a refused request, carried to the logging layer.
#[derive(Clone, Debug)]
struct Refusal(String);

/// Logs every refused request with its method, path, source, status and reason: client errors at
/// info (a "not found" at debug, since clients poll for their transactions), server errors at
/// error. Refusals the framework makes itself (bad JSON, bodies over the limit) are logged too,
/// with the status's name as the reason.
async fn log_refusals(
    axum::extract::ConnectInfo(source): axum::extract::ConnectInfo<SocketAddr>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let method = request.method().clone();
    let path = request.uri().path().to_string();
    let response = next.run(request).await;
    let status = response.status();
    if status.is_client_error() || status.is_server_error() {
        let reason = response
            .extensions()
            .get::<Refusal>()
            .map_or(status.canonical_reason().unwrap_or(""), |r| r.0.as_str());
        let source = source.ip();
        let code = status.as_u16();
        if status.is_server_error() {
            tracing::error!(%method, path, %source, status = code, reason, "request failed");
        } else if status == StatusCode::NOT_FOUND {
            tracing::debug!(%method, path, %source, status = code, reason, "not found");
        } else {
            tracing::info!(%method, path, %source, status = code, reason, "refused a request");
        }
    }
    response
}

pub(crate) fn internal(e: impl std::fmt::Display) -> ApiError {
    ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
}

pub(crate) fn parse_hash(text: &str, what: &str) -> Result<Hash32, ApiError> {
    Hash32::from_hex(text).map_err(|_| {
        ApiError(
            StatusCode::BAD_REQUEST,
            format!("{what} must be 64 hex characters"),
        )
    })
}

/// The API's routes, with a fresh authentication gate (tokens of an earlier process are void).
pub fn router(node: NodeHandle) -> Router {
    let gate = std::sync::Arc::new(auth::Gate::new(&node));
    Router::new()
        .route("/health", get(health))
        .route("/v1/auth/challenge", post(auth::challenge))
        .route("/v1/auth/token", post(auth::token))
        .route("/v1/status", get(status))
        .route("/ready", get(ready))
        .route("/metrics", get(metrics))
        .route("/v1/transactions", post(submit))
        .route("/v1/transactions/{id}", get(transaction))
        .route("/v1/events", get(events::events))
        .route("/v1/blocks/latest", get(latest_block))
        .route("/v1/blocks/{height}", get(block))
        .route("/v1/headers", get(proofs::headers))
        .route("/v1/slips/{id}", get(slip))
        .route("/v1/chain", get(identities::chain))
        .route("/v1/identities/{id}", get(identities::identity))
        .route("/v1/records/{slip}", get(records::record))
        .route("/v1/records/{slip}/verify", get(records::verify))
        .route("/v1/records/{slip}/read", post(reads::read))
        .route("/v1/patients/{id}/records", get(records::patient_records))
        .route("/v1/consent", get(consent::consent))
        .route("/v1/audit", get(audit::audit))
        // Hex doubles the bytes; allow a maximal transaction plus JSON framing.
        .layer(DefaultBodyLimit::max(limits::TRANSACTION * 2 + 1_024))
        // Record uploads carry up to 16 MiB of ciphertext as protobuf.
        .merge(
            Router::new()
                .route("/v1/records", post(records::upload))
                .layer(DefaultBodyLimit::max(limits::RECORD_MESSAGE + 1_024)),
        )
        .layer(axum::Extension(gate))
        .layer(axum::middleware::from_fn(log_refusals))
        .with_state(node)
}

async fn health() -> Json<Health> {
    Json(Health {
        status: "ok".into(),
    })
}

async fn status(State(node): State<NodeHandle>) -> Json<Status> {
    Json(node.status.borrow().clone())
}

/// 200 when the node is in consensus (enough peers for a quorum) and caught up; 503 with the
/// reason otherwise. For load balancers and orchestrators; `/health` only says the process answers.
async fn ready(State(node): State<NodeHandle>) -> (StatusCode, Json<Ready>) {
    let ready = node.status.borrow().readiness();
    let code = if ready.ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, Json(ready))
}

/// Prometheus text exposition.
async fn metrics(State(node): State<NodeHandle>) -> Response {
    let status = node.status.borrow().clone();
    let text = node.metrics.render(&status, node.store.path());
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
        .into_response()
}

async fn submit(
    State(node): State<NodeHandle>,
    Json(req): Json<SubmitRequest>,
) -> Result<(StatusCode, Json<Accepted>), ApiError> {
    let bytes = hex::decode(req.transaction.trim()).map_err(|_| {
        ApiError(
            StatusCode::BAD_REQUEST,
            "`transaction` must be the hex of the transaction's canonical protobuf bytes".into(),
        )
    })?;
    if bytes.len() > limits::TRANSACTION {
        return Err(ApiError(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "transaction of {} bytes is over the {}-byte limit",
                bytes.len(),
                limits::TRANSACTION
            ),
        ));
    }
    match node.submit(bytes).await {
        Ok(id) => Ok((
            StatusCode::ACCEPTED,
            Json(Accepted {
                id: id.to_hex(),
                status: "pending".into(),
            }),
        )),
        Err(e) => {
            node.metrics.reject(reject_reason(&e));
            Err(submit_error(e))
        }
    }
}

/// The metric label of a refusal.
pub(crate) fn reject_reason(e: &SubmitError) -> &'static str {
    match e {
        SubmitError::Tx(TxError::Malformed(_)) => "malformed",
        SubmitError::Tx(TxError::WrongChain { .. }) => "wrong_chain",
        SubmitError::Tx(TxError::Invalid(_)) => "invalid_signature_or_form",
        SubmitError::Tx(TxError::AlreadyCommitted { .. }) => "already_committed",
        SubmitError::Tx(TxError::NonceUsed { .. }) => "nonce_used",
        SubmitError::Tx(TxError::Refused(_)) => "refused_by_contract",
        SubmitError::Tx(TxError::Storage(_)) => "storage",
        SubmitError::Tx(TxError::UnknownRules { .. }) => "unknown_rules",
        SubmitError::Mempool(MempoolError::Full { .. }) => "mempool_full",
        SubmitError::Mempool(MempoolError::Duplicate(_)) => "duplicate",
        SubmitError::Mempool(MempoolError::NonceTaken { .. }) => "nonce_pending",
        SubmitError::Mempool(MempoolError::SignerQuota { .. }) => "signer_quota",
        SubmitError::Mempool(MempoolError::KindQuota { .. }) => "kind_quota",
        SubmitError::Mempool(MempoolError::SignerBytes { .. }) => "signer_bytes_quota",
        SubmitError::Mempool(MempoolError::CiphertextPending { .. }) => "ciphertext_pending",
        SubmitError::Closed => "shutting_down",
        SubmitError::SlipWithoutCiphertext => "slip_without_ciphertext",
    }
}

/// The status that tells a client what to do about a refused submission.
pub(crate) fn submit_error(e: SubmitError) -> ApiError {
    let code = match &e {
        SubmitError::Tx(TxError::AlreadyCommitted { .. } | TxError::NonceUsed { .. })
        | SubmitError::Mempool(
            MempoolError::Duplicate(_)
            | MempoolError::NonceTaken { .. }
            | MempoolError::CiphertextPending { .. },
        ) => StatusCode::CONFLICT,
        SubmitError::Mempool(MempoolError::Full { .. } | MempoolError::KindQuota { .. })
        | SubmitError::Tx(TxError::UnknownRules { .. })
        | SubmitError::Closed => StatusCode::SERVICE_UNAVAILABLE,
        SubmitError::Mempool(
            MempoolError::SignerQuota { .. } | MempoolError::SignerBytes { .. },
        ) => StatusCode::TOO_MANY_REQUESTS,
        SubmitError::Tx(TxError::Storage(_)) => StatusCode::INTERNAL_SERVER_ERROR,
        SubmitError::SlipWithoutCiphertext => StatusCode::BAD_REQUEST,
        SubmitError::Tx(TxError::Refused(_)) => StatusCode::FORBIDDEN,
        SubmitError::Tx(_) => StatusCode::BAD_REQUEST,
    };
    ApiError(code, e.to_string())
}

/// `GET /v1/transactions/{id}`: for its signer, validators and authorities; to anyone else
/// it does not exist. With `?proof=true` its inclusion in its block and its outcome (the
/// contract's `fail/` entry, or its absence) come proved.
async fn transaction(
    State(node): State<NodeHandle>,
    caller: Caller,
    Path(id): Path<String>,
    Query(query): Query<medchain_api::ProofQuery>,
) -> Result<Json<TransactionInfo>, ApiError> {
    let id = parse_hash(&id, "transaction id")?;
    let unknown = || {
        ApiError(
            StatusCode::NOT_FOUND,
            format!(
                "transaction {} is not committed (or not yours to see)",
                id.to_hex()
            ),
        )
    };
    let loc = node
        .store
        .transaction_location(&id)
        .map_err(internal)?
        .ok_or_else(unknown)?;
    let block = node
        .store
        .block(loc.height)
        .map_err(internal)?
        .ok_or_else(|| internal("indexed block missing"))?;
    let tx = block
        .transactions
        .get(loc.index as usize)
        .ok_or_else(|| internal("indexed transaction missing"))?;
    let signer = tx
        .body
        .as_ref()
        .and_then(|b| Identity::from_bytes(&b.signer).ok());
    if !signer.is_some_and(|s| caller.may_see_transaction(&s)) {
        return Err(unknown());
    }
    let failed = node.ledger.queries().failure(&id).map_err(internal)?;
    let proof = if query.proof {
        Some(medchain_api::TransactionProof {
            inclusion: proofs::include(&node, loc.height, loc.index, proofs::CERTIFICATE_WAIT)
                .await?,
            outcome: proofs::prove(
                &node,
                &[medchain_ledger::contracts::state::keys::failure(&id)],
            )
            .await?,
        })
    } else {
        None
    };
    Ok(Json(TransactionInfo {
        id: id.to_hex(),
        failed,
        height: loc.height,
        index: loc.index,
        block_hash: block_hash(&block).map_err(internal)?.to_hex(),
        transaction: hex::encode(tx.canonical_bytes()),
        proof,
    }))
}

/// A block as `caller` may see it: the header, its commit certificate and the transaction ids
/// for anyone; the whole block's bytes for validators and authorities.
fn block_json(block: &v1::Block, caller: Option<&Caller>) -> Result<Block, ApiError> {
    let header = block.header.clone().unwrap_or_default();
    let cert = block.commit.clone().unwrap_or_default();
    Ok(Block {
        height: header.height,
        hash: block_hash(block).map_err(internal)?.to_hex(),
        previous_hash: hex::encode(&header.previous_hash),
        timestamp_ms: header.timestamp_ms,
        creator: medchain_crypto::Identity::from_bytes(&header.creator)
            .map(|i| i.to_string())
            .unwrap_or_default(),
        merkle_root: hex::encode(&header.merkle_root),
        state_root: hex::encode(&header.state_root),
        transaction_count: header.transaction_count,
        transactions: block
            .transactions
            .iter()
            .filter_map(|t| t.body.as_ref().map(|b| b.digest().to_hex()))
            .collect(),
        commit: CommitInfo {
            view: cert.view,
            signers: cert.signatures.iter().map(|s| s.validator).collect(),
        },
        header: hex::encode(prost::Message::encode_to_vec(&header)),
        certificate: hex::encode(prost::Message::encode_to_vec(&cert)),
        block: caller
            .is_some_and(Caller::sees_block_bodies)
            .then(|| hex::encode(block.canonical_bytes())),
    })
}

async fn block(
    State(node): State<NodeHandle>,
    caller: Option<Caller>,
    Path(height): Path<String>,
) -> Result<Json<Block>, ApiError> {
    let height: u64 = height.parse().map_err(|_| {
        ApiError(
            StatusCode::BAD_REQUEST,
            "height must be a number (or `latest`)".into(),
        )
    })?;
    let b = node.store.block(height).map_err(internal)?.ok_or_else(|| {
        ApiError(
            StatusCode::NOT_FOUND,
            format!("no block at height {height}"),
        )
    })?;
    Ok(Json(block_json(&b, caller.as_ref())?))
}

async fn latest_block(
    State(node): State<NodeHandle>,
    caller: Option<Caller>,
) -> Result<Json<Block>, ApiError> {
    let tip = node
        .store
        .tip()
        .map_err(internal)?
        .ok_or_else(|| ApiError(StatusCode::NOT_FOUND, "no block committed yet".into()))?;
    let b = node
        .store
        .block(tip.height)
        .map_err(internal)?
        .ok_or_else(|| internal("tip block missing"))?;
    Ok(Json(block_json(&b, caller.as_ref())?))
}

/// `GET /v1/slips/{id}`: for whoever may see the record.
async fn slip(
    State(node): State<NodeHandle>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Slip>, ApiError> {
    let id = parse_hash(&id, "slip id")?;
    let unknown = || {
        ApiError(
            StatusCode::NOT_FOUND,
            format!(
                "slip {} is not committed (or not yours to see)",
                id.to_hex()
            ),
        )
    };
    let (loc, slip) = node
        .store
        .slip(&id)
        .map_err(internal)?
        .ok_or_else(unknown)?;
    let entry = queries(&node)
        .slip(&id)
        .map_err(internal)?
        .ok_or_else(unknown)?;
    if !caller.may_see_record(&node, &id, &entry)? {
        return Err(unknown());
    }
    let mut shown = slip_json(&id, loc, &slip)?;
    // The patient's confirmation is a later transaction: the chain state has it, the slip
    // as written does not.
    shown.patient_confirmed = entry.confirmed_height.is_some();
    Ok(Json(shown))
}

/// A committed slip as the API shows it.
pub(crate) fn slip_json(
    id: &Hash32,
    loc: medchain_storage::TxLocation,
    slip: &v1::PrivateSlip,
) -> Result<Slip, ApiError> {
    let parties = verify_private_slip(slip).map_err(internal)?;
    let content = slip.content.clone().unwrap_or_default();
    Ok(Slip {
        slip_id: id.to_hex(),
        height: loc.height,
        index: loc.index,
        timestamp_ms: content.timestamp_ms,
        record_type: content.record_type,
        summary: content.summary,
        doctor: parties.doctor.to_string(),
        patient: parties.patient.to_string(),
        record_hash: parties.record_hash.to_hex(),
        encrypted_address: hex::encode(&content.encrypted_address),
        encrypted_keywords: content.encrypted_keywords.iter().map(hex::encode).collect(),
        patient_confirmed: !slip.patient_signature.is_empty(),
        ciphertext_hash: hex::encode(&content.ciphertext_hash),
        ciphertext_size: content.ciphertext_size,
        replaces: hex::encode(&content.replaces),
        slip: hex::encode(prost::Message::encode_to_vec(slip)),
    })
}

pub(crate) fn bad(m: impl Into<String>) -> ApiError {
    ApiError(StatusCode::BAD_REQUEST, m.into())
}

pub(crate) fn forbidden(m: impl Into<String>) -> ApiError {
    ApiError(StatusCode::FORBIDDEN, m.into())
}

pub(crate) fn not_found(m: impl Into<String>) -> ApiError {
    ApiError(StatusCode::NOT_FOUND, m.into())
}

pub(crate) fn parse_identity(text: &str) -> Result<Identity, ApiError> {
    text.parse::<Identity>()
        .map_err(|e| bad(format!("identity {text:?}: {e}")))
}

/// The committed state's questions (the handlers read through these, never through keys).
pub(crate) fn queries(node: &NodeHandle) -> medchain_ledger::contracts::queries::Queries<'_> {
    node.ledger.queries()
}

pub(crate) use crate::views::ident_text;

mod access;
mod audit;
mod auth;
mod consent;
mod events;
mod identities;
mod proofs;
mod reads;
mod records;
mod serve;

pub use serve::serve;
