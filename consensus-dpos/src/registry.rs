//! The credit registry: every institution's credit, who is a representative (RPN) or an auditor
//! (ATN), and the rules that change them. It is a deterministic function of the final chain: it
//! changes only in [`crate::ChainState::apply_block`], from data inside final blocks, so every
//! honest node holds the same registry at every height.

use std::collections::BTreeMap;

use medchain_crypto::hash::{digest_parts, domains};
use medchain_crypto::{Hash32, Identity};
use serde::{Deserialize, Serialize};

use crate::params::{CreditRules, Genesis, Params};
use crate::DposError;

/// One admitted institution.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Institution {
    pub name: String,
    #[serde(with = "identity_bytes")]
    pub identity: Identity,
    pub credit: u64,
    pub willing: bool,
    /// Proven to have equivocated: never again a representative or auditor.
    pub expelled: bool,
}

/// Misbehaviour that costs credit.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Offence {
    MissedSlot,
    InvalidBlock,
    WrongVerdict,
    DoubleVote,
    Equivocation,
}

/// Institutions, credit and roles.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Registry {
    institutions: Vec<Institution>,
    /// Representatives in production order (fixed for the epoch; a replacement takes the removed
    /// member's place).
    rpn: Vec<u32>,
    /// Auditors, best-ranked first.
    atn: Vec<u32>,
    rpn_size: usize,
    atn_size: usize,
    pub epoch: u64,
    /// Slots elapsed since genesis, as recorded by final certificates.
    pub slots: u64,
    /// Evidence already applied (id -> height it was about), kept while it could be re-submitted.
    applied_evidence: BTreeMap<[u8; 32], u64>,
}

impl Registry {
    /// Scores the admitted institutions with the genesis weights and elects the first sets.
    pub fn genesis(genesis: &Genesis) -> Result<Self, DposError> {
        let p = &genesis.params;
        p.check()?;
        if genesis.institutions.is_empty() {
            return Err(DposError::Genesis("no institutions".into()));
        }
        let mut institutions = Vec::with_capacity(genesis.institutions.len());
        for (i, spec) in genesis.institutions.iter().enumerate() {
            for (field, score) in [
                ("rating", spec.rating),
                ("scale", spec.scale),
                ("strength", spec.strength),
            ] {
                if score > 100 {
                    return Err(DposError::Genesis(format!(
                        "institution {i} ({}) has {field} {score}; scores are 0..=100",
                        spec.name
                    )));
                }
            }
            if institutions
                .iter()
                .any(|x: &Institution| x.identity == spec.identity)
            {
                return Err(DposError::Genesis(format!(
                    "institution {i} ({}) repeats an identity; each institution needs its own key",
                    spec.name
                )));
            }
            let c = &p.credit;
            let credit = [
                (c.weight_rating, spec.rating),
                (c.weight_scale, spec.scale),
                (c.weight_strength, spec.strength),
            ]
            .iter()
            .try_fold(0u64, |acc, (w, s)| acc.checked_add(w.checked_mul(*s)?))
            .ok_or_else(|| DposError::Genesis("credit weights overflow".into()))?
            .min(c.max_credit);
            institutions.push(Institution {
                name: spec.name.clone(),
                identity: spec.identity,
                credit,
                willing: spec.willing,
                expelled: false,
            });
        }
        let mut r = Registry {
            institutions,
            rpn: Vec::new(),
            atn: Vec::new(),
            rpn_size: p.rpn_size,
            atn_size: p.atn_size,
            epoch: 0,
            slots: 0,
            applied_evidence: BTreeMap::new(),
        };
        r.elect(&p.credit, &Hash32::ZERO);
        if r.rpn.is_empty() || r.atn.is_empty() {
            return Err(DposError::Genesis(format!(
                "{} institutions are willing and above the credit threshold {}; at least 2 are needed (1 representative, 1 auditor)",
                r.ranking(&p.credit).len(),
                p.credit.threshold
            )));
        }
        Ok(r)
    }

    pub fn institutions(&self) -> &[Institution] {
        &self.institutions
    }

    pub fn identity(&self, index: u32) -> Option<&Identity> {
        self.institutions.get(index as usize).map(|i| &i.identity)
    }

    pub fn index_of(&self, identity: &Identity) -> Option<u32> {
        self.institutions
            .iter()
            .position(|i| i.identity == *identity)
            .map(|i| i as u32)
    }

    pub fn credit(&self, index: u32) -> Option<u64> {
        self.institutions.get(index as usize).map(|i| i.credit)
    }

    /// Representatives in production order.
    pub fn rpn(&self) -> &[u32] {
        &self.rpn
    }

    /// Auditors, best-ranked first.
    pub fn atn(&self) -> &[u32] {
        &self.atn
    }

