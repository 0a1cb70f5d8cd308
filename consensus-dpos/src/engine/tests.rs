use medchain_crypto::validators::EcdsaVerifier;

use crate::local_cluster::{test_params, LocalCluster};
use crate::{Event, Params};

fn hashes(c: &LocalCluster<EcdsaVerifier>, i: usize) -> Vec<Vec<u8>> {
    c.ledgers[i]
        .blocks
        .iter()
        .map(|b| {
            medchain_proto::dpos::block_hash(b.block.as_ref().unwrap().header.as_ref().unwrap())
                .as_bytes()
                .to_vec()
        })
        .collect()
}

#[test]
fn a_small_consortium_finalizes_items_with_identical_chains_and_credit() {
    let mut c = LocalCluster::new(4, 3, 0, test_params(), EcdsaVerifier);
    c.start();
    for k in 0..20 {
        c.submit_all(format!("slip {k}").as_bytes());
    }
    let mut guard = 0;
    while c.ledgers.iter().any(|l| l.items.len() < 20) {
        assert!(c.fire_next(), "stalled");
        guard += 1;
        assert!(guard < 10_000);
    }
    for i in 1..c.engines.len() {
        assert_eq!(hashes(&c, 0), hashes(&c, i), "node {i} chain");
        assert_eq!(c.ledgers[0].state.digest(), c.ledgers[i].state.digest());
    }
    // Every block's producer earned credit, every certificate has more than 2/3 of 3.
    let rules = &c.ledgers[0].state.registry;
    for b in &c.ledgers[0].blocks {
        assert!(b.certificate.as_ref().unwrap().precommits.len() >= 3);
        let producer = b.block.as_ref().unwrap().header.as_ref().unwrap().producer;
        assert!(rules.rpn().contains(&producer));
    }
    let first = &c.ledgers[0].blocks[0];
    let producer = first
        .block
        .as_ref()
        .unwrap()
        .header
        .as_ref()
        .unwrap()
        .producer;
    let start = crate::ChainState::genesis(&crate::local_cluster::test_genesis(
        &c.keys,
        4,
        3,
        test_params(),
    ))
    .unwrap();
    assert!(
        c.ledgers[0].state.registry.credit(producer) > start.registry.credit(producer),
        "producing earns credit"
    );
}

#[test]
fn a_silent_representative_is_charged_and_replaced_by_the_best_auditor() {
    let mut params = test_params();
    params.credit.missed_slot_penalty = 100_000; // one missed slot drops it below threshold
    let mut c = LocalCluster::new(4, 3, 2, params, EcdsaVerifier);
    let silent = c.ledgers[0].state.registry.proposer(1, 0);
    let best_auditor = c.ledgers[0].state.registry.atn()[0];
    c.crash(silent);
    c.start();
    for k in 0..12 {
        c.submit_all(format!("slip {k}").as_bytes());
        assert!(c.run_until_height(k / 3 + 1, 1_000_000));
    }
    assert!(c.run_until_height(3, 1_000_000));
    let reg = &c.ledgers[0].state.registry;
    assert!(!reg.rpn().contains(&silent), "still a representative");
    assert!(
        reg.rpn().contains(&best_auditor),
        "the best auditor took its place"
    );
    assert_eq!(reg.atn().len(), 3, "auditors refilled from the spares");
    assert_eq!(reg.credit(silent), Some(0));
}

/// Issue 14: a persisted state above the stored chain means the chain lost final blocks; the
/// engine refuses to start rather than drop the state and possibly sign against it. A record
/// that does not decode refuses the start too, and a state for a final height is ignored.
#[test]
fn restore_refuses_state_ahead_of_the_chain_or_damaged() {
    use crate::local_cluster::{test_genesis, test_keys};
    use crate::{ChainState, Config, Engine, PersistedState, RestoreError};
    let keys = test_keys(7);
    let genesis = test_genesis(&keys, 4, 3, test_params());
    let chain = ChainState::genesis(&genesis).unwrap();
    let ledger = crate::local_cluster::MemoryLedger {
        blocks: Vec::new(),
        state: chain.clone(),
        items: Default::default(),
        persisted: None,
    };
    let restore = |p: PersistedState| {
        let cfg = Config {
            chain_id: genesis.chain_id.clone(),
            me: 1,
            params: genesis.params.clone(),
        };
        Engine::restore(
            cfg,
            keys[1].clone(),
            EcdsaVerifier,
            chain.clone(),
            Some(p),
            &ledger,
        )
        .map(|_| ())
    };
    let ahead = PersistedState {
        height: 5,
        ..Default::default()
    };
    assert_eq!(
        restore(ahead),
        Err(RestoreError::AheadOfChain {
            persisted: 5,
            tip: 0
        })
    );
    let damaged = PersistedState {
        height: 1,
        votes: vec![vec![0xff, 0x00]],
        ..Default::default()
    };
    let err = restore(damaged).unwrap_err();
    assert!(
        matches!(&err, RestoreError::Damaged { record, .. } if record == "own vote"),
        "{err}"
    );
    assert_eq!(
        restore(PersistedState::default()),
        Ok(()),
        "height 0 is final"
    );
}

