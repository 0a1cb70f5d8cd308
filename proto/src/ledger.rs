//! Building and checking the signed ledger types: transactions, private slips, blocks and commit
//! certificates. Every check here is structural and cryptographic (is it well formed, does every
//! signature verify, do the hashes match); ledger rules (who may write what) live in the node.

use medchain_crypto::hash::domains;
use medchain_crypto::merkle;
use medchain_crypto::validators::{EcdsaVerifier, ValidatorSet};
use medchain_crypto::{Hash32, Identity, Signature, SigningKey};

use crate::canonical::{Canonical, Hashed};
use crate::v1;
use crate::ProtoError;

fn identity(kind: &'static str, field: &'static str, bytes: &[u8]) -> Result<Identity, ProtoError> {
    Identity::from_bytes(bytes).map_err(|source| ProtoError::InvalidField {
        kind,
        field,
        source,
    })
}

fn signature(
    kind: &'static str,
    field: &'static str,
    bytes: &[u8],
) -> Result<Signature, ProtoError> {
    Signature::from_slice(bytes).map_err(|source| ProtoError::InvalidField {
        kind,
        field,
        source,
    })
}

fn hash(kind: &'static str, field: &'static str, bytes: &[u8]) -> Result<Hash32, ProtoError> {
    Hash32::from_slice(bytes).map_err(|source| ProtoError::InvalidField {
        kind,
        field,
        source,
    })
}

/// Signs a transaction body with `key`, filling in the signer.
pub fn sign_transaction(key: &SigningKey, mut body: v1::TransactionBody) -> v1::Transaction {
    body.signer = key.identity().as_bytes().to_vec();
    let signature = key.sign_digest(&body.digest());
    v1::Transaction {
        body: Some(body),
        signature: signature.as_bytes().to_vec(),
    }
}

/// A transaction whose envelope signature has been checked.
#[derive(Clone, Debug)]
pub struct VerifiedTransaction {
    pub id: Hash32,
    pub signer: Identity,
    pub transaction: v1::Transaction,
}

/// Checks a transaction's envelope: the body is present, the signer is a valid identity and the
/// signature verifies over the body's digest. Payload-specific checks follow in
/// [`verify_payload`].
pub fn verify_transaction(tx: v1::Transaction) -> Result<VerifiedTransaction, ProtoError> {
    const KIND: &str = "transaction";
    let body = tx.body.as_ref().ok_or(ProtoError::MissingField {
        kind: KIND,
        field: "body",
    })?;
    let signer = identity(KIND, "body.signer", &body.signer)?;
    let sig = signature(KIND, "signature", &tx.signature)?;
    let id = body.digest();
    signer
        .verify_digest(&id, &sig)
        .map_err(|source| ProtoError::InvalidField {
            kind: KIND,
            field: "signature",
            source,
        })?;
    verify_payload(body)?;
    Ok(VerifiedTransaction {
        id,
        signer,
        transaction: tx,
    })
}

fn verify_payload(body: &v1::TransactionBody) -> Result<(), ProtoError> {
    use v1::transaction_body::Payload;
    match &body.payload {
        None => Err(ProtoError::MissingField {
            kind: "transaction",
            field: "body.payload",
        }),
        Some(Payload::PrivateSlip(slip)) => verify_private_slip(slip).map(|_| ()),
        Some(Payload::PatientConfirmation(c)) => {
            hash("patient confirmation", "slip_id", &c.slip_id)?;
            signature(
                "patient confirmation",
                "patient_signature",
                &c.patient_signature,
            )?;
            Ok(())
        }
        Some(Payload::ConsortiumSlip(slip)) => verify_consortium_slip(slip),
    }
}

