//! The hospital chain as the driver sees it: the PBFT replica, its ledger and its store behind
//! the [`Chain`] seam. This is the whole PBFT mapping:
//!
//! | driver | PBFT |
//! | --- | --- |
//! | `Input::Message { msg, .. }` | `Event::Message(msg)` (the sender is in the signed message) |
//! | `Input::Blocks` | `Event::StateTransfer(committed batches)` |
//! | `Output::Persist` | `Action::Persist(delta)`: one synced write of the touched slots |
//! | `Output::Commit` | `Action::Commit { entry, digest, repeats }`: the block in one atomic batch |
//! | `Output::Fetch` | `Action::RequestStateTransfer { from_seq, target_seq }` (any peer) |
//! | `Output::Halt` | `Action::Halt(fault)` |

use std::sync::Arc;

use medchain_crypto::validators::CachingVerifier;
use medchain_crypto::{Hash32, SigningKey};
use medchain_pbft::{chain_state_digest, Action, Event, Note, PersistDelta, Replica, Timer};
use medchain_proto::ledger::committed_batch_of;
use medchain_proto::v1::{self, peer_message::Body};
use medchain_storage::Store;

use crate::driver::{Chain, Checker, Committed, DriverError, Incoming, Input, Job, Output};
use medchain_ledger::contracts::SideEffects;
use medchain_ledger::PrivateLedger;

/// A batch PBFT committed, to execute.
#[derive(Debug)]
pub struct PbftCommit {
    entry: v1::CommittedBatch,
    digest: Hash32,
    repeats: Vec<u32>,
}

/// The PBFT replica of one hospital chain with its ledger.
pub struct PrivateChain {
    pub replica: Replica<SigningKey, CachingVerifier>,
    pub ledger: Arc<PrivateLedger>,
    pub store: Arc<Store>,
    /// The digest of the executed history (checked against stable checkpoints by the replica).
    pub exec_digest: Hash32,
    pub validators: u32,
}

impl std::fmt::Debug for PrivateChain {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PrivateChain(view {})", self.replica.view())
    }
}

impl Chain for PrivateChain {
    type Msg = v1::PbftMessage;
    type Timer = Timer;
    type Block = v1::CommittedBatch;
    type Persist = Box<PersistDelta>;
    type Commit = PbftCommit;
    type Effects = SideEffects;
    type Note = Note;

    fn step(&mut self, now_ms: u64, input: Input<Self>) -> Vec<Output<Self>> {
        let event = match input {
            Input::Start => Event::Start,
            Input::Message { msg, .. } => Event::Message(msg),
            Input::Submit(bytes) => Event::Submit(bytes),
            Input::Timer(t) => Event::Timer(t),
            Input::Blocks(batches) => Event::StateTransfer(batches),
        };
        let actions = self.replica.handle(now_ms, event, &*self.ledger);
        actions
            .into_iter()
            .map(|a| match a {
                Action::Persist(delta) => Output::Persist(delta),
                Action::Broadcast(m) => Output::Broadcast(m),
                Action::Send { to, msg } => Output::Send { to, msg },
                Action::Commit {
                    entry,
                    digest,
                    repeats,
                    ..
                } => Output::Commit(PbftCommit {
                    entry,
                    digest,
                    repeats,
                }),
                Action::SetTimer { timer, at_ms } => Output::SetTimer { timer, at_ms },
                Action::CancelTimer(t) => Output::CancelTimer(t),
                Action::Forward(items) => Output::Forward(items),
                Action::RequestStateTransfer {
                    from_seq,
                    target_seq,
                } => Output::Fetch {
                    from_height: from_seq,
                    target: target_seq,
                    peer: None,
                },
                Action::Note(n) => Output::Note(n),
                Action::Halt(fault) => Output::Halt(fault.to_string()),
            })
            .collect()
    }

    fn persist(&mut self, delta: Box<PersistDelta>) -> Job<()> {
        let store = self.store.clone();
        Box::new(move || {
            super::replica_state::persist(&store, &delta)
                .map_err(|e| DriverError::Storage(format!("persisting the replica's votes: {e:#}")))
        })
    }

    fn commit(&mut self, c: PbftCommit) -> Job<Committed<SideEffects>> {
        let seq = c.entry.seq;
        let exec_digest = chain_state_digest(&self.exec_digest, seq, &c.digest);
        // A failed write stops the driver, so the digest may advance now.
        self.exec_digest = exec_digest;
        let ledger = self.ledger.clone();
        let leader = (c.entry.view % self.validators as u64) as u32;
        Box::new(move || {
            let done = ledger
                .commit(&c.entry, &c.repeats, exec_digest)
                .map_err(|e| DriverError::Storage(format!("writing committed block {seq}: {e}")))?;
            Ok(Committed {
                height: done.tip.height,
                hash: done.tip.hash,
                timestamp_ms: c.entry.batch.as_ref().map_or(0, |b| b.timestamp_ms),
                view: c.entry.view,
                leader,
                effective: done.effective,
                skipped: c.repeats.len(),
                seen: done.seen,
                failed: done.failed,
                effects: done.effects,
            })
        })
    }

    fn view(&self) -> u64 {
        self.replica.view()
    }

    fn wrap(msg: v1::PbftMessage) -> Body {
        Body::Pbft(msg)
    }

    fn read(body: Body) -> Incoming<Self> {
        match body {
            Body::Pbft(m) => Incoming::Consensus(m),
            Body::BlockResponse(resp) => {
                let mut blocks = Vec::new();
                let mut malformed = None;
                for b in &resp.blocks {
                    match committed_batch_of(b) {
                        Ok(e) => blocks.push(e),
                        Err(e) => {
                            malformed = Some(e.to_string());
                            break;
                        }
                    }
                }
                Incoming::Blocks {
                    blocks,
                    malformed,
                    peer_tip: resp.tip_height,
                }
            }
            _ => Incoming::Other,
        }
    }

    fn serve_blocks(&self, from_height: u64, count: u32) -> Result<v1::BlockResponse, DriverError> {
        let mut blocks = Vec::new();
        let mut bytes = 0usize;
        for h in from_height..from_height + count as u64 {
            let block = self
                .store
                .block(h)
                .map_err(|e| DriverError::Storage(format!("reading block {h}: {e}")))?;
            let Some(b) = block else { break };
            bytes += medchain_proto::Canonical::canonical_bytes(&b).len();
            blocks.push(b);
            if bytes > medchain_proto::canonical::limits::BLOCK {
                break;
            }
        }
        Ok(v1::BlockResponse {
            blocks,
            tip_height: 0,
        })
    }

    fn log_note(&self, note: Note) -> Option<&'static str> {
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
                tracing::info!(peer = ?from, what, view, seq, reason, "refused a consensus message");
                return Some(what);
            }
        }
        None
    }

    fn checker(&self) -> Checker {
        let ledger = self.ledger.clone();
        Arc::new(move |bytes| ledger.check(bytes).map_err(|e| e.to_string()))
    }
}
