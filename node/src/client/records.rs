//! Record commands on the client side (MBDS Algorithms 1 and 2): write, confirm, read, verify,
//! delete, list pending.

use anyhow::{anyhow, bail, Context, Result};
use medchain_crypto::delegation::{decrypt_as_grantee, DelegationVerifyingKey};
use medchain_crypto::envelope;
use medchain_crypto::hash::{digest, domains};
use medchain_crypto::keys::{EncryptionPublicKey, KeyMaterial};
use medchain_crypto::record::{decrypt_record, encrypt_record, EncryptedRecord};
use medchain_crypto::search::SearchPublicKey;
use medchain_crypto::{Hash32, Identity};
use medchain_proto::canonical::{limits, Canonical};
use medchain_proto::ledger::{make_private_slip, sign_transaction};
use medchain_proto::records::sign_read_request;
use medchain_proto::v1::{self, transaction_body::Payload};
use rand::RngCore;

use super::Client;

/// The content address of a stored ciphertext: the key the off-chain store files it under and
/// the `ciphertext_hash` its slip carries.
pub fn ciphertext_address(ciphertext: &[u8]) -> Hash32 {
    digest(domains::STORAGE_ADDRESS, ciphertext)
}

/// The record type: the one given, else a FHIR resource's `resourceType`.
pub fn record_type_of(plaintext: &[u8], given: Option<&str>) -> Result<String> {
    if let Some(t) = given {
        let t = t.trim();
        if t.is_empty() {
            bail!("--type must not be empty");
        }
        return Ok(t.to_string());
    }
    let v: serde_json::Value = serde_json::from_slice(plaintext).map_err(|_| {
        anyhow!(
            "the record is not a FHIR JSON resource, so its type cannot be derived; give --type"
        )
    })?;
    match v.get("resourceType").and_then(|t| t.as_str()) {
        Some(t) if !t.is_empty() => Ok(t.to_string()),
        _ => bail!("the JSON record has no \"resourceType\"; give --type"),
    }
}

/// What a doctor writes.
#[derive(Clone, Debug)]
pub struct RecordInput {
    pub plaintext: Vec<u8>,
    pub record_type: String,
    pub keywords: Vec<String>,
    pub replaces: Option<Hash32>,
}

/// A record write ready to upload: the signed transaction, the ciphertext and the slip ID.
#[derive(Clone, Debug)]
pub struct RecordWrite {
    pub transaction: v1::Transaction,
    pub ciphertext: Vec<u8>,
    pub slip_id: Hash32,
}

/// The patient's registered keys a doctor encrypts to.
#[derive(Clone, Copy, Debug)]
pub struct PatientKeys {
    pub identity: Identity,
    pub encryption: EncryptionPublicKey,
    pub search: SearchPublicKey,
}

/// MBDS Algorithm 1: hash the record, encrypt it and its keywords to the patient, sign the slip
/// (t, type, text, PK_d, PK_p, H(M), C_M, C_w) and the transaction.
pub fn build_record_write(
    chain_id: &str,
    doctor: &KeyMaterial,
    patient: &PatientKeys,
    input: &RecordInput,
    nonce: u64,
    now_ms: u64,
) -> Result<RecordWrite> {
    if input.plaintext.len() > limits::RECORD_PLAINTEXT {
        bail!(
            "the record is {} bytes; the limit is {} bytes (16 MiB): split it or store a smaller export",
            input.plaintext.len(),
            limits::RECORD_PLAINTEXT
        );
    }
    // The record travels in an envelope with a fresh record key; the chain gets H(M) keyed
    // with it, which confirms no guess to anyone who cannot decrypt.
    let enveloped = envelope::seal(&input.plaintext);
    let sealed = encrypt_record(&patient.encryption, &enveloped.envelope)?.to_bytes();
    let address = ciphertext_address(&sealed);
    let locator = format!("medchain://{chain_id}/{address}");
    let encrypted_address = encrypt_record(&patient.encryption, locator.as_bytes())?.to_bytes();
    let encrypted_keywords = input
        .keywords
        .iter()
        .map(|w| Ok(patient.search.encrypt_keyword(w)?.to_bytes()))
        .collect::<Result<Vec<_>>>()?;
    let signing = doctor.signing_key();
    let slip = make_private_slip(
        &signing,
        v1::SlipContent {
            timestamp_ms: now_ms,
            record_type: input.record_type.clone(),
            // Never in clear on chain (contract rules 2 refuse it): the record says what it is.
            summary: String::new(),
            doctor: signing.identity().as_bytes().to_vec(),
            patient: patient.identity.as_bytes().to_vec(),
            record_hash: enveloped.record_hash.as_bytes().to_vec(),
            encrypted_address,
            encrypted_keywords,
            replaces: input
                .replaces
                .map(|r| r.as_bytes().to_vec())
                .unwrap_or_default(),
            ciphertext_hash: address.as_bytes().to_vec(),
            ciphertext_size: sealed.len() as u64,
        },
    );
    let slip_id = Hash32::from_slice(&slip.slip_id)?;
    let transaction = sign_transaction(
        &signing,
        v1::TransactionBody {
            chain_id: chain_id.to_string(),
            signer: vec![],
            nonce,
            timestamp_ms: now_ms,
            payload: Some(Payload::PrivateSlip(slip)),
        },
    );
    Ok(RecordWrite {
        transaction,
        ciphertext: sealed,
        slip_id,
    })
}

