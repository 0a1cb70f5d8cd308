//! What the Byzantine institutions of the DPoS simulator send instead of what their engines say,
//! and the colluders' shared view (every block proposed and every prevote sent) they act on.

use super::*;

impl Sim<'_> {
    /// Adds what `msg` shows to the colluders' shared view.
    pub(super) fn observe(&mut self, msg: &v1::DposMessage) {
        match &msg.kind {
            Some(Kind::Proposal(p)) => {
                if let Some(block) = &p.block {
                    let hash = block_hash(&block.header.clone().unwrap_or_default());
                    self.seen_blocks
                        .entry(hash)
                        .or_insert_with(|| block.clone());
                }
            }
            Some(Kind::Vote(v)) if v.kind == v1::DposVoteKind::Prevote as i32 => {
                if let Ok(hash) = Hash32::from_slice(&v.block_hash) {
                    self.seen_prevotes
                        .entry((v.height, v.round, hash))
                        .or_default()
                        .insert(v.voter);
                }
            }
            _ => {}
        }
    }

    /// For a StalePol representative proposing at (height, round): the oldest earlier round in
    /// which a quorum prevoted one block, and that block.
    pub(super) fn stale_lock(
        &self,
        i: u32,
        height: u64,
        round: u64,
    ) -> Option<(u64, v1::DposBlock)> {
        let quorum = self.nodes[i as usize].state.quorum();
        self.seen_prevotes
            .range((height, 0, Hash32::ZERO)..(height, round, Hash32::ZERO))
            .find(|(_, voters)| voters.len() >= quorum)
            .and_then(|((_, r, hash), _)| Some((*r, self.seen_blocks.get(hash)?.clone())))
    }

    /// A StalePol re-proposal for the slot of `p` (a round after the first): the oldest block a
    /// quorum prevoted at this height, with that round as its proof-of-lock round.
    fn stale_reproposal(&self, i: u32, p: &v1::DposProposal) -> Option<v1::DposMessage> {
        let (vr, old) = self
            .stale_lock(i, p.height, p.round)
            .filter(|_| p.round > 0)?;
        let hash = block_hash(&old.header.clone().unwrap_or_default());
        let key = &self.keys[i as usize];
        let signed = sign_proposal(key, CHAIN, p.height, p.round, &hash, Some(vr), i);
        Some(v1::DposMessage {
            kind: Some(Kind::Proposal(v1::DposProposalMessage {
                proposal: Some(signed),
                block: Some(old),
            })),
        })
    }

    /// The LockSplitter's votes for a proposal of height 1 it received (see
    /// [`Behaviour::LockSplitter`]).
    pub(super) fn split_locks(&mut self, i: u32, p: &v1::DposProposal) {
        let Ok(hash) = Hash32::from_slice(&p.block_hash) else {
            return;
        };
        if pol_round(p).is_some() {
            return self.collude(i, p);
        }
        if self.split_fresh.contains(&hash) {
            return;
        }
        self.split_fresh.push(hash);
        let reg = &self.nodes[i as usize].state.registry;
        let honest = |x: &u32| self.nodes[*x as usize].behaviour.is_none();
        let auditors: Vec<u32> = reg.atn().iter().copied().filter(honest).collect();
        let reps: Vec<u32> = reg.rpn().iter().copied().filter(honest).collect();
        let (prevote_to, precommit_to) = match self.split_fresh.len() {
            1 => (auditors[..1].to_vec(), Vec::new()),
            2 => (auditors[1..].to_vec(), reps),
            _ => return,
        };
        let key = self.keys[i as usize].clone();
        for (kind, to) in [
            (v1::DposVoteKind::Prevote, prevote_to),
            (v1::DposVoteKind::Precommit, precommit_to),
        ] {
            let v = unsigned_vote(CHAIN, p.height, p.round, kind, Some(&hash), None, i);
            let msg = v1::DposMessage {
                kind: Some(Kind::Vote(sign_vote(&key, v))),
            };
            self.observe(&msg);
            for t in to {
                self.send(i, t, Wire::Dpos(Box::new(msg.clone())));
            }
        }
    }

    /// A Colluder auditor's extra votes for a proposal it received (see [`Behaviour::Colluder`]).
    pub(super) fn collude(&mut self, i: u32, p: &v1::DposProposal) {
        let Ok(hash) = Hash32::from_slice(&p.block_hash) else {
            return;
        };
        let key = self.keys[i as usize].clone();
        let vote = |round, kind| {
            let v = unsigned_vote(CHAIN, p.height, round, kind, Some(&hash), None, i);
            v1::DposMessage {
                kind: Some(Kind::Vote(sign_vote(&key, v))),
            }
        };
        let mut votes = vec![
            vote(p.round, v1::DposVoteKind::Prevote),
            vote(p.round, v1::DposVoteKind::Precommit),
        ];
        let everyone: Vec<u32> = (0..self.scn.n() as u32).filter(|x| *x != i).collect();
        let targets: Vec<Vec<u32>> = match pol_round(p) {
            Some(vr) => {
                votes.insert(0, vote(vr, v1::DposVoteKind::Prevote));
                vec![everyone.clone(); 3]
            }
            None => {
                // Its prevote to a random part of the honest auditors (so some lock and some do
                // not), its precommit to a random part of everyone (so a block can be final at
                // one node and not known final elsewhere).
                let auditors: Vec<u32> = self.nodes[i as usize]
                    .state
                    .registry
                    .atn()
                    .iter()
                    .copied()
                    .filter(|a| self.nodes[*a as usize].behaviour.is_none())
                    .collect();
                let prevote_to = auditors
                    .into_iter()
                    .filter(|_| self.rng.gen_bool(0.5))
                    .collect();
                let precommit_to = everyone
                    .iter()
                    .copied()
                    .filter(|_| self.rng.gen_bool(0.3))
                    .collect();
                vec![prevote_to, precommit_to]
            }
        };
        for (msg, to) in votes.into_iter().zip(targets) {
            self.observe(&msg);
            for t in to {
                self.send(i, t, Wire::Dpos(Box::new(msg.clone())));
            }
        }
    }

    /// Distorts what a Byzantine node sends.
    pub(super) fn misbehave(&mut self, i: u32, behaviour: Behaviour, msg: v1::DposMessage) {
        let n = self.scn.n() as u32;
        let others: Vec<u32> = (0..n).filter(|x| *x != i).collect();
        let (half_a, half_b) = others.split_at(others.len() / 2);
        let (half_a, half_b) = (half_a.to_vec(), half_b.to_vec());
        let key = self.keys[i as usize].clone();
        match (&msg.kind, behaviour) {
            (_, Behaviour::Silent) => {
                if let Some(Kind::Proposal(p)) = &msg.kind {
                    if let Some(p) = p.proposal.as_ref().filter(|p| p.proposer == i) {
                        self.strike(i, p.height, p.round);
                    }
                }
            }
            (Some(Kind::Proposal(pm)), Behaviour::LockSplitProposer)
                if pm
                    .proposal
                    .as_ref()
                    .is_some_and(|p| p.proposer == i && p.height == 1 && p.round > 0) =>
            {
                let p = pm.proposal.clone().unwrap_or_default();
                let block = pm.block.clone().unwrap_or_default();
                let out = if p.round == 1 {
                    // Always a fresh block of its own in round 1.
                    match pol_round(&p) {
                        None => msg,
                        Some(_) => forged_proposal(&key, i, &p, &block, false, 1),
                    }
                } else {
                    self.stale_reproposal(i, &p).unwrap_or(msg)
                };
                self.broadcast(i, &out);
            }
            (Some(Kind::Vote(v)), Behaviour::LockSplitter) if v.voter == i && v.height == 1 => {}
            (
                Some(Kind::Proposal(pm)),
                Behaviour::Equivocator
                | Behaviour::InvalidBlock
                | Behaviour::MultiProposer
                | Behaviour::StalePol,
            ) if pm.proposal.as_ref().is_some_and(|p| p.proposer == i) => {
                let p = pm.proposal.clone().unwrap_or_default();
                let block = pm.block.clone().unwrap_or_default();
                self.strike(i, p.height, p.round);
                match behaviour {
                    Behaviour::StalePol => match self.stale_reproposal(i, &p) {
                        Some(stale) => self.broadcast(i, &stale),
                        None => {
                            // A fresh block: every node sees it but one auditor.
                            let atn = self.nodes[i as usize].state.registry.atn().to_vec();
                            let hidden = atn.choose(&mut self.rng).copied();
                            for to in 0..n {
                                if to != i && Some(to) != hidden {
                                    self.send(i, to, Wire::Dpos(Box::new(msg.clone())));
                                }
                            }
                        }
                    },
                    Behaviour::InvalidBlock => {
                        let bad = forged_proposal(&key, i, &p, &block, true, 0);
                        self.broadcast(i, &bad);
                    }
                    Behaviour::Equivocator => {
                        let twin = forged_proposal(&key, i, &p, &block, false, 1);
                        for to in half_a {
                            self.send(i, to, Wire::Dpos(Box::new(msg.clone())));
                        }
                        for to in half_b {
                            self.send(i, to, Wire::Dpos(Box::new(twin.clone())));
                        }
                    }
                    _ => {
                        let junk = forged_proposal(&key, i, &p, &block, false, 2);
                        let bad = forged_proposal(&key, i, &p, &block, true, 3);
                        for m in [&msg, &junk, &bad] {
                            self.broadcast(i, m);
                        }
                    }
                }
            }
            (Some(Kind::Vote(v)), Behaviour::RejectValid)
                if v.voter == i && !v.block_hash.is_empty() =>
            {
                let mut nv = v.clone();
                nv.rejected = std::mem::take(&mut nv.block_hash);
                let nv = sign_vote(&key, nv);
                self.broadcast(
                    i,
                    &v1::DposMessage {
                        kind: Some(Kind::Vote(nv)),
                    },
                );
            }
            // A Colluder's votes are the targeted ones it sends on proposals, not its engine's.
            (Some(Kind::Vote(v)), Behaviour::Colluder) if v.voter == i => {}
            (Some(Kind::Vote(v)), Behaviour::DoubleVoter) if v.voter == i => {
                let kind = v1::DposVoteKind::try_from(v.kind).unwrap_or(v1::DposVoteKind::Prevote);
                let other = if v.block_hash.is_empty() {
                    let fake = Hash32::from_slice(&[0xAB; 32]).expect("32 bytes");
                    unsigned_vote(CHAIN, v.height, v.round, kind, Some(&fake), None, i)
                } else {
                    unsigned_vote(CHAIN, v.height, v.round, kind, None, None, i)
                };
                let other = v1::DposMessage {
                    kind: Some(Kind::Vote(sign_vote(&key, other))),
                };
                for to in half_a {
                    self.send(i, to, Wire::Dpos(Box::new(msg.clone())));
                }
                for to in half_b {
                    self.send(i, to, Wire::Dpos(Box::new(other.clone())));
                }
            }
            // Every Byzantine node claims to be far ahead, luring honest nodes to ask it for
            // blocks (it answers with hostile_sync_answer).
            (Some(Kind::Status(st)), _) => {
                let lie = v1::DposStatus {
                    height: st.height + self.rng.gen_range(1..=1_000),
                };
                self.broadcast(
                    i,
                    &v1::DposMessage {
                        kind: Some(Kind::Status(lie)),
                    },
                );
            }
            _ => self.broadcast(i, &msg),
        }
    }

    /// What a Byzantine node answers to a block-sync request from height `from_height`, instead of
    /// `blocks` (its true chain from there): nothing, a block with an item swapped, a certificate
    /// one precommit short of the quorum, or later blocks passed off as the asked height (false
    /// heights). Every one of them must be refused, and catch-up must go on through honest peers.
    pub(super) fn hostile_sync_answer(
        &mut self,
        i: u32,
        from_height: u64,
        mut blocks: Vec<v1::DposFinalizedBlock>,
    ) -> Vec<v1::DposFinalizedBlock> {
        let quorum = self.nodes[i as usize].state.quorum();
        match self.rng.gen_range(0..4) {
            0 => return Vec::new(),
            1 => {
                if let Some(block) = blocks.first_mut().and_then(|fb| fb.block.as_mut()) {
                    let swapped = format!("valid:swapped:{from_height}").into_bytes();
                    match block.items.first_mut() {
                        Some(item) => *item = swapped,
                        None => block.items.push(swapped),
                    }
                }
            }
            2 => {
                if let Some(cert) = blocks.first_mut().and_then(|fb| fb.certificate.as_mut()) {
                    cert.precommits.truncate(quorum.saturating_sub(1));
                }
            }
            _ => {
                if !blocks.is_empty() {
                    blocks.remove(0);
                }
                for (k, fb) in blocks.iter_mut().enumerate() {
                    if let Some(cert) = fb.certificate.as_mut() {
                        cert.height = from_height + k as u64;
                    }
                }
            }
        }
        self.record(|| format!("i{i} hostile sync answer from h{from_height}"));
        blocks
    }

    /// Records a misbehaviour as the proposer of (height, round) after GST, once per slot (a
    /// re-sent proposal is the same misbehaviour), while the slot is open: no honest node has
    /// finalized that height yet. A lagging Byzantine node that proposes for a height the
    /// network closed long ago sends twins no honest node can pair (each holds at most one, and
    /// none for a slot it never saw), so nothing there is chargeable (DPoS long-run seed 72764:
    /// an equivocator catching up by block sync proposed for two closed heights on the way).
    pub(super) fn strike(&mut self, i: u32, height: u64, round: u64) {
        let open = self
            .honest_nodes()
            .iter()
            .all(|h| (self.nodes[*h as usize].chain.len() as u64) < height);
        if self.now >= self.scn.net.gst_ms && open {
            let slots = self.strikes.entry(i).or_default();
            if !slots.contains(&(height, round)) {
                slots.push((height, round));
            }
        }
    }
}

