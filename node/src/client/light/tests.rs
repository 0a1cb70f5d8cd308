use medchain_crypto::SigningKey;

use super::*;
use crate::client::verify::testkit::{anchor, certified, keys};

/// A folder with no headers yet, trusting the test validators.
fn empty(dir: &Path, k: &[SigningKey]) -> LightStore {
    LightStore {
        dir: dir.to_path_buf(),
        anchor: anchor(k),
        genesis_hash: Hash32([1; 32]),
        headers: Vec::new(),
    }
}

/// Headers `1..=n` of chain "hospital", each linked to the one before.
fn chain(n: u64) -> Vec<v1::BlockHeader> {
    let mut previous = Hash32([0; 32]);
    (1..=n)
        .map(|height| {
            let h = v1::BlockHeader {
                chain_id: "hospital".into(),
                height,
                previous_hash: previous.as_bytes().to_vec(),
                state_root: vec![height as u8; 32],
                ..Default::default()
            };
            previous = h.digest();
            h
        })
        .collect()
}

fn verified(k: &[SigningKey], h: &v1::BlockHeader) -> VerifiedHeader {
    anchor(k)
        .verify_header(h.height, &certified(k, h, &[0, 1, 2], None))
        .unwrap()
}

#[test]
fn a_linked_run_ending_in_a_certified_header_is_kept_across_reopening() {
    let (dir, k) = (tempfile::tempdir().unwrap(), keys());
    let headers = chain(10);
    let mut store = empty(dir.path(), &k);
    store
        .accept(headers[..6].to_vec(), &verified(&k, &headers[5]))
        .unwrap();
    store
        .accept(headers[6..].to_vec(), &verified(&k, &headers[9]))
        .unwrap();
    assert_eq!(store.tip(), Some((10, headers[9].digest())));

    let mut again = empty(dir.path(), &k);
    again.load_headers().unwrap();
    assert_eq!(again.tip(), store.tip());
    assert_eq!(again.header(3), Some(&headers[2]));
}

#[test]
fn a_run_that_does_not_link_or_is_not_the_certified_one_is_refused() {
    let (dir, k) = (tempfile::tempdir().unwrap(), keys());
    let headers = chain(4);
    let mut store = empty(dir.path(), &k);
    // A forged header 2 breaks the link to header 3.
    let mut forged = headers.clone();
    forged[1].state_root = vec![0xee; 32];
    let err = store
        .accept(forged, &verified(&k, &headers[3]))
        .unwrap_err();
    assert!(
        matches!(
            err,
            LightError::Verify(VerifyError::BrokenLink { height: 3 })
        ),
        "{err}"
    );
    // A run certified by a header that is not its last.
    let err = store
        .accept(headers[..3].to_vec(), &verified(&k, &headers[3]))
        .unwrap_err();
    assert!(
        matches!(err, LightError::Verify(VerifyError::BrokenLink { .. })),
        "{err}"
    );
    // A run that skips a height.
    let err = store
        .accept(headers[1..].to_vec(), &verified(&k, &headers[3]))
        .unwrap_err();
    assert!(
        matches!(
            err,
            LightError::Verify(VerifyError::WrongHeight {
                expected: 1,
                found: 2
            })
        ),
        "{err}"
    );
    assert_eq!(store.tip(), None, "nothing of a refused run is kept");
    assert!(!dir.path().join(HEADERS_FILE).exists());
}

#[test]
fn an_older_header_is_stale_and_another_at_a_kept_height_is_a_fork() {
    let (dir, k) = (tempfile::tempdir().unwrap(), keys());
    let headers = chain(5);
    let mut store = empty(dir.path(), &k);
    store
        .accept(headers.clone(), &verified(&k, &headers[4]))
        .unwrap();
    assert_eq!(store.check(&verified(&k, &headers[4])), Ok(()));
    assert_eq!(
        store.check(&verified(&k, &headers[2])),
        Err(VerifyError::Stale {
            height: 3,
            known: 5
        })
    );
    let mut other = headers[4].clone();
    other.state_root = vec![0xaa; 32];
    assert!(matches!(
        store.check(&verified(&k, &other)),
        Err(VerifyError::Fork { height: 5, .. })
    ));
    // A newer header is fine: the client syncs up to it.
    let next = chain(6).pop().unwrap();
    assert_eq!(store.check(&verified(&k, &next)), Ok(()));
}

#[test]
fn a_torn_last_header_is_cut_off_and_damage_is_named() {
    let (dir, k) = (tempfile::tempdir().unwrap(), keys());
    let headers = chain(3);
    let mut store = empty(dir.path(), &k);
    store
        .accept(headers.clone(), &verified(&k, &headers[2]))
        .unwrap();
    let path = dir.path().join(HEADERS_FILE);
    let full = std::fs::read(&path).unwrap();
    std::fs::write(&path, &full[..full.len() - 3]).unwrap();
    let mut again = empty(dir.path(), &k);
    again.load_headers().unwrap();
    assert_eq!(again.tip(), Some((2, headers[1].digest())));
    assert!(std::fs::read(&path).unwrap().len() < full.len() - 3);

    // A changed byte inside a header breaks its link to the next.
    let mut bad = full.clone();
    let at = 4 + 6; // inside header 1
    bad[at] ^= 0x01;
    std::fs::write(&path, &bad).unwrap();
    let mut damaged = empty(dir.path(), &k);
    assert!(damaged.load_headers().is_err());
}