impl Client {
    /// The keys a doctor encrypts to, from the patient's registration.
    pub async fn patient_keys(&self, patient: &Identity) -> Result<PatientKeys> {
        let info = self.identity(patient).await?;
        if info.role != medchain_api::Role::Patient {
            bail!("{patient} is registered as a {}, not a patient", info.role);
        }
        Ok(PatientKeys {
            identity: *patient,
            encryption: super::encryption_key(&info)?,
            search: SearchPublicKey::from_bytes(&hex::decode(&info.search_key)?)?,
        })
    }

    /// Uploads a record write (ciphertext and slip together) and waits for the slip's block.
    pub async fn upload_record(&self, w: &RecordWrite) -> Result<Hash32> {
        let upload = v1::RecordUpload {
            transaction: Some(w.transaction.clone()),
            ciphertext: w.ciphertext.clone(),
        };
        let accepted = self.api.upload(upload.canonical_bytes()).await?;
        let id = Hash32::from_hex(&accepted.id).map_err(|_| {
            anyhow!(
                "the node accepted the upload under a malformed id {:?}",
                accepted.id
            )
        })?;
        self.wait_committed(&id, std::time::Duration::from_secs(60))
            .await?;
        Ok(w.slip_id)
    }

    /// The slip and its state.
    pub async fn record(&self, slip: &Hash32) -> Result<medchain_api::RecordView> {
        self.api.record(&slip.to_hex()).await?.ok_or_else(|| {
            anyhow!(
                "record {slip} does not exist on chain {}",
                self.chain.chain_id
            )
        })
    }

    /// MBDS Algorithm 2, the patient's side: check the doctor's signature (the node did, and so
    /// does this client, with an anchor, over the slip proved on chain), decrypt, check H(M)
    /// (proved on chain with an anchor), co-sign.
    pub async fn confirm(&self, patient: &KeyMaterial, slip: &Hash32) -> Result<Vec<u8>> {
        let mut proved_hash = None;
        if self.anchor.is_some() {
            // The slip itself, proved on chain and its doctor's signature checked here.
            let record = self.verified_record(slip).await?;
            if record.parties.patient != patient.signing_key().identity() {
                bail!(
                    "record {slip} is {}'s, not yours ({}): only its patient confirms it",
                    record.parties.patient,
                    patient.signing_key().identity()
                );
            }
            if record.entry.confirmed_height.is_some() {
                bail!("record {slip} is already confirmed");
            }
            proved_hash = Some(record.parties.record_hash);
        }
        let plaintext = self.read_against(patient, slip, proved_hash).await?;
        let sig = patient
            .signing_key()
            .sign(domains::PATIENT_CONFIRMATION, slip.as_bytes());
        let tx = self.sign(
            patient,
            Payload::PatientConfirmation(v1::PatientConfirmation {
                slip_id: slip.as_bytes().to_vec(),
                patient_signature: sig.as_bytes().to_vec(),
            }),
        );
        self.submit_and_wait(&tx).await?;
        Ok(plaintext)
    }

    /// Reads a record through the node: a signed, fresh request; the patient gets the
    /// ciphertext, a grantee a capsule fragment too. Checks the plaintext against H(M) on chain.
    ///
    /// The request goes first: a reader without access learns nothing of the record, and her
    /// attempt is on the audit trail; one the node served may see the record's slip.
    pub async fn read(&self, reader: &KeyMaterial, slip: &Hash32) -> Result<Vec<u8>> {
        self.read_against(reader, slip, None).await
    }

    /// [`Client::read`], checked against `proved` (H(M) the caller has already proved) when
    /// given, so the slip's proofs are not fetched and checked twice.
    async fn read_against(
        &self,
        reader: &KeyMaterial,
        slip: &Hash32,
        proved: Option<Hash32>,
    ) -> Result<Vec<u8>> {
        let node = self.validator_identity().await?;
        let mut nonce = vec![0u8; 16];
        rand::rngs::OsRng.fill_bytes(&mut nonce);
        let signed = sign_read_request(
            &reader.signing_key(),
            v1::ReadRequest {
                chain_id: self.chain.chain_id.clone(),
                reader: vec![],
                slip_id: slip.as_bytes().to_vec(),
                timestamp_ms: super::now_ms(),
                nonce,
                node: node.as_bytes().to_vec(),
            },
        );
        let answer = self
            .api
            .read(&slip.to_hex(), signed.canonical_bytes())
            .await?;
        let resp = v1::ReadResponse::decode_canonical(&answer)?;
        // H(M) as the doctor signed it: proved on chain with an anchor, else the node's word.
        let expected = match (proved, &self.anchor) {
            (Some(h), _) => h.to_hex(),
            (None, Some(_)) => self
                .verified_record(slip)
                .await?
                .parties
                .record_hash
                .to_hex(),
            (None, None) => self.record(slip).await?.slip.slip.record_hash,
        };
        let record = EncryptedRecord::from_bytes(&resp.ciphertext)?;
        let plaintext = if resp.capsule_fragment.is_empty() {
            decrypt_record(&reader.encryption_key(), &record)
                .context("cannot decrypt: this key is not the record's patient")?
        } else {
            let owner = EncryptionPublicKey::from_bytes(&resp.owner_encryption_key)?;
            let vk = DelegationVerifyingKey::from_bytes(&resp.delegation_key)?;
            decrypt_as_grantee(
                &reader.encryption_key(),
                &owner,
                &vk,
                &record,
                std::slice::from_ref(&resp.capsule_fragment),
            )?
        };
        let opened = envelope::open(&plaintext);
        if opened.record_hash.to_hex() != expected {
            bail!(
                "record {slip} decrypted but its hash differs from H(M) on chain: the stored data was altered"
            );
        }
        Ok(opened.record.to_vec())
    }
}
