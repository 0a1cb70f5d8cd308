use super::*;
use medchain_crypto::keys::KeyMaterial;
use medchain_crypto::SigningKey;
use medchain_proto::ledger::{sign_committed_batch, sign_transaction};

fn keys() -> Vec<SigningKey> {
    (1..=4u8)
        .map(|i| SigningKey::from_bytes(&[i; 32]).unwrap())
        .collect()
}

fn authority() -> KeyMaterial {
    KeyMaterial::from_seed(&[50; 32]).unwrap()
}

/// The authority registers participant `who` with `nonce`.
fn registration(chain: &str, nonce: u64, who: u8) -> Vec<u8> {
    patient_named(chain, nonce, who, "p")
}

/// The authority registers patient `who` with `nonce` under the display name `name`.
fn patient_named(chain: &str, nonce: u64, who: u8, name: &str) -> Vec<u8> {
    let binding = KeyMaterial::from_seed(&[who; 32]).unwrap().key_binding();
    sign_transaction(
        &authority().signing_key(),
        v1::TransactionBody {
            chain_id: chain.into(),
            signer: vec![],
            nonce,
            timestamp_ms: 5,
            payload: Some(v1::transaction_body::Payload::IdentityRegistration(
                medchain_proto::records::registration(&binding, v1::Role::Patient, name),
            )),
        },
    )
    .canonical_bytes()
}

fn ledger(dir: &std::path::Path) -> (PrivateLedger, Vec<SigningKey>) {
    ledger_under(dir, contracts::rules::V1)
}

fn ledger_under(dir: &std::path::Path, rules: u32) -> (PrivateLedger, Vec<SigningKey>) {
    let store = Arc::new(Store::open(dir).unwrap());
    let ks = keys();
    let set = ValidatorSet::new(ks.iter().map(|k| k.identity()).collect()).unwrap();
    let l = PrivateLedger::new(
        store,
        "h".into(),
        set,
        vec![authority().signing_key().identity()],
        rules,
    );
    (l, ks)
}

/// From rules 3 a patient's registration naming her is malformed: it is refused at admission
/// and in a proposed batch, so her name never reaches a block. Older chains keep requiring a
/// name, so their blocks replay as they were.
#[test]
fn under_rules_3_a_named_patient_is_never_ordered() {
    for (rules, named_ok) in [(contracts::rules::V2, true), (contracts::rules::V3, false)] {
        let dir = tempfile::tempdir().unwrap();
        let (ledger, _) = ledger_under(dir.path(), rules);
        let named = patient_named("h", 1, 10, "Alice");
        let nameless = patient_named("h", 2, 11, "");
        assert_eq!(ledger.check(&named).is_ok(), named_ok, "rules {rules}");
        assert_eq!(ledger.check(&nameless).is_ok(), !named_ok, "rules {rules}");
        let refused = if named_ok { &nameless } else { &named };
        let e = ledger
            .validate_at(
                1,
                &v1::PbftBatch {
                    timestamp_ms: 7,
                    items: vec![refused.clone()],
                    proposer: 0,
                },
                7,
            )
            .unwrap_err();
        assert!(e.contains(&format!("runs rules {rules}")), "{e}");
    }
}

/// The same bytes checked on arrival, in a proposal and at commit are decoded and verified
/// once; an altered copy is not mistaken for them.
#[test]
fn a_transaction_is_decoded_once() {
    let dir = tempfile::tempdir().unwrap();
    let (ledger, _) = ledger(dir.path());
    let a = registration("h", 1, 10);
    let first = ledger.check_form(&a).unwrap();
    let again = ledger.check_form(&a).unwrap();
    assert!(Arc::ptr_eq(&first, &again), "decoded a second time");
    let decoded = ledger.decode_items(std::slice::from_ref(&a)).unwrap();
    assert_eq!(decoded, vec![first.tx.clone()]);
    let mut altered = a.clone();
    let last = altered.len() - 1;
    altered[last] ^= 1;
    assert!(ledger.check_form(&altered).is_err());
    assert!(ledger.check(&a).is_ok());
}

