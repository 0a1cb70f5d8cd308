use super::*;
use medchain_ledger::contracts::state::encode;

const HOUR: Duration = Duration::from_secs(3600);

#[test]
fn the_rule_keeps_young_pending_and_live_files_only() {
    let old = 2 * HOUR;
    let cases = [
        // (is a record, age, pending, live) -> removed?
        (true, Duration::ZERO, false, false, false),
        (false, Duration::from_secs(10), false, false, false),
        (false, old, false, false, true),
        (true, old, true, false, false),
        (true, old, false, true, false),
        (true, old, false, false, true),
        // A temporary is never "pending" or "live": it has no address.
        (false, old, true, true, true),
    ];
    for (is_record, age, pending, live, removed) in cases {
        let v = judge(is_record, age, HOUR, pending, live);
        assert_eq!(
            matches!(v, Verdict::Remove(_)),
            removed,
            "{is_record} {age:?} {pending} {live}: {v:?}"
        );
    }
}

fn h(b: u8) -> Hash32 {
    Hash32::from_slice(&[b; 32]).unwrap()
}

fn slip(ciphertext: Hash32, deleted: bool) -> SlipEntry {
    SlipEntry {
        patient: vec![1],
        doctor: vec![2],
        record_type: "Observation".into(),
        ciphertext_hash: ciphertext.0,
        height: 1,
        confirmed_height: None,
        deleted_height: deleted.then_some(1),
        replaces: None,
        replaced_by: None,
    }
}

/// A real store: live, pending and young files stay; a deleted record's copy, a file no slip
/// names and a crash's temporary go once old; a live slip without its file is handed over to
/// be fetched.
#[test]
fn a_sweep_removes_only_what_no_slip_accounts_for() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let (live, deleted, orphan, pending_one, lacking) = (h(1), h(2), h(3), h(4), h(5));
    let writes: Vec<_> = [
        (h(11), live, false),
        (h(12), deleted, true),
        (h(15), lacking, false),
    ]
    .into_iter()
    .map(|(id, c, del)| (keys::slip(&id), Some(encode(&slip(c, del)))))
    .collect();
    let validators: Vec<_> = (1..=4u8)
        .map(|i| medchain_crypto::SigningKey::from_bytes(&[i; 32]).unwrap())
        .collect();
    let block = medchain_proto::ledger::make_block(&validators, "h", 1, Hash32::ZERO, 1, vec![]);
    store.commit_block(&block, &writes, &[], &[]).unwrap();
    for a in [live, deleted, orphan, pending_one] {
        store.put_record(&a, b"ciphertext").unwrap();
    }
    std::mem::forget(store.stage_record(&h(6), b"crash").unwrap());

    let pending = PendingBlobs::default();
    let mut pool =
        crate::mempool::Mempool::new(10, crate::mempool::Quotas::none(), pending.clone());
    pool.insert(&medchain_ledger::CheckedTx {
        id: h(40),
        replay_key: vec![40],
        bytes: vec![],
        signer: vec![40],
        kind: "record",
        blob: Some((pending_one, 10)),
    })
    .unwrap();
    let missing = Missing::default();

    // Everything is young: nothing goes.
    let first = sweep(&store, &pending, &missing, HOUR, SystemTime::now()).unwrap();
    assert_eq!((first.files, first.removed), (5, 0), "{first:?}");
    assert!(lock(&missing).contains(&lacking));

    let later = SystemTime::now() + 2 * HOUR;
    let report = sweep(&store, &pending, &missing, HOUR, later).unwrap();
    assert_eq!(report.removed, 3, "{report:?}");
    assert_eq!(report.removed_bytes, 2 * 10 + 5);
    assert_eq!(report.lacking, 1);
    assert!(store.has_record(&live) && store.has_record(&pending_one));
    assert!(!store.has_record(&deleted) && !store.has_record(&orphan));
    let mut left = 0;
    store
        .for_each_record_file(|_| {
            left += 1;
            Ok(())
        })
        .unwrap();
    assert_eq!(left, 2, "the temporary is gone too");
}
