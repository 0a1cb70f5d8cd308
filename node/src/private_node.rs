//! A hospital private-chain node: the PBFT replica, its ledger and mempool, driven by one task
//! (the core) that owns the engine and performs its actions in order: persist (synced) before any
//! send, commit each block in one atomic batch, arm timers, fetch missing blocks.
//!
//! Signature checks of client and peer transactions run outside the core (in the API handlers and
//! on blocking threads), so they use both cores; the core only sees checked transactions.
//!
//! **Off-chain store.** Record ciphertexts are replicated, not fetched on demand: the node that
//! receives an upload stores it before queueing the slip and pushes it to every other validator;
//! a node that commits a slip whose ciphertext it lacks (it was down, or the push was lost) asks
//! its peers for it until one answers with bytes matching the slip's content address. So every
//! proxy can serve every record, and losing one node loses no record. A deletion erases the
//! ciphertext on every node when it commits.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{anyhow, Context, Result};
use medchain_crypto::keys::KeyMaterial;
use medchain_crypto::validators::{CachingVerifier, ValidatorSet};
use medchain_crypto::{Hash32, Identity, SigningKey};
use medchain_pbft::{chain_state_digest, Action, Config, Event, Note, Replica, Timer};
use medchain_proto::canonical::peer_message;
use medchain_proto::ledger::committed_batch_of;
use medchain_proto::v1::{self, peer_message::Body};
use medchain_storage::Store;
use tokio::sync::{mpsc, oneshot, watch};

use crate::access_guard::AccessGuard;
use crate::client::records::ciphertext_address;
use crate::config::LoadedConfig;
use crate::contracts::SideEffects;
use crate::ledger::{CheckedTx, PrivateLedger, TxError};
use crate::mempool::{Mempool, MempoolError};
use crate::net::{self, NetCommand, NetEvent, Peer};

/// Pending transactions a node holds at most.
pub const MEMPOOL_CAPACITY: usize = 50_000;
/// Blocks per block-sync response.
pub const SYNC_BATCH: u32 = 64;
/// Most transactions forwarded in one message; a peer sending more is refused.
pub const FORWARD_BATCH: usize = 256;

pub use crate::status::Status;

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
}

/// A checked transaction for the core: whether to forward it to the other validators, and where
/// to report the mempool's answer.
type Submission = (CheckedTx, bool, oneshot::Sender<Result<(), SubmitError>>);

/// Handles the API uses.
#[derive(Clone)]
pub struct NodeHandle {
    pub store: Arc<Store>,
    pub ledger: Arc<PrivateLedger>,
    pub status: watch::Receiver<Status>,
    submit: mpsc::Sender<Submission>,
    /// `GET /v1/chain`: chain ID, validators (with proxy encryption keys), authorities.
    pub chain: Arc<serde_json::Value>,
    /// This node's keys: it signs access records and suspensions, and opens proxy fragments.
    pub node_key: Arc<KeyMaterial>,
    pub me: u32,
    net: mpsc::Sender<NetCommand>,
    pub access: Arc<Mutex<AccessGuard>>,
    own_nonce: Arc<AtomicU64>,
    pub metrics: Arc<crate::metrics::Metrics>,
}

impl std::fmt::Debug for NodeHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "NodeHandle({})", self.me)
    }
}

impl NodeHandle {
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

    /// Queues a checked transaction; it is forwarded to the other validators.
    pub async fn queue(&self, checked: CheckedTx) -> Result<Hash32, SubmitError> {
        let id = checked.id;
        let (tx, rx) = oneshot::channel();
        self.submit
            .send((checked, true, tx))
            .await
            .map_err(|_| SubmitError::Closed)?;
        rx.await.map_err(|_| SubmitError::Closed)??;
        self.metrics.transactions_accepted.inc();
        Ok(id)
    }

    /// Checks and queues a client transaction.
    pub async fn submit(&self, bytes: Vec<u8>) -> Result<Hash32, SubmitError> {
        let checked = self.check_client(bytes).await?;
        self.queue(checked).await
    }

    /// Pushes an uploaded ciphertext to the other validators' stores.
    pub async fn push_blob(&self, ciphertext: Vec<u8>) {
        let _ = self
            .net
            .send(NetCommand::Broadcast(peer_message(Body::Blob(
                v1::RecordBlob { ciphertext },
            ))))
            .await;
    }

