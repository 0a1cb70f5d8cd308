//! End-to-end: the record workflow on a 4-node network, driven only through the `medchain` CLI
//! (which encrypts, decrypts and signs on the user's side) against real `medchain run` processes.
//!
//! One scenario, in order: register two doctors and a patient; doctor A writes three records; the
//! patient confirms them; doctor B's read is refused and audited; B requests, the patient approves
//! read on one record type; B reads exactly the granted records and no others; the patient
//! revokes and B is refused again; a grant stops working once its time passes; a deleted record's
//! ciphertext is gone; the audit trail shows every step in order; verify detects a corrupted
//! ciphertext and the proxy refuses to serve it; bad input gets clear errors; a node restart
//! loses nothing.

use std::path::{Path, PathBuf};

mod support;

use medchain_crypto::keys::KeyMaterial;
use serde_json::Value;
use support::devnet::{http, http_as, http_with, Devnet};
use support::{medchain_with_env, text};

/// A FHIR R4 example resource from HL7's fhir-test-cases (`tests/data/fhir/`, Apache-2.0).
fn fhir(name: &str) -> PathBuf {
    support::test_data("fhir").join(name)
}

/// Runs a client command against node `api`; returns (success, stdout, stderr).
fn cli(api: &str, args: &[&str]) -> (bool, String, String) {
    let node = format!("http://{api}");
    let out = medchain_with_env(args, &[("MEDCHAIN_NODE", &node)]);
    let (o, e) = text(&out);
    (out.status.success(), o, e)
}

/// Runs a client command that must succeed; returns its stdout's first line.
fn ok(api: &str, args: &[&str]) -> String {
    let (success, o, e) = cli(api, args);
    assert!(success, "medchain {args:?} failed:\n{o}\n{e}");
    o.lines().next().unwrap_or_default().trim().to_string()
}

/// Runs a client command that must fail; returns its stderr.
fn refused(api: &str, args: &[&str]) -> String {
    let (success, o, e) = cli(api, args);
    assert!(!success, "medchain {args:?} should have failed:\n{o}\n{e}");
    e
}

fn identity_of(dir: &Path, name: &str) -> String {
    let card: Value = serde_json::from_str(
        &std::fs::read_to_string(dir.join(format!("{name}.card.json"))).unwrap(),
    )
    .unwrap();
    card["identity"].as_str().unwrap().to_string()
}

/// Waits until every node has committed at least the highest height any node reports, so a step
/// on one node sees what an earlier step committed through another.
fn settle(net: &Devnet) {
    let top = (0..4).map(|i| net.height(i)).max().unwrap_or(0);
    assert!(
        net.wait(20, |n| (0..4).all(|i| n.height(i) >= top)),
        "the nodes did not reach height {top}"
    );
}

