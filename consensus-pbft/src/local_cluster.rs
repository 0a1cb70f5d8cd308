//! A cluster of real replicas in one process with instant, lossless, in-order delivery: the
//! smallest driver of the engine, for unit tests and benchmarks. (The seeded fault simulator, with
//! delays, losses, partitions, crashes and Byzantine replicas, is in `medchain-tests`.)

use std::collections::{HashSet, VecDeque};

use medchain_crypto::validators::{ValidatorSet, Verifier};
use medchain_crypto::{Hash32, SigningKey};
use medchain_proto::v1;

use crate::{Action, Application, Config, Event, PersistedState, Replica, ReplicaId, Timer};

/// A ledger that executes items once and refuses items starting with `bad`.
#[derive(Debug, Default)]
pub struct MemoryLedger {
    pub committed: Vec<(u64, Hash32, v1::CommittedBatch)>,
    pub items: HashSet<Vec<u8>>,
}

impl Application for MemoryLedger {
    fn validate(&self, _seq: u64, batch: &v1::PbftBatch) -> Result<(), String> {
        for i in &batch.items {
            if i.starts_with(b"bad") {
                return Err("invalid item".into());
            }
            if self.items.contains(i) {
                return Err("already executed".into());
            }
        }
        Ok(())
    }
    fn already_executed(&self, item: &[u8]) -> bool {
        self.items.contains(item)
    }
}

/// Deterministic test keys: replica `i` of a cluster.
pub fn test_keys(n: usize) -> Vec<SigningKey> {
    (1..=n)
        .map(|i| {
            let mut b = [0u8; 32];
            b[0] = 7;
            b[24..].copy_from_slice(&(i as u64).to_be_bytes());
            SigningKey::from_bytes(&b).expect("valid scalar")
        })
        .collect()
}

/// The config of replica `me` among `keys`.
pub fn test_config(
    keys: &[SigningKey],
    me: ReplicaId,
    max_batch: usize,
    checkpoint: u64,
) -> Config {
    let set = ValidatorSet::new(keys.iter().map(|k| k.identity()).collect()).expect("distinct");
    let mut c = Config::new("hospital-test", set, me, max_batch, 100, checkpoint);
    c.view_change_timeout_ms = 1_000;
    c
}

/// `n` replicas wired together.
pub struct LocalCluster<V: Verifier + Clone> {
    pub keys: Vec<SigningKey>,
    pub replicas: Vec<Replica<SigningKey, V>>,
    pub ledgers: Vec<MemoryLedger>,
    pub persisted: Vec<Option<PersistedState>>,
    pub queue: VecDeque<(ReplicaId, v1::PbftMessage)>,
    pub down: HashSet<ReplicaId>,
    pub now: u64,
    /// Messages delivered so far.
    pub delivered: u64,
}

impl<V: Verifier + Clone> std::fmt::Debug for LocalCluster<V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "LocalCluster(n={})", self.replicas.len())
    }
}

impl<V: Verifier + Clone> LocalCluster<V> {
    pub fn new(n: usize, max_batch: usize, checkpoint: u64, verifier: V) -> Self {
        let keys = test_keys(n);
        let replicas = (0..n)
            .map(|i| {
                let cfg = test_config(&keys, i as ReplicaId, max_batch, checkpoint);
                Replica::new(cfg, keys[i].clone(), verifier.clone())
            })
            .collect();
        LocalCluster {
            keys,
            replicas,
            ledgers: (0..n).map(|_| MemoryLedger::default()).collect(),
            persisted: vec![None; n],
            queue: VecDeque::new(),
            down: HashSet::new(),
            now: 0,
            delivered: 0,
        }
    }

    /// Performs a replica's actions: persists, enqueues sends, executes commits (checking order and
    /// exactly-once execution).
    pub fn perform(&mut self, r: ReplicaId, actions: Vec<Action>) {
        let n = self.replicas.len() as ReplicaId;
        for a in actions {
            match a {
                Action::Persist(d) => self.persisted[r as usize]
                    .get_or_insert_with(PersistedState::default)
                    .apply(*d),
                Action::Broadcast(m) => {
                    for to in (0..n).filter(|t| *t != r) {
                        self.queue.push_back((to, m.clone()));
                    }
                }
                Action::Send { to, msg } => self.queue.push_back((to, msg)),
                Action::Commit {
                    entry,
                    digest,
                    repeats,
                    ..
                } => {
                    let l = &mut self.ledgers[r as usize];
                    assert_eq!(entry.seq, l.committed.len() as u64 + 1, "executed in order");
                    let items = &entry.batch.as_ref().expect("batch").items;
                    for (k, i) in items.iter().enumerate() {
                        if !repeats.contains(&(k as u32)) {
                            assert!(l.items.insert(i.clone()), "item executed twice");
                        }
                    }
                    l.committed.push((entry.seq, digest, entry));
                }
                Action::Halt(fault) => panic!("replica {r} halted: {fault}"),
                Action::SetTimer { .. }
                | Action::CancelTimer(_)
                | Action::RequestStateTransfer { .. }
                | Action::Forward(_)
                | Action::Note(_) => {}
            }
        }
    }

    pub fn event(&mut self, r: ReplicaId, e: Event) {
        if self.down.contains(&r) {
            return;
        }
        let now = self.now;
        let actions = self.replicas[r as usize].handle(now, e, &self.ledgers[r as usize]);
        self.perform(r, actions);
    }

    /// Delivers queued messages until none are left.
    pub fn run(&mut self) {
        while let Some((to, m)) = self.queue.pop_front() {
            self.delivered += 1;
            self.event(to, Event::Message(m));
        }
    }

    /// Submits an item to every replica and runs to quiescence.
    pub fn submit_all(&mut self, item: &[u8]) {
        for r in 0..self.replicas.len() as ReplicaId {
            self.event(r, Event::Submit(item.to_vec()));
        }
        self.run();
    }

    /// Fires a timer at every replica and runs to quiescence.
    pub fn fire(&mut self, t: Timer) {
        for r in 0..self.replicas.len() as ReplicaId {
            self.event(r, Event::Timer(t));
        }
        self.run();
    }
}
