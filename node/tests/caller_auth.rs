//! End-to-end: who may see what through the API, played by an outsider with curl-level requests
//! and by registered participants with their own tokens, against real `medchain run` processes.
//!
//! An anonymous caller gets 401 from every patient-linked endpoint and block headers without
//! bodies; a forged token, a token from another node and a token from before a restart are
//! refused; a challenge opens one token; an unregistered key gets none; a patient sees her own
//! data and another patient sees nothing of it (answered as if it did not exist); a doctor sees
//! the records she wrote and not another doctor's; an authority sees everything; an unauthenticated
//! 16 MiB upload is refused and stores nothing; the CLI goes on working across the restart; a
//! read request replayed after a restart, before its access record committed, is refused.

use std::path::Path;

mod support;

use medchain_api::{Challenge, TokenRequest};
use medchain_crypto::keys::KeyMaterial;
use medchain_crypto::keystore;
use serde_json::Value;
use support::devnet::{call, client, client_as, http_as, raw_http, token, Devnet};
use support::{medchain_with_env, text};

fn fhir(name: &str) -> String {
    support::test_data("fhir")
        .join(name)
        .to_str()
        .unwrap()
        .to_string()
}

/// Runs a client command that must succeed against node `api`; returns its stdout.
fn ok(api: &str, args: &[&str]) -> String {
    let node = format!("http://{api}");
    let out = medchain_with_env(args, &[("MEDCHAIN_NODE", &node)]);
    let (o, e) = text(&out);
    assert!(out.status.success(), "medchain {args:?} failed:\n{o}\n{e}");
    o
}

fn json(body: &str) -> Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"))
}

/// Files under a node's record store (ciphertexts).
fn stored_records(home: &Path) -> usize {
    let dir = home.join("data/records");
    let Ok(shards) = std::fs::read_dir(&dir) else {
        return 0;
    };
    shards
        .flatten()
        .filter_map(|s| std::fs::read_dir(s.path()).ok())
        .map(|files| files.count())
        .sum()
}

