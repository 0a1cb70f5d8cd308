//! End-to-end: a client that trusts only the genesis file verifies what its node tells it.
//!
//! A 4-node devnet (contract rules 6: a state root in every header, counted lists) certifies each header by
//! 2f + 1 validators' votes, on every node (`GET /v1/headers`). The CLI with `--genesis` reads an
//! identity through a lying node (a proxy in front of a real node that rewrites its answers) and
//! refuses each lie, naming what did not verify: a substituted encryption key, a header of
//! another chain, a forged state root, a header without a certificate or with too few
//! signatures, a proof against another root, an answer without a proof. The patient confirms
//! a record only as proved on chain (a slip with another H(M) is refused), and `GET /v1/slips`
//! then shows it confirmed. Her consent list and audit trail (rules 6) are shown only as proved
//! whole: a hidden grant or a hidden event is refused, and so is a forged outcome of her
//! revocation. A light client syncs headers only,
//! refuses a forged header list, and with its folder refuses a stale answer. Once the chain's
//! default light folder exists, commands verify without being told to.

mod support;

use medchain_proto::canonical::Canonical;
use medchain_proto::v1;
use serde_json::Value;
use support::devnet::{http, Devnet};
use support::proxy::LyingProxy;
use support::{medchain_with_env, register_participants, text};

/// Rewrites the hex of a canonical header inside a proof-carrying answer.
fn edit_header(json: &mut Value, edit: impl Fn(&mut v1::BlockHeader)) {
    let h = &mut json["proof"]["header"]["header"];
    let bytes = hex::decode(h.as_str().expect("a header")).unwrap();
    let mut header = v1::BlockHeader::decode_canonical(&bytes).unwrap();
    edit(&mut header);
    *h = Value::String(hex::encode(header.canonical_bytes()));
}

