use super::*;
use medchain_crypto::hash::domains;
use medchain_crypto::SigningKey;
use medchain_proto::ledger::{make_block, make_private_slip, sign_transaction};

/// The test chain's four validators.
fn validators() -> Vec<SigningKey> {
    (11..=14).map(key).collect()
}

pub(crate) fn key(n: u8) -> SigningKey {
    let mut b = [0u8; 32];
    b[31] = n;
    SigningKey::from_bytes(&b).unwrap()
}

fn slip_tx(doctor: &SigningKey, patient: &SigningKey, nonce: u64) -> v1::Transaction {
    let slip = make_private_slip(
        doctor,
        v1::SlipContent {
            timestamp_ms: nonce,
            summary: format!("record {nonce}"),
            ..medchain_proto::records::sample_slip_content(
                &doctor.identity(),
                &patient.identity(),
                &nonce.to_be_bytes(),
            )
        },
    );
    sign_transaction(
        doctor,
        v1::TransactionBody {
            chain_id: "h".into(),
            signer: vec![],
            nonce,
            timestamp_ms: nonce,
            payload: Some(Payload::PrivateSlip(slip)),
        },
    )
}

fn next_block(store: &Store, txs: Vec<v1::Transaction>) -> v1::Block {
    let (height, parent) = match store.tip().unwrap() {
        Some(t) => (t.height + 1, t.hash),
        None => (1, Hash32::ZERO),
    };
    make_block(&validators(), "h", height, parent, height, txs)
}

#[test]
fn commit_and_read_back() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    assert_eq!(store.tip().unwrap(), None);
    let (doctor, patient) = (key(2), key(3));
    let t1 = slip_tx(&doctor, &patient, 1);
    let t2 = slip_tx(&doctor, &patient, 2);
    let b1 = next_block(&store, vec![t1.clone()]);
    let tip1 = store
        .commit_block(&b1, &[(b"k".to_vec(), Some(b"v".to_vec()))], &[], &[])
        .unwrap();
    let b2 = next_block(&store, vec![t2.clone()]);
    let tip2 = store
        .commit_block(&b2, &[(b"k".to_vec(), None)], &[], &[])
        .unwrap();
    assert_eq!(tip2.height, 2);
    assert_eq!(store.tip().unwrap(), Some(tip2));
    assert_eq!(store.block(1).unwrap().unwrap(), b1);
    assert_eq!(store.header(2).unwrap(), b2.header);
    assert_eq!(store.header(3).unwrap(), None);
    // A block committed before headers were kept alone: its header comes from the block.
    store
        .db
        .delete_cf(store.cf(CF_HEADERS), height_key(1))
        .unwrap();
    assert_eq!(store.header(1).unwrap(), b1.header);
    assert_eq!(store.height_of(&tip1.hash).unwrap(), Some(1));
    assert_eq!(store.chain_state(b"k").unwrap(), None);

    let loc = store
        .transaction_location(&t2.body.as_ref().unwrap().digest())
        .unwrap()
        .unwrap();
    assert_eq!(
        loc,
        TxLocation {
            height: 2,
            index: 0
        }
    );
    let slips = store.patient_slips(patient.identity().as_bytes()).unwrap();
    assert_eq!(slips.len(), 2);
    let (at, slip) = store.slip(&slips[1]).unwrap().unwrap();
    assert_eq!(at.height, 2);
    assert_eq!(slip.content.unwrap().summary, "record 2");
    assert!(store
        .patient_slips(doctor.identity().as_bytes())
        .unwrap()
        .is_empty());
}

#[test]
fn refuses_gaps_forks_and_invalid_blocks() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let b1 = next_block(&store, vec![]);
    store.commit_block(&b1, &[], &[], &[]).unwrap();

    let gap = make_block(
        &validators(),
        "h",
        3,
        store.tip().unwrap().unwrap().hash,
        3,
        vec![],
    );
    assert!(matches!(
        store.commit_block(&gap, &[], &[], &[]),
        Err(StoreError::NotNextHeight {
            expected: 2,
            got: 3
        })
    ));
    let fork = make_block(&validators(), "h", 2, Hash32([7; 32]), 2, vec![]);
    assert!(matches!(
        store.commit_block(&fork, &[], &[], &[]),
        Err(StoreError::WrongParent { height: 2, .. })
    ));
    let mut forged = next_block(&store, vec![]);
    forged.header.as_mut().unwrap().timestamp_ms += 1;
    assert!(matches!(
        store.commit_block(&forged, &[], &[], &[]),
        Err(StoreError::InvalidBlock(_))
    ));
    assert_eq!(
        store.tip().unwrap().unwrap().height,
        1,
        "nothing half-written"
    );
    assert!(store.block(2).unwrap().is_none());
}

