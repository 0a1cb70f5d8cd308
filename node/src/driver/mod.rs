//! The driver: the one task that owns a consensus engine and performs what it asks, written once
//! for every chain a node runs (the hospital chain's PBFT today, the consortium's DPoS next).
//!
//! It takes the inputs (peer messages, checked transactions, timers, block-sync answers), feeds
//! them to the chain's engine one step at a time and performs the step's outputs in order:
//! persist (synced) before anything after it is executed or sent, execute each committed block in
//! one atomic batch, then send. The synced writes run on the driver's [`Writer`] thread, awaited
//! in order, so a slow disk never stalls the async workers that serve the API and the network. It holds the mempool (admission of checked transactions, forwarded
//! to the other nodes in batches), block sync (asks a connected peer in turn for blocks above its
//! tip every second, and again at once while an answer shows it is behind), catch-up progress,
//! the answers to peers' block queries, and the node's [`Status`].
//!
//! After each commit it **publishes** the block: to the chain's [`Follower`]s in commit order
//! (what must happen before the next input, such as keeping a proxy fragment) and on a broadcast
//! channel of [`BlockEvent`]s for subscribers that may lag (event streams to clients). The chain's
//! own work lives in its adapter and its followers, never here.

mod catch_up;
mod chain;
#[cfg(test)]
mod tests;
mod writer;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use medchain_crypto::Hash32;
use medchain_proto::canonical::peer_message;
use medchain_proto::v1::{self, peer_message::Body};
use tokio::sync::{broadcast, mpsc, oneshot, watch};

use crate::clock::now_ms;
use crate::mempool::{CheckedTx, Mempool, MempoolError, PendingBlobs, Quotas};
use crate::metrics::Metrics;
use crate::net::{NetCommand, NetEvent, NetStats};
use crate::status::Status;
use catch_up::CatchUp;

pub use catch_up::CATCH_UP_GAP;
pub use chain::{Chain, Checker, Committed, DriverError, Follower, Incoming, Input, Output};
pub use writer::{Job, Writer};

/// Blocks per block-sync request.
pub const SYNC_BATCH: u32 = 64;
/// Most transactions forwarded in one message; a peer sending more is refused.
pub const FORWARD_BATCH: usize = crate::net::TRANSACTIONS_PER_MESSAGE;
/// Committed-block events kept for a subscriber that lags before it misses some.
pub const BLOCK_EVENTS: usize = 1_024;

/// Why the driver did not queue a transaction.
#[derive(Debug, thiserror::Error)]
pub enum AdmitError {
    #[error(transparent)]
    Mempool(#[from] MempoolError),
    #[error("the node is shutting down")]
    Closed,
}

/// A checked transaction for the driver: whether to forward it to the other nodes, and where to
/// report the mempool's answer.
#[derive(Debug)]
pub struct Submission {
    pub tx: CheckedTx,
    pub forward: bool,
    pub reply: oneshot::Sender<Result<(), AdmitError>>,
}

/// A committed block as the event stream carries it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BlockEvent {
    pub height: u64,
    pub hash: Hash32,
    pub timestamp_ms: u64,
    /// The transactions that took effect, in block order.
    pub transactions: Vec<Hash32>,
    /// The transactions ordered in the block but refused by a chain rule: they are final too,
    /// and a client waiting for one must learn of it.
    pub failed: Vec<Hash32>,
}

/// Everything the driver is connected to.
pub struct Wiring<E> {
    pub net: mpsc::Sender<NetCommand>,
    /// The chain's rooms of the network: consensus, transactions, sync.
    pub events: mpsc::Receiver<NetEvent>,
    pub stats: watch::Receiver<NetStats>,
    pub submits: mpsc::Receiver<Submission>,
    /// Where transactions forwarded by peers go once checked (the same queue as `submits`).
    pub resubmit: mpsc::Sender<Submission>,
    pub status: Status,
    pub status_tx: watch::Sender<Status>,
    pub blocks: broadcast::Sender<Arc<BlockEvent>>,
    pub metrics: Arc<Metrics>,
    /// Nodes of the chain, and this node's index among them.
    pub nodes: u32,
    pub me: u32,
    pub mempool_capacity: usize,
    /// The mempool's per-signer and per-kind limits.
    pub mempool_quotas: Quotas,
    /// Where the mempool publishes the ciphertexts of pending slips.
    pub pending_blobs: PendingBlobs,
    pub followers: Vec<Box<dyn Follower<E>>>,
}

impl<E> std::fmt::Debug for Wiring<E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Wiring(node {} of {})", self.me, self.nodes)
    }
}

