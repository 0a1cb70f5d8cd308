//! What the client checks instead of believing its node: headers against the validators'
//! header certificates, chain-state answers against the certified state root.
//!
//! The trust root is an [`Anchor`]: the chain id and validator set of the chain's genesis file.
//! A header counts only with a certificate of 2f + 1 of those validators; an entry counts only
//! with a Merkle proof against a counted header's state root, for the very key the client asked
//! about. A node that substitutes a key, forges a header, replays another chain's header or
//! proves against another root is refused, with an error naming what did not verify.

use std::path::Path;

use medchain_api::{CertifiedHeader, ProvedEntry, StateProofs};
use medchain_crypto::header_vote::verify_header_certificate;
use medchain_crypto::state_proof::StateProof;
use medchain_crypto::validators::{Certificate, EcdsaVerifier, ValidatorSet};
use medchain_crypto::{Hash32, Signature};
use medchain_proto::canonical::{Canonical, Hashed};
use medchain_proto::v1;

/// Why an answer was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum VerifyError {
    #[error("the node gave no proof with its answer: it must run contract rules 5 or later and a release that proves its answers")]
    NoProof,
    #[error("header {height} is malformed: {reason}")]
    MalformedHeader { height: u64, reason: String },
    #[error("the node sent header {found} where header {expected} was asked for")]
    WrongHeight { expected: u64, found: u64 },
    #[error("header {height} is of chain {found:?}, not of chain {expected:?} this client trusts")]
    OtherChain {
        height: u64,
        expected: String,
        found: String,
    },
    #[error("header {height} comes without a header certificate: the validators have not vouched for it")]
    Uncertified { height: u64 },
    #[error("the certificate of header {height} does not verify against the genesis validators: {reason}")]
    BadCertificate { height: u64, reason: String },
    #[error("header {height} carries no state root (it was made before contract rules 5)")]
    NoStateRoot { height: u64 },
    #[error("the proof answers for key {found} where key {expected} was asked")]
    WrongKey { expected: String, found: String },
    #[error("the proof of {key} does not verify against the state root of certified block {height}: {reason}")]
    BadProof {
        height: u64,
        key: String,
        reason: String,
    },
    #[error("the answer proves {found} entries where {expected} were asked")]
    WrongEntryCount { expected: usize, found: usize },
    #[error("header {height} does not link onto the header before it that this client verified (its previous_hash differs)")]
    BrokenLink { height: u64 },
    #[error("the node shows header {shown} at height {height}, but this client verified header {kept} there: two certified headers at one height (report it: the validators signed a fork)")]
    Fork {
        height: u64,
        kept: String,
        shown: String,
    },
    #[error(
        "the transaction at position {index} of block {height} is not in that block: {reason}"
    )]
    NotIncluded {
        height: u64,
        index: u64,
        reason: String,
    },
    #[error("list {list}: {reason}")]
    BadList { list: String, reason: String },
    #[error("the slip the node showed is not the one on chain: {reason}")]
    WrongSlip { reason: String },
    #[error("header {height} is older than block {known}, which this client has already verified: the node serves a stale state")]
    Stale { height: u64, known: u64 },
}

/// A header the validators certified.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifiedHeader {
    pub header: v1::BlockHeader,
    pub hash: Hash32,
    /// How many validators signed its certificate, of how many.
    pub signers: usize,
    pub validators: usize,
}

impl VerifiedHeader {
    /// "verified against block H, certificate of 3 of 4 validators".
    pub fn describe(&self) -> String {
        format!(
            "verified against block {}, certificate of {} of {} validators",
            self.header.height, self.signers, self.validators
        )
    }
}

/// Chain-state entries proved against a certified header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifiedState {
    pub header: VerifiedHeader,
    /// The values of the keys asked for, in order (`None`: proved absent).
    pub values: Vec<Option<Vec<u8>>>,
}

/// The chain a client trusts: known from its genesis file, never from the node it talks to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Anchor {
    pub chain_id: String,
    pub validators: ValidatorSet,
}

impl Anchor {
    /// The anchor of the chain whose genesis file is `path`.
    pub fn from_genesis_file(path: &Path) -> anyhow::Result<(Self, crate::config::Genesis)> {
        let genesis = crate::config::read_genesis(path)?;
        let validators = ValidatorSet::new(genesis.validators.iter().map(|v| v.identity).collect())
            .map_err(|e| anyhow::anyhow!("the validators of {}: {e}", path.display()))?;
        Ok((
            Anchor {
                chain_id: genesis.chain_id.clone(),
                validators,
            },
            genesis,
        ))
    }

