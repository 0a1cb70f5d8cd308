//! Public-key encryption with keyword search (PEKS; Boneh, Di Crescenzo, Ostrovsky and Persiano,
//! 2004) on BLS12-381.
//!
//! A doctor encrypts a record's keywords to the patient's search key; the ciphertexts go on chain
//! as the slip's `C_w`. Only the patient can make a trapdoor for a keyword, and a trapdoor lets a
//! proxy find the slips whose keywords match without learning the keyword or anything about the
//! slips that do not match (MBDS Algorithm 3). Ciphertexts are randomised, so equal keywords do
//! not look equal on chain.
//!
//! Scheme (`e` the pairing, `g2` the G2 generator, `H1` hash to G1, `H2` a domain-separated
//! BLAKE3 of the pairing value): secret `α`, public `g2^α`; `PEKS(pk, w) = (g2^r,
//! H2(e(H1(w), pk^r)))`; trapdoor `T_w = H1(w)^α`; test `H2(e(T_w, A)) == B`.

use std::fmt;

use blstrs::{pairing, Compress, G1Affine, G1Projective, G2Affine, G2Projective, Gt, Scalar};
use ff::Field;
use group::prime::PrimeCurveAffine;
use group::{Curve, Group};
use rand::SeedableRng;
use zeroize::Zeroizing;

use crate::hash::{digest, domains};
use crate::CryptoError;

/// Hash-to-curve domain separation tag (RFC 9380 suite for G1).
const KEYWORD_DST: &[u8] = b"MEDCHAIN-V1-PEKS-KEYWORD_BLS12381G1_XMD:SHA-256_SSWU_RO_";
/// Longest keyword accepted, in bytes after normalisation.
pub const MAX_KEYWORD_LEN: usize = 256;
/// Bytes of a [`SearchPublicKey`] (compressed G2).
pub const SEARCH_PUBLIC_KEY_LEN: usize = 96;
/// Bytes of a [`KeywordCiphertext`].
pub const KEYWORD_CIPHERTEXT_LEN: usize = 96 + 32;
/// Bytes of a [`Trapdoor`] (compressed G1).
pub const TRAPDOOR_LEN: usize = 48;

/// The one spelling of a keyword that is encrypted and searched: trimmed, lower case. Codes such
/// as FHIR/LOINC/SNOMED ones are unaffected; free text matches case-insensitively.
pub fn normalize_keyword(keyword: &str) -> Result<String, CryptoError> {
    let w = keyword.trim().to_lowercase();
    if w.is_empty() {
        return Err(CryptoError::Keyword("a keyword must not be empty".into()));
    }
    if w.len() > MAX_KEYWORD_LEN {
        return Err(CryptoError::Keyword(format!(
            "keyword of {} bytes; the limit is {MAX_KEYWORD_LEN}",
            w.len()
        )));
    }
    Ok(w)
}

fn h1(keyword: &str) -> Result<G1Projective, CryptoError> {
    let w = normalize_keyword(keyword)?;
    Ok(G1Projective::hash_to_curve(w.as_bytes(), KEYWORD_DST, &[]))
}

fn h2(t: Gt) -> [u8; 32] {
    let mut bytes = Vec::with_capacity(288);
    t.write_compressed(&mut bytes)
        .expect("writing to a Vec cannot fail");
    digest(domains::KEYWORD_TAG, &bytes).0
}

/// A participant's keyword-search secret.
#[derive(Clone)]
pub struct SearchSecretKey(Scalar);

impl SearchSecretKey {
    /// Derives the key from the participant's search seed (see `KeyMaterial::search_seed`).
    pub fn from_seed(seed: &[u8]) -> Self {
        let mut s = Zeroizing::new([0u8; 32]);
        s.copy_from_slice(digest(domains::DERIVE_SEARCH_KEY, seed).as_bytes());
        let mut rng = rand_chacha::ChaCha20Rng::from_seed(*s);
        // Zero has probability 2^-255; draw again if it ever happens.
        loop {
            let a = Scalar::random(&mut rng);
            if !bool::from(a.is_zero()) {
                return SearchSecretKey(a);
            }
        }
    }

    pub fn public_key(&self) -> SearchPublicKey {
        SearchPublicKey((G2Projective::generator() * self.0).to_affine())
    }

    /// The trapdoor that finds `keyword` in ciphertexts made for this key.
    pub fn trapdoor(&self, keyword: &str) -> Result<Trapdoor, CryptoError> {
        Ok(Trapdoor((h1(keyword)? * self.0).to_affine()))
    }
}

impl fmt::Debug for SearchSecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SearchSecretKey(..)")
    }
}

/// A participant's keyword-search public key, registered on chain.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct SearchPublicKey(G2Affine);

impl SearchPublicKey {
    pub fn to_bytes(&self) -> [u8; SEARCH_PUBLIC_KEY_LEN] {
        self.0.to_compressed()
    }

    /// Parses and checks a key (on the curve, in the subgroup, not the identity).
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, CryptoError> {
        let arr: [u8; SEARCH_PUBLIC_KEY_LEN] = bytes.try_into().map_err(|_| {
            CryptoError::Keyword(format!(
                "a search key is {SEARCH_PUBLIC_KEY_LEN} bytes, got {}",
                bytes.len()
            ))
        })?;
        let p: Option<G2Affine> = G2Affine::from_compressed(&arr).into();
        match p {
            Some(p) if !bool::from(p.is_identity()) => Ok(SearchPublicKey(p)),
            _ => Err(CryptoError::Keyword(
                "the search key is not a valid G2 point".into(),
            )),
        }
    }

