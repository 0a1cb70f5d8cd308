//! Identities and ECDSA signatures.
//!
//! A participant's identity is its compressed secp256k1 signing public key (33 bytes). Its text form
//! is Bech32m with the human-readable prefix `mcid`, so a mistyped identity fails its checksum
//! instead of naming somebody else. Signatures are ECDSA over the 32-byte domain-separated BLAKE3
//! digest of the canonical message bytes, encoded as 64 bytes `r || s`, and only low-S signatures
//! are accepted: a malleated (high-S) twin of a valid signature is rejected, so a signature's bytes
//! identify it uniquely.

use std::fmt;
use std::str::FromStr;

use bech32::{Bech32m, Hrp};
use k256::ecdsa::signature::hazmat::{PrehashSigner, PrehashVerifier};
use k256::ecdsa::{Signature as K256Signature, SigningKey as K256SigningKey, VerifyingKey};
use zeroize::Zeroizing;

use crate::hash::{digest, Domain, Hash32};
use crate::CryptoError;

/// Human-readable prefix of identity text.
pub const IDENTITY_HRP: &str = "mcid";
/// Bytes in a compressed public key.
pub const IDENTITY_LEN: usize = 33;
/// Bytes in an encoded signature.
pub const SIGNATURE_LEN: usize = 64;

/// A participant's public identity: a validated compressed secp256k1 public key.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Identity {
    bytes: [u8; IDENTITY_LEN],
}

impl Identity {
    /// Parses and validates a compressed public key (the point must be on the curve).
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, CryptoError> {
        let arr: [u8; IDENTITY_LEN] = bytes
            .try_into()
            .map_err(|_| CryptoError::PublicKey(format!("got {} bytes", bytes.len())))?;
        VerifyingKey::from_sec1_bytes(&arr)
            .map_err(|_| CryptoError::PublicKey("not a point on secp256k1".into()))?;
        Ok(Identity { bytes: arr })
    }

    pub fn as_bytes(&self) -> &[u8; IDENTITY_LEN] {
        &self.bytes
    }

    fn verifying_key(&self) -> VerifyingKey {
        VerifyingKey::from_sec1_bytes(&self.bytes).expect("validated when the identity was built")
    }

    /// Verifies `signature` over `message` in `domain`.
    pub fn verify(
        &self,
        domain: Domain,
        message: &[u8],
        signature: &Signature,
    ) -> Result<(), CryptoError> {
        self.verify_digest(&digest(domain, message), signature)
    }

    /// Verifies a signature over an already domain-separated digest.
    pub fn verify_digest(&self, digest: &Hash32, signature: &Signature) -> Result<(), CryptoError> {
        self.verify_prehash(digest.as_bytes(), signature)
    }

    /// Verifies a signature over any 32-byte prehash. Exposed for conformance tests against
    /// external vectors (which hash with SHA-256); medchain itself always goes through
    /// [`Identity::verify`].
    pub fn verify_prehash(&self, prehash: &[u8], signature: &Signature) -> Result<(), CryptoError> {
        let sig = signature.to_k256()?;
        self.verifying_key()
            .verify_prehash(prehash, &sig)
            .map_err(|_| CryptoError::BadSignature)
    }

    /// A short form for logs: the first 12 characters after the prefix.
    pub fn short(&self) -> String {
        let text = self.to_string();
        let start = IDENTITY_HRP.len() + 1;
        text[start..start + 12].to_string()
    }
}

impl fmt::Display for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let hrp = Hrp::parse(IDENTITY_HRP).expect("constant prefix is valid");
        let text = bech32::encode::<Bech32m>(hrp, &self.bytes).map_err(|_| fmt::Error)?;
        f.write_str(&text)
    }
}

impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Identity({})", self.short())
    }
}

impl FromStr for Identity {
    type Err = CryptoError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let err = |reason: &str| CryptoError::IdentityText {
            text: text.to_string(),
            reason: reason.to_string(),
        };
        let (hrp, data) = bech32::decode(text.trim())
            .map_err(|e| err(&format!("not valid Bech32m ({e}); check for a typo")))?;
        if hrp.as_str() != IDENTITY_HRP {
            return Err(err(&format!(
                "prefix is {:?}, expected {IDENTITY_HRP:?}",
                hrp.as_str()
            )));
        }
        Identity::from_bytes(&data).map_err(|e| err(&e.to_string()))
    }
}

impl serde::Serialize for Identity {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> serde::Deserialize<'de> for Identity {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// A 64-byte ECDSA signature `r || s`, low-S by construction when made by [`SigningKey`].
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Signature([u8; SIGNATURE_LEN]);

impl Signature {
    /// Parses a signature's bytes. The low-S rule and the curve checks are applied on
    /// verification, so that every rejection happens in one place.
    pub fn from_slice(bytes: &[u8]) -> Result<Self, CryptoError> {
        let arr: [u8; SIGNATURE_LEN] = bytes
            .try_into()
            .map_err(|_| CryptoError::SignatureLength(bytes.len()))?;
        Ok(Signature(arr))
    }

    pub fn as_bytes(&self) -> &[u8; SIGNATURE_LEN] {
        &self.0
    }

