//! Rule 3: the primary proposes batches of pending items.

use super::*;

impl<S: Signer, V: Verifier> Replica<S, V> {
    /// Drops pending items the ledger has executed (a lookup per item: only on the progress
    /// timeout, not on every proposal).
    pub(super) fn drop_executed_pending(&mut self, app: &impl Application) {
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

    pub(super) fn try_propose(&mut self, now: u64, app: &impl Application) {
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
}
