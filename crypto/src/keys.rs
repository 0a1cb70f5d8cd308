//! One participant, several keys: signing, record encryption and keyword search.
//!
//! Each scheme gets its own key, so a weakness or a misuse in one scheme (say, a decryption oracle)
//! cannot leak the key of another. All of them are derived from one 32-byte master seed through
//! BLAKE3 in derive-key mode with a per-scheme context, so a participant backs up one secret. The
//! public halves are tied to the identity (the signing key) by a [`KeyBinding`] signed with it.

use std::fmt;

use rand::RngCore;
use umbral_pre::{PublicKey as UmbralPublicKey, SecretKey as UmbralSecretKey, SecretKeyFactory};
use zeroize::Zeroizing;

use crate::hash::{domains, Domain};
use crate::identity::{Identity, Signature, SigningKey};
use crate::search::SearchPublicKey;
use crate::CryptoError;

/// Bytes of a master seed.
pub const SEED_LEN: usize = 32;

/// A participant's master secret, from which every scheme's key is derived.
#[derive(Clone)]
pub struct KeyMaterial {
    seed: Zeroizing<[u8; SEED_LEN]>,
}

impl KeyMaterial {
    /// A fresh master seed from the operating system's CSPRNG.
    pub fn generate() -> Self {
        let mut seed = Zeroizing::new([0u8; SEED_LEN]);
        rand::rngs::OsRng.fill_bytes(seed.as_mut());
        KeyMaterial { seed }
    }

    pub fn from_seed(seed: &[u8]) -> Result<Self, CryptoError> {
        let arr: [u8; SEED_LEN] = seed.try_into().map_err(|_| {
            CryptoError::SecretKey(format!("seed must be {SEED_LEN} bytes, got {}", seed.len()))
        })?;
        Ok(KeyMaterial {
            seed: Zeroizing::new(arr),
        })
    }

    pub fn seed(&self) -> &[u8; SEED_LEN] {
        &self.seed
    }

    fn derive(&self, domain: Domain, counter: u32, len: usize) -> Zeroizing<Vec<u8>> {
        let mut hasher = blake3::Hasher::new_derive_key(domain.context());
        hasher.update(self.seed.as_ref());
        hasher.update(&counter.to_le_bytes());
        let mut out = Zeroizing::new(vec![0u8; len]);
        hasher.finalize_xof().fill(&mut out);
        out
    }

    /// The signing key; its public key is the participant's [`Identity`].
    pub fn signing_key(&self) -> SigningKey {
        // A derived value outside 1..n has probability ~2^-128; try the next counter if it happens.
        (0u32..)
            .find_map(|c| {
                SigningKey::from_bytes(&self.derive(domains::DERIVE_SIGNING_KEY, c, 32)).ok()
            })
            .expect("some counter yields a valid scalar")
    }

    /// The record-encryption (Umbral) secret key.
    pub fn encryption_key(&self) -> EncryptionSecretKey {
        let seed = self.derive(
            domains::DERIVE_ENCRYPTION_KEY,
            0,
            SecretKeyFactory::seed_size(),
        );
        let factory = SecretKeyFactory::from_secure_randomness(&seed)
            .expect("seed has the factory's size by construction");
        EncryptionSecretKey(factory.make_key(b"medchain record encryption"))
    }

    /// The secret seed of the keyword-search scheme (used by cross-hospital search).
    pub fn search_seed(&self) -> Zeroizing<Vec<u8>> {
        self.derive(domains::DERIVE_SEARCH_KEY, 0, 32)
    }

    /// The keyword-search secret key.
    pub fn search_key(&self) -> crate::search::SearchSecretKey {
        crate::search::SearchSecretKey::from_seed(&self.search_seed())
    }

    /// The key that signs re-encryption key fragments, so proxies and grantees can check a
    /// fragment came from the record's owner.
    pub fn delegation_signer(&self) -> umbral_pre::Signer {
        let seed = self.derive(
            domains::DERIVE_DELEGATION_KEY,
            0,
            SecretKeyFactory::seed_size(),
        );
        let factory = SecretKeyFactory::from_secure_randomness(&seed)
            .expect("seed has the factory's size by construction");
        umbral_pre::Signer::new(factory.make_key(b"medchain delegation signing"))
    }

    /// The public keys of every scheme, bound to the identity by a signature.
    pub fn key_binding(&self) -> KeyBinding {
        KeyBinding::sign(
            &self.signing_key(),
            self.encryption_key().public_key(),
            self.search_key().public_key(),
        )
    }
}

impl fmt::Debug for KeyMaterial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyMaterial({})", self.signing_key().identity().short())
    }
}

