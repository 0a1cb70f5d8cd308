//! What every node of a consortium chain agrees on from genesis: sizes, cadences, credit rules
//! and the institutions admitted with their starting scores.

use medchain_crypto::Identity;
use serde::{Deserialize, Serialize};

use crate::DposError;

/// How credit moves. Every amount is in credit points; all arithmetic is checked and the result is
/// clamped to `0..=max_credit`, so no rule can wrap a score around.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreditRules {
    /// Weights of the admission dimensions: starting credit = sum of weight x score.
    pub weight_rating: u64,
    pub weight_scale: u64,
    pub weight_strength: u64,
    /// Added to a block's producer when the block is final, in proportion to the share of the
    /// parent's auditors whose precommits its parent certificate carries (all of it at height 1):
    /// leaving out an honest auditor's precommit costs the producer more than the auditor loses.
    pub produce_reward: u64,
    /// Added to each auditor whose precommit is in a final block's parent certificate.
    pub verify_reward: u64,
    /// Added per unit of service the ledger reports for a final item (data sharing, later).
    pub service_reward: u64,
    /// Taken from a representative whose slot passed without its block being final.
    pub missed_slot_penalty: u64,
    /// Taken from a representative that proposed an invalid block.
    pub invalid_block_penalty: u64,
    /// Taken from an auditor that voted for an invalid block or rejected a valid one.
    pub wrong_verdict_penalty: u64,
    /// Taken from an auditor that cast two different votes of one kind in one round.
    pub double_vote_penalty: u64,
    /// Taken from a representative that signed two blocks for one slot; it is also expelled.
    pub equivocation_penalty: u64,
    /// Below this, an institution is removed from the producer and auditor sets.
    pub threshold: u64,
    pub max_credit: u64,
}

impl Default for CreditRules {
    fn default() -> Self {
        CreditRules {
            weight_rating: 50,
            weight_scale: 30,
            weight_strength: 20,
            // A representative produces one block in |RPN| (101), an auditor verifies every
            // block: at 120 and 1 an honest representative still gains a little faster than an
            // honest auditor, so honest behaviour keeps the roles where they are.
            produce_reward: 120,
            verify_reward: 1,
            service_reward: 1,
            missed_slot_penalty: 100,
            invalid_block_penalty: 2_000,
            wrong_verdict_penalty: 500,
            double_vote_penalty: 2_000,
            equivocation_penalty: 5_000,
            threshold: 3_000,
            max_credit: 1_000_000,
        }
    }
}

/// Chain-wide consensus parameters.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Params {
    /// Representatives (RPN): ranks 1..=rpn_size (default 101).
    pub rpn_size: usize,
    /// Auditors (ATN): the next atn_size ranks (default 20).
    pub atn_size: usize,
    /// Slots per epoch; the sets are re-elected from the ranking when an epoch ends.
    pub epoch_slots: u64,
    /// Most items in one block (default 128).
    pub max_block_items: usize,
    /// Propose once the oldest pending item has waited this long (default 10 minutes).
    pub block_interval_ms: u64,
    /// How long auditors wait for a due proposal before voting nil: the length of a slot.
    pub slot_ms: u64,
    /// How long to wait for the rest of the votes once a quorum voted, before moving on.
    pub vote_timeout_ms: u64,
    /// Added to every timeout per round already spent at a height, so that rounds eventually
    /// last long enough whatever the network's delay.
    pub round_increment_ms: u64,
    /// Own votes and proposals are re-sent this often while a height is undecided.
    pub resend_ms: u64,
    /// A proposal's timestamp may be at most this far ahead of the receiver's clock.
    pub max_clock_drift_ms: u64,
    /// Most evidence entries in one block.
    pub max_block_evidence: usize,
    /// Most bytes of evidence (canonical encoding, summed over entries) in one block. Evidence of
    /// an invalid block embeds that block, so without a byte budget two full-size entries would
    /// exceed the block decode limit and every peer would refuse the block carrying them.
    /// Evidence larger than this alone is never gathered: its offender still pays for the
    /// missed slot. Default 6 MiB, which leaves the rest of the 16 MiB block limit to items.
    pub max_block_evidence_bytes: usize,
    /// Evidence about a height older than this many blocks is refused.
    pub evidence_max_age: u64,
    pub credit: CreditRules,
}

impl Default for Params {
    fn default() -> Self {
        Params {
            rpn_size: 101,
            atn_size: 20,
            epoch_slots: 2_020,
            max_block_items: 128,
            block_interval_ms: 600_000,
            slot_ms: 3_000,
            vote_timeout_ms: 1_000,
            round_increment_ms: 500,
            resend_ms: 2_000,
            max_clock_drift_ms: 2_000,
            max_block_evidence: 16,
            max_block_evidence_bytes: 6 * 1024 * 1024,
            evidence_max_age: 1_000,
            credit: CreditRules::default(),
        }
    }
}

/// An institution as admitted: its identity and the scores (0..=100) it was rated on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InstitutionSpec {
    pub name: String,
    pub identity: Identity,
    /// Rating of the medical institution.
    pub rating: u64,
    /// Deployment scale of its information centre.
    pub scale: u64,
    /// Enterprise strength.
    pub strength: u64,
    /// Willing to serve as a representative or auditor.
    pub willing: bool,
}

/// The consortium chain's genesis.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Genesis {
    pub chain_id: String,
    pub genesis_time_ms: u64,
    pub params: Params,
    pub institutions: Vec<InstitutionSpec>,
}

impl Params {
    /// Refuses parameters no chain can run with, naming the field and the fix.
    pub fn check(&self) -> Result<(), DposError> {
        let bad = |field: &'static str, fix: &str| {
            Err(DposError::Params {
                field,
                fix: fix.to_string(),
            })
        };
        if self.rpn_size == 0 {
            return bad("rpn_size", "at least 1 representative is needed");
        }
        if self.atn_size == 0 {
            return bad(
                "atn_size",
                "at least 1 auditor is needed (4 or more tolerate a fault)",
            );
        }
        if self.epoch_slots == 0 {
            return bad("epoch_slots", "an epoch needs at least 1 slot");
        }
        if self.max_block_items == 0 {
            return bad("max_block_items", "a block must hold at least 1 item");
        }
        if self.slot_ms == 0 || self.vote_timeout_ms == 0 || self.resend_ms == 0 {
            return bad(
                "slot_ms",
                "slot_ms, vote_timeout_ms and resend_ms must be above 0",
            );
        }
        let c = &self.credit;
        let seats = self.rpn_size.max(self.atn_size) as u64;
        if c.produce_reward < c.verify_reward.saturating_mul(seats) {
            return bad(
                "credit.produce_reward",
                "must be at least max(rpn_size, atn_size) x verify_reward: a representative \
                 produces one block in rpn_size while an auditor verifies every one, so with \
                 less, honest auditors overtake honest representatives and the roles swap at \
                 every election; and a producer's reward shrinks by produce_reward / atn_size \
                 for each precommit it leaves out of its parent's certificate, which must cost \
                 it more than the verify_reward it denies the auditor",
            );
        }
        if c.threshold > c.max_credit {
            return bad(
                "credit.threshold",
                "the threshold must not exceed max_credit",
            );
        }
        Ok(())
    }
}
