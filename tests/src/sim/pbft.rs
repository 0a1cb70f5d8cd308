//! PBFT under seeded faults.
//!
//! Checked after every step: agreement (no two honest replicas execute different batches at one
//! sequence number), validity (only client-submitted, valid items are executed), integrity (an item
//! is executed at most once per replica), bounded log (a replica's log stays within its window),
//! persist before execute (when a replica executes a batch whose commit certificate holds its own
//! signature, its durable state already holds the prepared certificate for it, so a crash at that
//! point could not lose it), no halt (an honest replica never finds its history contradicted) and
//! bounded traffic (no message storm: pending events stay under [`PENDING_BOUND_PER_N2`] n^2).
//! Crashes cut a replica between events, inside a call (a random prefix of its actions is
//! performed) or right after an execution, and restart it from exactly what it made durable;
//! some crashed replicas never return, and some schedules crash every honest replica at once.
//! Checked at the end: liveness (after GST, with every crashed replica restarted, every item is
//! executed by every honest replica within [`LIVENESS_BOUND_MS`]) and a common view (then one
//! more item is submitted, and once it is executed everywhere every honest replica is in one
//! view, in normal status, within [`COMMON_VIEW_BOUND_MS`]).

use std::collections::{BTreeMap, BTreeSet};

use medchain_crypto::validators::{CachingVerifier, ValidatorSet};
use medchain_crypto::{Hash32, SigningKey};
use medchain_pbft::{
    chain_state_digest, Action, Application, Config, Event, Mutant, PersistedState, Replica, Timer,
};
use medchain_proto::v1::{self, pbft_message::Kind};
use medchain_proto::Canonical;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::byzantine::{Behaviour, ByzantineNode, Out, ALL};
use super::network::{
    crash_schedule, cut_point, mass_crash, partitions, Crash, Cut, NetBounds, NetConfig, Queue,
};
use super::{hex4, Trace, Violation};
use summary::summary;

/// After GST every item must be executed everywhere within this much virtual time.
pub const LIVENESS_BOUND_MS: u64 = 240_000;
/// After every item is executed everywhere, the honest replicas must share one view (in normal
/// status) within this much virtual time.
pub const COMMON_VIEW_BOUND_MS: u64 = 60_000;
/// Events pending at once, per n squared: honest runs peak near 15 n^2 (1,428 for n = 10 in
/// seeds 122,000-123,499); a storm that feeds itself (seed 178124 before the laggard-help fix:
/// 194,000 pending after 500,000 events, then out of memory) passes 1,000 n^2 within seconds.
const PENDING_BOUND_PER_N2: usize = 1_000;
const CHAIN: &str = "sim-hospital";

pub use scenario::{Scenario, MUTANTS};

/// What one run produced.
#[derive(Debug)]
pub struct Outcome {
    pub violation: Option<Violation>,
    pub trace_hash: String,
    pub trace: Vec<String>,
    pub events: u64,
    pub end_ms: u64,
    /// Sequence numbers executed by the slowest honest replica.
    pub executed: u64,
}

/// An honest replica's durable ledger.
#[derive(Default)]
struct Ledger {
    entries: Vec<v1::CommittedBatch>,
    state: Hash32,
    items: BTreeSet<Vec<u8>>,
}

impl Application for Ledger {
    fn validate(&self, _seq: u64, batch: &v1::PbftBatch) -> Result<(), String> {
        let mut seen = BTreeSet::new();
        for item in &batch.items {
            if item.starts_with(b"bad:") {
                return Err("invalid item".into());
            }
            if self.items.contains(item) || !seen.insert(item) {
                return Err("item already executed".into());
            }
        }
        Ok(())
    }
    fn already_executed(&self, item: &[u8]) -> bool {
        self.items.contains(item)
    }
}

type Engine = Replica<SigningKey, CachingVerifier>;

struct Honest {
    engine: Option<Engine>,
    ledger: Ledger,
    persisted: Option<PersistedState>,
}

enum Node {
    Honest(Box<Honest>),
    Byzantine(Box<ByzantineNode>),
}

#[derive(Debug)]
enum Ev {
    Deliver {
        to: u32,
        from: u32,
        msg: v1::PbftMessage,
    },
    Timer {
        to: u32,
        engine: usize,
        timer: Timer,
        gen: u64,
    },
    Submit {
        to: u32,
        item: Vec<u8>,
    },
    Crash(u32, Cut),
    Restart(u32),
    Transfer {
        to: u32,
        entries: Vec<v1::CommittedBatch>,
    },
    Resubmit,
}