/// Secret key for decrypting records (and for delegating them by proxy re-encryption).
#[derive(Clone)]
pub struct EncryptionSecretKey(pub(crate) UmbralSecretKey);

impl EncryptionSecretKey {
    pub fn public_key(&self) -> EncryptionPublicKey {
        EncryptionPublicKey(self.0.public_key())
    }

    /// The underlying Umbral key, for proxy re-encryption.
    pub fn umbral(&self) -> &UmbralSecretKey {
        &self.0
    }
}

impl fmt::Debug for EncryptionSecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "EncryptionSecretKey({:?})", self.public_key())
    }
}

/// Public key that records are encrypted to.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct EncryptionPublicKey(pub(crate) UmbralPublicKey);

impl EncryptionPublicKey {
    pub fn to_bytes(&self) -> Vec<u8> {
        self.0.to_compressed_bytes().into_vec()
    }

    pub fn from_bytes(bytes: &[u8]) -> Result<Self, CryptoError> {
        UmbralPublicKey::try_from_compressed_bytes(bytes)
            .map(EncryptionPublicKey)
            .map_err(|e| CryptoError::PublicKey(format!("record-encryption key: {e}")))
    }

    pub fn umbral(&self) -> &UmbralPublicKey {
        &self.0
    }
}

impl fmt::Debug for EncryptionPublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "EncryptionPublicKey({})",
            hex::encode(&self.to_bytes()[..8])
        )
    }
}

/// A statement, signed by an identity, that an encryption key and a keyword-search key belong to
/// it (the participant's public "key card"). An authority registers only a verified binding, and
/// whoever encrypts a record to a patient uses the registered keys, so a forged key cannot be
/// slipped in; the signature also proves the participant holds the identity's secret key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyBinding {
    pub identity: Identity,
    pub encryption_key: EncryptionPublicKey,
    pub search_key: SearchPublicKey,
    pub signature: Signature,
}

impl KeyBinding {
    fn message(
        identity: &Identity,
        encryption_key: &EncryptionPublicKey,
        search_key: &SearchPublicKey,
    ) -> Vec<u8> {
        let mut m = identity.as_bytes().to_vec();
        m.extend_from_slice(&encryption_key.to_bytes());
        m.extend_from_slice(&search_key.to_bytes());
        m
    }

    pub fn sign(
        signer: &SigningKey,
        encryption_key: EncryptionPublicKey,
        search_key: SearchPublicKey,
    ) -> Self {
        let identity = signer.identity();
        let signature = signer.sign(
            domains::KEY_BINDING,
            &Self::message(&identity, &encryption_key, &search_key),
        );
        KeyBinding {
            identity,
            encryption_key,
            search_key,
            signature,
        }
    }

    pub fn verify(&self) -> Result<(), CryptoError> {
        self.identity.verify(
            domains::KEY_BINDING,
            &Self::message(&self.identity, &self.encryption_key, &self.search_key),
            &self.signature,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derivation_is_deterministic_and_keys_differ_per_scheme() {
        let m = KeyMaterial::from_seed(&[42u8; 32]).unwrap();
        let again = KeyMaterial::from_seed(&[42u8; 32]).unwrap();
        assert_eq!(m.signing_key().identity(), again.signing_key().identity());
        assert_eq!(
            m.encryption_key().public_key(),
            again.encryption_key().public_key()
        );
        let sign = m.signing_key().to_bytes();
        let enc = m.encryption_key().0.to_be_bytes();
        assert_ne!(sign.as_slice(), enc.as_secret().as_slice());
        assert_ne!(m.search_seed().as_slice(), sign.as_slice());
        let other = KeyMaterial::from_seed(&[43u8; 32]).unwrap();
        assert_ne!(m.signing_key().identity(), other.signing_key().identity());
    }

    #[test]
    fn key_binding_verifies_and_detects_substitution() {
        let m = KeyMaterial::generate();
        let binding = m.key_binding();
        binding.verify().unwrap();
        let mut forged = binding.clone();
        forged.encryption_key = KeyMaterial::generate().encryption_key().public_key();
        assert!(forged.verify().is_err());
        let mut forged = binding.clone();
        forged.search_key = KeyMaterial::generate().search_key().public_key();
        assert!(forged.verify().is_err());
        let pk = EncryptionPublicKey::from_bytes(&binding.encryption_key.to_bytes()).unwrap();
        assert_eq!(pk, binding.encryption_key);
        assert!(EncryptionPublicKey::from_bytes(&[1, 2, 3]).is_err());
        assert!(KeyMaterial::from_seed(&[0u8; 31]).is_err());
    }
}
