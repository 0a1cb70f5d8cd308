//! Keeping the replicas in one view: complaints before a view change (rule 8) and moving up to a
//! view that more than f replicas work in (rule 13). Views only ever move up; these rules decide
//! when a replica may move, so that one slow or cut-off replica never leaves the others behind
//! and one that fell behind catches up.

use medchain_crypto::validators::{Signer, Verifier};
use medchain_proto::v1::{self, pbft_message::Kind};

use super::Replica;
use crate::event::{Action, Note, Timer};
use crate::ReplicaId;

/// Batches' worth of pending items re-forwarded with a complaint.
const FORWARD_BATCHES: usize = 4;

impl<S: Signer, V: Verifier> Replica<S, V> {
    /// Rule 8, first step: the progress timer expired with work outstanding. Say so, keep working
    /// in this view, and leave it only once more than f replicas say the same.
    pub(super) fn complain(&mut self, now: u64) {
        let target = self.view + 1;
        self.note(Note::Complaint { view: self.view });
        // The primary may not know the items at all: without them, complaints from this replica
        // alone would never lead anywhere.
        let items: Vec<Vec<u8>> = self
            .pending
            .iter()
            .filter(|p| !self.in_flight.contains_key(&p.id))
            .take(FORWARD_BATCHES * self.cfg.max_batch)
            .map(|p| p.item.clone())
            .collect();
        if !items.is_empty() {
            self.effects.push(Action::Forward(items));
        }
        let msg = self.sign(Kind::Complaint(v1::Complaint { new_view: target }), None);
        self.broadcast(msg.clone());
        self.complaints.insert(self.cfg.me, (target, msg));
        // Complain again after another timeout if nothing executes meanwhile (the message may
        // have been lost).
        self.progress_armed = true;
        let at = now + self.view_change_timeout();
        self.set_timer(Timer::Progress, at);
        self.maybe_leave_on_complaints(now);
    }

    pub(super) fn on_complaint(&mut self, now: u64, m: v1::PbftMessage, target: u64) {
        let sender = m.replica;
        if target <= self.view {
            // The sender is behind: it timed out in a view we have left. Help it catch up.
            self.help_laggard(now, sender, target, 0);
            return;
        }
        self.complaints.insert(sender, (target, m));
        self.maybe_leave_on_complaints(now);
    }

    /// More than f complaints to leave this view: at least one honest replica sees no progress.
    fn maybe_leave_on_complaints(&mut self, now: u64) {
        if self.view_changing {
            return;
        }
        let target = self.view + 1;
        let proof: Vec<v1::PbftMessage> = self
            .complaints
            .values()
            .filter(|(t, _)| *t == target)
            .map(|(_, m)| m.clone())
            .collect();
        if proof.len() > self.cfg.f() {
            for m in &proof {
                self.broadcast(m.clone());
            }
            self.complaint_proof = proof;
            self.start_view_change(now, target);
        }
    }

    /// Rule 13: a replica in a lower view learns that more than f replicas (so at least one
    /// honest) work in view `view`, from their normal-case messages, and moves there.
    pub(super) fn note_higher_view(&mut self, now: u64, sender: ReplicaId, view: u64) {
        if view <= self.view {
            return;
        }
        let seen = self.seen_in_view.entry(sender).or_insert(view);
        *seen = (*seen).max(view);
        let mut views: Vec<u64> = self
            .seen_in_view
            .values()
            .copied()
            .filter(|v| *v > self.view)
            .collect();
        if views.len() <= self.cfg.f() {
            return;
        }
        // The highest view that more than f replicas have reached or passed.
        views.sort_unstable_by(|a, b| b.cmp(a));
        let target = views[self.cfg.f()];
        if target > self.view {
            self.start_view_change(now, target);
        }
    }

    /// Complaints and sightings that ask for view `v` or an older one are settled.
    pub(super) fn forget_views_up_to(&mut self, v: u64) {
        self.complaints.retain(|_, (t, _)| *t > v);
        self.complaint_proof.retain(|m| match &m.kind {
            Some(Kind::Complaint(c)) => c.new_view == v,
            _ => false,
        });
        self.seen_in_view.retain(|_, seen| *seen > v);
    }
}