impl<C: Chain> std::fmt::Debug for Driver<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Driver(node {} of {}, height {})",
            self.me, self.nodes, self.status.height
        )
    }
}

/// The loop that owns chain `C`'s engine.
pub struct Driver<C: Chain> {
    chain: C,
    writer: Writer,
    net: mpsc::Sender<NetCommand>,
    timers: BTreeMap<C::Timer, u64>,
    mempool: Mempool,
    /// Accepted client transactions not yet forwarded (sent when the submission queue is drained
    /// or the batch is full, so batching adds no delay to a lone transaction).
    forward: Vec<Vec<u8>>,
    /// Forwarded transactions on their way to the checker thread.
    forwarded: mpsc::Sender<(u32, Vec<Vec<u8>>)>,
    nodes: u32,
    me: u32,
    next_peer: u32,
    connected: BTreeSet<u32>,
    status: Status,
    status_tx: watch::Sender<Status>,
    catch_up: CatchUp,
    followers: Vec<Box<dyn Follower<C::Effects>>>,
    blocks: broadcast::Sender<Arc<BlockEvent>>,
    metrics: Arc<Metrics>,
    /// The highest view the engine has been in (view changes are counted from it).
    seen_view: u64,
}

impl<C: Chain> Driver<C> {
    /// Runs chain `chain` until the network stops, the submission queue closes (`Ok`), or a
    /// persist, commit or follower fails or the engine halts (`Err`: nothing after it was sent).
    pub async fn run(chain: C, wiring: Wiring<C::Effects>) -> Result<(), DriverError> {
        let Wiring {
            net,
            events,
            stats,
            submits,
            resubmit,
            status,
            status_tx,
            blocks,
            metrics,
            nodes,
            me,
            mempool_capacity,
            mempool_quotas,
            pending_blobs,
            followers,
        } = wiring;
        let forwarded = spawn_forward_checker(chain.checker(), resubmit);
        let driver = Driver {
            chain,
            writer: Writer::spawn(),
            net,
            timers: BTreeMap::new(),
            mempool: Mempool::new(mempool_capacity, mempool_quotas, pending_blobs),
            forward: Vec::new(),
            forwarded,
            nodes,
            me,
            next_peer: me,
            connected: BTreeSet::new(),
            status,
            status_tx,
            catch_up: CatchUp::default(),
            followers,
            blocks,
            metrics,
            seen_view: 0,
        };
        driver.serve(events, stats, submits).await
    }

    async fn serve(
        mut self,
        mut events: mpsc::Receiver<NetEvent>,
        stats: watch::Receiver<NetStats>,
        mut submits: mpsc::Receiver<Submission>,
    ) -> Result<(), DriverError> {
        self.step(Input::Start).await?;
        // Block sync: every second, ask one connected peer (in turn) for blocks above this node's
        // tip. Cheap when up to date (an empty answer); after a restart or a partition it brings
        // the node back without waiting for the engine to notice. Every block is checked by the
        // engine before it is applied.
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
                    self.step(Input::Timer(timer)).await?;
                }
                _ = sync_tick.tick() => self.poll_blocks().await,
                ev = events.recv() => {
                    let Some(ev) = ev else { return Err(DriverError::NetworkStopped) };
                    self.on_net(ev).await?;
                }
                sub = submits.recv() => {
                    let Some(Submission { tx, forward, reply }) = sub else { return Ok(()) };
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

    async fn admit(&mut self, tx: CheckedTx, forward: bool) -> Result<(), AdmitError> {
        self.mempool.insert(&tx)?;
        if forward {
            self.forward.push(tx.bytes.clone());
        }
        self.step(Input::Submit(tx.bytes))
            .await
            .map_err(|_| AdmitError::Closed)?;
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
            self.send_net(NetCommand::Broadcast(peer_message(Body::Transactions(
                v1::TransactionBatch {
                    transactions: transactions.to_vec(),
                },
            ))))
            .await;
        }
    }

    async fn send_net(&mut self, cmd: NetCommand) {
        // A closed network ends the loop at its next receive.
        let _ = self.net.send(cmd).await;
    }

