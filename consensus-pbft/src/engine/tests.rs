//! Unit tests of the core with a tiny, synchronous in-memory network (real k256 keys). The
//! seeded fault simulator lives in the `medchain-tests` crate.

use std::collections::{HashSet, VecDeque};

use medchain_crypto::validators::{EcdsaVerifier, ValidatorSet};
use medchain_crypto::SigningKey;
use medchain_proto::pbft::verify_committed_batch;

use super::*;

#[derive(Default)]
struct Ledger {
    committed: Vec<(u64, Hash32, v1::CommittedBatch)>,
    items: HashSet<Vec<u8>>,
}

impl Application for Ledger {
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

fn keys(n: usize) -> Vec<SigningKey> {
    (1..=n)
        .map(|i| {
            let mut b = [0u8; 32];
            b[31] = i as u8;
            b[0] = 7;
            SigningKey::from_bytes(&b).unwrap()
        })
        .collect()
}

struct Net {
    replicas: Vec<Replica<SigningKey, EcdsaVerifier>>,
    ledgers: Vec<Ledger>,
    persisted: Vec<Option<PersistedState>>,
    queue: VecDeque<(u32, v1::PbftMessage)>,
    down: HashSet<u32>,
    now: u64,
}

fn config(n: usize, me: u32, ks: &[SigningKey]) -> Config {
    let set = ValidatorSet::new(ks.iter().map(|k| k.identity()).collect()).unwrap();
    let mut c = Config::new("hospital-test", set, me, 3, 100, 4);
    c.view_change_timeout_ms = 1_000;
    let _ = n;
    c
}

impl Net {
    fn new(n: usize) -> Self {
        let ks = keys(n);
        let replicas = (0..n)
            .map(|i| Replica::new(config(n, i as u32, &ks), ks[i].clone(), EcdsaVerifier))
            .collect();
        Net {
            replicas,
            ledgers: (0..n).map(|_| Ledger::default()).collect(),
            persisted: vec![None; n],
            queue: VecDeque::new(),
            down: HashSet::new(),
            now: 0,
        }
    }

    fn apply(&mut self, r: u32, actions: Vec<Action>) {
        let n = self.replicas.len() as u32;
        for a in actions {
            match a {
                Action::Persist(s) => self.persisted[r as usize] = Some(*s),
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
                    assert_eq!(entry.seq, l.committed.len() as u64 + 1, "in order");
                    for (k, i) in entry.batch.as_ref().unwrap().items.iter().enumerate() {
                        if !repeats.contains(&(k as u32)) {
                            assert!(l.items.insert(i.clone()), "item committed twice");
                        }
                    }
                    l.committed.push((entry.seq, digest, entry));
                }
                _ => {}
            }
        }
    }

    fn event(&mut self, r: u32, e: Event) {
        if self.down.contains(&r) {
            return;
        }
        let now = self.now;
        let actions = self.replicas[r as usize].handle(now, e, &self.ledgers[r as usize]);
        self.apply(r, actions);
    }

    fn run(&mut self) {
        while let Some((to, m)) = self.queue.pop_front() {
            self.event(to, Event::Message(m));
        }
    }

    fn submit_all(&mut self, item: &[u8]) {
        for r in 0..self.replicas.len() as u32 {
            self.event(r, Event::Submit(item.to_vec()));
        }
        self.run();
    }

    fn fire(&mut self, t: Timer) {
        for r in 0..self.replicas.len() as u32 {
            self.event(r, Event::Timer(t));
        }
        self.run();
    }
}

#[test]
fn normal_case_commits_a_full_batch_with_a_verifiable_certificate() {
    let mut net = Net::new(4);
    for i in 0..3 {
        net.submit_all(format!("tx{i}").as_bytes());
    }
    let set = net.replicas[0].config().validators.clone();
    for l in &net.ledgers {
        assert_eq!(
            l.committed.len(),
            1,
            "max_batch = 3 items triggers a proposal"
        );
        let (_, digest, entry) = &l.committed[0];
        assert_eq!(entry.batch.as_ref().unwrap().items.len(), 3);
        let checked = verify_committed_batch(entry, "hospital-test", &set, &EcdsaVerifier).unwrap();
        assert_eq!(&checked, digest);
    }
    // A tampered certificate does not verify.
    let mut forged = net.ledgers[1].committed[0].2.clone();
    forged.batch.as_mut().unwrap().items[0] = b"other".to_vec();
    assert!(verify_committed_batch(&forged, "hospital-test", &set, &EcdsaVerifier).is_err());
}

#[test]
fn block_interval_flushes_a_partial_batch() {
    let mut net = Net::new(4);
    net.submit_all(b"lonely");
    assert!(net.ledgers.iter().all(|l| l.committed.is_empty()));
    net.now = 100;
    net.fire(Timer::Batch);
    assert!(net.ledgers.iter().all(|l| l.committed.len() == 1));
}

