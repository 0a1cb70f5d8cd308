//! The canonical encoding: the single definition of "the bytes of a message" for hashing, signing
//! and storage.
//!
//! Rule 1. The canonical bytes of a message are its protobuf encoding as produced by prost: fields in
//!         tag order, proto3 defaults omitted, packed repeated scalars, no unknown fields. This is a
//!         deterministic function of the message value.
//! Rule 2. A digest is `BLAKE3-derive_key(domain, canonical bytes)`, with one domain per message kind
//!         ([`Hashed::DOMAIN`], registered in `medchain_crypto::hash::domains`). A signature is
//!         ECDSA over that digest.
//! Rule 3. Bytes from outside (a peer, a client, the disk) are accepted only if they are within the
//!         kind's size limit, decode, and re-encode to exactly the same bytes. So any accepted bytes
//!         *are* the canonical bytes: no two encodings of one value circulate, and a hash of
//!         received bytes equals the hash of the decoded value.
//!
//! Decoding never panics: prost returns errors for malformed input and bounds nesting depth, and
//! lengths are checked before allocation by the size limits here.

use medchain_crypto::hash::{domains, Domain};
use medchain_crypto::{digest, Hash32};
use prost::Message;

use crate::v1;
use crate::ProtoError;

/// The peer-message version this build speaks.
pub const PEER_PROTOCOL_VERSION: u32 = 1;

/// Size limits per kind. Records travel off-chain, so nothing on chain needs to be large.
pub mod limits {
    /// A transaction: a slip with its keywords and signatures fits easily.
    pub const TRANSACTION: usize = 64 * 1024;
    /// A block of up to a few thousand transactions.
    pub const BLOCK: usize = 16 * 1024 * 1024;
    /// One peer message (a block response can carry several blocks).
    pub const PEER_MESSAGE: usize = 32 * 1024 * 1024;
    /// Small fixed-shape messages (headers, votes, certificates).
    pub const SMALL: usize = 64 * 1024;
    /// Largest plaintext record a client may store (DESIGN: records up to 16 MiB).
    pub const RECORD_PLAINTEXT: usize = 16 * 1024 * 1024;
    /// Largest stored ciphertext: the plaintext plus the capsule, tag and format header.
    pub const RECORD_CIPHERTEXT: usize = RECORD_PLAINTEXT + 4 * 1024;
    /// A message carrying one ciphertext and a transaction or a few small fields.
    pub const RECORD_MESSAGE: usize = RECORD_CIPHERTEXT + TRANSACTION + 4 * 1024;
}

/// A message with a size limit and a strict decoder.
pub trait Canonical: Message + Default + Sized {
    /// Human name used in errors.
    const KIND: &'static str;
    /// Largest accepted encoding.
    const MAX_BYTES: usize;

    /// The canonical bytes (rule 1).
    fn canonical_bytes(&self) -> Vec<u8> {
        self.encode_to_vec()
    }

    /// The length of the canonical bytes, without encoding them (for size budgets).
    fn canonical_len(&self) -> usize {
        self.encoded_len()
    }

    /// Decodes untrusted bytes (rule 3).
    fn decode_canonical(bytes: &[u8]) -> Result<Self, ProtoError> {
        if bytes.len() > Self::MAX_BYTES {
            return Err(ProtoError::TooLarge {
                kind: Self::KIND,
                size: bytes.len(),
                limit: Self::MAX_BYTES,
            });
        }
        let value = Self::decode(bytes).map_err(|e| ProtoError::Malformed {
            kind: Self::KIND,
            reason: e.to_string(),
        })?;
        if value.encoded_len() != bytes.len() || value.encode_to_vec() != bytes {
            return Err(ProtoError::NonCanonical { kind: Self::KIND });
        }
        Ok(value)
    }
}

/// A message that is hashed (and possibly signed) under its own domain (rule 2).
pub trait Hashed: Canonical {
    const DOMAIN: Domain;

    fn digest(&self) -> Hash32 {
        digest(Self::DOMAIN, &self.canonical_bytes())
    }
}