#[test]
fn replays_and_reused_nonces_are_refused_and_skipped() {
    let dir = tempfile::tempdir().unwrap();
    let (ledger, ks) = ledger(dir.path());
    let a = registration("h", 1, 10);
    let same_nonce = registration("h", 1, 11);
    assert!(ledger.check(&a).is_ok());
    assert!(matches!(
        ledger.check(&registration("other", 1, 10)),
        Err(TxError::WrongChain { .. })
    ));
    let mut bad = a.clone();
    let last = bad.len() - 1;
    bad[last] ^= 1;
    assert!(ledger.check(&bad).is_err());

    // Both with nonce 1 in one batch: only the first takes effect.
    let batch = v1::PbftBatch {
        timestamp_ms: 7,
        items: vec![a.clone(), same_nonce.clone()],
        proposer: 0,
    };
    let committed = sign_committed_batch(&ks, "h", 1, 0, batch);
    let done = ledger.commit(&committed, &[], Hash32::ZERO).unwrap();
    assert_eq!(done.tip.height, 1);
    assert_eq!(done.effective.len(), 1);
    assert!(done.failed.is_empty());
    // Both are reported, so the mempool drops the one that can no longer take effect.
    assert_eq!(done.seen.len(), 2);
    assert_eq!(done.seen[0].1, done.seen[1].1);
    assert!(matches!(
        ledger.check(&a),
        Err(TxError::AlreadyCommitted { height: 1, .. })
    ));
    assert!(matches!(
        ledger.check(&same_nonce),
        Err(TxError::NonceUsed { nonce: 1, .. })
    ));
    assert!(ledger.is_committed(&same_nonce));
    assert_eq!(ledger.exec_point().unwrap().0, 1);
}

#[test]
fn a_refused_transaction_commits_as_failed_and_uses_its_nonce() {
    let dir = tempfile::tempdir().unwrap();
    let (ledger, ks) = ledger(dir.path());
    let first = registration("h", 1, 10);
    // The same participant registered again (another nonce): the contract refuses it, at
    // admission and, if it gets ordered anyway, at commit.
    let again = registration("h", 2, 10);
    let batch = v1::PbftBatch {
        timestamp_ms: 7,
        items: vec![first, again.clone()],
        proposer: 0,
    };
    let done = ledger
        .commit(
            &sign_committed_batch(&ks, "h", 1, 0, batch),
            &[],
            Hash32::ZERO,
        )
        .unwrap();
    assert_eq!(done.effective.len(), 1);
    assert_eq!(done.failed.len(), 1);
    assert!(
        done.failed[0].1.contains("already registered"),
        "{:?}",
        done.failed
    );
    let failure = ledger
        .store
        .chain_state(&crate::contracts::state::keys::failure(&done.failed[0].0))
        .unwrap()
        .unwrap();
    assert!(String::from_utf8(failure)
        .unwrap()
        .contains("already registered"));
    assert!(matches!(
        ledger.check(&again),
        Err(TxError::AlreadyCommitted { .. })
    ));
    let fresh = registration("h", 3, 10);
    assert!(matches!(
        ledger.check_client(&fresh, 10),
        Err(TxError::Refused(m)) if m.contains("already registered")
    ));
}

/// A backup refuses a batch stamped more than a minute ahead of its clock or more than a
/// minute before the last block: the primary's clock decides grant expiry and transaction
/// windows, so it must not run far ahead (expiring every grant) or back (reviving them).
#[test]
fn a_batch_timestamp_is_checked_against_the_clock_and_the_last_block() {
    let dir = tempfile::tempdir().unwrap();
    let (ledger, ks) = ledger(dir.path());
    let at = |t: u64| v1::PbftBatch {
        timestamp_ms: t,
        items: vec![],
        proposer: 0,
    };
    let now = 10 * BATCH_PAST_MS;
    assert!(ledger
        .validate_at(1, &at(now + BATCH_FUTURE_MS), now)
        .is_ok());
    let e = ledger
        .validate_at(1, &at(now + BATCH_FUTURE_MS + 1), now)
        .unwrap_err();
    assert!(e.contains("ahead of this replica's clock"), "{e}");
    // Before any block there is nothing to be behind.
    assert!(ledger.validate_at(1, &at(0), now).is_ok());
    let committed = sign_committed_batch(&ks, "h", 1, 0, at(now));
    ledger.commit(&committed, &[], Hash32::ZERO).unwrap();
    assert!(ledger.validate_at(2, &at(now - BATCH_PAST_MS), now).is_ok());
    let e = ledger
        .validate_at(2, &at(now - BATCH_PAST_MS - 1), now)
        .unwrap_err();
    assert!(e.contains("before the last block's"), "{e}");
}