    /// Encrypts `keyword` so that only the holder of the matching secret can search for it.
    pub fn encrypt_keyword(&self, keyword: &str) -> Result<KeywordCiphertext, CryptoError> {
        let h = h1(keyword)?.to_affine();
        let r = loop {
            let r = Scalar::random(&mut rand::rngs::OsRng);
            if !bool::from(r.is_zero()) {
                break r;
            }
        };
        let a = (G2Projective::generator() * r).to_affine();
        let pk_r = (G2Projective::from(self.0) * r).to_affine();
        Ok(KeywordCiphertext {
            a,
            b: h2(pairing(&h, &pk_r)),
        })
    }
}

impl fmt::Debug for SearchPublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SearchPublicKey({})", hex::encode(&self.to_bytes()[..8]))
    }
}

/// An encrypted keyword (`C_w` entry of a slip).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct KeywordCiphertext {
    a: G2Affine,
    b: [u8; 32],
}

impl KeywordCiphertext {
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = self.a.to_compressed().to_vec();
        out.extend_from_slice(&self.b);
        out
    }

    pub fn from_bytes(bytes: &[u8]) -> Result<Self, CryptoError> {
        if bytes.len() != KEYWORD_CIPHERTEXT_LEN {
            return Err(CryptoError::Keyword(format!(
                "an encrypted keyword is {KEYWORD_CIPHERTEXT_LEN} bytes, got {}",
                bytes.len()
            )));
        }
        let a: [u8; 96] = bytes[..96].try_into().expect("length checked");
        let a: Option<G2Affine> = G2Affine::from_compressed(&a).into();
        let a = a.ok_or_else(|| {
            CryptoError::Keyword("encrypted keyword: not a valid G2 point".into())
        })?;
        Ok(KeywordCiphertext {
            a,
            b: bytes[96..].try_into().expect("length checked"),
        })
    }
}

/// Lets its holder test ciphertexts for one keyword of one participant.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Trapdoor(G1Affine);

impl Trapdoor {
    pub fn to_bytes(&self) -> [u8; TRAPDOOR_LEN] {
        self.0.to_compressed()
    }

    pub fn from_bytes(bytes: &[u8]) -> Result<Self, CryptoError> {
        let arr: [u8; TRAPDOOR_LEN] = bytes.try_into().map_err(|_| {
            CryptoError::Keyword(format!(
                "a trapdoor is {TRAPDOOR_LEN} bytes, got {}",
                bytes.len()
            ))
        })?;
        let p: Option<G1Affine> = G1Affine::from_compressed(&arr).into();
        p.map(Trapdoor)
            .ok_or_else(|| CryptoError::Keyword("the trapdoor is not a valid G1 point".into()))
    }

    /// Whether `ciphertext` encrypts this trapdoor's keyword (one pairing).
    pub fn matches(&self, ciphertext: &KeywordCiphertext) -> bool {
        let tag = h2(pairing(&self.0, &ciphertext.a));
        // Compare blinded values so the comparison's timing says nothing about the tag.
        digest(domains::KEYWORD_TAG_BLIND, &tag)
            == digest(domains::KEYWORD_TAG_BLIND, &ciphertext.b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(b: u8) -> SearchSecretKey {
        SearchSecretKey::from_seed(&[b; 32])
    }

    #[test]
    fn trapdoor_finds_its_keyword_only() {
        let sk = key(1);
        let pk = SearchPublicKey::from_bytes(&sk.public_key().to_bytes()).unwrap();
        let ct = pk.encrypt_keyword("Hypertension").unwrap();
        let ct = KeywordCiphertext::from_bytes(&ct.to_bytes()).unwrap();
        assert!(sk.trapdoor(" hypertension ").unwrap().matches(&ct));
        assert!(!sk.trapdoor("diabetes").unwrap().matches(&ct));
        // Another participant's trapdoor for the same word does not match.
        assert!(!key(2).trapdoor("hypertension").unwrap().matches(&ct));
    }

    #[test]
    fn ciphertexts_are_randomised_and_keys_deterministic() {
        let pk = key(1).public_key();
        let a = pk.encrypt_keyword("asthma").unwrap();
        let b = pk.encrypt_keyword("asthma").unwrap();
        assert_ne!(a.to_bytes(), b.to_bytes());
        assert_eq!(key(1).public_key(), pk);
        assert_ne!(key(2).public_key(), pk);
    }

    #[test]
    fn malformed_inputs_are_refused_with_reasons() {
        assert!(normalize_keyword("   ").is_err());
        assert!(normalize_keyword(&"x".repeat(MAX_KEYWORD_LEN + 1)).is_err());
        assert!(SearchPublicKey::from_bytes(&[0u8; 10]).is_err());
        assert!(SearchPublicKey::from_bytes(&[0u8; 96]).is_err());
        assert!(KeywordCiphertext::from_bytes(&[1u8; KEYWORD_CIPHERTEXT_LEN]).is_err());
        assert!(Trapdoor::from_bytes(&[1u8; 47]).is_err());
        let ct = key(1).public_key().encrypt_keyword("x").unwrap();
        let mut bytes = ct.to_bytes();
        bytes[100] ^= 1;
        let tampered = KeywordCiphertext::from_bytes(&bytes).unwrap();
        assert!(!key(1).trapdoor("x").unwrap().matches(&tampered));
    }
}
