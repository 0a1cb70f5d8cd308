//! The DPoS state machine (protocol in the crate docs).

use std::collections::{BTreeMap, BTreeSet};

use medchain_crypto::validators::{Signer, Verifier};
use medchain_crypto::Hash32;
use medchain_proto::canonical::Canonical;
use medchain_proto::dpos::{
    block_hash, extras_digest, item_id, items_root, pol_round, sign_proposal, sign_vote,
    unsigned_vote, verify_proposal, verify_vote, VoteValue,
};
use medchain_proto::v1::{self, dpos_evidence, dpos_message::Kind, DposVoteKind};

use crate::chain::{BlockFault, ChainState, CheckedBlock};
use crate::event::{Action, Event, Note, Timer};
use crate::evidence::{offence_id, verify_evidence};
use crate::mutant::Mutant;
use crate::params::Params;
use crate::persist::PersistedState;
use crate::{Application, RestoreError};

/// Votes for rounds further ahead than this are dropped, which bounds what a Byzantine auditor
/// can make a node store.
const MAX_ROUNDS_AHEAD: u64 = 10_000;
/// Messages for the next height kept until this node reaches it, in all and per sending peer (so
/// one Byzantine peer cannot crowd out the others'; everything is re-sent anyway).
const MAX_FUTURE: usize = 4_096;
const MAX_FUTURE_PER_PEER: usize = 64;
/// Votes for rounds up to this far ahead are all kept; beyond it only each auditor's votes of its
/// highest round, which is all the round-join rule needs, so a Byzantine auditor signing votes
/// for thousands of rounds makes a node store a few.
const NEAR_ROUNDS: u64 = 16;
/// Votes kept of one voter in one round and kind: two (so a double vote is evidence), plus
/// prevotes that a held re-proposal's proof of lock needs (see `record_vote`).
const MAX_VOTES_PER_VOTER_ROUND: usize = 8;
/// Pending items beyond this are refused (the node's mempool admits far fewer).
const MAX_PENDING: usize = 100_000;
/// Evidence entries kept for proposing. One per offence, each leaving when applied or too old
/// (`evidence_max_age`), so honest pools stay far below this; the bound holds even if many
/// institutions misbehave at once.
const EVIDENCE_POOL_LIMIT: usize = 1_024;
/// Final heights whose proposals are kept to catch an equivocator's twin arriving late.
const RECENT_HEIGHTS: usize = 8;

/// Static configuration of one node.
#[derive(Clone, Debug)]
pub struct Config {
    pub chain_id: String,
    /// This node's institution index in the registry.
    pub me: u32,
    pub params: Params,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Step {
    Propose,
    Prevote,
    Precommit,
}

#[derive(Clone, Debug)]
enum Verdict {
    Valid(CheckedBlock),
    Invalid,
}

/// A consortium node's consensus engine.
#[derive(Debug)]
pub struct Engine<S, V> {
    cfg: Config,
    signer: S,
    verifier: V,
    chain: ChainState,
    round: u64,
    step: Step,
    locked: Option<(u64, Hash32)>,
    valid: Option<(u64, Hash32)>,
    /// Blocks seen at this height that fit the chain, with their verdict.
    blocks: BTreeMap<Hash32, (v1::DposBlock, Verdict)>,
    /// Proposals of each round from that round's proposer, first received first (more than one
    /// only when the proposer equivocates; a few are kept so a block a quorum prevoted is known
    /// whichever version arrived first).
    proposals: BTreeMap<u64, Vec<(v1::DposProposal, Hash32)>>,
    prevotes: Book,
    precommits: Book,
    sent_proposals: BTreeMap<u64, v1::DposProposal>,
    sent_votes: BTreeMap<(u64, i32), v1::DposVote>,
    relayed: BTreeSet<u64>,
    armed: BTreeSet<Timer>,
    /// Pending items: id -> (bytes, arrival), and arrival order.
    pending: BTreeMap<Hash32, (Vec<u8>, u64)>,
    pending_order: BTreeMap<(u64, Hash32), ()>,
    evidence_pool: BTreeMap<Hash32, v1::DposEvidence>,
    /// Precommits for the last final block (its certificate's round) that came after the
    /// certificate was taken: the next block's parent certificate carries them too, so their
    /// auditors earn their verification credit. At most one per auditor of that height.
    late_precommits: BTreeMap<u32, Vec<u8>>,
    /// The proposals held when each of the last [`RECENT_HEIGHTS`] heights became final, newest
    /// last. An equivocator's twin that arrives after its height is final is still evidence:
    /// once the network is stable, heights can finish faster than twins travel, and an offence
    /// seen only after the fact would otherwise go unpunished.
    recent_proposals: std::collections::VecDeque<(u64, Vec<v1::DposProposal>)>,
    future: Vec<(u32, v1::DposMessage)>,
    sync_outstanding: bool,
    /// Peers that announced a final height above this node's, asked in turn.
    sync_peers: BTreeSet<u32>,
    last_sync_peer: u32,
    produce_at: Option<u64>,
    dirty: bool,
    out_final: Vec<Action>,
    out: Vec<Action>,
}

/// Votes of one kind: round -> voter -> what it voted. A voter that votes twice differently in a
/// round (a Byzantine double vote) keeps both, at most two: its vote counts toward either value,
/// which is what a Byzantine voter can do anyway, and honest nodes that saw different halves still
/// count the same quorum.
type Book = BTreeMap<u64, BTreeMap<u32, Vec<(v1::DposVote, VoteValue)>>>;

fn kind_of(k: DposVoteKind) -> i32 {
    k as i32
}

impl<S: Signer, V: Verifier> Engine<S, V> {
    /// A node starting from `chain` (genesis or its stored tip) with nothing signed at the next
    /// height.
    pub fn new(cfg: Config, signer: S, verifier: V, chain: ChainState) -> Self {
        Engine {
            cfg,
            signer,
            verifier,
            chain,
            round: 0,
            step: Step::Propose,
            locked: None,
            valid: None,
            blocks: BTreeMap::new(),
            proposals: BTreeMap::new(),
            prevotes: BTreeMap::new(),
            precommits: BTreeMap::new(),
            sent_proposals: BTreeMap::new(),
            sent_votes: BTreeMap::new(),
            relayed: BTreeSet::new(),
            armed: BTreeSet::new(),
            pending: BTreeMap::new(),
            pending_order: BTreeMap::new(),
            evidence_pool: BTreeMap::new(),
            late_precommits: BTreeMap::new(),
            recent_proposals: std::collections::VecDeque::new(),
            future: Vec::new(),
            sync_outstanding: false,
            sync_peers: BTreeSet::new(),
            last_sync_peer: 0,
            produce_at: None,
            dirty: false,
            out_final: Vec::new(),
            out: Vec::new(),
        }
    }

