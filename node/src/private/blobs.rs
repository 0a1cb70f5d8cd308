//! Ciphertext replication, the hospital chain's off-chain store kept whole on every validator.
//!
//! Record ciphertexts are replicated, not fetched on demand: the node that receives an upload
//! stores it once the mempool admits its slip and pushes it, with the slip, to every other
//! validator, which keeps it only if the slip is accounted for ([`super::blob_push`]); a node
//! that commits a slip whose ciphertext it lacks (it was down, or the push was lost) asks its
//! peers for it until one answers with bytes matching the slip's content address. So every proxy can serve
//! every record, and losing one node loses no record. A deletion erases the ciphertext on every
//! node when it commits.
//!
//! Two halves: [`BlobFollower`] follows committed blocks (notes what is missing, erases what was
//! deleted, in commit order); [`spawn`] runs the blob room of the network on its own task (pushes,
//! requests and answers), so a large ciphertext never waits behind a vote or delays one.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use medchain_crypto::Hash32;
use medchain_proto::canonical::{limits, peer_message};
use medchain_proto::v1::{self, peer_message::Body};
use medchain_storage::Store;
use tokio::sync::{mpsc, watch};

use super::blob_push::{PushGate, PushOutcome};
use crate::client::records::ciphertext_address;
use crate::driver::{next_peer, Committed, DriverError, Follower};
use crate::metrics::Metrics;
use crate::net::{NetCommand, NetEvent, NetStats};
use medchain_ledger::contracts::SideEffects;

/// Missing ciphertexts asked for per second.
const FETCH_PER_TICK: usize = 8;

/// Content addresses of committed records whose ciphertext this node still lacks.
pub type Missing = Arc<Mutex<BTreeSet<Hash32>>>;

pub(super) fn lock(missing: &Missing) -> std::sync::MutexGuard<'_, BTreeSet<Hash32>> {
    missing.lock().unwrap_or_else(|p| p.into_inner())
}

/// Follows committed blocks: new records this node lacks become missing, deleted ones are erased.
#[derive(Debug)]
pub struct BlobFollower {
    pub store: Arc<Store>,
    pub missing: Missing,
}

impl Follower<SideEffects> for BlobFollower {
    fn on_commit(&mut self, block: &Committed<SideEffects>) -> Result<(), DriverError> {
        let fx = &block.effects;
        let mut missing = lock(&self.missing);
        for address in &fx.new_blobs {
            if !self.store.has_record(address) {
                missing.insert(*address);
            }
        }
        for address in &fx.erased_blobs {
            missing.remove(address);
            self.store.delete_record(address).map_err(|e| {
                DriverError::Storage(format!("erasing a deleted record's ciphertext: {e}"))
            })?;
            tracing::info!(blob = %address, "erased a deleted record's ciphertext");
        }
        Ok(())
    }
}

/// Stores the answer to a request for a missing ciphertext, if it is within the record limit
/// and the one asked for. Returns its address if it was stored or already held.
fn store_answer(store: &Store, from: u32, expected: Hash32, ciphertext: &[u8]) -> Option<Hash32> {
    if ciphertext.len() > limits::RECORD_CIPHERTEXT {
        tracing::info!(
            peer = from,
            bytes = ciphertext.len(),
            "refused an oversize record ciphertext"
        );
        return None;
    }
    let address = ciphertext_address(ciphertext);
    if expected != address {
        tracing::warn!(
            peer = from,
            "a peer answered a blob request with other bytes; ignored"
        );
        return None;
    }
    if !store.has_record(&address) {
        if let Err(e) = store.put_record(&address, ciphertext) {
            tracing::warn!(peer = from, error = %e, "could not store a record ciphertext");
            return None;
        }
    }
    Some(address)
}

