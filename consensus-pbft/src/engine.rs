//! The replica state machine. See the crate docs for the numbered rules referenced here.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};

use medchain_crypto::hash::{digest_parts, domains};
use medchain_crypto::validators::{Signer, Verifier};
use medchain_crypto::Hash32;
use medchain_proto::pbft::{item_id, sign, verify_committed_batch, verify_signature};
use medchain_proto::v1::{self, pbft_message::Kind};
use medchain_proto::{Canonical, Hashed};

use crate::config::{Config, Mutant};
use crate::event::{Action, CorruptState, Event, Note, SafetyFault, Timer};
use crate::log::Slot;
use crate::persist::{PersistDelta, PersistedHeader, PersistedState, SlotRecord};
use crate::view_change::{
    digest_field, plan, verify_new_view, verify_view_change, CheckpointClaim, NewViewPlan,
    VerifiedViewChange,
};
use crate::ReplicaId;

/// The ledger, as the engine sees it.
pub trait Application {
    /// Whether a proposed batch may be ordered at `seq` (rule 4): every item well formed, signed,
    /// not already executed. An invalid batch is not prepared.
    fn validate(&self, seq: u64, batch: &v1::PbftBatch) -> Result<(), String>;
    /// Whether an item was already executed; such items are dropped from the pending queue.
    fn already_executed(&self, item: &[u8]) -> bool;
}

struct PendingItem {
    id: Hash32,
    item: Vec<u8>,
    arrived_ms: u64,
    /// The execution point at which the ledger last said this item was not executed. Only a
    /// commit can change the answer, so the lookup is repeated once per commit at most, not on
    /// every proposal attempt (which made a filling batch cost quadratic lookups).
    fresh_at: std::cell::Cell<u64>,
}

/// One PBFT replica.
pub struct Replica<S, V> {
    cfg: Config,
    signer: S,
    verifier: V,
    // Durable (rule 10).
    view: u64,
    view_changing: bool,
    next_seq: u64,
    stable: CheckpointClaim,
    slots: BTreeMap<u64, Slot>,
    last_view_change: Option<v1::PbftMessage>,
    // Executed prefix, as the ledger knows it.
    exec_seq: u64,
    exec_digest: Hash32,
    // Volatile.
    pending: VecDeque<PendingItem>,
    pending_ids: HashSet<Hash32>,
    in_flight: HashMap<Hash32, u64>,
    checkpoints: BTreeMap<u64, BTreeMap<ReplicaId, (Hash32, v1::PbftMessage)>>,
    view_changes: BTreeMap<u64, BTreeMap<ReplicaId, (v1::PbftMessage, VerifiedViewChange)>>,
    new_view_msg: Option<v1::PbftMessage>,
    early_pre_prepares: Vec<v1::PbftMessage>,
    consecutive_view_changes: u32,
    progress_armed: bool,
    transfer_target: Option<u64>,
    /// Items executed during the current call, before the ledger has seen them.
    applied_in_call: HashSet<Hash32>,
    /// Per replica, the view it last asked help for and when we helped (rule 12).
    helped: BTreeMap<ReplicaId, (u64, u64)>,
    /// Per replica, its latest complaint and the view it asks to move to (rule 8); one entry per
    /// sender.
    complaints: BTreeMap<ReplicaId, (u64, v1::PbftMessage)>,
    /// The f+1 complaints this replica left its last view on: repeated with its view change, so
    /// every replica that missed some of them leaves that view too.
    complaint_proof: Vec<v1::PbftMessage>,
    /// Per replica, the highest view above ours it sent a normal-case message for (rule 13); one
    /// entry per sender.
    seen_in_view: BTreeMap<ReplicaId, u64>,
    // Output of the current call: what to persist (header, these slots, the view change).
    dirty: bool,
    dirty_slots: BTreeSet<u64>,
    view_change_dirty: bool,
    new_view_dirty: bool,
    effects: Vec<Action>,
    sends: Vec<Action>,
    /// Set when this replica finds that its own executed history differs from a certified one:
    /// it then refuses every further event (see [`SafetyFault`]).
    halted: Option<SafetyFault>,
}

