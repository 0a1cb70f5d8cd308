//! What comes in: submitted items, timers, messages (proposals checked here, rule 1), and block
//! sync.

use super::*;

impl<S: Signer, V: Verifier> Engine<S, V> {
    pub(super) fn on_submit(&mut self, now: u64, item: Vec<u8>, app: &impl Application) {
        let id = item_id(&item);
        if self.pending.contains_key(&id) || self.pending.len() >= MAX_PENDING {
            return;
        }
        if app.already_final(&item) || app.validate_item(&item).is_err() {
            return;
        }
        self.pending.insert(id, (item, now));
        self.pending_order.insert((now, id), ());
        self.arm_work_timers(now);
    }

    /// When work becomes due: now (a full block or evidence), at the block interval of the
    /// oldest pending item, or never (nothing pending).
    pub(super) fn work_due_at(&self, now: u64) -> Option<u64> {
        if !self.evidence_pool.is_empty() || self.pending.len() >= self.params().max_block_items {
            return Some(now);
        }
        self.pending_order
            .keys()
            .next()
            .map(|(arrival, _)| arrival + self.params().block_interval_ms)
    }

    pub(super) fn arm_work_timers(&mut self, now: u64) {
        let Some(due) = self.work_due_at(now) else {
            return;
        };
        let (h, r) = (self.height(), self.round);
        let me_proposer = self.chain.registry.proposer(h, r) == self.cfg.me;
        if me_proposer
            && !self.sent_proposals.contains_key(&r)
            && due > now
            && self.produce_at != Some(due)
        {
            self.produce_at = Some(due);
            self.arm(Timer::Produce, due);
        }
        let t = Timer::Propose {
            height: h,
            round: r,
        };
        if self.is_auditor() && self.step == Step::Propose && !self.armed.contains(&t) {
            self.armed.insert(t);
            let at = due.max(now) + self.params().slot_ms + self.round_extra(r);
            self.arm(t, at);
        }
    }

    pub(super) fn on_timer(&mut self, now: u64, t: Timer, app: &impl Application) {
        let h = self.height();
        match t {
            Timer::Propose { height, round }
                if height == h
                    && round == self.round
                    && self.step == Step::Propose
                    && self.is_auditor() =>
            {
                self.cast(DposVoteKind::Prevote, None, None);
                self.step = Step::Prevote;
            }
            Timer::Prevote { height, round }
                if height == h
                    && round == self.round
                    && self.step == Step::Prevote
                    && self.is_auditor() =>
            {
                self.cast(DposVoteKind::Precommit, None, None);
                self.step = Step::Precommit;
            }
            Timer::Precommit { height, round } if height == h && round == self.round => {
                self.enter_round(round + 1, now, app);
            }
            Timer::Produce => {
                self.produce_at = None;
                self.maybe_propose(now, app);
            }
            Timer::Resend => {
                self.resend();
                self.arm(Timer::Resend, now + self.params().resend_ms);
            }
            Timer::Sync => self.sync_outstanding = false,
            _ => {}
        }
    }

    pub(super) fn on_message(
        &mut self,
        now: u64,
        from: u32,
        msg: v1::DposMessage,
        app: &impl Application,
    ) {
        let Some(kind) = &msg.kind else { return };
        let height = match kind {
            Kind::Proposal(p) => p.proposal.as_ref().map(|p| p.height),
            Kind::Vote(v) => Some(v.height),
            Kind::Status(s) => {
                // The peer has finalized beyond what this node has: ask it for the blocks.
                if s.height > self.chain.height {
                    self.request_sync(now, from);
                }
                return;
            }
        };
        let Some(height) = height else { return };
        if height < self.height() {
            match kind {
                Kind::Vote(v) => self.on_late_precommit(v),
                Kind::Proposal(p) => self.on_late_proposal(p),
                Kind::Status(_) => {}
            }
            return;
        }
        if height > self.height() {
            let from_peer = self.future.iter().filter(|(f, _)| *f == from).count();
            if height == self.height() + 1
                && self.future.len() < MAX_FUTURE
                && from_peer < MAX_FUTURE_PER_PEER
                && self.authentic(&msg)
            {
                self.future.push((from, msg));
            }
            return;
        }
        match msg.kind {
            Some(Kind::Proposal(p)) => self.on_proposal(now, from, p, app),
            Some(Kind::Vote(v)) => self.on_vote(from, v),
            _ => {}
        }
    }

    /// Keeps a precommit for the last final block, in its certificate's round, that the
    /// certificate lacks (see `late_precommits`); anything else for an old height is dropped.
    pub(super) fn on_late_precommit(&mut self, v: &v1::DposVote) {
        if v.height != self.chain.height
            || v.kind != DposVoteKind::Precommit as i32
            || v.block_hash[..] != self.chain.last_hash[..]
            || self.late_precommits.contains_key(&v.voter)
            || !self.chain.certifier_atn.contains(&v.voter)
        {
            return;
        }
        let Ok(cert) = v1::DposFinalityCertificate::decode_canonical(&self.chain.last_certificate)
        else {
            return;
        };
        if v.round != cert.round || cert.precommits.iter().any(|s| s.validator == v.voter) {
            return;
        }
        let Some(identity) = self.chain.registry.identity(v.voter).copied() else {
            return;
        };
        if verify_vote(v, &self.cfg.chain_id, &identity, &self.verifier).is_ok() {
            self.late_precommits.insert(v.voter, v.signature.clone());
        }
    }

