//! Rules 8, 9 and 12: view changes, the new view and help for laggards.

use super::*;

impl<S: Signer, V: Verifier> Replica<S, V> {
    pub(super) fn start_view_change(&mut self, now: u64, target: u64) {
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
    pub(super) fn resend_checkpoints(&mut self) {
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
    pub(super) fn maybe_join(&mut self, now: u64) -> bool {
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

    pub(super) fn on_view_change(&mut self, now: u64, m: v1::PbftMessage) {
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

    pub(super) fn help_laggard(
        &mut self,
        now: u64,
        to: ReplicaId,
        their_view: u64,
        their_stable: u64,
    ) {
        // One answer per peer and timeout: the help may be lost (the laggard asks again after
        // its timeout), and a replica that keeps asking gets one answer per timeout. Within the
        // timeout only a higher view than the one last answered is answered: an honest
        // laggard's view only rises, while a Byzantine replica cycling through old views would
        // otherwise get a stable proof and a new view (up to n + 1 messages) for each message it
        // sends (simulator seed 178124: a message storm that never ended).
        if let Some((view, at)) = self.helped.get(&to) {
            let repeat = if self.cfg.mutant(Mutant::HelpEveryOldView) {
                their_view == *view
            } else {
                their_view <= *view
            };
            if repeat && now < at + self.view_change_timeout() {
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

    pub(super) fn maybe_send_new_view(&mut self, now: u64) {
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

    pub(super) fn on_new_view(&mut self, now: u64, m: v1::PbftMessage, app: &impl Application) {
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

    pub(super) fn enter_new_view(
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
        self.new_view_dirty = true;
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

    pub(super) fn recompute_in_flight(&mut self) {
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
