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

    fn load(&mut self, p: PersistedState) -> Result<(), CorruptState> {
        let decode = |b: &[u8], record: String| {
            v1::PbftMessage::decode_canonical(b).map_err(|e| CorruptState {
                record,
                reason: e.to_string(),
            })
        };
        let corrupt = |record: String, reason: &str| CorruptState {
            record,
            reason: reason.to_string(),
        };
        let h = p.header;
        self.view = h.view;
        self.view_changing = h.view_changing;
        self.next_seq = h.next_seq;
        let proof = h
            .stable_proof
            .iter()
            .enumerate()
            .map(|(i, b)| decode(b, format!("stable checkpoint proof, message {i}")))
            .collect::<Result<_, _>>()?;
        self.stable = CheckpointClaim {
            seq: h.stable_seq,
            digest: Hash32(h.stable_digest),
            proof,
        };
        self.last_view_change = p
            .last_view_change
            .as_deref()
            .map(|b| decode(b, "last view change".into()))
            .transpose()?;
        for rec in p.slots.into_values() {
            if rec.seq <= self.stable.seq {
                continue;
            }
            let seq = rec.seq;
            let slot = self.slots.entry(seq).or_default();
            if let Some(b) = rec.pre_prepare.as_deref() {
                let what = format!("slot {seq}: accepted pre-prepare");
                let pp = decode(b, what.clone())?;
                let (Some(Kind::PrePrepare(k)), Some(batch)) = (&pp.kind, &pp.batch) else {
                    return Err(corrupt(what, "not a pre-prepare with its batch"));
                };
                let d = digest_field(&k.digest).map_err(|e| corrupt(what, &e))?;
                slot.batches.insert(d, batch.clone());
                slot.pre_prepare = Some((k.view, d, pp.clone()));
            }
            if let Some(msgs) = rec.prepared {
                let what = format!("slot {seq}: prepared certificate");
                let msgs = msgs
                    .iter()
                    .map(|b| decode(b, what.clone()))
                    .collect::<Result<Vec<_>, _>>()?;
                let Some((pp, prepares)) = msgs.split_first() else {
                    return Err(corrupt(what, "empty"));
                };
                let (Some(Kind::PrePrepare(k)), Some(batch)) = (&pp.kind, &pp.batch) else {
                    return Err(corrupt(
                        what,
                        "does not start with a pre-prepare and its batch",
                    ));
                };
                let d = digest_field(&k.digest).map_err(|e| corrupt(what, &e))?;
                slot.batches.insert(d, batch.clone());
                slot.prepared = Some((k.view, d, pp.clone(), prepares.to_vec()));
            }
            slot.sent_prepare = rec.sent_prepare.map(|(v, d)| (v, Hash32(d)));
            slot.sent_commit = rec.sent_commit.map(|(v, d)| (v, Hash32(d)));
        }
        Ok(())
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
        if std::mem::take(&mut self.dirty) || !self.dirty_slots.is_empty() || self.view_change_dirty
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
        !self.pending.is_empty()
            || self
                .slots
                .range(self.exec_seq + 1..)
                .any(|(_, s)| s.pre_prepare.is_some())
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

    // ---- rule 3: proposing ----

    /// Drops pending items the ledger has executed (a lookup per item: only on the progress
    /// timeout, not on every proposal).
    fn drop_executed_pending(&mut self, app: &impl Application) {
        let executed: Vec<Hash32> = self
            .pending
            .iter()
            .filter(|p| !self.in_flight.contains_key(&p.id) && app.already_executed(&p.item))
            .map(|p| p.id)
            .collect();
        if !executed.is_empty() {
            let gone: HashSet<Hash32> = executed.into_iter().collect();
            self.pending.retain(|p| !gone.contains(&p.id));
            for id in &gone {
                self.pending_ids.remove(id);
            }
        }
    }

    fn try_propose(&mut self, now: u64, app: &impl Application) {
        if self.view_changing || self.cfg.primary(self.view) != self.cfg.me {
            return;
        }
        loop {
            let seq = self.next_seq + 1;
            if !self.in_window(seq) {
                break;
            }
            // Items the ledger executed meanwhile are skipped (and dropped below); the check is
            // lazy, so only as many items as a batch needs are looked up.
            let mut executed = Vec::new();
            let candidates: Vec<&PendingItem> = self
                .pending
                .iter()
                .filter(|p| !self.in_flight.contains_key(&p.id))
                .filter(|p| {
                    if p.fresh_at.get() == self.exec_seq {
                        return true;
                    }
                    let done = app.already_executed(&p.item);
                    if done {
                        executed.push(p.id);
                    } else {
                        p.fresh_at.set(self.exec_seq);
                    }
                    !done
                })
                .take(self.cfg.max_batch)
                .collect();
            if !executed.is_empty() {
                let gone: HashSet<Hash32> = executed.into_iter().collect();
                self.pending.retain(|p| !gone.contains(&p.id));
                for id in &gone {
                    self.pending_ids.remove(id);
                }
                continue;
            }
            let Some(oldest) = candidates.first() else {
                break;
            };
            let due = oldest.arrived_ms + self.cfg.block_interval_ms;
            if candidates.len() < self.cfg.max_batch && now < due {
                self.set_timer(Timer::Batch, due);
                break;
            }
            let batch = v1::PbftBatch {
                timestamp_ms: now,
                items: candidates.iter().map(|p| p.item.clone()).collect(),
                proposer: self.cfg.me,
            };
            let ids: Vec<Hash32> = candidates.iter().map(|p| p.id).collect();
            let ids_len = ids.len();
            let digest = batch.digest();
            let slot = self.slots.entry(seq).or_default();
            if slot.accepted_in(self.view).is_some() {
                // Never two pre-prepares for one (view, seq), even after a restart (rule 10).
                self.next_seq = seq;
                continue;
            }
            let msg = self.sign(
                Kind::PrePrepare(v1::PrePrepare {
                    view: self.view,
                    seq,
                    digest: digest.as_bytes().to_vec(),
                }),
                Some(batch.clone()),
            );
            let slot = self.slots.entry(seq).or_default();
            slot.batches.insert(digest, batch);
            slot.pre_prepare = Some((self.view, digest, msg.clone()));
            for id in ids {
                self.in_flight.insert(id, seq);
            }
            self.next_seq = seq;
            self.dirty = true;
            self.touch(seq);
            self.broadcast(msg);
            self.note(Note::Proposed {
                view: self.view,
                seq,
                items: ids_len,
            });
            self.check_prepared(seq);
        }
        self.update_progress_timer(now);
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

    /// Rule 4.
    fn on_pre_prepare(
        &mut self,
        now: u64,
        m: v1::PbftMessage,
        pp: v1::PrePrepare,
        app: &impl Application,
    ) {
        if m.replica != self.cfg.primary(pp.view) {
            let reason = format!(
                "the sender is not the primary of view {} (replica {} is)",
                pp.view,
                self.cfg.primary(pp.view)
            );
            self.refuse(Some(m.replica), "pre-prepare", (pp.view, pp.seq), reason);
            return;
        }
        self.note_higher_view(now, m.replica, pp.view);
        // A fresh batch names the primary that built it (re-proposals in a new view keep their
        // original proposer and arrive through the new-view message instead).
        if m.batch.as_ref().is_some_and(|b| b.proposer != m.replica) {
            let reason = "its batch names another proposer";
            self.refuse(Some(m.replica), "pre-prepare", (pp.view, pp.seq), reason);
            return;
        }
        if self.view_changing && pp.view == self.view {
            if self.early_pre_prepares.len() < self.cfg.window as usize {
                self.early_pre_prepares.push(m);
            }
            return;
        }
        if self.view_changing || pp.view != self.view || !self.in_window(pp.seq) {
            return;
        }
        self.accept_pre_prepare(now, m, app);
    }

    fn accept_pre_prepare(&mut self, now: u64, m: v1::PbftMessage, app: &impl Application) -> bool {
        let Some(Kind::PrePrepare(pp)) = &m.kind else {
            return false;
        };
        let (view, seq) = (pp.view, pp.seq);
        let from = Some(m.replica);
        let Ok(digest) = digest_field(&pp.digest) else {
            self.refuse(from, "pre-prepare", (view, seq), "malformed digest");
            return false;
        };
        let Some(batch) = m.batch.clone() else {
            self.refuse(from, "pre-prepare", (view, seq), "no batch");
            return false;
        };
        if batch.digest() != digest {
            self.refuse(
                from,
                "pre-prepare",
                (view, seq),
                "the batch does not match its digest",
            );
            return false;
        }
        if batch.items.len() > self.cfg.max_batch {
            let reason = format!(
                "{} items, over the limit of {}",
                batch.items.len(),
                self.cfg.max_batch
            );
            self.refuse(from, "pre-prepare", (view, seq), reason);
            return false;
        }
        if let Some(d) = self.slots.get(&seq).and_then(|s| s.accepted_in(view)) {
            if d != digest {
                let reason = "a second proposal for this view and sequence (primary equivocation)";
                self.refuse(from, "pre-prepare", (view, seq), reason);
            }
            return d == digest;
        }
        let ids: Vec<Hash32> = batch.items.iter().map(|i| item_id(i)).collect();
        let unique: HashSet<&Hash32> = ids.iter().collect();
        if unique.len() != ids.len() {
            self.refuse(
                from,
                "pre-prepare",
                (view, seq),
                "an item appears twice in the batch",
            );
            return false;
        }
        if let Some(other) = ids
            .iter()
            .find_map(|id| self.in_flight.get(id).filter(|s| **s != seq))
        {
            let reason = format!("an item is already proposed at sequence {other}");
            self.refuse(from, "pre-prepare", (view, seq), reason);
            return false;
        }
        if seq > self.exec_seq {
            if let Err(e) = app.validate(seq, &batch) {
                let reason = format!("the batch is invalid: {e}");
                self.refuse(from, "pre-prepare", (view, seq), reason);
                return false;
            }
        }
        let slot = self.slots.entry(seq).or_default();
        slot.batches.insert(digest, batch);
        slot.pre_prepare = Some((view, digest, m));
        for id in ids {
            self.in_flight.insert(id, seq);
        }
        self.touch(seq);
        if self.cfg.primary(view) != self.cfg.me {
            self.send_prepare(view, seq, digest);
        }
        self.check_prepared(seq);
        self.update_progress_timer(now);
        true
    }

    /// Signs a prepare unless one for another digest was already sent in this view (rule 10).
    fn send_prepare(&mut self, view: u64, seq: u64, digest: Hash32) {
        let slot = self.slots.entry(seq).or_default();
        match slot.sent_prepare {
            Some((v, d)) if v == view && d != digest => return,
            Some((v, d)) if v == view && d == digest => {}
            _ => {
                slot.sent_prepare = Some((view, digest));
                self.dirty_slots.insert(seq);
            }
        }
        let msg = self.sign(Kind::Prepare(vote(view, seq, &digest)), None);
        self.record_own_vote(seq, &msg);
        self.broadcast(msg);
    }

    fn on_vote(
        &mut self,
        from: ReplicaId,
        view: u64,
        seq: u64,
        digest: &[u8],
        m: v1::PbftMessage,
        is_prepare: bool,
    ) {
        if view != self.view || !self.in_window(seq) {
            return;
        }
        let what = if is_prepare { "prepare" } else { "commit" };
        if is_prepare && from == self.cfg.primary(view) {
            let reason = "the primary does not prepare its own proposal";
            self.refuse(Some(from), what, (view, seq), reason);
            return;
        }
        let Ok(d) = digest_field(digest) else {
            self.refuse(Some(from), what, (view, seq), "malformed digest");
            return;
        };
        let slot = self.slots.entry(seq).or_default();
        let votes = if is_prepare {
            &mut slot.prepares
        } else {
            &mut slot.commits
        };
        // One vote of each kind per (sender, view, sequence number): a Byzantine replica that
        // signs a vote for every digest it can make up must not grow this log without bound.
        let second = votes
            .range((view, Hash32::ZERO)..=(view, Hash32([0xff; 32])))
            .any(|((_, other), senders)| *other != d && senders.contains_key(&from));
        if second {
            let reason =
                "a second, different vote for this view and sequence number (the first is kept)";
            self.refuse(Some(from), what, (view, seq), reason);
            return;
        }
        votes.entry((view, d)).or_default().insert(from, m);
        if !self.view_changing {
            self.check_prepared(seq);
        }
    }

    /// Rule 5, then rule 6.
    fn check_prepared(&mut self, seq: u64) {
        let view = self.view;
        let primary = self.cfg.primary(view);
        let Some(slot) = self.slots.get_mut(&seq) else {
            return;
        };
        let Some((v, d, pp)) = slot.pre_prepare.clone() else {
            return;
        };
        if v != view {
            return;
        }
        let already = matches!(&slot.prepared, Some((pv, pd, _, _)) if *pv == v && *pd == d);
        if !already {
            let prepares: Vec<v1::PbftMessage> = slot
                .prepares
                .get(&(v, d))
                .map(|m| {
                    m.iter()
                        .filter(|(r, _)| **r != primary)
                        .map(|(_, msg)| msg.clone())
                        .collect()
                })
                .unwrap_or_default();
            let needed = self.cfg.prepares_needed();
            if prepares.len() < needed {
                return;
            }
            slot.prepared = Some((v, d, pp, prepares.into_iter().take(needed).collect()));
            self.dirty_slots.insert(seq);
            let slot = self.slots.get_mut(&seq).expect("present");
            match slot.sent_commit {
                Some((cv, cd)) if cv == v && cd != d => return,
                Some((cv, _)) if cv == v => {}
                _ => slot.sent_commit = Some((v, d)),
            }
            let msg = self.sign(Kind::Commit(commit(v, seq, &d)), None);
            self.record_own_vote(seq, &msg);
            self.broadcast(msg);
            self.note(Note::Prepared { view: v, seq });
        }
        self.check_committed(seq);
    }

    fn check_committed(&mut self, seq: u64) {
        let q = self.cfg.quorum();
        let Some(slot) = self.slots.get_mut(&seq) else {
            return;
        };
        if slot.committed.is_some() {
            return;
        }
        let Some((v, d, pre_prepare, _)) = &slot.prepared else {
            return;
        };
        let key = (*v, *d);
        let proposal_signature = pre_prepare.signature.clone();
        let Some(commits) = slot.commits.get(&key) else {
            return;
        };
        if commits.len() < q {
            return;
        }
        let cert: Vec<v1::PbftMessage> = commits.values().take(q).cloned().collect();
        slot.committed = Some((key.0, key.1, cert, proposal_signature));
    }

    /// Executes committed batches in sequence order (rule 6).
    fn execute_ready(&mut self, now: u64, app: &impl Application) {
        let mut progressed = false;
        while let Some(slot) = self.slots.get(&(self.exec_seq + 1)) {
            let Some((view, digest, cert, proposal_signature)) = &slot.committed else {
                break;
            };
            let Some(batch) = slot.batches.get(digest).cloned() else {
                break;
            };
            let commits = cert
                .iter()
                .map(|m| v1::IndexedSignature {
                    validator: m.replica,
                    signature: m.signature.clone(),
                })
                .collect();
            let entry = v1::CommittedBatch {
                seq: self.exec_seq + 1,
                view: *view,
                batch: Some(batch),
                commits,
                proposal_signature: proposal_signature.clone(),
            };
            let digest = *digest;
            self.apply(now, digest, entry, app);
            progressed = true;
        }
        if progressed {
            self.after_progress(now);
        }
    }

    /// Executes `entry` (committed at the next sequence number, batch present).
    fn apply(
        &mut self,
        now: u64,
        digest: Hash32,
        entry: v1::CommittedBatch,
        app: &impl Application,
    ) {
        let seq = self.exec_seq + 1;
        let view = entry.view;
        let mut repeats = Vec::new();
        let items = entry.batch.as_ref().map_or(&[][..], |b| &b.items[..]);
        for (i, item) in items.iter().enumerate() {
            let id = item_id(item);
            // PBFT orders; it does not deduplicate across sequence numbers (a batch prepared in
            // one view and lost in a view change can see its items re-proposed elsewhere, and a
            // later new view may carry both). Execution is what makes an item happen once.
            if app.already_executed(item) || !self.applied_in_call.insert(id) {
                repeats.push(i as u32);
            }
            self.in_flight.remove(&id);
            if self.pending_ids.remove(&id) {
                self.pending.retain(|p| p.id != id);
            }
        }
        self.exec_digest = chain_state_digest(&self.exec_digest, seq, &digest);
        self.exec_seq = seq;
        self.next_seq = self.next_seq.max(seq);
        self.consecutive_view_changes = 0;
        self.effects.push(Action::Commit {
            entry,
            digest,
            proposer: self.cfg.primary(view),
            repeats,
        });
        if seq.is_multiple_of(self.cfg.checkpoint_interval) {
            self.take_checkpoint(now, seq);
        }
    }

    fn after_progress(&mut self, now: u64) {
        // Restart the progress clock from this execution.
        if self.progress_armed {
            self.progress_armed = false;
            self.cancel_timer(Timer::Progress);
        }
        self.update_progress_timer(now);
    }

    // ---- rule 7: checkpoints ----

    fn on_checkpoint(&mut self, now: u64, m: v1::PbftMessage, c: v1::Checkpoint) {
        if c.seq <= self.stable.seq {
            return;
        }
        if !c.seq.is_multiple_of(self.cfg.checkpoint_interval) {
            let reason = format!(
                "not at a checkpoint interval ({})",
                self.cfg.checkpoint_interval
            );
            self.refuse(Some(m.replica), "checkpoint", (0, c.seq), reason);
            return;
        }
        let Ok(d) = digest_field(&c.state_digest) else {
            self.refuse(
                Some(m.replica),
                "checkpoint",
                (0, c.seq),
                "malformed digest",
            );
            return;
        };
        // Bound memory against a sender spraying far-future checkpoints: beyond the window keep
        // only each sender's latest.
        let horizon = self.stable.seq + self.cfg.window;
        if c.seq > horizon {
            for votes in self.checkpoints.range_mut(horizon + 1..).map(|(_, v)| v) {
                votes.remove(&m.replica);
            }
            self.checkpoints.retain(|_, v| !v.is_empty());
        }
        self.checkpoints
            .entry(c.seq)
            .or_default()
            .insert(m.replica, (d, m));
        self.check_stable(now, c.seq);
    }

    fn check_stable(&mut self, now: u64, seq: u64) {
        if seq <= self.stable.seq {
            return;
        }
        let Some(votes) = self.checkpoints.get(&seq) else {
            return;
        };
        let mut by_digest: BTreeMap<Hash32, Vec<v1::PbftMessage>> = BTreeMap::new();
        for (d, m) in votes.values() {
            by_digest.entry(*d).or_default().push(m.clone());
        }
        let Some((digest, proof)) = by_digest
            .into_iter()
            .find(|(_, ms)| ms.len() >= self.cfg.quorum())
        else {
            return;
        };
        if self.exec_seq >= seq {
            self.adopt_stable(CheckpointClaim { seq, digest, proof });
        } else if self.transfer_target.is_none_or(|t| t < seq) {
            self.transfer_target = Some(seq);
            self.request_transfer(now);
        }
    }

    /// Adopts a stable checkpoint at or below the executed prefix, after comparing it with this
    /// replica's own state digest at that sequence number when it knows it (its own checkpoint
    /// vote, or its executed prefix). A quorum certifying another digest means this replica's
    /// history differs from the certified one: it halts instead of going on (see
    /// [`SafetyFault`]).
    fn adopt_stable(&mut self, claim: CheckpointClaim) {
        let seq = claim.seq;
        let own = match self.checkpoints.get(&seq).and_then(|v| v.get(&self.cfg.me)) {
            Some((d, _)) => Some(*d),
            None if seq == self.exec_seq => Some(self.exec_digest),
            None => None,
        };
        if let Some(own) = own.filter(|d| *d != claim.digest) {
            let signers = claim.proof.iter().map(|m| m.replica).collect();
            self.halted = Some(SafetyFault::DivergedFromCheckpoint {
                seq,
                own,
                certified: claim.digest,
                signers,
            });
            return;
        }
        self.stable = claim;
        self.note(Note::Stable { seq });
        self.slots = self.slots.split_off(&(seq + 1));
        self.checkpoints = self.checkpoints.split_off(&(seq + 1));
        self.in_flight.retain(|_, s| *s > seq);
        self.next_seq = self.next_seq.max(seq);
        self.dirty = true;
        if self.transfer_target.is_some_and(|t| t <= self.exec_seq) {
            self.transfer_target = None;
            self.cancel_timer(Timer::StateTransfer);
        }
    }

    // ---- rule 11: state transfer ----

    fn request_transfer(&mut self, now: u64) {
        let Some(target) = self.transfer_target else {
            return;
        };
        self.effects.push(Action::RequestStateTransfer {
            from_seq: self.exec_seq + 1,
            target_seq: target,
        });
        let at = now + self.cfg.state_transfer_retry_ms;
        self.set_timer(Timer::StateTransfer, at);
    }

    /// Block sync: ask for any committed batches above what this replica executed.
    fn request_catch_up(&mut self) {
        if self.transfer_target.is_none() {
            self.effects.push(Action::RequestStateTransfer {
                from_seq: self.exec_seq + 1,
                target_seq: self.exec_seq + 1,
            });
        }
    }

    fn on_state_transfer(
        &mut self,
        now: u64,
        mut entries: Vec<v1::CommittedBatch>,
        app: &impl Application,
    ) {
        entries.sort_by_key(|e| e.seq);
        let mut progressed = false;
        for e in entries {
            if e.seq != self.exec_seq + 1 {
                continue;
            }
            let digest = match verify_committed_batch(
                &e,
                &self.cfg.chain_id,
                &self.cfg.validators,
                &self.verifier,
            ) {
                Ok(d) => d,
                Err(err) => {
                    self.refuse(None, "transferred batch", (e.view, e.seq), err.to_string());
                    break;
                }
            };
            let view = e.view;
            self.apply(now, digest, e, app);
            progressed = true;
            // Rule 13: a quorum committed in `view`, so more than f replicas work there.
            if view > self.view {
                self.start_view_change(now, view);
            }
        }
        if !progressed {
            return;
        }
        let ready: Vec<u64> = self
            .checkpoints
            .keys()
            .copied()
            .filter(|s| *s > self.stable.seq && *s <= self.exec_seq)
            .collect();
        for s in ready {
            self.check_stable(now, s);
        }
        if self.transfer_target.is_some_and(|t| t <= self.exec_seq) {
            self.transfer_target = None;
            self.cancel_timer(Timer::StateTransfer);
        }
        self.execute_ready(now, app);
        self.after_progress(now);
    }

    // ---- rules 8, 9, 12: view change ----

    fn start_view_change(&mut self, now: u64, target: u64) {
        // Views only move forward (rule 10).
        if target <= self.view {
            return;
        }
        self.note(Note::ViewChange {
            from_view: self.view,
            to_view: target,
        });
        self.view = target;
        self.view_changing = true;
        self.forget_views_up_to(target);
        self.consecutive_view_changes = self.consecutive_view_changes.saturating_add(1);
        self.new_view_msg = None;
        self.early_pre_prepares.clear();
        if self.progress_armed {
            self.progress_armed = false;
            self.cancel_timer(Timer::Progress);
        }
        self.cancel_timer(Timer::Batch);
        let prepared = self
            .slots
            .range(self.stable.seq + 1..)
            .filter_map(|(_, s)| s.prepared.as_ref())
            .map(|(_, _, pp, prepares)| v1::PreparedProof {
                pre_prepare: Some(pp.clone()),
                prepares: prepares.clone(),
            })
            .collect();
        let msg = self.sign(
            Kind::ViewChange(v1::ViewChange {
                new_view: target,
                stable_seq: self.stable.seq,
                stable_digest: self.stable.digest.as_bytes().to_vec(),
                checkpoint_proof: self.stable.proof.clone(),
                prepared,
            }),
            None,
        );
        self.last_view_change = Some(msg.clone());
        self.dirty = true;
        self.view_change_dirty = true;
        if let Ok(own) = verify_view_change(&self.cfg, &self.verifier, &msg) {
            self.view_changes
                .entry(target)
                .or_default()
                .insert(self.cfg.me, (msg.clone(), own));
        }
        self.view_changes = self.view_changes.split_off(&target);
        self.broadcast(msg);
        self.resend_checkpoints();
        let at = now + self.view_change_timeout();
        self.set_timer(Timer::ViewChange(target), at);
        if !self.maybe_join(now) {
            self.maybe_send_new_view(now);
        }
    }

    /// Re-sends this replica's checkpoints above the stable one. A checkpoint is sent once when it
    /// is taken; if those messages were lost, the stable checkpoint, and with it the window, would
    /// never move and the primary could not propose again. Identical bytes, so harmless.
    fn resend_checkpoints(&mut self) {
        let me = self.cfg.me;
        let mine: Vec<v1::PbftMessage> = self
            .checkpoints
            .range(self.stable.seq + 1..)
            .filter_map(|(_, votes)| votes.get(&me).map(|(_, m)| m.clone()))
            .collect();
        for m in mine {
            self.broadcast(m);
        }
    }

    /// Join rule (rule 8): f+1 view changes for views above ours move us to the smallest of them.
    fn maybe_join(&mut self, now: u64) -> bool {
        let above: Vec<u64> = self
            .view_changes
            .range(self.view + 1..)
            .flat_map(|(v, senders)| senders.keys().map(move |_| *v))
            .collect();
        if above.len() > self.cfg.f() {
            let smallest = *above.iter().min().expect("non-empty");
            self.start_view_change(now, smallest);
            return true;
        }
        false
    }

    fn on_view_change(&mut self, now: u64, m: v1::PbftMessage) {
        let vc = match verify_view_change(&self.cfg, &self.verifier, &m) {
            Ok(vc) => vc,
            Err(e) => {
                self.refuse(Some(m.replica), "view change", claimed_slot(&m), e);
                return;
            }
        };
        let (sender, target) = (vc.sender, vc.new_view);
        if target < self.view || (target == self.view && !self.view_changing) {
            self.help_laggard(now, sender, target, vc.stable.seq);
            return;
        }
        // Keep only each sender's latest view change (bounded memory).
        for per_view in self.view_changes.values_mut() {
            per_view.remove(&sender);
        }
        self.view_changes.retain(|_, v| !v.is_empty());
        self.view_changes
            .entry(target)
            .or_default()
            .insert(sender, (m, vc));
        // Rule 8, idle join: a replica with nothing outstanding follows a view change to the
        // view just above its own. It loses nothing by it, and a replica that moved up alone (its
        // view change raced a new view it then had to refuse) cannot come back down.
        if !self.view_changing && target == self.view + 1 && !self.has_outstanding_work() {
            self.start_view_change(now, target);
            return;
        }
        if !self.maybe_join(now) {
            self.maybe_send_new_view(now);
        }
    }

    fn help_laggard(&mut self, now: u64, to: ReplicaId, their_view: u64, their_stable: u64) {
        // Once per view asked about and per timeout: the help may be lost (the laggard asks
        // again after its timeout), and a replica that keeps asking gets one answer per timeout.
        if let Some((view, at)) = self.helped.get(&to) {
            if *view == their_view && now < at + self.view_change_timeout() {
                return;
            }
        }
        self.helped.insert(to, (their_view, now));
        if their_stable < self.stable.seq {
            for m in self.stable.proof.clone() {
                self.send(to, m);
            }
        }
        if let Some(nv) = self.new_view_msg.clone() {
            self.send(to, nv);
        }
    }

    fn maybe_send_new_view(&mut self, now: u64) {
        let v = self.view;
        if !self.view_changing || self.cfg.primary(v) != self.cfg.me {
            return;
        }
        let Some(vcs) = self.view_changes.get(&v) else {
            return;
        };
        if vcs.len() < self.cfg.quorum() {
            return;
        }
        let chosen: Vec<(v1::PbftMessage, VerifiedViewChange)> =
            vcs.values().take(self.cfg.quorum()).cloned().collect();
        let verified: Vec<VerifiedViewChange> = chosen.iter().map(|(_, vc)| vc.clone()).collect();
        let plan = plan(&verified);
        let pre_prepares: Vec<v1::PbftMessage> = plan
            .proposals
            .iter()
            .map(|(seq, (digest, batch))| {
                self.sign(
                    Kind::PrePrepare(v1::PrePrepare {
                        view: v,
                        seq: *seq,
                        digest: digest.as_bytes().to_vec(),
                    }),
                    Some(batch.clone()),
                )
            })
            .collect();
        let nv = self.sign(
            Kind::NewView(v1::NewView {
                view: v,
                view_changes: chosen.into_iter().map(|(m, _)| m).collect(),
                pre_prepares: pre_prepares.clone(),
            }),
            None,
        );
        self.broadcast(nv.clone());
        self.enter_new_view(now, v, plan, pre_prepares, nv);
    }

    fn on_new_view(&mut self, now: u64, m: v1::PbftMessage, app: &impl Application) {
        let Some(Kind::NewView(nv)) = &m.kind else {
            return;
        };
        if nv.view < self.view || (nv.view == self.view && !self.view_changing) {
            return;
        }
        let (v, plan, pre_prepares) = match verify_new_view(&self.cfg, &self.verifier, &m) {
            Ok(x) => x,
            Err(e) => {
                self.refuse(Some(m.replica), "new view", claimed_slot(&m), e);
                return;
            }
        };
        self.enter_new_view(now, v, plan, pre_prepares, m);
        let early = std::mem::take(&mut self.early_pre_prepares);
        for pp in early {
            if let Some(Kind::PrePrepare(k)) = &pp.kind {
                if k.view == self.view && self.in_window(k.seq) {
                    self.accept_pre_prepare(now, pp, app);
                }
            }
        }
    }

    fn enter_new_view(
        &mut self,
        now: u64,
        v: u64,
        plan: NewViewPlan,
        pre_prepares: Vec<v1::PbftMessage>,
        nv: v1::PbftMessage,
    ) {
        if self.view_changing {
            self.cancel_timer(Timer::ViewChange(self.view));
        }
        self.note(Note::NewView {
            view: v,
            primary: self.cfg.primary(v),
            reproposed: pre_prepares.len(),
        });
        self.view = v;
        self.view_changing = false;
        self.forget_views_up_to(v);
        self.new_view_msg = Some(nv);
        self.resend_checkpoints();
        self.dirty = true;
        self.view_changes = self.view_changes.split_off(&(v + 1));
        if plan.stable.seq > self.stable.seq {
            if self.exec_seq >= plan.stable.seq {
                self.adopt_stable(plan.stable.clone());
            } else {
                let entry = self.checkpoints.entry(plan.stable.seq).or_default();
                for m in &plan.stable.proof {
                    entry.insert(m.replica, (plan.stable.digest, m.clone()));
                }
                self.check_stable(now, plan.stable.seq);
            }
        }
        let mut max_seq = plan.stable.seq;
        for pp in pre_prepares {
            let Some(Kind::PrePrepare(k)) = &pp.kind else {
                continue;
            };
            max_seq = max_seq.max(k.seq);
            if k.seq <= self.stable.seq {
                continue;
            }
            let (Ok(d), Some(batch)) = (digest_field(&k.digest), pp.batch.clone()) else {
                continue;
            };
            let seq = k.seq;
            let slot = self.slots.entry(seq).or_default();
            slot.batches.insert(d, batch);
            slot.pre_prepare = Some((v, d, pp));
            self.touch(seq);
            if self.cfg.primary(v) != self.cfg.me {
                self.send_prepare(v, seq, d);
            }
        }
        self.next_seq = max_seq.max(self.exec_seq);
        self.recompute_in_flight();
        let seqs: Vec<u64> = self
            .slots
            .range(self.stable.seq + 1..)
            .map(|(s, _)| *s)
            .collect();
        for s in seqs {
            self.check_prepared(s);
        }
        self.update_progress_timer(now);
    }

    fn recompute_in_flight(&mut self) {
        let view = self.view;
        self.in_flight.clear();
        for (seq, slot) in self.slots.range(self.exec_seq + 1..) {
            if slot.accepted_in(view).is_none() {
                continue;
            }
            if let Some(batch) = slot.accepted_batch() {
                for item in &batch.items {
                    self.in_flight.insert(item_id(item), *seq);
                }
            }
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

mod view_sync;

#[cfg(test)]
mod tests;
