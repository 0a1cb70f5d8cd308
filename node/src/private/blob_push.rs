//! Admission of a ciphertext another validator pushed.
//!
//! A push is bytes a peer asks this node to keep, up to 16 MiB each. Kept unconditionally, it
//! would let anyone who can make a validator push (a doctor uploading slips that are then
//! refused) fill every disk with no trace on chain. So a push travels with its slip and is kept
//! only when the chain will account for it:
//! - a committed slip names it and this node lacks it (it was down, or the push came late); or
//! - its slip is pending in this node's mempool, or is admitted to it now (the same checks as a
//!   forwarded transaction: form, signatures, replay), and names exactly these bytes.
//!
//! A slip admitted here is ordered and committed (as effective or as refused), so every kept
//! ciphertext leaves a slip on chain; one whose slip never takes effect is an orphan the sweep
//! removes after its grace period ([`super::orphans`]).

use std::sync::Arc;

use medchain_crypto::Hash32;
use medchain_ledger::{CheckedTx, PrivateLedger, TxError};
use medchain_proto::canonical::limits;
use medchain_proto::v1;
use medchain_storage::Store;
use tokio::sync::{mpsc, oneshot};

use super::blobs::{lock, Missing};
use crate::client::records::ciphertext_address;
use crate::driver::{AdmitError, Submission};
use crate::mempool::{MempoolError, PendingBlobs};

/// What became of a push.
#[derive(Debug, PartialEq, Eq)]
pub enum PushOutcome {
    /// Stored (or already held) under this address.
    Kept(Hash32),
    /// Refused, for this reason (logged and counted; the bytes are not written).
    Refused(String),
}

/// What a push is checked against.
#[derive(Clone, Debug)]
pub struct PushGate {
    pub store: Arc<Store>,
    pub ledger: Arc<PrivateLedger>,
    pub submit: mpsc::Sender<Submission>,
    pub missing: Missing,
    /// The mempool's pending ciphertexts: a push whose slip is already pending (its forwarded
    /// copy usually arrives first) is kept without asking the pool again.
    pub pending: PendingBlobs,
}

fn refused(why: impl Into<String>) -> PushOutcome {
    PushOutcome::Refused(why.into())
}

impl PushGate {
    /// Checks a push and stores it if it is accounted for. File writes run on a blocking thread.
    pub async fn admit(&self, blob: v1::RecordBlob) -> PushOutcome {
        if blob.ciphertext.len() > limits::RECORD_CIPHERTEXT {
            return refused(format!(
                "a ciphertext of {} bytes is over the {}-byte record limit",
                blob.ciphertext.len(),
                limits::RECORD_CIPHERTEXT
            ));
        }
        if blob.transaction.len() > limits::TRANSACTION {
            return refused("its slip transaction is over the transaction size limit");
        }
        let gate = self.clone();
        let checked = tokio::task::spawn_blocking(move || gate.check(&blob).map(|c| (c, blob)))
            .await
            .unwrap_or_else(|_| Err(refused("the check was cancelled")));
        let (checked, blob) = match checked {
            Ok((Some(checked), blob)) => (checked, blob),
            Ok((None, blob)) => return self.store_blocking(blob.ciphertext).await,
            Err(outcome) => return outcome,
        };
        // Pending under another slip is refused by the pool; a Duplicate is this slip, pending
        // since the check above.
        let (reply, answer) = oneshot::channel();
        let submission = Submission {
            tx: checked,
            forward: false,
            reply,
        };
        if self.submit.send(submission).await.is_err() {
            return refused("the node is shutting down");
        }
        match answer.await {
            Ok(Ok(())) | Ok(Err(AdmitError::Mempool(MempoolError::Duplicate(_)))) => {
                self.store_blocking(blob.ciphertext).await
            }
            Ok(Err(e)) => refused(format!("its slip was not admitted: {e}")),
            Err(_) => refused("the node is shutting down"),
        }
    }

    /// The checks before admission, on a blocking thread: `Ok(None)` when the bytes are to be
    /// kept without admitting anything (a committed slip lacks them, or they are held already),
    /// `Ok(Some)` with the slip to admit.
    fn check(&self, blob: &v1::RecordBlob) -> Result<Option<CheckedTx>, PushOutcome> {
        let address = ciphertext_address(&blob.ciphertext);
        if self.store.has_record(&address) || lock(&self.missing).contains(&address) {
            return Ok(None);
        }
        // The usual case first, with no store read: the forwarded slip came first and is
        // pending (decoding is cached, so the full check below costs nothing extra).
        if let Ok(decoded) = self.ledger.check_form(&blob.transaction) {
            if self.pending.held_by(&address, &decoded.id) {
                return Ok(None);
            }
        }
        let checked = match self.ledger.check(&blob.transaction) {
            Ok(c) => c,
            // Committed since the push was sent: kept if the commit found it missing here.
            Err(TxError::AlreadyCommitted { .. }) if lock(&self.missing).contains(&address) => {
                return Ok(None)
            }
            Err(e) => return Err(refused(format!("its slip does not check: {e}"))),
        };
        match checked.blob {
            Some((a, size)) if a == address && size == blob.ciphertext.len() as u64 => {
                Ok(Some(checked))
            }
            Some(_) => Err(refused(
                "its slip names another ciphertext (address or size differ)",
            )),
            None => Err(refused("its transaction is not a record slip")),
        }
    }