    /// The representative whose turn is `round` at `height`: turns rotate with the height, and a
    /// missed slot passes to the next representative.
    pub fn proposer(&self, height: u64, round: u64) -> u32 {
        let n = self.rpn.len() as u64;
        self.rpn[(height.wrapping_add(round) % n) as usize]
    }

    pub fn is_auditor(&self, index: u32) -> bool {
        self.atn.contains(&index)
    }

    /// (index, identity) of every auditor, for certificate checks.
    pub fn auditor_keys(&self) -> Vec<(u32, Identity)> {
        self.atn
            .iter()
            .map(|i| (*i, self.institutions[*i as usize].identity))
            .collect()
    }

    fn eligible(&self, i: u32, rules: &CreditRules) -> bool {
        let x = &self.institutions[i as usize];
        x.willing && !x.expelled && x.credit >= rules.threshold
    }

    /// Eligible institutions by rank: credit descending, ties by identity bytes ascending.
    pub fn ranking(&self, rules: &CreditRules) -> Vec<u32> {
        let mut v: Vec<u32> = (0..self.institutions.len() as u32)
            .filter(|i| self.eligible(*i, rules))
            .collect();
        v.sort_by(|a, b| {
            let (x, y) = (
                &self.institutions[*a as usize],
                &self.institutions[*b as usize],
            );
            y.credit
                .cmp(&x.credit)
                .then_with(|| x.identity.as_bytes().cmp(y.identity.as_bytes()))
        });
        v
    }

    /// Full election: ranks 1..=R are representatives, the next A auditors. The production order
    /// is the representatives sorted by a hash of the epoch seed and their identity, so it is
    /// fixed for the epoch and not chosen by anyone.
    pub fn elect(&mut self, rules: &CreditRules, seed: &Hash32) {
        let ranking = self.ranking(rules);
        let r = self.rpn_size.min(ranking.len().saturating_sub(1)).max(1);
        let mut rpn: Vec<u32> = ranking.iter().take(r).copied().collect();
        let atn: Vec<u32> = ranking
            .iter()
            .skip(r)
            .take(self.atn_size)
            .copied()
            .collect();
        let epoch = self.epoch.to_be_bytes();
        rpn.sort_by_key(|i| {
            digest_parts(
                domains::DPOS_STATE,
                &[
                    b"order",
                    &epoch,
                    seed.as_bytes(),
                    self.institutions[*i as usize].identity.as_bytes(),
                ],
            )
        });
        if !rpn.is_empty() && !atn.is_empty() {
            self.rpn = rpn;
            self.atn = atn;
        }
    }

    /// Adds `amount`, checked and clamped to `max_credit`.
    pub fn reward(&mut self, index: u32, amount: u64, rules: &CreditRules) {
        if let Some(x) = self.institutions.get_mut(index as usize) {
            // Saturates instead of wrapping, then clamps: credit never wraps around.
            x.credit = x.credit.saturating_add(amount).min(rules.max_credit);
        }
    }

    /// Applies an offence's penalty (clamped at 0); equivocation also expels.
    pub fn penalize(&mut self, index: u32, offence: Offence, rules: &CreditRules) {
        let amount = match offence {
            Offence::MissedSlot => rules.missed_slot_penalty,
            Offence::InvalidBlock => rules.invalid_block_penalty,
            Offence::WrongVerdict => rules.wrong_verdict_penalty,
            Offence::DoubleVote => rules.double_vote_penalty,
            Offence::Equivocation => rules.equivocation_penalty,
        };
        if let Some(x) = self.institutions.get_mut(index as usize) {
            x.credit = x.credit.saturating_sub(amount);
            if offence == Offence::Equivocation {
                x.expelled = true;
            }
        }
    }

    pub fn evidence_applied(&self, id: &Hash32) -> bool {
        self.applied_evidence.contains_key(id.as_bytes())
    }

    pub fn record_evidence(&mut self, id: Hash32, about_height: u64) {
        self.applied_evidence.insert(*id.as_bytes(), about_height);
    }

    /// Forgets evidence about heights below `oldest` (it can no longer be submitted).
    pub fn prune_evidence(&mut self, oldest: u64) {
        self.applied_evidence.retain(|_, h| *h >= oldest);
    }

