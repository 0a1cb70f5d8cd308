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
    crash_schedule, cut_point, partitions, Crash, Cut, NetBounds, NetConfig, Queue,
};
use super::{Trace, Violation};

/// After GST every item must be final everywhere within this much virtual time.
pub const LIVENESS_BOUND_MS: u64 = 240_000;
/// A misbehaving representative must be out of the producer set this many heights after its
/// misbehaviour became chargeable (see [`Scenario::strikes_needed`]).
pub const REPLACEMENT_BOUND_HEIGHTS: u64 = 3;
const CHAIN: &str = "sim-consortium";

use super::hex4;
use scenario::sim_keys;
pub use scenario::{Behaviour, Scenario, MUTANTS};
use summary::{evidence_summary, summary};

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
    /// Byzantine misbehaviour as representative after GST, in slots still open: institution ->
    /// (height, round).
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
    /// The LockSplitter's fresh blocks of height 1, in the order it acted on them.
    split_fresh: Vec<Hash32>,
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
        let now = self.scn.net.local(i, self.now);
        let actions = engine.handle(now, event, &app);
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
                let at = self.scn.net.fire_at(i, self.now, at_ms);
                self.queue.push(at, Ev::Timer { to: i, timer, gen });
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
                "i{i} FINAL h{height} {} items={} evidence={:?} rpn={:?} atn={:?}",
                hex4(hash.as_bytes()),
                block.items.len(),
                block
                    .extras
                    .as_ref()
                    .map(|e| e.evidence.iter().map(evidence_summary).collect::<Vec<_>>())
                    .unwrap_or_default(),
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
        // The fault model itself: a schedule beyond it would prove nothing.
        let atn = state.registry.atn();
        let faulty = atn
            .iter()
            .filter(|a| {
                self.nodes[**a as usize]
                    .behaviour
                    .is_some_and(Behaviour::votes_wrongly)
            })
            .count();
        if 3 * faulty >= atn.len() {
            self.fail(
                "fault model",
                format!(
                    "height {height}: {faulty} of {} auditors vote wrongly",
                    atn.len()
                ),
            );
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
                let behaviour = self.nodes[to as usize].behaviour;
                if let (Some(Kind::Proposal(pm)), Some(b)) = (&msg.kind, behaviour) {
                    if let Some(p) = pm.proposal.clone() {
                        match b {
                            Behaviour::Colluder => self.collude(to, &p),
                            Behaviour::LockSplitter if p.height == 1 => self.split_locks(to, &p),
                            _ => {}
                        }
                    }
                }
                self.handle(to, Event::Message { from, msg: *msg });
            }
            Wire::SyncRequest(h) => {
                let chain = &self.nodes[to as usize].chain;
                let start = (h.max(1) - 1) as usize;
                let mut blocks: Vec<_> = chain.iter().skip(start).take(16).cloned().collect();
                if self.nodes[to as usize].behaviour.is_some() {
                    blocks = self.hostile_sync_answer(to, h, blocks);
                }
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
    let keys = sim_keys(n);
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
        split_fresh: Vec::new(),
    };
    for i in 0..scn.items {
        let item = format!("valid:{}:{i}", scn.seed).into_bytes();
        let at = match scn.items_at {
            Some(at) => at,
            None => sim.rng.gen_range(0..scn.net.gst_ms + 5_000),
        };
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
mod scenario;
mod summary;