    /// Signs `payload` as this node (a fresh nonce per call, even within one microsecond).
    fn own_transaction(&self, payload: v1::transaction_body::Payload) -> v1::Transaction {
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

    /// Queues the access record of one read. If it cannot be queued the read is refused: no
    /// read goes unaudited.
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
        let tx = self.own_transaction(v1::transaction_body::Payload::AccessRecord(
            v1::AccessRecord {
                reader: req.reader.as_bytes().to_vec(),
                slip_id: req.slip_id.as_bytes().to_vec(),
                request: req.digest.as_bytes().to_vec(),
                granted,
                reason,
                grant: grant.map(|g| g.as_bytes().to_vec()).unwrap_or_default(),
                at_ms: now_ms(),
            },
        ));
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

    /// Queues a suspension of `id` signed by this node (abnormal access).
    pub async fn suspend(&self, id: &Identity, reason: &str) -> Result<(), OwnTxError> {
        tracing::warn!(identity = %id, reason, "abnormal access: suspending the identity");
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

pub use crate::clock::now_ms;

/// Opens the store, restores the replica and starts the network and the core. Returns the handle
/// for the API and the core's join handle.
pub fn start(
    loaded: &LoadedConfig,
    keys: KeyMaterial,
) -> Result<(NodeHandle, tokio::task::JoinHandle<Result<()>>)> {
    let key: SigningKey = keys.signing_key();
    let g = &loaded.genesis;
    let validators = ValidatorSet::new(g.validators.iter().map(|v| v.identity).collect())
        .map_err(|e| anyhow!("genesis validator set: {e}"))?;
    let me = validators
        .index_of(&key.identity())
        .ok_or_else(|| anyhow!("this node's key is not in the genesis validator set"))?;
    let store =
        Arc::new(Store::open(&loaded.data_path()).with_context(|| {
            format!("opening the data folder {}", loaded.data_path().display())
        })?);
    store.pin_genesis(&g.hash())?;
    let ledger = Arc::new(PrivateLedger::new(
        store.clone(),
        g.chain_id.clone(),
        validators.clone(),
        g.authorities.iter().map(|a| a.identity).collect(),
    ));
    let chain = serde_json::json!({
        "chain_id": g.chain_id,
        "validators": g.validators.iter().enumerate().map(|(i, v)| serde_json::json!({
            "index": i,
            "name": v.name,
            "identity": v.identity.to_string(),
            "encryption_key": v.encryption_key,
        })).collect::<Vec<_>>(),
        "authorities": g.authorities.iter().map(|a| serde_json::json!({
            "name": a.name,
            "identity": a.identity.to_string(),
        })).collect::<Vec<_>>(),
    });
    let cfg = Config::new(
        g.chain_id.clone(),
        validators.clone(),
        me,
        g.params.max_block_transactions as usize,
        g.params.block_interval_ms,
        g.params.checkpoint_interval,
    );
    let persisted = crate::replica_state::load(&store)?;
    let (exec_seq, exec_digest) = ledger.exec_point()?;
    let tip = store.tip()?.map_or(0, |t| t.height);
    if tip != exec_seq {
        return Err(anyhow!(
            "the store's tip is height {tip} but its execution point is {exec_seq}; the data folder is inconsistent (restore it from a backup or resync from peers into an empty folder)"
        ));
    }
    tracing::info!(
        height = tip,
        restored_consensus_state = persisted.is_some(),
        "starting private-chain replica {me} of {}",
        validators.len()
    );
    let replica = Replica::restore(
        cfg,
        key.clone(),
        CachingVerifier::new(1 << 16),
        persisted,
        (exec_seq, exec_digest),
    )?;
    let peers: Vec<Peer> = g
        .validators
        .iter()
        .enumerate()
        .filter(|(i, _)| *i as u32 != me)
        .map(|(i, v)| {
            Ok(Peer {
                index: i as u32,
                name: v.name.clone(),
                identity: v.identity,
                address: v.address.parse()?,
            })
        })
        .collect::<Result<_>>()?;
    let listen = loaded.config.network.listen.parse()?;
    let network = net::start(&key, listen, peers)?;
    let committed_transactions = store
        .chain_state(crate::ledger::COMMITTED_KEY)?
        .and_then(|b| b.try_into().ok())
        .map(u64::from_be_bytes)
        .unwrap_or(0);
    let tip_hash = store.tip()?.map(|t| t.hash.to_hex()).unwrap_or_default();
    let last_block_time_ms = store
        .block(tip)?
        .and_then(|b| b.header)
        .map_or(0, |h| h.timestamp_ms);
    let status = Status {
        last_block_time_ms,
        chain_id: g.chain_id.clone(),
        genesis_hash: g.hash().to_hex(),
        node: g.validators[me as usize].name.clone(),
        identity: key.identity().to_string(),
        height: tip,
        tip_hash,
        validators: validators.len(),
        mempool_capacity: MEMPOOL_CAPACITY,
        committed_transactions,
        peers_needed: validators.quorum().saturating_sub(1),
        ..Status::default()
    };
    let (status_tx, status_rx) = watch::channel(status.clone());
    let (submit_tx, submit_rx) = mpsc::channel(16_384);
    let node_key = Arc::new(keys);
    let metrics = Arc::new(crate::metrics::Metrics::new(network.traffic.clone()));
    let access = Arc::new(Mutex::new(AccessGuard::new(loaded.config.access.clone())));
    let handle = NodeHandle {
        store: store.clone(),
        ledger: ledger.clone(),
        status: status_rx,
        submit: submit_tx.clone(),
        chain: Arc::new(chain),
        node_key: node_key.clone(),
        me,
        net: network.commands.clone(),
        access: access.clone(),
        own_nonce: Arc::new(AtomicU64::new(0)),
        metrics: metrics.clone(),
    };
    let forwarded = spawn_forward_checker(ledger.clone(), submit_tx);
    let core = Core {
        replica,
        ledger,
        store,
        mempool: Mempool::new(MEMPOOL_CAPACITY),
        net: network.commands,
        timers: BTreeMap::new(),
        exec_digest,
        status,
        status_tx,
        next_sync_peer: 0,
        validators: validators.len() as u32,
        me,
        connected: Default::default(),
        forward: Vec::new(),
        node_key,
        access,
        missing_blobs: BTreeSet::new(),
        forwarded,
        metrics,
        seen_view: 0,
        catch_up: None,
    };
    let join = tokio::spawn(core.run(network.events, network.stats, submit_rx));
    Ok((handle, join))
}

struct Core {
    replica: Replica<SigningKey, CachingVerifier>,
    ledger: Arc<PrivateLedger>,
    store: Arc<Store>,
    mempool: Mempool,
    net: mpsc::Sender<NetCommand>,
    timers: BTreeMap<Timer, u64>,
    exec_digest: Hash32,
    status: Status,
    status_tx: watch::Sender<Status>,
    next_sync_peer: u32,
    validators: u32,
    me: u32,
    connected: std::collections::BTreeSet<u32>,
    /// Accepted client transactions not yet forwarded (sent when the submission queue is drained
    /// or the batch is full, so batching adds no delay to a lone transaction).
    forward: Vec<Vec<u8>>,
    node_key: Arc<KeyMaterial>,
    access: Arc<Mutex<AccessGuard>>,
    /// Content addresses of committed records whose ciphertext this node still lacks.
    missing_blobs: BTreeSet<Hash32>,
    /// Forwarded transactions on their way to the checker thread.
    forwarded: mpsc::Sender<(u32, Vec<Vec<u8>>)>,
    metrics: Arc<crate::metrics::Metrics>,
    /// The highest view the replica has been in (view changes are counted from it).
    seen_view: u64,
    /// While catching up: where it started and when, and when progress was last logged.
    catch_up: Option<CatchUpProgress>,
}

/// A node this far behind its peers counts as catching up (not ready); smaller gaps are the normal
/// lag of a replica that has not yet seen the last commit.
const CATCH_UP_GAP: u64 = 8;
/// Catch-up progress is logged at most this often.
const CATCH_UP_LOG_MS: u64 = 2_000;

#[derive(Debug, Clone, Copy)]
struct CatchUpProgress {
    start_height: u64,
    start_ms: u64,
    logged_ms: u64,
}

/// Stores a ciphertext another validator pushed after an upload, under its content address.
fn store_pushed_blob(store: &Store, ciphertext: Vec<u8>) -> Result<()> {
    if ciphertext.len() > medchain_proto::canonical::limits::RECORD_CIPHERTEXT {
        return Err(anyhow!(
            "a pushed ciphertext of {} bytes is over the record limit",
            ciphertext.len()
        ));
    }
    let address = ciphertext_address(&ciphertext);
    if !store.has_record(&address) {
        store.put_record(&address, &ciphertext)?;
    }
    Ok(())
}

/// Checks transactions forwarded by other validators on one blocking thread, in the order they
/// arrived, and queues the good ones: a peer's transactions keep their order (an access record
/// and the confirmation that follows it are ordered as their origin queued them), and the core
/// never waits for a signature check.
fn spawn_forward_checker(
    ledger: Arc<PrivateLedger>,
    submit: mpsc::Sender<Submission>,
) -> mpsc::Sender<(u32, Vec<Vec<u8>>)> {
    let (tx, mut rx) = mpsc::channel::<(u32, Vec<Vec<u8>>)>(1_024);
    tokio::task::spawn_blocking(move || {
        while let Some((from, batch)) = rx.blocking_recv() {
            for bytes in batch {
                match ledger.check(&bytes) {
                    Ok(checked) => {
                        let (reply, _) = oneshot::channel();
                        if submit.blocking_send((checked, false, reply)).is_err() {
                            return;
                        }
                    }
                    Err(e) => {
                        tracing::info!(peer = from, error = %e, "refused a forwarded transaction")
                    }
                }
            }
        }
    });
    tx
}

impl Core {
    async fn run(
        mut self,
        mut events: mpsc::Receiver<NetEvent>,
        stats: watch::Receiver<net::NetStats>,
        mut submits: mpsc::Receiver<Submission>,
    ) -> Result<()> {
        self.step(Event::Start).await?;
        // Block sync: every second, ask one connected peer (in turn) for blocks above this node's
        // tip. Cheap when up to date (an empty answer); after a restart or a partition it brings
        // the node back without waiting for the next checkpoint. Every block is verified by the
        // engine (commit certificate and proposal signature) before it is applied.
        let mut sync_tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            let next = self
                .timers
                .iter()
                .min_by_key(|(_, at)| **at)
                .map(|(t, at)| (*t, *at));
            let sleep = match next {
                Some((_, at)) => Duration::from_millis(at.saturating_sub(now_ms())),
                None => Duration::from_secs(3_600),
            };
            tokio::select! {
                _ = tokio::time::sleep(sleep), if next.is_some() => {
                    let (timer, _) = next.expect("guarded");
                    self.timers.remove(&timer);
                    self.step(Event::Timer(timer)).await?;
                }
                _ = sync_tick.tick() => self.poll_blocks().await,
                ev = events.recv() => {
                    let Some(ev) = ev else { return Err(anyhow!("the network task stopped")) };
                    self.on_net(ev).await?;
                }
                sub = submits.recv() => {
                    let Some((tx, forward, reply)) = sub else { return Ok(()) };
                    let result = self.admit(tx, forward).await;
                    let _ = reply.send(result);
                    if submits.is_empty() || self.forward.len() >= FORWARD_BATCH {
                        self.flush_forward().await;
                    }
                }
            }
            let connected = stats.borrow().connected;
            if self.status.peers_connected != connected {
                self.status.peers_connected = connected;
                self.publish();
            }
        }
    }

    fn publish(&mut self) {
        self.status.mempool = self.mempool.len();
        self.status_tx.send_replace(self.status.clone());
    }

    async fn admit(&mut self, tx: CheckedTx, forward: bool) -> Result<(), SubmitError> {
        self.mempool.insert(tx.id, tx.replay_key)?;
        if forward {
            self.forward.push(tx.bytes.clone());
        }
        self.step(Event::Submit(tx.bytes))
            .await
            .map_err(|_| SubmitError::Closed)?;
        self.publish();
        Ok(())
    }

    async fn flush_forward(&mut self) {
        if self.forward.is_empty() {
            return;
        }
        let all = std::mem::take(&mut self.forward);
        // Peers refuse a message of more than FORWARD_BATCH transactions.
        for transactions in all.chunks(FORWARD_BATCH) {
            let _ = self
                .net
                .send(NetCommand::Broadcast(peer_message(Body::Transactions(
                    v1::TransactionBatch {
                        transactions: transactions.to_vec(),
                    },
                ))))
                .await;
        }
    }

    async fn on_net(&mut self, ev: NetEvent) -> Result<()> {
        match ev {
            NetEvent::Message { from, msg } => match msg.body {
                Some(Body::Pbft(m)) => self.step(Event::Message(m)).await?,
                Some(Body::Transactions(batch)) => {
                    if batch.transactions.len() > FORWARD_BATCH {
                        tracing::info!(
                            peer = from,
                            count = batch.transactions.len(),
                            limit = FORWARD_BATCH,
                            "refused a forwarded batch over the size limit"
                        );
                        return Ok(());
                    }
                    // Checked off the core, in arrival order, then queued without forwarding
                    // (the origin sends to all).
                    let _ = self.forwarded.send((from, batch.transactions)).await;
                }
                Some(Body::Blob(blob)) => {
                    // A pushed ciphertext is written off the core: a synced file write per record
                    // would otherwise serialise every vote behind the disk.
                    let store = self.store.clone();
                    tokio::task::spawn_blocking(move || {
                        if let Err(e) = store_pushed_blob(&store, blob.ciphertext) {
                            tracing::warn!(peer = from, error = %e, "could not store a pushed record ciphertext");
                        }
                    });
                }
                Some(Body::BlobResponse(resp)) if !resp.ciphertext.is_empty() => {
                    if let Ok(h) = Hash32::from_slice(&resp.ciphertext_hash) {
                        self.store_blob(from, Some(h), resp.ciphertext)?;
                    }
                }
                Some(Body::BlockResponse(resp)) if !resp.blocks.is_empty() => {
                    let mut entries = Vec::new();
                    for b in &resp.blocks {
                        match committed_batch_of(b) {
                            Ok(e) => entries.push(e),
                            Err(e) => {
                                tracing::warn!(peer = from, error = %e, "malformed block in a sync response");
                                break;
                            }
                        }
                    }
                    let before = self.status.height;
                    let peer_tip = resp.tip_height;
                    if peer_tip >= before + CATCH_UP_GAP {
                        self.behind(peer_tip);
                    }
                    self.step(Event::StateTransfer(entries)).await?;
                    self.log_catch_up();
                    // Still behind and the answer helped: ask again now rather than at the next
                    // sync tick, so catch-up runs at network speed.
                    if self.status.height > before && peer_tip > self.status.height {
                        self.ask_a_peer(Body::BlockRequest(v1::BlockRequest {
                            from_height: self.status.height + 1,
                            count: SYNC_BATCH,
                        }))
                        .await;
                    }
                }
                // Nothing above this node's tip at that peer. A target one peer claimed (an
                // unproven height) ends here, so a faulty peer cannot keep this node "not ready";
                // a certified target (a stable checkpoint) is re-asserted by the engine's retry.
                Some(Body::BlockResponse(resp))
                    if resp.tip_height <= self.status.height
                        && self.status.catching_up.is_some() =>
                {
                    self.finish_catch_up();
                }
                _ => {}
            },
            NetEvent::Query {
                from,
                msg:
                    v1::PeerMessage {
                        body: Some(Body::BlobRequest(req)),
                        ..
                    },
                channel,
            } => {
                let ciphertext = match Hash32::from_slice(&req.ciphertext_hash) {
                    Ok(h) => self.store.record(&h)?.unwrap_or_default(),
                    Err(_) => Vec::new(),
                };
                tracing::trace!(
                    peer = from,
                    found = !ciphertext.is_empty(),
                    "served a blob request"
                );
                let _ = self
                    .net
                    .send(NetCommand::Respond {
                        channel,
                        msg: peer_message(Body::BlobResponse(v1::BlobResponse {
                            ciphertext_hash: req.ciphertext_hash,
                            ciphertext,
                        })),
                    })
                    .await;
            }
            NetEvent::Query {
                from,
                msg:
                    v1::PeerMessage {
                        body: Some(Body::BlockRequest(request)),
                        ..
                    },
                channel,
            } => {
                let count = request.count.clamp(1, SYNC_BATCH) as u64;
                let mut blocks = Vec::new();
                let mut bytes = 0usize;
                for h in request.from_height.max(1)..request.from_height.max(1) + count {
                    match self.store.block(h)? {
                        Some(b) => {
                            bytes += medchain_proto::Canonical::canonical_bytes(&b).len();
                            blocks.push(b);
                            if bytes > medchain_proto::canonical::limits::BLOCK {
                                break;
                            }
                        }
                        None => break,
                    }
                }
                tracing::trace!(
                    peer = from,
                    from_height = request.from_height,
                    served = blocks.len(),
                    "served blocks"
                );
                let _ = self
                    .net
                    .send(NetCommand::Respond {
                        channel,
                        msg: peer_message(Body::BlockResponse(v1::BlockResponse {
                            blocks,
                            tip_height: self.status.height,
                        })),
                    })
                    .await;
            }
            NetEvent::Query { from, .. } => {
                tracing::info!(peer = from, "refused a query of an unknown kind");
            }
            NetEvent::Connected(i) => {
                self.connected.insert(i);
            }
            NetEvent::Disconnected(i) => {
                self.connected.remove(&i);
            }
        }
        Ok(())
    }

    /// Feeds one event to the replica and performs its actions in order.
    async fn step(&mut self, event: Event) -> Result<()> {
        let actions = self.replica.handle(now_ms(), event, &*self.ledger);
        let view = self.replica.view();
        if view > self.seen_view {
            if self.seen_view > 0 || self.status.height > 0 {
                self.metrics.view_changes.inc_by(view - self.seen_view);
            }
            self.seen_view = view;
        }
        for a in actions {
            match a {
                Action::Persist(delta) => crate::replica_state::persist(&self.store, &delta)?,
                Action::Broadcast(m) => {
                    let _ = self
                        .net
                        .send(NetCommand::Broadcast(peer_message(Body::Pbft(m))))
                        .await;
                }
                Action::Send { to, msg } => {
                    let _ = self
                        .net
                        .send(NetCommand::Send {
                            to,
                            msg: peer_message(Body::Pbft(msg)),
                        })
                        .await;
                }
                Action::Commit {
                    entry,
                    digest,
                    repeats,
                    ..
                } => self.commit(entry, digest, repeats)?,
                Action::SetTimer { timer, at_ms } => {
                    self.timers.insert(timer, at_ms);
                }
                Action::CancelTimer(timer) => {
                    self.timers.remove(&timer);
                }
                Action::Note(note) => self.on_note(note),
                Action::Forward(items) => {
                    // Checked transactions of this node's own pool: the others check them again.
                    self.forward.extend(items);
                    self.flush_forward().await;
                }
                Action::Halt(fault) => {
                    tracing::error!(
                        %fault,
                        "SAFETY FAULT: stopping this node. Do not restart it before finding which \
                         ledger is wrong: compare `medchain status` and block hashes with the other \
                         replicas, then restore this node from a healthy replica's backup"
                    );
                    anyhow::bail!("safety fault, node stopped: {fault}");
                }
                Action::RequestStateTransfer {
                    from_seq,
                    target_seq,
                } => {
                    let peer = self.pick_sync_peer();
                    self.behind(target_seq);
                    tracing::info!(
                        from = from_seq,
                        target = target_seq,
                        peer,
                        "behind the other replicas: fetching committed blocks"
                    );
                    let count = (target_seq.saturating_sub(from_seq) + 1).min(SYNC_BATCH as u64);
                    let _ = self
                        .net
                        .send(NetCommand::Send {
                            to: peer,
                            msg: peer_message(Body::BlockRequest(v1::BlockRequest {
                                from_height: from_seq,
                                count: count as u32,
                            })),
                        })
                        .await;
                }
            }
        }
        Ok(())
    }

    /// Peers are at `target` or above while this node is below: it is catching up (not ready)
    /// until it reaches `target`.
    fn behind(&mut self, target: u64) {
        let height = self.status.height;
        if target <= height {
            return;
        }
        let (from, old_target) = self.status.catching_up.unwrap_or((height + 1, 0));
        if self.catch_up.is_none() {
            let now = now_ms();
            self.catch_up = Some(CatchUpProgress {
                start_height: height,
                start_ms: now,
                logged_ms: now,
            });
        }
        self.status.catching_up = Some((from, old_target.max(target)));
    }

    /// Ends a catch-up: logs how many blocks it took and how long.
    fn finish_catch_up(&mut self) {
        let height = self.status.height;
        let (blocks, seconds) = self.catch_up.take().map_or((0, 0.0), |c| {
            let ms = now_ms().saturating_sub(c.start_ms);
            (height.saturating_sub(c.start_height), ms as f64 / 1_000.0)
        });
        tracing::info!(height, blocks, seconds, "caught up");
        self.status.catching_up = None;
    }

    /// Logs catch-up progress (height, target, percentage, rate, time left) every
    /// [`CATCH_UP_LOG_MS`]; a catch-up shorter than that logs only its end ("caught up").
    fn log_catch_up(&mut self) {
        let (Some((_, target)), Some(progress)) = (self.status.catching_up, self.catch_up.as_mut())
        else {
            return;
        };
        let now = now_ms();
        if now < progress.logged_ms + CATCH_UP_LOG_MS {
            return;
        }
        progress.logged_ms = now;
        let height = self.status.height;
        let done = height.saturating_sub(progress.start_height);
        let total = target.saturating_sub(progress.start_height).max(1);
        let seconds = now.saturating_sub(progress.start_ms).max(1) as f64 / 1_000.0;
        let rate = done as f64 / seconds;
        let left = target.saturating_sub(height);
        tracing::info!(
            height,
            target,
            percent = (done * 100 / total).min(100),
            blocks_per_sec = format!("{rate:.0}"),
            eta_secs = if rate > 0.0 {
                (left as f64 / rate).ceil() as u64
            } else {
                0
            },
            "catching up"
        );
    }

    /// Logs what the engine noted: progress at debug with view and sequence, view changes at
    /// info, refused messages at info with the claimed sender and the reason (and counts them).
    fn on_note(&self, note: Note) {
        match note {
            Note::Proposed { view, seq, items } => {
                tracing::debug!(view, seq, items, "proposed a batch")
            }
            Note::Prepared { view, seq } => {
                tracing::debug!(view, seq, "prepared (quorum of prepares); sent commit")
            }
            Note::Stable { seq } => tracing::debug!(seq, "checkpoint stable"),
            Note::Complaint { view } => tracing::info!(
                view,
                "no progress with work outstanding: asked the others to leave the view"
            ),
            Note::ViewChange { from_view, to_view } => tracing::info!(
                from_view,
                to_view,
                "leaving the view: more than f replicas complained, left it, or work in a later one"
            ),
            Note::NewView {
                view,
                primary,
                reproposed,
            } => tracing::info!(view, primary, reproposed, "entered a new view"),
            Note::Refused {
                from,
                what,
                view,
                seq,
                reason,
            } => {
                self.metrics.refuse_peer_message(what);
                tracing::info!(peer = ?from, what, view, seq, reason, "refused a consensus message");
            }
        }
    }

    /// Stores a ciphertext fetched from a validator; it must be the one asked for.
    fn store_blob(
        &mut self,
        from: u32,
        expected: Option<Hash32>,
        ciphertext: Vec<u8>,
    ) -> Result<()> {
        if ciphertext.len() > medchain_proto::canonical::limits::RECORD_CIPHERTEXT {
            tracing::info!(
                peer = from,
                bytes = ciphertext.len(),
                "refused an oversize record ciphertext"
            );
            return Ok(());
        }
        let address = ciphertext_address(&ciphertext);
        if expected.is_some_and(|e| e != address) {
            tracing::warn!(
                peer = from,
                "a peer answered a blob request with other bytes; ignored"
            );
            return Ok(());
        }
        if !self.store.has_record(&address) {
            self.store.put_record(&address, &ciphertext)?;
        }
        if self.missing_blobs.remove(&address) {
            tracing::info!(peer = from, blob = %address, "fetched a missing record ciphertext");
        }
        Ok(())
    }

    /// After a block: fetch the ciphertexts of new records this node lacks, erase deleted ones,
    /// keep or destroy this proxy's re-encryption fragments.
    fn apply_effects(&mut self, fx: SideEffects) -> Result<()> {
        for address in fx.new_blobs {
            if !self.store.has_record(&address) {
                self.missing_blobs.insert(address);
            }
        }
        for address in fx.erased_blobs {
            self.missing_blobs.remove(&address);
            self.store.delete_record(&address)?;
            tracing::info!(blob = %address, "erased a deleted record's ciphertext");
        }
        for (grant_id, grant, patient) in fx.new_grants {
            match crate::proxy_fragments::keep_fragment(
                &self.node_key,
                self.me,
                &self.store,
                &grant_id,
                &grant,
                &patient,
            ) {
                Ok(true) => {
                    tracing::info!(grant = %grant_id, "kept this proxy's re-encryption fragment")
                }
                Ok(false) => {}
                Err(e) => {
                    tracing::warn!(grant = %grant_id, error = %e, "could not keep this proxy's fragment; reads under this grant must use another proxy")
                }
            }
        }
        for grant_id in fx.revoked_grants {
            self.store
                .delete_node_secret(&crate::proxy_fragments::fragment_key(&grant_id))?;
            tracing::info!(grant = %grant_id, "destroyed this proxy's fragment of a revoked grant");
        }
        for id in fx.reinstated {
            self.access
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .reinstated(&id);
        }
        Ok(())
    }

    async fn fetch_missing_blobs(&mut self) {
        // Pushed copies may have landed since the commit that found them missing.
        let store = self.store.clone();
        self.missing_blobs.retain(|a| !store.has_record(a));
        let wanted: Vec<Hash32> = self.missing_blobs.iter().take(8).copied().collect();
        for address in wanted {
            let body = Body::BlobRequest(v1::BlobRequest {
                ciphertext_hash: address.as_bytes().to_vec(),
            });
            if !self.ask_a_peer(body).await {
                return;
            }
        }
    }

    async fn poll_blocks(&mut self) {
        self.fetch_missing_blobs().await;
        let body = Body::BlockRequest(v1::BlockRequest {
            from_height: self.status.height + 1,
            count: SYNC_BATCH,
        });
        self.ask_a_peer(body).await;
    }

    /// Sends a query to the next connected peer in turn; false if none is connected.
    async fn ask_a_peer(&mut self, body: Body) -> bool {
        let Some(peer) = self.pick_connected_peer() else {
            return false;
        };
        let _ = self
            .net
            .send(NetCommand::Send {
                to: peer,
                msg: peer_message(body),
            })
            .await;
        true
    }

    fn pick_connected_peer(&mut self) -> Option<u32> {
        if self.connected.is_empty() {
            return None;
        }
        for _ in 0..self.validators {
            let p = self.pick_sync_peer();
            if self.connected.contains(&p) {
                return Some(p);
            }
        }
        None
    }

    fn pick_sync_peer(&mut self) -> u32 {
        loop {
            self.next_sync_peer = (self.next_sync_peer + 1) % self.validators;
            if self.next_sync_peer != self.me {
                return self.next_sync_peer;
            }
        }
    }

    fn commit(
        &mut self,
        entry: v1::CommittedBatch,
        digest: Hash32,
        repeats: Vec<u32>,
    ) -> Result<()> {
        let seq = entry.seq;
        let exec_digest = chain_state_digest(&self.exec_digest, seq, &digest);
        let crate::ledger::Committed {
            tip,
            effective,
            seen,
            failed,
            effects,
        } = self
            .ledger
            .commit(&entry, &repeats, exec_digest)
            .with_context(|| format!("writing committed block {seq}"))?;
        self.exec_digest = exec_digest;
        // Committed transactions leave the mempool, and so do pending ones whose signer and
        // nonce were just used (they can no longer take effect), so it cannot fill with dead
        // entries.
        for (id, replay_key) in &seen {
            self.mempool.remove_committed(id, replay_key);
        }
        self.status.committed_transactions += effective.len() as u64;
        for (id, reason) in &failed {
            tracing::info!(transaction = %id, reason, "a committed transaction was refused by the contracts");
        }
        self.apply_effects(effects)?;
        self.status.height = tip.height;
        self.status.tip_hash = tip.hash.to_hex();
        self.status.last_block_time_ms = entry.batch.as_ref().map_or(0, |b| b.timestamp_ms);
        self.metrics.commits.inc();
        if self.status.catching_up.is_none() {
            let round = now_ms().saturating_sub(self.status.last_block_time_ms);
            self.metrics.round_seconds.observe(round as f64 / 1_000.0);
        }
        self.status.view = self.replica.view();
        self.status.primary = (entry.view % self.validators as u64) as u32;
        if self
            .status
            .catching_up
            .is_some_and(|(_, target)| tip.height >= target)
        {
            self.finish_catch_up();
        }
        tracing::info!(
            height = tip.height,
            transactions = effective.len(),
            skipped = repeats.len(),
            view = entry.view,
            hash = %tip.hash.to_hex(),
            "committed block"
        );
        self.publish();
        Ok(())
    }
}
