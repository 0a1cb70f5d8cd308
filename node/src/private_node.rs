//! A hospital private-chain node: the PBFT replica, its ledger and mempool, driven by one task
//! (the core) that owns the engine and performs its actions in order: persist (synced) before any
//! send, commit each block in one atomic batch, arm timers, fetch missing blocks.
//!
//! Signature checks of client and peer transactions run outside the core (in the API handlers and
//! on blocking threads), so they use both cores; the core only sees checked transactions.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, Context, Result};
use medchain_crypto::validators::{CachingVerifier, ValidatorSet};
use medchain_crypto::{Hash32, SigningKey};
use medchain_pbft::{chain_state_digest, Action, Config, Event, PersistedState, Replica, Timer};
use medchain_proto::canonical::peer_message;
use medchain_proto::ledger::committed_batch_of;
use medchain_proto::v1::{self, peer_message::Body};
use medchain_storage::Store;
use tokio::sync::{mpsc, oneshot, watch};

use crate::config::LoadedConfig;
use crate::ledger::{CheckedTx, PrivateLedger, TxError};
use crate::mempool::{Mempool, MempoolError};
use crate::net::{self, NetCommand, NetEvent, Peer};

/// Pending transactions a node holds at most.
pub const MEMPOOL_CAPACITY: usize = 50_000;
/// Blocks per block-sync response.
pub const SYNC_BATCH: u32 = 64;
const PERSIST_KEY: &str = "pbft";

/// What the API and operators see of the node.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct Status {
    pub chain_id: String,
    pub node: String,
    pub identity: String,
    pub height: u64,
    pub tip_hash: String,
    pub view: u64,
    pub primary: u32,
    pub mempool: usize,
    pub mempool_capacity: usize,
    pub peers_connected: usize,
    pub validators: usize,
    pub committed_transactions: u64,
    /// (from, target) while fetching missing blocks.
    pub catching_up: Option<(u64, u64)>,
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
#[derive(Clone, Debug)]
pub struct NodeHandle {
    pub store: Arc<Store>,
    pub ledger: Arc<PrivateLedger>,
    pub status: watch::Receiver<Status>,
    submit: mpsc::Sender<Submission>,
}

impl NodeHandle {
    /// Checks a client transaction (decoding, chain, signatures, replay) and queues it; it is
    /// forwarded to the other validators.
    pub async fn submit(&self, bytes: Vec<u8>) -> Result<Hash32, SubmitError> {
        let ledger = self.ledger.clone();
        let checked = tokio::task::spawn_blocking(move || ledger.check(&bytes))
            .await
            .map_err(|_| SubmitError::Closed)??;
        let id = checked.id;
        let (tx, rx) = oneshot::channel();
        self.submit
            .send((checked, true, tx))
            .await
            .map_err(|_| SubmitError::Closed)?;
        rx.await.map_err(|_| SubmitError::Closed)??;
        Ok(id)
    }
}

