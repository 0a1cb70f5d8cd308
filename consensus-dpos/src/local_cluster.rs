//! A consortium of real engines in one process with instant, lossless, in-order delivery and a
//! virtual clock: the smallest driver of the engine, for unit tests and benchmarks. (The seeded
//! fault simulator, with losses, partitions, crashes and Byzantine institutions, is in
//! `medchain-tests`.)

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use medchain_crypto::validators::Verifier;
use medchain_crypto::SigningKey;
use medchain_proto::v1;

use crate::{
    Action, Application, ChainState, Config, Engine, Event, Genesis, InstitutionSpec, Params,
    PersistedState, Timer,
};

/// A ledger that records final blocks and refuses items starting with `bad`.
#[derive(Debug)]
pub struct MemoryLedger {
    pub blocks: Vec<v1::DposFinalizedBlock>,
    pub state: ChainState,
    pub items: BTreeSet<Vec<u8>>,
    pub persisted: Option<PersistedState>,
}

impl Application for MemoryLedger {
    fn validate_item(&self, item: &[u8]) -> Result<(), String> {
        if item.starts_with(b"bad") {
            return Err("invalid item".into());
        }
        Ok(())
    }
    fn already_final(&self, item: &[u8]) -> bool {
        self.items.contains(item)
    }
}

/// Deterministic test keys: institution `i` of a consortium.
pub fn test_keys(n: usize) -> Vec<SigningKey> {
    (1..=n)
        .map(|i| {
            let mut b = [0u8; 32];
            b[0] = 9;
            b[24..].copy_from_slice(&(i as u64).to_be_bytes());
            SigningKey::from_bytes(&b).expect("valid scalar")
        })
        .collect()
}

/// A genesis of `rpn + atn + spares` institutions, institution `i` scored `90 - i/3` so the
/// ranking is the index order (ties broken by identity).
pub fn test_genesis(keys: &[SigningKey], rpn: usize, atn: usize, params: Params) -> Genesis {
    Genesis {
        chain_id: "consortium-test".into(),
        genesis_time_ms: 0,
        params: Params {
            rpn_size: rpn,
            atn_size: atn,
            ..params
        },
        institutions: keys
            .iter()
            .enumerate()
            .map(|(i, k)| InstitutionSpec {
                name: format!("institution-{i}"),
                identity: k.identity(),
                rating: 90 - (i as u64 / 3).min(50),
                scale: 90 - (i as u64 / 3).min(50),
                strength: 90 - (i as u64 / 3).min(50),
                willing: true,
            })
            .collect(),
    }
}

/// Parameters with second-scale cadences, for tests.
pub fn test_params() -> Params {
    Params {
        block_interval_ms: 100,
        slot_ms: 1_000,
        vote_timeout_ms: 200,
        resend_ms: 5_000,
        ..Params::default()
    }
}

/// Institutions wired together.
pub struct LocalCluster<V: Verifier + Clone> {
    pub keys: Vec<SigningKey>,
    pub engines: Vec<Engine<SigningKey, V>>,
    pub ledgers: Vec<MemoryLedger>,
    pub queue: VecDeque<(u32, u32, v1::DposMessage)>,
    pub timers: BTreeMap<(u32, Timer), u64>,
    pub down: BTreeSet<u32>,
    pub now: u64,
    pub delivered: u64,
    verifier: V,
    genesis: Genesis,
}

impl<V: Verifier + Clone> std::fmt::Debug for LocalCluster<V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "LocalCluster(n={})", self.engines.len())
    }
}

impl<V: Verifier + Clone> LocalCluster<V> {
    pub fn new(rpn: usize, atn: usize, spares: usize, params: Params, verifier: V) -> Self {
        let keys = test_keys(rpn + atn + spares);
        let genesis = test_genesis(&keys, rpn, atn, params);
        let state = ChainState::genesis(&genesis).expect("test genesis is valid");
        let engines = (0..keys.len())
            .map(|i| {
                let cfg = Config {
                    chain_id: genesis.chain_id.clone(),
                    me: i as u32,
                    params: genesis.params.clone(),
                };
                Engine::new(cfg, keys[i].clone(), verifier.clone(), state.clone())
            })
            .collect();
        let ledgers = (0..keys.len())
            .map(|_| MemoryLedger {
                blocks: Vec::new(),
                state: state.clone(),
                items: BTreeSet::new(),
                persisted: None,
            })
            .collect();
        LocalCluster {
            keys,
            engines,
            ledgers,
            queue: VecDeque::new(),
            timers: BTreeMap::new(),
            down: BTreeSet::new(),
            now: 0,
            delivered: 0,
            verifier,
            genesis,
        }
    }