    /// Removes representatives and auditors that fell below the threshold or were expelled. The
    /// best auditor takes a removed representative's place in the production order; the auditor
    /// set is refilled from the ranking. Neither set is ever left empty.
    pub fn replace_fallen(&mut self, rules: &CreditRules) {
        for pos in 0..self.rpn.len() {
            let member = self.rpn[pos];
            if self.eligible(member, rules) {
                continue;
            }
            let best_auditor = self
                .atn
                .iter()
                .copied()
                .filter(|a| self.eligible(*a, rules))
                .min_by(|a, b| self.rank_cmp(*a, *b));
            if let Some(a) = best_auditor {
                self.atn.retain(|x| *x != a);
                self.rpn[pos] = a;
            }
        }
        let fallen: Vec<u32> = self
            .rpn
            .iter()
            .copied()
            .filter(|m| !self.eligible(*m, rules))
            .collect();
        for m in fallen {
            if self.rpn.len() > 1 {
                self.rpn.retain(|x| *x != m);
            }
        }
        let keep: Vec<u32> = self
            .atn
            .iter()
            .copied()
            .filter(|a| self.eligible(*a, rules))
            .collect();
        let mut atn = keep;
        for candidate in self.ranking(rules) {
            if atn.len() >= self.atn_size {
                break;
            }
            if !self.rpn.contains(&candidate) && !atn.contains(&candidate) {
                atn.push(candidate);
            }
        }
        // Too few eligible institutions to refill: keep the best fallen (not expelled) auditors
        // rather than shrink the set, because a smaller set tolerates fewer faulty auditors.
        let mut fallen: Vec<u32> = self
            .atn
            .iter()
            .copied()
            .filter(|a| !atn.contains(a) && !self.rpn.contains(a))
            .filter(|a| !self.institutions[*a as usize].expelled)
            .collect();
        fallen.sort_by(|a, b| self.rank_cmp(*a, *b));
        for a in fallen {
            if atn.len() >= self.atn.len() {
                break;
            }
            atn.push(a);
        }
        if !atn.is_empty() {
            self.atn = atn;
        }
    }

    /// A digest of everything in the registry, to compare nodes.
    pub fn digest_into(&self, h: &mut Vec<u8>) {
        for x in &self.institutions {
            h.extend_from_slice(x.identity.as_bytes());
            h.extend_from_slice(&x.credit.to_be_bytes());
            h.push(u8::from(x.willing) | (u8::from(x.expelled) << 1));
        }
        for set in [&self.rpn, &self.atn] {
            h.extend_from_slice(&(set.len() as u64).to_be_bytes());
            for i in set {
                h.extend_from_slice(&i.to_be_bytes());
            }
        }
        h.extend_from_slice(&self.epoch.to_be_bytes());
        h.extend_from_slice(&self.slots.to_be_bytes());
        for (id, height) in &self.applied_evidence {
            h.extend_from_slice(id);
            h.extend_from_slice(&height.to_be_bytes());
        }
    }

    fn rank_cmp(&self, a: u32, b: u32) -> std::cmp::Ordering {
        let (x, y) = (
            &self.institutions[a as usize],
            &self.institutions[b as usize],
        );
        y.credit
            .cmp(&x.credit)
            .then_with(|| x.identity.as_bytes().cmp(y.identity.as_bytes()))
    }

    /// Sizes as configured (the sets may be smaller when too few institutions are eligible).
    pub fn target_sizes(&self) -> (usize, usize) {
        (self.rpn_size, self.atn_size)
    }

    /// Advances the slot count by `slots`; returns true when an epoch boundary was crossed.
    pub fn advance_slots(&mut self, slots: u64, params: &Params) -> bool {
        let before = self.slots / params.epoch_slots;
        self.slots = self.slots.saturating_add(slots);
        let after = self.slots / params.epoch_slots;
        if after > before {
            self.epoch = self.epoch.saturating_add(after - before);
            true
        } else {
            false
        }
    }
}

