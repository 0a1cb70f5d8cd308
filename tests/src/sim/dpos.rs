//! The credit-scored DPoS engine under seeded faults.
//!
//! Checked on every final block: agreement (no two honest nodes finalize different blocks at one
//! height), validity (a final block holds only valid items), credit agreement (every honest node
//! holds the same chain state, credit and roles included, after each height), and that no expelled
//! institution holds a role. Checked at the end: replacement (a representative that keeps
//! misbehaving after the network stabilised is out of the producer set within a bounded number of
//! heights) and liveness (after GST, with crashed nodes restarted, every item is final on every
//! honest node within [`LIVENESS_BOUND_MS`]).

use std::collections::{BTreeMap, BTreeSet};

use medchain_crypto::validators::CachingVerifier;
use medchain_crypto::{Hash32, SigningKey};
use medchain_dpos::{
    Action, Application, ChainState, Config, Engine, Event, Genesis, InstitutionSpec, Mutant,
    Params, PersistedState, Timer,
};
use medchain_proto::dpos::{
    block_hash, extras_digest, items_root, pol_round, sign_proposal, sign_vote, unsigned_vote,
};
use medchain_proto::v1::{self, dpos_message::Kind};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::network::{
    crash_schedule, cut_point, long_asynchrony, partitions, slow_links, Crash, Cut, NetConfig,
    Queue,
};
use super::{Trace, Violation};

/// After GST every item must be final everywhere within this much virtual time.
pub const LIVENESS_BOUND_MS: u64 = 240_000;
/// A misbehaving representative must be out of the producer set this many heights after its
/// misbehaviour became chargeable (see [`Scenario::strikes_needed`]).
pub const REPLACEMENT_BOUND_HEIGHTS: u64 = 3;
const CHAIN: &str = "sim-consortium";

/// What a Byzantine institution does wrong (in whatever role it holds).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Behaviour {
    /// Sends nothing: a representative that misses its slots, an auditor that withholds votes.
    Silent,
    /// As representative, signs two different blocks for its slot and shows each to half.
    Equivocator,
    /// As representative, proposes blocks holding an invalid item.
    InvalidBlock,
    /// As representative, signs three blocks for its slot (its own, one with another timestamp
    /// and one holding an invalid item) and shows all of them to everyone: honest nodes see
    /// several pieces of evidence of one offence.
    MultiProposer,
    /// As auditor, accepts every block, invalid ones included, and votes for them.
    AttestInvalid,
    /// As auditor, rejects every valid block.
    RejectValid,
    /// As auditor, sends its vote to half the nodes and a different vote to the other half.
    DoubleVoter,
    /// As representative, in a round after the first, re-proposes the oldest block that a quorum
    /// prevoted at this height, with that old round as its proof-of-lock round, instead of the
    /// latest one; it knows every prevote any node sent (the colluders' shared view). Its fresh
    /// blocks it shows to every node but one auditor.
    StalePol,
    /// As auditor, instead of its engine's votes: prevotes and precommits every fresh proposal it
    /// sees, each to one honest auditor only (splitting the honest auditors' locks), and backs a
    /// re-proposal by sending everyone its prevote of the proof-of-lock round and its votes for
    /// the re-proposal.
    Colluder,
}

const RPN_BEHAVIOURS: [Behaviour; 5] = [
    Behaviour::Silent,
    Behaviour::Equivocator,
    Behaviour::InvalidBlock,
    Behaviour::MultiProposer,
    Behaviour::StalePol,
];
const ATN_BEHAVIOURS: [Behaviour; 5] = [
    Behaviour::Silent,
    Behaviour::AttestInvalid,
    Behaviour::RejectValid,
    Behaviour::DoubleVoter,
    Behaviour::Colluder,
];

