//! End-to-end: the off-chain record store holds only what the chain accounts for, through the
//! real binary on a 4-node network. An upload whose slip the mempool refuses (a second slip
//! with the nonce of a pending one) leaves no ciphertext file on any node; a slip naming another
//! record's ciphertext is refused (erasing one would erase the other) and the first record stays
//! whole; the admitted record's ciphertext is on every node and is the only file there.

mod support;

use std::path::{Path, PathBuf};

use medchain_crypto::keys::KeyMaterial;
use medchain_crypto::keystore::read_key_file;
use medchain_node::client::records::{build_record_write, PatientKeys, RecordInput, RecordWrite};
use medchain_proto::ledger::{make_private_slip, sign_transaction};
use medchain_proto::v1::{self, transaction_body::Payload};
use medchain_proto::Canonical;
use support::devnet::{call, client_as, Devnet};

fn upload_bytes(w: &RecordWrite) -> Vec<u8> {
    v1::RecordUpload {
        transaction: Some(w.transaction.clone()),
        ciphertext: w.ciphertext.clone(),
    }
    .canonical_bytes()
}

fn ciphertext_hash(w: &RecordWrite) -> String {
    match w
        .transaction
        .body
        .as_ref()
        .unwrap()
        .payload
        .as_ref()
        .unwrap()
    {
        Payload::PrivateSlip(s) => hex::encode(&s.content.as_ref().unwrap().ciphertext_hash),
        _ => unreachable!("a record write carries a slip"),
    }
}

/// Every file (temporaries included) under a node's `records/`.
fn record_files(home: &Path) -> Vec<PathBuf> {
    let root = home.join("data").join("records");
    let Ok(shards) = std::fs::read_dir(root) else {
        return Vec::new();
    };
    shards
        .flat_map(|s| std::fs::read_dir(s.unwrap().path()).unwrap())
        .map(|f| f.unwrap().path())
        .collect()
}

#[allow(clippy::disallowed_methods)] // a client signs with its own clock
fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

#[test]
fn only_ciphertexts_the_chain_accounts_for_are_stored() {
    let tmp = tempfile::tempdir().unwrap();
    let base = support::base_port(5_000, 110, 30);
    let mut net = Devnet::init(&tmp.path().join("devnet"), 4, base);
    net.start_all_connected();
    let api = net.apis[0].clone();
    let users = tmp.path().join("users");
    std::fs::create_dir_all(&users).unwrap();
    let authority = net.dir.join("authority.key");
    support::register_participants(
        &api,
        &users,
        authority.to_str().unwrap(),
        &[("doc", "doctor"), ("patient", "patient")],
    );
    let key = |name: &str| -> KeyMaterial {
        read_key_file(&users.join(format!("{name}.key")), None).unwrap()
    };
    let (doc, patient) = (key("doc"), key("patient"));
    let chain = net.status(0).unwrap().chain_id;
    let keys = PatientKeys {
        identity: patient.signing_key().identity(),
        encryption: patient.encryption_key().public_key(),
        search: patient.search_key().public_key(),
    };
    let write = |record_type: &str, nonce: u64| {
        let input = RecordInput {
            plaintext: format!(r#"{{"resourceType":"{record_type}"}}"#).into_bytes(),
            record_type: record_type.into(),
            keywords: vec![],
            replaces: None,
        };
        build_record_write(&chain, &doc, &keys, &input, nonce, now_ms()).unwrap()
    };
    let client = client_as(&api, &doc);

    // Two slips with one nonce: only one can ever take effect, so the second is refused and
    // its ciphertext is written nowhere.
    let first = write("Observation", 1_000);
    let clash = write("Condition", 1_000);
    let accepted = call(client.upload(upload_bytes(&first))).unwrap();
    let e = call(client.upload(upload_bytes(&clash))).unwrap_err();
    assert_eq!(e.status(), Some(409), "{e}");
    assert!(e.to_string().contains("nonce"), "{e}");

    // The admitted one reaches every node's store (pushed with its slip, or fetched).
    let (kept, refused) = (ciphertext_hash(&first), ciphertext_hash(&clash));
    assert!(
        net.wait(30, |n| (0..4).all(|i| record_files(&n.home(i))
            .iter()
            .any(|f| f.ends_with(&kept)))),
        "the admitted record's ciphertext did not reach every node"
    );

    // A slip naming the first record's ciphertext, with a fresh nonce: refused by the pool while
    // the first is pending (409) and by the chain's rules once it has committed (403, each
    // record has its own ciphertext); either way nothing is queued. The committed case here.
    assert!(
        net.wait(30, |_| call(client.transaction(&accepted.id))
            .unwrap()
            .is_some_and(|t| t.failed.is_none())),
        "the first record did not commit"
    );
    let Payload::PrivateSlip(original) = first.transaction.body.clone().unwrap().payload.unwrap()
    else {
        unreachable!()
    };
    let mut content = original.content.unwrap();
    content.record_type = "Condition".into();
    content.timestamp_ms = now_ms();
    let reuse = RecordWrite {
        slip_id: Default::default(),
        ciphertext: first.ciphertext.clone(),
        transaction: sign_transaction(
            &doc.signing_key(),
            v1::TransactionBody {
                chain_id: chain.clone(),
                signer: vec![],
                nonce: 1_001,
                timestamp_ms: now_ms(),
                payload: Some(Payload::PrivateSlip(make_private_slip(
                    &doc.signing_key(),
                    content,
                ))),
            },
        ),
    };
    let e = call(client.upload(upload_bytes(&reuse))).unwrap_err();
    assert_eq!(e.status(), Some(403), "{e}");
    assert!(
        e.to_string()
            .contains(&format!("already belongs to record {}", first.slip_id)),
        "{e}"
    );

    // Meanwhile the legitimate path goes on: a new record with a fresh nonce is stored too.
    let next = write("Condition", 1_002);
    call(client.upload(upload_bytes(&next))).unwrap();
    let next_hash = ciphertext_hash(&next);
    assert!(
        net.wait(30, |n| (0..4).all(|i| record_files(&n.home(i))
            .iter()
            .any(|f| f.ends_with(&next_hash)))),
        "the second record's ciphertext did not reach every node"
    );
    for i in 0..4 {
        let files = record_files(&net.home(i));
        assert!(
            !files.iter().any(|f| f.to_string_lossy().contains(&refused)),
            "node{i} holds the refused upload's ciphertext: {files:?}"
        );
        assert_eq!(
            files.len(),
            2,
            "node{i} holds more than the two records: {files:?}"
        );
    }
}