/// A proposal of `i`'s own for the slot of `p`, signed by `key`: `block` with an invalid item
/// added (`invalid`) and its timestamp moved by `bump`. It names `i` as producer: a re-proposal of
/// someone else's block would carry that producer and be ignored, not judged.
fn forged_proposal(
    key: &SigningKey,
    i: u32,
    p: &v1::DposProposal,
    block: &v1::DposBlock,
    invalid: bool,
    bump: u64,
) -> v1::DposMessage {
    let mut block = block.clone();
    let mut header = block.header.clone().unwrap_or_default();
    if invalid {
        block
            .items
            .push(format!("forged:{}:{}:{bump}", p.height, p.round).into_bytes());
    }
    header.timestamp_ms += bump;
    header.producer = i;
    header.items_root = items_root(&block.items).as_bytes().to_vec();
    header.item_count = block.items.len() as u32;
    header.extras_digest = extras_digest(block.extras.as_ref()).as_bytes().to_vec();
    block.header = Some(header.clone());
    let signed = sign_proposal(key, CHAIN, p.height, p.round, &block_hash(&header), None, i);
    v1::DposMessage {
        kind: Some(Kind::Proposal(v1::DposProposalMessage {
            proposal: Some(signed),
            block: Some(block),
        })),
    }
}