impl<S, V> std::fmt::Debug for Replica<S, V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Replica")
            .field("me", &self.cfg.me)
            .field("view", &self.view)
            .field("view_changing", &self.view_changing)
            .field("exec_seq", &self.exec_seq)
            .field("stable_seq", &self.stable.seq)
            .field("next_seq", &self.next_seq)
            .field("in_flight", &self.in_flight.len())
            .field("transfer_target", &self.transfer_target)
            .finish()
    }
}

fn genesis_checkpoint() -> CheckpointClaim {
    CheckpointClaim {
        seq: 0,
        digest: Hash32::ZERO,
        proof: Vec::new(),
    }
}

/// The state digest after executing `digest` at `seq` on top of `prev` (rule 7).
pub fn chain_state_digest(prev: &Hash32, seq: u64, digest: &Hash32) -> Hash32 {
    digest_parts(
        domains::PBFT_STATE,
        &[prev.as_bytes(), &seq.to_be_bytes(), digest.as_bytes()],
    )
}

impl<S: Signer, V: Verifier> Replica<S, V> {
    /// A replica starting from genesis.
    pub fn new(cfg: Config, signer: S, verifier: V) -> Self {
        Self::restore(cfg, signer, verifier, None, (0, Hash32::ZERO))
            .expect("no persisted state to decode")
    }

    /// A replica restarting from its persisted state, with the ledger's executed prefix
    /// `(seq, state digest)`. Feed it [`Event::Start`] next.
    ///
    /// A persisted record that does not decode is an error, not something to skip: the record
    /// may be a vote this replica signed, and a replica that forgot it could sign a conflicting
    /// one. The operator restores the data folder (or re-syncs it) instead.
    pub fn restore(
        cfg: Config,
        signer: S,
        verifier: V,
        persisted: Option<PersistedState>,
        executed: (u64, Hash32),
    ) -> Result<Self, CorruptState> {
        let mut r = Replica {
            cfg,
            signer,
            verifier,
            view: 0,
            view_changing: false,
            next_seq: 0,
            stable: genesis_checkpoint(),
            slots: BTreeMap::new(),
            last_view_change: None,
            exec_seq: executed.0,
            exec_digest: executed.1,
            pending: VecDeque::new(),
            pending_ids: HashSet::new(),
            in_flight: HashMap::new(),
            checkpoints: BTreeMap::new(),
            view_changes: BTreeMap::new(),
            new_view_msg: None,
            early_pre_prepares: Vec::new(),
            consecutive_view_changes: 0,
            progress_armed: false,
            transfer_target: None,
            applied_in_call: HashSet::new(),
            helped: BTreeMap::new(),
            complaints: BTreeMap::new(),
            complaint_proof: Vec::new(),
            seen_in_view: BTreeMap::new(),
            dirty: false,
            dirty_slots: BTreeSet::new(),
            view_change_dirty: false,
            new_view_dirty: false,
            effects: Vec::new(),
            sends: Vec::new(),
            halted: None,
        };
        if let Some(p) = persisted {
            r.load(p)?;
        }
        r.next_seq = r.next_seq.max(r.exec_seq);
        Ok(r)
    }

    pub fn config(&self) -> &Config {
        &self.cfg
    }
    pub fn view(&self) -> u64 {
        self.view
    }
    pub fn is_view_changing(&self) -> bool {
        self.view_changing
    }
    pub fn executed_seq(&self) -> u64 {
        self.exec_seq
    }
    pub fn stable_seq(&self) -> u64 {
        self.stable.seq
    }
    pub fn pending_len(&self) -> usize {
        self.pending.len()
    }
    /// Log entries held (bounded by the window: rule 7).
    pub fn log_len(&self) -> usize {
        self.slots.len() + self.checkpoints.len() + self.view_changes.len()
    }
    pub fn primary(&self) -> ReplicaId {
        self.cfg.primary(self.view)
    }