#[test]
fn consensus_state_and_records_survive_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let blob_hash = medchain_crypto::digest(domains::RECORD_CONTENT, b"blob");
    {
        let store = Store::open(dir.path()).unwrap();
        store
            .put_consensus_state("last_vote", &(5u64, 2u64, [9u8; 32]))
            .unwrap();
        store.put_record(&blob_hash, b"ciphertext").unwrap();
    }
    let store = Store::open(dir.path()).unwrap();
    let v: (u64, u64, [u8; 32]) = store.consensus_state("last_vote").unwrap().unwrap();
    assert_eq!(v, (5, 2, [9u8; 32]));
    assert_eq!(store.record(&blob_hash).unwrap().unwrap(), b"ciphertext");
    store.delete_record(&blob_hash).unwrap();
    assert!(store.record(&blob_hash).unwrap().is_none());
}

#[test]
fn consensus_changes_apply_together_and_ranges_are_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let slot = |seq: u64| [b"slot/".as_slice(), &seq.to_be_bytes()].concat();
    let mut c = crate::ConsensusChanges::default();
    for seq in 1..=5u64 {
        c.put(&slot(seq), &seq).unwrap();
    }
    c.put(b"header", &7u64).unwrap();
    store.write_consensus(c).unwrap();
    let mut c = crate::ConsensusChanges::default();
    c.delete_range(&slot(0), &slot(3));
    c.put(&slot(5), &50u64).unwrap();
    store.write_consensus(c).unwrap();
    let slots: Vec<u64> = store
        .consensus_records::<u64>(b"slot/")
        .unwrap()
        .into_iter()
        .map(|(_, v)| v)
        .collect();
    assert_eq!(slots, vec![3, 4, 50]);
    assert_eq!(store.consensus_state::<u64>("header").unwrap(), Some(7));
}

#[test]
fn second_open_names_the_holder() {
    let dir = tempfile::tempdir().unwrap();
    let _first = Store::open(dir.path()).unwrap();
    let err = Store::open(dir.path()).unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, StoreError::InUse { .. }));
    assert!(text.contains(&std::process::id().to_string()), "{text}");
}

#[test]
fn other_schema_version_is_named() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = Store::open(dir.path()).unwrap();
        store
            .db
            .put_cf(store.cf(CF_META), META_SCHEMA_VERSION, 7u32.to_be_bytes())
            .unwrap();
    }
    let err = Store::open(dir.path()).unwrap_err().to_string();
    assert!(err.contains("schema version 7"), "{err}");
    assert!(err.contains(&format!("version {SCHEMA_VERSION}")), "{err}");
}

const CRASH_DIR_ENV: &str = "MEDCHAIN_STORAGE_CRASH_DIR";

/// The child half of `sigkill_mid_commit_leaves_whole_blocks`: commits blocks until killed,
/// reporting each synced commit on stdout. Outside that test (no env var) it has nothing to do.
#[test]
fn crash_child_helper() {
    let Some(dir) = std::env::var_os(CRASH_DIR_ENV) else {
        return;
    };
    let store = Store::open(Path::new(&dir)).unwrap();
    let (doctor, patient) = (key(2), key(3));
    loop {
        let height = store.tip().unwrap().map_or(1, |t| t.height + 1);
        // Several slips per block so a commit is a multi-key batch worth interrupting.
        let txs = (0..8)
            .map(|i| slip_tx(&doctor, &patient, height * 100 + i))
            .collect();
        let block = next_block(&store, txs);
        let state = vec![(
            format!("height-{height}").into_bytes(),
            Some(vec![1u8; 512]),
        )];
        store.commit_block(&block, &state, &[], &[]).unwrap();
        println!("committed {height}");
    }
}

