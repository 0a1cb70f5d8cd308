//! Record encryption to a patient.
//!
//! A record is encrypted with Umbral (umbral-pre): a capsule encapsulates a fresh symmetric key to the
//! patient's encryption key, and the record itself is sealed with ChaCha20-Poly1305 under that key,
//! with the capsule as associated data. Any flipped byte in the capsule or the ciphertext makes
//! decryption fail. The capsule is what proxy re-encryption later transforms for a grantee, without
//! the proxy ever seeing the key or the record.
//!
//! Wire form of an [`EncryptedRecord`]: `version (1 byte) || capsule length (u32 LE) || capsule ||
//! ciphertext`.

use umbral_pre::{decrypt_original, encrypt, Capsule, DefaultDeserialize, DefaultSerialize};

use crate::hash::{digest, domains, Hash32};
use crate::keys::{EncryptionPublicKey, EncryptionSecretKey};
use crate::CryptoError;

const FORMAT_VERSION: u8 = 1;
/// Largest capsule accepted when decoding (a real one is under 100 bytes).
const MAX_CAPSULE_LEN: usize = 1024;
/// Bytes every ciphertext has besides its plaintext: umbral's DEM prepends a 24-byte
/// XChaCha20 nonce and appends a 16-byte Poly1305 tag.
const DEM_OVERHEAD: usize = 24 + 16;

/// The content hash `H(M)` recorded on chain for a plaintext record.
pub fn record_hash(plaintext: &[u8]) -> Hash32 {
    digest(domains::RECORD_CONTENT, plaintext)
}

/// A record sealed to one recipient.
#[derive(Clone, Debug)]
pub struct EncryptedRecord {
    pub capsule: Capsule,
    pub ciphertext: Vec<u8>,
}

impl EncryptedRecord {
    pub fn to_bytes(&self) -> Vec<u8> {
        let capsule = self
            .capsule
            .to_bytes()
            .expect("serialising a valid capsule cannot fail");
        let mut out = Vec::with_capacity(5 + capsule.len() + self.ciphertext.len());
        out.push(FORMAT_VERSION);
        out.extend_from_slice(&(capsule.len() as u32).to_le_bytes());
        out.extend_from_slice(&capsule);
        out.extend_from_slice(&self.ciphertext);
        out
    }

    /// Splits the wire form into (capsule bytes, ciphertext), checking the version, the capsule
    /// length and that a ciphertext with its nonce and tag follows.
    fn split(bytes: &[u8]) -> Result<(&[u8], &[u8]), CryptoError> {
        let malformed = |m: &str| CryptoError::MalformedRecord(m.to_string());
        let (&version, rest) = bytes.split_first().ok_or_else(|| malformed("empty"))?;
        if version != FORMAT_VERSION {
            return Err(malformed(&format!(
                "format version {version}, this build reads version {FORMAT_VERSION}"
            )));
        }
        if rest.len() < 4 {
            return Err(malformed("truncated before the capsule length"));
        }
        let (len, rest) = rest.split_at(4);
        let len = u32::from_le_bytes(len.try_into().expect("4 bytes")) as usize;
        if len == 0 || len > MAX_CAPSULE_LEN || len + DEM_OVERHEAD > rest.len() {
            return Err(malformed(
                "capsule length out of range (truncated or corrupt)",
            ));
        }
        Ok(rest.split_at(len))
    }

    /// Checks the wire form without decoding the capsule's curve points. Nodes use it on every
    /// slip's encrypted address: they cannot decrypt it anyway, and a full parse costs about a
    /// signature verification.
    pub fn check_format(bytes: &[u8]) -> Result<(), CryptoError> {
        Self::split(bytes).map(|_| ())
    }

    pub fn from_bytes(bytes: &[u8]) -> Result<Self, CryptoError> {
        let (capsule, ciphertext) = Self::split(bytes)?;
        let capsule = Capsule::from_bytes(capsule)
            .map_err(|e| CryptoError::MalformedRecord(format!("capsule: {e}")))?;
        Ok(EncryptedRecord {
            capsule,
            ciphertext: ciphertext.to_vec(),
        })
    }
}

