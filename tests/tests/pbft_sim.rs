//! The PBFT engine under seeded fault schedules (n = 4, 7 and 10; up to f Byzantine replicas of
//! every behaviour, crashes with restarts, partitions, drops, duplicates, reordering). CI runs
//! 2,000 seeds split over four tests so both cores work.

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
