//! The header-vote collector: a pure state machine (events in, actions out; no I/O, clock or
//! randomness) that gathers the validators' votes over executed headers into certificates.
//!
//! Inputs are this node's own commits (the header it stored at a height) and peers' votes.
//! It certifies a height when 2f + 1 distinct validators signed the header this node stored
//! there, and raises a divergence when f + 1 of them (so at least one honest validator) signed
//! another header at a height this node has stored: execution is deterministic, so that means
//! some ledger, perhaps this one, is wrong, and an operator must look before anyone trusts it.
//!
//! Memory is bounded: votes are kept only for heights in a window around this node's tip,
//! one per validator and height.

use std::collections::{BTreeMap, BTreeSet};

use medchain_crypto::header_vote::verify_header_vote;
use medchain_crypto::validators::{ValidatorIndex, ValidatorSet, Verifier};
use medchain_crypto::{Hash32, Signature};

/// Heights below this node's tip whose votes are still gathered (a vote that arrives late).
pub const KEEP_BEHIND: u64 = 64;
/// Heights above this node's tip whose votes are kept until it commits them (it is a little
/// behind the others).
pub const KEEP_AHEAD: u64 = 256;

/// One validator's vote.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Vote {
    pub height: u64,
    pub hash: Hash32,
    pub validator: ValidatorIndex,
    pub signature: Signature,
}

/// What the collector asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// 2f + 1 validators signed the header this node stored: keep the certificate.
    Certified {
        height: u64,
        hash: Hash32,
        signatures: Vec<(ValidatorIndex, Signature)>,
    },
    /// f + 1 validators signed another header than this node's at `height`.
    Diverged {
        height: u64,
        ours: Hash32,
        theirs: Hash32,
        signers: Vec<ValidatorIndex>,
    },
    /// A validator signed two headers at one height (kept: the first).
    Equivocation {
        height: u64,
        validator: ValidatorIndex,
    },
    /// A vote was refused; why, for the logs.
    Refused {
        validator: ValidatorIndex,
        reason: String,
    },
}

/// Gathers header votes into certificates.
pub struct Collector<V> {
    chain_id: String,
    set: ValidatorSet,
    verifier: V,
    /// This node's stored header hashes in the window.
    own: BTreeMap<u64, Hash32>,
    votes: BTreeMap<u64, BTreeMap<ValidatorIndex, (Hash32, Signature)>>,
    /// Heights already certified or found divergent (each is reported once).
    done: BTreeSet<u64>,
    diverged: BTreeSet<u64>,
    tip: u64,
}

impl<V> std::fmt::Debug for Collector<V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Collector(tip {}, {} votes)", self.tip, self.held())
    }
}

impl<V: Verifier> Collector<V> {
    pub fn new(chain_id: String, set: ValidatorSet, verifier: V, tip: u64) -> Self {
        Collector {
            chain_id,
            set,
            verifier,
            own: BTreeMap::new(),
            votes: BTreeMap::new(),
            done: BTreeSet::new(),
            diverged: BTreeSet::new(),
            tip,
        }
    }

    /// This node stored block `height` with header hash `hash` (its own vote comes separately,
    /// through [`Collector::on_vote`], once it is signed).
    pub fn on_commit(&mut self, height: u64, hash: Hash32) -> Vec<Action> {
        self.tip = self.tip.max(height);
        self.own.insert(height, hash);
        self.prune();
        self.evaluate(height)
    }

    /// A vote from a peer (or this node's own).
    pub fn on_vote(&mut self, vote: Vote) -> Vec<Action> {
        let Vote {
            height,
            hash,
            validator,
            signature,
        } = vote;
        let low = self.tip.saturating_sub(KEEP_BEHIND);
        if height == 0 || height < low || height > self.tip + KEEP_AHEAD {
            return vec![Action::Refused {
                validator,
                reason: format!(
                    "a vote for height {height}, outside the window {low}..={} kept around this node's tip",
                    self.tip + KEEP_AHEAD
                ),
            }];
        }
        if let Some((held, _)) = self.votes.get(&height).and_then(|v| v.get(&validator)) {
            // A vote sent again (votes for the tip are repeated) costs no signature check.
            if *held == hash {
                return Vec::new();
            }
        }
        if let Err(e) = verify_header_vote(
            &self.set,
            &self.chain_id,
            height,
            &hash,
            validator,
            &signature,
            &self.verifier,
        ) {
            return vec![Action::Refused {
                validator,
                reason: e.to_string(),
            }];
        }
        let at = self.votes.entry(height).or_default();
        if at.contains_key(&validator) {
            return vec![Action::Equivocation { height, validator }];
        }
        at.insert(validator, (hash, signature));
        self.evaluate(height)
    }

    /// The heights certified or divergent are reported once each.
    fn evaluate(&mut self, height: u64) -> Vec<Action> {
        let (Some(ours), Some(votes)) = (self.own.get(&height), self.votes.get(&height)) else {
            return Vec::new();
        };
        let mut actions = Vec::new();
        let mut by_hash: BTreeMap<Hash32, Vec<(ValidatorIndex, Signature)>> = BTreeMap::new();
        for (v, (h, s)) in votes {
            by_hash.entry(*h).or_default().push((*v, *s));
        }
        for (hash, signatures) in by_hash {
            if hash == *ours {
                if signatures.len() >= self.set.quorum() && self.done.insert(height) {
                    actions.push(Action::Certified {
                        height,
                        hash,
                        signatures,
                    });
                }
            } else if signatures.len() >= self.set.weak_quorum() && self.diverged.insert(height) {
                actions.push(Action::Diverged {
                    height,
                    ours: *ours,
                    theirs: hash,
                    signers: signatures.iter().map(|(v, _)| *v).collect(),
                });
            }
        }
        actions
    }

    fn prune(&mut self) {
        let low = self.tip.saturating_sub(KEEP_BEHIND);
        self.own = self.own.split_off(&low);
        self.votes = self.votes.split_off(&low);
        self.done = self.done.split_off(&low);
        self.diverged = self.diverged.split_off(&low);
    }
}

impl<V> Collector<V> {
    /// Votes held (for tests and logs).
    pub fn held(&self) -> usize {
        self.votes.values().map(BTreeMap::len).sum()
    }
}

#[cfg(test)]
mod tests;