    /// Why this replica stopped, if it did (see [`Action::Halt`]).
    pub fn halted(&self) -> Option<&SafetyFault> {
        self.halted.as_ref()
    }

    /// Processes one event at time `now_ms` and returns what to do, in order.
    ///
    /// The order is the durability contract (rule 10): the call's `Persist`, if any, comes first,
    /// then executions, timers and notes, then sends. So a replica that crashes anywhere inside a
    /// call restarts with every vote and prepared certificate that justifies what its ledger
    /// executed: a replica that became prepared and committed in one call and executed the batch
    /// before recording its certificate could otherwise lose the certificate, and a later view
    /// could commit another batch at that sequence number.
    pub fn handle(&mut self, now_ms: u64, event: Event, app: &impl Application) -> Vec<Action> {
        if self.halted.is_some() {
            return Vec::new();
        }
        match event {
            Event::Start => self.on_start(now_ms),
            Event::Message(m) => self.on_message(now_ms, m, app),
            Event::Submit(item) => self.on_submit(now_ms, item, app),
            Event::Timer(t) => self.on_timer(now_ms, t, app),
            Event::StateTransfer(entries) => self.on_state_transfer(now_ms, entries, app),
        }
        // Execute whatever is committed in order, then propose if that became possible (new work,
        // a new view, a moved window).
        if self.halted.is_none() {
            self.execute_ready(now_ms, app);
        }
        self.applied_in_call.clear();
        if let Some(fault) = &self.halted {
            // Nothing of this call is performed: the replica's history is not the certified one.
            self.effects.clear();
            self.sends.clear();
            return vec![Action::Halt(fault.clone())];
        }
        self.try_propose(now_ms, app);
        let mut out = Vec::with_capacity(self.effects.len() + self.sends.len() + 1);
        if std::mem::take(&mut self.dirty)
            || !self.dirty_slots.is_empty()
            || self.view_change_dirty
            || self.new_view_dirty
        {
            out.push(Action::Persist(Box::new(self.delta())));
        }
        if self.cfg.mutant(Mutant::CommitBeforePersist) {
            // The old, unsafe order: executions ahead of the persisted certificate.
            let persist = std::mem::take(&mut out);
            out.append(&mut self.effects);
            out.extend(persist);
        } else {
            out.append(&mut self.effects);
        }
        out.append(&mut self.sends);
        out
    }

    // ---- output helpers ----

    fn sign(&self, kind: Kind, batch: Option<v1::PbftBatch>) -> v1::PbftMessage {
        sign(&self.signer, &self.cfg.chain_id, self.cfg.me, kind, batch)
    }

    fn broadcast(&mut self, msg: v1::PbftMessage) {
        self.sends.push(Action::Broadcast(msg));
    }

    fn send(&mut self, to: ReplicaId, msg: v1::PbftMessage) {
        self.sends.push(Action::Send { to, msg });
    }

    fn set_timer(&mut self, timer: Timer, at_ms: u64) {
        self.effects.push(Action::SetTimer { timer, at_ms });
    }

    fn note(&mut self, note: Note) {
        self.effects.push(Action::Note(note));
    }

    /// Reports a dropped input; `view` and `seq` are what the input claimed (0 when it has none).
    fn refuse(
        &mut self,
        from: Option<ReplicaId>,
        what: &'static str,
        (view, seq): (u64, u64),
        reason: impl Into<String>,
    ) {
        self.note(Note::Refused {
            from,
            what,
            view,
            seq,
            reason: reason.into(),
        });
    }

    fn cancel_timer(&mut self, timer: Timer) {
        self.effects.push(Action::CancelTimer(timer));
    }

    fn view_change_timeout(&self) -> u64 {
        let factor = 1u64 << self.consecutive_view_changes.min(5);
        self.cfg.view_change_timeout_ms.saturating_mul(factor)
    }

    fn in_window(&self, seq: u64) -> bool {
        seq > self.stable.seq && seq <= self.stable.seq + self.cfg.window
    }

    /// Marks a slot's durable record as changed in this call.
    fn touch(&mut self, seq: u64) {
        self.dirty_slots.insert(seq);
    }

