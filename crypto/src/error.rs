//! The one error type of the crypto crate.

use std::path::PathBuf;

/// Everything that can go wrong in this crate. Each variant names the problem and, where one
/// exists, the fix.
#[derive(Debug, thiserror::Error)]
pub enum CryptoError {
    #[error("invalid identity text {text:?}: {reason}")]
    IdentityText { text: String, reason: String },
    #[error("invalid public key: {0} (expected 33 bytes, a compressed secp256k1 point)")]
    PublicKey(String),
    #[error("invalid signature encoding: expected 64 bytes (r || s), got {0}")]
    SignatureLength(usize),
    #[error("signature is not in low-S form; medchain accepts only low-S signatures (BIP-62)")]
    HighS,
    #[error("signature does not verify for this identity and message")]
    BadSignature,
    #[error("invalid secret key: {0}")]
    SecretKey(String),
    #[error("invalid hash: expected 32 bytes, got {0}")]
    HashLength(usize),
    #[error("Merkle proof does not match the root: {0}")]
    MerkleProof(String),
    #[error("state proof: {0}")]
    StateProof(String),
    #[error("record encryption failed: {0}")]
    Encrypt(String),
    #[error("record decryption failed: the ciphertext, capsule or key is wrong or was altered")]
    Decrypt,
    #[error("malformed encrypted record: {0}")]
    MalformedRecord(String),
    #[error("keyword search: {0}")]
    Keyword(String),
    #[error("proxy re-encryption: {0}")]
    Delegation(String),
    #[error("keystore {path}: {reason}")]
    Keystore { path: PathBuf, reason: String },
    #[error("keystore {path}: wrong password, or the file was altered")]
    KeystorePassword { path: PathBuf },
    #[error("I/O error on {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}
