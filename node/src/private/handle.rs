//! What the API holds of a hospital-chain node: its store and ledger, the status the driver
//! publishes, the submission queue, and the transactions the node signs itself (access records,
//! suspensions).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use medchain_crypto::keys::KeyMaterial;
use medchain_crypto::{Hash32, Identity};
use medchain_proto::canonical::peer_message;
use medchain_proto::v1::{self, peer_message::Body};
use medchain_storage::Store;
use tokio::sync::{broadcast, mpsc, oneshot, watch};

use super::access_guard::AccessGuard;
use crate::clock::now_ms;
use crate::driver::{AdmitError, BlockEvent, Submission};
use crate::mempool::MempoolError;
use crate::net::NetCommand;
use crate::status::Status;
use medchain_ledger::{CheckedTx, PrivateLedger, TxError};

/// Why a transaction this node signs itself (an access record, a suspension) was not queued.
#[derive(Debug, thiserror::Error)]
pub enum OwnTxError {
    /// The node's own ledger refused it: a bug or a broken store, not the caller's fault.
    #[error("{0}")]
    Refused(String),
    /// The mempool cannot take it now (full or shutting down); the caller may retry.
    #[error("{0}")]
    Unavailable(String),
}

/// Why a submitted transaction was refused.
#[derive(Debug, thiserror::Error)]
pub enum SubmitError {
    #[error(transparent)]
    Tx(#[from] TxError),
    #[error(transparent)]
    Mempool(#[from] MempoolError),
    #[error("the node is shutting down")]
    Closed,
    #[error("a record's slip comes with its ciphertext: upload both with POST /v1/records (`medchain record add`), not the slip alone")]
    SlipWithoutCiphertext,
}

impl From<AdmitError> for SubmitError {
    fn from(e: AdmitError) -> Self {
        match e {
            AdmitError::Mempool(e) => SubmitError::Mempool(e),
            AdmitError::Closed => SubmitError::Closed,
        }
    }
}

/// Handles the API uses.
#[derive(Clone)]
pub struct NodeHandle {
    pub store: Arc<Store>,
    pub ledger: Arc<PrivateLedger>,
    pub status: watch::Receiver<Status>,
    pub(super) submit: mpsc::Sender<Submission>,
    /// `GET /v1/chain`: chain ID, validators (with proxy encryption keys), authorities.
    pub chain: Arc<medchain_api::ChainInfo>,
    /// This node's keys: it signs access records and suspensions, and opens proxy fragments.
    pub node_key: Arc<KeyMaterial>,
    pub me: u32,
    pub(super) net: mpsc::Sender<NetCommand>,
    pub access: Arc<Mutex<AccessGuard>>,
    pub(super) own_nonce: Arc<AtomicU64>,
    pub metrics: Arc<crate::metrics::Metrics>,
    /// Committed blocks as they are published.
    pub(super) blocks: broadcast::Sender<Arc<BlockEvent>>,
    /// Access records of answered reads waiting for their batch (rules 4).
    pub(super) access_log: Arc<super::access_log::AccessLog>,
    /// The newest height with a header certificate (`crate::header_votes`).
    pub(super) certified: watch::Receiver<u64>,
}

impl std::fmt::Debug for NodeHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "NodeHandle({})", self.me)
    }
}

impl NodeHandle {
    /// The header certificate of block `height`, waiting up to `wait` for the validators' votes
    /// if this node has not gathered it yet (a block just committed is certified a round trip
    /// later). `None` if it has none by then.
    pub async fn header_certificate(
        &self,
        height: u64,
        wait: std::time::Duration,
    ) -> Result<Option<medchain_proto::v1::HeaderCertificate>, medchain_storage::StoreError> {
        if let Some(c) = self.store.header_certificate(height)? {
            return Ok(Some(c));
        }
        let mut certified = self.certified.clone();
        let _ = tokio::time::timeout(wait, certified.wait_for(|h| *h >= height)).await;
        self.store.header_certificate(height)
    }