    /// Checks a header and its certificate; `expected` is the height asked for.
    pub fn verify_header(
        &self,
        expected: u64,
        h: &CertifiedHeader,
    ) -> Result<VerifiedHeader, VerifyError> {
        let malformed = |reason: String| VerifyError::MalformedHeader {
            height: expected,
            reason,
        };
        let bytes = hex::decode(&h.header).map_err(|e| malformed(format!("not hex: {e}")))?;
        let header =
            v1::BlockHeader::decode_canonical(&bytes).map_err(|e| malformed(e.to_string()))?;
        if header.height != expected || h.height != expected {
            return Err(VerifyError::WrongHeight {
                expected,
                found: header.height,
            });
        }
        if header.chain_id != self.chain_id {
            return Err(VerifyError::OtherChain {
                height: expected,
                expected: self.chain_id.clone(),
                found: header.chain_id,
            });
        }
        let hash = header.digest();
        let cert_hex = h
            .certificate
            .as_ref()
            .ok_or(VerifyError::Uncertified { height: expected })?;
        let bad = |reason: String| VerifyError::BadCertificate {
            height: expected,
            reason,
        };
        let cert_bytes = hex::decode(cert_hex).map_err(|e| bad(format!("not hex: {e}")))?;
        let cert =
            v1::HeaderCertificate::decode_canonical(&cert_bytes).map_err(|e| bad(e.to_string()))?;
        if cert.height != expected || cert.header_hash != hash.as_bytes() {
            return Err(bad(format!(
                "it certifies header {} of height {}, not this header {}",
                hex::encode(&cert.header_hash),
                cert.height,
                hash.to_hex()
            )));
        }
        let signatures = cert
            .signatures
            .iter()
            .map(|s| {
                Signature::from_slice(&s.signature)
                    .map(|sig| (s.validator, sig))
                    .map_err(|e| bad(format!("signature of validator {}: {e}", s.validator)))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let signers = signatures.len();
        verify_header_certificate(
            &self.validators,
            &self.chain_id,
            expected,
            &hash,
            &Certificate { signatures },
            &EcdsaVerifier,
        )
        .map_err(|e| bad(e.to_string()))?;
        Ok(VerifiedHeader {
            header,
            hash,
            signers,
            validators: self.validators.len(),
        })
    }

    /// Checks proved entries for `keys` (in order): a certified header, and each proof against
    /// its state root for exactly that key.
    pub fn verify_state(
        &self,
        proofs: &StateProofs,
        keys: &[Vec<u8>],
    ) -> Result<VerifiedState, VerifyError> {
        let (header, root) = self.certified_root(proofs)?;
        if proofs.entries.len() != keys.len() {
            return Err(VerifyError::WrongEntryCount {
                expected: keys.len(),
                found: proofs.entries.len(),
            });
        }
        let height = header.header.height;
        let values = keys
            .iter()
            .zip(&proofs.entries)
            .map(|(key, entry)| verify_entry(height, &root, key, entry))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(VerifiedState { header, values })
    }

    /// The certified header of `proofs` and the state root it carries.
    fn certified_root(
        &self,
        proofs: &StateProofs,
    ) -> Result<(VerifiedHeader, [u8; 32]), VerifyError> {
        let header = self.verify_header(proofs.header.height, &proofs.header)?;
        let height = header.header.height;
        let root: [u8; 32] = header
            .header
            .state_root
            .as_slice()
            .try_into()
            .map_err(|_| VerifyError::NoStateRoot { height })?;
        Ok((header, root))
    }
}

/// One entry's proof against `root`, for exactly `key`: its value, or `None` if proved absent.
fn verify_entry(
    height: u64,
    root: &[u8; 32],
    key: &[u8],
    entry: &ProvedEntry,
) -> Result<Option<Vec<u8>>, VerifyError> {
    let shown = String::from_utf8_lossy(&key[..key.len().min(5)]).into_owned()
        + &hex::encode(&key[key.len().min(5)..]);
    let bad = |reason: String| VerifyError::BadProof {
        height,
        key: shown.clone(),
        reason,
    };
    if entry.key != hex::encode(key) {
        return Err(VerifyError::WrongKey {
            expected: hex::encode(key),
            found: entry.key.clone(),
        });
    }
    let value = entry
        .value
        .as_ref()
        .map(hex::decode)
        .transpose()
        .map_err(|e| bad(format!("the value is not hex: {e}")))?;
    let proof_bytes =
        hex::decode(&entry.proof).map_err(|e| bad(format!("the proof is not hex: {e}")))?;
    let proof = StateProof::from_bytes(&proof_bytes).map_err(|e| bad(e.to_string()))?;
    proof
        .verify(root, key, value.as_deref())
        .map_err(|e| bad(e.to_string()))?;
    Ok(value)
}

mod inclusion;
mod lists;
pub use inclusion::verify_inclusion;
pub use lists::{ProvedList, VerifiedLists};

#[cfg(test)]
pub(crate) mod testkit;
#[cfg(test)]
mod tests;