    /// A node restarting from its stored chain state and its persisted consensus state. What it
    /// signed at the current height is reloaded, so it re-sends the same votes and never signs
    /// different ones; persisted state for a height that is already final is discarded. State
    /// for a height above the next one (the chain lost final blocks) or a record that does not
    /// decode refuses the start: skipping it could let the node sign against its own votes.
    pub fn restore(
        cfg: Config,
        signer: S,
        verifier: V,
        chain: ChainState,
        persisted: Option<PersistedState>,
        app: &impl Application,
    ) -> Result<Self, RestoreError> {
        let mut e = Engine::new(cfg, signer, verifier, chain);
        let tip = e.chain.height;
        let Some(p) = persisted else {
            return Ok(e);
        };
        if p.height > tip + 1 {
            return Err(RestoreError::AheadOfChain {
                persisted: p.height,
                tip,
            });
        }
        if p.height <= tip {
            // Its height is final already: nothing in it can be signed again.
            return Ok(e);
        }
        let damaged = |record: &str, reason: String| RestoreError::Damaged {
            record: record.to_string(),
            reason,
        };
        e.round = p.round;
        let mut loaded = BTreeMap::new();
        // The verdict is judged again on the same chain state, so it is what it was before the
        // crash: valid, invalid (provably, from the block alone), or unacceptable here (never
        // stored as a verdict, as on intake).
        let mut load_block = |bytes: &[u8], record: &str| -> Result<Option<Hash32>, RestoreError> {
            let block = v1::DposBlock::decode_canonical(bytes)
                .map_err(|err| damaged(record, err.to_string()))?;
            let header = block
                .header
                .as_ref()
                .ok_or_else(|| damaged(record, "block without header".into()))?;
            let hash = block_hash(header);
            let verdict = match e.chain.check_block(&block, &e.cfg.params, app, &e.verifier) {
                Ok(c) => Verdict::Valid(c),
                Err(BlockFault::Invalid(_)) => Verdict::Invalid,
                Err(BlockFault::Unacceptable(_)) => return Ok(None),
            };
            loaded.insert(hash, (block, verdict));
            Ok(Some(hash))
        };
        let locked = match p.locked {
            Some((r, b)) => load_block(&b, "locked block")?.map(|h| (r, h)),
            None => None,
        };
        let valid = match p.valid {
            Some((r, b)) => load_block(&b, "valid block")?.map(|h| (r, h)),
            None => None,
        };
        let mut proposals = Vec::new();
        for (proposal, block) in &p.proposals {
            let prop = v1::DposProposal::decode_canonical(proposal)
                .map_err(|err| damaged("own proposal", err.to_string()))?;
            if let Some(hash) = load_block(block, "own proposal's block")? {
                proposals.push((prop, hash));
            }
        }
        e.blocks = loaded;
        e.locked = locked;
        e.valid = valid;
        for (prop, hash) in proposals {
            e.proposals
                .entry(prop.round)
                .or_default()
                .push((prop.clone(), hash));
            e.sent_proposals.insert(prop.round, prop);
        }
        let me = e.signer.identity();
        for bytes in &p.votes {
            let v = v1::DposVote::decode_canonical(bytes)
                .map_err(|err| damaged("own vote", err.to_string()))?;
            if let Ok(value) = verify_vote(&v, &e.cfg.chain_id, &me, &e.verifier) {
                e.sent_votes.insert((v.round, v.kind), v.clone());
                e.record_vote(v, value);
            }
        }
        // Resume past the steps already voted in.
        if e.sent_votes
            .contains_key(&(e.round, kind_of(DposVoteKind::Precommit)))
        {
            e.step = Step::Precommit;
        } else if e
            .sent_votes
            .contains_key(&(e.round, kind_of(DposVoteKind::Prevote)))
        {
            e.step = Step::Prevote;
        }
        Ok(e)
    }