    /// The header, the slots touched in this call (still in the window) and a newly signed view
    /// change.
    fn delta(&mut self) -> PersistDelta {
        let bytes = |m: &v1::PbftMessage| m.canonical_bytes();
        let touched = std::mem::take(&mut self.dirty_slots);
        PersistDelta {
            header: PersistedHeader {
                view: self.view,
                view_changing: self.view_changing,
                next_seq: self.next_seq,
                stable_seq: self.stable.seq,
                stable_digest: self.stable.digest.0,
                stable_proof: self.stable.proof.iter().map(bytes).collect(),
            },
            slots: touched
                .into_iter()
                .filter(|s| *s > self.stable.seq)
                .filter_map(|s| self.slots.get(&s).map(|slot| (s, slot)))
                .map(|(s, slot)| SlotRecord {
                    seq: s,
                    pre_prepare: slot.pre_prepare.as_ref().map(|(_, _, m)| bytes(m)),
                    sent_prepare: slot.sent_prepare.map(|(v, d)| (v, d.0)),
                    sent_commit: slot.sent_commit.map(|(v, d)| (v, d.0)),
                    prepared: slot
                        .prepared
                        .as_ref()
                        .map(|(_, _, pp, ps)| std::iter::once(pp).chain(ps).map(bytes).collect()),
                })
                .collect(),
            last_view_change: if std::mem::take(&mut self.view_change_dirty) {
                self.last_view_change.as_ref().map(bytes)
            } else {
                None
            },
            new_view: if std::mem::take(&mut self.new_view_dirty) {
                self.new_view_msg.as_ref().map(bytes)
            } else {
                None
            },
        }
    }

    // ---- start, submit, timers ----

    fn on_start(&mut self, now: u64) {
        // Re-send what we already sent (identical bytes: RFC 6979 signatures are deterministic).
        if self.view_changing {
            if let Some(vc) = self.last_view_change.clone() {
                // Count our own view change again (received ones are volatile): without it a
                // restarted primary of the new view would wait for a quorum it is part of, and
                // if every honest replica restarted mid view change none would reach one.
                if let Ok(own) = verify_view_change(&self.cfg, &self.verifier, &vc) {
                    if own.new_view == self.view {
                        self.view_changes
                            .entry(self.view)
                            .or_default()
                            .insert(self.cfg.me, (vc.clone(), own));
                    }
                }
                self.broadcast(vc);
            }
            let at = now + self.view_change_timeout();
            self.set_timer(Timer::ViewChange(self.view), at);
        }
        let seqs: Vec<u64> = self
            .slots
            .keys()
            .copied()
            .filter(|s| *s > self.exec_seq)
            .collect();
        for s in seqs {
            let slot = &self.slots[&s];
            let mut again = Vec::new();
            if let Some((v, _, pp)) = &slot.pre_prepare {
                if self.cfg.primary(*v) == self.cfg.me && *v == self.view {
                    again.push(pp.clone());
                }
            }
            if let Some((v, d)) = slot.sent_prepare {
                again.push(self.sign(Kind::Prepare(vote(v, s, &d)), None));
            }
            if let Some((v, d)) = slot.sent_commit {
                again.push(self.sign(Kind::Commit(commit(v, s, &d)), None));
            }
            // Count our own votes again.
            for m in &again {
                self.record_own_vote(s, m);
            }
            for m in again {
                self.broadcast(m);
            }
        }
        if self.exec_seq < self.stable.seq {
            self.transfer_target = Some(self.stable.seq);
            self.request_transfer(now);
        }
        self.resign_own_checkpoint(now);
        self.recompute_in_flight();
        self.update_progress_timer(now);
    }