#[allow(clippy::disallowed_methods)] // the node's clock: the engine gets time as an input
fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Opens the store, restores the replica and starts the network and the core. Returns the handle
/// for the API and the core's join handle.
pub fn start(
    loaded: &LoadedConfig,
    key: SigningKey,
) -> Result<(NodeHandle, tokio::task::JoinHandle<Result<()>>)> {
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
    let ledger = Arc::new(PrivateLedger::new(
        store.clone(),
        g.chain_id.clone(),
        validators.clone(),
    ));
    let cfg = Config::new(
        g.chain_id.clone(),
        validators.clone(),
        me,
        g.params.max_block_transactions as usize,
        g.params.block_interval_ms,
        g.params.checkpoint_interval,
    );
    let persisted: Option<PersistedState> = store
        .consensus_state(PERSIST_KEY)
        .context("reading the persisted consensus state")?;
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
    );
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
    let status = Status {
        chain_id: g.chain_id.clone(),
        node: g.validators[me as usize].name.clone(),
        identity: key.identity().to_string(),
        height: tip,
        tip_hash,
        validators: validators.len(),
        mempool_capacity: MEMPOOL_CAPACITY,
        committed_transactions,
        ..Status::default()
    };
    let (status_tx, status_rx) = watch::channel(status.clone());
    let (submit_tx, submit_rx) = mpsc::channel(16_384);
    let handle = NodeHandle {
        store: store.clone(),
        ledger: ledger.clone(),
        status: status_rx,
        submit: submit_tx.clone(),
    };
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
        submit_tx,
        next_sync_peer: 0,
        validators: validators.len() as u32,
        me,
        connected: Default::default(),
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
    submit_tx: mpsc::Sender<Submission>,
    next_sync_peer: u32,
    validators: u32,
    me: u32,
    connected: std::collections::BTreeSet<u32>,
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
        self.mempool.insert(tx.id, tx.bytes.clone())?;
        if forward {
            if let Ok(parsed) =
                <v1::Transaction as medchain_proto::Canonical>::decode_canonical(&tx.bytes)
            {
                let _ = self
                    .net
                    .send(NetCommand::Broadcast(peer_message(Body::Transaction(
                        parsed,
                    ))))
                    .await;
            }
        }
        self.step(Event::Submit(tx.bytes))
            .await
            .map_err(|_| SubmitError::Closed)?;
        self.publish();
        Ok(())
    }

    async fn on_net(&mut self, ev: NetEvent) -> Result<()> {
        match ev {
            NetEvent::Message { from, msg } => match msg.body {
                Some(Body::Pbft(m)) => self.step(Event::Message(m)).await?,
                Some(Body::Transaction(tx)) => {
                    // Check off the core, then queue without forwarding (the origin sends to all).
                    let ledger = self.ledger.clone();
                    let submit = self.submit_tx.clone();
                    tokio::task::spawn_blocking(move || {
                        let bytes =
                            <v1::Transaction as medchain_proto::Canonical>::canonical_bytes(&tx);
                        match ledger.check(&bytes) {
                            Ok(checked) => {
                                let (reply, _) = oneshot::channel();
                                let _ = submit.blocking_send((checked, false, reply));
                            }
                            Err(e) => {
                                tracing::debug!(peer = from, error = %e, "refused a forwarded transaction")
                            }
                        }
                    });
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
                    let newest = entries.last().map_or(0, |e| e.seq);
                    self.step(Event::StateTransfer(entries)).await?;
                    if self.status.height > before {
                        tracing::info!(
                            applied = self.status.height - before,
                            height = self.status.height,
                            peer_has_at_least = newest,
                            peer = from,
                            "catching up"
                        );
                    }
                }
                _ => {}
            },
            NetEvent::BlockRequest {
                from,
                request,
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
                tracing::debug!(
                    peer = from,
                    from_height = request.from_height,
                    served = blocks.len(),
                    "served blocks"
                );
                let _ = self
                    .net
                    .send(NetCommand::Respond {
                        channel,
                        msg: peer_message(Body::BlockResponse(v1::BlockResponse { blocks })),
                    })
                    .await;
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
        for a in actions {
            match a {
                Action::Persist(state) => {
                    self.store
                        .put_consensus_state(PERSIST_KEY, &*state)
                        .context(
                            "persisting consensus state; refusing to send unpersisted votes",
                        )?;
                }
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
                Action::RequestStateTransfer {
                    from_seq,
                    target_seq,
                } => {
                    let peer = self.pick_sync_peer();
                    self.status.catching_up = Some((from_seq, target_seq));
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

    async fn poll_blocks(&mut self) {
        let Some(peer) = self.pick_connected_peer() else {
            return;
        };
        let _ = self
            .net
            .send(NetCommand::Send {
                to: peer,
                msg: peer_message(Body::BlockRequest(v1::BlockRequest {
                    from_height: self.status.height + 1,
                    count: SYNC_BATCH,
                })),
            })
            .await;
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
        let (tip, effective) = self
            .ledger
            .commit(&entry, &repeats, exec_digest)
            .with_context(|| format!("writing committed block {seq}"))?;
        self.exec_digest = exec_digest;
        for item in entry.batch.as_ref().map_or(&[][..], |b| &b.items[..]) {
            let id = <v1::Transaction as medchain_proto::Canonical>::decode_canonical(item)
                .ok()
                .and_then(|t| t.body.map(|b| medchain_proto::Hashed::digest(&b)));
            if let Some(id) = id {
                self.mempool.remove(&id);
            }
        }
        self.status.committed_transactions += effective.len() as u64;
        // Pending transactions that can no longer take effect (their nonce was used by another
        // transaction) leave the mempool, so it cannot fill with dead entries.
        let stale: Vec<Hash32> = self
            .mempool
            .iter()
            .take(1_024)
            .filter(|(_, bytes)| self.ledger.is_committed(bytes))
            .map(|(id, _)| *id)
            .collect();
        for id in stale {
            self.mempool.remove(&id);
        }
        self.status.height = tip.height;
        self.status.tip_hash = tip.hash.to_hex();
        self.status.view = self.replica.view();
        self.status.primary = (entry.view % self.validators as u64) as u32;
        if let Some((_, target)) = self.status.catching_up {
            if tip.height >= target {
                tracing::info!(height = tip.height, "caught up");
                self.status.catching_up = None;
            }
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
