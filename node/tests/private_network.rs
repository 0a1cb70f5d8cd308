//! End-to-end: a 4-node private network of real `medchain run` processes on loopback.
//!
//! One scenario, in order (each phase needs the previous one's state):
//! 1. 4 nodes commit 1,000 transactions and end with identical chains;
//! 2. SIGKILL a backup: the chain goes on; restart it: it catches up;
//! 3. SIGKILL the primary: a view change, the chain goes on; restart it: it catches up;
//! 4. a node whose key is outside genesis cannot connect or inject anything;
//! 5. across all of it no accepted transaction is lost, and all chains are identical.

use std::collections::BTreeSet;

use medchain_crypto::keys::KeyMaterial;
mod support;

use support::devnet::{registration_tx, tx_id, Devnet};

const CHAIN: &str = "hospital-dev";

/// Submits fresh transactions (the authority registering one new participant per nonce) spread
/// over the live nodes; returns the accepted ids.
fn submit(
    net: &Devnet,
    live: &[usize],
    key: &KeyMaterial,
    nonces: std::ops::Range<u64>,
) -> Vec<String> {
    let mut ids = Vec::new();
    for (k, nonce) in nonces.enumerate() {
        let tx = registration_tx(CHAIN, key, nonce, nonce);
        let node = live[k % live.len()];
        let (code, body) = net.submit(node, &tx);
        assert_eq!(code, 202, "node{node} refused a valid transaction: {body}");
        ids.push(tx_id(&tx));
    }
    ids
}

fn assert_identical_chains(net: &Devnet, nodes: &[usize]) -> u64 {
    let height = net.height(nodes[0]);
    for &i in nodes {
        assert_eq!(net.height(i), height, "node{i} is at another height");
    }
    for h in 1..=height {
        let first = net.block_hash(nodes[0], h).expect("block exists");
        for &i in &nodes[1..] {
            assert_eq!(
                net.block_hash(i, h).as_deref(),
                Some(first.as_str()),
                "node{i} differs at height {h}"
            );
        }
    }
    height
}

fn primary(net: &Devnet, any_live: usize) -> usize {
    net.status(any_live).unwrap().primary as usize
}

