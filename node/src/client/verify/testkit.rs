//! Validators, headers and certificates for the client's verification tests.

use medchain_crypto::hash::domains;
use medchain_crypto::header_vote::header_vote_message;
use medchain_crypto::SigningKey;

use super::*;

pub fn keys() -> Vec<SigningKey> {
    (1..=4u8)
        .map(|i| SigningKey::from_bytes(&[i; 32]).expect("valid scalar"))
        .collect()
}

pub fn anchor(keys: &[SigningKey]) -> Anchor {
    Anchor {
        chain_id: "hospital".into(),
        validators: ValidatorSet::new(keys.iter().map(|k| k.identity()).collect()).unwrap(),
    }
}

pub fn header(chain: &str, height: u64) -> v1::BlockHeader {
    v1::BlockHeader {
        chain_id: chain.into(),
        height,
        state_root: vec![9; 32],
        ..Default::default()
    }
}

/// `header` certified by `signers`, who sign `signed` (by default the header's own hash).
pub fn certified(
    keys: &[SigningKey],
    header: &v1::BlockHeader,
    signers: &[u32],
    signed: Option<Hash32>,
) -> CertifiedHeader {
    let hash = signed.unwrap_or_else(|| header.digest());
    let m = header_vote_message(&header.chain_id, header.height, &hash);
    let cert = v1::HeaderCertificate {
        height: header.height,
        header_hash: header.digest().as_bytes().to_vec(),
        signatures: signers
            .iter()
            .map(|&i| v1::IndexedSignature {
                validator: i,
                signature: keys[i as usize]
                    .sign(domains::HEADER_VOTE, &m)
                    .as_bytes()
                    .to_vec(),
            })
            .collect(),
    };
    CertifiedHeader {
        height: header.height,
        header: hex::encode(header.canonical_bytes()),
        certificate: Some(hex::encode(cert.canonical_bytes())),
    }
}
