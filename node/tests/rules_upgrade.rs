//! End-to-end: a running chain moves to later contract rules at a height agreed on chain, through
//! the real binary. A 4-node devnet made with rules 3 is upgraded to rules 4 by its authority
//! (`medchain rules upgrade`): the nodes run rules 3 until the activation height and rules 4 from
//! it on, and `GET /v1/chain` and `medchain rules show` say so. Upgraded again to rules 5, every
//! header from its height on carries the state root, alike on every node. An upgrade to rules no
//! binary here knows is refused by the CLI; submitted anyway, it is taken, and every node stops
//! before its activation height (no block there) and refuses to start again, saying which
//! release it needs.

mod support;

use medchain_ledger::contracts::rules::{LATEST, UPGRADE_NOTICE_BLOCKS};
use medchain_proto::ledger::sign_transaction;
use medchain_proto::v1;
use support::devnet::{registration_tx, Devnet};
use support::{medchain, text};

#[test]
fn a_running_chain_moves_to_later_rules_at_the_agreed_height() {
    let tmp = tempfile::tempdir().unwrap();
    let base = support::base_port(1_100, 110, 35);
    let mut net = Devnet::init(&tmp.path().join("devnet"), 4, base);
    for i in 0..4 {
        let path = net.home(i).join("genesis.toml");
        let genesis = std::fs::read_to_string(&path).unwrap();
        let latest = format!("rules = {LATEST}");
        assert!(genesis.contains(&latest), "{genesis}");
        std::fs::write(&path, genesis.replacen(&latest, "rules = 3", 1)).unwrap();
    }
    net.start_all_connected();
    let node = format!("http://{}", net.apis[0]);
    let authority_file = net.dir.join("authority.key");
    let authority_file = authority_file.to_str().unwrap();
    let authority = net.authority();
    let cli = |args: &[&str]| {
        let out = medchain(args);
        let (o, e) = text(&out);
        (out.status.success(), o, e)
    };
    let (ok, shown, e) = cli(&["rules", "show", "--node", &node]);
    assert!(ok && shown.contains("runs rules 3"), "{shown}{e}");

    // One block per registration, to move the chain on.
    let nonce = std::cell::Cell::new(1_000u64);
    let next = || {
        nonce.set(nonce.get() + 1);
        nonce.get()
    };
    let advance_to = |net: &Devnet, height: u64| {
        while net.height(0) < height {
            let n = next();
            let tx = registration_tx("hospital-dev", &authority, n, n);
            let (code, body) = net.submit(0, &tx);
            assert_eq!(code, 202, "{body}");
            let want = net.committed(0) + 1;
            assert!(net.wait(20, |d| d.committed(0) >= want), "not committed");
        }
    };

    // Schedules an upgrade to `version` at `at` through the CLI and moves the chain past it.
    let upgrade_to = |version: u32, at: u64| {
        let (ok, out, e) = cli(&[
            "rules",
            "upgrade",
            "--to",
            &version.to_string(),
            "--at-height",
            &at.to_string(),
            "--node",
            &node,
            "--key",
            authority_file,
        ]);
        assert!(ok, "{out}{e}");
        advance_to(&net, at + 1);
    };

    // The CLI refuses rules it does not know, and too little notice.
    let unknown = (LATEST + 1).to_string();
    let (ok, _, e) = cli(&[
        "rules",
        "upgrade",
        "--to",
        &unknown,
        "--node",
        &node,
        "--key",
        authority_file,
    ]);
    assert!(
        !ok && e.contains(&format!("knows rules up to {LATEST}")),
        "{e}"
    );
    let soon = (net.height(0) + 2).to_string();
    let (ok, _, e) = cli(&[
        "rules",
        "upgrade",
        "--to",
        "4",
        "--at-height",
        &soon,
        "--node",
        &node,
        "--key",
        authority_file,
    ]);
    assert!(!ok && e.contains("too soon"), "{e}");

    let at = net.height(0) + 2 + UPGRADE_NOTICE_BLOCKS;
    let (ok, out, e) = cli(&[
        "rules",
        "upgrade",
        "--to",
        "4",
        "--at-height",
        &at.to_string(),
        "--node",
        &node,
        "--key",
        authority_file,
    ]);
    assert!(
        ok && out.contains(&format!("runs rules 4 from height {at}")),
        "{out}{e}"
    );
    let (_, shown, _) = cli(&["rules", "show", "--node", &node]);
    assert!(
        shown.contains("runs rules 3")
            && shown.contains(&format!("upgrade to rules 4 from height {at} (scheduled")),
        "{shown}"
    );
    advance_to(&net, at - 2);
    let chain = support::devnet::call(support::devnet::client(&net.apis[3]).chain()).unwrap();
    assert_eq!(chain.rules, 3, "rules 4 before height {at}");
    advance_to(&net, at);
    for api in &net.apis {
        let chain = support::devnet::call(support::devnet::client(api).chain()).unwrap();
        assert_eq!(chain.rules, 4, "{api} after height {at}");
        assert_eq!(chain.rules_upgrade.unwrap().activation_height, at);
    }
    let (_, shown, _) = cli(&["rules", "show", "--node", &node]);
    assert!(
        shown.contains("runs rules 4") && shown.contains("in effect"),
        "{shown}"
    );

    // Rules 5: from its activation height every header carries the state root, the same on
    // every node (each built its tree from its state at that height, then kept it).
    let at5 = net.height(0) + 2 + UPGRADE_NOTICE_BLOCKS;
    upgrade_to(5, at5);
    assert!(net.wait(20, |d| (0..4).all(|i| d.height(i) > at5)));
    let root_at = |api: &String, h: u64| {
        support::devnet::call(support::devnet::client(api).block(h))
            .unwrap()
            .expect("committed")
            .state_root
    };
    assert_eq!(root_at(&net.apis[0], at5 - 1), "", "a root before rules 5");
    for h in [at5, at5 + 1] {
        let roots: Vec<String> = net.apis.iter().map(|a| root_at(a, h)).collect();
        assert_eq!(roots[0].len(), 64, "no state root at height {h}");
        assert!(roots.iter().all(|r| *r == roots[0]), "{roots:?}");
    }

    // Rules 6: from its activation height audit events go to counted lists, which the client
    // gets proved whole; the events from before stay listed, and the client says they are not
    // proved instead of showing them as such.
    let at6 = net.height(0) + 2 + UPGRADE_NOTICE_BLOCKS;
    upgrade_to(6, at6);
    let card: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(net.dir.join("authority.card.json")).unwrap(),
    )
    .unwrap();
    let office = card["identity"].as_str().unwrap().to_string();
    let genesis = net.home(0).join("genesis.toml");
    let (ok, trail, e) = cli(&[
        "audit",
        "--actor",
        &office,
        "--node",
        &node,
        "--key",
        authority_file,
        "--genesis",
        genesis.to_str().unwrap(),
    ]);
    assert!(ok, "{trail}{e}");
    assert!(e.contains("verified against block"), "{e}");
    assert!(
        e.contains("more the node lists are not proved (written before rules 6)"),
        "{e}"
    );
    assert!(
        trail.lines().count() >= 1,
        "the events since rules 6 are shown:\n{trail}"
    );
    let at = at6;

    // An upgrade to rules nobody here knows, submitted past the CLI: taken by the chain, which
    // then stops before its activation height, on every node.
    let halt_at = net.height(0) + 1 + UPGRADE_NOTICE_BLOCKS;
    let tx = sign_transaction(
        &authority.signing_key(),
        v1::TransactionBody {
            chain_id: "hospital-dev".into(),
            signer: vec![],
            nonce: next(),
            timestamp_ms: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_millis() as u64,
            payload: Some(v1::transaction_body::Payload::RulesUpgrade(
                v1::RulesUpgrade {
                    version: LATEST + 1,
                    activation_height: halt_at,
                },
            )),
        },
    );
    let (code, body) = net.submit(0, &tx);
    assert_eq!(code, 202, "{body}");
    assert!(
        net.wait(20, |d| d.height(0) > at),
        "the upgrade was not committed"
    );
    advance_to(&net, halt_at - 1);
    // More work arrives; no block is made at the activation height.
    let n = next();
    let (code, body) = net.submit(1, &registration_tx("hospital-dev", &authority, n, n));
    assert_eq!(code, 503, "{body}");
    assert!(
        body.contains(&format!("knows rules up to {LATEST}")),
        "{body}"
    );
    assert!(!net.wait(3, |d| (0..4).any(|i| d.height(i) >= halt_at)));
    // A restarted node refuses to start, and says what to install.
    net.kill(2);
    net.start(2);
    assert!(
        net.wait(20, |d| d
            .log(2)
            .contains("install a release that knows rules")),
        "{}",
        net.log(2)
    );
    assert!(net.status(2).is_none(), "node2 started under unknown rules");
}