#[test]
fn a_restarted_auditor_signs_nothing_new_for_what_it_voted() {
    let mut c = LocalCluster::new(4, 4, 0, test_params(), EcdsaVerifier);
    let auditor = c.ledgers[0].state.registry.atn()[0];
    // Two of four auditors are down, so nothing becomes final and the height stays open.
    let atn = c.ledgers[0].state.registry.atn().to_vec();
    c.crash(atn[1]);
    c.crash(atn[2]);
    c.start();
    c.submit_all(b"slip");
    let mut guard = 0;
    while c.ledgers[auditor as usize]
        .persisted
        .as_ref()
        .is_none_or(|p| p.votes.is_empty())
    {
        assert!(c.fire_next() && guard < 1_000, "the auditor never voted");
        guard += 1;
    }
    assert!(c.ledgers[auditor as usize].blocks.is_empty());
    let before = c.ledgers[auditor as usize].persisted.clone().unwrap();
    c.crash(auditor);
    c.restart(auditor);
    let after = c.ledgers[auditor as usize].persisted.clone().unwrap();
    for v in &before.votes {
        assert!(
            after.votes.contains(v),
            "a vote was forgotten across the restart"
        );
    }
    // Its re-sent votes are byte-identical to the persisted ones.
    let actions =
        c.engines[auditor as usize].handle(c.now, Event::Start, &c.ledgers[auditor as usize]);
    for a in actions {
        if let crate::Action::Broadcast(m) = a {
            if let Some(medchain_proto::v1::dpos_message::Kind::Vote(v)) = m.kind {
                use medchain_proto::canonical::Canonical;
                assert!(
                    after.votes.contains(&v.canonical_bytes()),
                    "a new vote was signed"
                );
            }
        }
    }
}

#[test]
fn epochs_reelect_and_reshuffle() {
    let params = Params {
        epoch_slots: 3,
        ..test_params()
    };
    let mut c = LocalCluster::new(4, 3, 0, params, EcdsaVerifier);
    c.start();
    for k in 0..8 {
        c.submit_all(format!("slip {k}").as_bytes());
        assert!(c.run_until_height(k + 1, 1_000_000));
    }
    let reg = &c.ledgers[0].state.registry;
    assert!(reg.epoch >= 2, "epoch {}", reg.epoch);
    assert_eq!(reg.rpn().len(), 4);
    assert_eq!(reg.atn().len(), 3);
}

/// A Byzantine auditor that signs votes for thousands of rounds ahead makes a node keep only its
/// votes of the highest far round, and messages for the next height are kept only when signed by
/// the institution they name, a bounded number per peer.
#[test]
fn far_round_votes_and_next_height_messages_are_bounded_and_verified() {
    use medchain_proto::dpos::{sign_vote, unsigned_vote};
    use medchain_proto::v1::{self, dpos_message::Kind, DposVoteKind};

    let mut c = LocalCluster::new(4, 4, 0, test_params(), EcdsaVerifier);
    let keys = crate::local_cluster::test_keys(8);
    let atn = c.ledgers[0].state.registry.atn().to_vec();
    let (me, liar) = (atn[0], atn[1]);
    let vote = |height: u64, round: u64, voter: u32| {
        let v = unsigned_vote(
            "consortium-test",
            height,
            round,
            DposVoteKind::Prevote,
            None,
            None,
            voter,
        );
        v1::DposMessage {
            kind: Some(Kind::Vote(sign_vote(&keys[voter as usize], v))),
        }
    };
    for round in 100..400 {
        let msg = vote(1, round, liar);
        c.event(me, Event::Message { from: liar, msg });
    }
    let engine = &c.engines[me as usize];
    let far: Vec<u64> = engine
        .prevotes
        .iter()
        .filter(|(r, votes)| **r > super::NEAR_ROUNDS && votes.contains_key(&liar))
        .map(|(r, _)| *r)
        .collect();
    assert_eq!(far, vec![399], "only the highest far round is kept");

    // Next height: a forged signature is not kept; honest-looking ones only up to the per-peer
    // bound.
    let mut forged = vote(2, 0, liar);
    if let Some(Kind::Vote(v)) = forged.kind.as_mut() {
        v.signature[5] ^= 1;
    }
    c.event(
        me,
        Event::Message {
            from: liar,
            msg: forged,
        },
    );
    assert!(c.engines[me as usize].future.is_empty());
    for round in 0..200 {
        let msg = vote(2, round, liar);
        c.event(me, Event::Message { from: liar, msg });
    }
    assert_eq!(
        c.engines[me as usize].future.len(),
        super::MAX_FUTURE_PER_PEER
    );
}