    async fn store_blocking(&self, ciphertext: Vec<u8>) -> PushOutcome {
        let store = self.store.clone();
        let missing = self.missing.clone();
        tokio::task::spawn_blocking(move || {
            let address = ciphertext_address(&ciphertext);
            if !store.has_record(&address) {
                if let Err(e) = store.put_record(&address, &ciphertext) {
                    return refused(format!("it could not be stored: {e}"));
                }
            }
            lock(&missing).remove(&address);
            PushOutcome::Kept(address)
        })
        .await
        .unwrap_or_else(|_| refused("the write was cancelled"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::records::{build_record_write, PatientKeys, RecordInput, RecordWrite};
    use medchain_crypto::keys::KeyMaterial;
    use medchain_crypto::validators::ValidatorSet;
    use medchain_proto::Canonical;

    fn gate(dir: &std::path::Path, admit: bool) -> PushGate {
        let store = Arc::new(Store::open(dir).unwrap());
        let validators = (1..=4u8)
            .map(|i| {
                medchain_crypto::SigningKey::from_bytes(&[i; 32])
                    .unwrap()
                    .identity()
            })
            .collect();
        let ledger = Arc::new(PrivateLedger::new(
            store.clone(),
            "h".into(),
            ValidatorSet::new(validators).unwrap(),
            vec![],
            medchain_ledger::contracts::rules::LATEST,
        ));
        // The driver's side: admit everything, or refuse everything as a full pool would.
        let (submit, mut queue) = mpsc::channel::<Submission>(4);
        tokio::spawn(async move {
            while let Some(s) = queue.recv().await {
                assert!(!s.forward, "a pushed slip is not forwarded again");
                let answer = match admit {
                    true => Ok(()),
                    false => Err(AdmitError::Mempool(MempoolError::Full { capacity: 1 })),
                };
                let _ = s.reply.send(answer);
            }
        });
        PushGate {
            store,
            ledger,
            submit,
            missing: Missing::default(),
            pending: PendingBlobs::default(),
        }
    }

    fn write(n: u8) -> RecordWrite {
        let doctor = KeyMaterial::from_seed(&[n; 32]).unwrap();
        let patient = KeyMaterial::from_seed(&[n + 100; 32]).unwrap();
        let keys = PatientKeys {
            identity: patient.signing_key().identity(),
            encryption: patient.encryption_key().public_key(),
            search: patient.search_key().public_key(),
        };
        let input = RecordInput {
            plaintext: br#"{"resourceType":"Observation"}"#.to_vec(),
            record_type: "Observation".into(),
            keywords: vec![],
            replaces: None,
        };
        build_record_write("h", &doctor, &keys, &input, 1, 1).unwrap()
    }

    fn push(ciphertext: &[u8], tx: &v1::Transaction) -> v1::RecordBlob {
        v1::RecordBlob {
            ciphertext: ciphertext.to_vec(),
            transaction: tx.canonical_bytes(),
        }
    }

    fn is_refused(outcome: &PushOutcome, needle: &str) -> bool {
        matches!(outcome, PushOutcome::Refused(m) if m.contains(needle))
    }

    /// Bytes without a slip, or with a slip naming other bytes, are never written; a slip the
    /// pool admits (or holds already) gets its ciphertext kept, one it refuses does not; a
    /// committed record this node lacks is kept whatever comes with it.
    #[tokio::test]
    async fn only_accounted_pushes_are_stored() {
        let (a, b) = (write(1), write(2));
        let addr = |w: &RecordWrite| ciphertext_address(&w.ciphertext);

        let dir = tempfile::tempdir().unwrap();
        let g = gate(dir.path(), true);
        let bare = v1::RecordBlob {
            ciphertext: a.ciphertext.clone(),
            transaction: vec![],
        };
        assert!(is_refused(&g.admit(bare).await, "does not check"));
        let wrong = g.admit(push(&a.ciphertext, &b.transaction)).await;
        assert!(is_refused(&wrong, "names another ciphertext"), "{wrong:?}");
        assert!(!g.store.has_record(&addr(&a)));
        assert_eq!(
            g.admit(push(&a.ciphertext, &a.transaction)).await,
            PushOutcome::Kept(addr(&a))
        );
        assert!(g.store.has_record(&addr(&a)));

        let dir = tempfile::tempdir().unwrap();
        let g = gate(dir.path(), false);
        let full = g.admit(push(&b.ciphertext, &b.transaction)).await;
        assert!(is_refused(&full, "not admitted"), "{full:?}");
        assert!(!g.store.has_record(&addr(&b)));
        // Pending here already (its forwarded copy came first): kept without asking the pool.
        let c = write(3);
        let checked = g.ledger.check(&c.transaction.canonical_bytes()).unwrap();
        let mut pool =
            crate::mempool::Mempool::new(10, crate::mempool::Quotas::none(), g.pending.clone());
        pool.insert(&checked).unwrap();
        assert_eq!(
            g.admit(push(&c.ciphertext, &c.transaction)).await,
            PushOutcome::Kept(addr(&c))
        );
        lock(&g.missing).insert(addr(&b));
        let bare = v1::RecordBlob {
            ciphertext: b.ciphertext.clone(),
            transaction: vec![],
        };
        assert_eq!(g.admit(bare).await, PushOutcome::Kept(addr(&b)));
        assert!(g.store.has_record(&addr(&b)) && lock(&g.missing).is_empty());
    }
}
