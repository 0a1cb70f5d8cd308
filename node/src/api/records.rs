//! Records: uploads (`POST /v1/records`), a record's slip and state, the tamper check, and a
//! patient's records.
//!
//! Uploads carry protobuf bodies (`application/x-protobuf`): a record is up to 16 MiB of
//! ciphertext, which JSON would double.

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use medchain_api::{
    IntegrityStatus, PatientRecords, RecordAccepted, RecordSlip, RecordView, VerifyReport,
};
use medchain_crypto::record::EncryptedRecord;
use medchain_crypto::Hash32;
use medchain_proto::canonical::{limits, Canonical};
use medchain_proto::v1::{self, transaction_body::Payload};
use serde::Deserialize;

use crate::api::auth::{Caller, Uploader};
use crate::api::{
    bad, internal, not_found, parse_hash, parse_identity, proofs, queries, slip_json, ApiError,
};
use crate::client::records::ciphertext_address;
use crate::private::NodeHandle;
use medchain_ledger::contracts::state::SlipEntry;

/// `POST /v1/records`: a `RecordUpload` (signed slip transaction + ciphertext). The node checks
/// the transaction like any other (signatures, registration, replay), checks the ciphertext
/// against the slip's content address and size, stages it, queues the transaction, and once the
/// mempool admits it puts the ciphertext in place and pushes both to the other validators.
/// Nothing is stored if any check or the admission fails.
///
/// Only an authenticated doctor uploads, and only her own slips: the token is checked before
/// the body is read, so a stranger cannot make the node buffer 16 MiB.
pub async fn upload(
    State(node): State<NodeHandle>,
    Uploader(caller): Uploader,
    body: Bytes,
) -> Result<Response, ApiError> {
    let result = upload_checked(&node, &caller, body).await;
    let outcome = if result.is_ok() {
        "accepted"
    } else {
        "refused"
    };
    node.metrics.record_call("upload", outcome);
    result
}

async fn upload_checked(
    node: &NodeHandle,
    caller: &Caller,
    body: Bytes,
) -> Result<Response, ApiError> {
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
    if tx.body.as_ref().map(|b| b.signer.as_slice()) != Some(caller.id.as_bytes().as_slice()) {
        return Err(ApiError(
            StatusCode::FORBIDDEN,
            format!(
                "the upload's transaction is not signed by {}, the caller: upload your own records",
                caller.id
            ),
        ));
    }
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
    let slip_id = slip_id_of(&tx);
    let checked = node
        .check_client_decoded(tx)
        .await
        .map_err(|e| submit_error(node, e))?;
    // Staged (written and synced) before the slip is admitted, so it is durable before the slip
    // can commit anywhere; put in place only once admitted, so a refused slip stores nothing.
    let store = node.store.clone();
    let ciphertext = upload.ciphertext;
    let (staged, ciphertext) = tokio::task::spawn_blocking(move || {
        store
            .stage_record(&address, &ciphertext)
            .map(|s| (s, ciphertext))
    })
    .await
    .map_err(internal)?
    .map_err(internal)?;
    let transaction = checked.bytes.clone();
    let id = node
        .queue(checked)
        .await
        .map_err(|e| submit_error(node, e))?;
    tokio::task::spawn_blocking(move || staged.commit())
        .await
        .map_err(internal)?
        .map_err(|e| {
            tracing::error!(blob = %address, error = %e, "an admitted record's ciphertext could not be put in place; the other validators' copies serve it");
            internal(e)
        })?;
    node.push_blob(ciphertext, transaction).await;
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

/// Record `slip` as `caller` may see it: to anyone else it does not exist.
fn record_state(
    node: &NodeHandle,
    caller: &Caller,
    slip: &Hash32,
) -> Result<(RecordSlip, SlipEntry), ApiError> {
    let unknown = || not_found(format!("record {slip} does not exist on this chain"));
    let entry = queries(node)
        .slip(slip)
        .map_err(internal)?
        .ok_or_else(unknown)?;
    if !caller.may_see_record(node, slip, &entry)? {
        return Err(unknown());
    }
    let (loc, s) = node
        .store
        .slip(slip)
        .map_err(internal)?
        .ok_or_else(|| internal(format!("record {slip} has state but no slip")))?;
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

/// `GET /v1/records/{slip}`: the slip and its state (confirmed, deleted, corrected); with
/// `?proof=true`, the slip's state entry proved against a certified state root and its
/// transaction's inclusion in its block.
pub async fn record(
    State(node): State<NodeHandle>,
    caller: Caller,
    Path(slip): Path<String>,
    Query(want): Query<medchain_api::ProofQuery>,
) -> Result<Json<RecordView>, ApiError> {
    let slip = parse_hash(&slip, "slip id")?;
    let state = record_state(&node, &caller, &slip)?.0;
    let proof = match want.proof {
        false => None,
        true => Some(medchain_api::RecordProof {
            state: proofs::prove(
                &node,
                &[medchain_ledger::contracts::state::keys::slip(&slip)],
            )
            .await?,
            inclusion: proofs::include(
                &node,
                state.slip.height,
                state.slip.index,
                std::time::Duration::ZERO,
            )
            .await?,
        }),
    };
    Ok(Json(RecordView { slip: state, proof }))
}

/// `GET /v1/records/{slip}/verify`: recompute the stored ciphertext's hash and compare it with
/// the chain. (The plaintext hash H(M) is checked by whoever decrypts: the client does.)
pub async fn verify(
    State(node): State<NodeHandle>,
    caller: Caller,
    Path(slip): Path<String>,
) -> Result<Json<VerifyReport>, ApiError> {
    let slip = parse_hash(&slip, "slip id")?;
    let (state, entry) = record_state(&node, &caller, &slip)?;
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

/// `GET /v1/patients/{id}/records[?pending=true]`: a patient's records in chain order, those
/// the caller may see (all for the patient herself or an authority; for a doctor those she
/// wrote or holds a grant for; none for anyone else).
pub async fn patient_records(
    State(node): State<NodeHandle>,
    caller: Caller,
    Path(id): Path<String>,
    Query(q): Query<PatientQuery>,
) -> Result<Json<PatientRecords>, ApiError> {
    let id = parse_identity(&id)?;
    let mut out = Vec::new();
    for slip in node.store.patient_slips(id.as_bytes()).map_err(internal)? {
        let (v, entry) = match record_state(&node, &caller, &slip) {
            Ok(found) => found,
            Err(ApiError(StatusCode::NOT_FOUND, _)) => continue,
            Err(e) => return Err(e),
        };
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