struct Sim<'a> {
    scn: &'a Scenario,
    rng: ChaCha8Rng,
    now: u64,
    queue: Queue<Ev>,
    nodes: Vec<Node>,
    up: Vec<bool>,
    keys: Vec<SigningKey>,
    cfgs: Vec<Config>,
    verifier: CachingVerifier,
    timers: BTreeMap<(u32, usize, Timer), u64>,
    decided: BTreeMap<u64, Hash32>,
    valid_items: BTreeSet<Vec<u8>>,
    trace: Trace,
    violation: Option<Violation>,
    events: u64,
    log_bound: usize,
    /// A crash waiting for the call it cuts, per replica.
    armed: Vec<Option<Cut>>,
    /// Replicas crashed for good: left out of the liveness check.
    gone: BTreeSet<u32>,
}

/// Runs one scenario to completion.
pub fn run(scn: &Scenario, keep_trace: bool) -> Outcome {
    let mut rng = ChaCha8Rng::seed_from_u64(scn.seed);
    let keys: Vec<SigningKey> = (0..scn.n)
        .map(|i| {
            let mut b = [0u8; 32];
            b[0] = 0x11;
            b[24..].copy_from_slice(&(i as u64 + 1).to_be_bytes());
            SigningKey::from_bytes(&b).expect("valid scalar")
        })
        .collect();
    let set = ValidatorSet::new(keys.iter().map(|k| k.identity()).collect()).expect("distinct");
    let cfgs: Vec<Config> = (0..scn.n)
        .map(|i| {
            let mut c = Config::new(
                CHAIN,
                set.clone(),
                i as u32,
                scn.max_batch,
                200,
                scn.checkpoint_interval,
            );
            c.view_change_timeout_ms = 1_000;
            c.state_transfer_retry_ms = 700;
            if let Some(m) = scn.mutant {
                c = c.with_mutant_for_checker_tests(m);
            }
            match scn.broken_quorum {
                Some(q) => c.with_broken_quorum_for_checker_tests(q),
                None => c,
            }
        })
        .collect();
    // One cache for the whole run: a message arriving at every replica is verified once.
    let verifier = CachingVerifier::new(1 << 20);
    let nodes = (0..scn.n)
        .map(
            |i| match scn.byzantine.iter().find(|(r, _)| *r as usize == i) {
                Some((_, b)) => Node::Byzantine(Box::new(ByzantineNode::new(
                    *b,
                    cfgs[i].clone(),
                    keys[i].clone(),
                    verifier.clone(),
                    &mut rng,
                ))),
                None => Node::Honest(Box::new(Honest {
                    engine: Some(Replica::new(
                        cfgs[i].clone(),
                        keys[i].clone(),
                        verifier.clone(),
                    )),
                    ledger: Ledger::default(),
                    persisted: None,
                })),
            },
        )
        .collect();
    let window = cfgs[0].window as usize;
    let mut sim = Sim {
        scn,
        rng,
        now: 0,
        queue: Queue::default(),
        nodes,
        up: vec![true; scn.n],
        keys,
        cfgs,
        verifier,
        timers: BTreeMap::new(),
        decided: BTreeMap::new(),
        valid_items: BTreeSet::new(),
        trace: Trace::new(keep_trace),
        violation: None,
        events: 0,
        log_bound: window + window / scn.checkpoint_interval as usize + 2 * scn.n + 4,
        armed: vec![None; scn.n],
        gone: scn
            .crashes
            .iter()
            .filter(|c| c.restart.is_none())
            .map(|c| c.node)
            .collect(),
    };
    sim.trace.record(scn.describe());
    sim.schedule_workload();
    for r in 0..scn.n as u32 {
        sim.step_node(r, Event::Start, None, None);
    }
    sim.main_loop();
    let states: Vec<String> = sim
        .honest()
        .map(|(r, h)| match &h.engine {
            Some(e) => format!("r{r}:{e:?} pending={}", e.pending_len()),
            None => format!("r{r}:down"),
        })
        .collect();
    for line in states {
        sim.trace.record(format!("t={} final {line}", sim.now));
    }
    let executed = sim
        .honest()
        .filter(|(r, _)| !sim.gone.contains(r))
        .map(|(_, h)| h.ledger.entries.len() as u64)
        .min()
        .unwrap_or(0);
    Outcome {
        violation: sim.violation,
        trace_hash: sim.trace.hash(),
        trace: sim.trace.lines().to_vec(),
        events: sim.events,
        end_ms: sim.now,
        executed,
    }
}