    async fn on_net(&mut self, ev: NetEvent) -> Result<(), DriverError> {
        match ev {
            NetEvent::Message { from, msg } => match msg.body {
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
                    // Checked off the driver, in arrival order, then queued without forwarding
                    // (the origin sends to all).
                    let _ = self.forwarded.send((from, batch.transactions)).await;
                }
                Some(body) => match C::read(body) {
                    Incoming::Consensus(msg) => self.step(Input::Message { from, msg }).await?,
                    Incoming::Blocks {
                        blocks,
                        malformed,
                        peer_tip,
                    } => self.on_blocks(from, blocks, malformed, peer_tip).await?,
                    Incoming::Other => {}
                },
                None => {}
            },
            NetEvent::Query {
                from,
                msg:
                    v1::PeerMessage {
                        body: Some(Body::BlockRequest(request)),
                        ..
                    },
                channel,
            } => {
                let count = request.count.clamp(1, SYNC_BATCH);
                let mut answer = self.chain.serve_blocks(request.from_height.max(1), count)?;
                answer.tip_height = self.status.height;
                tracing::trace!(
                    peer = from,
                    from = request.from_height,
                    blocks = answer.blocks.len(),
                    "served a block request"
                );
                self.send_net(NetCommand::Respond {
                    channel,
                    msg: peer_message(Body::BlockResponse(answer)),
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

    /// A block-sync answer: feed its blocks to the engine; while still behind, ask again at once
    /// rather than at the next sync tick, so catch-up runs at network speed.
    async fn on_blocks(
        &mut self,
        from: u32,
        blocks: Vec<C::Block>,
        malformed: Option<String>,
        peer_tip: u64,
    ) -> Result<(), DriverError> {
        if let Some(error) = malformed {
            tracing::warn!(peer = from, error, "malformed block in a sync response");
        }
        let before = self.status.height;
        if blocks.is_empty() {
            // Nothing above this node's tip at that peer. A target one peer claimed (an unproven
            // height) ends here, so a faulty peer cannot keep this node "not ready"; a certified
            // target is re-asserted by the engine's retry.
            if peer_tip <= before && self.status.catching_up.is_some() {
                self.catch_up.finish(&mut self.status, now_ms());
            }
            return Ok(());
        }
        if peer_tip >= before + CATCH_UP_GAP {
            self.catch_up.behind(&mut self.status, peer_tip, now_ms());
        }
        self.step(Input::Blocks(blocks)).await?;
        self.catch_up.log(&self.status, now_ms());
        if self.status.height > before && peer_tip > self.status.height {
            self.ask_a_peer(self.block_request(self.status.height + 1, SYNC_BATCH))
                .await;
        }
        Ok(())
    }

    fn block_request(&self, from_height: u64, count: u32) -> Body {
        Body::BlockRequest(v1::BlockRequest { from_height, count })
    }

    /// Feeds one input to the engine and performs its outputs in order.
    async fn step(&mut self, input: Input<C>) -> Result<(), DriverError> {
        let outputs = self.chain.step(now_ms(), input);
        let view = self.chain.view();
        if view > self.seen_view {
            if self.seen_view > 0 || self.status.height > 0 {
                self.metrics.view_changes.inc_by(view - self.seen_view);
            }
            self.seen_view = view;
        }
        for output in outputs {
            self.perform(output).await?;
        }
        Ok(())
    }

    async fn perform(&mut self, output: Output<C>) -> Result<(), DriverError> {
        match output {
            Output::Persist(p) => {
                let job = self.chain.persist(p);
                self.writer.write(job).await?
            }
            Output::Commit(c) => {
                let job = self.chain.commit(c);
                let committed = self.writer.write(job).await?;
                self.committed(committed)?;
            }
            Output::Broadcast(m) => {
                self.send_net(NetCommand::Broadcast(peer_message(C::wrap(m))))
                    .await
            }
            Output::Send { to, msg } => {
                self.send_net(NetCommand::Send {
                    to,
                    msg: peer_message(C::wrap(msg)),
                })
                .await
            }
            Output::SetTimer { timer, at_ms } => {
                self.timers.insert(timer, at_ms);
            }
            Output::CancelTimer(timer) => {
                self.timers.remove(&timer);
            }
            Output::Forward(items) => {
                // Checked transactions of this node's own pool: the others check them again.
                self.forward.extend(items);
                self.flush_forward().await;
            }
            Output::Fetch {
                from_height,
                target,
                peer,
            } => {
                let peer = peer.unwrap_or_else(|| self.next_peer());
                self.catch_up.behind(&mut self.status, target, now_ms());
                tracing::info!(
                    from = from_height,
                    target,
                    peer,
                    "behind the other nodes: fetching committed blocks"
                );
                let count = (target.saturating_sub(from_height) + 1).min(SYNC_BATCH as u64);
                self.send_net(NetCommand::Send {
                    to: peer,
                    msg: peer_message(self.block_request(from_height, count as u32)),
                })
                .await;
            }
            Output::Note(note) => {
                if let Some(what) = self.chain.log_note(note) {
                    self.metrics.refuse_peer_message(what);
                }
            }
            Output::Halt(fault) => {
                tracing::error!(
                    %fault,
                    "SAFETY FAULT: stopping this node. Do not restart it before finding which \
                     ledger is wrong: compare `medchain status` and block hashes with the other \
                     nodes, then restore this node from a healthy node's backup"
                );
                return Err(DriverError::Safety(fault));
            }
        }
        Ok(())
    }

    /// After a block is stored: the mempool, the status and metrics, the followers, the event.
    fn committed(&mut self, block: Committed<C::Effects>) -> Result<(), DriverError> {
        // Committed transactions leave the mempool, and so do pending ones whose signer and nonce
        // were just used (they can no longer take effect), so it cannot fill with dead entries.
        for (id, replay_key) in &block.seen {
            self.mempool.remove_committed(id, replay_key);
        }
        for (id, reason) in &block.failed {
            tracing::info!(transaction = %id, reason, "a committed transaction was refused by the contracts");
        }
        for follower in &mut self.followers {
            follower.on_commit(&block)?;
        }
        self.status.committed_transactions += block.effective.len() as u64;
        self.status.height = block.height;
        self.status.tip_hash = block.hash.to_hex();
        self.status.last_block_time_ms = block.timestamp_ms;
        self.metrics.commits.inc();
        if self.status.catching_up.is_none() {
            let round = now_ms().saturating_sub(block.timestamp_ms);
            self.metrics.round_seconds.observe(round as f64 / 1_000.0);
        }
        self.status.view = self.chain.view();
        self.status.primary = block.leader;
        self.catch_up.committed(&mut self.status, now_ms());
        tracing::info!(
            height = block.height,
            transactions = block.effective.len(),
            skipped = block.skipped,
            view = block.view,
            hash = %block.hash.to_hex(),
            "committed block"
        );
        self.publish();
        // No subscriber is fine; a lagging one misses events and is told so by the channel.
        let _ = self.blocks.send(Arc::new(BlockEvent {
            height: block.height,
            hash: block.hash,
            timestamp_ms: block.timestamp_ms,
            transactions: block.effective,
            failed: block.failed.iter().map(|(id, _)| *id).collect(),
        }));
        Ok(())
    }

    async fn poll_blocks(&mut self) {
        let body = self.block_request(self.status.height + 1, SYNC_BATCH);
        self.ask_a_peer(body).await;
    }

    /// Sends a query to the next connected peer in turn; false if none is connected.
    async fn ask_a_peer(&mut self, body: Body) -> bool {
        let Some(to) = self.next_connected_peer() else {
            return false;
        };
        self.send_net(NetCommand::Send {
            to,
            msg: peer_message(body),
        })
        .await;
        true
    }

    fn next_connected_peer(&mut self) -> Option<u32> {
        if self.connected.is_empty() {
            return None;
        }
        for _ in 0..self.nodes {
            let p = self.next_peer();
            if self.connected.contains(&p) {
                return Some(p);
            }
        }
        None
    }

    fn next_peer(&mut self) -> u32 {
        next_peer(&mut self.next_peer, self.nodes, self.me)
    }
}

/// The peer after `*cursor` in turn, never `me` (a chain has at least two nodes).
pub fn next_peer(cursor: &mut u32, nodes: u32, me: u32) -> u32 {
    loop {
        *cursor = (*cursor + 1) % nodes.max(2);
        if *cursor != me {
            return *cursor;
        }
    }
}

/// Checks transactions forwarded by other nodes on one blocking thread, in the order they arrived,
/// and queues the good ones: a peer's transactions keep their order (an access record and the
/// confirmation that follows it are ordered as their origin queued them), and the driver never
/// waits for a signature check.
fn spawn_forward_checker(
    check: Checker,
    submit: mpsc::Sender<Submission>,
) -> mpsc::Sender<(u32, Vec<Vec<u8>>)> {
    let (tx, mut rx) = mpsc::channel::<(u32, Vec<Vec<u8>>)>(1_024);
    tokio::task::spawn_blocking(move || {
        while let Some((from, batch)) = rx.blocking_recv() {
            for bytes in batch {
                match check(&bytes) {
                    Ok(tx) => {
                        let (reply, _) = oneshot::channel();
                        let sub = Submission {
                            tx,
                            forward: false,
                            reply,
                        };
                        if submit.blocking_send(sub).is_err() {
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
