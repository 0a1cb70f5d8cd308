//! Proxy re-encryption of records for grantees (Umbral threshold PRE, umbral-pre).
//!
//! A patient who grants access splits a re-encryption key for the grantee into `shares` key
//! fragments, any `threshold` of which suffice, and gives one to each proxy. A proxy turns a
//! record's capsule into a capsule fragment for the grantee; the grantee combines `threshold`
//! fragments with its own secret key to open the record. No proxy ever sees the record key, and
//! fewer than `threshold` proxies together learn nothing (DESIGN.md section 8: no single proxy can
//! leak a record). Every fragment is signed by the patient's delegation key and names both
//! parties' keys, so a proxy refuses a fragment for the wrong pair and a grantee refuses a
//! capsule fragment a proxy made up.

use umbral_pre::{
    decrypt_reencrypted, generate_kfrags, reencrypt, CapsuleFrag, DefaultDeserialize,
    DefaultSerialize, KeyFrag, PublicKey as UmbralPublicKey, VerifiedCapsuleFrag, VerifiedKeyFrag,
};

use crate::keys::{EncryptionPublicKey, EncryptionSecretKey, KeyMaterial};
use crate::record::EncryptedRecord;
use crate::CryptoError;

/// Most fragments one grant may be split into.
pub const MAX_SHARES: usize = 32;

fn err(m: impl Into<String>) -> CryptoError {
    CryptoError::Delegation(m.into())
}

/// The public key that checks an owner's fragments (33 bytes).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DelegationVerifyingKey(UmbralPublicKey);

impl DelegationVerifyingKey {
    pub fn of(owner: &KeyMaterial) -> Self {
        DelegationVerifyingKey(owner.delegation_signer().verifying_key())
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        self.0.to_compressed_bytes().into_vec()
    }

    pub fn from_bytes(bytes: &[u8]) -> Result<Self, CryptoError> {
        UmbralPublicKey::try_from_compressed_bytes(bytes)
            .map(DelegationVerifyingKey)
            .map_err(|e| err(format!("delegation verifying key: {e}")))
    }
}

/// Splits a re-encryption key from `owner` to `grantee` into `shares` fragments, `threshold` of
/// which re-encrypt. Returns each fragment's bytes, one per proxy.
pub fn delegate(
    owner: &KeyMaterial,
    grantee: &EncryptionPublicKey,
    threshold: usize,
    shares: usize,
) -> Result<Vec<Vec<u8>>, CryptoError> {
    if threshold == 0 || threshold > shares || shares > MAX_SHARES {
        return Err(err(format!(
            "threshold {threshold} of {shares} shares is invalid (need 1 <= threshold <= shares <= {MAX_SHARES})"
        )));
    }
    let kfrags = generate_kfrags(
        owner.encryption_key().umbral(),
        grantee.umbral(),
        &owner.delegation_signer(),
        threshold,
        shares,
        true,
        true,
    );
    Ok(kfrags
        .iter()
        .map(|k| {
            k.clone()
                .unverify()
                .to_bytes()
                .expect("serialising a valid fragment cannot fail")
                .into_vec()
        })
        .collect())
}

/// A key fragment a proxy checked: signed by the owner's delegation key, for this owner and
/// grantee.
#[derive(Clone, Debug)]
pub struct CheckedFragment(VerifiedKeyFrag);

/// Checks a fragment before a proxy keeps it.
pub fn check_fragment(
    bytes: &[u8],
    verifying_key: &DelegationVerifyingKey,
    owner: &EncryptionPublicKey,
    grantee: &EncryptionPublicKey,
) -> Result<CheckedFragment, CryptoError> {
    let kfrag = KeyFrag::from_bytes(bytes).map_err(|e| err(format!("key fragment: {e}")))?;
    kfrag
        .verify(
            &verifying_key.0,
            Some(owner.umbral()),
            Some(grantee.umbral()),
        )
        .map(CheckedFragment)
        .map_err(|(e, _)| {
            err(format!(
                "key fragment does not verify for this owner and grantee: {e}"
            ))
        })
}

