//! What this node produces: proposals and their blocks (rule 1), its votes, final blocks, and
//! re-sends.

use super::*;

impl<S: Signer, V: Verifier> Engine<S, V> {
    pub(super) fn maybe_propose(&mut self, now: u64, app: &impl Application) {
        let (h, r) = (self.height(), self.round);
        if self.chain.registry.proposer(h, r) != self.cfg.me || self.sent_proposals.contains_key(&r)
        {
            return;
        }
        let (block, hash, pol) = if let Some((vr, hash)) = self.valid {
            let Some((block, _)) = self.blocks.get(&hash) else {
                return;
            };
            (block.clone(), hash, Some(vr))
        } else {
            let due = self.work_due_at(now);
            if r == 0 && due.is_none_or(|d| d > now) {
                return;
            }
            let block = self.build_block(now, app);
            let Some(header) = &block.header else { return };
            let hash = block_hash(header);
            match self
                .chain
                .check_block(&block, &self.cfg.params, app, &self.verifier)
            {
                Ok(checked) => {
                    self.blocks
                        .insert(hash, (block.clone(), Verdict::Valid(checked)));
                }
                Err(_) => return,
            }
            (block, hash, None)
        };
        if let Some(vr) = pol {
            self.broadcast_pol(vr, hash);
        }
        let p = sign_proposal(
            &self.signer,
            &self.cfg.chain_id,
            h,
            r,
            &hash,
            pol,
            self.cfg.me,
        );
        self.sent_proposals.insert(r, p.clone());
        let list = self.proposals.entry(r).or_default();
        if list.is_empty() {
            list.push((p.clone(), hash));
        }
        self.dirty = true;
        self.out.push(Action::Broadcast(v1::DposMessage {
            kind: Some(Kind::Proposal(v1::DposProposalMessage {
                proposal: Some(p),
                block: Some(block),
            })),
        }));
    }

    pub(super) fn build_block(&mut self, now: u64, app: &impl Application) -> v1::DposBlock {
        let h = self.height();
        let max = self.params().max_block_items;
        let mut items = Vec::new();
        let mut stale = Vec::new();
        for (arrival, id) in self.pending_order.keys() {
            if items.len() >= max {
                break;
            }
            let (item, _) = &self.pending[id];
            if app.already_final(item) || app.validate_item(item).is_err() {
                stale.push((*arrival, *id));
            } else {
                items.push(item.clone());
            }
        }
        for k in stale {
            self.pending_order.remove(&k);
            self.pending.remove(&k.1);
        }
        let mut evidence = Vec::new();
        let mut evidence_bytes = 0;
        let mut useless = Vec::new();
        for (id, e) in &self.evidence_pool {
            if evidence.len() >= self.params().max_block_evidence {
                break;
            }
            let size = e.canonical_len();
            if evidence_bytes + size > self.params().max_block_evidence_bytes {
                // Too big to join what is packed already: it waits for a later block.
                continue;
            }
            let chain = &self.chain;
            let verdict = verify_evidence(
                e,
                &chain.chain_id,
                &chain.registry,
                h,
                &self.cfg.params,
                app,
                &self.verifier,
            );
            match verdict {
                Ok(c) if !self.chain.registry.evidence_applied(&c.id) => {
                    evidence_bytes += size;
                    evidence.push(e.clone());
                }
                _ => useless.push(*id),
            }
        }
        for id in useless {
            self.evidence_pool.remove(&id);
        }
        let parent_certificate = if self.chain.height == 0 {
            None
        } else {
            v1::DposFinalityCertificate::decode_canonical(&self.chain.last_certificate)
                .ok()
                .map(|mut cert| {
                    // Every precommit held, the late ones too: each earns its auditor's credit.
                    for (voter, signature) in &self.late_precommits {
                        cert.precommits.push(v1::IndexedSignature {
                            validator: *voter,
                            signature: signature.clone(),
                        });
                    }
                    cert.precommits.sort_by_key(|s| s.validator);
                    cert
                })
        };
        let extras = v1::DposBlockExtras {
            parent_certificate,
            evidence,
        };
        let header = v1::DposBlockHeader {
            chain_id: self.cfg.chain_id.clone(),
            height: h,
            parent_hash: self.chain.last_hash.to_vec(),
            timestamp_ms: now.max(self.chain.last_timestamp_ms + 1),
            producer: self.cfg.me,
            items_root: items_root(&items).as_bytes().to_vec(),
            item_count: items.len() as u32,
            extras_digest: extras_digest(Some(&extras)).as_bytes().to_vec(),
        };
        v1::DposBlock {
            header: Some(header),
            items,
            extras: Some(extras),
        }
    }

    /// Signs (once per round and kind) and sends a vote; records it as received.
    pub(super) fn cast(
        &mut self,
        kind: DposVoteKind,
        block: Option<Hash32>,
        rejected: Option<Hash32>,
    ) {
        let (h, r) = (self.height(), self.round);
        if self.sent_votes.contains_key(&(r, kind_of(kind))) {
            return;
        }
        let vote = sign_vote(
            &self.signer,
            unsigned_vote(
                &self.cfg.chain_id,
                h,
                r,
                kind,
                block.as_ref(),
                rejected.as_ref(),
                self.cfg.me,
            ),
        );
        self.sent_votes.insert((r, kind_of(kind)), vote.clone());
        self.dirty = true;
        self.record_vote(
            vote.clone(),
            VoteValue {
                kind,
                block,
                rejected,
            },
        );
        self.out.push(Action::Broadcast(v1::DposMessage {
            kind: Some(Kind::Vote(vote)),
        }));
    }

