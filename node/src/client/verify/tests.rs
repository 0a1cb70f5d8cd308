use medchain_crypto::SigningKey;

use super::testkit::*;
use super::*;

#[test]
fn a_header_three_of_four_validators_signed_is_verified() {
    let k = keys();
    let h = header("hospital", 7);
    let v = anchor(&k)
        .verify_header(7, &certified(&k, &h, &[0, 1, 3], None))
        .unwrap();
    assert_eq!(v.header, h);
    assert_eq!(
        v.describe(),
        "verified against block 7, certificate of 3 of 4 validators"
    );
}

#[test]
fn each_lie_about_a_header_is_named() {
    let k = keys();
    let a = anchor(&k);
    let h = header("hospital", 7);
    let short = certified(&k, &h, &[0, 1], None);
    assert!(matches!(
        a.verify_header(7, &short),
        Err(VerifyError::BadCertificate { .. })
    ));
    let mut none = certified(&k, &h, &[0, 1, 2], None);
    none.certificate = None;
    assert_eq!(
        a.verify_header(7, &none),
        Err(VerifyError::Uncertified { height: 7 })
    );
    // Signatures over another header do not certify this one.
    let forged = certified(&k, &h, &[0, 1, 2], Some(Hash32([1; 32])));
    assert!(matches!(
        a.verify_header(7, &forged),
        Err(VerifyError::BadCertificate { .. })
    ));
    // Another chain's header, even well certified by its own validators.
    let other = header("elsewhere", 7);
    assert!(matches!(
        a.verify_header(7, &certified(&k, &other, &[0, 1, 2], None)),
        Err(VerifyError::OtherChain { .. })
    ));
    // Another height than asked for.
    assert!(matches!(
        a.verify_header(8, &certified(&k, &h, &[0, 1, 2], None)),
        Err(VerifyError::WrongHeight { .. })
    ));
    // Strangers' signatures.
    let strangers: Vec<SigningKey> = (11..=14u8)
        .map(|i| SigningKey::from_bytes(&[i; 32]).unwrap())
        .collect();
    assert!(matches!(
        a.verify_header(7, &certified(&strangers, &h, &[0, 1, 2], None)),
        Err(VerifyError::BadCertificate { .. })
    ));
}

#[test]
fn a_proof_for_another_key_or_missing_entries_are_refused() {
    let k = keys();
    let a = anchor(&k);
    let h = header("hospital", 7);
    let proofs = StateProofs {
        header: certified(&k, &h, &[0, 1, 2], None),
        entries: vec![medchain_api::ProvedEntry {
            key: hex::encode(b"id/other"),
            value: None,
            proof: String::new(),
        }],
    };
    assert!(matches!(
        a.verify_state(&proofs, &[b"id/me".to_vec()]),
        Err(VerifyError::WrongKey { .. })
    ));
    assert!(matches!(
        a.verify_state(&proofs, &[b"id/me".to_vec(), b"susp/me".to_vec()]),
        Err(VerifyError::WrongEntryCount { .. })
    ));
    let mut old = h.clone();
    old.state_root = Vec::new();
    let no_root = StateProofs {
        header: certified(&k, &old, &[0, 1, 2], None),
        entries: vec![],
    };
    assert_eq!(
        a.verify_state(&no_root, &[]),
        Err(VerifyError::NoStateRoot { height: 7 })
    );
}