/// A proxy's work: a capsule fragment of `record` for the fragment's grantee.
pub fn reencrypt_for_grantee(record: &EncryptedRecord, fragment: &CheckedFragment) -> Vec<u8> {
    reencrypt(&record.capsule, fragment.0.clone())
        .unverify()
        .to_bytes()
        .expect("serialising a valid capsule fragment cannot fail")
        .into_vec()
}

/// The grantee's side: checks each capsule fragment and opens the record with `threshold` of
/// them.
pub fn decrypt_as_grantee(
    grantee: &EncryptionSecretKey,
    owner: &EncryptionPublicKey,
    verifying_key: &DelegationVerifyingKey,
    record: &EncryptedRecord,
    capsule_fragments: &[Vec<u8>],
) -> Result<Vec<u8>, CryptoError> {
    let me = grantee.public_key();
    let mut verified: Vec<VerifiedCapsuleFrag> = Vec::new();
    for (i, bytes) in capsule_fragments.iter().enumerate() {
        let cfrag = CapsuleFrag::from_bytes(bytes)
            .map_err(|e| err(format!("capsule fragment {i}: {e}")))?;
        let v = cfrag
            .verify(
                &record.capsule,
                &verifying_key.0,
                owner.umbral(),
                me.umbral(),
            )
            .map_err(|(e, _)| err(format!("capsule fragment {i} does not verify: {e}")))?;
        verified.push(v);
    }
    decrypt_reencrypted(
        grantee.umbral(),
        owner.umbral(),
        &record.capsule,
        verified,
        &record.ciphertext,
    )
    .map(|b| b.into_vec())
    .map_err(|e| {
        err(format!(
            "cannot open the record with these fragments ({e}); too few, or for another grant"
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::{decrypt_record, encrypt_record};

    #[test]
    fn threshold_of_proxies_lets_the_grantee_read_and_fewer_do_not() {
        let patient = KeyMaterial::from_seed(&[1; 32]).unwrap();
        let doctor = KeyMaterial::from_seed(&[2; 32]).unwrap();
        let other = KeyMaterial::from_seed(&[3; 32]).unwrap();
        let ppk = patient.encryption_key().public_key();
        let dpk = doctor.encryption_key().public_key();
        let m = br#"{"resourceType":"Observation","status":"final"}"#;
        let record = encrypt_record(&ppk, m).unwrap();
        let vk =
            DelegationVerifyingKey::from_bytes(&DelegationVerifyingKey::of(&patient).to_bytes())
                .unwrap();

        let frags = delegate(&patient, &dpk, 2, 4).unwrap();
        assert_eq!(frags.len(), 4);
        let checked: Vec<_> = frags
            .iter()
            .map(|f| check_fragment(f, &vk, &ppk, &dpk).unwrap())
            .collect();
        // A fragment presented for another grantee is refused by the proxy.
        let opk = other.encryption_key().public_key();
        assert!(check_fragment(&frags[0], &vk, &ppk, &opk).is_err());

        let cfrags: Vec<_> = checked[1..3]
            .iter()
            .map(|k| reencrypt_for_grantee(&record, k))
            .collect();
        let opened = decrypt_as_grantee(&doctor.encryption_key(), &ppk, &vk, &record, &cfrags);
        assert_eq!(opened.unwrap(), m);
        // One fragment is below the threshold.
        assert!(
            decrypt_as_grantee(&doctor.encryption_key(), &ppk, &vk, &record, &cfrags[..1]).is_err()
        );
        // Someone else cannot use the doctor's capsule fragments.
        assert!(decrypt_as_grantee(&other.encryption_key(), &ppk, &vk, &record, &cfrags).is_err());
        // The patient still reads directly.
        assert_eq!(
            decrypt_record(&patient.encryption_key(), &record).unwrap(),
            m
        );
    }

    #[test]
    fn bad_parameters_are_refused() {
        let patient = KeyMaterial::from_seed(&[1; 32]).unwrap();
        let dpk = KeyMaterial::from_seed(&[2; 32])
            .unwrap()
            .encryption_key()
            .public_key();
        assert!(delegate(&patient, &dpk, 0, 3).is_err());
        assert!(delegate(&patient, &dpk, 4, 3).is_err());
        assert!(delegate(&patient, &dpk, 1, MAX_SHARES + 1).is_err());
    }
}