    pub(super) fn finalize(
        &mut self,
        now: u64,
        block: v1::DposBlock,
        checked: CheckedBlock,
        cert: v1::DposFinalityCertificate,
        app: &impl Application,
    ) {
        let state = self
            .chain
            .apply_block(&block, &checked, &cert, &self.cfg.params, app);
        let held = std::mem::take(&mut self.proposals);
        self.recent_proposals.push_back((
            self.height(),
            held.into_values().flatten().map(|(p, _)| p).collect(),
        ));
        if self.recent_proposals.len() > RECENT_HEIGHTS {
            self.recent_proposals.pop_front();
        }
        for item in &block.items {
            let id = item_id(item);
            if let Some((_, arrival)) = self.pending.remove(&id) {
                self.pending_order.remove(&(arrival, id));
            }
        }
        self.out_final.push(Action::Finalize {
            block: Box::new(v1::DposFinalizedBlock {
                block: Some(block),
                certificate: Some(cert),
            }),
            state: Box::new(state.clone()),
        });
        self.chain = state;
        let h = self.height();
        let chain = &self.chain;
        let params = &self.cfg.params;
        let verifier = &self.verifier;
        self.evidence_pool.retain(|_, e| {
            verify_evidence(
                e,
                &chain.chain_id,
                &chain.registry,
                h,
                params,
                app,
                verifier,
            )
            .is_ok_and(|c| !chain.registry.evidence_applied(&c.id))
        });
        self.round = 0;
        self.step = Step::Propose;
        self.locked = None;
        self.valid = None;
        self.blocks.clear();
        self.proposals.clear();
        self.prevotes.clear();
        self.precommits.clear();
        self.sent_proposals.clear();
        self.sent_votes.clear();
        self.relayed.clear();
        self.armed.clear();
        self.sync_peers.clear();
        self.late_precommits.clear();
        self.dirty = true;
        self.enter_round(0, now, app);
        for (from, msg) in std::mem::take(&mut self.future) {
            self.on_message(now, from, msg, app);
        }
    }

    /// Sends the prevotes that justify `hash` at round `vr` (a proof of lock), with the
    /// proposal, so every node can check a re-proposal or unlock.
    pub(super) fn broadcast_pol(&mut self, vr: u64, hash: Hash32) {
        let mut msgs = Vec::new();
        let proposal = self
            .proposals
            .get(&vr)
            .and_then(|l| l.iter().find(|(_, h)| *h == hash));
        if let Some((p, h)) = proposal {
            if let Some((block, _)) = self.blocks.get(h) {
                msgs.push(Kind::Proposal(v1::DposProposalMessage {
                    proposal: Some(p.clone()),
                    block: Some(block.clone()),
                }));
            }
        }
        if let Some(votes) = self.prevotes.get(&vr) {
            for (v, value) in votes.values().flatten() {
                if value.block == Some(hash) {
                    msgs.push(Kind::Vote(v.clone()));
                }
            }
        }
        for kind in msgs {
            self.out
                .push(Action::Broadcast(v1::DposMessage { kind: Some(kind) }));
        }
    }

    /// Re-sends what this node signed in the current round and its latest proposal relay, and
    /// announces its final height: lost messages are recovered once the network delivers again.
    /// A node that holds a lock or a valid block also re-sends its proof, so a proposer that
    /// missed it learns what to re-propose and locked auditors can be unlocked.
    pub(super) fn resend(&mut self) {
        let mut proofs: Vec<(u64, Hash32)> = self.locked.into_iter().chain(self.valid).collect();
        proofs.dedup();
        for (vr, hash) in proofs {
            if vr < self.round {
                self.broadcast_pol(vr, hash);
            }
        }
        let r = self.round;
        let mut msgs = Vec::new();
        for ((round, _), v) in &self.sent_votes {
            if *round + 1 >= r {
                msgs.push(v1::DposMessage {
                    kind: Some(Kind::Vote(v.clone())),
                });
            }
        }
        // Every precommit held for the round just left, not only this node's own: liveness
        // assumes what one honest node receives, all eventually do. A byzantine auditor that
        // sent its precommit to one node alone let that node time out into the next round
        // while the others, short of a quorum of precommits, waited in the old one for ever
        // (DPoS long-run seed 89413). Relayed, the same precommits time them out too.
        if let Some(book) = r.checked_sub(1).and_then(|prev| self.precommits.get(&prev)) {
            let me = self.cfg.me;
            for (_, votes) in book.iter().filter(|(voter, _)| **voter != me) {
                for (v, _) in votes {
                    msgs.push(v1::DposMessage {
                        kind: Some(Kind::Vote(v.clone())),
                    });
                }
            }
        }
        let relay = self
            .sent_proposals
            .get(&r)
            .map(|p| p.round)
            .or_else(|| (self.is_auditor() && self.proposals.contains_key(&r)).then_some(r));
        if let Some(round) = relay {
            if let Some((p, hash)) = self.proposals.get(&round).and_then(|l| l.first()) {
                if let Some((block, _)) = self.blocks.get(hash) {
                    msgs.push(v1::DposMessage {
                        kind: Some(Kind::Proposal(v1::DposProposalMessage {
                            proposal: Some(p.clone()),
                            block: Some(block.clone()),
                        })),
                    });
                }
            }
        }
        msgs.push(v1::DposMessage {
            kind: Some(Kind::Status(v1::DposStatus {
                height: self.chain.height,
            })),
        });
        for m in msgs {
            self.out.push(Action::Broadcast(m));
        }
    }
}
