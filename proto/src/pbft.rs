//! PBFT envelopes: the one way they are signed and checked, and the verification of committed
//! batches (used by state transfer, block sync, light clients and the bridge).
//!
//! A message's signature covers its canonical bytes with `signature` and `batch` cleared, under the
//! "pbft message" domain. The chain ID and the sender's index are inside the signed bytes, so a
//! message cannot be replayed on another chain or attributed to another replica. A commit
//! certificate is just the signatures of a quorum's Commit envelopes, which anyone can rebuild from
//! (chain, replica, view, seq, digest).

use medchain_crypto::hash::domains;
use medchain_crypto::validators::{Certificate, Signer, ValidatorIndex, ValidatorSet, Verifier};
use medchain_crypto::{Hash32, Signature};

use crate::canonical::{Canonical, Hashed};
use crate::v1::{self, pbft_message::Kind};
use crate::ProtoError;

/// The canonical bytes a PBFT message's signature covers.
pub fn signing_bytes(msg: &v1::PbftMessage) -> Vec<u8> {
    let mut unsigned = msg.clone();
    unsigned.signature.clear();
    unsigned.batch = None;
    unsigned.canonical_bytes()
}

/// Builds and signs an envelope.
pub fn sign(
    signer: &impl Signer,
    chain_id: &str,
    replica: ValidatorIndex,
    kind: Kind,
    batch: Option<v1::PbftBatch>,
) -> v1::PbftMessage {
    let mut msg = v1::PbftMessage {
        chain_id: chain_id.to_string(),
        replica,
        kind: Some(kind),
        signature: Vec::new(),
        batch: None,
    };
    msg.signature = signer
        .sign(domains::PBFT_MESSAGE, &signing_bytes(&msg))
        .as_bytes()
        .to_vec();
    msg.batch = batch;
    msg
}

/// Checks the chain ID, that the sender is in `validators`, and its signature.
pub fn verify_signature(
    msg: &v1::PbftMessage,
    chain_id: &str,
    validators: &ValidatorSet,
    verifier: &impl Verifier,
) -> Result<(), ProtoError> {
    const KIND: &str = "pbft message";
    if msg.chain_id != chain_id {
        return Err(ProtoError::Invalid {
            kind: KIND,
            reason: format!("for chain {:?}, this is {chain_id:?}", msg.chain_id),
        });
    }
    let signer = validators
        .get(msg.replica)
        .ok_or_else(|| ProtoError::Invalid {
            kind: KIND,
            reason: format!(
                "sender index {} is outside the validator set of {}",
                msg.replica,
                validators.len()
            ),
        })?;
    let sig = Signature::from_slice(&msg.signature).map_err(|source| ProtoError::InvalidField {
        kind: KIND,
        field: "signature",
        source,
    })?;
    verifier
        .verify(signer, domains::PBFT_MESSAGE, &signing_bytes(msg), &sig)
        .map_err(|source| ProtoError::InvalidField {
            kind: KIND,
            field: "signature",
            source,
        })
}

/// The unsigned Commit envelope of `replica`, as a certificate verifier rebuilds it.
pub fn commit_envelope(
    chain_id: &str,
    replica: ValidatorIndex,
    view: u64,
    seq: u64,
    digest: &Hash32,
) -> v1::PbftMessage {
    v1::PbftMessage {
        chain_id: chain_id.to_string(),
        replica,
        kind: Some(Kind::Commit(v1::Commit {
            view,
            seq,
            digest: digest.as_bytes().to_vec(),
        })),
        signature: Vec::new(),
        batch: None,
    }
}

/// Verifies that a quorum of `validators` committed `digest` at (`view`, `seq`).
pub fn verify_commit_signatures(
    chain_id: &str,
    view: u64,
    seq: u64,
    digest: &Hash32,
    commits: &[v1::IndexedSignature],
    validators: &ValidatorSet,
    verifier: &impl Verifier,
) -> Result<(), ProtoError> {
    const KIND: &str = "commit certificate";
    let mut signatures = Vec::with_capacity(commits.len());
    for c in commits {
        let sig =
            Signature::from_slice(&c.signature).map_err(|source| ProtoError::InvalidField {
                kind: KIND,
                field: "signatures",
                source,
            })?;
        signatures.push((c.validator, sig));
    }
    // Each signer signed its own envelope (its index is inside it).
    Certificate { signatures }
        .verify_each(
            validators,
            domains::PBFT_MESSAGE,
            validators.quorum(),
            verifier,
            |index| signing_bytes(&commit_envelope(chain_id, index, view, seq, digest)),
        )
        .map_err(|e| ProtoError::Invalid {
            kind: KIND,
            reason: e.to_string(),
        })
}

/// Verifies a committed batch and returns its digest.
pub fn verify_committed_batch(
    entry: &v1::CommittedBatch,
    chain_id: &str,
    validators: &ValidatorSet,
    verifier: &impl Verifier,
) -> Result<Hash32, ProtoError> {
    let batch = entry.batch.as_ref().ok_or(ProtoError::MissingField {
        kind: "committed batch",
        field: "batch",
    })?;
    let digest = batch.digest();
    verify_commit_signatures(
        chain_id,
        entry.view,
        entry.seq,
        &digest,
        &entry.commits,
        validators,
        verifier,
    )?;
    verify_proposal_signature(
        chain_id,
        entry.view,
        entry.seq,
        &digest,
        &entry.proposal_signature,
        validators,
        verifier,
    )?;
    Ok(digest)
}

/// The primary of `view` among `validators` (the PBFT rule: view mod n).
pub fn primary(view: u64, validators: &ValidatorSet) -> ValidatorIndex {
    (view % validators.len() as u64) as ValidatorIndex
}

/// Checks that `signature` is the primary of `view`'s signature on PrePrepare(view, seq, digest):
/// the creator signature of a private block.
pub fn verify_proposal_signature(
    chain_id: &str,
    view: u64,
    seq: u64,
    digest: &Hash32,
    signature: &[u8],
    validators: &ValidatorSet,
    verifier: &impl Verifier,
) -> Result<(), ProtoError> {
    const KIND: &str = "proposal signature";
    let index = primary(view, validators);
    let signer = validators.get(index).ok_or_else(|| ProtoError::Invalid {
        kind: KIND,
        reason: "empty validator set".into(),
    })?;
    let envelope = v1::PbftMessage {
        chain_id: chain_id.to_string(),
        replica: index,
        kind: Some(Kind::PrePrepare(v1::PrePrepare {
            view,
            seq,
            digest: digest.as_bytes().to_vec(),
        })),
        signature: Vec::new(),
        batch: None,
    };
    let sig = Signature::from_slice(signature).map_err(|source| ProtoError::InvalidField {
        kind: KIND,
        field: "proposal_signature",
        source,
    })?;
    verifier
        .verify(
            signer,
            domains::PBFT_MESSAGE,
            &signing_bytes(&envelope),
            &sig,
        )
        .map_err(|source| ProtoError::InvalidField {
            kind: KIND,
            field: "proposal_signature",
            source,
        })
}

/// The digest identifying one item (for de-duplication of pending work).
pub fn item_id(item: &[u8]) -> Hash32 {
    medchain_crypto::digest(domains::PBFT_ITEM, item)
}