    /// Performs one node's actions, checking the driver contract (finals in order, persist
    /// before sends).
    pub fn perform(&mut self, i: u32, actions: Vec<Action>) {
        let n = self.engines.len() as u32;
        let mut sent = false;
        for a in actions {
            match a {
                Action::Finalize { block, state } => {
                    assert!(!sent, "a final block after a send");
                    let l = &mut self.ledgers[i as usize];
                    let b = block.block.as_ref().expect("block");
                    let h = b.header.as_ref().expect("header").height;
                    assert_eq!(h, l.blocks.len() as u64 + 1, "final blocks in order");
                    l.items.extend(b.items.iter().cloned());
                    l.blocks.push(*block);
                    l.state = *state;
                }
                Action::Persist(p) => {
                    assert!(!sent, "persist after a send");
                    self.ledgers[i as usize].persisted = Some(*p);
                }
                Action::Broadcast(m) => {
                    sent = true;
                    for to in (0..n).filter(|t| *t != i) {
                        self.queue.push_back((to, i, m.clone()));
                    }
                }
                Action::Send { to, msg } => {
                    sent = true;
                    self.queue.push_back((to, i, msg));
                }
                Action::SetTimer { timer, at_ms } => {
                    self.timers.insert((i, timer), at_ms);
                }
                Action::Note(_) => {}
                Action::RequestSync { from_height, peer } => {
                    let blocks: Vec<_> = self.ledgers[peer as usize]
                        .blocks
                        .iter()
                        .skip(from_height.saturating_sub(1) as usize)
                        .take(64)
                        .cloned()
                        .collect();
                    self.event(i, Event::Sync(blocks));
                }
            }
        }
    }

    pub fn event(&mut self, i: u32, e: Event) {
        if self.down.contains(&i) {
            return;
        }
        let now = self.now;
        let actions = self.engines[i as usize].handle(now, e, &self.ledgers[i as usize]);
        self.perform(i, actions);
    }

    /// Starts every node.
    pub fn start(&mut self) {
        for i in 0..self.engines.len() as u32 {
            self.event(i, Event::Start);
        }
        self.run();
    }

    /// Delivers queued messages until none are left.
    pub fn run(&mut self) {
        while let Some((to, from, msg)) = self.queue.pop_front() {
            self.delivered += 1;
            self.event(to, Event::Message { from, msg });
        }
    }

    /// Submits an item to every node and runs to quiescence.
    pub fn submit_all(&mut self, item: &[u8]) {
        for i in 0..self.engines.len() as u32 {
            self.event(i, Event::Submit(item.to_vec()));
        }
        self.run();
    }

    /// Advances the clock to the next armed timer (skipping timers of nodes that are down),
    /// fires it and runs to quiescence. Returns false when no timer is armed.
    pub fn fire_next(&mut self) -> bool {
        let next = self
            .timers
            .iter()
            .filter(|((i, _), _)| !self.down.contains(i))
            .min_by_key(|(k, at)| (**at, **k))
            .map(|(k, at)| (*k, *at));
        let Some(((i, timer), at)) = next else {
            return false;
        };
        self.timers.remove(&(i, timer));
        self.now = self.now.max(at);
        self.event(i, Event::Timer(timer));
        self.run();
        true
    }

    /// Runs timers until every live node has finalized `height` or `until_ms` passes.
    pub fn run_until_height(&mut self, height: u64, until_ms: u64) -> bool {
        loop {
            let done = (0..self.engines.len() as u32)
                .filter(|i| !self.down.contains(i))
                .all(|i| self.ledgers[i as usize].blocks.len() as u64 >= height);
            if done {
                return true;
            }
            if self.now > until_ms || !self.fire_next() {
                return false;
            }
        }
    }

    /// Crashes node `i`: it stops, keeping its ledger and persisted state.
    pub fn crash(&mut self, i: u32) {
        self.down.insert(i);
        self.timers.retain(|(x, _), _| *x != i);
    }

    /// Restarts node `i` from its ledger and persisted state.
    pub fn restart(&mut self, i: u32) {
        self.down.remove(&i);
        let cfg = Config {
            chain_id: self.genesis.chain_id.clone(),
            me: i,
            params: self.genesis.params.clone(),
        };
        let l = &self.ledgers[i as usize];
        self.engines[i as usize] = Engine::restore(
            cfg,
            self.keys[i as usize].clone(),
            self.verifier.clone(),
            l.state.clone(),
            l.persisted.clone(),
            l,
        )
        .expect("a local cluster persists only what its engines produced");
        self.event(i, Event::Start);
        self.run();
    }
}