    pub fn chain(&self) -> &ChainState {
        &self.chain
    }

    /// (height being decided, round).
    pub fn position(&self) -> (u64, u64) {
        (self.chain.height + 1, self.round)
    }

    pub fn pending_len(&self) -> usize {
        self.pending.len()
    }

    pub fn evidence_pool_len(&self) -> usize {
        self.evidence_pool.len()
    }

    fn height(&self) -> u64 {
        self.chain.height + 1
    }

    fn params(&self) -> &Params {
        &self.cfg.params
    }

    fn is_auditor(&self) -> bool {
        self.chain.registry.is_auditor(self.cfg.me)
    }

    fn quorum(&self) -> usize {
        self.chain.quorum()
    }

    /// Distinct auditors needed to be sure one of them is honest.
    fn weak_quorum(&self) -> usize {
        self.chain.registry.atn().len() + 1 - self.quorum()
    }

    /// Handles one event at `now_ms`.
    pub fn handle(&mut self, now_ms: u64, event: Event, app: &impl Application) -> Vec<Action> {
        match event {
            Event::Start => {
                self.arm(Timer::Resend, now_ms + self.params().resend_ms);
                self.resend();
                self.enter_round(self.round, now_ms, app);
            }
            Event::Message { from, msg } => self.on_message(now_ms, from, msg, app),
            Event::Submit(item) => self.on_submit(now_ms, item, app),
            Event::Timer(t) => self.on_timer(now_ms, t, app),
            // Answers come from the peer this node asked last.
            Event::Sync(blocks) => self.on_sync(now_ms, self.last_sync_peer, blocks, app),
        }
        self.progress(now_ms, app);
        // A full block (or evidence) makes work due at once, not at a timer.
        self.maybe_propose(now_ms, app);
        self.arm_work_timers(now_ms);
        let mut actions = std::mem::take(&mut self.out_final);
        if std::mem::take(&mut self.dirty) {
            actions.push(Action::Persist(Box::new(self.persisted())));
        }
        actions.append(&mut self.out);
        actions
    }

    fn persisted(&self) -> PersistedState {
        let block_bytes = |h: &Hash32| {
            self.blocks
                .get(h)
                .map(|(b, _)| b.canonical_bytes())
                .unwrap_or_default()
        };
        PersistedState {
            height: self.height(),
            round: self.round,
            locked: self.locked.map(|(r, h)| (r, block_bytes(&h))),
            valid: self.valid.map(|(r, h)| (r, block_bytes(&h))),
            proposals: self
                .sent_proposals
                .values()
                .map(|p| {
                    let hash = Hash32::from_slice(&p.block_hash).unwrap_or(Hash32::ZERO);
                    (p.canonical_bytes(), block_bytes(&hash))
                })
                .collect(),
            votes: self
                .sent_votes
                .values()
                .map(|v| v.canonical_bytes())
                .collect(),
        }
    }

    fn arm(&mut self, timer: Timer, at_ms: u64) {
        self.out.push(Action::SetTimer { timer, at_ms });
    }

    fn round_extra(&self, round: u64) -> u64 {
        self.params()
            .round_increment_ms
            .saturating_mul(round.min(1_000))
    }
}

mod inputs;
mod produce;
mod rounds;
mod votes;

#[cfg(test)]
mod tests;