fn check_consistent(store: &Store) -> u64 {
    let Some(tip) = store.tip().unwrap() else {
        return 0;
    };
    let mut parent = Hash32::ZERO;
    for h in 1..=tip.height {
        let block = store
            .block(h)
            .unwrap()
            .unwrap_or_else(|| panic!("block {h} missing"));
        let hash = verify_block_structure(&block).unwrap();
        assert_eq!(
            block.header.as_ref().unwrap().previous_hash,
            parent.as_bytes()
        );
        assert_eq!(store.height_of(&hash).unwrap(), Some(h));
        for (i, tx) in block.transactions.iter().enumerate() {
            let id = tx.body.as_ref().unwrap().digest();
            let loc = store
                .transaction_location(&id)
                .unwrap()
                .expect("tx indexed");
            assert_eq!(
                loc,
                TxLocation {
                    height: h,
                    index: i as u32
                }
            );
        }
        assert!(store
            .chain_state(format!("height-{h}").as_bytes())
            .unwrap()
            .is_some());
        parent = hash;
    }
    assert_eq!(parent, tip.hash);
    assert!(
        store.block(tip.height + 1).unwrap().is_none(),
        "no block past the tip"
    );
    assert!(store
        .chain_state(format!("height-{}", tip.height + 1).as_bytes())
        .unwrap()
        .is_none());
    for slip_id in store.patient_slips(key(3).identity().as_bytes()).unwrap() {
        let (loc, _) = store.slip(&slip_id).unwrap().expect("indexed slip present");
        assert!(loc.height <= tip.height);
    }
    tip.height
}

#[test]
fn sigkill_mid_commit_leaves_whole_blocks() {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};

    let dir = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
    let mut reported = 0u64;
    for round in 0..4 {
        let mut child = Command::new(&exe)
            .args([
                "--exact",
                "store::tests::crash_child_helper",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CRASH_DIR_ENV, dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        // Let each round commit a different number of blocks so kills land at varied points.
        let target = reported + 5 + round * 3;
        for line in stdout.lines() {
            let line = line.unwrap();
            if let Some(h) = line.strip_prefix("committed ") {
                reported = h.trim().parse().unwrap();
                if reported >= target {
                    break;
                }
            }
        }
        child.kill().unwrap(); // SIGKILL, possibly in the middle of the next commit
        child.wait().unwrap();
        let store =
            Store::open(dir.path()).expect("reopens after SIGKILL; the lock died with the child");
        let tip = check_consistent(&store);
        assert!(
            tip >= reported,
            "a synced commit was lost: tip {tip} < reported {reported}"
        );
    }
}

#[test]
fn skipped_repeats_keep_the_first_location() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let (doctor, patient) = (key(2), key(3));
    let t1 = slip_tx(&doctor, &patient, 1);
    let b1 = next_block(&store, vec![t1.clone()]);
    store.commit_block(&b1, &[], &[], &[]).unwrap();
    // Consensus ordered t1 again at height 2; the ledger skips it, so its index stays at height 1.
    let t2 = slip_tx(&doctor, &patient, 2);
    let b2 = next_block(&store, vec![t1.clone(), t2.clone()]);
    store.commit_block(&b2, &[], &[0], &[]).unwrap();
    let id1 = t1.body.as_ref().unwrap().digest();
    let id2 = t2.body.as_ref().unwrap().digest();
    assert_eq!(
        store.transaction_location(&id1).unwrap(),
        Some(TxLocation {
            height: 1,
            index: 0
        })
    );
    assert_eq!(
        store.transaction_location(&id2).unwrap(),
        Some(TxLocation {
            height: 2,
            index: 1
        })
    );
    assert_eq!(store.block(2).unwrap().unwrap().transactions.len(), 2);
}

#[test]
fn genesis_is_pinned_on_first_start() {
    let dir = tempfile::tempdir().unwrap();
    let ours = medchain_crypto::digest(domains::RECORD_CONTENT, b"genesis a");
    let theirs = medchain_crypto::digest(domains::RECORD_CONTENT, b"genesis b");
    {
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(store.genesis_hash().unwrap(), None);
        store.pin_genesis(&ours).unwrap();
        store.pin_genesis(&ours).unwrap();
    }
    let store = Store::open(dir.path()).unwrap();
    assert_eq!(store.genesis_hash().unwrap(), Some(ours));
    let err = store.pin_genesis(&theirs).unwrap_err();
    assert!(matches!(err, StoreError::OtherGenesis { .. }), "{err}");
    assert!(err.to_string().contains(&ours.to_hex()), "{err}");
    assert_eq!(store.genesis_hash().unwrap(), Some(ours));
}

