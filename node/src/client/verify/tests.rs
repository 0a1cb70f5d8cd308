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

/// A real ledger under rules 6 with three registrations by one authority: its audit list holds
/// three events. Returns the proofs the node would send, the list's key and the anchor.
fn proved_trail(dir: &std::path::Path) -> (StateProofs, Vec<u8>, Anchor) {
    use medchain_crypto::keys::KeyMaterial;
    use medchain_ledger::contracts::{rules, state::keys as state_keys};
    use medchain_proto::ledger::{sign_committed_batch, sign_transaction};
    let k = keys();
    let office = KeyMaterial::from_seed(&[50; 32]).unwrap();
    let store = std::sync::Arc::new(medchain_storage::Store::open(dir).unwrap());
    let set = ValidatorSet::new(k.iter().map(|k| k.identity()).collect()).unwrap();
    let ledger = medchain_ledger::PrivateLedger::new(
        store.clone(),
        "hospital".into(),
        set,
        vec![office.signing_key().identity()],
        rules::V6,
    );
    for (seq, who) in [(1u64, 10u8), (2, 11), (3, 12)] {
        let binding = KeyMaterial::from_seed(&[who; 32]).unwrap().key_binding();
        let tx = sign_transaction(
            &office.signing_key(),
            v1::TransactionBody {
                chain_id: "hospital".into(),
                signer: vec![],
                nonce: seq,
                timestamp_ms: 5,
                payload: Some(v1::transaction_body::Payload::IdentityRegistration(
                    medchain_proto::records::registration(&binding, v1::Role::Patient, ""),
                )),
            },
        );
        let batch = v1::PbftBatch {
            timestamp_ms: 7,
            items: vec![tx.canonical_bytes()],
            proposer: 0,
        };
        let committed = sign_committed_batch(&k, "hospital", seq, 0, batch);
        ledger.commit(&committed, &[], Hash32::ZERO).unwrap();
    }
    let list = state_keys::audit_prefix(b'a', office.signing_key().identity().as_bytes());
    let proved = ledger
        .prove_lists(&[medchain_ledger::ListRange::first(list.clone(), false)])
        .unwrap();
    let header = store.header(3).unwrap().unwrap();
    let proofs = StateProofs {
        header: certified(&k, &header, &[0, 1, 2], None),
        entries: proved
            .into_iter()
            .map(|(key, p)| medchain_api::ProvedEntry {
                key: hex::encode(key),
                value: p.value.map(hex::encode),
                proof: hex::encode(p.proof.to_bytes()),
            })
            .collect(),
    };
    (proofs, list, anchor(&k))
}

#[test]
fn a_whole_list_is_verified_and_a_hidden_entry_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (proofs, list, a) = proved_trail(dir.path());
    let asked = [medchain_ledger::ListRange::first(list.clone(), false)];
    let ok = a.verify_lists(&proofs, &asked).unwrap();
    assert_eq!((ok.lists[0].len, ok.lists[0].entries.len()), (3, 3));
    // A page from position 1: the length, then entries 1 and 2 only.
    let from_1 = medchain_ledger::ListRange {
        from: 1,
        ..asked[0].clone()
    };
    let mut page = proofs.clone();
    page.entries.remove(1);
    let ok = a
        .verify_lists(&page, std::slice::from_ref(&from_1))
        .unwrap();
    assert_eq!((ok.lists[0].len, ok.lists[0].entries.len()), (3, 2));
    assert!(
        a.verify_lists(&proofs, &[from_1]).is_err(),
        "entry 0 where 1 was asked"
    );
    assert_eq!(ok.header.header.height, 3);

    // The node drops the last event: the proved length still says 3.
    let mut dropped = proofs.clone();
    dropped.entries.pop();
    assert!(
        matches!(
            a.verify_lists(&dropped, &asked),
            Err(VerifyError::BadList { .. })
        ),
        "{:?}",
        a.verify_lists(&dropped, &asked)
    );
    // It claims the list holds 2: the length's proof no longer verifies.
    let mut shorter = proofs.clone();
    shorter.entries[0].value = Some(hex::encode(2u64.to_be_bytes()));
    shorter.entries.pop();
    assert!(matches!(
        a.verify_lists(&shorter, &asked),
        Err(VerifyError::BadProof { .. })
    ));
    // It swaps two events: each proof is for its position's key.
    let mut swapped = proofs.clone();
    swapped.entries.swap(1, 2);
    assert!(matches!(
        a.verify_lists(&swapped, &asked),
        Err(VerifyError::WrongKey { .. })
    ));
    // It changes what an event says.
    let mut edited = proofs.clone();
    edited.entries[1].value = Some(hex::encode(b"a read that never happened"));
    assert!(matches!(
        a.verify_lists(&edited, &asked),
        Err(VerifyError::BadProof { .. })
    ));
    // It adds an entry after the list.
    let mut longer = proofs.clone();
    longer.entries.push(proofs.entries[1].clone());
    assert!(matches!(
        a.verify_lists(&longer, &asked),
        Err(VerifyError::WrongEntryCount { .. })
    ));
}
