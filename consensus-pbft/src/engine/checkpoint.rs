//! Rules 7 and 11: checkpoints, the stable checkpoint, and state transfer.

use super::*;

impl<S: Signer, V: Verifier> Replica<S, V> {
    pub(super) fn on_checkpoint(&mut self, now: u64, m: v1::PbftMessage, c: v1::Checkpoint) {
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

    pub(super) fn check_stable(&mut self, now: u64, seq: u64) {
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
    pub(super) fn adopt_stable(&mut self, claim: CheckpointClaim) {
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

    pub(super) fn request_transfer(&mut self, now: u64) {
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
    pub(super) fn request_catch_up(&mut self) {
        if self.transfer_target.is_none() {
            self.effects.push(Action::RequestStateTransfer {
                from_seq: self.exec_seq + 1,
                target_seq: self.exec_seq + 1,
            });
        }
    }

    pub(super) fn on_state_transfer(
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
}