/// The ops of a record's audit trail as `who` sees it (one authenticated client per node and
/// caller, kept: the tests poll this).
fn audit_ops(api: &str, who: &KeyMaterial, slip: &str) -> Vec<String> {
    type Clients = std::collections::HashMap<(String, String), medchain_api::ApiClient>;
    thread_local! {
        static CLIENTS: std::cell::RefCell<Clients> = Default::default();
    }
    let me = who.signing_key().identity().to_string();
    let client = CLIENTS.with(|c| {
        c.borrow_mut()
            .entry((api.to_string(), me))
            .or_insert_with(|| support::devnet::client_as(api, who))
            .clone()
    });
    let (_, body) = http_with(&client, "GET", &format!("/v1/audit?record={slip}"), None).unwrap();
    let v: Value = serde_json::from_str(&body).unwrap();
    v["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["op"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn record_workflow_with_consent_proxy_reencryption_and_audit() {
    let tmp = tempfile::tempdir().unwrap();
    let base = support::base_port(18_200, 110, 50);
    let mut net = Devnet::init(&tmp.path().join("devnet"), 4, base);
    // node2 and node3 watch reads closely: a fourth read by one identity within a minute is
    // abnormal.
    for i in [2, 3] {
        net.set_config(
            i,
            "max_reads_per_identity = 120",
            "max_reads_per_identity = 3",
        );
    }
    net.start_all_connected();
    let (n0, n1) = (net.apis[0].clone(), net.apis[1].clone());
    let users = tmp.path().join("users");
    std::fs::create_dir_all(&users).unwrap();
    let key = |name: &str| {
        users
            .join(format!("{name}.key"))
            .to_str()
            .unwrap()
            .to_string()
    };
    let authority = net.dir.join("authority.key").to_str().unwrap().to_string();
    let auth = net.authority();

    // Register two doctors and a patient.
    support::register_participants(
        &n0,
        &users,
        &authority,
        &[
            ("doc_a", "doctor"),
            ("doc_b", "doctor"),
            ("patient", "patient"),
        ],
    );
    let patient = identity_of(&users, "patient");
    let doc_b = identity_of(&users, "doc_b");
    // Registering the patient's card again, signed with `signer`, plus `extra` arguments.
    let again = users.join("patient.card.json");
    let register_again = |signer: &str, extra: &[&str]| {
        let mut args = vec![
            "identity",
            "register",
            "--card",
            again.to_str().unwrap(),
            "--role",
            "patient",
            "--key",
        ];
        args.push(signer);
        args.extend_from_slice(extra);
        refused(&n0, &args)
    };
    // One identity per participant.
    let e = register_again(&authority, &[]);
    assert!(e.contains("already registered"), "{e}");
    // A patient's name stays off chain (rules 3): the CLI says so before anything is signed.
    let e = register_again(&authority, &["--name", "Alice"]);
    assert!(
        e.contains("carries no name") && e.contains("omit --name"),
        "{e}"
    );
    // Only an authority registers.
    let e = register_again(&key("doc_a"), &[]);
    assert!(e.contains("not an authority"), "{e}");

    // Doctor A writes three records (type derived from the FHIR resourceType).
    let write = |file: &str, kw: &str| {
        ok(
            &n0,
            &[
                "record",
                "add",
                "--patient",
                &patient,
                "--file",
                fhir(file).to_str().unwrap(),
                "--keyword",
                kw,
                "--key",
                &key("doc_a"),
            ],
        )
    };
    let s1 = write("observation-example.json", "body weight");
    let s2 = write("patient-example.json", "demographics");
    let s3 = write("observation-decimal.json", "glucose");
    settle(&net);

    // The patient confirms them.
    let pending = ok(&n1, &["record", "pending", "--key", &key("patient")]);
    assert!(pending.contains(&s1), "{pending}");
    for s in [&s1, &s2, &s3] {
        ok(&n1, &["record", "confirm", s, "--key", &key("patient")]);
    }
    let pending = ok(&n1, &["record", "pending", "--key", &key("patient")]);
    assert!(pending.contains("no records await"), "{pending}");

    // Doctor B's read is refused (and audited).
    let out = tmp.path().join("out.json");
    let out_s = out.to_str().unwrap().to_string();
    let e = refused(
        &n0,
        &[
            "record",
            "get",
            &s1,
            "--out",
            &out_s,
            "--key",
            &key("doc_b"),
        ],
    );
    assert!(e.contains("holds no valid grant"), "{e}");

    // A key the chain does not know is refused without a trace on chain: no access record is
    // written in its name (any key pair could otherwise make the node sign transactions).
    // B's refusal is on chain first (its access record was queued before B got the answer).
    assert!(net.wait(10, |d| audit_ops(&d.apis[0], &auth, &s1)
        .contains(&"read-refused".to_string())));
    settle(&net);
    let trail_before = audit_ops(&n0, &auth, &s1);
    ok(
        &n0,
        &["keygen", "--out", &key("stranger"), "--insecure-plaintext"],
    );
    let e = refused(
        &n0,
        &[
            "record",
            "get",
            &s1,
            "--out",
            &out_s,
            "--key",
            &key("stranger"),
        ],
    );
    assert!(e.contains("is not registered on this chain"), "{e}");
    // Time for anything the refusal queued to commit (a block every 200 ms on the devnet).
    let _ = net.wait(2, |_| false);
    settle(&net);
    assert_eq!(
        audit_ops(&n0, &auth, &s1),
        trail_before,
        "the stranger's read left a trace"
    );

    // A slip sent alone, without its ciphertext, is refused: the chain would hold a record no
    // one can read.
    let doctor_key =
        medchain_crypto::keystore::read_key_file(Path::new(&key("doc_a")), None).unwrap();
    let patient_keys = {
        let k = medchain_crypto::keystore::read_key_file(Path::new(&key("patient")), None).unwrap();
        medchain_node::client::records::PatientKeys {
            identity: k.signing_key().identity(),
            encryption: k.encryption_key().public_key(),
            search: k.search_key().public_key(),
        }
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let orphan = medchain_node::client::records::build_record_write(
        "hospital-dev",
        &doctor_key,
        &patient_keys,
        &medchain_node::client::records::RecordInput {
            plaintext: br#"{"resourceType":"Observation","status":"final"}"#.to_vec(),
            record_type: "Observation".into(),
            keywords: vec![],
            replaces: None,
        },
        now * 1_000,
        now,
    )
    .unwrap();
    let (code, body) = http(
        &n0,
        "POST",
        "/v1/transactions",
        Some(&support::devnet::submit_body(&orphan.transaction)),
    )
    .unwrap();
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("comes with its ciphertext"), "{body}");

    // A read request is signed for one validator: captured, it is no good at another one,
    // and at its own it is served once.
    let patient_key =
        medchain_crypto::keystore::read_key_file(Path::new(&key("patient")), None).unwrap();
    let node0 = support::devnet::call(support::devnet::client(&n0).status())
        .unwrap()
        .identity
        .parse::<medchain_crypto::Identity>()
        .unwrap();
    let mut nonce = [0u8; 16];
    nonce[..8].copy_from_slice(&std::process::id().to_be_bytes().repeat(2));
    let request = medchain_proto::records::sign_read_request(
        &patient_key.signing_key(),
        medchain_proto::v1::ReadRequest {
            chain_id: "hospital-dev".into(),
            reader: vec![],
            slip_id: medchain_crypto::Hash32::from_hex(&s1)
                .unwrap()
                .as_bytes()
                .to_vec(),
            timestamp_ms: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_millis() as u64,
            nonce: nonce.to_vec(),
            node: node0.as_bytes().to_vec(),
        },
    );
    let bytes = medchain_proto::canonical::Canonical::canonical_bytes(&request);
    let read_at =
        |addr: &str| support::devnet::call(support::devnet::client(addr).read(&s1, bytes.clone()));
    let elsewhere = read_at(&n1).unwrap_err();
    assert_eq!(elsewhere.status(), Some(400), "{elsewhere}");
    assert!(
        elsewhere.to_string().contains("signed for validator"),
        "{elsewhere}"
    );
    read_at(&n0).expect("served at the validator it is signed for");
    assert_eq!(
        read_at(&n0).unwrap_err().status(),
        Some(409),
        "a replay was served"
    );

    // B requests read on Observations; the patient approves.
    let request = ok(
        &n0,
        &[
            "consent",
            "request",
            "--patient",
            &patient,
            "--scope",
            "type:Observation",
            "--actions",
            "read",
            "--until",
            "+10m",
            "--purpose",
            "second opinion",
            "--key",
            &key("doc_b"),
        ],
    );
    settle(&net);
    let grant = ok(
        &n1,
        &["consent", "approve", &request, "--key", &key("patient")],
    );
    settle(&net);
    // A broader request is denied, and the denial is recorded.
    let broad = ok(
        &n0,
        &[
            "consent",
            "request",
            "--patient",
            &patient,
            "--scope",
            "all",
            "--until",
            "+1d",
            "--key",
            &key("doc_b"),
        ],
    );
    settle(&net);
    ok(
        &n1,
        &[
            "consent",
            "deny",
            &broad,
            "--reason",
            "too broad",
            "--key",
            &key("patient"),
        ],
    );
    settle(&net);
    let e = refused(
        &n1,
        &["consent", "approve", &broad, "--key", &key("patient")],
    );
    assert!(e.contains("denied"), "{e}");
    // B reads and decrypts exactly the granted records, through two different proxies.
    for (slip, file, api) in [
        (&s1, "observation-example.json", &n0),
        (&s3, "observation-decimal.json", &n1),
    ] {
        ok(
            api,
            &[
                "record",
                "get",
                slip,
                "--out",
                &out_s,
                "--key",
                &key("doc_b"),
            ],
        );
        assert_eq!(
            std::fs::read(&out).unwrap(),
            std::fs::read(fhir(file)).unwrap()
        );
    }
    let e = refused(
        &n0,
        &[
            "record",
            "get",
            &s2,
            "--out",
            &out_s,
            "--key",
            &key("doc_b"),
        ],
    );
    assert!(e.contains("holds no valid grant"), "{e}");
    // Doctor A was never granted anything either.
    refused(
        &n0,
        &[
            "record",
            "get",
            &s1,
            "--out",
            &out_s,
            "--key",
            &key("doc_a"),
        ],
    );

    // The patient revokes: B is refused again.
    ok(
        &n1,
        &["consent", "revoke", &grant, "--key", &key("patient")],
    );
    settle(&net);
    let e = refused(
        &n0,
        &[
            "record",
            "get",
            &s1,
            "--out",
            &out_s,
            "--key",
            &key("doc_b"),
        ],
    );
    assert!(e.contains("holds no valid grant"), "{e}");

    // A grant stops working once its time passes.
    ok(
        &n0,
        &[
            "consent",
            "grant",
            "--to",
            &doc_b,
            "--scope",
            &format!("record:{s2}"),
            "--actions",
            "read",
            "--until",
            "+4s",
            "--key",
            &key("patient"),
        ],
    );
    ok(
        &n0,
        &[
            "record",
            "get",
            &s2,
            "--out",
            &out_s,
            "--key",
            &key("doc_b"),
        ],
    );
    assert_eq!(
        std::fs::read(&out).unwrap(),
        std::fs::read(fhir("patient-example.json")).unwrap()
    );
    assert!(
        net.wait(20, |_| cli(
            &n0,
            &[
                "record",
                "get",
                &s2,
                "--out",
                &out_s,
                "--key",
                &key("doc_b")
            ]
        )
        .2
        .contains("holds no valid grant")),
        "the expired grant still worked"
    );
    let listing = cli(
        &n0,
        &[
            "consent",
            "list",
            "--grantee",
            &doc_b,
            "--key",
            &key("doc_b"),
        ],
    )
    .1;
    assert!(
        listing.contains("revoked") && listing.contains("expired"),
        "{listing}"
    );

    // The audit trail of s1 shows every step, the upload first. Reads are recorded in batches
    // (rules 4) by the node that served them, so a read reaches the chain in the next batch of
    // its node, possibly after a transaction sent later (the confirmation that followed the
    // patient's read, a read served by another node).
    assert!(net.wait(10, |_| audit_ops(&n0, &auth, &s1).len() >= 8));
    let mut trail = audit_ops(&n0, &auth, &s1);
    assert_eq!(trail[0], "upload", "{trail:?}");
    trail.sort();
    assert_eq!(
        trail,
        vec![
            "confirm",
            "read", // the patient's, when she confirmed
            "read", // the patient's own request, signed for node0
            "read",
            "read-refused",
            "read-refused",
            "read-refused",
            "upload",
        ]
    );
    let patient_trail = cli(
        &n0,
        &["audit", "--patient", &patient, "--key", &key("patient")],
    )
    .1;
    for op in [
        "register", "upload", "confirm", "request", "approve", "revoke", "grant", "read",
    ] {
        assert!(patient_trail.contains(op), "{op} missing:\n{patient_trail}");
    }

    // Tamper check: corrupt s3's ciphertext on node0's disk.
    let (_, body) = http_as(&n0, &auth, "GET", &format!("/v1/records/{s3}"), None).unwrap();
    let v: Value = serde_json::from_str(&body).unwrap();
    let address = v["slip"]["ciphertext_hash"].as_str().unwrap().to_string();
    let blob = net
        .home(0)
        .join("data/records")
        .join(&address[..2])
        .join(&address);
    let mut bytes = std::fs::read(&blob).expect("node0 stores the ciphertext as a file");
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x40;
    std::fs::write(&blob, bytes).unwrap();
    let e = refused(&n0, &["record", "verify", &s3, "--key", &authority]);
    assert!(e.contains("corrupted"), "{e}");
    let e = refused(
        &n0,
        &[
            "record",
            "get",
            &s3,
            "--out",
            &out_s,
            "--key",
            &key("patient"),
        ],
    );
    assert!(
        e.contains("corrupted") && e.contains("refuses to serve"),
        "{e}"
    );
    // Another node's copy is intact and serves the patient.
    ok(&n1, &["record", "verify", &s3, "--key", &key("patient")]);

    // Deletion: the ciphertext is erased everywhere, the slip and its history stay.
    ok(
        &n1,
        &[
            "record",
            "delete",
            &s2,
            "--reason",
            "entered in error",
            "--key",
            &key("patient"),
        ],
    );
    settle(&net);
    let e = refused(
        &n0,
        &[
            "record",
            "get",
            &s2,
            "--out",
            &out_s,
            "--key",
            &key("patient"),
        ],
    );
    assert!(e.contains("deleted"), "{e}");
    let (_, body) = http_as(&n1, &auth, "GET", &format!("/v1/records/{s2}/verify"), None).unwrap();
    assert!(body.contains("\"deleted\""), "{body}");
    assert_eq!(
        audit_ops(&n1, &auth, &s2).last().map(String::as_str),
        Some("delete")
    );

    // Bad input: an oversize record, an unknown patient, a replayed slip.
    let big = tmp.path().join("big.bin");
    std::fs::write(&big, vec![b'x'; 16 * 1024 * 1024 + 1]).unwrap();
    let e = refused(
        &n0,
        &[
            "record",
            "add",
            "--patient",
            &patient,
            "--type",
            "Binary",
            "--file",
            big.to_str().unwrap(),
            "--key",
            &key("doc_a"),
        ],
    );
    assert!(e.contains("limited to") && e.contains("16 MiB"), "{e}");
    // Exactly 16 MiB is a valid record (any bytes are).
    std::fs::write(&big, vec![b'x'; 16 * 1024 * 1024]).unwrap();
    let s4 = ok(
        &n0,
        &[
            "record",
            "add",
            "--patient",
            &patient,
            "--type",
            "Binary",
            "--file",
            big.to_str().unwrap(),
            "--key",
            &key("doc_a"),
        ],
    );
    assert!(
        net.wait(20, |_| cli(
            &n1,
            &["record", "verify", &s4, "--key", &authority]
        )
        .0),
        "not replicated"
    );
    ok(
        &n1,
        &[
            "record",
            "get",
            &s4,
            "--out",
            &out_s,
            "--key",
            &key("patient"),
        ],
    );
    assert_eq!(std::fs::metadata(&out).unwrap().len(), 16 * 1024 * 1024);
    let e = refused(
        &n0,
        &[
            "record",
            "add",
            "--patient",
            &doc_b,
            "--file",
            fhir("observation-example.json").to_str().unwrap(),
            "--key",
            &key("doc_a"),
        ],
    );
    assert!(e.contains("not a patient"), "{e}");

    // Abnormal access: the fourth read within the window on node2 is refused and reported; one
    // validator's report does not suspend (it could be Byzantine), a second one's does, and
    // every node then refuses the reader until an authority reinstates it.
    let get = [
        "record",
        "get",
        &s1,
        "--out",
        &out_s,
        "--key",
        &key("patient"),
    ];
    let n2 = net.apis[2].clone();
    let n3 = net.apis[3].clone();
    for _ in 0..3 {
        ok(&n2, &get);
    }
    let e = refused(&n2, &get);
    assert!(e.contains("abnormal access"), "{e}");
    let trail = format!("/v1/audit?actor={patient}");
    assert!(
        net.wait(20, |_| http_as(&n0, &auth, "GET", &trail, None)
            .is_some_and(
                |(_, b)| b.contains("1 of the 2 reports that suspend")
            )),
        "node2's report did not commit"
    );
    ok(&n0, &get);
    for _ in 0..3 {
        ok(&n3, &get);
    }
    assert!(refused(&n3, &get).contains("abnormal access"));
    assert!(
        net.wait(20, |_| cli(&n0, &get).2.contains("suspended")),
        "the suspension did not reach node0"
    );
    let e = refused(
        &n0,
        &["identity", "reinstate", &patient, "--key", &key("doc_a")],
    );
    assert!(e.contains("only an authority"), "{e}");
    ok(
        &n0,
        &["identity", "reinstate", &patient, "--key", &authority],
    );
    settle(&net);
    ok(&n0, &get);

    // A node restart loses nothing.
    assert!(net.wait(20, |n| (0..4)
        .all(|i| n.status(i).is_some_and(|s| s.mempool == 0))));
    let height = net.height(0);
    let trail = audit_ops(&n0, &auth, &s1);
    net.kill(0);
    net.start(0);
    assert!(
        net.wait(30, |n| n.height(0) >= height),
        "node0 did not come back"
    );
    assert_eq!(audit_ops(&n0, &auth, &s1)[..trail.len()], trail[..]);
    ok(&n0, &get);
    assert_eq!(
        std::fs::read(&out).unwrap(),
        std::fs::read(fhir("observation-example.json")).unwrap()
    );
    ok(&n0, &["record", "verify", &s1, "--key", &authority]);

    // The operator's view of the restarted node.
    assert!(
        net.wait(20, |_| cli(&n0, &["status"]).1.contains("ready       yes")),
        "node0 not ready after its restart: {}",
        cli(&n0, &["status"]).1
    );
    let (code, body) = http(&n0, "GET", "/ready", None).unwrap();
    assert_eq!(code, 200, "{body}");

    // Its metrics count what happened (node1 served reads and refusals before the restart).
    let (code, text) = http(&n1, "GET", "/metrics", None).unwrap();
    assert_eq!(code, 200);
    for needle in [
        "medchain_height ",
        "medchain_commits_total ",
        "medchain_record_api_calls_total{call=\"read\",result=\"granted\"}",
        "medchain_transactions_accepted_total ",
        "medchain_peers_connected 3",
        "medchain_round_seconds_bucket",
    ] {
        assert!(
            text.contains(needle),
            "{needle} missing from /metrics:\n{text}"
        );
    }
}