#[test]
fn backup_is_a_whole_data_folder_and_never_overwrites() {
    let dir = tempfile::tempdir().unwrap();
    let live = dir.path().join("live");
    let store = Store::open(&live).unwrap();
    let (doctor, patient) = (key(2), key(3));
    for n in 1..=3 {
        let b = next_block(&store, vec![slip_tx(&doctor, &patient, n)]);
        store.commit_block(&b, &[], &[], &[]).unwrap();
    }
    let blob = medchain_crypto::digest(domains::RECORD_CONTENT, b"blob");
    store.put_record(&blob, b"ciphertext").unwrap();
    store
        .pin_genesis(&medchain_crypto::digest(domains::RECORD_CONTENT, b"g"))
        .unwrap();

    let out = dir.path().join("backups/one");
    let summary = store.backup(&out).unwrap();
    assert_eq!(summary.height, 3);
    assert_eq!(summary.tip, store.tip().unwrap().map(|t| t.hash));
    assert_eq!((summary.records, summary.record_bytes), (1, 10));
    let err = store.backup(&out).unwrap_err();
    assert!(matches!(err, StoreError::BackupExists(_)), "{err}");

    // The live store goes on; the copy is a store of its own with the same chain.
    let b4 = next_block(&store, vec![slip_tx(&doctor, &patient, 4)]);
    store.commit_block(&b4, &[], &[], &[]).unwrap();
    drop(store);
    let copy = Store::open(&out).unwrap();
    assert_eq!(copy.tip().unwrap().unwrap().height, 3);
    assert_eq!(
        copy.block(2).unwrap(),
        Store::open(&live).unwrap().block(2).unwrap()
    );
    assert_eq!(copy.record(&blob).unwrap().unwrap(), b"ciphertext");
    assert_eq!(
        copy.genesis_hash().unwrap(),
        Some(medchain_crypto::digest(domains::RECORD_CONTENT, b"g"))
    );
}

fn record_files(store: &Store) -> Vec<RecordFile> {
    let mut files = Vec::new();
    store
        .for_each_record_file(|f| {
            files.push(f);
            Ok(())
        })
        .unwrap();
    files
}

/// A staged ciphertext is invisible until committed, and dropping it uncommitted leaves nothing
/// on disk; the file walk sees committed records by address and temporaries without one.
#[test]
fn staged_records_appear_only_when_committed() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let a = Hash32::from_slice(&[0xab; 32]).unwrap();
    let b = Hash32::from_slice(&[0xcd; 32]).unwrap();
    let staged = store.stage_record(&a, b"refused").unwrap();
    assert!(!store.has_record(&a));
    drop(staged);
    let files = record_files(&store);
    assert!(files.is_empty(), "a dropped staging left {files:?}");

    store
        .stage_record(&a, b"admitted")
        .unwrap()
        .commit()
        .unwrap();
    assert_eq!(store.record(&a).unwrap().as_deref(), Some(&b"admitted"[..]));
    // A crash between write and rename leaves a temporary: simulate it by forgetting the guard.
    std::mem::forget(store.stage_record(&b, b"crashed").unwrap());
    let mut files = record_files(&store);
    files.sort_by_key(|f| f.address.is_none());
    assert_eq!(files.len(), 2, "{files:?}");
    assert_eq!(files[0].address, Some(a));
    assert_eq!(files[0].bytes, 8);
    assert_eq!(files[1].address, None, "a temporary has no address");
    store.remove_record_file(&files[1]).unwrap();
    assert!(!files[1].path.exists());
    let outside = RecordFile {
        path: dir.path().join("CURRENT"),
        ..files[1].clone()
    };
    assert!(store.remove_record_file(&outside).is_err());
    assert!(dir.path().join("CURRENT").exists());
}

/// The data folder is its owner's alone, whatever the umask made it.
#[test]
fn the_data_folder_is_owner_only() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o755)).unwrap();
    drop(Store::open(&data).unwrap());
    let mode = std::fs::metadata(&data).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o700);
}
