//! Header certificates: after each block's atomic write this node signs the header it stored and
//! sends the vote to the other validators; 2f + 1 matching votes are kept as the block's header
//! certificate, which certifies the header's state root (and so every proof against it) to a
//! client that knows only the genesis validator set.
//!
//! [`HeaderVoter`] follows committed blocks (it only passes them on); [`spawn`] runs the task
//! that owns the pure [`collector::Collector`]: it signs, sends, stores certificates, and sends
//! its vote for its tip again every second, so a vote lost on the way, or a node that restarted,
//! still gets the newest block certified.

pub mod collector;

use std::sync::Arc;
use std::time::Duration;

use medchain_crypto::hash::domains;
use medchain_crypto::header_vote::header_vote_message;
use medchain_crypto::validators::{CachingVerifier, ValidatorSet};
use medchain_crypto::{Hash32, Signature, SigningKey};
use medchain_proto::canonical::peer_message;
use medchain_proto::v1::{self, peer_message::Body};
use medchain_storage::Store;
use tokio::sync::{mpsc, watch};

use crate::driver::{Committed, DriverError, Follower};
use crate::metrics::Metrics;
use crate::net::{NetCommand, NetEvent};
use collector::{Action, Collector, Vote};

/// Commits queued for the vote task; beyond it a vote is skipped (the tip's is sent again).
pub const QUEUE: usize = 4_096;

/// Passes each committed block's height and header hash to the vote task.
#[derive(Debug)]
pub struct HeaderVoter {
    pub commits: mpsc::Sender<(u64, Hash32)>,
}

impl<E> Follower<E> for HeaderVoter {
    fn on_commit(&mut self, block: &Committed<E>) -> Result<(), DriverError> {
        if self.commits.try_send((block.height, block.hash)).is_err() {
            tracing::debug!(
                height = block.height,
                "header vote queue full: this block's vote is skipped"
            );
        }
        Ok(())
    }
}

/// What the vote task is connected to.
pub struct VoteRoom {
    pub chain_id: String,
    pub validators: ValidatorSet,
    pub me: u32,
    pub key: SigningKey,
    pub store: Arc<Store>,
    pub metrics: Arc<Metrics>,
    pub net: mpsc::Sender<NetCommand>,
    /// Peers' header votes.
    pub events: mpsc::Receiver<NetEvent>,
    pub commits: mpsc::Receiver<(u64, Hash32)>,
    /// The newest certified height, for API handlers waiting for a certificate.
    pub certified: watch::Sender<u64>,
}

impl std::fmt::Debug for VoteRoom {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "VoteRoom(validator {} of {})",
            self.me,
            self.validators.len()
        )
    }
}

/// Runs the vote task until the network or the driver stops.
pub fn spawn(room: VoteRoom) -> tokio::task::JoinHandle<()> {
    tokio::spawn(room.run())
}