    /// A proposal for a recent final height: evidence if it is a twin of one held for that
    /// slot (same proposer, another block) and carries the proposer's signature; anything else
    /// is dropped. At most four are kept per slot, as for the current height.
    pub(super) fn on_late_proposal(&mut self, msg: &v1::DposProposalMessage) {
        let Some(p) = &msg.proposal else { return };
        let Some((_, held)) = self.recent_proposals.iter().find(|(h, _)| *h == p.height) else {
            return;
        };
        let slot: Vec<&v1::DposProposal> = held
            .iter()
            .filter(|q| q.round == p.round && q.proposer == p.proposer)
            .collect();
        let Some(first) = slot.first().copied().cloned() else {
            return;
        };
        if slot.len() >= 4 || slot.iter().any(|q| q.block_hash == p.block_hash) {
            return;
        }
        let Some(identity) = self.chain.registry.identity(p.proposer).copied() else {
            return;
        };
        if verify_proposal(p, &self.cfg.chain_id, &identity, &self.verifier).is_err() {
            return;
        }
        if let Some((_, held)) = self
            .recent_proposals
            .iter_mut()
            .find(|(h, _)| *h == p.height)
        {
            held.push(p.clone());
        }
        self.evidence_pool_insert(dpos_evidence::Kind::Equivocation(v1::DposEquivocation {
            first: Some(first),
            second: Some(p.clone()),
        }));
        self.relay_twin(msg.clone());
    }

    /// Relays an equivocator's twin proposal when this node first holds it. An equivocator
    /// sends each twin to part of the network, so only some nodes can see the offence, and the
    /// producers that pack evidence may not be among them; relayed, the twin reaches everyone
    /// (DPoS long-run seeds 67126 and 99687: three equivocations went unpunished). Each node
    /// relays each twin once, at most four per slot.
    fn relay_twin(&mut self, twin: v1::DposProposalMessage) {
        self.out.push(Action::Broadcast(v1::DposMessage {
            kind: Some(Kind::Proposal(twin)),
        }));
    }

    /// Whether a message for the next height carries a valid signature of the institution it
    /// names. Its role there is checked when it is handled (roles may change with this height's
    /// block); identities do not.
    pub(super) fn authentic(&self, msg: &v1::DposMessage) -> bool {
        match &msg.kind {
            Some(Kind::Proposal(pm)) => pm.proposal.as_ref().is_some_and(|p| {
                self.chain.registry.identity(p.proposer).is_some_and(|id| {
                    verify_proposal(p, &self.cfg.chain_id, id, &self.verifier).is_ok()
                })
            }),
            Some(Kind::Vote(v)) => {
                self.chain.registry.identity(v.voter).is_some_and(|id| {
                    verify_vote(v, &self.cfg.chain_id, id, &self.verifier).is_ok()
                })
            }
            _ => false,
        }
    }

    /// Asks for the missing final blocks, from each peer that claims to have them in turn, so a
    /// peer that claims but does not serve (Byzantine) cannot stall catch-up.
    pub(super) fn request_sync(&mut self, now: u64, peer: u32) {
        if peer == self.cfg.me {
            return;
        }
        self.sync_peers.insert(peer);
        if self.sync_outstanding {
            return;
        }
        let peer = self
            .sync_peers
            .range(self.last_sync_peer + 1..)
            .next()
            .or_else(|| self.sync_peers.iter().next())
            .copied()
            .unwrap_or(peer);
        self.last_sync_peer = peer;
        self.sync_outstanding = true;
        self.out.push(Action::RequestSync {
            from_height: self.chain.height + 1,
            peer,
        });
        self.arm(Timer::Sync, now + self.params().slot_ms);
    }