/// Encrypts `plaintext` to `recipient`.
pub fn encrypt_record(
    recipient: &EncryptionPublicKey,
    plaintext: &[u8],
) -> Result<EncryptedRecord, CryptoError> {
    let (capsule, ciphertext) =
        encrypt(recipient.umbral(), plaintext).map_err(|e| CryptoError::Encrypt(e.to_string()))?;
    Ok(EncryptedRecord {
        capsule,
        ciphertext: ciphertext.into_vec(),
    })
}

/// Decrypts a record sealed to the holder of `key`.
pub fn decrypt_record(
    key: &EncryptionSecretKey,
    record: &EncryptedRecord,
) -> Result<Vec<u8>, CryptoError> {
    decrypt_original(&key.0, &record.capsule, &record.ciphertext)
        .map(|b| b.into_vec())
        .map_err(|_| CryptoError::Decrypt)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::KeyMaterial;
    use proptest::prelude::*;

    #[test]
    fn round_trip_and_wrong_key() {
        let patient = KeyMaterial::generate().encryption_key();
        let other = KeyMaterial::generate().encryption_key();
        let m = br#"{"resourceType":"Observation"}"#;
        let sealed = encrypt_record(&patient.public_key(), m).unwrap();
        let bytes = sealed.to_bytes();
        let parsed = EncryptedRecord::from_bytes(&bytes).unwrap();
        assert_eq!(decrypt_record(&patient, &parsed).unwrap(), m);
        assert!(matches!(
            decrypt_record(&other, &parsed),
            Err(CryptoError::Decrypt)
        ));
    }

    #[test]
    fn every_flipped_byte_is_detected() {
        let patient = KeyMaterial::generate().encryption_key();
        let bytes = encrypt_record(&patient.public_key(), b"blood pressure 120/80")
            .unwrap()
            .to_bytes();
        for i in 0..bytes.len() {
            let mut tampered = bytes.clone();
            tampered[i] ^= 0x01;
            let opened =
                EncryptedRecord::from_bytes(&tampered).and_then(|r| decrypt_record(&patient, &r));
            assert!(opened.is_err(), "flip at byte {i} went unnoticed");
        }
    }

    #[test]
    fn format_check_accepts_real_records_and_rejects_broken_framing() {
        let patient = KeyMaterial::generate().encryption_key();
        let bytes = encrypt_record(&patient.public_key(), b"address")
            .unwrap()
            .to_bytes();
        EncryptedRecord::check_format(&bytes).unwrap();
        assert!(EncryptedRecord::check_format(&[]).is_err());
        assert!(EncryptedRecord::check_format(&[2, 0, 0, 0, 0]).is_err());
        assert!(EncryptedRecord::check_format(&bytes[..20]).is_err());
        let mut huge = bytes.clone();
        huge[1..5].copy_from_slice(&5_000u32.to_le_bytes());
        assert!(EncryptedRecord::check_format(&huge).is_err());
    }

    #[test]
    fn truncated_input_is_rejected() {
        let patient = KeyMaterial::generate().encryption_key();
        let bytes = encrypt_record(&patient.public_key(), b"x")
            .unwrap()
            .to_bytes();
        for cut in 0..bytes.len() {
            let opened = EncryptedRecord::from_bytes(&bytes[..cut])
                .and_then(|r| decrypt_record(&patient, &r));
            assert!(opened.is_err(), "truncation to {cut} bytes went unnoticed");
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(32))]
        #[test]
        fn round_trip_any_bytes(m in proptest::collection::vec(any::<u8>(), 0..4096)) {
            let patient = KeyMaterial::from_seed(&[5u8; 32]).unwrap().encryption_key();
            let sealed = encrypt_record(&patient.public_key(), &m).unwrap();
            let parsed = EncryptedRecord::from_bytes(&sealed.to_bytes()).unwrap();
            prop_assert_eq!(decrypt_record(&patient, &parsed).unwrap(), m);
        }
    }
}
