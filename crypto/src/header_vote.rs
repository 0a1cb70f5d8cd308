//! Header votes and header certificates: the validators' signatures over the header of a block
//! they have executed.
//!
//! The PBFT commit certificate covers the batch, which is agreed before it is executed, so it
//! cannot vouch for what executing it gave (the state root in the header). After its block's
//! atomic write each validator signs the header's hash; 2f + 1 matching signatures certify the
//! header, and with it the state root and the transactions root, to anyone who knows only the
//! genesis validator set. A light client needs nothing else to trust a header.

use crate::hash::{domains, Hash32};
use crate::identity::Signature;
use crate::validators::{Certificate, CertificateError, ValidatorIndex, ValidatorSet, Verifier};

/// The bytes a validator signs for block `height` of chain `chain_id` with header hash `hash`
/// (domain [`domains::HEADER_VOTE`]). The chain id is length-prefixed, so no two (chain, height)
/// pairs share a message, and a vote of one chain is worthless on another.
pub fn header_vote_message(chain_id: &str, height: u64, hash: &Hash32) -> Vec<u8> {
    let mut m = Vec::with_capacity(4 + chain_id.len() + 8 + 32);
    m.extend_from_slice(&(chain_id.len() as u32).to_be_bytes());
    m.extend_from_slice(chain_id.as_bytes());
    m.extend_from_slice(&height.to_be_bytes());
    m.extend_from_slice(hash.as_bytes());
    m
}

/// Checks one validator's vote: `validator` is a member of `set` and signed this header.
pub fn verify_header_vote(
    set: &ValidatorSet,
    chain_id: &str,
    height: u64,
    hash: &Hash32,
    validator: ValidatorIndex,
    signature: &Signature,
    verifier: &impl Verifier,
) -> Result<(), CertificateError> {
    let member = set.get(validator).ok_or(CertificateError::UnknownSigner {
        index: validator,
        size: set.len(),
    })?;
    verifier
        .verify(
            member,
            domains::HEADER_VOTE,
            &header_vote_message(chain_id, height, hash),
            signature,
        )
        .map_err(|_| CertificateError::BadSignature { index: validator })
}

/// Checks a header certificate: at least a quorum (2f + 1) of distinct members of `set` signed
/// this header, and every signature present verifies.
pub fn verify_header_certificate(
    set: &ValidatorSet,
    chain_id: &str,
    height: u64,
    hash: &Hash32,
    certificate: &Certificate,
    verifier: &impl Verifier,
) -> Result<(), CertificateError> {
    certificate.verify(
        set,
        domains::HEADER_VOTE,
        &header_vote_message(chain_id, height, hash),
        set.quorum(),
        verifier,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::SigningKey;
    use crate::validators::EcdsaVerifier;

    fn keys(n: u8) -> Vec<SigningKey> {
        (1..=n)
            .map(|i| SigningKey::from_bytes(&[i; 32]).expect("valid scalar"))
            .collect()
    }

    fn certificate(
        keys: &[SigningKey],
        signers: &[u32],
        chain: &str,
        h: u64,
        hash: &Hash32,
    ) -> Certificate {
        Certificate {
            signatures: signers
                .iter()
                .map(|&i| {
                    let m = header_vote_message(chain, h, hash);
                    (i, keys[i as usize].sign(domains::HEADER_VOTE, &m))
                })
                .collect(),
        }
    }

    #[test]
    fn a_quorum_certifies_a_header_and_nothing_else() {
        let keys = keys(4);
        let set = ValidatorSet::new(keys.iter().map(|k| k.identity()).collect()).unwrap();
        let hash = Hash32([7; 32]);
        let cert = certificate(&keys, &[0, 2, 3], "h", 5, &hash);
        assert_eq!(
            verify_header_certificate(&set, "h", 5, &hash, &cert, &EcdsaVerifier),
            Ok(())
        );
        // Another height, another hash, another chain: the same signatures certify none of them.
        assert!(verify_header_certificate(&set, "h", 6, &hash, &cert, &EcdsaVerifier).is_err());
        let other = Hash32([8; 32]);
        assert!(verify_header_certificate(&set, "h", 5, &other, &cert, &EcdsaVerifier).is_err());
        assert!(verify_header_certificate(&set, "g", 5, &hash, &cert, &EcdsaVerifier).is_err());
        // Two signatures of four are short of 2f + 1.
        let short = certificate(&keys, &[0, 2], "h", 5, &hash);
        assert_eq!(
            verify_header_certificate(&set, "h", 5, &hash, &short, &EcdsaVerifier),
            Err(CertificateError::TooFewSignatures { have: 2, need: 3 })
        );
        let vote = &cert.signatures[0];
        assert!(verify_header_vote(&set, "h", 5, &hash, vote.0, &vote.1, &EcdsaVerifier).is_ok());
        assert!(verify_header_vote(&set, "h", 5, &hash, 1, &vote.1, &EcdsaVerifier).is_err());
    }

    #[test]
    fn chain_ids_cannot_be_shifted_into_the_height() {
        let a = header_vote_message("ab", 1, &Hash32([0; 32]));
        let b = header_vote_message("a", 1, &Hash32([0; 32]));
        assert_ne!(a, b);
    }
}