macro_rules! canonical {
    ($ty:ty, $kind:literal, $max:expr) => {
        impl Canonical for $ty {
            const KIND: &'static str = $kind;
            const MAX_BYTES: usize = $max;
        }
    };
    ($ty:ty, $kind:literal, $max:expr, $domain:expr) => {
        canonical!($ty, $kind, $max);
        impl Hashed for $ty {
            const DOMAIN: Domain = $domain;
        }
    };
}

canonical!(
    v1::BlockHeader,
    "block header",
    limits::SMALL,
    domains::BLOCK_HEADER
);
canonical!(
    v1::SlipContent,
    "slip content",
    limits::TRANSACTION,
    domains::PRIVATE_SLIP
);
canonical!(
    v1::ConsortiumSlipContent,
    "consortium slip content",
    limits::TRANSACTION,
    domains::CONSORTIUM_SLIP
);
canonical!(
    v1::TransactionBody,
    "transaction body",
    limits::TRANSACTION,
    domains::TRANSACTION
);
canonical!(
    v1::PbftBatch,
    "pbft batch",
    limits::BLOCK,
    domains::PBFT_BATCH
);
canonical!(v1::PbftMessage, "pbft message", limits::PEER_MESSAGE);
canonical!(v1::HeaderCertificate, "header certificate", limits::SMALL);
canonical!(v1::HeaderVote, "header vote", limits::SMALL);
canonical!(
    v1::DposBlockHeader,
    "dpos block header",
    limits::SMALL,
    domains::DPOS_BLOCK_HEADER
);
canonical!(
    v1::DposBlockExtras,
    "dpos block extras",
    limits::BLOCK,
    domains::DPOS_BLOCK_EXTRAS
);
canonical!(
    v1::DposEvidence,
    "dpos evidence",
    limits::BLOCK,
    domains::DPOS_EVIDENCE
);
canonical!(v1::DposProposal, "dpos proposal", limits::SMALL);
canonical!(v1::DposVote, "dpos vote", limits::SMALL);
canonical!(v1::DposBlock, "dpos block", limits::BLOCK);
canonical!(v1::DposMessage, "dpos message", limits::PEER_MESSAGE);
canonical!(
    v1::DposFinalizedBlock,
    "dpos finalized block",
    limits::BLOCK
);
canonical!(
    v1::DposFinalityCertificate,
    "dpos finality certificate",
    limits::SMALL
);
canonical!(v1::CommittedBatch, "committed batch", limits::BLOCK);
canonical!(v1::Transaction, "transaction", limits::TRANSACTION);
canonical!(v1::Block, "block", limits::BLOCK);
canonical!(v1::CommitCertificate, "commit certificate", limits::SMALL);
canonical!(v1::PeerMessage, "peer message", limits::PEER_MESSAGE);
canonical!(
    v1::ReadRequest,
    "read request",
    limits::SMALL,
    domains::READ_REQUEST
);
canonical!(v1::SignedReadRequest, "signed read request", limits::SMALL);
canonical!(v1::ReadResponse, "read response", limits::RECORD_MESSAGE);
canonical!(v1::RecordUpload, "record upload", limits::RECORD_MESSAGE);
canonical!(
    v1::IdentityRegistration,
    "identity registration",
    limits::SMALL
);

/// Decodes a peer message and checks its version.
pub fn decode_peer_message(bytes: &[u8]) -> Result<v1::PeerMessage, ProtoError> {
    let msg = v1::PeerMessage::decode_canonical(bytes)?;
    if msg.version != PEER_PROTOCOL_VERSION {
        return Err(ProtoError::UnknownVersion {
            got: msg.version,
            supported: PEER_PROTOCOL_VERSION,
        });
    }
    Ok(msg)
}

/// Wraps a body in a peer message of the current version.
pub fn peer_message(body: v1::peer_message::Body) -> v1::PeerMessage {
    v1::PeerMessage {
        version: PEER_PROTOCOL_VERSION,
        body: Some(body),
    }
}