    fn to_k256(self) -> Result<K256Signature, CryptoError> {
        let sig = K256Signature::from_slice(&self.0).map_err(|_| CryptoError::BadSignature)?;
        if sig.normalize_s().is_some() {
            return Err(CryptoError::HighS);
        }
        Ok(sig)
    }
}

impl fmt::Debug for Signature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Signature({}..)", hex::encode(&self.0[..8]))
    }
}

/// A secret signing key. Signing is deterministic (RFC 6979), so no randomness is needed and a
/// replayed signing request yields the same bytes.
#[derive(Clone)]
pub struct SigningKey {
    inner: K256SigningKey,
}

impl SigningKey {
    /// Builds a key from a 32-byte big-endian scalar (must be in `1..n`).
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, CryptoError> {
        let inner = K256SigningKey::from_slice(bytes)
            .map_err(|_| CryptoError::SecretKey("not a scalar in 1..n".into()))?;
        Ok(SigningKey { inner })
    }

    /// The secret scalar, wiped from memory when dropped.
    pub fn to_bytes(&self) -> Zeroizing<[u8; 32]> {
        Zeroizing::new(self.inner.to_bytes().into())
    }

    pub fn identity(&self) -> Identity {
        let point = self.inner.verifying_key().to_encoded_point(true);
        Identity::from_bytes(point.as_bytes()).expect("a key's own public point is valid")
    }

    /// Signs `message` in `domain`: the single signing path of medchain.
    pub fn sign(&self, domain: Domain, message: &[u8]) -> Signature {
        self.sign_digest(&digest(domain, message))
    }

    /// Signs an already domain-separated digest.
    pub fn sign_digest(&self, digest: &Hash32) -> Signature {
        self.sign_prehash(digest.as_bytes())
    }

    /// Signs any 32-byte prehash; exposed for conformance tests against external vectors.
    pub fn sign_prehash(&self, prehash: &[u8; 32]) -> Signature {
        let sig: K256Signature = self
            .inner
            .sign_prehash(prehash)
            .expect("signing a 32-byte prehash cannot fail");
        let sig = sig.normalize_s().unwrap_or(sig);
        Signature(sig.to_bytes().into())
    }
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SigningKey({})", self.identity().short())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hash::domains;

    fn key(n: u8) -> SigningKey {
        let mut b = [0u8; 32];
        b[31] = n;
        SigningKey::from_bytes(&b).unwrap()
    }

    #[test]
    fn sign_verify_round_trip_and_domain_binding() {
        let k = key(7);
        let id = k.identity();
        let sig = k.sign(domains::TRANSACTION, b"hello");
        id.verify(domains::TRANSACTION, b"hello", &sig).unwrap();
        assert!(matches!(
            id.verify(domains::BLOCK_HEADER, b"hello", &sig),
            Err(CryptoError::BadSignature)
        ));
        assert!(id.verify(domains::TRANSACTION, b"hellp", &sig).is_err());
        assert!(key(8)
            .identity()
            .verify(domains::TRANSACTION, b"hello", &sig)
            .is_err());
    }

    #[test]
    fn high_s_twin_is_rejected() {
        let k = key(9);
        let sig = k.sign(domains::TRANSACTION, b"m");
        let parsed = K256Signature::from_slice(sig.as_bytes()).unwrap();
        // s' = n - s verifies mathematically but is the malleated twin.
        let (r, s) = (parsed.r(), parsed.s());
        let high = K256Signature::from_scalars(r.to_bytes(), (-*s.as_ref()).to_bytes()).unwrap();
        let twin = Signature::from_slice(&high.to_bytes()).unwrap();
        assert!(matches!(
            k.identity().verify(domains::TRANSACTION, b"m", &twin),
            Err(CryptoError::HighS)
        ));
    }

    #[test]
    fn identity_text_round_trips_and_checksum_catches_typos() {
        let id = key(3).identity();
        let text = id.to_string();
        assert!(text.starts_with("mcid1"));
        assert_eq!(text.parse::<Identity>().unwrap(), id);
        let mut typo: Vec<char> = text.chars().collect();
        let i = typo.len() - 3;
        typo[i] = if typo[i] == 'q' { 'p' } else { 'q' };
        let typo: String = typo.into_iter().collect();
        assert!(typo.parse::<Identity>().is_err());
        let err = "xyz1qqqq".parse::<Identity>().unwrap_err().to_string();
        assert!(err.contains("invalid identity"), "{err}");
    }

    #[test]
    fn malformed_inputs_are_rejected() {
        assert!(matches!(
            Signature::from_slice(&[0u8; 63]),
            Err(CryptoError::SignatureLength(63))
        ));
        assert!(Identity::from_bytes(&[2u8; 32]).is_err());
        let mut not_on_curve = [0u8; 33];
        not_on_curve[0] = 2;
        not_on_curve[1..].copy_from_slice(&[0xff; 32]);
        assert!(Identity::from_bytes(&not_on_curve).is_err());
        assert!(SigningKey::from_bytes(&[0u8; 32]).is_err());
        let zero_sig = Signature::from_slice(&[0u8; 64]).unwrap();
        assert!(key(1)
            .identity()
            .verify(domains::TRANSACTION, b"m", &zero_sig)
            .is_err());
    }
}
