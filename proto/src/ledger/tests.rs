use super::*;
use crate::canonical::{decode_peer_message, limits, peer_message};
use crate::v1::transaction_body::Payload;
use medchain_crypto::validators::EcdsaVerifier;
use proptest::prelude::*;
use prost::Message;

fn key(n: u8) -> SigningKey {
    let mut b = [0u8; 32];
    b[31] = n;
    SigningKey::from_bytes(&b).unwrap()
}

fn slip(doctor: &SigningKey, patient: &SigningKey) -> v1::PrivateSlip {
    make_private_slip(
        doctor,
        v1::SlipContent {
            summary: "blood pressure".into(),
            ..crate::records::sample_slip_content(&doctor.identity(), &patient.identity(), b"M")
        },
    )
}

fn tx(signer: &SigningKey, nonce: u64) -> v1::Transaction {
    sign_transaction(
        signer,
        v1::TransactionBody {
            chain_id: "hospital-a".into(),
            signer: vec![],
            nonce,
            timestamp_ms: 1,
            payload: Some(Payload::PrivateSlip(slip(signer, &key(2)))),
        },
    )
}

#[test]
fn transaction_round_trip_and_tamper() {
    let t = tx(&key(1), 7);
    let bytes = t.canonical_bytes();
    let back = v1::Transaction::decode_canonical(&bytes).unwrap();
    let verified = verify_transaction(back).unwrap();
    assert_eq!(verified.signer, key(1).identity());

    let mut tampered = t.clone();
    tampered.body.as_mut().unwrap().nonce = 8;
    let e = verify_transaction(tampered).unwrap_err().to_string();
    assert!(e.contains("signature"), "{e}");

    let mut no_body = t.clone();
    no_body.body = None;
    assert!(matches!(
        verify_transaction(no_body),
        Err(ProtoError::MissingField { field: "body", .. })
    ));

    let mut short_sig = t;
    short_sig.signature.pop();
    assert!(verify_transaction(short_sig).is_err());
}

#[test]
fn slip_checks() {
    let (d, p) = (key(1), key(2));
    let mut s = slip(&d, &p);
    let parties = verify_private_slip(&s).unwrap();
    assert_eq!(parties.patient, p.identity());

    // Patient confirmation over the slip ID.
    let conf = p.sign(domains::PATIENT_CONFIRMATION, parties.slip_id.as_bytes());
    s.patient_signature = conf.as_bytes().to_vec();
    verify_private_slip(&s).unwrap();
    // A confirmation by someone else is refused.
    s.patient_signature = d
        .sign(domains::PATIENT_CONFIRMATION, parties.slip_id.as_bytes())
        .as_bytes()
        .to_vec();
    assert!(verify_private_slip(&s).is_err());

    // Altering the content breaks the slip ID.
    let mut altered = slip(&d, &p);
    altered.content.as_mut().unwrap().summary = "changed".into();
    assert!(verify_private_slip(&altered).is_err());

    // A wrong-length record hash is named.
    let mut bad_hash = slip(&d, &p);
    bad_hash.content.as_mut().unwrap().record_hash = vec![0; 31];
    let e = verify_private_slip(&bad_hash).unwrap_err().to_string();
    assert!(e.contains("record_hash"), "{e}");
}