#[test]
fn invalid_batch_is_not_prepared_and_leads_to_a_view_change() {
    let mut net = Net::new(4);
    // Only the primary holds the bad item, so only it proposes it.
    net.event(0, Event::Submit(b"bad item".to_vec()));
    net.now = 100;
    net.event(0, Event::Timer(Timer::Batch));
    net.run();
    assert!(net.ledgers.iter().all(|l| l.committed.is_empty()));
    // Backups with their own work time out and move to view 1.
    for r in 1..4 {
        net.event(r, Event::Submit(b"good".to_vec()));
    }
    net.now = 2_000;
    for r in 1..4 {
        net.event(r, Event::Timer(Timer::Progress));
    }
    net.run();
    for r in 1..4 {
        assert_eq!(net.replicas[r].view(), 1, "replica {r}");
        assert!(!net.replicas[r].is_view_changing());
    }
    net.now = 2_200;
    net.fire(Timer::Batch);
    for r in 1..4 {
        let items: Vec<_> = net.ledgers[r]
            .committed
            .iter()
            .flat_map(|(_, _, e)| e.batch.clone().unwrap().items)
            .collect();
        assert_eq!(items, vec![b"good".to_vec()], "replica {r}");
    }
}

#[test]
fn view_change_preserves_a_prepared_batch() {
    let mut net = Net::new(4);
    // Commits from the old primary's view are lost: everyone prepares, nobody commits.
    for i in 0..3 {
        for r in 0..4 {
            net.event(r, Event::Submit(format!("x{i}").into_bytes()));
        }
    }
    let mut prepared_only = VecDeque::new();
    while let Some((to, m)) = net.queue.pop_front() {
        if matches!(m.kind, Some(Kind::Commit(_))) {
            prepared_only.push_back((to, m));
            continue;
        }
        net.event(to, Event::Message(m));
    }
    assert!(net.ledgers.iter().all(|l| l.committed.is_empty()));
    let digest_v0 = net.replicas[1].slots[&1].prepared.as_ref().unwrap().1;
    net.now = 5_000;
    net.fire(Timer::Progress);
    let (_, digest, entry) = &net.ledgers[2].committed[0];
    assert_eq!(
        *digest, digest_v0,
        "the prepared batch is re-proposed at the same seq"
    );
    assert_eq!(entry.view, 1);
    assert!(net.ledgers.iter().all(|l| l.committed.len() == 1));
}

#[test]
fn checkpoints_bound_the_log() {
    let mut net = Net::new(4);
    for i in 0..60 {
        net.submit_all(format!("item-{i}").as_bytes());
    }
    for r in 0..4 {
        assert_eq!(net.ledgers[r].committed.len(), 20);
        assert_eq!(net.replicas[r].stable_seq(), 20, "K = 4: stable at 20");
        assert!(
            net.replicas[r].log_len() <= 10,
            "log holds {}",
            net.replicas[r].log_len()
        );
    }
}

#[test]
fn restarted_replica_never_prepares_a_conflicting_digest() {
    let mut net = Net::new(4);
    for i in 0..3 {
        net.submit_all(format!("a{i}").as_bytes());
    }
    let state = net.persisted[1]
        .clone()
        .expect("replica 1 persisted its votes");
    assert!(state.slots.iter().any(|s| s.sent_prepare.is_some()));
    let ks = keys(4);
    let ledger_tip = (net.replicas[1].executed_seq(), net.replicas[1].exec_digest);
    let mut restarted = Replica::restore(
        config(4, 1, &ks),
        ks[1].clone(),
        EcdsaVerifier,
        Some(state),
        ledger_tip,
    );
    let _ = restarted.handle(0, Event::Start, &net.ledgers[1]);
    // A conflicting pre-prepare for seq 1 in view 0 (signed by the real primary) is refused.
    let other = v1::PbftBatch {
        timestamp_ms: 9,
        items: vec![b"evil".to_vec()],
    };
    let pp = sign(
        &ks[0],
        "hospital-test",
        0,
        Kind::PrePrepare(v1::PrePrepare {
            view: 0,
            seq: 1,
            digest: other.digest().as_bytes().to_vec(),
        }),
        Some(other),
    );
    let out = restarted.handle(0, Event::Message(pp), &net.ledgers[1]);
    assert!(
        !out.iter()
            .any(|a| matches!(a, Action::Broadcast(m) if matches!(m.kind, Some(Kind::Prepare(_))))),
        "no prepare for a second digest at (view 0, seq 1)"
    );
}

#[test]
fn forged_and_foreign_messages_are_dropped() {
    let mut net = Net::new(4);
    let ks = keys(4);
    let outsider = keys(5).pop().unwrap();
    let batch = v1::PbftBatch {
        timestamp_ms: 1,
        items: vec![b"z".to_vec()],
    };
    let kind = Kind::PrePrepare(v1::PrePrepare {
        view: 0,
        seq: 1,
        digest: batch.digest().as_bytes().to_vec(),
    });
    // Signed by an outsider claiming to be the primary.
    let forged = sign(
        &outsider,
        "hospital-test",
        0,
        kind.clone(),
        Some(batch.clone()),
    );
    // Signed by the primary for another chain.
    let foreign = sign(&ks[0], "other-chain", 0, kind, Some(batch));
    for m in [forged, foreign] {
        let out = net.replicas[1].handle(0, Event::Message(m), &net.ledgers[1]);
        assert!(out.is_empty(), "{out:?}");
    }
}