mod identity_bytes {
    use medchain_crypto::Identity;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(id: &Identity, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(id.as_bytes())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Identity, D::Error> {
        let bytes: Vec<u8> = Vec::deserialize(d)?;
        Identity::from_bytes(&bytes).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::params::InstitutionSpec;
    use medchain_crypto::SigningKey;

    pub(crate) fn genesis(scores: &[(u64, bool)], rpn: usize, atn: usize) -> Genesis {
        let mut params = Params {
            rpn_size: rpn,
            atn_size: atn,
            ..Params::default()
        };
        params.credit.threshold = 1_000;
        Genesis {
            chain_id: "consortium".into(),
            genesis_time_ms: 0,
            params,
            institutions: scores
                .iter()
                .enumerate()
                .map(|(i, (s, willing))| InstitutionSpec {
                    name: format!("inst{i}"),
                    identity: SigningKey::from_bytes(&[i as u8 + 1; 32])
                        .unwrap()
                        .identity(),
                    rating: *s,
                    scale: *s,
                    strength: *s,
                    willing: *willing,
                })
                .collect(),
        }
    }

    #[test]
    fn starting_credit_is_the_weighted_sum() {
        let mut g = genesis(&[(80, true), (60, true)], 1, 1);
        g.institutions[1].rating = 100;
        g.institutions[1].scale = 0;
        let r = Registry::genesis(&g).unwrap();
        assert_eq!(r.credit(0), Some(50 * 80 + 30 * 80 + 20 * 80));
        assert_eq!(r.credit(1), Some(50 * 100 + 20 * 60));
    }

    #[test]
    fn ranks_split_into_representatives_and_auditors() {
        // 9 institutions, one unwilling, one below the threshold (score 5 -> credit 500).
        let scores = [
            (90, true),
            (80, true),
            (70, false),
            (60, true),
            (50, true),
            (40, true),
            (30, true),
            (20, true),
            (5, true),
        ];
        let r = Registry::genesis(&genesis(&scores, 4, 3)).unwrap();
        let mut rpn = r.rpn().to_vec();
        rpn.sort();
        assert_eq!(rpn, vec![0, 1, 3, 4]);
        assert_eq!(r.atn(), &[5, 6, 7]);
    }

    #[test]
    fn ties_are_broken_by_identity() {
        let r = Registry::genesis(&genesis(&[(50, true); 4], 2, 2)).unwrap();
        let ranking = r.ranking(&CreditRules {
            threshold: 1_000,
            ..CreditRules::default()
        });
        let ids: Vec<_> = ranking
            .iter()
            .map(|i| *r.identity(*i).unwrap().as_bytes())
            .collect();
        let mut sorted = ids.clone();
        sorted.sort();
        assert_eq!(ids, sorted);
    }

    #[test]
    fn a_fallen_representative_is_replaced_by_the_best_auditor() {
        let g = genesis(
            &[(90, true), (80, true), (60, true), (50, true), (40, true)],
            2,
            2,
        );
        let rules = g.params.credit.clone();
        let mut r = Registry::genesis(&g).unwrap();
        assert_eq!(r.atn(), &[2, 3]);
        let pos = r.rpn().iter().position(|x| *x == 1).unwrap();
        r.penalize(1, Offence::Equivocation, &rules);
        r.replace_fallen(&rules);
        assert_eq!(
            r.rpn()[pos],
            2,
            "the top auditor takes the vacancy in place"
        );
        assert_eq!(r.atn(), &[3, 4], "auditors refilled from the ranking");
        assert!(r.institutions()[1].expelled);
        // Expelled institutions are not re-elected, even with credit restored.
        r.reward(1, 1_000_000, &rules);
        r.elect(&rules, &Hash32::ZERO);
        assert!(!r.rpn().contains(&1) && !r.atn().contains(&1));
    }

    #[test]
    fn credit_is_clamped_not_wrapped() {
        let g = genesis(&[(90, true), (80, true)], 1, 1);
        let rules = g.params.credit.clone();
        let mut r = Registry::genesis(&g).unwrap();
        r.reward(0, u64::MAX, &rules);
        assert_eq!(r.credit(0), Some(rules.max_credit));
        for _ in 0..10 {
            r.penalize(1, Offence::InvalidBlock, &rules);
        }
        assert_eq!(r.credit(1), Some(0));
    }

    #[test]
    fn sets_never_empty() {
        let g = genesis(&[(90, true), (80, true)], 1, 1);
        let rules = g.params.credit.clone();
        let mut r = Registry::genesis(&g).unwrap();
        r.penalize(0, Offence::Equivocation, &rules);
        r.penalize(1, Offence::Equivocation, &rules);
        r.replace_fallen(&rules);
        assert_eq!(r.rpn().len(), 1);
        assert_eq!(r.atn().len(), 1);
    }

    #[test]
    fn genesis_refuses_bad_scores_and_too_few_members() {
        let mut g = genesis(&[(90, true), (80, true)], 1, 1);
        g.institutions[0].rating = 101;
        assert!(Registry::genesis(&g)
            .unwrap_err()
            .to_string()
            .contains("0..=100"));
        let g = genesis(&[(90, true), (80, false)], 1, 1);
        assert!(Registry::genesis(&g)
            .unwrap_err()
            .to_string()
            .contains("at least 2"));
    }

    #[test]
    fn epochs_advance_on_slot_boundaries() {
        let g = genesis(&[(90, true), (80, true)], 1, 1);
        let mut p = g.params.clone();
        p.epoch_slots = 10;
        let mut r = Registry::genesis(&g).unwrap();
        assert!(!r.advance_slots(9, &p));
        assert!(r.advance_slots(1, &p));
        assert_eq!(r.epoch, 1);
        assert!(r.advance_slots(25, &p));
        assert_eq!(r.epoch, 3);
    }
}
