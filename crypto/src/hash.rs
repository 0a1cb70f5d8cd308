//! Domain-separated BLAKE3 hashing.
//!
//! Every digest is `BLAKE3-derive_key(context, bytes)` with a context string from [`Domain`]. The
//! derive-key mode gives each context its own independent hash function, so a block header can never
//! collide with a slip or a vote even if their encodings coincided. All contexts live in this one
//! file: adding a message kind means adding its domain here.

use std::fmt;

use crate::CryptoError;

/// A 32-byte BLAKE3 digest.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Hash32(pub [u8; 32]);

impl Hash32 {
    /// The all-zero hash, used as the previous-block hash of the genesis block.
    pub const ZERO: Hash32 = Hash32([0u8; 32]);

    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// Parses a hash from bytes taken off the wire or out of storage.
    pub fn from_slice(bytes: &[u8]) -> Result<Self, CryptoError> {
        let arr: [u8; 32] = bytes
            .try_into()
            .map_err(|_| CryptoError::HashLength(bytes.len()))?;
        Ok(Hash32(arr))
    }

    pub fn from_hex(text: &str) -> Result<Self, CryptoError> {
        let bytes = hex::decode(text).map_err(|_| CryptoError::HashLength(text.len() / 2))?;
        Self::from_slice(&bytes)
    }
}

impl fmt::Display for Hash32 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for Hash32 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Hash32({})", &self.to_hex()[..16])
    }
}

/// A hashing or signing context. The string is part of every digest made under it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Domain(&'static str);

impl Domain {
    pub const fn context(&self) -> &'static str {
        self.0
    }
}

/// The registry of every domain in medchain. Strings are versioned so that a future change of
/// encoding gets new contexts instead of silently reinterpreting old signatures.
pub mod domains {
    use super::Domain;

    pub const BLOCK_HEADER: Domain = Domain("medchain v1 block header");
    pub const PRIVATE_SLIP: Domain = Domain("medchain v1 private slip content");
    pub const PATIENT_CONFIRMATION: Domain = Domain("medchain v1 patient confirmation");
    pub const CONSORTIUM_SLIP: Domain = Domain("medchain v1 consortium slip");
    pub const TRANSACTION: Domain = Domain("medchain v1 transaction");
    pub const PBFT_MESSAGE: Domain = Domain("medchain v1 pbft message");
    pub const PBFT_BATCH: Domain = Domain("medchain v1 pbft batch");
    pub const PBFT_ITEM: Domain = Domain("medchain v1 pbft item");
    pub const PBFT_STATE: Domain = Domain("medchain v1 pbft state");
    pub const DPOS_MESSAGE: Domain = Domain("medchain v1 dpos message");
    pub const DPOS_BLOCK_HEADER: Domain = Domain("medchain v1 dpos block header");
    pub const DPOS_BLOCK_EXTRAS: Domain = Domain("medchain v1 dpos block extras");
    pub const DPOS_EVIDENCE: Domain = Domain("medchain v1 dpos evidence");
    pub const DPOS_ITEM: Domain = Domain("medchain v1 dpos item");
    pub const DPOS_STATE: Domain = Domain("medchain v1 dpos chain state");
    pub const MERKLE_LEAF: Domain = Domain("medchain v1 merkle leaf");
    pub const MERKLE_NODE: Domain = Domain("medchain v1 merkle node");
    pub const MERKLE_EMPTY: Domain = Domain("medchain v1 merkle empty");
    pub const STATE_KEY: Domain = Domain("medchain v1 state key");
    pub const HEADER_VOTE: Domain = Domain("medchain v1 header vote");
    pub const RECORD_CONTENT: Domain = Domain("medchain v1 record content");
    pub const RECORD_CONTENT_KEYED: Domain = Domain("medchain v1 record content keyed");
    pub const VERIFY_CACHE: Domain = Domain("medchain v1 verification cache key");
    pub const KEY_BINDING: Domain = Domain("medchain v1 key binding");
    pub const IDENTITY_CHECKSUM: Domain = Domain("medchain v1 identity");
    pub const DERIVE_SIGNING_KEY: Domain = Domain("medchain v1 derive signing key");
    pub const DERIVE_ENCRYPTION_KEY: Domain = Domain("medchain v1 derive record encryption key");
    pub const DERIVE_SEARCH_KEY: Domain = Domain("medchain v1 derive keyword search key");
    pub const DERIVE_DELEGATION_KEY: Domain = Domain("medchain v1 derive delegation signing key");
    pub const KEYWORD_TAG: Domain = Domain("medchain v1 keyword search tag");
    pub const KEYWORD_TAG_BLIND: Domain = Domain("medchain v1 keyword search blind");
    pub const STORAGE_ADDRESS: Domain = Domain("medchain v1 storage address");
    pub const GRANT_ID: Domain = Domain("medchain v1 consent grant id");
    pub const READ_REQUEST: Domain = Domain("medchain v1 read request");
    pub const GENESIS: Domain = Domain("medchain v1 genesis");
    pub const API_AUTH_CHALLENGE: Domain = Domain("medchain v1 api authentication challenge");
    pub const API_AUTH_RESPONSE: Domain = Domain("medchain v1 api authentication response");
    pub const API_TOKEN: Domain = Domain("medchain v1 api token");
}

