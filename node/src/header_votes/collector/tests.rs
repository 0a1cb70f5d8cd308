use medchain_crypto::hash::domains;
use medchain_crypto::header_vote::header_vote_message;
use medchain_crypto::validators::EcdsaVerifier;
use medchain_crypto::SigningKey;

use super::*;

fn keys() -> Vec<SigningKey> {
    (1..=4u8)
        .map(|i| SigningKey::from_bytes(&[i; 32]).expect("valid scalar"))
        .collect()
}

fn collector(keys: &[SigningKey]) -> Collector<EcdsaVerifier> {
    let set = ValidatorSet::new(keys.iter().map(|k| k.identity()).collect()).unwrap();
    Collector::new("h".into(), set, EcdsaVerifier, 0)
}

fn vote(keys: &[SigningKey], v: u32, height: u64, hash: Hash32) -> Vote {
    let m = header_vote_message("h", height, &hash);
    Vote {
        height,
        hash,
        validator: v,
        signature: keys[v as usize].sign(domains::HEADER_VOTE, &m),
    }
}

fn certified(actions: &[Action]) -> Vec<u64> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Certified { height, .. } => Some(*height),
            _ => None,
        })
        .collect()
}

#[test]
fn three_of_four_votes_for_the_stored_header_certify_it_once() {
    let k = keys();
    let mut c = collector(&k);
    let h = Hash32([1; 32]);
    // Votes that arrive before this node stored the block are kept for it.
    assert!(c.on_vote(vote(&k, 1, 1, h)).is_empty());
    assert!(c.on_vote(vote(&k, 2, 1, h)).is_empty());
    assert!(
        c.on_commit(1, h).is_empty(),
        "two votes are short of 2f + 1"
    );
    let a = c.on_vote(vote(&k, 0, 1, h));
    assert_eq!(certified(&a), vec![1]);
    let Action::Certified { signatures, .. } = &a[0] else {
        unreachable!()
    };
    assert_eq!(
        signatures.iter().map(|s| s.0).collect::<Vec<_>>(),
        vec![0, 1, 2]
    );
    // The fourth vote, and the same vote again, certify nothing more.
    assert!(certified(&c.on_vote(vote(&k, 3, 1, h))).is_empty());
    assert!(c.on_vote(vote(&k, 3, 1, h)).is_empty());
}

#[test]
fn a_forged_vote_or_a_stranger_counts_for_nothing() {
    let k = keys();
    let mut c = collector(&k);
    let h = Hash32([1; 32]);
    c.on_commit(1, h);
    let mut forged = vote(&k, 1, 1, h);
    forged.validator = 2;
    assert!(matches!(
        c.on_vote(forged)[..],
        [Action::Refused { validator: 2, .. }]
    ));
    let mut stranger = vote(&k, 1, 1, h);
    stranger.validator = 9;
    assert!(matches!(c.on_vote(stranger)[..], [Action::Refused { .. }]));
    assert_eq!(c.held(), 0);
}

#[test]
fn f_plus_one_votes_for_another_header_raise_a_divergence() {
    let k = keys();
    let mut c = collector(&k);
    let (ours, theirs) = (Hash32([1; 32]), Hash32([2; 32]));
    c.on_commit(1, ours);
    assert!(
        c.on_vote(vote(&k, 1, 1, theirs)).is_empty(),
        "one vote may be a faulty node"
    );
    let a = c.on_vote(vote(&k, 2, 1, theirs));
    assert_eq!(
        a,
        vec![Action::Diverged {
            height: 1,
            ours,
            theirs,
            signers: vec![1, 2]
        }]
    );
    assert!(
        c.on_vote(vote(&k, 3, 1, theirs)).is_empty(),
        "reported once"
    );
}

#[test]
fn a_second_header_from_one_validator_is_an_equivocation_and_is_not_counted() {
    let k = keys();
    let mut c = collector(&k);
    let (a, b) = (Hash32([1; 32]), Hash32([2; 32]));
    c.on_commit(1, a);
    c.on_vote(vote(&k, 1, 1, a));
    assert_eq!(
        c.on_vote(vote(&k, 1, 1, b)),
        vec![Action::Equivocation {
            height: 1,
            validator: 1
        }]
    );
    assert_eq!(c.held(), 1);
}

#[test]
fn votes_outside_the_window_are_refused_and_old_ones_pruned() {
    let k = keys();
    let mut c = collector(&k);
    let h = Hash32([1; 32]);
    assert!(matches!(
        c.on_vote(vote(&k, 1, KEEP_AHEAD + 1, h))[..],
        [Action::Refused { .. }]
    ));
    c.on_vote(vote(&k, 1, 5, h));
    assert_eq!(c.held(), 1);
    c.on_commit(5 + KEEP_BEHIND + 1, h);
    assert_eq!(c.held(), 0, "votes far below the tip are dropped");
    assert!(matches!(
        c.on_vote(vote(&k, 2, 5, h))[..],
        [Action::Refused { .. }]
    ));
}