/// Builds a slip signed by the doctor.
pub fn make_private_slip(doctor: &SigningKey, content: v1::SlipContent) -> v1::PrivateSlip {
    let slip_id = content.digest();
    let doctor_signature = doctor.sign_digest(&slip_id);
    v1::PrivateSlip {
        slip_id: slip_id.as_bytes().to_vec(),
        content: Some(content),
        doctor_signature: doctor_signature.as_bytes().to_vec(),
        patient_signature: Vec::new(),
    }
}

/// The parties of a slip whose signatures have been checked.
#[derive(Clone, Copy, Debug)]
pub struct SlipParties {
    pub slip_id: Hash32,
    pub doctor: Identity,
    pub patient: Identity,
    pub record_hash: Hash32,
}

/// Checks a private slip: its ID is the digest of its content, the doctor's signature verifies,
/// and the patient's confirmation (if present) verifies over the slip ID.
pub fn verify_private_slip(slip: &v1::PrivateSlip) -> Result<SlipParties, ProtoError> {
    const KIND: &str = "private slip";
    let content = slip.content.as_ref().ok_or(ProtoError::MissingField {
        kind: KIND,
        field: "content",
    })?;
    let doctor = identity(KIND, "content.doctor", &content.doctor)?;
    let patient = identity(KIND, "content.patient", &content.patient)?;
    let record_hash = hash(KIND, "content.record_hash", &content.record_hash)?;
    if !content.replaces.is_empty() {
        hash(KIND, "content.replaces", &content.replaces)?;
    }
    let slip_id = content.digest();
    if slip.slip_id != slip_id.as_bytes() {
        return Err(ProtoError::Invalid {
            kind: KIND,
            reason: format!("slip_id is not the digest of the content (expected {slip_id})"),
        });
    }
    let doctor_sig = signature(KIND, "doctor_signature", &slip.doctor_signature)?;
    doctor
        .verify_digest(&slip_id, &doctor_sig)
        .map_err(|source| ProtoError::InvalidField {
            kind: KIND,
            field: "doctor_signature",
            source,
        })?;
    if !slip.patient_signature.is_empty() {
        let sig = signature(KIND, "patient_signature", &slip.patient_signature)?;
        patient
            .verify(domains::PATIENT_CONFIRMATION, slip_id.as_bytes(), &sig)
            .map_err(|source| ProtoError::InvalidField {
                kind: KIND,
                field: "patient_signature",
                source,
            })?;
    }
    Ok(SlipParties {
        slip_id,
        doctor,
        patient,
        record_hash,
    })
}

/// Most summary items in one consortium slip (MBDS).
pub const MAX_SUMMARY_ITEMS: usize = 10;

fn verify_consortium_slip(slip: &v1::ConsortiumSlip) -> Result<(), ProtoError> {
    const KIND: &str = "consortium slip";
    let content = slip.content.as_ref().ok_or(ProtoError::MissingField {
        kind: KIND,
        field: "content",
    })?;
    if content.items.is_empty() || content.items.len() > MAX_SUMMARY_ITEMS {
        return Err(ProtoError::Invalid {
            kind: KIND,
            reason: format!(
                "{} summary items; a slip holds 1 to {MAX_SUMMARY_ITEMS}",
                content.items.len()
            ),
        });
    }
    for item in &content.items {
        identity(KIND, "items.patient", &item.patient)?;
        hash(KIND, "items.record_hash", &item.record_hash)?;
        hash(KIND, "items.slip_id", &item.slip_id)?;
    }
    if slip.slip_id != content.digest().as_bytes() {
        return Err(ProtoError::Invalid {
            kind: KIND,
            reason: "slip_id is not the digest of the content".into(),
        });
    }
    signature(KIND, "signature", &slip.signature)?;
    Ok(())
}

/// Merkle root over the canonical bytes of a block's transactions.
pub fn transactions_root(transactions: &[v1::Transaction]) -> Hash32 {
    let leaves: Vec<Vec<u8>> = transactions.iter().map(|t| t.canonical_bytes()).collect();
    merkle::root(&leaves)
}