impl Sim<'_> {
    fn schedule_workload(&mut self) {
        let gst = self.scn.net.gst_ms;
        for i in 0..self.scn.items {
            let item = format!("tx-{}-{i}", self.scn.seed).into_bytes();
            self.valid_items.insert(item.clone());
            let at = self.rng.gen_range(0..gst * 7 / 10);
            for to in 0..self.scn.n as u32 {
                let jitter = self.rng.gen_range(0..50);
                self.queue.push(
                    at + jitter,
                    Ev::Submit {
                        to,
                        item: item.clone(),
                    },
                );
            }
        }
        for c in self.scn.crashes.clone() {
            self.queue.push(c.at, Ev::Crash(c.node, c.cut));
            if let Some(back) = c.restart {
                self.queue.push(back, Ev::Restart(c.node));
            }
        }
        self.queue.push(gst, Ev::Resubmit);
    }

    fn honest(&self) -> impl Iterator<Item = (u32, &Honest)> {
        self.nodes.iter().enumerate().filter_map(|(i, n)| match n {
            Node::Honest(h) => Some((i as u32, h.as_ref())),
            Node::Byzantine(_) => None,
        })
    }

    fn main_loop(&mut self) {
        let deadline = self.scn.net.gst_ms + LIVENESS_BOUND_MS;
        // Once every item is executed everywhere, one more (the probe) is submitted, and after
        // it the run goes on until the honest replicas share one view: block sync alone would
        // hide a replica stuck in a view change, and the probe makes every replica that lags
        // in an older view hear of the current one.
        let mut probed = false;
        let mut settle_by = None;
        while let Some((at, ev)) = self.queue.pop() {
            if at > deadline || settle_by.is_some_and(|by| at > by) {
                break;
            }
            self.now = at;
            self.events += 1;
            self.dispatch(ev);
            let pending = self.queue.len();
            if pending > PENDING_BOUND_PER_N2 * self.scn.n * self.scn.n {
                self.fail(
                    "bounded traffic",
                    format!("{pending} messages and timers pending: a message storm"),
                );
            }
            if self.violation.is_some() {
                return;
            }
            if !probed && self.all_done() {
                probed = true;
                let item = format!("tx-{}-probe", self.scn.seed).into_bytes();
                self.valid_items.insert(item.clone());
                for to in 0..self.scn.n as u32 {
                    let at = self.now + 1 + self.rng.gen_range(0..50);
                    let item = item.clone();
                    self.queue.push(at, Ev::Submit { to, item });
                }
                continue;
            }
            if probed && settle_by.is_none() && self.all_done() {
                settle_by = Some(self.now + COMMON_VIEW_BOUND_MS);
            }
            if settle_by.is_some() && self.common_view().is_ok() {
                return;
            }
        }
        if settle_by.is_some() {
            if let Err(views) = self.common_view() {
                self.fail(
                    "common view",
                    format!(
                        "honest replicas not in one view within {COMMON_VIEW_BOUND_MS}ms of executing everything: {views}"
                    ),
                );
            }
            return;
        }
        if !self.all_done() {
            let lagging: Vec<String> = self
                .honest()
                .filter(|(r, _)| !self.gone.contains(r))
                .map(|(r, h)| format!("r{r}:{}/{}", h.ledger.items.len(), self.valid_items.len()))
                .collect();
            self.fail(
                "liveness",
                format!(
                    "items not executed everywhere {LIVENESS_BOUND_MS}ms after GST: {}",
                    lagging.join(" ")
                ),
            );
        }
    }

    fn fail(&mut self, property: &'static str, detail: String) {
        if self.violation.is_none() {
            self.trace
                .record(format!("t={} VIOLATION {property}: {detail}", self.now));
            self.violation = Some(Violation {
                at_ms: self.now,
                property,
                detail,
            });
        }
    }

    fn dispatch(&mut self, ev: Ev) {
        match ev {
            Ev::Deliver { to, from, msg } => {
                if self.up[to as usize] {
                    self.trace
                        .record(format!("t={} r{to}<-r{from} {}", self.now, summary(&msg)));
                    if matches!(msg.kind, Some(Kind::ViewChange(_))) && self.trace.keeps_lines() {
                        let cfg = &self.cfgs[to as usize];
                        if let Err(e) = medchain_pbft::check_view_change(cfg, &self.verifier, &msg)
                        {
                            let line = format!("r{to} refuses that view change: {e}");
                            self.trace.annotate(self.now, || line);
                        }
                    }
                    self.step_node(to, Event::Message(msg), Some(from), None);
                }
            }
            Ev::Timer {
                to,
                engine,
                timer,
                gen,
            } => {
                if self.up[to as usize] && self.timers.get(&(to, engine, timer)) == Some(&gen) {
                    self.trace
                        .record(format!("t={} r{to} timer {timer:?}", self.now));
                    self.step_node(to, Event::Timer(timer), None, Some(engine));
                }
            }
            Ev::Submit { to, item } => {
                if self.up[to as usize] {
                    self.step_node(to, Event::Submit(item), None, None);
                }
            }
            Ev::Crash(r, Cut::BetweenEvents) => self.crash(r),
            Ev::Crash(r, cut) => {
                if self.up[r as usize] {
                    self.trace
                        .record(format!("t={} r{r} crash armed: {cut:?}", self.now));
                    self.armed[r as usize] = Some(cut);
                }
            }
            Ev::Restart(r) => {
                if self.armed[r as usize].is_some() {
                    // No call came to cut: the crash happens now, between events.
                    self.crash(r);
                }
                self.restart(r);
            }
            Ev::Transfer { to, entries } => {
                if self.up[to as usize] {
                    self.trace.record(format!(
                        "t={} r{to} state transfer of {}",
                        self.now,
                        entries.len()
                    ));
                    self.step_node(to, Event::StateTransfer(entries), None, None);
                }
            }
            Ev::Resubmit => {
                // Clients retransmit what they have not seen executed (as PBFT clients do).
                let missing: Vec<Vec<u8>> = self
                    .valid_items
                    .iter()
                    .filter(|i| self.honest().any(|(_, h)| !h.ledger.items.contains(*i)))
                    .cloned()
                    .collect();
                for item in missing {
                    for to in 0..self.scn.n as u32 {
                        let at = self.now + self.rng.gen_range(0..50);
                        self.queue.push(
                            at,
                            Ev::Submit {
                                to,
                                item: item.clone(),
                            },
                        );
                    }
                }
            }
        }
    }

    fn crash(&mut self, r: u32) {
        self.armed[r as usize] = None;
        if let Node::Honest(h) = &mut self.nodes[r as usize] {
            self.trace.record(format!("t={} r{r} CRASH", self.now));
            h.engine = None;
            self.up[r as usize] = false;
            self.timers.retain(|(node, _, _), _| *node != r);
        }
    }

    fn restart(&mut self, r: u32) {
        let Node::Honest(h) = &mut self.nodes[r as usize] else {
            return;
        };
        if h.engine.is_some() {
            return;
        }
        self.trace.record(format!("t={} r{r} RESTART", self.now));
        let tip = (h.ledger.entries.len() as u64, h.ledger.state);
        h.engine = Some(
            Replica::restore(
                self.cfgs[r as usize].clone(),
                self.keys[r as usize].clone(),
                self.verifier.clone(),
                h.persisted.clone(),
                tip,
            )
            .expect("the simulator persists only what the engine produced"),
        );
        self.up[r as usize] = true;
        self.step_node(r, Event::Start, None, None);
    }

    fn step_node(&mut self, r: u32, event: Event, from: Option<u32>, timer_engine: Option<usize>) {
        let now = self.scn.net.local(r, self.now);
        match &mut self.nodes[r as usize] {
            Node::Honest(h) => {
                let Some(engine) = h.engine.as_mut() else {
                    return;
                };
                let actions = engine.handle(now, event, &h.ledger);
                let halted = engine.halted().map(|fault| format!("r{r} halted: {fault}"));
                let log_len = engine.log_len();
                if log_len > self.log_bound {
                    self.fail(
                        "bounded log",
                        format!("r{r} holds {log_len} log entries, bound {}", self.log_bound),
                    );
                }
                if let Some(detail) = halted {
                    self.fail("no halt", detail);
                }
                let cut = cut_point(&mut self.rng, self.armed[r as usize], &actions, |a| {
                    matches!(a, Action::Commit { .. })
                });
                let performed = cut.unwrap_or(actions.len());
                for a in actions.into_iter().take(performed) {
                    self.honest_action(r, a);
                }
                if let Some(k) = cut {
                    self.trace.record(format!(
                        "t={} r{r} CRASH after {k} action(s) of the call",
                        self.now
                    ));
                    self.crash(r);
                }
            }
            Node::Byzantine(b) => {
                let outs = b.handle(now, event, from, timer_engine, &mut self.rng);
                for o in outs {
                    match o {
                        Out::Send(to, m) => self.send(r, to, m),
                        Out::SetTimer(e, t, at) => self.set_timer(r, e, t, at),
                        Out::CancelTimer(e, t) => self.cancel_timer(r, e, t),
                    }
                }
            }
        }
    }

    fn send(&mut self, from: u32, to: u32, msg: v1::PbftMessage) {
        if !self.up[from as usize] {
            return;
        }
        for at in self.scn.net.deliveries(&mut self.rng, self.now, from, to) {
            self.queue.push(
                at,
                Ev::Deliver {
                    to,
                    from,
                    msg: msg.clone(),
                },
            );
        }
    }

    fn set_timer(&mut self, r: u32, engine: usize, timer: Timer, at: u64) {
        let gen = self.timers.entry((r, engine, timer)).or_insert(0);
        *gen += 1;
        let gen = *gen;
        self.queue.push(
            self.scn.net.fire_at(r, self.now, at),
            Ev::Timer {
                to: r,
                engine,
                timer,
                gen,
            },
        );
    }

    fn cancel_timer(&mut self, r: u32, engine: usize, timer: Timer) {
        if let Some(gen) = self.timers.get_mut(&(r, engine, timer)) {
            *gen += 1;
        }
    }

    fn honest_action(&mut self, r: u32, a: Action) {
        match a {
            Action::Persist(state) => {
                if let Node::Honest(h) = &mut self.nodes[r as usize] {
                    h.persisted
                        .get_or_insert_with(PersistedState::default)
                        .apply(*state);
                }
            }
            Action::Broadcast(m) => {
                if matches!(m.kind, Some(Kind::ViewChange(_))) && self.trace.keeps_lines() {
                    let cfg = &self.cfgs[r as usize];
                    if let Err(e) = medchain_pbft::check_view_change(cfg, &self.verifier, &m) {
                        let line = format!("r{r} sent an invalid view change: {e}");
                        self.trace.annotate(self.now, || line);
                    }
                }
                for to in 0..self.scn.n as u32 {
                    if to != r {
                        self.send(r, to, m.clone());
                    }
                }
            }
            Action::Send { to, msg } => self.send(r, to, msg),
            Action::SetTimer { timer, at_ms } => self.set_timer(r, 0, timer, at_ms),
            Action::CancelTimer(t) => self.cancel_timer(r, 0, t),
            Action::Commit {
                entry,
                digest,
                repeats,
                ..
            } => self.commit(r, entry, digest, repeats),
            Action::RequestStateTransfer { from_seq, .. } => self.state_transfer(r, from_seq),
            Action::Forward(items) => {
                for to in (0..self.scn.n as u32).filter(|to| *to != r) {
                    for at in self.scn.net.deliveries(&mut self.rng, self.now, r, to) {
                        for item in &items {
                            let item = item.clone();
                            self.queue.push(at, Ev::Submit { to, item });
                        }
                    }
                }
            }
            Action::Note(note) => self.trace.annotate(self.now, || format!("r{r} {note:?}")),
            // Reported by `step_node` as a violation: an honest replica never halts.
            Action::Halt(_) => {}
        }
    }

    fn state_transfer(&mut self, r: u32, from_seq: u64) {
        let peers: Vec<u32> = (0..self.scn.n as u32)
            .filter(|p| *p != r && self.up[*p as usize])
            .collect();
        let Some(&peer) = peers.choose(&mut self.rng) else {
            return;
        };
        let source: Vec<v1::CommittedBatch> = match &self.nodes[peer as usize] {
            Node::Honest(h) => h
                .ledger
                .entries
                .iter()
                .skip(from_seq as usize - 1)
                .take(64)
                .cloned()
                .collect(),
            Node::Byzantine(_) => {
                // A Byzantine peer answers with forged history: real entries with a swapped item.
                let honest = self
                    .honest()
                    .map(|(_, h)| h)
                    .max_by_key(|h| h.ledger.entries.len());
                honest
                    .map(|h| {
                        h.ledger
                            .entries
                            .iter()
                            .skip(from_seq as usize - 1)
                            .take(64)
                            .cloned()
                            .map(|mut e| {
                                if let Some(b) = e.batch.as_mut() {
                                    b.items.push(b"forged".to_vec());
                                }
                                e
                            })
                            .collect()
                    })
                    .unwrap_or_default()
            }
        };
        let at = self.now + self.rng.gen_range(20..200);
        self.trace.record(format!(
            "t={} r{r} asks r{peer} for state from s{from_seq}",
            self.now
        ));
        self.queue.push(
            at,
            Ev::Transfer {
                to: r,
                entries: source,
            },
        );
    }
}

mod checks;
mod scenario;
mod summary;