/// An authority's upgrade of the rules by the chain, signed with `nonce`.
fn rules_upgrade(nonce: u64, version: u32, activation_height: u64) -> Vec<u8> {
    sign_transaction(
        &authority().signing_key(),
        v1::TransactionBody {
            chain_id: "h".into(),
            signer: vec![],
            nonce,
            timestamp_ms: 5,
            payload: Some(v1::transaction_body::Payload::RulesUpgrade(
                v1::RulesUpgrade {
                    version,
                    activation_height,
                },
            )),
        },
    )
    .canonical_bytes()
}

/// A running chain moves to later rules at the height an upgrade on chain names, and not
/// before: the form rules of rules 3 apply from that block on, at admission, in proposals and
/// in execution. A version this binary does not know stops it before that block: it neither
/// votes for nor executes a block under rules it cannot apply.
#[test]
fn an_upgrade_on_chain_changes_the_rules_at_its_height_only() {
    let dir = tempfile::tempdir().unwrap();
    let (ledger, ks) = ledger_under(dir.path(), contracts::rules::V2);
    let commit = |seq: u64, items: Vec<Vec<u8>>| {
        let batch = v1::PbftBatch {
            timestamp_ms: 6,
            items,
            proposer: 0,
        };
        let c = sign_committed_batch(&ks, "h", seq, 0, batch);
        ledger.commit(&c, &[], Hash32::ZERO)
    };
    let first = commit(1, vec![rules_upgrade(1, contracts::rules::V3, 12)]).unwrap();
    assert_eq!(first.failed, vec![], "the upgrade took effect");
    let (rules, upgrade) = ledger.rules_now().unwrap();
    assert_eq!(rules, contracts::rules::V2);
    assert_eq!(upgrade.unwrap().activation_height, 12);
    let named = patient_named("h", 10, 10, "Alice");
    for seq in 2..=11 {
        assert_eq!(ledger.rules_at(seq).unwrap(), contracts::rules::V2);
        commit(seq, vec![]).unwrap();
    }
    // The next block is height 12: rules 3 now, for admission and for a proposal.
    assert_eq!(ledger.rules_at(12).unwrap(), contracts::rules::V3);
    assert_eq!(ledger.rules_now().unwrap().0, contracts::rules::V3);
    let e = ledger.check(&named).unwrap_err().to_string();
    assert!(e.contains("runs rules 3"), "{e}");
    let batch = v1::PbftBatch {
        timestamp_ms: 6,
        items: vec![named.clone()],
        proposer: 0,
    };
    let e = ledger.validate_at(12, &batch, 6).unwrap_err();
    assert!(e.contains("runs rules 3"), "{e}");
    // Executed anyway (a faulty primary's block), it changes nothing.
    let done = commit(12, vec![named]).unwrap();
    assert_eq!(done.failed.len(), 1, "the named patient was registered");

    // An upgrade to rules this binary does not know: taken (every node decides alike), then
    // the node stops before its activation height.
    let unknown = contracts::rules::LATEST + 1;
    let done = commit(13, vec![rules_upgrade(2, unknown, 23)]).unwrap();
    assert_eq!(done.failed, vec![]);
    for seq in 14..=22 {
        commit(seq, vec![]).unwrap();
    }
    let e = ledger.rules_at(23).unwrap_err();
    assert!(
        matches!(e, TxError::UnknownRules { version, height: 23, .. } if version == unknown),
        "{e}"
    );
    assert!(e.to_string().contains("install a release"), "{e}");
    assert!(ledger
        .validate_at(23, &v1::PbftBatch::default(), 6)
        .is_err());
    assert!(matches!(
        commit(23, vec![]),
        Err(TxError::UnknownRules { .. })
    ));
    assert_eq!(
        ledger.store.tip().unwrap().unwrap().height,
        22,
        "nothing written"
    );
}

