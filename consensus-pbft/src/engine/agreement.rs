//! Rules 4-6: pre-prepare, prepare and commit at one sequence number, and execution in order.

use super::*;

impl<S: Signer, V: Verifier> Replica<S, V> {
    /// Rule 4.
    pub(super) fn on_pre_prepare(
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

    pub(super) fn accept_pre_prepare(
        &mut self,
        now: u64,
        m: v1::PbftMessage,
        app: &impl Application,
    ) -> bool {
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
    pub(super) fn send_prepare(&mut self, view: u64, seq: u64, digest: Hash32) {
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

    pub(super) fn on_vote(
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
    pub(super) fn check_prepared(&mut self, seq: u64) {
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

    pub(super) fn check_committed(&mut self, seq: u64) {
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
    pub(super) fn execute_ready(&mut self, now: u64, app: &impl Application) {
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
    pub(super) fn apply(
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

    pub(super) fn after_progress(&mut self, now: u64) {
        // Restart the progress clock from this execution.
        if self.progress_armed {
            self.progress_armed = false;
            self.cancel_timer(Timer::Progress);
        }
        self.update_progress_timer(now);
    }
}
