//! Unit tests of the core with a tiny, synchronous in-memory network (real k256 keys). The
//! seeded fault simulator lives in the `medchain-tests` crate.

use std::collections::VecDeque;

use medchain_crypto::validators::EcdsaVerifier;
use medchain_crypto::SigningKey;
use medchain_proto::pbft::verify_committed_batch;

use super::*;
use crate::local_cluster::{self, test_config, test_keys, LocalCluster};

type Net = LocalCluster<EcdsaVerifier>;

fn new_net(n: usize) -> Net {
    LocalCluster::new(n, 3, 4, EcdsaVerifier)
}

fn config(_n: usize, me: u32, ks: &[SigningKey]) -> Config {
    test_config(ks, me, 3, 4)
}

fn keys(n: usize) -> Vec<SigningKey> {
    test_keys(n)
}

#[test]
fn normal_case_commits_a_full_batch_with_a_verifiable_certificate() {
    let mut net = new_net(4);
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
    let mut net = new_net(4);
    net.submit_all(b"lonely");
    assert!(net.ledgers.iter().all(|l| l.committed.is_empty()));
    net.now = 100;
    net.fire(Timer::Batch);
    assert!(net.ledgers.iter().all(|l| l.committed.len() == 1));
}

#[test]
fn invalid_batch_is_not_prepared_and_leads_to_a_view_change() {
    let mut net = new_net(4);
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
    let mut net = new_net(4);
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
    let mut net = new_net(4);
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
    let mut net = new_net(4);
    for i in 0..3 {
        net.submit_all(format!("a{i}").as_bytes());
    }
    let state = net.persisted[1]
        .clone()
        .expect("replica 1 persisted its votes");
    assert!(state.slots.values().any(|s| s.sent_prepare.is_some()));
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
        proposer: 0,
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
    let mut net = new_net(4);
    let ks = keys(4);
    let outsider = keys(5).pop().unwrap();
    let batch = v1::PbftBatch {
        timestamp_ms: 1,
        items: vec![b"z".to_vec()],
        proposer: 0,
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
    // Dropped with nothing sent or stored; only a note for the operator, naming the claimed
    // sender and the slot.
    for (m, why) in [(forged, "signature"), (foreign, "other-chain")] {
        let out = net.replicas[1].handle(0, Event::Message(m), &net.ledgers[1]);
        match &out[..] {
            [Action::Note(Note::Refused {
                from: Some(0),
                what: "pre-prepare",
                view: 0,
                seq: 1,
                reason,
            })] => assert!(reason.contains(why), "{reason}"),
            other => panic!("{other:?}"),
        }
    }
}

/// The shape of an action, for table-driven expectations.
fn shape(a: &Action) -> String {
    match a {
        Action::Persist(_) => "persist".into(),
        Action::Broadcast(m) | Action::Send { msg: m, .. } => format!("send:{}", kind_name(m)),
        Action::Commit { entry, .. } => format!("execute:{}", entry.seq),
        Action::SetTimer { timer, .. } => format!("set:{timer:?}"),
        Action::CancelTimer(t) => format!("cancel:{t:?}"),
        Action::RequestStateTransfer { from_seq, .. } => format!("transfer:{from_seq}"),
        Action::Note(Note::Refused { what, .. }) => format!("refused:{what}"),
        Action::Note(n) => format!("note:{}", format!("{n:?}").split(' ').next().unwrap_or("")),
    }
}

#[test]
fn normal_case_at_a_backup_step_by_step() {
    let ks = keys(4);
    let batch = v1::PbftBatch {
        timestamp_ms: 5,
        items: vec![b"a".to_vec()],
        proposer: 0,
    };
    let d = batch.digest();
    let other = v1::PbftBatch {
        timestamp_ms: 6,
        items: vec![b"b".to_vec()],
        proposer: 0,
    };
    let pp = |b: &v1::PbftBatch| {
        sign(
            &ks[0],
            "hospital-test",
            0,
            Kind::PrePrepare(v1::PrePrepare {
                view: 0,
                seq: 1,
                digest: b.digest().as_bytes().to_vec(),
            }),
            Some(b.clone()),
        )
    };
    let prepare = |r: usize| {
        sign(
            &ks[r],
            "hospital-test",
            r as u32,
            Kind::Prepare(vote(0, 1, &d)),
            None,
        )
    };
    let commit_from = |r: usize| {
        sign(
            &ks[r],
            "hospital-test",
            r as u32,
            Kind::Commit(commit(0, 1, &d)),
            None,
        )
    };
    // (input, expected action shapes in order, executed seq afterwards)
    let table: Vec<(Event, Vec<&str>, u64)> = vec![
        (Event::Submit(b"a".to_vec()), vec!["set:Progress"], 0),
        (Event::Submit(b"a".to_vec()), vec![], 0), // duplicate submission
        (
            Event::Message(pp(&batch)),
            vec!["persist", "send:prepare"],
            0,
        ),
        (
            Event::Message(prepare(2)),
            vec!["note:Prepared", "persist", "send:commit"],
            0,
        ), // primary + 1 + 2 = q
        (Event::Message(prepare(3)), vec![], 0),
        (Event::Message(prepare(3)), vec![], 0), // duplicate
        (Event::Message(commit_from(2)), vec![], 0),
        (
            Event::Message(commit_from(3)),
            vec!["execute:1", "cancel:Progress"],
            1,
        ),
        // A conflicting pre-prepare (primary equivocation): refused, nothing sent.
        (Event::Message(pp(&other)), vec!["refused:pre-prepare"], 1),
        (Event::Message(commit_from(0)), vec![], 1),
        (Event::Timer(Timer::Progress), vec![], 1), // nothing outstanding: no view change
    ];
    let ledger = local_cluster::MemoryLedger::default();
    let mut replica = Replica::new(config(4, 1, &ks), ks[1].clone(), EcdsaVerifier);
    for (i, (input, expected, executed)) in table.into_iter().enumerate() {
        let out = replica.handle(0, input, &ledger);
        let got: Vec<String> = out.iter().map(shape).collect();
        assert_eq!(got, expected, "step {i}");
        assert_eq!(replica.executed_seq(), executed, "step {i}");
        assert_eq!(
            (replica.view(), replica.is_view_changing()),
            (0, false),
            "step {i}"
        );
    }
}