/// Builds and signs a block (without commit certificate).
pub fn make_block(
    creator: &SigningKey,
    chain_id: &str,
    height: u64,
    previous_hash: Hash32,
    timestamp_ms: u64,
    transactions: Vec<v1::Transaction>,
) -> v1::Block {
    let header = v1::BlockHeader {
        chain_id: chain_id.to_string(),
        height,
        previous_hash: previous_hash.as_bytes().to_vec(),
        timestamp_ms,
        creator: creator.identity().as_bytes().to_vec(),
        merkle_root: transactions_root(&transactions).as_bytes().to_vec(),
        transaction_count: transactions.len() as u32,
    };
    let creator_signature = creator.sign_digest(&header.digest());
    v1::Block {
        header: Some(header),
        creator_signature: creator_signature.as_bytes().to_vec(),
        transactions,
        commit: None,
    }
}

/// The block hash: the digest of its header.
pub fn block_hash(block: &v1::Block) -> Result<Hash32, ProtoError> {
    Ok(header(block)?.digest())
}

fn header(block: &v1::Block) -> Result<&v1::BlockHeader, ProtoError> {
    block.header.as_ref().ok_or(ProtoError::MissingField {
        kind: "block",
        field: "header",
    })
}

/// Checks a block's internal consistency: the Merkle root and count match the transactions, and the
/// creator's signature verifies. Transactions are checked one by one with [`verify_transaction`].
pub fn verify_block_structure(block: &v1::Block) -> Result<Hash32, ProtoError> {
    const KIND: &str = "block";
    let header = header(block)?;
    let creator = identity(KIND, "header.creator", &header.creator)?;
    hash(KIND, "header.previous_hash", &header.previous_hash)?;
    if header.transaction_count as usize != block.transactions.len() {
        return Err(ProtoError::Invalid {
            kind: KIND,
            reason: format!(
                "header counts {} transactions, body has {}",
                header.transaction_count,
                block.transactions.len()
            ),
        });
    }
    let root = transactions_root(&block.transactions);
    if header.merkle_root != root.as_bytes() {
        return Err(ProtoError::Invalid {
            kind: KIND,
            reason: "Merkle root does not match the transactions".into(),
        });
    }
    let block_hash = header.digest();
    let sig = signature(KIND, "creator_signature", &block.creator_signature)?;
    creator
        .verify_digest(&block_hash, &sig)
        .map_err(|source| ProtoError::InvalidField {
            kind: KIND,
            field: "creator_signature",
            source,
        })?;
    Ok(block_hash)
}

/// The PBFT batch a private block was agreed as: its timestamp and its transactions' canonical
/// bytes. The header (height, previous hash, Merkle root) is derived from it at commit.
pub fn block_batch(block: &v1::Block) -> Result<v1::PbftBatch, ProtoError> {
    Ok(v1::PbftBatch {
        timestamp_ms: header(block)?.timestamp_ms,
        items: block
            .transactions
            .iter()
            .map(|t| t.canonical_bytes())
            .collect(),
    })
}

/// Checks that `block` carries a commit certificate from a quorum of `validators`: each signer's
/// PBFT Commit for this block's batch at its height.
pub fn verify_commit_certificate(
    block: &v1::Block,
    validators: &ValidatorSet,
) -> Result<(), ProtoError> {
    const KIND: &str = "commit certificate";
    let header = header(block)?;
    let cert = block.commit.as_ref().ok_or(ProtoError::MissingField {
        kind: "block",
        field: "commit",
    })?;
    let digest = block_batch(block)?.digest();
    if cert.payload_digest != digest.as_bytes() || cert.height != header.height {
        return Err(ProtoError::Invalid {
            kind: KIND,
            reason: "certificate is for another block".into(),
        });
    }
    crate::pbft::verify_commit_signatures(
        &header.chain_id,
        cert.view,
        cert.height,
        &digest,
        &cert.signatures,
        validators,
        &EcdsaVerifier,
    )
}

#[cfg(test)]
mod tests;
