use super::*;
use medchain_crypto::{Hash32, SigningKey};
use medchain_proto::ledger::make_block;

fn keys() -> Vec<SigningKey> {
    (1..=4u8)
        .map(|i| SigningKey::from_bytes(&[i; 32]).unwrap())
        .collect()
}

type Writes = Vec<(Vec<u8>, Option<Vec<u8>>)>;

/// Commits an empty block carrying `writes` to the chain state, with the tree's update in the
/// same batch, as the ledger does. Returns the new root.
fn commit(store: &Store, writes: &Writes) -> [u8; 32] {
    let tip = store.tip().unwrap();
    let height = tip.map_or(1, |t| t.height + 1);
    let parent = tip.map_or(Hash32::ZERO, |t| t.hash);
    let (root, tree) = StateTree::new(store)
        .update(
            height,
            writes.iter().map(|(k, v)| (k.as_slice(), v.as_deref())),
        )
        .unwrap();
    let block = make_block(&keys(), "h", height, parent, height, vec![]);
    store
        .commit_block_with_tree(&block, writes, &[], &[], Some(&tree))
        .unwrap();
    root
}

fn put(k: &str, v: &str) -> (Vec<u8>, Option<Vec<u8>>) {
    (k.as_bytes().to_vec(), Some(v.as_bytes().to_vec()))
}

fn del(k: &str) -> (Vec<u8>, Option<Vec<u8>>) {
    (k.as_bytes().to_vec(), None)
}

fn node_count(store: &Store) -> usize {
    store.state_tree_nodes().unwrap()
}

/// A proof of membership verifies against its root with the value, and fails with any other
/// value or root; a proof of absence verifies for a key never written and for one deleted.
#[test]
fn proofs_of_membership_and_absence_verify_against_the_root_only() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    assert!(
        StateTree::new(&store).ensure().unwrap(),
        "a fresh store gets its empty tree"
    );
    let r1 = commit(
        &store,
        &vec![put("id/alice", "key-a"), put("grant/g1", "open")],
    );
    let r2 = commit(&store, &vec![put("grant/g1", "revoked"), del("id/alice")]);
    assert_ne!(r1, r2);

    let snap = store.state_snapshot();
    let grant = StateTree::prove(&snap, b"grant/g1").unwrap();
    assert_eq!(grant.height, 2);
    assert_eq!(grant.root, r2);
    assert_eq!(grant.value.as_deref(), Some(b"revoked".as_slice()));
    grant
        .proof
        .verify(&r2, b"grant/g1", Some(b"revoked"))
        .unwrap();
    let wire = StateProof::from_bytes(&grant.proof.to_bytes()).unwrap();
    wire.verify(&r2, b"grant/g1", Some(b"revoked")).unwrap();
    let lie = wire.verify(&r2, b"grant/g1", Some(b"open")).unwrap_err();
    assert!(lie.to_string().contains("does not verify"), "{lie}");
    assert!(wire.verify(&r1, b"grant/g1", Some(b"revoked")).is_err());
    assert!(wire.verify(&r2, b"grant/g1", None).is_err());

    for absent in [b"id/alice".as_slice(), b"id/nobody".as_slice()] {
        let p = StateTree::prove(&snap, absent).unwrap();
        assert_eq!(p.value, None);
        p.proof.verify(&r2, absent, None).unwrap();
        assert!(p.proof.verify(&r2, absent, Some(b"key-a")).is_err());
    }
    assert!(StateProof::from_bytes(b"\x01\x02").is_err());
}

/// The root depends on the entries only: a tree built afresh from the state at the tip equals
/// the one kept block by block, and bookkeeping keys (nonces, the execution point) are outside
/// it.
#[test]
fn a_rebuilt_tree_has_the_root_of_the_kept_one_and_bookkeeping_is_outside() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    StateTree::new(&store).ensure().unwrap();
    let mut root = [0; 32];
    for h in 0..30u32 {
        let mut w = vec![
            put(&format!("slip/{h}"), "s"),
            put("rules/upgrade", &h.to_string()),
        ];
        if h % 3 == 0 {
            w.push(del(&format!("slip/{}", h / 2)));
        }
        w.push((format!("nonce/{h}").into_bytes(), Some(vec![1])));
        w.push((crate::EXEC_KEY.to_vec(), Some(h.to_be_bytes().to_vec())));
        root = commit(&store, &w);
    }
    let tip = store.tip().unwrap().unwrap().height;
    let (built, _) = StateTree::new(&store).build(tip).unwrap();
    assert_eq!(built, root);

    // An empty block keeps the root.
    assert_eq!(commit(&store, &vec![]), root);
    // Bookkeeping writes do not move it.
    assert_eq!(
        commit(&store, &vec![(b"nonce/x".to_vec(), Some(vec![2]))]),
        root
    );
    let snap = store.state_snapshot();
    assert!(StateTree::prove(&snap, crate::EXEC_KEY).is_err());
}

/// Only the tip's tree is kept: rewriting the same keys block after block does not grow the
/// tree, and a snapshot taken before a block still proves the state it saw.
#[test]
fn stale_nodes_are_dropped_and_a_snapshot_keeps_its_state() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    StateTree::new(&store).ensure().unwrap();
    let w: Writes = (0..50).map(|i| put(&format!("id/{i}"), "v0")).collect();
    let r0 = commit(&store, &w);
    let after_first = node_count(&store);
    let old = store.state_snapshot();
    for round in 1..20 {
        let w: Writes = (0..50)
            .map(|i| put(&format!("id/{i}"), &format!("v{round}")))
            .collect();
        commit(&store, &w);
    }
    assert_eq!(node_count(&store), after_first, "the tree kept stale nodes");
    let p = StateTree::prove(&old, b"id/7").unwrap();
    assert_eq!(p.root, r0);
    p.proof.verify(&r0, b"id/7", Some(b"v0")).unwrap();
}

/// A data folder whose tree is not of its tip (an older release committed blocks) gets its tree
/// rebuilt; a proof is refused, naming the problem, until then.
#[test]
fn a_tree_behind_the_tip_is_rebuilt() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    StateTree::new(&store).ensure().unwrap();
    let r1 = commit(&store, &vec![put("id/a", "1")]);
    // A block written without the tree.
    let tip = store.tip().unwrap().unwrap();
    let block = make_block(&keys(), "h", 2, tip.hash, 2, vec![]);
    store
        .commit_block(&block, &[put("id/b", "2")], &[], &[])
        .unwrap();
    let err = StateTree::prove(&store.state_snapshot(), b"id/a").unwrap_err();
    assert!(
        matches!(
            err,
            StateTreeError::Missing {
                tip: 2,
                tree: Some(1)
            }
        ),
        "{err}"
    );
    assert!(StateTree::new(&store).ensure().unwrap());
    let p = StateTree::prove(&store.state_snapshot(), b"id/b").unwrap();
    assert_ne!(p.root, r1);
    p.proof.verify(&p.root, b"id/b", Some(b"2")).unwrap();
    assert!(
        !StateTree::new(&store).ensure().unwrap(),
        "nothing to do twice"
    );
}
