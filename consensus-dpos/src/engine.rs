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
use crate::event::{Action, Event, Timer};
use crate::evidence::{offence_id, verify_evidence};
use crate::mutant::Mutant;
use crate::params::Params;
use crate::persist::PersistedState;
use crate::{Application, RestoreError};

/// Votes for rounds further ahead than this are dropped, which bounds what a Byzantine auditor
/// can make a node store.
const MAX_ROUNDS_AHEAD: u64 = 10_000;
/// Messages for the next height kept until this node reaches it.
const MAX_FUTURE: usize = 4_096;
/// Pending items beyond this are refused (the node's mempool admits far fewer).
const MAX_PENDING: usize = 100_000;
/// Evidence entries kept for proposing. One per offence, each leaving when applied or too old
/// (`evidence_max_age`), so honest pools stay far below this; the bound holds even if many
/// institutions misbehave at once.
const EVIDENCE_POOL_LIMIT: usize = 1_024;

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
            Event::Sync(blocks) => self.on_sync(now_ms, blocks, app),
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

    // ---- inputs -------------------------------------------------------------------------

    fn on_submit(&mut self, now: u64, item: Vec<u8>, app: &impl Application) {
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
    fn work_due_at(&self, now: u64) -> Option<u64> {
        if !self.evidence_pool.is_empty() || self.pending.len() >= self.params().max_block_items {
            return Some(now);
        }
        self.pending_order
            .keys()
            .next()
            .map(|(arrival, _)| arrival + self.params().block_interval_ms)
    }

    fn arm_work_timers(&mut self, now: u64) {
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

    fn on_timer(&mut self, now: u64, t: Timer, app: &impl Application) {
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

    fn on_message(&mut self, now: u64, from: u32, msg: v1::DposMessage, app: &impl Application) {
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
            return;
        }
        if height > self.height() {
            if height == self.height() + 1 && self.future.len() < MAX_FUTURE {
                self.future.push((from, msg));
            }
            return;
        }
        match msg.kind {
            Some(Kind::Proposal(p)) => self.on_proposal(now, p, app),
            Some(Kind::Vote(v)) => self.on_vote(v),
            _ => {}
        }
    }

    /// Asks for the missing final blocks, from each peer that claims to have them in turn, so a
    /// peer that claims but does not serve (Byzantine) cannot stall catch-up.
    fn request_sync(&mut self, now: u64, peer: u32) {
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

    fn on_proposal(&mut self, now: u64, msg: v1::DposProposalMessage, app: &impl Application) {
        let (Some(p), Some(block)) = (msg.proposal, msg.block) else {
            return;
        };
        // Relays and re-sends repeat proposals: skip one already held before checking it again.
        if self.proposals.get(&p.round).is_some_and(|l| {
            l.iter()
                .any(|(q, _)| q.signature == p.signature && q.block_hash == p.block_hash)
        }) {
            return;
        }
        let expected = self.chain.registry.proposer(p.height, p.round);
        if p.proposer != expected || p.round > self.round + MAX_ROUNDS_AHEAD {
            return;
        }
        let Some(identity) = self.chain.registry.identity(p.proposer).copied() else {
            return;
        };
        let Ok(hash) = verify_proposal(&p, &self.cfg.chain_id, &identity, &self.verifier) else {
            return;
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
        }
        let Some(header) = &block.header else { return };
        if block_hash(header) != hash {
            return; // the block does not match what the proposer signed (tampered in relay)
        }
        let pol = pol_round(&p);
        if pol.is_some_and(|vr| vr >= p.round) {
            return;
        }
        if pol.is_none() && header.producer != p.proposer {
            return; // a fresh proposal must be the proposer's own block
        }
        if header.timestamp_ms > now + self.params().max_clock_drift_ms {
            return; // from the future; a re-send will bring it back when it is not
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
                Err(BlockFault::Unacceptable(_)) => return,
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

    fn on_vote(&mut self, v: v1::DposVote) {
        if !self.chain.registry.is_auditor(v.voter) || v.round > self.round + MAX_ROUNDS_AHEAD {
            return;
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
            return;
        };
        let Ok(value) = verify_vote(&v, &self.cfg.chain_id, &identity, &self.verifier) else {
            return;
        };
        self.record_vote(v, value);
    }

    fn record_vote(&mut self, v: v1::DposVote, value: VoteValue) {
        let book = match value.kind {
            DposVoteKind::Prevote => &mut self.prevotes,
            _ => &mut self.precommits,
        };
        let votes = book.entry(v.round).or_default().entry(v.voter).or_default();
        if votes
            .iter()
            .any(|(_, fv)| (fv.block, fv.rejected) == (value.block, value.rejected))
            || votes.len() >= 2
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

    fn wrong_verdict(&self, vote: &v1::DposVote, hash: Hash32) -> Option<dpos_evidence::Kind> {
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
    fn check_verdicts_against(&mut self, hash: Hash32) {
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
    fn evidence_pool_insert(&mut self, kind: dpos_evidence::Kind) {
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

    fn on_sync(
        &mut self,
        now: u64,
        mut blocks: Vec<v1::DposFinalizedBlock>,
        app: &impl Application,
    ) {
        self.sync_outstanding = false;
        blocks.sort_by_key(|b| b.certificate.as_ref().map_or(0, |c| c.height));
        for fb in blocks {
            let (Some(block), Some(cert)) = (&fb.block, &fb.certificate) else {
                return;
            };
            if cert.height != self.height() {
                continue;
            }
            let Ok(hash) = self.chain.check_certificate(cert, &self.verifier) else {
                return;
            };
            let Ok(checked) = self
                .chain
                .check_block(block, &self.cfg.params, app, &self.verifier)
            else {
                return;
            };
            if checked.hash != hash {
                return;
            }
            self.finalize(now, block.clone(), checked, cert.clone(), app);
        }
    }

    // ---- the protocol --------------------------------------------------------------------

    /// Distinct voters with a vote for `hash` (nil when `None`) in `round`.
    fn count(book: &Book, round: u64, hash: Option<Hash32>) -> usize {
        book.get(&round).map_or(0, |m| {
            m.values()
                .filter(|votes| votes.iter().any(|(_, v)| v.block == hash))
                .count()
        })
    }

    /// Distinct voters in `round`.
    fn total(book: &Book, round: u64) -> usize {
        book.get(&round).map_or(0, |m| m.len())
    }

    fn verdict_valid(&self, hash: &Hash32) -> bool {
        matches!(self.blocks.get(hash), Some((_, Verdict::Valid(_))))
    }

    /// Applies every rule whose condition holds until none does.
    fn progress(&mut self, now: u64, app: &impl Application) {
        for _ in 0..10_000 {
            if !self.step_once(now, app) {
                return;
            }
        }
    }

    fn step_once(&mut self, now: u64, app: &impl Application) -> bool {
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

    fn certificate(&self, round: u64, hash: Hash32) -> v1::DposFinalityCertificate {
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

    fn enter_round(&mut self, round: u64, now: u64, app: &impl Application) {
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

    fn maybe_propose(&mut self, now: u64, app: &impl Application) {
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

    fn build_block(&mut self, now: u64, app: &impl Application) -> v1::DposBlock {
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
            v1::DposFinalityCertificate::decode_canonical(&self.chain.last_certificate).ok()
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
    fn cast(&mut self, kind: DposVoteKind, block: Option<Hash32>, rejected: Option<Hash32>) {
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

    fn finalize(
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
        self.dirty = true;
        self.enter_round(0, now, app);
        for (from, msg) in std::mem::take(&mut self.future) {
            self.on_message(now, from, msg, app);
        }
    }

    /// Sends the prevotes that justify `hash` at round `vr` (a proof of lock), with the
    /// proposal, so every node can check a re-proposal or unlock.
    fn broadcast_pol(&mut self, vr: u64, hash: Hash32) {
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
    fn resend(&mut self) {
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

#[cfg(test)]
mod tests {
    use medchain_crypto::validators::EcdsaVerifier;

    use crate::local_cluster::{test_params, LocalCluster};
    use crate::{Event, Params};

    fn hashes(c: &LocalCluster<EcdsaVerifier>, i: usize) -> Vec<Vec<u8>> {
        c.ledgers[i]
            .blocks
            .iter()
            .map(|b| {
                medchain_proto::dpos::block_hash(b.block.as_ref().unwrap().header.as_ref().unwrap())
                    .as_bytes()
                    .to_vec()
            })
            .collect()
    }

    #[test]
    fn a_small_consortium_finalizes_items_with_identical_chains_and_credit() {
        let mut c = LocalCluster::new(4, 3, 0, test_params(), EcdsaVerifier);
        c.start();
        for k in 0..20 {
            c.submit_all(format!("slip {k}").as_bytes());
        }
        let mut guard = 0;
        while c.ledgers.iter().any(|l| l.items.len() < 20) {
            assert!(c.fire_next(), "stalled");
            guard += 1;
            assert!(guard < 10_000);
        }
        for i in 1..c.engines.len() {
            assert_eq!(hashes(&c, 0), hashes(&c, i), "node {i} chain");
            assert_eq!(c.ledgers[0].state.digest(), c.ledgers[i].state.digest());
        }
        // Every block's producer earned credit, every certificate has more than 2/3 of 3.
        let rules = &c.ledgers[0].state.registry;
        for b in &c.ledgers[0].blocks {
            assert!(b.certificate.as_ref().unwrap().precommits.len() >= 3);
            let producer = b.block.as_ref().unwrap().header.as_ref().unwrap().producer;
            assert!(rules.rpn().contains(&producer));
        }
        let first = &c.ledgers[0].blocks[0];
        let producer = first
            .block
            .as_ref()
            .unwrap()
            .header
            .as_ref()
            .unwrap()
            .producer;
        let start = crate::ChainState::genesis(&crate::local_cluster::test_genesis(
            &c.keys,
            4,
            3,
            test_params(),
        ))
        .unwrap();
        assert!(
            c.ledgers[0].state.registry.credit(producer) > start.registry.credit(producer),
            "producing earns credit"
        );
    }

    #[test]
    fn a_silent_representative_is_charged_and_replaced_by_the_best_auditor() {
        let mut params = test_params();
        params.credit.missed_slot_penalty = 100_000; // one missed slot drops it below threshold
        let mut c = LocalCluster::new(4, 3, 2, params, EcdsaVerifier);
        let silent = c.ledgers[0].state.registry.proposer(1, 0);
        let best_auditor = c.ledgers[0].state.registry.atn()[0];
        c.crash(silent);
        c.start();
        for k in 0..12 {
            c.submit_all(format!("slip {k}").as_bytes());
            assert!(c.run_until_height(k / 3 + 1, 1_000_000));
        }
        assert!(c.run_until_height(3, 1_000_000));
        let reg = &c.ledgers[0].state.registry;
        assert!(!reg.rpn().contains(&silent), "still a representative");
        assert!(
            reg.rpn().contains(&best_auditor),
            "the best auditor took its place"
        );
        assert_eq!(reg.atn().len(), 3, "auditors refilled from the spares");
        assert_eq!(reg.credit(silent), Some(0));
    }

    /// Issue 14: a persisted state above the stored chain means the chain lost final blocks; the
    /// engine refuses to start rather than drop the state and possibly sign against it. A record
    /// that does not decode refuses the start too, and a state for a final height is ignored.
    #[test]
    fn restore_refuses_state_ahead_of_the_chain_or_damaged() {
        use crate::local_cluster::{test_genesis, test_keys};
        use crate::{ChainState, Config, Engine, PersistedState, RestoreError};
        let keys = test_keys(7);
        let genesis = test_genesis(&keys, 4, 3, test_params());
        let chain = ChainState::genesis(&genesis).unwrap();
        let ledger = crate::local_cluster::MemoryLedger {
            blocks: Vec::new(),
            state: chain.clone(),
            items: Default::default(),
            persisted: None,
        };
        let restore = |p: PersistedState| {
            let cfg = Config {
                chain_id: genesis.chain_id.clone(),
                me: 1,
                params: genesis.params.clone(),
            };
            Engine::restore(
                cfg,
                keys[1].clone(),
                EcdsaVerifier,
                chain.clone(),
                Some(p),
                &ledger,
            )
            .map(|_| ())
        };
        let ahead = PersistedState {
            height: 5,
            ..Default::default()
        };
        assert_eq!(
            restore(ahead),
            Err(RestoreError::AheadOfChain {
                persisted: 5,
                tip: 0
            })
        );
        let damaged = PersistedState {
            height: 1,
            votes: vec![vec![0xff, 0x00]],
            ..Default::default()
        };
        let err = restore(damaged).unwrap_err();
        assert!(
            matches!(&err, RestoreError::Damaged { record, .. } if record == "own vote"),
            "{err}"
        );
        assert_eq!(
            restore(PersistedState::default()),
            Ok(()),
            "height 0 is final"
        );
    }

    #[test]
    fn a_restarted_auditor_signs_nothing_new_for_what_it_voted() {
        let mut c = LocalCluster::new(4, 4, 0, test_params(), EcdsaVerifier);
        let auditor = c.ledgers[0].state.registry.atn()[0];
        // Two of four auditors are down, so nothing becomes final and the height stays open.
        let atn = c.ledgers[0].state.registry.atn().to_vec();
        c.crash(atn[1]);
        c.crash(atn[2]);
        c.start();
        c.submit_all(b"slip");
        let mut guard = 0;
        while c.ledgers[auditor as usize]
            .persisted
            .as_ref()
            .is_none_or(|p| p.votes.is_empty())
        {
            assert!(c.fire_next() && guard < 1_000, "the auditor never voted");
            guard += 1;
        }
        assert!(c.ledgers[auditor as usize].blocks.is_empty());
        let before = c.ledgers[auditor as usize].persisted.clone().unwrap();
        c.crash(auditor);
        c.restart(auditor);
        let after = c.ledgers[auditor as usize].persisted.clone().unwrap();
        for v in &before.votes {
            assert!(
                after.votes.contains(v),
                "a vote was forgotten across the restart"
            );
        }
        // Its re-sent votes are byte-identical to the persisted ones.
        let actions =
            c.engines[auditor as usize].handle(c.now, Event::Start, &c.ledgers[auditor as usize]);
        for a in actions {
            if let crate::Action::Broadcast(m) = a {
                if let Some(medchain_proto::v1::dpos_message::Kind::Vote(v)) = m.kind {
                    use medchain_proto::canonical::Canonical;
                    assert!(
                        after.votes.contains(&v.canonical_bytes()),
                        "a new vote was signed"
                    );
                }
            }
        }
    }

    #[test]
    fn epochs_reelect_and_reshuffle() {
        let params = Params {
            epoch_slots: 3,
            ..test_params()
        };
        let mut c = LocalCluster::new(4, 3, 0, params, EcdsaVerifier);
        c.start();
        for k in 0..8 {
            c.submit_all(format!("slip {k}").as_bytes());
            assert!(c.run_until_height(k + 1, 1_000_000));
        }
        let reg = &c.ledgers[0].state.registry;
        assert!(reg.epoch >= 2, "epoch {}", reg.epoch);
        assert_eq!(reg.rpn().len(), 4);
        assert_eq!(reg.atn().len(), 3);
    }
}