/// The blob room's task.
#[derive(Debug)]
pub struct BlobRoom {
    pub store: Arc<Store>,
    pub missing: Missing,
    /// What a peer's push is checked against.
    pub gate: PushGate,
    pub metrics: Arc<Metrics>,
    pub net: mpsc::Sender<NetCommand>,
    pub events: mpsc::Receiver<NetEvent>,
    pub stats: watch::Receiver<NetStats>,
    pub nodes: u32,
    pub me: u32,
}

/// Runs the blob room until the network stops. Writes and reads of ciphertext files run on
/// blocking threads: a synced file write per record must not hold up the next message.
pub fn spawn(mut room: BlobRoom) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        let mut cursor = room.me;
        loop {
            tokio::select! {
                _ = tick.tick() => room.fetch_missing(&mut cursor).await,
                ev = room.events.recv() => {
                    let Some(ev) = ev else { return };
                    room.on_event(ev);
                }
            }
        }
    })
}

impl BlobRoom {
    fn on_event(&self, ev: NetEvent) {
        let store = self.store.clone();
        match ev {
            NetEvent::Message { from, msg } => match msg.body {
                Some(Body::Blob(blob)) => {
                    let (gate, metrics) = (self.gate.clone(), self.metrics.clone());
                    tokio::spawn(async move {
                        match gate.admit(blob).await {
                            PushOutcome::Kept(address) => {
                                tracing::debug!(peer = from, blob = %address, "kept a pushed record ciphertext");
                            }
                            PushOutcome::Refused(why) => {
                                metrics.refuse_peer_message("blob");
                                tracing::info!(
                                    peer = from,
                                    "refused a pushed record ciphertext: {why}"
                                );
                            }
                        }
                    });
                }
                Some(Body::BlobResponse(resp)) if !resp.ciphertext.is_empty() => {
                    let Ok(expected) = Hash32::from_slice(&resp.ciphertext_hash) else {
                        return;
                    };
                    let missing = self.missing.clone();
                    tokio::task::spawn_blocking(move || {
                        let stored = store_answer(&store, from, expected, &resp.ciphertext);
                        if stored.is_some_and(|a| lock(&missing).remove(&a)) {
                            tracing::info!(peer = from, blob = %expected, "fetched a missing record ciphertext");
                        }
                    });
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
                let net = self.net.clone();
                tokio::task::spawn_blocking(move || {
                    let ciphertext = match Hash32::from_slice(&req.ciphertext_hash) {
                        Ok(h) => store.record(&h).ok().flatten().unwrap_or_default(),
                        Err(_) => Vec::new(),
                    };
                    tracing::trace!(
                        peer = from,
                        found = !ciphertext.is_empty(),
                        "served a blob request"
                    );
                    let msg = peer_message(Body::BlobResponse(v1::BlobResponse {
                        ciphertext_hash: req.ciphertext_hash,
                        ciphertext,
                    }));
                    let _ = net.blocking_send(NetCommand::Respond { channel, msg });
                });
            }
            NetEvent::Query { from, .. } => {
                tracing::info!(peer = from, "refused a blob-room query of an unknown kind");
            }
            NetEvent::Connected(_) | NetEvent::Disconnected(_) => {}
        }
    }

    /// Asks connected peers in turn for a few missing ciphertexts.
    async fn fetch_missing(&self, cursor: &mut u32) {
        let wanted: Vec<Hash32> = {
            let mut missing = lock(&self.missing);
            // Pushed copies may have landed since the commit that found them missing.
            missing.retain(|a| !self.store.has_record(a));
            missing.iter().take(FETCH_PER_TICK).copied().collect()
        };
        let connected = self.stats.borrow().peers.clone();
        if connected.is_empty() {
            return;
        }
        for address in wanted {
            let to = loop {
                let p = next_peer(cursor, self.nodes, self.me);
                if connected.contains(&p) {
                    break p;
                }
            };
            let msg = peer_message(Body::BlobRequest(v1::BlobRequest {
                ciphertext_hash: address.as_bytes().to_vec(),
            }));
            let _ = self.net.send(NetCommand::Send { to, msg }).await;
        }
    }
}
