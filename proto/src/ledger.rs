//! Building and checking the signed ledger types: transactions, private slips, blocks and commit
//! certificates. Every check here is structural and cryptographic (is it well formed, does every
//! signature verify, do the hashes match); ledger rules (who may write what) live in the node.

use medchain_crypto::hash::domains;
use medchain_crypto::merkle;
use medchain_crypto::validators::{ValidatorSet, Verifier};
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
        Some(Payload::PrivateSlip(slip)) => {
            verify_private_slip(slip)?;
            crate::records::check_slip_fields(slip.content.as_ref().expect("checked above"))
        }
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
        Some(other) => crate::records::check_payload(other),
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
    let parties = slip_parties(slip)?;
    let (slip_id, doctor, patient) = (parties.slip_id, parties.doctor, parties.patient);
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
    Ok(parties)
}

/// The parties of a private slip and its well-formedness (ID = digest of the content, identities
/// and hashes parse), without checking signatures: for indexing slips of blocks whose
/// transactions were verified when they were accepted.
pub fn slip_parties(slip: &v1::PrivateSlip) -> Result<SlipParties, ProtoError> {
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

/// The private block of a committed PBFT batch. Every replica derives the same header (so the
/// same block hash) from the same committed batch: height = sequence number, timestamp and
/// creator (the primary that built the batch) from the batch. The body carries the proof of
/// finality, which may differ between replicas that saw the batch commit in different views:
/// `creator_signature` is the committing view's primary's signature on its PrePrepare (the
/// proposal), `commit` the quorum's Commit signatures. Items must be canonical transactions.
pub fn private_block(
    chain_id: &str,
    validators: &ValidatorSet,
    committed: &v1::CommittedBatch,
    previous_hash: Hash32,
) -> Result<v1::Block, ProtoError> {
    let items = committed.batch.as_ref().map_or(&[][..], |b| &b.items[..]);
    let transactions = items
        .iter()
        .map(|b| v1::Transaction::decode_canonical(b))
        .collect::<Result<Vec<_>, _>>()?;
    private_block_of(chain_id, validators, committed, previous_hash, transactions)
}

/// [`private_block`] from the batch's items already decoded (`transactions[i]` is the canonical
/// decoding of item `i`, as a node that checked them on arrival holds them): nothing is decoded
/// or encoded again, the Merkle root is taken over the items' own bytes.
pub fn private_block_of(
    chain_id: &str,
    validators: &ValidatorSet,
    committed: &v1::CommittedBatch,
    previous_hash: Hash32,
    transactions: Vec<v1::Transaction>,
) -> Result<v1::Block, ProtoError> {
    const KIND: &str = "committed batch";
    let batch = committed.batch.as_ref().ok_or(ProtoError::MissingField {
        kind: KIND,
        field: "batch",
    })?;
    if transactions.len() != batch.items.len() {
        return Err(ProtoError::Invalid {
            kind: KIND,
            reason: format!(
                "{} decoded transactions for {} items",
                transactions.len(),
                batch.items.len()
            ),
        });
    }
    let creator = validators
        .get(batch.proposer)
        .ok_or_else(|| ProtoError::Invalid {
            kind: KIND,
            reason: format!(
                "proposer {} is outside the validator set of {}",
                batch.proposer,
                validators.len()
            ),
        })?;
    let header = v1::BlockHeader {
        chain_id: chain_id.to_string(),
        height: committed.seq,
        previous_hash: previous_hash.as_bytes().to_vec(),
        timestamp_ms: batch.timestamp_ms,
        creator: creator.as_bytes().to_vec(),
        merkle_root: merkle::root(&batch.items).as_bytes().to_vec(),
        transaction_count: transactions.len() as u32,
        // Known once the block is executed: the ledger sets it (rules 5).
        state_root: Vec::new(),
    };
    Ok(v1::Block {
        header: Some(header),
        creator_signature: committed.proposal_signature.clone(),
        transactions,
        commit: Some(v1::CommitCertificate {
            height: committed.seq,
            view: committed.view,
            payload_digest: batch.digest().as_bytes().to_vec(),
            signatures: committed.commits.clone(),
            proposer: batch.proposer,
        }),
    })
}

/// The committed batch a stored private block came from (for state transfer and block sync).
pub fn committed_batch_of(block: &v1::Block) -> Result<v1::CommittedBatch, ProtoError> {
    let cert = block.commit.as_ref().ok_or(ProtoError::MissingField {
        kind: "block",
        field: "commit",
    })?;
    Ok(v1::CommittedBatch {
        seq: header(block)?.height,
        view: cert.view,
        batch: Some(block_batch(block)?),
        commits: cert.signatures.clone(),
        proposal_signature: block.creator_signature.clone(),
    })
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

/// Checks a block's internal consistency without knowing the validator set: field lengths, the
/// Merkle root and count match the transactions, and the commit certificate is present and bound
/// to this block (its height and the digest of the block's batch). Signatures, which need the
/// validator set, are checked by [`verify_private_block`].
pub fn verify_block_structure(block: &v1::Block) -> Result<Hash32, ProtoError> {
    const KIND: &str = "block";
    let header = header(block)?;
    identity(KIND, "header.creator", &header.creator)?;
    hash(KIND, "header.previous_hash", &header.previous_hash)?;
    if !header.state_root.is_empty() {
        hash(KIND, "header.state_root", &header.state_root)?;
    }
    signature(KIND, "creator_signature", &block.creator_signature)?;
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
    let cert = block.commit.as_ref().ok_or(ProtoError::MissingField {
        kind: KIND,
        field: "commit",
    })?;
    if cert.height != header.height
        || cert.payload_digest != block_batch(block)?.digest().as_bytes()
    {
        return Err(ProtoError::Invalid {
            kind: "commit certificate",
            reason: "certificate is for another block".into(),
        });
    }
    Ok(header.digest())
}

/// The PBFT batch a private block was agreed as: its timestamp, its transactions' canonical bytes
/// and its proposer's index (kept in the certificate). The header (height, previous hash, Merkle
/// root, creator) is derived from it at commit.
pub fn block_batch(block: &v1::Block) -> Result<v1::PbftBatch, ProtoError> {
    let proposer = block.commit.as_ref().map_or(0, |c| c.proposer);
    Ok(v1::PbftBatch {
        proposer,
        timestamp_ms: header(block)?.timestamp_ms,
        items: block
            .transactions
            .iter()
            .map(|t| t.canonical_bytes())
            .collect(),
    })
}

/// Fully verifies a private block of chain `chain_id` against that chain's validator set: its
/// chain, its structure, a quorum's commit signatures for its batch, that its creator is the
/// validator that built the batch, and the committing view's primary's signature on the
/// PrePrepare that proposed it. This is what block sync, light clients and the bridge rely on.
/// The chain is the caller's expectation, never the block's own claim: the same validators may
/// serve two chains, and their certificate for one must not pass as a block of the other.
pub fn verify_private_block(
    block: &v1::Block,
    chain_id: &str,
    validators: &ValidatorSet,
    verifier: &impl Verifier,
) -> Result<Hash32, ProtoError> {
    let hash = verify_block_structure(block)?;
    let header = header(block)?;
    if header.chain_id != chain_id {
        return Err(ProtoError::Invalid {
            kind: "block",
            reason: format!(
                "block of chain {:?}, expected {chain_id:?}",
                header.chain_id
            ),
        });
    }
    let committed = committed_batch_of(block)?;
    let proposer = block.commit.as_ref().map_or(0, |c| c.proposer);
    let creator = validators.get(proposer);
    if creator.map(|c| c.as_bytes().to_vec()) != Some(header.creator.clone()) {
        return Err(ProtoError::Invalid {
            kind: "block",
            reason: format!("creator is not validator {proposer}, the batch's proposer"),
        });
    }
    crate::pbft::verify_committed_batch(&committed, chain_id, validators, verifier)?;
    Ok(hash)
}

/// Signs a committed batch as a validator set would: the primary of `view` signs the PrePrepare
/// and a quorum signs Commits. For tests and tools that need real certified blocks without
/// running consensus.
pub fn sign_committed_batch(
    keys: &[SigningKey],
    chain_id: &str,
    seq: u64,
    view: u64,
    batch: v1::PbftBatch,
) -> v1::CommittedBatch {
    use crate::v1::pbft_message::Kind;
    let n = keys.len();
    let quorum = ValidatorSet::new(keys.iter().map(|k| k.identity()).collect())
        .map(|s| s.quorum())
        .unwrap_or(n);
    let digest = batch.digest();
    let primary = (view % n as u64) as usize;
    let pre_prepare = crate::pbft::sign(
        &keys[primary],
        chain_id,
        primary as u32,
        Kind::PrePrepare(v1::PrePrepare {
            view,
            seq,
            digest: digest.as_bytes().to_vec(),
        }),
        None,
    );
    let commits = (0..quorum)
        .map(|i| v1::IndexedSignature {
            validator: i as u32,
            signature: crate::pbft::sign(
                &keys[i],
                chain_id,
                i as u32,
                Kind::Commit(v1::Commit {
                    view,
                    seq,
                    digest: digest.as_bytes().to_vec(),
                }),
                None,
            )
            .signature,
        })
        .collect();
    v1::CommittedBatch {
        seq,
        view,
        batch: Some(batch),
        commits,
        proposal_signature: pre_prepare.signature,
    }
}

/// A certified private block at `height` holding `transactions`, signed by `keys` (the whole
/// validator set, in genesis order), for tests and tools.
pub fn make_block(
    keys: &[SigningKey],
    chain_id: &str,
    height: u64,
    previous_hash: Hash32,
    timestamp_ms: u64,
    transactions: Vec<v1::Transaction>,
) -> v1::Block {
    let batch = v1::PbftBatch {
        timestamp_ms,
        items: transactions.iter().map(|t| t.canonical_bytes()).collect(),
        proposer: 0,
    };
    let set =
        ValidatorSet::new(keys.iter().map(|k| k.identity()).collect()).expect("distinct test keys");
    let committed = sign_committed_batch(keys, chain_id, height, 0, batch);
    private_block(chain_id, &set, &committed, previous_hash).expect("canonical transactions")
}

#[cfg(test)]
mod tests;