#[test]
fn a_client_with_the_genesis_file_refuses_every_lie_of_its_node() {
    let tmp = tempfile::tempdir().unwrap();
    let base = support::base_port(8_310, 110, 6);
    let mut net = Devnet::init(&tmp.path().join("devnet"), 4, base);
    net.start_all_connected();
    let users = tmp.path().join("users");
    std::fs::create_dir_all(&users).unwrap();
    let authority = net.dir.join("authority.key");
    register_participants(
        &net.apis[0],
        &users,
        authority.to_str().unwrap(),
        &[
            ("patient", "patient"),
            ("mallory", "patient"),
            ("doctor", "doctor"),
        ],
    );
    let tip = net.height(0);

    // Every node certifies the headers: 2f + 1 = 3 signatures each, on all four.
    assert!(
        net.wait(20, |d| (0..4).all(|i| {
            http(
                &d.apis[i],
                "GET",
                &format!("/v1/headers?from={tip}&count=1"),
                None,
            )
            .and_then(|(code, body)| (code == 200).then_some(body))
            .and_then(|b| serde_json::from_str::<Value>(&b).ok())
            .is_some_and(|v| v["headers"][0]["certificate"].is_string())
        })),
        "header {tip} not certified on every node:\n{}",
        net.log(0)
    );
    let (code, body) = http(&net.apis[2], "GET", "/v1/headers?from=1&count=1000", None).unwrap();
    assert_eq!(code, 200, "{body}");
    let list: Value = serde_json::from_str(&body).unwrap();
    assert!(list["headers"].as_array().unwrap().len() as u64 >= tip);

    let proxy = LyingProxy::start(&net.apis[0]);
    let genesis = net.home(0).join("genesis.toml");
    let key = users.join("patient.key");
    let patient = card_identity(&users.join("patient.card.json"));
    let mallory_key = encryption_key_of(&users.join("mallory.card.json"));
    let run = |node: &str, args: &[&str]| {
        let out = medchain_with_env(args, &[("MEDCHAIN_NODE", &format!("http://{node}"))]);
        let (o, e) = text(&out);
        (out.status.success(), o, e)
    };
    let show = |node: &str| {
        let out = medchain_with_env(
            &[
                "identity",
                "show",
                "--key",
                key.to_str().unwrap(),
                "--genesis",
                genesis.to_str().unwrap(),
            ],
            &[("MEDCHAIN_NODE", &format!("http://{node}"))],
        );
        let (o, e) = text(&out);
        (out.status.success(), o, e)
    };

    // Honest, through the node and through the proxy alike.
    for node in [net.apis[0].as_str(), proxy.addr.as_str()] {
        let (ok, o, e) = show(node);
        assert!(ok, "{o}\n{e}");
        assert!(
            e.contains("verified against block") && e.contains("certificate of 3 of 4 validators"),
            "{e}"
        );
        let info: Value = serde_json::from_str(&o).unwrap();
        assert_eq!(info["identity"], patient.as_str());
    }
    // An answer proved at an earlier block, to replay against a later root.
    let (_, old) = http_json(
        &proxy.addr,
        &format!("/v1/identities/{patient}?proof=true"),
        &key,
    );
    register_participants(
        &net.apis[0],
        &users,
        authority.to_str().unwrap(),
        &[("later", "doctor")],
    );

    let mallory = mallory_key.clone();
    let lies: Vec<(&str, support::proxy::Lie, &str)> = vec![
        (
            "the patient's encryption key replaced by Mallory's, in the answer and the proved value",
            std::sync::Arc::new(move |_, j: &mut Value| {
                let real = j["encryption_key"].as_str().unwrap_or("").to_string();
                if real.is_empty() {
                    return;
                }
                j["encryption_key"] = Value::String(mallory.clone());
                let v = &mut j["proof"]["entries"][0]["value"];
                *v = Value::String(v.as_str().unwrap().replace(&real, &mallory));
            }),
            "does not verify against the state root of certified block",
        ),
        (
            "a header of another chain",
            std::sync::Arc::new(|_, j: &mut Value| {
                edit_header(j, |h| h.chain_id = "another-chain".into())
            }),
            "is of chain \"another-chain\"",
        ),
        (
            "a header with a forged state root",
            std::sync::Arc::new(|_, j: &mut Value| edit_header(j, |h| h.state_root = vec![7; 32])),
            "does not verify against the genesis validators",
        ),
        (
            "a header without its certificate",
            std::sync::Arc::new(|_, j: &mut Value| {
                j["proof"]["header"]
                    .as_object_mut()
                    .unwrap()
                    .remove("certificate");
            }),
            "comes without a header certificate",
        ),
        (
            "a certificate cut to 2 signatures",
            std::sync::Arc::new(|_, j: &mut Value| {
                let c = &mut j["proof"]["header"]["certificate"];
                let bytes = hex::decode(c.as_str().unwrap()).unwrap();
                let mut cert = v1::HeaderCertificate::decode_canonical(&bytes).unwrap();
                cert.signatures.truncate(2);
                *c = Value::String(hex::encode(cert.canonical_bytes()));
            }),
            "does not verify against the genesis validators",
        ),
        (
            "a proof from an earlier block with the newest header",
            std::sync::Arc::new({
                let old = old.clone();
                move |_, j: &mut Value| {
                    j["proof"]["entries"] = old["proof"]["entries"].clone();
                }
            }),
            "does not verify against the state root of certified block",
        ),
        (
            "an answer without its proof",
            std::sync::Arc::new(|_, j: &mut Value| {
                j.as_object_mut().unwrap().remove("proof");
            }),
            "gave no proof with its answer",
        ),
    ];
    for (what, lie, refusal) in lies {
        let lie = lie.clone();
        proxy.lie(move |path, j| {
            if path.starts_with("/v1/identities/") {
                lie(path, j)
            }
        });
        let (ok, o, e) = show(&proxy.addr);
        assert!(!ok, "{what}: believed\n{o}\n{e}");
        assert!(
            e.contains(refusal) && e.contains("did not verify"),
            "{what}: refused for another reason than {refusal:?}:\n{e}"
        );
        assert!(!o.contains(&mallory_key), "{what}: printed the lie\n{o}");
    }
    proxy.honest();
    let (ok, o, e) = show(&proxy.addr);
    assert!(ok, "{o}\n{e}");

    // A record: the patient confirms only the slip proved on chain, its doctor's signature
    // and H(M) checked by her client.
    let (ok, o, e) = run(
        &net.apis[0],
        &[
            "record",
            "add",
            "--patient",
            &patient,
            "--file",
            support::test_data("fhir/observation-example.json")
                .to_str()
                .unwrap(),
            "--key",
            users.join("doctor.key").to_str().unwrap(),
            "--genesis",
            genesis.to_str().unwrap(),
        ],
    );
    assert!(ok, "{o}\n{e}");
    let slip = o.lines().next().unwrap().trim().to_string();
    let confirm = [
        "record",
        "confirm",
        slip.as_str(),
        "--key",
        key.to_str().unwrap(),
        "--genesis",
        genesis.to_str().unwrap(),
    ];
    proxy.lie(|path, j| {
        if path.starts_with("/v1/records/") {
            // Another H(M) in the slip the node shows, as if the doctor had written another
            // record.
            let t = &mut j["proof"]["inclusion"]["transaction"];
            let bytes = hex::decode(t.as_str().unwrap()).unwrap();
            let mut tx = v1::Transaction::decode_canonical(&bytes).unwrap();
            if let Some(v1::transaction_body::Payload::PrivateSlip(s)) =
                tx.body.as_mut().and_then(|b| b.payload.as_mut())
            {
                s.content.as_mut().unwrap().record_hash = vec![3; 32];
            }
            *t = Value::String(hex::encode(tx.canonical_bytes()));
        }
    });
    let (ok, o, e) = run(&proxy.addr, &confirm);
    assert!(!ok, "a forged slip was confirmed:\n{o}\n{e}");
    assert!(e.contains("is not in that block"), "{e}");
    proxy.lie(|path, j| {
        if path.starts_with("/v1/records/") {
            j["proof"]["state"]["entries"][0]["value"] = Value::String("00".into());
        }
    });
    let (ok, _, e) = run(&proxy.addr, &confirm);
    assert!(
        !ok && e.contains("does not verify against the state root"),
        "{e}"
    );
    proxy.honest();
    let (ok, o, e) = run(&proxy.addr, &confirm);
    assert!(
        ok && o.contains("doctor's signature and H(M) checked"),
        "{o}\n{e}"
    );
    let (code, shown) = http_json(&net.apis[1], &format!("/v1/slips/{slip}"), &key);
    assert_eq!(code, 200, "{shown}");
    assert_eq!(shown["patient_confirmed"], true, "{shown}");

    // Consent lists and audit trails (rules 6): the patient sees her grants and her trail only
    // as proved whole; a node that hides a grant (one she would revoke) or an event is refused.
    let doctor = card_identity(&users.join("doctor.card.json"));
    let (patient_key, genesis_arg) = (key.to_str().unwrap(), genesis.to_str().unwrap());
    let grant_args = [
        "consent",
        "grant",
        "--to",
        &doctor,
        "--scope",
        "all",
        "--until",
        "+7d",
        "--key",
        patient_key,
        "--genesis",
        genesis_arg,
    ];
    let (ok, o, e) = run(&proxy.addr, &grant_args);
    assert!(ok, "{o}\n{e}");
    let grant = o.lines().next().unwrap().trim().to_string();
    let list = [
        "consent",
        "list",
        "--key",
        patient_key,
        "--genesis",
        genesis_arg,
    ];
    let (ok, o, e) = run(&proxy.addr, &list);
    assert!(ok && o.contains(&grant), "{o}\n{e}");
    assert!(
        e.contains("1 grants and 0 requests, verified against block"),
        "{e}"
    );
    proxy.lie(|path, j| {
        if path.starts_with("/v1/consent") {
            // The grant hidden: gone from the list, its list length proved as 0.
            j["grants"] = Value::Array(vec![]);
            let entries = j["proof"]["entries"].as_array_mut().unwrap();
            entries[0]["value"] = Value::String(hex::encode(0u64.to_be_bytes()));
            entries.drain(1..3);
        }
    });
    let (ok, o, e) = run(&proxy.addr, &list);
    assert!(!ok, "a hidden grant was believed:\n{o}\n{e}");
    assert!(
        e.contains("consent lists did not verify")
            && e.contains("does not verify against the state root"),
        "{e}"
    );
    let trail = [
        "audit",
        "--patient",
        &patient,
        "--key",
        patient_key,
        "--genesis",
        genesis_arg,
    ];
    proxy.honest();
    let (ok, o, e) = run(&proxy.addr, &trail);
    assert!(ok && o.contains("grant"), "{o}\n{e}");
    assert!(e.contains("events, verified against block"), "{e}");
    proxy.lie(|path, j| {
        if path.starts_with("/v1/audit") {
            // The last event hidden: dropped with its proof, the length one less.
            j["events"].as_array_mut().unwrap().pop();
            let entries = j["proof"]["entries"].as_array_mut().unwrap();
            entries.pop();
            let len = entries.len() as u64 - 1;
            entries[0]["value"] = Value::String(hex::encode(len.to_be_bytes()));
        }
    });
    let (ok, o, e) = run(&proxy.addr, &trail);
    assert!(!ok, "a hidden event was believed:\n{o}\n{e}");
    assert!(e.contains("audit trail did not verify"), "{e}");
    proxy.honest();

    // A transaction's outcome is proved: a node that says the patient's revocation was refused
    // (it was not) is caught, and so would one saying it took effect when it did not.
    proxy.lie(|path, j| {
        if path.starts_with("/v1/transactions/") && j.get("proof").is_some() {
            j["failed"] = Value::String("refused".into());
            j["proof"]["outcome"]["entries"][0]["value"] = Value::String(hex::encode(b"refused"));
        }
    });
    let revoke = [
        "consent",
        "revoke",
        &grant,
        "--key",
        patient_key,
        "--genesis",
        genesis_arg,
    ];
    let (ok, o, e) = run(&proxy.addr, &revoke);
    assert!(!ok, "a forged outcome was believed:\n{o}\n{e}");
    assert!(
        e.contains("committed did not verify")
            && e.contains("does not verify against the state root"),
        "{e}"
    );
    proxy.honest();
    let (ok, o, e) = run(&proxy.addr, &list);
    assert!(
        ok && o.contains("revoked"),
        "the revocation is on chain:\n{o}\n{e}"
    );

    // "Not registered", proved to a doctor (who would see any patient): the absence of the
    // registration against a certified root. Without the proof the client says it is unproved.
    let stranger_key = users.join("stranger.key");
    let (ok, o, e) = run(
        &proxy.addr,
        &[
            "keygen",
            "--out",
            stranger_key.to_str().unwrap(),
            "--insecure-plaintext",
        ],
    );
    assert!(ok, "{o}\n{e}");
    let stranger = card_identity(&users.join("stranger.card.json"));
    let doctor_key = users.join("doctor.key");
    let ask = [
        "identity",
        "show",
        &stranger,
        "--key",
        doctor_key.to_str().unwrap(),
        "--genesis",
        genesis_arg,
    ];
    let (ok, o, e) = run(&proxy.addr, &ask);
    assert!(!ok, "{o}\n{e}");
    assert!(
        e.contains("is not registered on chain") && e.contains("verified against block"),
        "{e}"
    );
    proxy.lie(|path, j| {
        if path.starts_with("/v1/identities/") {
            j.as_object_mut().unwrap().remove("proof");
        }
    });
    let (ok, o, e) = run(&proxy.addr, &ask);
    assert!(!ok && !e.contains("verified against block"), "{o}\n{e}");
    assert!(e.contains("or not visible to you"), "{e}");
    proxy.honest();

    // A light client: header-only sync, refusing a header list with a forged header.
    let light = tmp.path().join("light");
    let light = light.to_str().unwrap();
    let genesis_arg = genesis.to_str().unwrap();
    let sync = ["light", "sync", "--light", light, "--genesis", genesis_arg];
    proxy.lie(|path, j| {
        if path.starts_with("/v1/headers") {
            let h = &mut j["headers"][1]["header"];
            let bytes = hex::decode(h.as_str().unwrap()).unwrap();
            let mut header = v1::BlockHeader::decode_canonical(&bytes).unwrap();
            header.state_root = vec![7; 32];
            *h = Value::String(hex::encode(header.canonical_bytes()));
        }
    });
    let (ok, o, e) = run(&proxy.addr, &sync);
    assert!(!ok, "a forged header list was believed:\n{o}\n{e}");
    assert!(
        e.contains("header 3 does not link onto the header before it"),
        "{e}"
    );
    proxy.honest();
    let (ok, o, e) = run(&proxy.addr, &sync);
    assert!(ok, "{o}\n{e}");
    assert!(o.contains("verified headers 1.."), "{o}");
    let (ok, o, e) = run(&proxy.addr, &["light", "status", "--light", light]);
    assert!(
        ok && o.contains("newest verified header: block"),
        "{o}\n{e}"
    );

    // With its folder, the client refuses an answer proved at a block older than it has seen.
    let show_light = |node: &str| {
        run(
            node,
            &[
                "identity",
                "show",
                "--key",
                key.to_str().unwrap(),
                "--light",
                light,
            ],
        )
    };
    let (ok, o, e) = show_light(&proxy.addr);
    assert!(ok && e.contains("verified against block"), "{o}\n{e}");
    proxy.lie(move |path, j| {
        if path.starts_with("/v1/identities/") {
            *j = old.clone();
        }
    });
    let (ok, o, e) = show_light(&proxy.addr);
    assert!(!ok, "a stale answer was believed:\n{o}\n{e}");
    assert!(e.contains("the node serves a stale state"), "{e}");
    // Another chain's genesis file is refused for this folder.
    let other = tmp.path().join("other-genesis.toml");
    let text_of = std::fs::read_to_string(&genesis).unwrap();
    std::fs::write(
        &other,
        text_of.replacen("chain_id = \"", "chain_id = \"x", 1),
    )
    .unwrap();
    let (ok, _, e) = run(
        &net.apis[0],
        &[
            "light",
            "sync",
            "--light",
            light,
            "--genesis",
            other.to_str().unwrap(),
        ],
    );
    assert!(!ok && e.contains("is of another chain"), "{e}");

    // Verification by default: once `light sync --genesis` has made the chain's default folder
    // (under MEDCHAIN_LIGHT_ROOT here, ~/.medchain/light by default), a command given neither
    // --genesis nor --light verifies against it; a node naming another chain is refused, and
    // --trust-node believes the node.
    proxy.honest();
    let root = tmp.path().join("light-root");
    let root_env = root.to_str().unwrap().to_string();
    let run_default = |args: &[&str]| {
        let node = format!("http://{}", proxy.addr);
        let env = [
            ("MEDCHAIN_NODE", node.as_str()),
            ("MEDCHAIN_LIGHT_ROOT", root_env.as_str()),
        ];
        let out = medchain_with_env(args, &env);
        let (o, e) = text(&out);
        (out.status.success(), o, e)
    };
    let plain_show = ["identity", "show", "--key", key.to_str().unwrap()];
    let (ok, o, e) = run_default(&plain_show);
    assert!(
        ok && !e.contains("verified against"),
        "no folder yet:\n{o}\n{e}"
    );
    let (ok, o, e) = run_default(&["light", "sync", "--genesis", genesis_arg]);
    assert!(ok && o.contains("verified headers 1.."), "{o}\n{e}");
    assert!(root.join("hospital-dev").join("genesis.toml").is_file());
    let (ok, o, e) = run_default(&plain_show);
    assert!(ok && e.contains("verified against block"), "{o}\n{e}");
    let mallory = mallory_key.clone();
    proxy.lie(move |path, j| {
        if path.starts_with("/v1/identities/") {
            let real = j["encryption_key"].as_str().unwrap_or("").to_string();
            j["encryption_key"] = Value::String(mallory.clone());
            if let Some(v) = j.pointer_mut("/proof/entries/0/value") {
                *v = Value::String(v.as_str().unwrap().replace(&real, &mallory));
            }
        }
    });
    let (ok, o, e) = run_default(&plain_show);
    assert!(
        !ok && e.contains("does not verify against the state root"),
        "{o}\n{e}"
    );
    let (ok, o, e) = run_default(&[
        "identity",
        "show",
        "--key",
        key.to_str().unwrap(),
        "--trust-node",
    ]);
    assert!(
        ok && o.contains(&mallory_key),
        "--trust-node believes the node:\n{o}\n{e}"
    );
    proxy.lie(|path, j| {
        if path == "/v1/chain" {
            j["chain_id"] = Value::String("elsewhere".into());
        }
    });
    let (ok, o, e) = run_default(&plain_show);
    assert!(!ok, "{o}\n{e}");
    assert!(
        e.contains("serves chain \"elsewhere\", and this client verifies chains hospital-dev only"),
        "{e}"
    );
    // Nor may it claim older rules than the genesis file's, to skip the proofs rules 6 gives.
    proxy.lie(|path, j| {
        if path == "/v1/chain" {
            j["rules"] = Value::from(5);
        }
    });
    let (ok, o, e) = run_default(&plain_show);
    assert!(!ok && e.contains("but its genesis file"), "{o}\n{e}");
    proxy.honest();
    let (ok, o, e) = run_default(&["light", "status"]);
    assert!(
        ok && o.contains("light client of chain \"hospital-dev\""),
        "{o}\n{e}"
    );
}

/// The identity named by a participant card.
fn card_identity(card: &std::path::Path) -> String {
    let v: Value = serde_json::from_str(&std::fs::read_to_string(card).unwrap()).unwrap();
    v["identity"].as_str().unwrap().to_string()
}

/// The encryption key (hex) on a participant card.
fn encryption_key_of(card: &std::path::Path) -> String {
    let v: Value = serde_json::from_str(&std::fs::read_to_string(card).unwrap()).unwrap();
    v["encryption_key"].as_str().unwrap().to_string()
}

/// `GET path` as the holder of `key`, through the CLI-independent library client.
fn http_json(addr: &str, path: &str, key: &std::path::Path) -> (u16, Value) {
    let k = medchain_crypto::keystore::read_key_file(key, None).unwrap();
    let (code, body) = support::devnet::http_as(addr, &k, "GET", path, None).unwrap();
    (code, serde_json::from_str(&body).unwrap_or(Value::Null))
}