/// Issue 14: every auditor whose precommit arrived before the next block was built earns its
/// verification credit. With 4 auditors a quorum is 3, so one precommit per height usually comes
/// after the certificate was taken; the next block's parent certificate still carries all four,
/// and its producer gets the full reward.
#[test]
fn late_precommits_join_the_next_parent_certificate() {
    let mut c = LocalCluster::new(4, 4, 0, test_params(), EcdsaVerifier);
    c.start();
    for k in 0..5 {
        c.submit_all(format!("slip {k}").as_bytes());
        assert!(c.run_until_height(k + 1, 1_000_000), "stalled");
    }
    let blocks = &c.ledgers[0].blocks;
    let mut short_certificates = 0;
    for fb in blocks.iter().take(4) {
        short_certificates += usize::from(fb.certificate.as_ref().unwrap().precommits.len() < 4);
    }
    assert!(
        short_certificates > 0,
        "no precommit came late: the test shows nothing"
    );
    for fb in blocks.iter().skip(1).take(4) {
        let block = fb.block.as_ref().unwrap();
        let pc = block
            .extras
            .as_ref()
            .unwrap()
            .parent_certificate
            .as_ref()
            .unwrap();
        let voters: Vec<u32> = pc.precommits.iter().map(|s| s.validator).collect();
        let mut all = c.ledgers[0].state.registry.atn().to_vec();
        all.sort_unstable();
        assert_eq!(
            voters,
            all,
            "height {}",
            block.header.as_ref().unwrap().height
        );
    }
}

/// The producer's reward is in proportion to the parent certificate it carries: a block whose
/// parent certificate leaves out one of four auditors pays its producer 3/4 of the reward.
#[test]
fn a_trimmed_parent_certificate_costs_its_producer() {
    let mut c = LocalCluster::new(4, 4, 0, test_params(), EcdsaVerifier);
    c.start();
    for k in 0..3 {
        c.submit_all(format!("slip {k}").as_bytes());
        assert!(c.run_until_height(k + 1, 1_000_000), "stalled");
    }
    let before = c.ledgers[0].blocks[1].clone();
    let parent_state = {
        // The state after block 1, rebuilt from genesis.
        let g = crate::local_cluster::test_genesis(&c.keys, 4, 4, test_params());
        let genesis = crate::ChainState::genesis(&g).unwrap();
        let first = &c.ledgers[0].blocks[0];
        let ledger = &c.ledgers[0];
        let block = first.block.as_ref().unwrap();
        let checked = genesis
            .check_block(block, &g.params, ledger, &EcdsaVerifier)
            .unwrap();
        genesis.apply_block(
            block,
            &checked,
            first.certificate.as_ref().unwrap(),
            &g.params,
            ledger,
        )
    };
    let params = test_params();
    let block = before.block.as_ref().unwrap();
    let producer = block.header.as_ref().unwrap().producer;
    let credit_after = |b: &medchain_proto::v1::DposBlock| {
        let checked = crate::chain::CheckedBlock {
            hash: medchain_proto::dpos::block_hash(b.header.as_ref().unwrap()),
            evidence: Vec::new(),
        };
        let s = parent_state.apply_block(
            b,
            &checked,
            before.certificate.as_ref().unwrap(),
            &params,
            &c.ledgers[0],
        );
        s.registry.credit(producer).unwrap()
    };
    let mut trimmed = block.clone();
    let pc = trimmed
        .extras
        .as_mut()
        .unwrap()
        .parent_certificate
        .as_mut()
        .unwrap();
    assert_eq!(pc.precommits.len(), 4);
    pc.precommits.truncate(3);
    let full = credit_after(block);
    let cut = credit_after(&trimmed);
    let reward = params.credit.produce_reward;
    assert_eq!(full - cut, reward - reward * 3 / 4);
    assert!(full - cut >= params.credit.verify_reward);
}