#[test]
fn patient_data_answers_only_authenticated_authorized_callers() {
    let tmp = tempfile::tempdir().unwrap();
    let base = support::base_port(9_000, 110, 25);
    let mut net = Devnet::init(&tmp.path().join("devnet"), 4, base);
    net.start_all_connected();
    let (n0, n1) = (net.apis[0].clone(), net.apis[1].clone());
    let users = tmp.path().join("users");
    std::fs::create_dir_all(&users).unwrap();
    let path = |name: &str| {
        users
            .join(format!("{name}.key"))
            .to_str()
            .unwrap()
            .to_string()
    };
    let authority_file = net.dir.join("authority.key").to_str().unwrap().to_string();
    let authority = net.authority();
    let names = [
        ("doc_a", "doctor"),
        ("doc_b", "doctor"),
        ("alice", "patient"),
        ("carol", "patient"),
    ];
    support::register_participants(&n0, &users, &authority_file, &names);
    let keys: std::collections::HashMap<&str, KeyMaterial> = names
        .iter()
        .map(|(name, _)| {
            let key = keystore::read_key_file(Path::new(&path(name)), None).unwrap();
            (*name, key)
        })
        .collect();
    let id = |name: &str| keys[name].signing_key().identity().to_string();
    let alice = id("alice");
    let slip = ok(
        &n0,
        &[
            "record",
            "add",
            "--patient",
            &alice,
            "--file",
            &fhir("observation-example.json"),
            "--keyword",
            "body weight",
            "--key",
            &path("doc_a"),
        ],
    )
    .trim()
    .to_string();
    let record_tx = json(
        &http_as(
            &n0,
            &authority,
            "GET",
            &format!("/v1/audit?record={slip}"),
            None,
        )
        .unwrap()
        .1,
    )["events"][0]["transaction"]
        .as_str()
        .unwrap()
        .to_string();

    // 1. An outsider, curl-level: every patient-linked endpoint says 401 and how to authenticate.
    let linked = [
        format!("/v1/identities/{alice}"),
        format!("/v1/patients/{alice}/records"),
        format!("/v1/audit?patient={alice}"),
        format!("/v1/audit?actor={}", authority.signing_key().identity()),
        format!("/v1/consent?patient={alice}"),
        format!("/v1/records/{slip}"),
        format!("/v1/records/{slip}/verify"),
        format!("/v1/slips/{slip}"),
        format!("/v1/transactions/{record_tx}"),
    ];
    for p in &linked {
        let (code, body) = raw_http(&n0, "GET", p, &[]);
        assert_eq!(code, 401, "{p}: {body}");
        assert!(body.contains("Authorization: Bearer"), "{p}: {body}");
        let (code, body) = raw_http(&n0, "GET", p, &["Authorization: Bearer 00ff"]);
        assert_eq!(code, 401, "a forged token opened {p}: {body}");
    }
    // Public: status, headers with certificates, no block bodies.
    assert_eq!(raw_http(&n0, "GET", "/v1/status", &[]).0, 200);
    let (code, body) = raw_http(&n0, "GET", "/v1/blocks/latest", &[]);
    assert_eq!(code, 200, "{body}");
    let block = json(&body);
    assert!(block["header"].as_str().is_some_and(|h| !h.is_empty()));
    assert!(block["certificate"].as_str().is_some_and(|h| !h.is_empty()));
    assert!(block.get("block").is_none(), "an outsider got a block body");
    let as_authority = http_as(&n0, &authority, "GET", "/v1/blocks/latest", None).unwrap();
    assert!(json(&as_authority.1)["block"].as_str().is_some());

    // 2. A token is bound to its node, a challenge opens one token, and strangers get none.
    let alice_at_n0 = token(&n0, &keys["alice"]);
    let bearer = format!("Authorization: Bearer {alice_at_n0}");
    let mine = format!("/v1/patients/{alice}/records");
    assert_eq!(raw_http(&n0, "GET", &mine, &[&bearer]).0, 200);
    let (code, body) = raw_http(&n1, "GET", &mine, &[&bearer]);
    assert_eq!(code, 401, "node0's token opened node1: {body}");
    assert!(body.contains("did not issue"), "{body}");
    let api = client(&n0);
    let challenge: Challenge =
        call(api.post_json("/v1/auth/challenge", &serde_json::Map::new())).unwrap();
    let node: medchain_crypto::Identity = challenge.node.parse().unwrap();
    let signature = medchain_proto::auth::sign_response(
        &keys["carol"].signing_key(),
        &challenge.chain_id,
        &node,
        &hex::decode(&challenge.challenge).unwrap(),
    );
    let answer = TokenRequest {
        identity: id("carol"),
        challenge: challenge.challenge.clone(),
        signature: hex::encode(signature.as_bytes()),
    };
    call(api.post_json::<_, medchain_api::Token>("/v1/auth/token", &answer)).unwrap();
    let again = call(api.post_json::<_, medchain_api::Token>("/v1/auth/token", &answer));
    let e = again
        .expect_err("a challenge opened two tokens")
        .to_string();
    assert!(e.contains("401") && e.contains("answered already"), "{e}");
    // Replayed past the token quota, the captured answer uses up none of Carol's tokens.
    for _ in 0..130 {
        let e = call(api.post_json::<_, medchain_api::Token>("/v1/auth/token", &answer))
            .expect_err("a replayed answer opened a token")
            .to_string();
        assert!(e.contains("401") && e.contains("answered already"), "{e}");
    }
    token(&n0, &keys["carol"]);
    // Carol's signature does not make a token for Alice.
    let fresh: Challenge =
        call(api.post_json("/v1/auth/challenge", &serde_json::Map::new())).unwrap();
    let forged = TokenRequest {
        identity: alice.clone(),
        challenge: fresh.challenge,
        signature: answer.signature.clone(),
    };
    let e = call(api.post_json::<_, medchain_api::Token>("/v1/auth/token", &forged))
        .expect_err("a token for someone else's identity")
        .to_string();
    assert!(e.contains("401"), "{e}");
    // A junk signature for an identity says nothing about whether it is registered.
    for who in [
        alice.clone(),
        KeyMaterial::generate().signing_key().identity().to_string(),
    ] {
        let fresh: Challenge =
            call(api.post_json("/v1/auth/challenge", &serde_json::Map::new())).unwrap();
        let junk = TokenRequest {
            identity: who,
            challenge: fresh.challenge,
            signature: "00".repeat(64),
        };
        let e = call(api.post_json::<_, medchain_api::Token>("/v1/auth/token", &junk))
            .expect_err("a junk signature got a token")
            .to_string();
        assert!(e.contains("401") && !e.contains("registered"), "{e}");
    }
    let stranger = KeyMaterial::generate();
    let e = call(client_as(&n0, &stranger).authenticate())
        .expect_err("an unregistered key got a token")
        .to_string();
    assert!(e.contains("403") && e.contains("not registered"), "{e}");

    // 3. Another patient sees nothing of Alice: not that she is registered, not her records.
    let carol = &keys["carol"];
    let (code, body) =
        http_as(&n0, carol, "GET", &format!("/v1/identities/{alice}"), None).unwrap();
    assert_eq!(code, 404, "{body}");
    for p in [
        format!("/v1/records/{slip}"),
        format!("/v1/slips/{slip}"),
        format!("/v1/transactions/{record_tx}"),
    ] {
        let (code, body) = http_as(&n0, carol, "GET", &p, None).unwrap();
        assert_eq!(code, 404, "{p}: {body}");
    }
    let listing = json(&http_as(&n0, carol, "GET", &mine, None).unwrap().1);
    assert_eq!(listing["records"].as_array().unwrap().len(), 0, "{listing}");
    let trail = json(
        &http_as(
            &n0,
            carol,
            "GET",
            &format!("/v1/audit?patient={alice}"),
            None,
        )
        .unwrap()
        .1,
    );
    assert_eq!(trail["events"].as_array().unwrap().len(), 0, "{trail}");
    let trail = json(
        &http_as(&n0, carol, "GET", &format!("/v1/audit?record={slip}"), None)
            .unwrap()
            .1,
    );
    assert_eq!(trail["events"].as_array().unwrap().len(), 0, "{trail}");

    // 4. A doctor who did not write it and holds no grant: Alice's keys (to write for her), not
    //    her record. The doctor who wrote it sees it.
    let doc_b = &keys["doc_b"];
    let (code, _) = http_as(&n0, doc_b, "GET", &format!("/v1/identities/{alice}"), None).unwrap();
    assert_eq!(code, 200);
    let (code, _) = http_as(&n0, doc_b, "GET", &format!("/v1/records/{slip}"), None).unwrap();
    assert_eq!(code, 404);
    let listing = json(&http_as(&n0, doc_b, "GET", &mine, None).unwrap().1);
    assert_eq!(listing["records"].as_array().unwrap().len(), 0);
    // Dr B asks to read it and is refused: her own audit line does not name the patient, and
    // it does not appear under the patient either.
    let node = format!("http://{n0}");
    let out = medchain_with_env(
        &[
            "record",
            "get",
            &slip,
            "--out",
            tmp.path().join("b.json").to_str().unwrap(),
            "--key",
            &path("doc_b"),
        ],
        &[("MEDCHAIN_NODE", &node)],
    );
    assert!(!out.status.success());
    let b_id = id("doc_b");
    let as_b = |query: &str| -> Vec<Value> {
        let body = http_as(&n0, doc_b, "GET", &format!("/v1/audit?{query}"), None)
            .unwrap()
            .1;
        json(&body)["events"].as_array().unwrap().clone()
    };
    assert!(net.wait(10, |_| as_b(&format!("actor={b_id}"))
        .iter()
        .any(|e| e["op"] == "read-refused")));
    for e in as_b(&format!("actor={b_id}")) {
        assert!(
            e["patient"].is_null(),
            "Dr B learned whose record it is: {e}"
        );
    }
    assert!(as_b(&format!("patient={alice}")).is_empty());
    let doc_a = &keys["doc_a"];
    let listing = json(&http_as(&n0, doc_a, "GET", &mine, None).unwrap().1);
    assert_eq!(listing["records"].as_array().unwrap().len(), 1);
    let (code, _) = http_as(
        &n0,
        doc_a,
        "GET",
        &format!("/v1/transactions/{record_tx}"),
        None,
    )
    .unwrap();
    assert_eq!(code, 200, "the signer sees her own transaction");

    // 5. Alice sees her own record, identity and trail.
    let listing = json(&http_as(&n0, &keys["alice"], "GET", &mine, None).unwrap().1);
    assert_eq!(listing["records"].as_array().unwrap().len(), 1);
    let trail = json(
        &http_as(
            &n0,
            &keys["alice"],
            "GET",
            &format!("/v1/audit?patient={alice}"),
            None,
        )
        .unwrap()
        .1,
    );
    let ops: Vec<&str> = trail["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["op"].as_str().unwrap())
        .collect();
    assert!(
        ops.contains(&"register") && ops.contains(&"upload"),
        "{ops:?}"
    );

    // 6. An unauthenticated 16 MiB upload is refused before it is read, and stores nothing; a
    //    patient may not upload at all.
    let before: Vec<usize> = (0..4).map(|i| stored_records(&net.home(i))).collect();
    // Headers announcing 16 MiB, and no body: the node answers 401 without waiting for it.
    let (code, body) = raw_http(
        &n0,
        "POST",
        "/v1/records",
        &[
            "Content-Type: application/x-protobuf",
            "Content-Length: 16777216",
        ],
    );
    assert_eq!(code, 401, "{body}");
    // Sent whole, it is cut off (401, or the connection closed under the sender).
    assert!(call(client(&n0).upload(vec![0u8; 16 * 1024 * 1024])).is_err());
    let e = call(client_as(&n0, &keys["alice"]).upload(vec![0u8; 1024]))
        .expect_err("a patient's upload")
        .to_string();
    assert!(
        e.contains("403") && e.contains("only a registered doctor"),
        "{e}"
    );
    // A patient's 16 MiB upload is refused from its headers too.
    let alice_bearer = format!("Authorization: Bearer {}", token(&n0, &keys["alice"]));
    let (code, body) = raw_http(
        &n0,
        "POST",
        "/v1/records",
        &[
            &alice_bearer,
            "Content-Type: application/x-protobuf",
            "Content-Length: 16777216",
        ],
    );
    assert_eq!(code, 403, "{body}");
    // One key cannot hoard tokens (and so lock others out of authenticating).
    let hoarded = (0..130)
        .map(|_| call(client_as(&n0, &keys["carol"]).authenticate()))
        .filter_map(Result::err)
        .map(|e| e.to_string())
        .collect::<Vec<_>>();
    assert!(
        hoarded.iter().any(|e| e.contains("429")),
        "130 tokens in a row: {hoarded:?}"
    );
    token(&n0, &keys["doc_a"]);
    let after: Vec<usize> = (0..4).map(|i| stored_records(&net.home(i))).collect();
    assert_eq!(before, after, "a refused upload left a ciphertext behind");

    // 7. A restart voids the tokens issued before it; the CLI authenticates again by itself.
    net.kill(0);
    net.start(0);
    assert!(net.wait(30, |d| d.status(0).is_some_and(|s| s.peers_connected == 3)));
    let (code, body) = raw_http(&n0, "GET", &mine, &[&bearer]);
    assert_eq!(code, 401, "a token outlived its node's restart: {body}");
    let pending = ok(&n0, &["record", "pending", "--key", &path("alice")]);
    assert!(pending.contains(&slip), "{pending}");

    // 8a. Reads are recorded in batches (rules 4), not one transaction each: 20 reads in a row
    //     reach the audit trail in a few transactions.
    let me: medchain_crypto::Identity = net.status(0).unwrap().identity.parse().unwrap();
    let read_events = || {
        let (_, body) = http_as(
            &n0,
            &authority,
            "GET",
            &format!("/v1/audit?record={slip}"),
            None,
        )
        .unwrap();
        json(&body)["events"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["op"] == "read")
            .map(|e| e["transaction"].as_str().unwrap().to_string())
            .collect::<Vec<_>>()
    };
    // Alice's own request for her record, signed for node0 now, with nonce `n` (canonical bytes).
    let alice_asks = |n: u8| {
        let request = medchain_proto::records::sign_read_request(
            &keys["alice"].signing_key(),
            medchain_proto::v1::ReadRequest {
                chain_id: "hospital-dev".into(),
                reader: vec![],
                slip_id: hex::decode(&slip).unwrap(),
                timestamp_ms: std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_millis() as u64,
                nonce: vec![n; 16],
                node: me.as_bytes().to_vec(),
            },
        );
        medchain_proto::canonical::Canonical::canonical_bytes(&request)
    };
    let before = read_events().len();
    for n in 0..20u8 {
        let bytes = alice_asks(100 + n);
        call(client(&n0).read(&slip, bytes)).expect("a read of her own record");
    }
    assert!(
        net.wait(30, |_| read_events().len() >= before + 20),
        "20 reads, {} recorded",
        read_events().len() - before
    );
    let events = read_events();
    let batches: std::collections::BTreeSet<&String> = events[before..].iter().collect();
    assert!(
        batches.len() <= 10,
        "20 reads took {} transactions",
        batches.len()
    );

    // 8. A read request replayed after the node restarted, before its access record could
    //    commit (two of four nodes down: no quorum), is refused: the node remembered it on disk.
    net.kill(2);
    net.kill(3);
    let bytes = alice_asks(42);
    call(client(&n0).read(&slip, bytes.clone())).expect("the first read is served");
    net.kill(0);
    net.start(0);
    assert!(net.wait(30, |d| d.status(0).is_some()));
    let Err(e) = call(client(&n0).read(&slip, bytes)) else {
        panic!("a replayed read request was served after a restart");
    };
    let e = e.to_string();
    assert!(e.contains("409") && e.contains("already used"), "{e}");

    // 9. Its access record was on disk before the read was answered: the restarted node batches
    //    it again (rules 4), and once a quorum is back it reaches the chain.
    let pending = || {
        let (_, text) = raw_http(&n0, "GET", "/metrics", &[]);
        text.lines()
            .find_map(|l| l.strip_prefix("medchain_access_records_pending "))
            .and_then(|v| v.trim().parse::<u64>().ok())
    };
    assert!(
        net.wait(10, |_| pending().is_some_and(|n| n >= 1)),
        "the answered read's access record did not survive the restart: {:?}",
        pending()
    );
    net.start(2);
    net.start(3);
    assert!(
        net.wait(60, |_| pending() == Some(0)),
        "the kept access record never reached the chain: {:?} pending",
        pending()
    );
}
