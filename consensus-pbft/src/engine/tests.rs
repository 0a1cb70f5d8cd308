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
    )
    .expect("the persisted state decodes");
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
        Action::Forward(items) => format!("forward:{}", items.len()),
        Action::Note(Note::Refused { what, .. }) => format!("refused:{what}"),
        Action::Note(n) => format!("note:{}", format!("{n:?}").split(' ').next().unwrap_or("")),
        Action::Halt(_) => "halt".into(),
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
            vec!["persist", "note:Prepared", "send:commit"],
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

/// The pre-prepare, prepares and commits of one batch at (view 0, seq 1), signed by `ks`.
struct OneBatch {
    pre_prepare: v1::PbftMessage,
    prepares: Vec<v1::PbftMessage>,
    commits: Vec<v1::PbftMessage>,
}

fn one_batch(ks: &[SigningKey]) -> OneBatch {
    let batch = v1::PbftBatch {
        timestamp_ms: 5,
        items: vec![b"a".to_vec()],
        proposer: 0,
    };
    let d = batch.digest();
    let msg = |r: usize, kind: Kind, batch: Option<v1::PbftBatch>| {
        sign(&ks[r], "hospital-test", r as u32, kind, batch)
    };
    let pp = Kind::PrePrepare(v1::PrePrepare {
        view: 0,
        seq: 1,
        digest: d.as_bytes().to_vec(),
    });
    OneBatch {
        pre_prepare: msg(0, pp, Some(batch.clone())),
        prepares: (0..ks.len())
            .map(|r| msg(r, Kind::Prepare(vote(0, 1, &d)), None))
            .collect(),
        commits: (0..ks.len())
            .map(|r| msg(r, Kind::Commit(commit(0, 1, &d)), None))
            .collect(),
    }
}

/// Drives replica 1 to the call in which it becomes prepared and committed at once (the commits
/// of 2 and 3 arrived before the last prepare) and returns that call's action shapes.
fn prepared_and_committed_in_one_call(cfg: Config, ks: &[SigningKey]) -> Vec<String> {
    let m = one_batch(ks);
    let ledger = local_cluster::MemoryLedger::default();
    let mut replica = Replica::new(cfg, ks[1].clone(), EcdsaVerifier);
    replica.handle(0, Event::Message(m.pre_prepare), &ledger);
    replica.handle(0, Event::Message(m.commits[2].clone()), &ledger);
    replica.handle(0, Event::Message(m.commits[3].clone()), &ledger);
    assert_eq!(
        replica.executed_seq(),
        0,
        "not prepared yet: nothing executes"
    );
    let out = replica.handle(0, Event::Message(m.prepares[2].clone()), &ledger);
    assert_eq!(replica.executed_seq(), 1);
    out.iter().map(shape).collect()
}

/// Issue 14, bug 1: the prepared certificate that justifies an execution is persisted before
/// the execution (and before the commit is sent), so a crash between them cannot lose it.
#[test]
fn prepared_and_committed_in_one_call_persists_before_it_executes() {
    let ks = keys(4);
    let got = prepared_and_committed_in_one_call(config(4, 1, &ks), &ks);
    let at = |s: &str| got.iter().position(|g| g == s).unwrap_or(usize::MAX);
    assert_eq!(got[0], "persist", "{got:?}");
    assert!(at("persist") < at("execute:1"), "{got:?}");
    assert!(at("execute:1") < at("send:commit"), "{got:?}");
    assert_eq!(got.iter().filter(|g| *g == "persist").count(), 1);

    // The simulator's mutant restores the old order; the same call then executes first.
    let mutant = config(4, 1, &ks).with_mutant_for_checker_tests(Mutant::CommitBeforePersist);
    let got = prepared_and_committed_in_one_call(mutant, &ks);
    let at = |s: &str| got.iter().position(|g| g == s).unwrap_or(usize::MAX);
    assert!(at("execute:1") < at("persist"), "{got:?}");
}

