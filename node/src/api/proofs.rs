//! `GET /v1/headers` (header-only sync for light clients) and the proofs other handlers attach
//! to their answers with `?proof=true`: chain-state entries with Merkle proofs against the state
//! root of a header the validators certified.

use std::time::Duration;

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::Json;
use medchain_api::{CertifiedHeader, HeaderList, InclusionProof, ProvedEntry, StateProofs};
use medchain_crypto::merkle::{leaf_hash, MerkleProof};
use medchain_ledger::state_tree::StateTreeError;
use medchain_ledger::ListRange;
use medchain_proto::canonical::Canonical;
use serde::Deserialize;

use crate::api::{bad, internal, ApiError};
use crate::private::NodeHandle;

/// Most headers in one answer.
pub const MAX_HEADERS: u64 = 1_000;
/// How long an answer waits for the certificate of a block that just committed.
pub(crate) const CERTIFICATE_WAIT: Duration = Duration::from_secs(5);

#[derive(Debug, Deserialize)]
pub struct HeaderRange {
    from: u64,
    #[serde(default = "default_count")]
    count: u64,
}

fn default_count() -> u64 {
    MAX_HEADERS
}

/// `GET /v1/headers?from=H&count=N`: headers `H..H+N` (at most [`MAX_HEADERS`]) with the
/// certificates this node holds. Headers are public: they name no patient.
pub async fn headers(
    State(node): State<NodeHandle>,
    Query(range): Query<HeaderRange>,
) -> Result<Json<HeaderList>, ApiError> {
    if range.from == 0 {
        return Err(bad("from must be a height of 1 or more"));
    }
    let tip = node.store.tip().map_err(internal)?.map_or(0, |t| t.height);
    let last = tip.min(range.from.saturating_add(range.count.clamp(1, MAX_HEADERS)) - 1);
    let mut headers = Vec::new();
    for height in range.from..=last {
        headers.push(certified_header(&node, height, Duration::ZERO).await?);
    }
    Ok(Json(HeaderList { headers, tip }))
}

/// The header of block `height` with its certificate, waiting up to `wait` for it.
async fn certified_header(
    node: &NodeHandle,
    height: u64,
    wait: Duration,
) -> Result<CertifiedHeader, ApiError> {
    let header = node
        .store
        .header(height)
        .map_err(internal)?
        .ok_or_else(|| internal(format!("block {height} is missing from the store")))?;
    let certificate = node
        .header_certificate(height, wait)
        .await
        .map_err(internal)?;
    Ok(CertifiedHeader {
        height,
        header: hex::encode(header.canonical_bytes()),
        certificate: certificate.map(|c| hex::encode(c.canonical_bytes())),
    })
}

/// `keys`' entries in the state of this node's tip, with proofs against its state root and the
/// header's certificate. The caller has already decided the asker may see these entries.
pub(crate) async fn prove(node: &NodeHandle, keys: &[Vec<u8>]) -> Result<StateProofs, ApiError> {
    let proved = node.ledger.prove_all(keys).map_err(proof_error)?;
    certify(node, keys.iter().cloned().zip(proved).collect()).await
}

/// Pages of counted lists (rules 6, [`ListRange`]) with proofs against one certified root. The
/// caller has already decided the asker may see every entry of them.
///
/// [`PrivateLedger::prove_lists`]: medchain_ledger::PrivateLedger::prove_lists
pub(crate) async fn prove_lists(
    node: &NodeHandle,
    lists: &[ListRange],
) -> Result<StateProofs, ApiError> {
    let (rules, _) = node.ledger.rules_now().map_err(internal)?;
    if rules < medchain_ledger::contracts::rules::V6 {
        return Err(ApiError(
            StatusCode::CONFLICT,
            format!(
                "this chain runs contract rules {rules}: whole lists are proved from rules 6 \
                 (an authority schedules it with `medchain rules upgrade --to 6`)"
            ),
        ));
    }
    let proved = node.ledger.prove_lists(lists).map_err(proof_error)?;
    certify(node, proved).await
}

fn proof_error(e: StateTreeError) -> ApiError {
    match e {
        StateTreeError::Missing { .. } => ApiError(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("no proof can be given yet: {e} (proofs need contract rules 5 or later)"),
        ),
        e => internal(e),
    }
}

/// Proved entries with the certified header of the block whose state they are in.
async fn certify(
    node: &NodeHandle,
    proved: Vec<(Vec<u8>, medchain_ledger::state_tree::ProvedValue)>,
) -> Result<StateProofs, ApiError> {
    let Some(height) = proved.first().map(|(_, p)| p.height) else {
        return Err(internal("nothing to prove"));
    };
    let header = certified_header(node, height, CERTIFICATE_WAIT).await?;
    if header.certificate.is_none() {
        return Err(ApiError(
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "block {height} has no header certificate yet (2f + 1 validators' votes have not \
                 reached this node): retry in a moment, or ask another node"
            ),
        ));
    }
    let entries = proved
        .into_iter()
        .map(|(key, p)| ProvedEntry {
            key: hex::encode(key),
            value: p.value.map(hex::encode),
            proof: hex::encode(p.proof.to_bytes()),
        })
        .collect();
    Ok(StateProofs { header, entries })
}

/// The inclusion of transaction `index` of block `height` in that block, against its header's
/// `merkle_root`, with the header's certificate if this node holds one. The caller has already
/// decided the asker may see this transaction.
pub(crate) async fn include(
    node: &NodeHandle,
    height: u64,
    index: u32,
    wait: Duration,
) -> Result<InclusionProof, ApiError> {
    let block = node
        .store
        .block(height)
        .map_err(internal)?
        .ok_or_else(|| internal(format!("block {height} is missing from the store")))?;
    let leaves: Vec<_> = block
        .transactions
        .iter()
        .map(|t| leaf_hash(&t.canonical_bytes()))
        .collect();
    let proof = MerkleProof::build(&leaves, index as usize).map_err(internal)?;
    let header = certified_header(node, height, wait).await?;
    Ok(InclusionProof {
        header,
        transaction: hex::encode(block.transactions[index as usize].canonical_bytes()),
        index: proof.index,
        leaf_count: proof.leaf_count,
        siblings: proof.siblings.iter().map(|h| h.to_hex()).collect(),
    })
}