    pub fn chain_id(&self) -> &str {
        &self.ledger.chain_id
    }

    pub fn name(&self) -> String {
        self.status.borrow().node.clone()
    }

    /// Checks a client transaction: decoding, chain, signatures, replay and the contract rules
    /// against the committed state (off the core, on a blocking thread).
    pub async fn check_client(&self, bytes: Vec<u8>) -> Result<CheckedTx, SubmitError> {
        let ledger = self.ledger.clone();
        tokio::task::spawn_blocking(move || ledger.check_client(&bytes, now_ms()))
            .await
            .map_err(|_| SubmitError::Closed)?
            .map_err(SubmitError::Tx)
    }

    /// [`Self::check_client`] of a transaction already decoded (an upload's).
    pub async fn check_client_decoded(
        &self,
        tx: v1::Transaction,
    ) -> Result<CheckedTx, SubmitError> {
        let ledger = self.ledger.clone();
        tokio::task::spawn_blocking(move || ledger.check_client_decoded(tx, now_ms()))
            .await
            .map_err(|_| SubmitError::Closed)?
            .map_err(SubmitError::Tx)
    }

    /// Queues a checked transaction; it is forwarded to the other validators.
    pub async fn queue(&self, checked: CheckedTx) -> Result<Hash32, SubmitError> {
        let id = checked.id;
        let (reply, rx) = oneshot::channel();
        self.submit
            .send(Submission {
                tx: checked,
                forward: true,
                reply,
            })
            .await
            .map_err(|_| SubmitError::Closed)?;
        rx.await.map_err(|_| SubmitError::Closed)??;
        self.metrics.transactions_accepted.inc();
        Ok(id)
    }

    /// Committed blocks from now on (a subscriber that lags more than
    /// [`crate::driver::BLOCK_EVENTS`] blocks is told how many it missed).
    pub fn subscribe_blocks(&self) -> broadcast::Receiver<Arc<BlockEvent>> {
        self.blocks.subscribe()
    }

    /// Checks and queues a client transaction.
    /// A transaction submitted alone (`POST /v1/transactions`). A record's slip must name a
    /// ciphertext this node already stores (it travels with its ciphertext through
    /// `POST /v1/records`), else the chain would hold a record no one can read.
    pub async fn submit(&self, bytes: Vec<u8>) -> Result<Hash32, SubmitError> {
        let ledger = self.ledger.clone();
        let store = self.store.clone();
        let checked = tokio::task::spawn_blocking(move || {
            let checked = ledger.check_client(&bytes, now_ms())?;
            // Decoded and verified just now: this finds it without decoding again.
            let decoded = ledger.check_form(&bytes)?;
            let payload = decoded.tx.body.as_ref().and_then(|b| b.payload.as_ref());
            if let Some(v1::transaction_body::Payload::PrivateSlip(slip)) = payload {
                let stored = slip
                    .content
                    .as_ref()
                    .and_then(|c| Hash32::from_slice(&c.ciphertext_hash).ok())
                    .is_some_and(|a| store.has_record(&a));
                if !stored {
                    return Err(SubmitError::SlipWithoutCiphertext);
                }
            }
            Ok(checked)
        })
        .await
        .map_err(|_| SubmitError::Closed)??;
        self.queue(checked).await
    }

    /// Pushes an uploaded ciphertext, with its admitted slip (`transaction`, canonical bytes),
    /// to the other validators' stores.
    pub async fn push_blob(&self, ciphertext: Vec<u8>, transaction: Vec<u8>) {
        let _ = self
            .net
            .send(NetCommand::Broadcast(peer_message(Body::Blob(
                v1::RecordBlob {
                    ciphertext,
                    transaction,
                },
            ))))
            .await;
    }

