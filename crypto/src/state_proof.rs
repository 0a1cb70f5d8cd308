//! Proofs about the authenticated chain state: that a key holds a value, or holds nothing, in
//! the state whose root a block header commits to.
//!
//! The state is a Jellyfish Merkle tree (the maintained `jmt` crate, Diem's design) keyed by
//! [`key_hash`] of each chain-state key, with SHA-256 node hashes. Its root depends only on the
//! set of keys and values, not on the order they were written in, so every replica that executes
//! the same blocks computes the same root, and a node that builds the tree afresh from its state
//! (an upgraded data folder) agrees with one that kept it from genesis.
//!
//! This module is the client's side: it checks a proof against a root it trusts (one certified
//! by the validators) and never needs the tree. The node side lives in the ledger.

use jmt::proof::SparseMerkleProof;
use jmt::{KeyHash, RootHash};
use sha2::Sha256;

use crate::hash::{digest, domains};
use crate::CryptoError;

/// Where a chain-state key sits in the tree. Domain-separated, so no other digest in medchain
/// can be passed off as a state position.
pub fn key_hash(key: &[u8]) -> [u8; 32] {
    *digest(domains::STATE_KEY, key).as_bytes()
}

/// A Merkle proof of one key's value (or absence) against a state root, in the wire form the
/// node sends it in (borsh, as the `jmt` crate encodes it).
#[derive(Clone, PartialEq)]
pub struct StateProof(SparseMerkleProof<Sha256>);

impl std::fmt::Debug for StateProof {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "StateProof({} bytes)", self.to_bytes().len())
    }
}

/// The most siblings a proof can have (one per bit of a key hash).
const MAX_SIBLINGS: usize = 256;

impl StateProof {
    /// Wraps a proof the tree produced.
    pub fn new(proof: SparseMerkleProof<Sha256>) -> Self {
        StateProof(proof)
    }

    /// The proof's wire bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        borsh::to_vec(&self.0).expect("a proof always encodes")
    }

    /// Reads a proof from its wire bytes. Refuses trailing bytes and more siblings than a tree
    /// can have, so a malicious node cannot make a client allocate without bound.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, CryptoError> {
        if bytes.len() > 64 + MAX_SIBLINGS * 80 {
            return Err(CryptoError::StateProof(format!(
                "the proof is {} bytes, more than any proof of a 256-bit tree",
                bytes.len()
            )));
        }
        // `verify` refuses more than 256 siblings.
        let proof: SparseMerkleProof<Sha256> = borsh::from_slice(bytes)
            .map_err(|e| CryptoError::StateProof(format!("the proof does not decode: {e}")))?;
        Ok(StateProof(proof))
    }

    /// Checks that in the state with `root`, `key` holds `value` (`None`: holds nothing).
    pub fn verify(
        &self,
        root: &[u8; 32],
        key: &[u8],
        value: Option<&[u8]>,
    ) -> Result<(), CryptoError> {
        self.0
            .verify(RootHash(*root), KeyHash(key_hash(key)), value)
            .map_err(|e| {
                CryptoError::StateProof(format!(
                    "{} of key {} does not verify against state root {}: {e}",
                    if value.is_some() {
                        "the value"
                    } else {
                        "the absence"
                    },
                    printable(key),
                    hex::encode(root)
                ))
            })
    }
}

/// A chain-state key for an error message: its text prefix and the rest in hex.
fn printable(key: &[u8]) -> String {
    let text = key
        .iter()
        .position(|&b| b == b'/')
        .map_or(0, |i| i + 1)
        .min(key.len());
    format!(
        "{}{}",
        String::from_utf8_lossy(&key[..text]),
        hex::encode(&key[text..])
    )
}