/// A quorum certifying another digest at a checkpoint this replica executed halts it: it does
/// not adopt the checkpoint, performs nothing of that call, and refuses every later event.
#[test]
fn a_stable_checkpoint_that_differs_from_own_history_halts_the_replica() {
    let ks = keys(4);
    let m = one_batch(&ks);
    let ledger = local_cluster::MemoryLedger::default();
    // Checkpoint every sequence number: executing seq 1 takes a checkpoint.
    let mut replica = Replica::new(test_config(&ks, 1, 3, 1), ks[1].clone(), EcdsaVerifier);
    replica.handle(0, Event::Message(m.pre_prepare), &ledger);
    for r in [2, 3] {
        replica.handle(0, Event::Message(m.prepares[r].clone()), &ledger);
    }
    for r in [2, 3] {
        replica.handle(0, Event::Message(m.commits[r].clone()), &ledger);
    }
    assert_eq!(replica.executed_seq(), 1);
    let forged = |r: usize| {
        sign(
            &ks[r],
            "hospital-test",
            r as u32,
            Kind::Checkpoint(v1::Checkpoint {
                seq: 1,
                state_digest: [7u8; 32].to_vec(),
            }),
            None,
        )
    };
    assert!(replica
        .handle(0, Event::Message(forged(0)), &ledger)
        .is_empty());
    assert!(replica
        .handle(0, Event::Message(forged(2)), &ledger)
        .is_empty());
    let out = replica.handle(0, Event::Message(forged(3)), &ledger);
    assert_eq!(out.len(), 1, "{out:?}");
    let Action::Halt(SafetyFault::DivergedFromCheckpoint {
        seq,
        certified,
        signers,
        ..
    }) = &out[0]
    else {
        panic!("expected a halt, got {out:?}");
    };
    assert_eq!((*seq, certified.0, signers.len()), (1, [7u8; 32], 3));
    assert_eq!(
        replica.stable_seq(),
        0,
        "the forged checkpoint is not adopted"
    );
    assert!(replica.halted().is_some());
    assert!(replica.handle(0, Event::Start, &ledger).is_empty());
}

/// Checkpoint messages are not persisted: a replica restarting on a checkpoint above the stable
/// one signs it again, or a full window would never move.
#[test]
fn a_restarted_replica_signs_its_checkpoint_again() {
    let ks = keys(4);
    let cfg = test_config(&ks, 1, 3, 1);
    let digest = chain_state_digest(&Hash32::ZERO, 1, &Hash32([9; 32]));
    let mut replica =
        Replica::restore(cfg, ks[1].clone(), EcdsaVerifier, None, (1, digest)).unwrap();
    let ledger = local_cluster::MemoryLedger::default();
    let out = replica.handle(0, Event::Start, &ledger);
    let sent: Vec<&v1::PbftMessage> = out
        .iter()
        .filter_map(|a| match a {
            Action::Broadcast(m) => Some(m),
            _ => None,
        })
        .collect();
    assert!(
        sent.iter().any(|m| matches!(
            &m.kind,
            Some(Kind::Checkpoint(c)) if c.seq == 1 && c.state_digest == digest.as_bytes()
        )),
        "{out:?}"
    );
}

/// A persisted record that does not decode stops the restart with the record named: skipping it
/// could make the replica forget a vote and sign a conflicting one.
#[test]
fn a_damaged_persisted_record_refuses_the_restart() {
    let ks = keys(4);
    let mut state = PersistedState::default();
    state.slots.insert(
        3,
        crate::persist::SlotRecord {
            seq: 3,
            pre_prepare: Some(vec![0xff, 0x01, 0x02]),
            ..Default::default()
        },
    );
    let err = Replica::restore(
        config(4, 1, &ks),
        ks[1].clone(),
        EcdsaVerifier,
        Some(state),
        (0, Hash32::ZERO),
    )
    .unwrap_err();
    assert!(err.record.contains("slot 3"), "{err}");
    assert!(err.to_string().contains("restore the data folder"), "{err}");
}

