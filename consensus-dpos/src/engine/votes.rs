//! Votes as they arrive (rules 2-3): verified, bounded, kept one per kind and round per auditor,
//! with evidence of double votes and wrong verdicts.

use super::*;

impl<S: Signer, V: Verifier> Engine<S, V> {
    pub(super) fn on_vote(&mut self, from: u32, v: v1::DposVote) {
        let at = (v.height, v.round);
        if !self.chain.registry.is_auditor(v.voter) {
            let reason = format!("{} is not an auditor at this height", v.voter);
            return self.refuse(from, "vote", at, reason);
        }
        if v.round > self.round + MAX_ROUNDS_AHEAD {
            let reason = format!("round too far ahead of {}", self.round);
            return self.refuse(from, "vote", at, reason);
        }
        let book = if v.kind == DposVoteKind::Prevote as i32 {
            &self.prevotes
        } else {
            &self.precommits
        };
        let held = book
            .get(&v.round)
            .and_then(|m| m.get(&v.voter))
            .is_some_and(|votes| votes.iter().any(|(x, _)| x.signature == v.signature));
        if held {
            return; // a re-sent vote
        }
        let Some(identity) = self.chain.registry.identity(v.voter).copied() else {
            return self.refuse(from, "vote", at, "unknown voter".into());
        };
        let value = match verify_vote(&v, &self.cfg.chain_id, &identity, &self.verifier) {
            Ok(value) => value,
            Err(e) => return self.refuse(from, "vote", at, e.to_string()),
        };
        if v.round > self.round + NEAR_ROUNDS && !self.keep_far_vote(v.voter, v.round) {
            return;
        }
        self.record_vote(v, value);
    }

    /// For a vote far ahead: keep it only if it is from the voter's highest far round seen, and
    /// then drop the voter's votes of lower far rounds.
    pub(super) fn keep_far_vote(&mut self, voter: u32, round: u64) -> bool {
        let near = self.round + NEAR_ROUNDS;
        let highest = [&self.prevotes, &self.precommits]
            .iter()
            .flat_map(|book| book.range(near + 1..))
            .filter(|(_, votes)| votes.contains_key(&voter))
            .map(|(r, _)| *r)
            .max();
        match highest {
            Some(h) if h > round => false,
            Some(h) if h == round => true,
            _ => {
                for book in [&mut self.prevotes, &mut self.precommits] {
                    for (_, votes) in book.range_mut(near + 1..round) {
                        votes.remove(&voter);
                    }
                    book.retain(|r, votes| *r <= near || !votes.is_empty());
                }
                true
            }
        }
    }

    pub(super) fn record_vote(&mut self, v: v1::DposVote, value: VoteValue) {
        let book = match value.kind {
            DposVoteKind::Prevote => &mut self.prevotes,
            _ => &mut self.precommits,
        };
        // A prevote for a block that a held proposal re-proposes with this round as its proof of
        // lock is kept even past an equivocator's first two votes: which two of its votes a node
        // sees first is the network's choice, and without the one the proof needs the node could
        // never check the proof, while nodes that saw it stay locked: a stable split, no block
        // (DPoS seed 54689). Proposals held per round are bounded, so these extra votes are too.
        let proves_a_lock = value.kind == DposVoteKind::Prevote
            && value.block.is_some_and(|b| {
                self.proposals
                    .values()
                    .flatten()
                    .any(|(p, h)| *h == b && pol_round(p) == Some(v.round))
            });
        let votes = book.entry(v.round).or_default().entry(v.voter).or_default();
        if votes
            .iter()
            .any(|(_, fv)| (fv.block, fv.rejected) == (value.block, value.rejected))
            || (votes.len() >= 2 && !proves_a_lock)
            || votes.len() >= MAX_VOTES_PER_VOTER_ROUND
        {
            return;
        }
        let double = votes.first().map(|(first, _)| {
            dpos_evidence::Kind::DoubleVote(v1::DposDoubleVote {
                first: Some(first.clone()),
                second: Some(v.clone()),
            })
        });
        votes.push((v.clone(), value));
        if let Some(e) = double {
            self.evidence_pool_insert(e);
        }
        // A vote for a block known invalid, or a rejection of one known valid.
        let target = value.block.or(value.rejected);
        if let Some(hash) = target {
            let wrong = match self.blocks.get(&hash) {
                Some((_, Verdict::Invalid)) => value.block.is_some(),
                Some((_, Verdict::Valid(_))) => value.rejected.is_some(),
                None => false,
            };
            if wrong {
                if let Some(e) = self.wrong_verdict(&v, hash) {
                    self.evidence_pool_insert(e);
                }
            }
        }
    }

    pub(super) fn wrong_verdict(
        &self,
        vote: &v1::DposVote,
        hash: Hash32,
    ) -> Option<dpos_evidence::Kind> {
        let (proposal, _) = self
            .proposals
            .values()
            .flatten()
            .find(|(_, h)| *h == hash)?;
        let (block, _) = self.blocks.get(&hash)?;
        Some(dpos_evidence::Kind::WrongVerdict(v1::DposWrongVerdict {
            vote: Some(vote.clone()),
            proposal: Some(proposal.clone()),
            content: Some(v1::DposBlockContent {
                header: block.header.clone(),
                items: block.items.clone(),
            }),
        }))
    }

    /// Votes that arrived before the proposal they judge.
    pub(super) fn check_verdicts_against(&mut self, hash: Hash32) {
        let mut found = Vec::new();
        for book in [&self.prevotes, &self.precommits] {
            for votes in book.values() {
                for (v, value) in votes.values().flatten() {
                    if value.block == Some(hash) || value.rejected == Some(hash) {
                        found.push((v.clone(), *value));
                    }
                }
            }
        }
        let invalid = matches!(self.blocks.get(&hash), Some((_, Verdict::Invalid)));
        for (v, value) in found {
            let wrong = if invalid {
                value.block.is_some()
            } else {
                value.rejected.is_some()
            };
            if wrong {
                if let Some(e) = self.wrong_verdict(&v, hash) {
                    self.evidence_pool_insert(e);
                }
            }
        }
    }

    /// Keeps evidence for the next block this node proposes: one entry per offence
    /// ([`offence_id`]; the first seen), never more than fits a block's evidence budget, and at
    /// most [`EVIDENCE_POOL_LIMIT`] entries. Entries leave when applied or too old.
    pub(super) fn evidence_pool_insert(&mut self, kind: dpos_evidence::Kind) {
        let e = v1::DposEvidence { kind: Some(kind) };
        let Some(id) = offence_id(&e) else {
            return;
        };
        if e.canonical_len() > self.params().max_block_evidence_bytes
            || (self.evidence_pool.len() >= EVIDENCE_POOL_LIMIT
                && !self.evidence_pool.contains_key(&id))
        {
            return;
        }
        self.evidence_pool.entry(id).or_insert(e);
    }
}