    /// Signs `payload` as this node (a fresh nonce per call, even within one microsecond).
    pub(super) fn own_transaction(
        &self,
        payload: v1::transaction_body::Payload,
    ) -> v1::Transaction {
        let now_us = now_ms() * 1_000;
        let nonce = self
            .own_nonce
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |last| {
                Some(now_us.max(last + 1))
            })
            .map_or(now_us, |last| now_us.max(last + 1));
        medchain_proto::ledger::sign_transaction(
            &self.node_key.signing_key(),
            v1::TransactionBody {
                chain_id: self.chain_id().to_string(),
                signer: vec![],
                nonce,
                timestamp_ms: now_ms(),
                payload: Some(payload),
            },
        )
    }

    /// Keeps or queues the access record of one read; the read is answered only once this
    /// returns, and refused if it fails: no read goes unaudited. Under rules 4 the record is
    /// synced to the store and batched with others ([`super::access_log`]); before, it is
    /// queued as a transaction of its own.
    pub async fn record_access(
        &self,
        req: &medchain_proto::records::VerifiedReadRequest,
        granted: bool,
        reason: &str,
        grant: Option<Hash32>,
    ) -> Result<(), OwnTxError> {
        let reason: String = reason
            .chars()
            .take(medchain_proto::records::MAX_REASON)
            .collect();
        let record = v1::AccessRecord {
            reader: req.reader.as_bytes().to_vec(),
            slip_id: req.slip_id.as_bytes().to_vec(),
            request: req.digest.as_bytes().to_vec(),
            granted,
            reason,
            grant: grant.map(|g| g.as_bytes().to_vec()).unwrap_or_default(),
            at_ms: now_ms(),
            signed_request: Some(req.signed.clone()),
        };
        let rules = self
            .ledger
            .rules_now()
            .map_err(|e| OwnTxError::Unavailable(format!("the read cannot be audited now: {e}")))?
            .0;
        if rules >= medchain_ledger::contracts::rules::V4 {
            self.access_log.has_room()?;
            let store = self.store.clone();
            let (request, bytes) = (req.digest, prost::Message::encode_to_vec(&record));
            tokio::task::spawn_blocking(move || store.log_access(&request, &bytes))
                .await
                .map_err(|e| OwnTxError::Unavailable(e.to_string()))?
                .map_err(|e| {
                    OwnTxError::Unavailable(format!(
                        "the read cannot be audited now (its access record could not be stored: {e}); it is refused, retry shortly"
                    ))
                })?;
            self.access_log.push(req.digest, record);
            return Ok(());
        }
        let tx = self.own_transaction(v1::transaction_body::Payload::AccessRecord(record));
        let bytes = medchain_proto::Canonical::canonical_bytes(&tx);
        let checked = self
            .ledger
            .check(&bytes)
            .map_err(|e| OwnTxError::Refused(e.to_string()))?;
        self.queue(checked).await.map_err(|e| {
            OwnTxError::Unavailable(format!(
                "the read cannot be audited now ({e}); it is refused, retry shortly"
            ))
        })?;
        Ok(())
    }

    /// Queues a suspension of `id` signed by this node (abnormal access): under rules 2 a
    /// report, which suspends once f + 1 validators made one.
    pub async fn suspend(&self, id: &Identity, reason: &str) -> Result<(), OwnTxError> {
        tracing::warn!(identity = %id, reason, "abnormal access: reporting the identity for suspension");
        let tx = self.own_transaction(v1::transaction_body::Payload::Suspension(v1::Suspension {
            identity: id.as_bytes().to_vec(),
            reason: reason
                .chars()
                .take(medchain_proto::records::MAX_REASON)
                .collect(),
        }));
        let bytes = medchain_proto::Canonical::canonical_bytes(&tx);
        let checked = self
            .ledger
            .check(&bytes)
            .map_err(|e| OwnTxError::Refused(e.to_string()))?;
        self.queue(checked)
            .await
            .map_err(|e| OwnTxError::Unavailable(e.to_string()))?;
        Ok(())
    }
}
