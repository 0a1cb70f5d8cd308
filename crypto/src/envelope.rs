//! The plaintext envelope of a record, and the keyed H(M) the chain holds.
//!
//! A plain hash of a record on chain confirms a guess to anyone who reads the chain (a small
//! record, such as a test result, has few likely values), and it outlives the record's erasure.
//! So a record is sealed together with a fresh 32-byte record key `k`, and the chain holds
//! H_k(M), keyed BLAKE3 of M under `k`: whoever can decrypt the record gets `k` with it and
//! checks the hash; anyone else learns nothing from it, and once the ciphertext is erased no one
//! can ever check a guess against it.
//!
//! Wire form (the plaintext handed to record encryption): `MAGIC (8 bytes) || k (32) || M`.
//! Records written before envelopes are M alone, hashed without a key; [`open`] tells the two
//! apart by the magic, which no FHIR resource, PDF or image starts with.

use rand::RngCore;

use crate::hash::{digest, domains, mac, Hash32};

/// Marks an envelope (and its version).
const MAGIC: &[u8; 8] = b"MCREC\x00\x01\x00";
const KEY_LEN: usize = 32;
/// Bytes an envelope adds to its record.
pub const OVERHEAD: usize = MAGIC.len() + KEY_LEN;

/// A record in its envelope, with the hash that goes on chain.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sealed {
    pub envelope: Vec<u8>,
    pub record_hash: Hash32,
}

/// An opened envelope: the record and the hash it must have on chain.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Opened<'a> {
    pub record: &'a [u8],
    pub record_hash: Hash32,
}

fn keyed_hash(key: &[u8; KEY_LEN], record: &[u8]) -> Hash32 {
    mac(key, domains::RECORD_CONTENT_KEYED, &[record])
}

/// Puts `record` in an envelope under a fresh random key.
pub fn seal(record: &[u8]) -> Sealed {
    let mut key = [0u8; KEY_LEN];
    rand::rngs::OsRng.fill_bytes(&mut key);
    seal_with_key(key, record)
}

/// [`seal`] with a given key (tests and test vectors).
pub fn seal_with_key(key: [u8; KEY_LEN], record: &[u8]) -> Sealed {
    let mut envelope = Vec::with_capacity(OVERHEAD + record.len());
    envelope.extend_from_slice(MAGIC);
    envelope.extend_from_slice(&key);
    envelope.extend_from_slice(record);
    Sealed {
        record_hash: keyed_hash(&key, record),
        envelope,
    }
}

/// Opens a decrypted plaintext: an envelope gives its record and keyed hash; anything else is a
/// record from before envelopes, with its unkeyed hash.
pub fn open(plaintext: &[u8]) -> Opened<'_> {
    match plaintext.strip_prefix(MAGIC.as_slice()) {
        Some(rest) if rest.len() >= KEY_LEN => {
            let (key, record) = rest.split_at(KEY_LEN);
            let key: &[u8; KEY_LEN] = key.try_into().expect("split at KEY_LEN");
            Opened {
                record,
                record_hash: keyed_hash(key, record),
            }
        }
        _ => Opened {
            record: plaintext,
            record_hash: digest(domains::RECORD_CONTENT, plaintext),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_envelope_opens_to_its_record_and_hash() {
        let record = br#"{"resourceType":"Observation","valueString":"negative"}"#;
        let sealed = seal(record);
        let opened = open(&sealed.envelope);
        assert_eq!(opened.record, record);
        assert_eq!(opened.record_hash, sealed.record_hash);
        assert_eq!(sealed.envelope.len(), record.len() + OVERHEAD);
    }

    /// The chain's hash confirms no guess without the key: the same record under two keys, and
    /// the unkeyed hash, all differ; a changed byte changes the hash.
    #[test]
    fn the_hash_depends_on_the_key_and_every_byte() {
        let record = b"HIV test: negative";
        let (a, b) = (
            seal_with_key([1; 32], record),
            seal_with_key([2; 32], record),
        );
        assert_ne!(a.record_hash, b.record_hash);
        assert_ne!(a.record_hash, digest(domains::RECORD_CONTENT, record));
        let mut altered = a.envelope.clone();
        *altered.last_mut().unwrap() ^= 1;
        assert_ne!(open(&altered).record_hash, a.record_hash);
    }

    /// A record from before envelopes opens as itself with its unkeyed hash, and so does a
    /// truncated envelope (its hash then matches nothing on chain).
    #[test]
    fn records_without_an_envelope_keep_their_unkeyed_hash() {
        let legacy = br#"{"resourceType":"Patient"}"#;
        let opened = open(legacy);
        assert_eq!(opened.record, legacy);
        assert_eq!(opened.record_hash, digest(domains::RECORD_CONTENT, legacy));
        let short = &seal(b"x").envelope[..MAGIC.len() + 3];
        assert_eq!(open(short).record, short);
    }
}