/// The mutation check's deliberate engine bugs, by the names the command line uses.
pub const MUTANTS: [(&str, Mutant); 2] = [
    ("unlock-on-lower-pol", Mutant::UnlockOnLowerPol),
    (
        "certificate-against-next-auditors",
        Mutant::CertificateAgainstNextAuditors,
    ),
];

/// One seeded fault schedule.
#[derive(Clone, Debug)]
pub struct Scenario {
    pub seed: u64,
    pub rpn: usize,
    pub atn: usize,
    /// Institutions beyond R + A, eligible to refill the sets.
    pub spares: usize,
    pub byzantine: Vec<(u32, Behaviour)>,
    /// (node, crash time, restart time); restarts happen before GST.
    pub crashes: Vec<Crash>,
    pub items: usize,
    pub params: Params,
    /// Admission scores (rating = scale = strength) per institution.
    pub scores: Vec<u64>,
    pub net: NetConfig,
    /// Finality with fewer precommits than the real threshold, to show the checkers catch it.
    pub broken_threshold: bool,
    /// A deliberate engine bug in every node (the mutation check).
    pub mutant: Option<Mutant>,
}

fn sim_params(rng: &mut ChaCha8Rng, rpn: usize, atn: usize) -> Params {
    let mut p = Params {
        rpn_size: rpn,
        atn_size: atn,
        epoch_slots: rng.gen_range(8..=40),
        max_block_items: rng.gen_range(2..=8),
        block_interval_ms: 300,
        slot_ms: 1_000,
        vote_timeout_ms: 300,
        round_increment_ms: 200,
        resend_ms: 1_000,
        max_clock_drift_ms: 1_000,
        max_block_evidence: 8,
        evidence_max_age: 50,
        ..Params::default()
    };
    p.credit.missed_slot_penalty = 400;
    p.credit.invalid_block_penalty = 5_000;
    p
}