    /// Rule 7 after a restart: checkpoint messages are not persisted, so a replica whose executed
    /// prefix ends on a checkpoint above the stable one signs that checkpoint again (the same
    /// bytes as before the crash: deterministic signatures over the same digest). Without it a
    /// restart with a full window could leave the window frozen, the stable checkpoint waiting
    /// for a vote nobody would send again.
    fn resign_own_checkpoint(&mut self, now: u64) {
        let seq = self.exec_seq;
        if seq <= self.stable.seq || !seq.is_multiple_of(self.cfg.checkpoint_interval) {
            return;
        }
        let already = self
            .checkpoints
            .get(&seq)
            .is_some_and(|votes| votes.contains_key(&self.cfg.me));
        if !already {
            self.take_checkpoint(now, seq);
        }
    }

    /// Signs and sends this replica's checkpoint at `seq` (its executed prefix) and checks
    /// whether it became stable.
    fn take_checkpoint(&mut self, now: u64, seq: u64) {
        let msg = self.sign(
            Kind::Checkpoint(v1::Checkpoint {
                seq,
                state_digest: self.exec_digest.as_bytes().to_vec(),
            }),
            None,
        );
        self.checkpoints
            .entry(seq)
            .or_default()
            .insert(self.cfg.me, (self.exec_digest, msg.clone()));
        self.broadcast(msg);
        self.check_stable(now, seq);
    }

    fn record_own_vote(&mut self, seq: u64, m: &v1::PbftMessage) {
        let me = self.cfg.me;
        let slot = self.slots.entry(seq).or_default();
        match &m.kind {
            Some(Kind::Prepare(p)) => {
                if let Ok(d) = digest_field(&p.digest) {
                    slot.prepares
                        .entry((p.view, d))
                        .or_default()
                        .insert(me, m.clone());
                }
            }
            Some(Kind::Commit(c)) => {
                if let Ok(d) = digest_field(&c.digest) {
                    slot.commits
                        .entry((c.view, d))
                        .or_default()
                        .insert(me, m.clone());
                }
            }
            _ => {}
        }
    }

    fn on_submit(&mut self, now: u64, item: Vec<u8>, app: &impl Application) {
        let id = item_id(&item);
        if self.pending_ids.contains(&id) || app.already_executed(&item) {
            return;
        }
        self.pending_ids.insert(id);
        self.pending.push_back(PendingItem {
            id,
            item,
            arrived_ms: now,
            fresh_at: std::cell::Cell::new(self.exec_seq),
        });
        self.update_progress_timer(now);
    }

    fn on_timer(&mut self, now: u64, timer: Timer, app: &impl Application) {
        match timer {
            Timer::Batch => {}
            Timer::Progress => {
                self.progress_armed = false;
                // Items the ledger has since executed (or can never execute, such as a second
                // transaction with an already used nonce) are not outstanding work: drop them
                // before blaming the primary.
                self.drop_executed_pending(app);
                if !self.view_changing && self.has_outstanding_work() {
                    self.request_catch_up();
                    self.complain(now);
                }
            }
            Timer::ViewChange(v) => {
                if self.view_changing && self.view == v {
                    // Whatever the others committed meanwhile can be learnt without voting.
                    self.request_catch_up();
                    // Senders that asked for v or any later view all want to leave view v - 1.
                    let supported: usize = self.view_changes.range(v..).map(|(_, m)| m.len()).sum();
                    // Work or not: a view change that a quorum asked for must end in a view
                    // whose primary answers, or the replicas stay stuck between views.
                    if supported >= self.cfg.quorum() {
                        self.start_view_change(now, v + 1);
                    } else {
                        // PBFT's liveness rule: move past v only once a quorum wanted v, so a
                        // replica that timed out alone waits for the others instead of racing
                        // ahead of them view after view.
                        let at = now + self.view_change_timeout();
                        self.set_timer(Timer::ViewChange(v), at);
                        // Our view change may have been lost: say it again (same bytes), with
                        // the complaints that made us leave, so the others leave too.
                        if let Some(vc) = self.last_view_change.clone() {
                            self.broadcast(vc);
                        }
                        for m in self.complaint_proof.clone() {
                            self.broadcast(m);
                        }
                    }
                }
            }
            Timer::StateTransfer => {
                if self.transfer_target.is_some() {
                    self.request_transfer(now);
                }
            }
        }
    }