impl VoteRoom {
    async fn run(mut self) {
        let tip = match self.store.tip() {
            Ok(t) => t,
            Err(e) => {
                tracing::error!(error = %e, "header votes: reading the tip failed; no votes");
                return;
            }
        };
        let mut collector = Collector::new(
            self.chain_id.clone(),
            self.validators.clone(),
            CachingVerifier::new(1 << 12),
            tip.map_or(0, |t| t.height),
        );
        let mut last: Option<v1::HeaderVote> = None;
        if let Some(t) = tip {
            last = Some(self.own_vote(&mut collector, t.height, t.hash));
        }
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tokio::select! {
                c = self.commits.recv() => {
                    let Some((height, hash)) = c else { return };
                    let vote = self.own_vote(&mut collector, height, hash);
                    self.send(vote.clone()).await;
                    last = Some(vote);
                }
                ev = self.events.recv() => {
                    let Some(ev) = ev else { return };
                    if let NetEvent::Message { from, msg } = ev {
                        if let Some(Body::HeaderVote(v)) = msg.body {
                            self.on_peer_vote(&mut collector, from, v);
                        }
                    }
                }
                _ = tick.tick() => {
                    if let Some(v) = &last {
                        self.send(v.clone()).await;
                    }
                }
            }
        }
    }

    /// Signs this node's vote for the header it stored at `height` and counts it.
    fn own_vote<V: medchain_crypto::validators::Verifier>(
        &self,
        collector: &mut Collector<V>,
        height: u64,
        hash: Hash32,
    ) -> v1::HeaderVote {
        let signature = self.key.sign(
            domains::HEADER_VOTE,
            &header_vote_message(&self.chain_id, height, &hash),
        );
        let mut actions = collector.on_commit(height, hash);
        actions.extend(collector.on_vote(Vote {
            height,
            hash,
            validator: self.me,
            signature,
        }));
        self.perform(actions);
        v1::HeaderVote {
            height,
            header_hash: hash.as_bytes().to_vec(),
            validator: self.me,
            signature: signature.as_bytes().to_vec(),
        }
    }

    fn on_peer_vote<V: medchain_crypto::validators::Verifier>(
        &self,
        collector: &mut Collector<V>,
        from: u32,
        v: v1::HeaderVote,
    ) {
        // The transport authenticated the peer: a peer relays no one else's votes.
        if v.validator != from {
            self.metrics.refuse_peer_message("header vote");
            tracing::info!(
                peer = from,
                signer = v.validator,
                "refused a header vote sent for another validator"
            );
            return;
        }
        let (Ok(hash), Ok(signature)) = (
            <[u8; 32]>::try_from(v.header_hash.as_slice()).map(Hash32),
            Signature::from_slice(&v.signature),
        ) else {
            self.metrics.refuse_peer_message("header vote");
            tracing::info!(peer = from, "refused a malformed header vote");
            return;
        };
        let actions = collector.on_vote(Vote {
            height: v.height,
            hash,
            validator: from,
            signature,
        });
        self.perform(actions);
    }

    fn perform(&self, actions: Vec<Action>) {
        for action in actions {
            match action {
                Action::Certified {
                    height,
                    hash,
                    signatures,
                } => {
                    let cert = v1::HeaderCertificate {
                        height,
                        header_hash: hash.as_bytes().to_vec(),
                        signatures: signatures
                            .iter()
                            .map(|(i, s)| v1::IndexedSignature {
                                validator: *i,
                                signature: s.as_bytes().to_vec(),
                            })
                            .collect(),
                    };
                    if let Err(e) = self.store.put_header_certificate(&cert) {
                        tracing::warn!(height, error = %e, "could not keep a header certificate");
                        continue;
                    }
                    tracing::debug!(height, signers = signatures.len(), "header certified");
                    self.certified.send_if_modified(|h| {
                        let newer = height > *h;
                        if newer {
                            *h = height;
                        }
                        newer
                    });
                    self.metrics
                        .certified_height
                        .set(*self.certified.borrow() as i64);
                }
                Action::Diverged {
                    height,
                    ours,
                    theirs,
                    signers,
                } => {
                    self.metrics.header_divergences.inc();
                    tracing::error!(
                        height,
                        ours = %ours.to_hex(),
                        theirs = %theirs.to_hex(),
                        ?signers,
                        "LEDGER DIVERGENCE: f + 1 validators signed another header at this height \
                         than this node stored (another state root or transactions). Some ledger, \
                         perhaps this one, executed differently: compare `medchain status` and \
                         block hashes with the other nodes before trusting this node's answers"
                    );
                }
                Action::Equivocation { height, validator } => {
                    tracing::warn!(
                        height,
                        validator,
                        "a validator signed two headers at one height"
                    );
                }
                Action::Refused { validator, reason } => {
                    self.metrics.refuse_peer_message("header vote");
                    tracing::debug!(validator, reason, "refused a header vote");
                }
            }
        }
    }

    async fn send(&self, vote: v1::HeaderVote) {
        let _ = self
            .net
            .send(NetCommand::Broadcast(peer_message(Body::HeaderVote(vote))))
            .await;
    }
}