impl Scenario {
    /// The scenario of `seed`. `large` forces the 121-institution consortium (101 RPN + 20 ATN);
    /// otherwise small consortia (4-7 representatives, 3-7 auditors), and one seed in 50 is large.
    pub fn generate(seed: u64, large: Option<bool>) -> Self {
        let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0xd905_51ab_c0de_2026);
        let large = large.unwrap_or(seed % 50 == 49);
        let (rpn, atn, spares) = if large {
            (101, 20, 0)
        } else {
            *[(4, 3, 3), (4, 4, 5), (5, 7, 6), (7, 4, 5), (4, 7, 6)]
                .choose(&mut rng)
                .expect("non-empty")
        };
        let n = rpn + atn + spares;
        // Byzantine institutions: at most f of the auditor set in total, whatever roles they
        // end up in (a large consortium keeps a margin for sets that shrink).
        let f = (atn - 1) / 3;
        let max_byz = if large { 3 } else { f };
        let b = rng.gen_range(0..=max_byz);
        let mut scores: Vec<u64> = (0..n).map(|_| rng.gen_range(64..=90)).collect();
        // The genesis ranking decides the first roles: give chosen Byzantine institutions a rank.
        scores.sort_unstable_by(|a, b| b.cmp(a));
        let mut byzantine = Vec::new();
        let mut taken = BTreeSet::new();
        for _ in 0..b {
            let as_rpn = rng.gen_bool(0.5);
            let idx = if as_rpn {
                rng.gen_range(0..rpn)
            } else {
                rng.gen_range(rpn..rpn + atn)
            } as u32;
            if !taken.insert(idx) {
                continue;
            }
            let behaviour = if as_rpn {
                *RPN_BEHAVIOURS.choose(&mut rng).expect("non-empty")
            } else {
                *ATN_BEHAVIOURS.choose(&mut rng).expect("non-empty")
            };
            byzantine.push((idx, behaviour));
        }
        let gst = rng.gen_range(6_000..=25_000);
        let honest: Vec<u32> = (0..n as u32).filter(|i| !taken.contains(i)).collect();
        let crash_count = rng.gen_range(0..=2usize).min(honest.len());
        let chosen: Vec<u32> = honest
            .choose_multiple(&mut rng, crash_count)
            .copied()
            .collect();
        let crashes = crash_schedule(&mut rng, &chosen, gst);
        let partitions = partitions(&mut rng, n, gst, 8_000);
        let params = sim_params(&mut rng, rpn, atn);
        Scenario {
            seed,
            rpn,
            atn,
            spares,
            byzantine,
            crashes,
            items: if large {
                rng.gen_range(10..=20)
            } else {
                rng.gen_range(12..=40)
            },
            params,
            scores,
            net: NetConfig {
                drop_per_mille: rng.gen_range(0..=120),
                duplicate_per_mille: rng.gen_range(0..=80),
                max_delay_ms: long_asynchrony(&mut rng).unwrap_or_else(|| rng.gen_range(5..=250)),
                max_delay_after_gst_ms: 50,
                gst_ms: gst,
                partitions,
                slow_links: slow_links(&mut rng, n),
            },
            broken_threshold: false,
            mutant: None,
        }
    }

    pub fn n(&self) -> usize {
        self.rpn + self.atn + self.spares
    }

    pub fn genesis(&self, keys: &[SigningKey]) -> Genesis {
        Genesis {
            chain_id: CHAIN.into(),
            genesis_time_ms: 0,
            params: self.params.clone(),
            institutions: keys
                .iter()
                .zip(&self.scores)
                .enumerate()
                .map(|(i, (k, s))| InstitutionSpec {
                    name: format!("inst{i}"),
                    identity: k.identity(),
                    rating: *s,
                    scale: *s,
                    strength: *s,
                    willing: true,
                })
                .collect(),
        }
    }

    /// Chargeable misbehaviours after which `who` must have lost its representative seat.
    pub fn strikes_needed(&self, who: u32, behaviour: Behaviour) -> usize {
        let c = &self.params.credit;
        match behaviour {
            Behaviour::Silent => {
                let credit = (c.weight_rating + c.weight_scale + c.weight_strength)
                    * self.scores[who as usize];
                let excess = credit.saturating_sub(c.threshold) + 1;
                excess.div_ceil(c.missed_slot_penalty) as usize
            }
            _ => 1,
        }
    }

    pub fn describe(&self) -> String {
        let byz: Vec<String> = self
            .byzantine
            .iter()
            .map(|(r, b)| format!("i{r}:{b:?}"))
            .collect();
        format!(
            "seed {} rpn={} atn={} spares={} byzantine=[{}] crashes={} partitions={} slow-links={} items={} batch={} epoch={} drop={}‰ dup={}‰ delay<={}ms gst={}ms{}{}",
            self.seed,
            self.rpn,
            self.atn,
            self.spares,
            byz.join(","),
            self.crashes.len(),
            self.net.partitions.len(),
            self.net.slow_links.len(),
            self.items,
            self.params.max_block_items,
            self.params.epoch_slots,
            self.net.drop_per_mille,
            self.net.duplicate_per_mille,
            self.net.max_delay_ms,
            self.net.gst_ms,
            if self.broken_threshold { " BROKEN-THRESHOLD" } else { "" },
            self.mutant.map(|m| format!(" MUTANT={m:?}")).unwrap_or_default()
        )
    }
}

/// What one run produced.
#[derive(Debug)]
pub struct Outcome {
    pub violation: Option<Violation>,
    pub trace_hash: String,
    pub trace: Vec<String>,
    pub events: u64,
    pub end_ms: u64,
    /// Height reached by the slowest honest node.
    pub height: u64,
    /// Byzantine representatives removed from the producer set during the run.
    pub replaced: usize,
}

struct SimApp<'a> {
    finals: &'a BTreeSet<Vec<u8>>,
    accept_anything: bool,
}