#[test]
fn four_nodes_commit_survive_crashes_and_catch_up() {
    let tmp = tempfile::tempdir().unwrap();
    let base = support::base_port(12_000, 160, 38);
    let mut net = Devnet::init(&tmp.path().join("devnet"), 4, base);
    net.start_all_connected();
    let all = [0, 1, 2, 3];
    let mut accepted: Vec<String> = Vec::new();

    // 1. 1,000 transactions, identical chains; node 0 pushes every committed block on its event
    // stream, in order.
    let authority = net.authority();
    let events = support::devnet::block_events(&net.apis[0], 1_000, 180);
    accepted.extend(submit(&net, &all, &authority, 1..1_001));
    assert!(
        net.wait(180, |n| all.iter().all(|&i| n.committed(i) == 1_000)),
        "not all 1,000 committed everywhere: {:?}",
        all.iter().map(|&i| net.committed(i)).collect::<Vec<_>>()
    );
    assert_identical_chains(&net, &all);
    let events = events.join().unwrap();
    let pushed: Vec<&String> = events.iter().flat_map(|e| &e.2).collect();
    assert_eq!(pushed.len(), 1_000, "the event stream missed transactions");
    assert!(
        events.windows(2).all(|w| w[1].0 == w[0].0 + 1),
        "events out of order"
    );
    for (height, hash, _) in &events {
        assert_eq!(
            net.block_hash(0, *height).as_ref(),
            Some(hash),
            "event of block {height}"
        );
    }

    // 2. Kill a backup: the chain goes on. Restart it: it catches up.
    let p = primary(&net, 0);
    let backup = (p + 1) % 4;
    net.kill(backup);
    let live: Vec<usize> = all.iter().copied().filter(|i| *i != backup).collect();
    accepted.extend(submit(&net, &live, &authority, 1_001..1_201));
    assert!(
        net.wait(120, |n| live.iter().all(|&i| n.committed(i) == 1_200)),
        "the chain stopped without a backup"
    );
    net.start(backup);
    assert!(
        net.wait(120, |n| n.committed(backup) == 1_200),
        "the restarted backup did not catch up:\n{}",
        net.log(backup)
    );
    assert_identical_chains(&net, &all);

    // 3. Kill the primary: a view change, the chain goes on. Restart it: it catches up.
    let p = primary(&net, backup);
    net.kill(p);
    let live: Vec<usize> = all.iter().copied().filter(|i| *i != p).collect();
    accepted.extend(submit(&net, &live, &authority, 1_201..1_401));
    assert!(
        net.wait(180, |n| live.iter().all(|&i| n.committed(i) == 1_400)),
        "the chain stopped without its primary: {:?}",
        live.iter().map(|&i| net.committed(i)).collect::<Vec<_>>()
    );
    let new_primary = primary(&net, live[0]);
    assert_ne!(new_primary, p, "no view change happened");
    net.start(p);
    assert!(
        net.wait(120, |n| n.committed(p) == 1_400),
        "the restarted primary did not catch up:\n{}",
        net.log(p)
    );
    let height = assert_identical_chains(&net, &all);

    // 4. An outsider: its own home lists the four validators plus itself, so it runs and dials
    // them, but they are configured with the real genesis and refuse it.
    let outsider_dir = tmp.path().join("outsider");
    let mut outsider = Devnet::init(&outsider_dir, 5, base + 50);
    let real_genesis = std::fs::read_to_string(net.home(0).join("genesis.toml")).unwrap();
    let own = std::fs::read_to_string(outsider.home(4).join("genesis.toml")).unwrap();
    let own_entry = own.split("[[validators]]").last().unwrap();
    let mixed = format!("{}\n\n[[validators]]{own_entry}", real_genesis.trim_end());
    std::fs::write(outsider.home(4).join("genesis.toml"), mixed).unwrap();
    outsider.start(4);
    // The outsider's genesis also lists its own devnet's authority: it accepts that one's
    // registrations, and nothing it holds may reach the real validators.
    let intruder_tx = registration_tx(CHAIN, &outsider.authority(), 1, 9_999);
    assert!(
        outsider.wait(20, |o| o.submit(4, &intruder_tx).0 == 202),
        "the outsider's own API did not take its transaction:\n{}",
        outsider.log(4)
    );
    assert!(
        net.wait(20, |n| n.log(0).contains("refused an incoming connection")
            || (0..4)
                .any(|i| n.log(i).contains("refused an incoming connection"))),
        "no validator logged refusing the outsider"
    );
    // Give it time to try: it redials with backoff.
    net.wait(3, |_| false);
    assert_eq!(
        outsider.status(4).unwrap().peers_connected,
        0,
        "the outsider got connected"
    );
    assert_eq!(
        net.height(0),
        height,
        "the outsider's transaction made a block"
    );
    let intruder_id = tx_id(&intruder_tx);
    let authority = net.authority();
    for i in 0..4 {
        let (code, _) = support::devnet::http_as(
            &net.apis[i],
            &authority,
            "GET",
            &format!("/v1/transactions/{intruder_id}"),
            None,
        )
        .unwrap();
        assert_eq!(code, 404, "node{i} has the outsider's transaction");
    }
    outsider.kill(4);

    // 5. Nothing accepted was lost, on any node.
    let unique: BTreeSet<&String> = accepted.iter().collect();
    assert_eq!(unique.len(), 1_400);
    for i in 0..4 {
        assert_eq!(net.committed(i), 1_400);
        let registry = support::devnet::client_as(&net.apis[i], &authority);
        for id in accepted.iter().step_by(7) {
            let (code, body) = support::devnet::http_with(
                &registry,
                "GET",
                &format!("/v1/transactions/{id}"),
                None,
            )
            .unwrap();
            assert_eq!(code, 200, "node{i} lost {id}: {body}");
        }
    }
}