/// Hashes `bytes` under `domain`.
pub fn digest(domain: Domain, bytes: &[u8]) -> Hash32 {
    Hash32(blake3::derive_key(domain.context(), bytes))
}

/// Hashes several parts under `domain`, each prefixed by its length so that part boundaries are
/// unambiguous (`["ab", "c"]` and `["a", "bc"]` differ).
pub fn digest_parts(domain: Domain, parts: &[&[u8]]) -> Hash32 {
    let mut hasher = blake3::Hasher::new_derive_key(domain.context());
    for part in parts {
        hasher.update(&(part.len() as u64).to_le_bytes());
        hasher.update(part);
    }
    Hash32(*hasher.finalize().as_bytes())
}

/// A message authentication code: keyed BLAKE3 over `domain` and length-prefixed `parts`. For
/// values a node issues and later checks itself (API challenges and tokens), so that it keeps no
/// table of what it issued and a flood of requests for them costs it no memory.
pub fn mac(key: &[u8; 32], domain: Domain, parts: &[&[u8]]) -> Hash32 {
    let mut hasher = blake3::Hasher::new_keyed(key);
    hasher.update(domain.context().as_bytes());
    hasher.update(&[0]);
    for part in parts {
        hasher.update(&(part.len() as u64).to_le_bytes());
        hasher.update(part);
    }
    Hash32(*hasher.finalize().as_bytes())
}

impl Hash32 {
    /// Compares in constant time (for MACs, where an early exit would leak the matching prefix).
    pub fn ct_eq(&self, other: &Hash32) -> bool {
        self.0
            .iter()
            .zip(other.0.iter())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn domains_separate_digests() {
        let a = digest(domains::BLOCK_HEADER, b"x");
        let b = digest(domains::PRIVATE_SLIP, b"x");
        assert_ne!(a, b);
        assert_eq!(a, digest(domains::BLOCK_HEADER, b"x"));
    }

    #[test]
    fn macs_depend_on_key_domain_and_parts() {
        let a = mac(&[1; 32], domains::API_TOKEN, &[b"x"]);
        assert!(a.ct_eq(&mac(&[1; 32], domains::API_TOKEN, &[b"x"])));
        assert!(!a.ct_eq(&mac(&[2; 32], domains::API_TOKEN, &[b"x"])));
        assert!(!a.ct_eq(&mac(&[1; 32], domains::API_AUTH_CHALLENGE, &[b"x"])));
        assert!(!a.ct_eq(&mac(&[1; 32], domains::API_TOKEN, &[b"y"])));
    }

    #[test]
    fn parts_are_length_prefixed() {
        let a = digest_parts(domains::MERKLE_NODE, &[b"ab", b"c"]);
        let b = digest_parts(domains::MERKLE_NODE, &[b"a", b"bc"]);
        assert_ne!(a, b);
    }

    #[test]
    fn hash_parsing_rejects_wrong_length() {
        assert!(matches!(
            Hash32::from_slice(&[0u8; 31]),
            Err(CryptoError::HashLength(31))
        ));
        let h = digest(domains::RECORD_CONTENT, b"m");
        assert_eq!(Hash32::from_hex(&h.to_hex()).unwrap(), h);
    }
}