impl Application for SimApp<'_> {
    fn validate_item(&self, item: &[u8]) -> Result<(), String> {
        if self.accept_anything || item.starts_with(b"valid:") {
            Ok(())
        } else {
            Err("not a valid consortium slip".into())
        }
    }
    fn already_final(&self, item: &[u8]) -> bool {
        self.finals.contains(item)
    }
}

type Eng = Engine<SigningKey, CachingVerifier>;

struct NodeState {
    engine: Option<Eng>,
    chain: Vec<v1::DposFinalizedBlock>,
    state: ChainState,
    finals: BTreeSet<Vec<u8>>,
    persisted: Option<PersistedState>,
    behaviour: Option<Behaviour>,
}

#[derive(Debug)]
enum Wire {
    Dpos(Box<v1::DposMessage>),
    SyncRequest(u64),
    SyncResponse(Vec<v1::DposFinalizedBlock>),
}

#[derive(Debug)]
enum Ev {
    Deliver { to: u32, from: u32, wire: Wire },
    Timer { to: u32, timer: Timer, gen: u64 },
    Submit { to: u32, item: Vec<u8> },
    Crash(u32, Cut),
    Restart(u32),
    Resubmit,
}

struct Sim<'a> {
    scn: &'a Scenario,
    rng: ChaCha8Rng,
    now: u64,
    queue: Queue<Ev>,
    nodes: Vec<NodeState>,
    up: Vec<bool>,
    keys: Vec<SigningKey>,
    verifier: CachingVerifier,
    timers: BTreeMap<(u32, Timer), u64>,
    gen: u64,
    decided: BTreeMap<u64, (Hash32, Hash32)>,
    rpn_after: BTreeMap<u64, Vec<u32>>,
    /// Byzantine misbehaviour as representative after GST: institution -> (height, round).
    strikes: BTreeMap<u32, Vec<(u64, u64)>>,
    items: Vec<Vec<u8>>,
    submitted: BTreeSet<Vec<u8>>,
    trace: Trace,
    violation: Option<Violation>,
    events: u64,
    /// A crash waiting for the call it cuts, per institution.
    armed: Vec<Option<Cut>>,
    /// The colluders' shared view: every block proposed, and every prevote sent, by anyone.
    seen_blocks: BTreeMap<Hash32, v1::DposBlock>,
    seen_prevotes: BTreeMap<(u64, u64, Hash32), BTreeSet<u32>>,
}

fn hex4(d: &[u8]) -> String {
    d.iter().take(3).map(|b| format!("{b:02x}")).collect()
}

fn summary(m: &v1::DposMessage) -> String {
    match &m.kind {
        Some(Kind::Proposal(p)) => {
            let pr = p.proposal.clone().unwrap_or_default();
            format!(
                "Proposal(h{},r{},{},pol{})",
                pr.height,
                pr.round,
                hex4(&pr.block_hash),
                pr.pol_round
            )
        }
        Some(Kind::Vote(v)) => format!(
            "{}(h{},r{},i{},{}{})",
            if v.kind == v1::DposVoteKind::Prevote as i32 {
                "Prevote"
            } else {
                "Precommit"
            },
            v.height,
            v.round,
            v.voter,
            if v.block_hash.is_empty() {
                "nil".into()
            } else {
                hex4(&v.block_hash)
            },
            if v.rejected.is_empty() {
                String::new()
            } else {
                format!(" reject {}", hex4(&v.rejected))
            }
        ),
        Some(Kind::Status(s)) => format!("Status(h{})", s.height),
        None => "Empty".into(),
    }
}

