//! The PBFT engine under seeded fault schedules (n = 4, 7 and 10; up to f Byzantine replicas of
//! every behaviour; crashes between events, inside a call and right after an execution, with
//! and without restart, and all honest replicas at once; partitions, drops, duplicates,
//! reordering). CI runs 2,000 seeds split over four tests so both cores work, and the mutation
//! check: each deliberate engine bug must be caught within a few seeds, and the seed that
//! catches it replays to the same violation.

use medchain_pbft::Mutant;
use medchain_tests::sim::byzantine::Behaviour;
use medchain_tests::sim::pbft::{run, Scenario};

fn seeds(range: std::ops::Range<u64>) {
    medchain_tests::sim::assert_seeds_pass("pbft", range, |seed| {
        let scn = Scenario::generate(seed, None);
        run(&scn, false)
            .violation
            .map(|v| format!("{} -> {v}", scn.describe()))
    });
}

#[test]
fn seeds_0000_0499() {
    seeds(0..500);
}

#[test]
fn seeds_0500_0999() {
    seeds(500..1000);
}

#[test]
fn seeds_1000_1499() {
    seeds(1000..1500);
}

#[test]
fn seeds_1500_1999() {
    seeds(1500..2000);
}

#[test]
fn same_seed_same_trace() {
    for seed in [3, 11, 25] {
        let scn = Scenario::generate(seed, None);
        let a = run(&scn, true);
        let b = run(&scn, false);
        assert_eq!(a.trace_hash, b.trace_hash, "seed {seed}");
        assert!(a.trace.len() > 50, "trace has {} lines", a.trace.len());
        assert!(a.executed > 0);
    }
    let other = run(&Scenario::generate(4, None), false);
    assert_ne!(
        other.trace_hash,
        run(&Scenario::generate(3, None), false).trace_hash
    );
}

#[test]
fn checkers_catch_a_broken_quorum() {
    // f+1 instead of the real quorum, with an equivocating primary: the two halves of the
    // replicas each commit their own batch, and the agreement checker must say so.
    let mut found = None;
    for seed in 0..40 {
        let mut scn = Scenario::generate(seed, Some(4));
        scn.byzantine = vec![(0, Behaviour::Equivocator)];
        scn.crashes.clear();
        scn.broken_quorum = Some(2);
        if let Some(v) = run(&scn, false).violation {
            found = Some((seed, v));
            break;
        }
    }
    let (seed, v) = found.expect("a broken quorum must produce a detected violation");
    assert_eq!(v.property, "agreement", "seed {seed}: {v}");

    // The same scenario replays to the same violation.
    let mut scn = Scenario::generate(seed, Some(4));
    scn.byzantine = vec![(0, Behaviour::Equivocator)];
    scn.crashes.clear();
    scn.broken_quorum = Some(2);
    assert_eq!(run(&scn, false).violation, Some(v));
}

/// The first seed of `range` whose scenario (made by `make`) violates a property, replayed once.
fn first_caught(
    range: std::ops::Range<u64>,
    make: impl Fn(u64) -> Scenario,
) -> Option<(u64, medchain_tests::sim::Violation)> {
    medchain_tests::sim::first_caught(range, |seed| run(&make(seed), false).violation)
}

#[test]
fn mutant_commit_before_persist_is_caught() {
    // Issue 14, bug 1: executing a batch before persisting the prepared certificate that
    // justifies it. The persist-before-execute checker sees it at the execution itself, and a
    // crash right after the execution makes it real.
    let make = |seed| {
        let mut scn = Scenario::generate(seed, None);
        scn.mutant = Some(Mutant::CommitBeforePersist);
        scn
    };
    let (seed, v) = first_caught(0..50, make).expect("commit-before-persist must be caught");
    assert_eq!(v.property, "persist before execute", "seed {seed}: {v}");
}

#[test]
fn mutant_no_reproposal_check_is_caught() {
    // A new view taken as its primary sent it: a BadNewView primary replaces a batch that may
    // have committed, and replicas execute the replacement.
    let make = |seed| {
        let mut scn = Scenario::generate(seed, None);
        scn.mutant = Some(Mutant::NoReproposalCheck);
        scn
    };
    let (seed, v) = first_caught(0..100, make).expect("no re-proposal check must be caught");
    assert!(
        ["agreement", "persist before execute"].contains(&v.property),
        "seed {seed}: {v}"
    );
}

#[test]
fn mutant_one_prepare_too_few_is_caught() {
    // With one prepare too few, an equivocating primary that backs each half's batch with its own
    // votes gets two batches prepared in one view; the next view re-proposes the other one.
    let make = |seed| {
        let mut scn = Scenario::generate(seed, None);
        scn.mutant = Some(Mutant::OnePrepareTooFew);
        scn
    };
    let (seed, v) = first_caught(0..100, make).expect("one prepare too few must be caught");
    assert!(
        ["agreement", "persist before execute", "common view"].contains(&v.property),
        "seed {seed}: {v}"
    );
}

#[test]
fn a_byzantine_replica_cycling_old_views_raises_no_storm() {
    // Seed 178124: ViewChangeLiars at r1 and r6 and a Replayer at r8 (n = 10). r1 sent view
    // changes for views it had left (4, 5, 6, ...) in turn, and each got a stable proof and a
    // new view back from every honest replica, to which it answered again: millions of pending
    // messages within 300 ms of virtual time, then out of memory. Help now answers a peer
    // once per timeout unless it asks about a higher view.
    let scn = Scenario::generate(178_124, None);
    let out = run(&scn, false);
    assert!(out.violation.is_none(), "{:?}", out.violation);
    assert!(out.events < 100_000, "{} events", out.events);

    // The rule as it was (per view asked about only) is caught by the traffic bound.
    let mut old = scn.clone();
    old.mutant = Some(Mutant::HelpEveryOldView);
    let v = run(&old, false)
        .violation
        .expect("the old help rule storms");
    assert_eq!(v.property, "bounded traffic", "{v}");
}