/// From rules 5 every block header carries the root of the state after it, and a proof from the
/// ledger verifies a registered identity (and the absence of another) against it. Under rules 4
/// headers carry none, so blocks of older chains replay as they were.
#[test]
fn under_rules_5_each_header_carries_the_state_root_its_proofs_verify_against() {
    for rules in [contracts::rules::V4, contracts::rules::V5] {
        let dir = tempfile::tempdir().unwrap();
        let (ledger, ks) = ledger_under(dir.path(), rules);
        let mut roots = Vec::new();
        for (seq, who) in [(1u64, 10u8), (2, 11)] {
            let batch = v1::PbftBatch {
                timestamp_ms: 7,
                items: vec![patient_named("h", seq, who, "")],
                proposer: 0,
            };
            let committed = sign_committed_batch(&ks, "h", seq, 0, batch);
            let done = ledger.commit(&committed, &[], Hash32::ZERO).unwrap();
            assert_eq!(done.effective.len(), 1, "rules {rules}");
            let block = ledger.store.block(seq).unwrap().unwrap();
            roots.push(block.header.unwrap().state_root);
        }
        if rules < contracts::rules::V5 {
            assert!(
                roots.iter().all(Vec::is_empty),
                "a root under rules {rules}"
            );
            assert!(ledger.prove(b"id/x").is_err());
            continue;
        }
        assert!(roots.iter().all(|r| r.len() == 32));
        assert_ne!(roots[0], roots[1]);
        let root: [u8; 32] = roots[1].clone().try_into().unwrap();
        let id = KeyMaterial::from_seed(&[11; 32])
            .unwrap()
            .key_binding()
            .identity;
        let key = contracts::state::keys::identity(&id);
        let proved = ledger.prove(&key).unwrap();
        assert_eq!((proved.height, proved.root), (2, root));
        let value = proved.value.clone().expect("registered");
        proved.proof.verify(&root, &key, Some(&value)).unwrap();
        let stranger = contracts::state::keys::identity(&ks[0].identity());
        let absent = ledger.prove(&stranger).unwrap();
        assert_eq!(absent.value, None);
        absent.proof.verify(&root, &stranger, None).unwrap();
    }
}

/// From rules 6 an audit trail is a counted list: the ledger proves its length and every entry
/// against the state root, so a client sees the whole trail. Under rules 5 the same events are
/// keys by height (listed by the node, not provable as complete) and there is no list.
#[test]
fn under_rules_6_an_audit_trail_is_proved_whole() {
    use contracts::queries::{AuditSubject, Queries};
    use contracts::state::{keys, list_len_value, AuditEvent};
    for rules in [contracts::rules::V5, contracts::rules::V6] {
        let dir = tempfile::tempdir().unwrap();
        let (ledger, ks) = ledger_under(dir.path(), rules);
        for (seq, who) in [(1u64, 10u8), (2, 11), (3, 12)] {
            let batch = v1::PbftBatch {
                timestamp_ms: 7,
                items: vec![patient_named("h", seq, who, "")],
                proposer: 0,
            };
            let committed = sign_committed_batch(&ks, "h", seq, 0, batch);
            ledger.commit(&committed, &[], Hash32::ZERO).unwrap();
        }
        let office = authority().signing_key().identity();
        let listed = Queries::new(&ledger.store)
            .audit(AuditSubject::Actor(&office))
            .unwrap();
        assert_eq!(listed.len(), 3, "rules {rules}: the node lists every event");
        let list = keys::audit_prefix(b'a', office.as_bytes());
        let proved: Vec<_> = ledger
            .prove_lists(&[ListRange::first(list.clone(), false)])
            .unwrap()
            .into_iter()
            .map(|(_, p)| p)
            .collect();
        let root: [u8; 32] = ledger
            .store
            .block(3)
            .unwrap()
            .unwrap()
            .header
            .unwrap()
            .state_root[..]
            .try_into()
            .unwrap();
        let len_key = keys::list_len(&list);
        proved[0]
            .proof
            .verify(&root, &len_key, proved[0].value.as_deref())
            .unwrap();
        if rules < contracts::rules::V6 {
            assert_eq!(
                (proved.len(), proved[0].value.clone()),
                (1, None),
                "no list"
            );
            continue;
        }
        let len = list_len_value(&len_key, proved[0].value.as_ref().unwrap()).unwrap();
        assert_eq!((len, proved.len()), (3, 4));
        for (i, p) in proved[1..].iter().enumerate() {
            let key = keys::list_item(&list, i as u64);
            p.proof.verify(&root, &key, p.value.as_deref()).unwrap();
            let ev: AuditEvent = contracts::state::decode(&key, p.value.as_ref().unwrap()).unwrap();
            assert_eq!(ev, listed[i], "entry {i} is the event the node lists");
        }
        // A page from position 2: the length, then entry 2 only.
        let page = ledger
            .prove_lists(&[ListRange {
                from: 2,
                ..ListRange::first(list.clone(), false)
            }])
            .unwrap();
        let keys_proved: Vec<Vec<u8>> = page.iter().map(|(k, _)| k.clone()).collect();
        assert_eq!(
            keys_proved,
            vec![len_key.clone(), keys::list_item(&list, 2)]
        );
        // A fourth entry is proved absent: a node cannot claim one that is not there.
        let beyond = keys::list_item(&list, 3);
        assert_eq!(ledger.prove(&beyond).unwrap().value, None);
    }
}