impl Sim<'_> {
    fn record(&mut self, line: impl FnOnce() -> String) {
        let l = line();
        self.trace.record_at(self.now, l);
    }

    fn fail(&mut self, property: &'static str, detail: String) {
        if self.violation.is_none() {
            self.violation = Some(Violation {
                at_ms: self.now,
                property,
                detail,
            });
        }
    }

    fn send(&mut self, from: u32, to: u32, wire: Wire) {
        let times = self.scn.net.deliveries(&mut self.rng, self.now, from, to);
        let mut wire = Some(wire);
        for (i, at) in times.iter().enumerate() {
            let w = if i + 1 == times.len() {
                wire.take().expect("one left")
            } else {
                match wire.as_ref().expect("present") {
                    Wire::Dpos(m) => Wire::Dpos(m.clone()),
                    Wire::SyncRequest(h) => Wire::SyncRequest(*h),
                    Wire::SyncResponse(b) => Wire::SyncResponse(b.clone()),
                }
            };
            self.queue.push(*at, Ev::Deliver { to, from, wire: w });
        }
    }

    fn broadcast(&mut self, from: u32, msg: &v1::DposMessage) {
        for to in 0..self.scn.n() as u32 {
            if to != from {
                self.send(from, to, Wire::Dpos(Box::new(msg.clone())));
            }
        }
    }

    fn handle(&mut self, i: u32, event: Event) {
        let node = &mut self.nodes[i as usize];
        let Some(engine) = node.engine.as_mut() else {
            return;
        };
        let app = SimApp {
            finals: &node.finals,
            accept_anything: node.behaviour == Some(Behaviour::AttestInvalid),
        };
        let actions = engine.handle(self.now, event, &app);
        let cut = cut_point(&mut self.rng, self.armed[i as usize], &actions, |a| {
            matches!(a, Action::Finalize { .. })
        });
        let performed = cut.unwrap_or(actions.len());
        for a in actions.into_iter().take(performed) {
            self.perform(i, a);
        }
        if let Some(k) = cut {
            self.record(|| format!("i{i} CRASH after {k} action(s) of the call"));
            self.crash(i);
        }
    }

    /// The institution stops; what it performed stays (its final blocks, chain state and
    /// persisted consensus state), everything else is lost.
    fn crash(&mut self, i: u32) {
        self.armed[i as usize] = None;
        self.up[i as usize] = false;
        self.nodes[i as usize].engine = None;
        self.timers.retain(|(x, _), _| *x != i);
    }

    fn perform(&mut self, i: u32, action: Action) {
        let behaviour = self.nodes[i as usize].behaviour;
        match action {
            Action::Finalize { block, state } => self.on_final(i, *block, *state),
            Action::Persist(p) => self.nodes[i as usize].persisted = Some(*p),
            Action::Broadcast(msg) => {
                self.record(|| format!("i{i} bcast {}", summary(&msg)));
                self.observe(&msg);
                match behaviour {
                    None => self.broadcast(i, &msg),
                    Some(b) => self.misbehave(i, b, msg),
                }
            }
            Action::Send { to, msg } => {
                if behaviour != Some(Behaviour::Silent) {
                    self.send(i, to, Wire::Dpos(Box::new(msg)));
                }
            }
            Action::SetTimer { timer, at_ms } => {
                self.gen += 1;
                self.timers.insert((i, timer), self.gen);
                let gen = self.gen;
                self.queue
                    .push(at_ms.max(self.now), Ev::Timer { to: i, timer, gen });
            }
            Action::Note(note) => self.trace.annotate(self.now, || format!("i{i} {note:?}")),
            Action::RequestSync { from_height, peer } => {
                self.record(|| format!("i{i} sync-request h{from_height} from i{peer}"));
                self.send(i, peer, Wire::SyncRequest(from_height));
            }
        }
    }

    fn on_final(&mut self, i: u32, fb: v1::DposFinalizedBlock, state: ChainState) {
        let node = &mut self.nodes[i as usize];
        let block = fb.block.clone().unwrap_or_default();
        let header = block.header.clone().unwrap_or_default();
        let hash = block_hash(&header);
        let height = header.height;
        let honest = node.behaviour.is_none();
        if height != node.chain.len() as u64 + 1 {
            let have = node.chain.len();
            self.fail(
                "integrity",
                format!("i{i} finalized height {height} after {have}"),
            );
            return;
        }
        node.chain.push(fb);
        node.state = state.clone();
        for item in &block.items {
            node.finals.insert(item.clone());
        }
        self.record(|| {
            format!(
                "i{i} FINAL h{height} {} items={} evidence={} rpn={:?} atn={:?}",
                hex4(hash.as_bytes()),
                block.items.len(),
                block.extras.as_ref().map_or(0, |e| e.evidence.len()),
                state.registry.rpn(),
                state.registry.atn()
            )
        });
        if !honest {
            return;
        }
        for item in &block.items {
            if !item.starts_with(b"valid:") {
                self.fail(
                    "validity",
                    format!("i{i} finalized an invalid item at height {height}"),
                );
            }
        }
        let digest = state.digest();
        match self.decided.get(&height) {
            Some((h, _)) if *h != hash => self.fail(
                "agreement",
                format!(
                    "height {height}: i{i} finalized {} but another honest node finalized {}",
                    hash.to_hex(),
                    h.to_hex()
                ),
            ),
            Some((_, d)) if *d != digest => self.fail(
                "credit agreement",
                format!("height {height}: i{i} holds a different chain state (credit or roles)"),
            ),
            Some(_) => {}
            None => {
                self.decided.insert(height, (hash, digest));
                self.rpn_after.insert(height, state.registry.rpn().to_vec());
            }
        }
        for x in state.registry.rpn().iter().chain(state.registry.atn()) {
            if state.registry.institutions()[*x as usize].expelled {
                self.fail(
                    "expulsion",
                    format!("height {height}: expelled institution {x} still holds a role"),
                );
            }
        }
    }

    fn deliver(&mut self, to: u32, from: u32, wire: Wire) {
        match wire {
            Wire::Dpos(msg) => {
                self.record(|| format!("i{to} <- i{from} {}", summary(&msg)));
                if self.nodes[to as usize].behaviour == Some(Behaviour::Colluder) {
                    if let Some(Kind::Proposal(pm)) = &msg.kind {
                        if let Some(p) = pm.proposal.clone() {
                            self.collude(to, &p);
                        }
                    }
                }
                self.handle(to, Event::Message { from, msg: *msg });
            }
            Wire::SyncRequest(h) => {
                // Byzantine nodes do not serve blocks.
                if self.nodes[to as usize].behaviour.is_some() {
                    return;
                }
                let chain = &self.nodes[to as usize].chain;
                let start = (h.max(1) - 1) as usize;
                let blocks: Vec<_> = chain.iter().skip(start).take(16).cloned().collect();
                if !blocks.is_empty() {
                    self.send(to, from, Wire::SyncResponse(blocks));
                }
            }
            Wire::SyncResponse(blocks) => {
                self.record(|| format!("i{to} <- i{from} sync {} blocks", blocks.len()));
                self.handle(to, Event::Sync(blocks));
            }
        }
    }

    fn honest_nodes(&self) -> Vec<u32> {
        (0..self.scn.n() as u32)
            .filter(|i| self.nodes[*i as usize].behaviour.is_none())
            .collect()
    }

    fn all_final_everywhere(&self) -> bool {
        self.honest_nodes().iter().all(|i| {
            let n = &self.nodes[*i as usize];
            self.items.iter().all(|item| n.finals.contains(item))
        })
    }
}

