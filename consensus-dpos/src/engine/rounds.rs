//! Rules 2-5: prevote, precommit, decide and move between rounds, from the votes held.

use super::*;

impl<S: Signer, V: Verifier> Engine<S, V> {
    /// Distinct voters with a vote for `hash` (nil when `None`) in `round`.
    pub(super) fn count(book: &Book, round: u64, hash: Option<Hash32>) -> usize {
        book.get(&round).map_or(0, |m| {
            m.values()
                .filter(|votes| votes.iter().any(|(_, v)| v.block == hash))
                .count()
        })
    }

    /// Distinct voters in `round`.
    pub(super) fn total(book: &Book, round: u64) -> usize {
        book.get(&round).map_or(0, |m| m.len())
    }

    pub(super) fn verdict_valid(&self, hash: &Hash32) -> bool {
        matches!(self.blocks.get(hash), Some((_, Verdict::Valid(_))))
    }

    /// Applies every rule whose condition holds until none does.
    pub(super) fn progress(&mut self, now: u64, app: &impl Application) {
        for _ in 0..10_000 {
            if !self.step_once(now, app) {
                return;
            }
        }
    }

    pub(super) fn step_once(&mut self, now: u64, app: &impl Application) -> bool {
        let (h, r) = (self.height(), self.round);
        let q = self.quorum();
        let auditor = self.is_auditor();

        // Decide: a block with precommits from a quorum in any round.
        let decided = self.precommits.iter().find_map(|(round, votes)| {
            let mut tally: BTreeMap<Hash32, usize> = BTreeMap::new();
            for voter in votes.values() {
                let blocks: BTreeSet<Hash32> = voter.iter().filter_map(|(_, v)| v.block).collect();
                for b in blocks {
                    *tally.entry(b).or_default() += 1;
                }
            }
            tally
                .into_iter()
                .find(|(b, n)| *n >= q && self.verdict_valid(b))
                .map(|(b, _)| (*round, b))
        });
        if let Some((round, hash)) = decided {
            let cert = self.certificate(round, hash);
            let Some((block, Verdict::Valid(checked))) = self.blocks.get(&hash).cloned() else {
                return false;
            };
            self.finalize(now, block, checked, cert, app);
            return true;
        }

        // Join a higher round that enough auditors are already in.
        let weak = self.weak_quorum();
        let mut voters_at: BTreeMap<u64, BTreeSet<u32>> = BTreeMap::new();
        for book in [&self.prevotes, &self.precommits] {
            for (round, votes) in book.range(r + 1..) {
                voters_at.entry(*round).or_default().extend(votes.keys());
            }
        }
        if let Some(round) = voters_at
            .iter()
            .rev()
            .find(|(_, v)| v.len() >= weak)
            .map(|(round, _)| *round)
        {
            self.enter_round(round, now, app);
            return true;
        }

        // Prevote on this round's proposal.
        if auditor && self.step == Step::Propose {
            if let Some((p, hash)) = self.proposals.get(&r).and_then(|l| l.first()).cloned() {
                let valid = self.verdict_valid(&hash);
                let invalid = !valid;
                let vote = match pol_round(&p) {
                    None => Some(valid && self.locked.is_none_or(|(_, l)| l == hash)),
                    Some(vr) if Self::count(&self.prevotes, vr, Some(hash)) >= q => {
                        let unlock = self.chain.mutant(Mutant::UnlockOnLowerPol);
                        Some(
                            valid
                                && self
                                    .locked
                                    .is_none_or(|(lr, l)| lr <= vr || l == hash || unlock),
                        )
                    }
                    Some(_) => None,
                };
                if let Some(accept) = vote {
                    if accept {
                        self.cast(DposVoteKind::Prevote, Some(hash), None);
                    } else {
                        self.cast(DposVoteKind::Prevote, None, invalid.then_some(hash));
                    }
                    self.step = Step::Prevote;
                    return true;
                }
            }
        }

        // A quorum prevoted this round's proposal: lock on it and precommit it.
        if auditor && self.step == Step::Prevote {
            let locking = self.proposals.get(&r).and_then(|l| {
                l.iter().map(|(_, h)| *h).find(|h| {
                    self.verdict_valid(h) && Self::count(&self.prevotes, r, Some(*h)) >= q
                })
            });
            if let Some(hash) = locking {
                {
                    self.locked = Some((r, hash));
                    self.valid = Some((r, hash));
                    self.cast(DposVoteKind::Precommit, Some(hash), None);
                    self.step = Step::Precommit;
                    return true;
                }
            }
        }

        // The latest block a quorum prevoted, in any round: what the next proposer re-proposes
        // (everyone tracks it, so a representative that does not vote knows it too).
        let newer = self.proposals.iter().rev().find_map(|(round, list)| {
            let newer = self.valid.is_none_or(|(vr, _)| *round > vr);
            list.iter().find_map(|(_, hash)| {
                (newer
                    && self.verdict_valid(hash)
                    && Self::count(&self.prevotes, *round, Some(*hash)) >= q)
                    .then_some((*round, *hash))
            })
        });
        if let Some(v) = newer {
            self.valid = Some(v);
            self.dirty = true;
            return true;
        }

        if auditor && self.step == Step::Prevote {
            if Self::count(&self.prevotes, r, None) >= q {
                self.cast(DposVoteKind::Precommit, None, None);
                self.step = Step::Precommit;
                return true;
            }
            let t = Timer::Prevote {
                height: h,
                round: r,
            };
            if Self::total(&self.prevotes, r) >= q && self.armed.insert(t) {
                let at = now + self.params().vote_timeout_ms + self.round_extra(r);
                self.arm(t, at);
            }
        }

        let t = Timer::Precommit {
            height: h,
            round: r,
        };
        if Self::total(&self.precommits, r) >= q && self.armed.insert(t) {
            let at = now + self.params().vote_timeout_ms + self.round_extra(r);
            self.arm(t, at);
        }
        false
    }

    pub(super) fn certificate(&self, round: u64, hash: Hash32) -> v1::DposFinalityCertificate {
        let precommits = self
            .precommits
            .get(&round)
            .map(|m| {
                m.iter()
                    .filter_map(|(i, votes)| {
                        let (vote, _) = votes.iter().find(|(_, v)| v.block == Some(hash))?;
                        Some(v1::IndexedSignature {
                            validator: *i,
                            signature: vote.signature.clone(),
                        })
                    })
                    .collect()
            })
            .unwrap_or_default();
        v1::DposFinalityCertificate {
            height: self.height(),
            round,
            block_hash: hash.as_bytes().to_vec(),
            precommits,
        }
    }

    pub(super) fn enter_round(&mut self, round: u64, now: u64, app: &impl Application) {
        if round != self.round {
            self.round = round;
            self.step = Step::Propose;
            self.dirty = true;
        }
        let t = Timer::Propose {
            height: self.height(),
            round,
        };
        if round > 0 && self.is_auditor() && self.step == Step::Propose && self.armed.insert(t) {
            let at = now + self.params().slot_ms + self.round_extra(round);
            self.arm(t, at);
        }
        self.arm_work_timers(now);
        self.maybe_propose(now, app);
    }
}