    pub(super) fn on_proposal(
        &mut self,
        now: u64,
        from: u32,
        msg: v1::DposProposalMessage,
        app: &impl Application,
    ) {
        let (Some(p), Some(block)) = (msg.proposal, msg.block) else {
            self.refuse(from, "proposal", (0, 0), "no proposal or no block".into());
            return;
        };
        let slot = (p.height, p.round);
        // Relays and re-sends repeat proposals: skip one already held before checking it again.
        if self.proposals.get(&p.round).is_some_and(|l| {
            l.iter()
                .any(|(q, _)| q.signature == p.signature && q.block_hash == p.block_hash)
        }) {
            return;
        }
        let expected = self.chain.registry.proposer(p.height, p.round);
        if p.proposer != expected {
            let reason = format!("from {}, the slot is {expected}'s", p.proposer);
            return self.refuse(from, "proposal", slot, reason);
        }
        if p.round > self.round + MAX_ROUNDS_AHEAD {
            let reason = format!("round too far ahead of {}", self.round);
            return self.refuse(from, "proposal", slot, reason);
        }
        let Some(identity) = self.chain.registry.identity(p.proposer).copied() else {
            return self.refuse(from, "proposal", slot, "unknown proposer".into());
        };
        let hash = match verify_proposal(&p, &self.cfg.chain_id, &identity, &self.verifier) {
            Ok(h) => h,
            Err(e) => return self.refuse(from, "proposal", slot, e.to_string()),
        };
        if let Some(list) = self.proposals.get(&p.round) {
            if list.iter().any(|(_, h)| *h == hash) || list.len() >= 4 {
                return;
            }
            let e = dpos_evidence::Kind::Equivocation(v1::DposEquivocation {
                first: Some(list[0].0.clone()),
                second: Some(p.clone()),
            });
            self.evidence_pool_insert(e);
            self.relay_twin(v1::DposProposalMessage {
                proposal: Some(p.clone()),
                block: Some(block.clone()),
            });
        }
        let Some(header) = &block.header else {
            return self.refuse(from, "proposal", slot, "block without header".into());
        };
        if block_hash(header) != hash {
            // Tampered in relay: not what the proposer signed.
            let reason = "the block is not the one the proposer signed".into();
            return self.refuse(from, "proposal", slot, reason);
        }
        let pol = pol_round(&p);
        if pol.is_some_and(|vr| vr >= p.round) {
            let reason = "proof-of-lock round not below the round".into();
            return self.refuse(from, "proposal", slot, reason);
        }
        if pol.is_none() && header.producer != p.proposer {
            let reason = "a fresh proposal must be the proposer's own block".into();
            return self.refuse(from, "proposal", slot, reason);
        }
        if header.timestamp_ms > now + self.params().max_clock_drift_ms {
            // A re-send brings it back once it is no longer from the future.
            let reason = format!("timestamp {} is ahead of this clock", header.timestamp_ms);
            return self.refuse(from, "proposal", slot, reason);
        }
        if !self.blocks.contains_key(&hash) {
            match self
                .chain
                .check_block(&block, &self.cfg.params, app, &self.verifier)
            {
                Ok(checked) => {
                    self.blocks
                        .insert(hash, (block.clone(), Verdict::Valid(checked)));
                }
                Err(BlockFault::Invalid(_)) => {
                    let content = v1::DposBlockContent {
                        header: block.header.clone(),
                        items: block.items.clone(),
                    };
                    self.evidence_pool_insert(dpos_evidence::Kind::InvalidBlock(
                        v1::DposInvalidBlock {
                            proposal: Some(p.clone()),
                            content: Some(content),
                        },
                    ));
                    self.blocks.insert(hash, (block.clone(), Verdict::Invalid));
                }
                Err(BlockFault::Unacceptable(r)) => return self.refuse(from, "proposal", slot, r),
            }
        }
        self.proposals
            .entry(p.round)
            .or_default()
            .push((p.clone(), hash));
        // Auditors relay proposals, so a representative that shows different blocks to
        // different nodes is seen doing it.
        if self.is_auditor() && self.relayed.insert(p.round) {
            self.out.push(Action::Broadcast(v1::DposMessage {
                kind: Some(Kind::Proposal(v1::DposProposalMessage {
                    proposal: Some(p.clone()),
                    block: Some(block),
                })),
            }));
        }
        self.check_verdicts_against(hash);
    }

    pub(super) fn on_sync(
        &mut self,
        now: u64,
        from: u32,
        mut blocks: Vec<v1::DposFinalizedBlock>,
        app: &impl Application,
    ) {
        self.sync_outstanding = false;
        blocks.sort_by_key(|b| b.certificate.as_ref().map_or(0, |c| c.height));
        for fb in blocks {
            let (Some(block), Some(cert)) = (&fb.block, &fb.certificate) else {
                return self.refuse(
                    from,
                    "synced block",
                    (0, 0),
                    "no block or no certificate".into(),
                );
            };
            if cert.height != self.height() {
                continue;
            }
            let at = (cert.height, cert.round);
            let hash = match self.chain.check_certificate(cert, &self.verifier) {
                Ok(h) => h,
                Err(e) => {
                    return self.refuse(from, "synced block", at, format!("certificate: {e}"))
                }
            };
            let checked = match self
                .chain
                .check_block(block, &self.cfg.params, app, &self.verifier)
            {
                Ok(c) => c,
                Err(e) => return self.refuse(from, "synced block", at, e.to_string()),
            };
            if checked.hash != hash {
                let reason = "the certificate is for another block".into();
                return self.refuse(from, "synced block", at, reason);
            }
            self.finalize(now, block.clone(), checked, cert.clone(), app);
        }
    }

    /// Reports a refused input (rule: nothing of it is kept).
    pub(super) fn refuse(&mut self, from: u32, what: &'static str, at: (u64, u64), reason: String) {
        self.out.push(Action::Note(Note::Refused {
            from,
            what,
            height: at.0,
            round: at.1,
            reason,
        }));
    }
}
