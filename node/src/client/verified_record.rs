//! A record's slip as the chain has it, checked instead of believed: its chain-state entry
//! (parties, ciphertext hash, confirmed, deleted, corrected) against a certified state root, and
//! the transaction that wrote it (content, the doctor's signature, H(M)) against its block's
//! header. What a patient checks before she co-signs (MBDS Algorithm 2) and what a reader
//! checks a decrypted record against come from here, never from the node's JSON.

use anyhow::{anyhow, bail, Context, Result};
use medchain_api::{CertifiedHeader, RecordView};
use medchain_crypto::Hash32;
use medchain_ledger::contracts::state::{decode, keys, SlipEntry};
use medchain_proto::canonical::{Canonical, Hashed};
use medchain_proto::ledger::{verify_private_slip, SlipParties};
use medchain_proto::v1::{self, transaction_body::Payload};

use super::verify::{self, verify_inclusion, Anchor, VerifiedHeader, VerifyError};
use super::Client;

/// A slip proved on chain.
#[derive(Debug, Clone)]
pub struct VerifiedRecord {
    /// The node's answer, its fields replaced by the proved ones.
    pub view: RecordView,
    pub slip: v1::PrivateSlip,
    /// Doctor, patient and H(M), from the slip the doctor signed.
    pub parties: SlipParties,
    pub entry: SlipEntry,
    /// The header the state entry was proved against.
    pub header: VerifiedHeader,
}

impl Client {
    /// The record `slip` with its proofs checked against the anchor (the client must have one).
    pub async fn verified_record(&self, slip: &Hash32) -> Result<VerifiedRecord> {
        let anchor = self
            .anchor
            .as_ref()
            .ok_or_else(|| anyhow!("verifying a record needs --genesis or --light"))?;
        let mut view = self
            .api
            .record_with_proof(&slip.to_hex())
            .await?
            .ok_or_else(|| {
                anyhow!(
                    "record {slip} does not exist on chain {} (or is not yours to see)",
                    self.chain.chain_id
                )
            })?;
        let checked = self
            .check_record(anchor, slip, &view)
            .await
            .with_context(|| format!("the node's answer about record {slip} did not verify"))?;
        let (slip_msg, parties, entry, header) = checked;
        // Everything the client acts on comes from the proofs.
        let shown = &mut view.slip;
        shown.slip.record_hash = parties.record_hash.to_hex();
        shown.slip.doctor = parties.doctor.to_string();
        shown.slip.patient = parties.patient.to_string();
        shown.slip.height = entry.height;
        shown.slip.patient_confirmed = entry.confirmed_height.is_some();
        shown.confirmed_height = entry.confirmed_height;
        shown.deleted_height = entry.deleted_height;
        shown.replaced_by = entry.replaced_by.map(hex::encode);
        Ok(VerifiedRecord {
            view,
            slip: slip_msg,
            parties,
            entry,
            header,
        })
    }

    async fn check_record(
        &self,
        anchor: &Anchor,
        slip: &Hash32,
        view: &RecordView,
    ) -> Result<(v1::PrivateSlip, SlipParties, SlipEntry, VerifiedHeader)> {
        let proof = view.proof.as_ref().ok_or(VerifyError::NoProof)?;
        let key = keys::slip(slip);
        let state = self
            .verify_state(anchor, Some(&proof.state), std::slice::from_ref(&key))
            .await?;
        let entry: SlipEntry = match &state.values[0] {
            Some(bytes) => decode(&key, bytes)?,
            None => bail!("the node shows record {slip}, but its own proof says it does not exist"),
        };
        let inc = &proof.inclusion;
        if inc.header.height != entry.height {
            return Err(VerifyError::WrongSlip {
                reason: format!(
                    "the chain wrote it in block {}, the node proves a transaction of block {}",
                    entry.height, inc.header.height
                ),
            }
            .into());
        }
        let block = self.verify_past_header(anchor, &inc.header).await?;
        let tx = verify_inclusion(&block, inc)?;
        let wrong = |reason: String| VerifyError::WrongSlip { reason };
        let slip_msg = match tx.body.and_then(|b| b.payload) {
            Some(Payload::PrivateSlip(s)) => s,
            _ => return Err(wrong("the proved transaction writes no slip".into()).into()),
        };
        // The doctor's signature over the slip itself, and its id, checked here (not only by
        // the node that admitted it).
        let parties = verify_private_slip(&slip_msg).map_err(|e| wrong(e.to_string()))?;
        if parties.slip_id != *slip {
            return Err(wrong(format!(
                "the proved transaction writes slip {}",
                parties.slip_id
            ))
            .into());
        }
        let content = slip_msg.content.clone().unwrap_or_default();
        if entry.patient != parties.patient.as_bytes()
            || entry.doctor != parties.doctor.as_bytes()
            || content.ciphertext_hash != entry.ciphertext_hash
        {
            return Err(
                wrong("its parties or ciphertext hash differ from its chain state".into()).into(),
            );
        }
        Ok((slip_msg, parties, entry, state.header))
    }

    /// A header of an earlier block: by its own certificate, or, without one, as the light
    /// client's folder keeps it.
    pub async fn verify_past_header(
        &self,
        anchor: &Anchor,
        h: &CertifiedHeader,
    ) -> Result<VerifiedHeader, VerifyError> {
        match anchor.verify_header(h.height, h) {
            Err(VerifyError::Uncertified { height }) => {
                let Some(light) = &self.light else {
                    return Err(VerifyError::Uncertified { height });
                };
                let store = light.lock().await;
                match store.header(height) {
                    Some(kept) if hex::encode(kept.canonical_bytes()) == h.header => {
                        Ok(verify::VerifiedHeader {
                            header: kept.clone(),
                            hash: kept.digest(),
                            signers: 0,
                            validators: anchor.validators.len(),
                        })
                    }
                    _ => Err(VerifyError::Uncertified { height }),
                }
            }
            other => other,
        }
    }
}