/// Runs one scenario to completion.
pub fn run(scn: &Scenario, keep_trace: bool) -> Outcome {
    let n = scn.n();
    let keys: Vec<SigningKey> = (0..n)
        .map(|i| {
            let mut b = [0u8; 32];
            b[0] = 0x22;
            b[24..].copy_from_slice(&(i as u64 + 1).to_be_bytes());
            SigningKey::from_bytes(&b).expect("valid scalar")
        })
        .collect();
    let genesis = scn.genesis(&keys);
    let mut state = ChainState::genesis(&genesis).expect("simulated genesis is valid");
    state.broken_threshold_for_checker_tests = scn.broken_threshold;
    if let Some(m) = scn.mutant {
        state = state.with_mutant_for_checker_tests(m);
    }
    let verifier = CachingVerifier::new(1 << 20);
    let byz: BTreeMap<u32, Behaviour> = scn.byzantine.iter().copied().collect();
    let params = scn.params.clone();
    let nodes = (0..n as u32)
        .map(|i| {
            let cfg = Config {
                chain_id: CHAIN.into(),
                me: i,
                params: params.clone(),
            };
            let engine = Engine::new(
                cfg,
                keys[i as usize].clone(),
                verifier.clone(),
                state.clone(),
            );
            NodeState {
                engine: Some(engine),
                chain: Vec::new(),
                state: state.clone(),
                finals: BTreeSet::new(),
                persisted: None,
                behaviour: byz.get(&i).copied(),
            }
        })
        .collect();
    let mut sim = Sim {
        scn,
        rng: ChaCha8Rng::seed_from_u64(scn.seed),
        now: 0,
        queue: Queue::default(),
        nodes,
        up: vec![true; n],
        keys,
        verifier,
        timers: BTreeMap::new(),
        gen: 0,
        decided: BTreeMap::new(),
        rpn_after: BTreeMap::new(),
        strikes: BTreeMap::new(),
        items: Vec::new(),
        submitted: BTreeSet::new(),
        trace: Trace::new(keep_trace),
        violation: None,
        events: 0,
        armed: vec![None; n],
        seen_blocks: BTreeMap::new(),
        seen_prevotes: BTreeMap::new(),
    };
    for i in 0..scn.items {
        let item = format!("valid:{}:{i}", scn.seed).into_bytes();
        let at = sim.rng.gen_range(0..scn.net.gst_ms + 5_000);
        sim.items.push(item.clone());
        for to in 0..n as u32 {
            sim.queue.push(
                at,
                Ev::Submit {
                    to,
                    item: item.clone(),
                },
            );
        }
    }
    for c in &scn.crashes {
        sim.queue.push(c.at, Ev::Crash(c.node, c.cut));
        if let Some(back) = c.restart {
            sim.queue.push(back, Ev::Restart(c.node));
        }
    }
    sim.queue.push(5_000, Ev::Resubmit);
    for i in 0..n as u32 {
        sim.handle(i, Event::Start);
    }
    let last_item = scn.net.gst_ms + 5_000;
    let deadline = last_item + LIVENESS_BOUND_MS;
    while let Some((at, ev)) = sim.queue.pop() {
        if sim.violation.is_some() || at > deadline {
            break;
        }
        sim.now = at;
        sim.events += 1;
        match ev {
            Ev::Deliver { to, from, wire } => {
                if sim.up[to as usize] {
                    sim.deliver(to, from, wire);
                }
            }
            Ev::Timer { to, timer, gen } => {
                if sim.up[to as usize] && sim.timers.get(&(to, timer)) == Some(&gen) {
                    sim.timers.remove(&(to, timer));
                    sim.handle(to, Event::Timer(timer));
                }
            }
            Ev::Submit { to, item } => {
                sim.submitted.insert(item.clone());
                if sim.up[to as usize] {
                    let times = sim.scn.net.deliveries(&mut sim.rng, sim.now, u32::MAX, to);
                    if !times.is_empty() {
                        sim.handle(to, Event::Submit(item));
                    }
                }
            }
            Ev::Crash(i, Cut::BetweenEvents) => {
                sim.record(|| format!("i{i} CRASH"));
                sim.crash(i);
            }
            Ev::Crash(i, cut) => {
                if sim.up[i as usize] {
                    sim.record(|| format!("i{i} crash armed: {cut:?}"));
                    sim.armed[i as usize] = Some(cut);
                }
            }
            Ev::Restart(i) => {
                if sim.armed[i as usize].is_some() {
                    // No call came to cut: the crash happens now, between events.
                    sim.crash(i);
                }
                if sim.nodes[i as usize].engine.is_some() {
                    continue;
                }
                sim.record(|| format!("i{i} RESTART"));
                sim.up[i as usize] = true;
                let node = &mut sim.nodes[i as usize];
                let cfg = Config {
                    chain_id: CHAIN.into(),
                    me: i,
                    params: params.clone(),
                };
                let app = SimApp {
                    finals: &node.finals,
                    accept_anything: false,
                };
                let engine = Engine::restore(
                    cfg,
                    sim.keys[i as usize].clone(),
                    sim.verifier.clone(),
                    node.state.clone(),
                    node.persisted.clone(),
                    &app,
                )
                .expect("the simulator persists only what the engine produced");
                node.engine = Some(engine);
                sim.handle(i, Event::Start);
            }
            Ev::Resubmit => {
                // Clients re-send what is not final yet everywhere, as a real client would.
                if sim.all_final_everywhere() {
                    break;
                }
                for item in sim.submitted.clone() {
                    for to in 0..n as u32 {
                        if sim.up[to as usize] && !sim.nodes[to as usize].finals.contains(&item) {
                            sim.handle(to, Event::Submit(item.clone()));
                        }
                    }
                }
                let next = sim.now + 5_000;
                sim.queue.push(next, Ev::Resubmit);
            }
        }
    }
    if sim.violation.is_none() && !sim.all_final_everywhere() {
        let missing: Vec<String> = sim
            .honest_nodes()
            .iter()
            .map(|i| {
                let node = &sim.nodes[*i as usize];
                let m = sim
                    .items
                    .iter()
                    .filter(|x| !node.finals.contains(*x))
                    .count();
                format!("i{i}:h{} missing {m}", node.chain.len())
            })
            .collect();
        sim.fail(
            "liveness",
            format!(
                "{LIVENESS_BOUND_MS} ms after the last item, not every item is final everywhere ({})",
                missing.join(", ")
            ),
        );
    }
    // Replacement: a representative that kept misbehaving is out within the bound.
    let mut replaced = 0;
    let top = sim.rpn_after.keys().next_back().copied().unwrap_or(0);
    for (who, behaviour) in &scn.byzantine {
        if !matches!(
            behaviour,
            Behaviour::Silent
                | Behaviour::Equivocator
                | Behaviour::InvalidBlock
                | Behaviour::MultiProposer
        ) {
            continue;
        }
        let seated_at_end = sim.rpn_after.get(&top).is_some_and(|r| r.contains(who));
        if !seated_at_end && sim.rpn_after.values().any(|r| r.contains(who)) {
            replaced += 1;
        }
        let need = scn.strikes_needed(*who, *behaviour) + 2;
        let strikes = sim.strikes.get(who).cloned().unwrap_or_default();
        if strikes.len() < need {
            continue;
        }
        let h = strikes[need - 1].0 + REPLACEMENT_BOUND_HEIGHTS;
        if let Some(rpn) = sim.rpn_after.get(&h) {
            if rpn.contains(who) && sim.violation.is_none() {
                sim.fail(
                    "replacement",
                    format!(
                        "{behaviour:?} representative i{who} still produces at height {h} after {} chargeable misbehaviours",
                        need
                    ),
                );
            }
        }
    }
    let height = sim
        .honest_nodes()
        .iter()
        .map(|i| sim.nodes[*i as usize].chain.len() as u64)
        .min()
        .unwrap_or(0);
    Outcome {
        violation: sim.violation,
        trace_hash: sim.trace.hash(),
        trace: sim.trace.lines().to_vec(),
        events: sim.events,
        end_ms: sim.now,
        height,
        replaced,
    }
}

mod misbehaviour;