#[test]
fn block_structure_and_certificate() {
    let keys: Vec<SigningKey> = (1..=4).map(key).collect();
    let set = ValidatorSet::new(keys.iter().map(|k| k.identity()).collect()).unwrap();
    let txs = vec![tx(&keys[0], 1), tx(&keys[1], 1)];
    let block = make_block(&keys, "hospital-a", 1, Hash32::ZERO, 5, txs);
    let h = verify_block_structure(&block).unwrap();
    assert_eq!(h, block_hash(&block).unwrap());
    assert_eq!(
        verify_private_block(&block, "hospital-a", &set, &EcdsaVerifier).unwrap(),
        h
    );
    // The block round-trips through its committed batch (what state transfer carries).
    let committed = committed_batch_of(&block).unwrap();
    assert_eq!(
        private_block("hospital-a", &set, &committed, Hash32::ZERO).unwrap(),
        block
    );
    // Built from the items already decoded, it is the same block; a count that does not match
    // the items is refused.
    let decoded = block.transactions.clone();
    assert_eq!(
        private_block_of("hospital-a", &set, &committed, Hash32::ZERO, decoded).unwrap(),
        block
    );
    assert!(private_block_of("hospital-a", &set, &committed, Hash32::ZERO, vec![]).is_err());

    // A block the same validators certified for another chain is not a block of this one.
    let other_chain = make_block(&keys, "hospital-b", 1, Hash32::ZERO, 5, vec![]);
    let e = verify_private_block(&other_chain, "hospital-a", &set, &EcdsaVerifier)
        .unwrap_err()
        .to_string();
    assert!(e.contains("expected \"hospital-a\""), "{e}");

    let mut short = block.clone();
    short.commit.as_mut().unwrap().signatures.pop();
    let e = verify_private_block(&short, "hospital-a", &set, &EcdsaVerifier)
        .unwrap_err()
        .to_string();
    assert!(e.contains("2 valid signatures, 3 required"), "{e}");

    let mut wrong_view = block.clone();
    wrong_view.commit.as_mut().unwrap().view = 1;
    assert!(verify_private_block(&wrong_view, "hospital-a", &set, &EcdsaVerifier).is_err());

    // The creator must be the primary of the view and its pre-prepare signature must verify.
    let mut other_creator = block.clone();
    other_creator.header.as_mut().unwrap().creator = keys[1].identity().as_bytes().to_vec();
    let e = verify_private_block(&other_creator, "hospital-a", &set, &EcdsaVerifier)
        .unwrap_err()
        .to_string();
    assert!(e.contains("batch's proposer"), "{e}");
    let mut bad_sig = block.clone();
    bad_sig.creator_signature = keys[0]
        .sign_digest(&block_hash(&block).unwrap())
        .as_bytes()
        .to_vec();
    let e = verify_private_block(&bad_sig, "hospital-a", &set, &EcdsaVerifier)
        .unwrap_err()
        .to_string();
    assert!(e.contains("proposal_signature"), "{e}");

    let mut dropped_tx = block.clone();
    dropped_tx.transactions.pop();
    assert!(verify_block_structure(&dropped_tx).is_err());

    let mut swapped = block.clone();
    swapped.transactions.swap(0, 1);
    assert!(verify_block_structure(&swapped).is_err());

    // Changing the header's timestamp unbinds the certificate.
    let mut retimed = block;
    retimed.header.as_mut().unwrap().timestamp_ms += 1;
    let e = verify_block_structure(&retimed).unwrap_err().to_string();
    assert!(e.contains("another block"), "{e}");
}

#[test]
fn strict_decoding() {
    let t = tx(&key(1), 1);
    let mut bytes = t.canonical_bytes();
    // An unknown field appended (tag 99, varint 1) decodes in prost but is not canonical.
    bytes.extend_from_slice(&[0x98, 0x06, 0x01]);
    assert!(matches!(
        v1::Transaction::decode_canonical(&bytes),
        Err(ProtoError::NonCanonical { .. })
    ));
    // Oversize input is refused before decoding.
    let big = vec![0u8; limits::TRANSACTION + 1];
    assert!(matches!(
        v1::Transaction::decode_canonical(&big),
        Err(ProtoError::TooLarge { .. })
    ));
    // Truncated input is malformed.
    let good = t.canonical_bytes();
    assert!(matches!(
        v1::Transaction::decode_canonical(&good[..good.len() - 3]),
        Err(ProtoError::Malformed { .. })
    ));
}

#[test]
fn peer_message_versions() {
    let msg = peer_message(v1::peer_message::Body::BlockRequest(v1::BlockRequest {
        from_height: 3,
        count: 10,
    }));
    let back = decode_peer_message(&msg.encode_to_vec()).unwrap();
    assert_eq!(back, msg);
    let mut future = msg;
    future.version = 2;
    let e = decode_peer_message(&future.encode_to_vec()).unwrap_err();
    assert!(matches!(
        e,
        ProtoError::UnknownVersion {
            got: 2,
            supported: 1
        }
    ));
    assert!(e.to_string().contains("version 2"));
}

proptest! {
    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = decode_peer_message(&bytes);
        let _ = v1::Block::decode_canonical(&bytes);
        if let Ok(t) = v1::Transaction::decode_canonical(&bytes) {
            let _ = verify_transaction(t);
        }
    }

    #[test]
    fn canonical_round_trip(nonce in any::<u64>(), ts in any::<u64>(), summary in ".{0,40}") {
        let body = v1::TransactionBody {
            chain_id: "c".into(), signer: vec![1; 33], nonce, timestamp_ms: ts,
            payload: Some(Payload::PatientConfirmation(v1::PatientConfirmation {
                slip_id: summary.clone().into_bytes(), patient_signature: vec![],
            })),
        };
        let bytes = body.canonical_bytes();
        let back = v1::TransactionBody::decode_canonical(&bytes).unwrap();
        prop_assert_eq!(back.digest(), body.digest());
    }
}