    fn has_outstanding_work(&self) -> bool {
        // Pre-prepares of older views that the new view did not re-propose will never execute:
        // they are not outstanding work, and counting them would complain about a healthy view.
        !self.pending.is_empty()
            || self
                .slots
                .range(self.exec_seq + 1..)
                .any(|(_, s)| s.accepted_in(self.view).is_some())
    }

    fn update_progress_timer(&mut self, now: u64) {
        if self.view_changing {
            return;
        }
        let outstanding = self.has_outstanding_work();
        if outstanding && !self.progress_armed {
            self.progress_armed = true;
            let at = now + self.view_change_timeout();
            self.set_timer(Timer::Progress, at);
        } else if !outstanding && self.progress_armed {
            self.progress_armed = false;
            self.cancel_timer(Timer::Progress);
        }
    }

    // ---- messages ----

    fn on_message(&mut self, now: u64, m: v1::PbftMessage, app: &impl Application) {
        if m.replica == self.cfg.me {
            return;
        }
        if let Err(e) =
            verify_signature(&m, &self.cfg.chain_id, &self.cfg.validators, &self.verifier)
        {
            self.refuse(
                Some(m.replica),
                kind_name(&m),
                claimed_slot(&m),
                e.to_string(),
            );
            return;
        }
        match m.kind.clone() {
            Some(Kind::PrePrepare(pp)) => self.on_pre_prepare(now, m, pp, app),
            Some(Kind::Prepare(p)) => {
                self.note_higher_view(now, m.replica, p.view);
                self.on_vote(m.replica, p.view, p.seq, &p.digest, m, true)
            }
            Some(Kind::Commit(c)) => {
                self.note_higher_view(now, m.replica, c.view);
                self.on_vote(m.replica, c.view, c.seq, &c.digest, m, false)
            }
            Some(Kind::Checkpoint(c)) => self.on_checkpoint(now, m, c),
            Some(Kind::ViewChange(_)) => self.on_view_change(now, m),
            Some(Kind::NewView(_)) => self.on_new_view(now, m, app),
            Some(Kind::Complaint(c)) => self.on_complaint(now, m, c.new_view),
            None => self.refuse(Some(m.replica), "message", (0, 0), "no kind"),
        }
    }
}

/// A message's kind, for notes.
fn kind_name(m: &v1::PbftMessage) -> &'static str {
    match &m.kind {
        Some(Kind::PrePrepare(_)) => "pre-prepare",
        Some(Kind::Prepare(_)) => "prepare",
        Some(Kind::Commit(_)) => "commit",
        Some(Kind::Checkpoint(_)) => "checkpoint",
        Some(Kind::ViewChange(_)) => "view change",
        Some(Kind::NewView(_)) => "new view",
        Some(Kind::Complaint(_)) => "complaint",
        None => "message without a kind",
    }
}

/// The (view, sequence) a message claims, for notes; 0 where it names none.
fn claimed_slot(m: &v1::PbftMessage) -> (u64, u64) {
    match &m.kind {
        Some(Kind::PrePrepare(p)) => (p.view, p.seq),
        Some(Kind::Prepare(p)) => (p.view, p.seq),
        Some(Kind::Commit(c)) => (c.view, c.seq),
        Some(Kind::Checkpoint(c)) => (0, c.seq),
        Some(Kind::ViewChange(v)) => (v.new_view, v.stable_seq),
        Some(Kind::NewView(n)) => (n.view, 0),
        Some(Kind::Complaint(c)) => (c.new_view, 0),
        None => (0, 0),
    }
}

fn vote(view: u64, seq: u64, digest: &Hash32) -> v1::Prepare {
    v1::Prepare {
        view,
        seq,
        digest: digest.as_bytes().to_vec(),
    }
}

fn commit(view: u64, seq: u64, digest: &Hash32) -> v1::Commit {
    v1::Commit {
        view,
        seq,
        digest: digest.as_bytes().to_vec(),
    }
}

mod agreement;
mod checkpoint;
mod new_view;
mod propose;
mod restore;
mod view_sync;

#[cfg(test)]
mod tests;
