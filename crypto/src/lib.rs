//! Cryptography of medchain: identities, signatures, hashing, Merkle proofs, record encryption,
//! keystores, and the shared consensus vocabulary (validator sets, signers, certificates).
//!
//! This crate sits at the bottom of the dependency graph: it must not depend on any other medchain
//! crate, nor on tokio, libp2p, rocksdb or clap. Every hash and every signature in medchain goes
//! through [`hash::digest`] and [`identity::SigningKey::sign`] with a [`hash::Domain`] tag, so that a
//! digest or signature made for one purpose can never be replayed as another.

pub mod delegation;
pub mod envelope;
pub mod error;
pub mod hash;
pub mod header_vote;
pub mod identity;
pub mod keys;
pub mod keystore;
pub mod merkle;
pub mod record;
pub mod search;
pub mod state_proof;
pub mod validators;

pub use error::CryptoError;
pub use hash::{digest, Domain, Hash32};
pub use identity::{Identity, Signature, SigningKey};