/// Rule 8: a replica whose progress timer fires alone complains, forwards the items it holds, and
/// stays in its view; a complaint from one more replica (f+1 in all) makes every replica leave
/// the view, and a new view forms.
#[test]
fn a_replica_that_times_out_alone_complains_and_stays_in_its_view() {
    let ks = keys(4);
    let ledger = local_cluster::MemoryLedger::default();
    let mut lone = Replica::new(config(4, 2, &ks), ks[2].clone(), EcdsaVerifier);
    lone.handle(0, Event::Start, &ledger);
    lone.handle(0, Event::Submit(b"only-here".to_vec()), &ledger);
    let out: Vec<String> = lone
        .handle(2_000, Event::Timer(Timer::Progress), &ledger)
        .iter()
        .map(shape)
        .collect();
    assert!(out.contains(&"forward:1".to_string()), "{out:?}");
    assert!(out.contains(&"send:complaint".to_string()), "{out:?}");
    assert!(!out.contains(&"send:view change".to_string()), "{out:?}");
    assert_eq!((lone.view(), lone.is_view_changing()), (0, false));

    let mut net = new_net(4);
    net.event(2, Event::Submit(b"only-here".to_vec()));
    net.now = 2_000;
    net.event(2, Event::Timer(Timer::Progress));
    net.run();
    for r in 0..4 {
        let replica = &net.replicas[r];
        assert_eq!(
            (replica.view(), replica.is_view_changing()),
            (0, false),
            "replica {r}"
        );
    }
    net.event(3, Event::Submit(b"only-here".to_vec()));
    net.event(3, Event::Timer(Timer::Progress));
    net.run();
    for r in 0..4 {
        let replica = &net.replicas[r];
        assert_eq!(
            (replica.view(), replica.is_view_changing()),
            (1, false),
            "replica {r}"
        );
    }
}

/// Drives every replica of `net` through one view change (an item each holds, no pre-prepare
/// delivered, progress timers fired).
fn one_view_change(net: &mut Net, item: &str) {
    for r in 0..4 {
        net.event(r, Event::Submit(item.as_bytes().to_vec()));
    }
    net.queue.clear();
    net.now += 5_000;
    net.fire(Timer::Progress);
}

#[test]
fn a_replica_cycling_through_old_views_gets_one_answer_per_timeout() {
    let mut net = new_net(4);
    one_view_change(&mut net, "a");
    one_view_change(&mut net, "b");
    assert_eq!(net.replicas[0].view(), 2, "the cluster left views 0 and 1");
    // Past any help given during the view changes themselves.
    net.now += 40_000;
    let complaint = |net: &Net, view: u64| {
        net.replicas[3].sign(Kind::Complaint(v1::Complaint { new_view: view }), None)
    };
    let answers = |net: &mut Net, view: u64| -> usize {
        let m = complaint(net, view);
        let now = net.now;
        net.replicas[0]
            .handle(now, Event::Message(m), &net.ledgers[0])
            .iter()
            .filter(|a| matches!(a, Action::Send { to: 3, .. }))
            .count()
    };
    assert!(answers(&mut net, 1) > 0, "a laggard in view 1 is helped");
    assert!(
        answers(&mut net, 2) > 0,
        "then in view 2, higher: helped at once"
    );
    for round in 0..10 {
        assert_eq!(
            answers(&mut net, 1),
            0,
            "round {round}: view 1 again, within the timeout"
        );
        assert_eq!(
            answers(&mut net, 2),
            0,
            "round {round}: view 2 again, within the timeout"
        );
    }
    net.now += 40_000;
    assert!(
        answers(&mut net, 1) > 0,
        "after the timeout a laggard is helped again"
    );
}
