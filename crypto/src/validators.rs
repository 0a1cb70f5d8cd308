//! Consensus vocabulary shared by both engines, the ledger and light clients: validator sets,
//! quorum arithmetic, the signer and verifier traits, and certificates (a set of signatures from
//! distinct validators over one digest).
//!
//! Quorum rule: with `n` validators of which at most `f = floor((n-1)/3)` are Byzantine, a quorum is
//! `q = ceil((n+f+1)/2)` signatures. Any two quorums then share at least `f+1` validators, hence at
//! least one honest one, for every `n`; when `n = 3f+1` this is the familiar `2f+1`. (Plain `2f+1`
//! is unsafe when `n > 3f+1`: with n = 5, two sets of 3 can meet in a single Byzantine node.)

use std::collections::BTreeSet;

use crate::hash::{Domain, Hash32};
use crate::identity::{Identity, Signature, SigningKey};
use crate::CryptoError;

/// The position of a validator in its set; the wire form of "who signed".
pub type ValidatorIndex = u32;

/// An ordered set of validators, fixed for an epoch (PBFT: the genesis set; DPoS: an elected set).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ValidatorSet {
    members: Vec<Identity>,
}

/// Why a validator set or a certificate was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CertificateError {
    #[error("validator set is empty")]
    EmptySet,
    #[error("validator {0} appears twice in the set")]
    DuplicateMember(Identity),
    #[error("signer index {index} is outside the validator set of {size}")]
    UnknownSigner { index: ValidatorIndex, size: usize },
    #[error("validator {index} signed twice")]
    DuplicateSigner { index: ValidatorIndex },
    #[error("signature of validator {index} does not verify")]
    BadSignature { index: ValidatorIndex },
    #[error("{have} valid signatures, {need} required")]
    TooFewSignatures { have: usize, need: usize },
}

impl ValidatorSet {
    pub fn new(members: Vec<Identity>) -> Result<Self, CertificateError> {
        if members.is_empty() {
            return Err(CertificateError::EmptySet);
        }
        let mut seen = BTreeSet::new();
        for m in &members {
            if !seen.insert(*m) {
                return Err(CertificateError::DuplicateMember(*m));
            }
        }
        Ok(ValidatorSet { members })
    }

    pub fn len(&self) -> usize {
        self.members.len()
    }

    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    pub fn members(&self) -> &[Identity] {
        &self.members
    }

    pub fn get(&self, index: ValidatorIndex) -> Option<&Identity> {
        self.members.get(index as usize)
    }

    pub fn index_of(&self, id: &Identity) -> Option<ValidatorIndex> {
        self.members
            .iter()
            .position(|m| m == id)
            .map(|i| i as ValidatorIndex)
    }

    /// Most Byzantine members tolerated: `floor((n-1)/3)`.
    pub fn max_faulty(&self) -> usize {
        (self.len() - 1) / 3
    }

    /// Signatures needed for a quorum: `ceil((n+f+1)/2)`.
    pub fn quorum(&self) -> usize {
        (self.len() + self.max_faulty() + 1).div_ceil(2)
    }

    /// Signatures that guarantee at least one honest signer: `f+1`.
    pub fn weak_quorum(&self) -> usize {
        self.max_faulty() + 1
    }
}

/// Something that can sign as one validator. The node's key implements it; a remote signer or an
/// HSM could too.
pub trait Signer {
    fn identity(&self) -> Identity;
    fn sign(&self, domain: Domain, message: &[u8]) -> Signature;
}

impl Signer for SigningKey {
    fn identity(&self) -> Identity {
        SigningKey::identity(self)
    }

    fn sign(&self, domain: Domain, message: &[u8]) -> Signature {
        SigningKey::sign(self, domain, message)
    }
}

/// Checks signatures. Engines verify through this trait so that a node can cache or batch checks,
/// and a simulator can count them, without the engine knowing.
pub trait Verifier {
    fn verify(
        &self,
        signer: &Identity,
        domain: Domain,
        message: &[u8],
        signature: &Signature,
    ) -> Result<(), CryptoError>;
}

/// Verification with real ECDSA, no caching.
#[derive(Clone, Copy, Debug, Default)]
pub struct EcdsaVerifier;

impl Verifier for EcdsaVerifier {
    fn verify(
        &self,
        signer: &Identity,
        domain: Domain,
        message: &[u8],
        signature: &Signature,
    ) -> Result<(), CryptoError> {
        signer.verify(domain, message, signature)
    }
}

/// Verification that remembers successes, so a signature checked once (a vote relayed inside a
/// view change, a proof re-sent, or, in the simulator, the same message arriving at every replica)
/// is not checked again. Failures are never cached. Clones share one cache. The cache holds at
/// most `capacity` entries and is emptied when full, which costs only re-verification.
#[derive(Clone, Debug)]
pub struct CachingVerifier {
    seen: std::sync::Arc<std::sync::Mutex<std::collections::HashSet<Hash32>>>,
    capacity: usize,
}

impl CachingVerifier {
    pub fn new(capacity: usize) -> Self {
        CachingVerifier {
            seen: Default::default(),
            capacity: capacity.max(1),
        }
    }
}

impl Verifier for CachingVerifier {
    fn verify(
        &self,
        signer: &Identity,
        domain: Domain,
        message: &[u8],
        signature: &Signature,
    ) -> Result<(), CryptoError> {
        let digest = crate::hash::digest(domain, message);
        let key = crate::hash::digest_parts(
            crate::hash::domains::VERIFY_CACHE,
            &[signer.as_bytes(), digest.as_bytes(), signature.as_bytes()],
        );
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        if seen.contains(&key) {
            return Ok(());
        }
        drop(seen);
        signer.verify_digest(&digest, signature)?;
        seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        if seen.len() >= self.capacity {
            seen.clear();
        }
        seen.insert(key);
        Ok(())
    }
}

/// Signatures of distinct validators over one message in one domain.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Certificate {
    pub signatures: Vec<(ValidatorIndex, Signature)>,
}

impl Certificate {
    /// Checks that at least `threshold` distinct members of `set` signed `message` in `domain`.
    /// Every signature present must verify: a certificate carrying a bad signature is refused even
    /// if enough good ones remain, so a certificate is never "repaired" silently.
    pub fn verify(
        &self,
        set: &ValidatorSet,
        domain: Domain,
        message: &[u8],
        threshold: usize,
        verifier: &impl Verifier,
    ) -> Result<(), CertificateError> {
        self.verify_each(set, domain, threshold, verifier, |_| message.to_vec())
    }

    /// As [`Certificate::verify`], for certificates whose signers each signed their own message
    /// (`message_of(index)`), such as consensus envelopes that name their sender.
    pub fn verify_each(
        &self,
        set: &ValidatorSet,
        domain: Domain,
        threshold: usize,
        verifier: &impl Verifier,
        message_of: impl Fn(ValidatorIndex) -> Vec<u8>,
    ) -> Result<(), CertificateError> {
        let mut seen = BTreeSet::new();
        for (index, sig) in &self.signatures {
            let member = set.get(*index).ok_or(CertificateError::UnknownSigner {
                index: *index,
                size: set.len(),
            })?;
            if !seen.insert(*index) {
                return Err(CertificateError::DuplicateSigner { index: *index });
            }
            verifier
                .verify(member, domain, &message_of(*index), sig)
                .map_err(|_| CertificateError::BadSignature { index: *index })?;
        }
        if seen.len() < threshold {
            return Err(CertificateError::TooFewSignatures {
                have: seen.len(),
                need: threshold,
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hash::domains;

    fn keys(n: u8) -> Vec<SigningKey> {
        (1..=n)
            .map(|i| {
                let mut b = [0u8; 32];
                b[31] = i;
                SigningKey::from_bytes(&b).unwrap()
            })
            .collect()
    }

    #[test]
    fn quorum_table() {
        // (n, f, quorum, weak quorum)
        let table = [
            (1, 0, 1, 1),
            (4, 1, 3, 2),
            (5, 1, 4, 2),
            (6, 1, 4, 2),
            (7, 2, 5, 3),
            (10, 3, 7, 4),
            (101, 33, 68, 34),
        ];
        for (n, f, q, w) in table {
            let set = ValidatorSet::new(keys(n).iter().map(|k| k.identity()).collect()).unwrap();
            assert_eq!(
                (set.max_faulty(), set.quorum(), set.weak_quorum()),
                (f, q, w),
                "n={n}"
            );
            // Two quorums intersect in at least f+1 members.
            assert!(2 * q > n as usize + f, "n={n}");
        }
    }

    #[test]
    fn certificate_checks() {
        let ks = keys(4);
        let set = ValidatorSet::new(ks.iter().map(|k| k.identity()).collect()).unwrap();
        let msg = b"block 7";
        let sign = |i: usize| (i as u32, ks[i].sign(domains::PBFT_MESSAGE, msg));
        let v = EcdsaVerifier;
        let good = Certificate {
            signatures: vec![sign(0), sign(1), sign(3)],
        };
        good.verify(&set, domains::PBFT_MESSAGE, msg, set.quorum(), &v)
            .unwrap();
        assert_eq!(
            good.verify(&set, domains::PBFT_MESSAGE, b"block 8", 3, &v),
            Err(CertificateError::BadSignature { index: 0 })
        );
        let short = Certificate {
            signatures: vec![sign(0), sign(1)],
        };
        assert_eq!(
            short.verify(&set, domains::PBFT_MESSAGE, msg, 3, &v),
            Err(CertificateError::TooFewSignatures { have: 2, need: 3 })
        );
        let dup = Certificate {
            signatures: vec![sign(0), sign(0), sign(1)],
        };
        assert_eq!(
            dup.verify(&set, domains::PBFT_MESSAGE, msg, 3, &v),
            Err(CertificateError::DuplicateSigner { index: 0 })
        );
        let stranger = Certificate {
            signatures: vec![
                sign(0),
                sign(1),
                (9, ks[2].sign(domains::PBFT_MESSAGE, msg)),
            ],
        };
        assert!(matches!(
            stranger.verify(&set, domains::PBFT_MESSAGE, msg, 3, &v),
            Err(CertificateError::UnknownSigner { index: 9, .. })
        ));
        // A signature by index 2's key placed under index 3 is refused.
        let misattributed = Certificate {
            signatures: vec![
                sign(0),
                sign(1),
                (3, ks[2].sign(domains::PBFT_MESSAGE, msg)),
            ],
        };
        assert!(misattributed
            .verify(&set, domains::PBFT_MESSAGE, msg, 3, &v)
            .is_err());
    }

    #[test]
    fn caching_verifier_never_caches_failures() {
        let ks = keys(2);
        let v = CachingVerifier::new(2);
        let sig = ks[0].sign(domains::PBFT_MESSAGE, b"m");
        let id = ks[0].identity();
        for _ in 0..3 {
            v.verify(&id, domains::PBFT_MESSAGE, b"m", &sig).unwrap();
            assert!(v.verify(&id, domains::PBFT_MESSAGE, b"x", &sig).is_err());
            assert!(v
                .verify(&ks[1].identity(), domains::PBFT_MESSAGE, b"m", &sig)
                .is_err());
        }
        // Past capacity the cache is emptied and still answers correctly.
        let sig2 = ks[0].sign(domains::PBFT_MESSAGE, b"n");
        let sig3 = ks[0].sign(domains::PBFT_MESSAGE, b"o");
        v.verify(&id, domains::PBFT_MESSAGE, b"n", &sig2).unwrap();
        v.verify(&id, domains::PBFT_MESSAGE, b"o", &sig3).unwrap();
        assert!(v.verify(&id, domains::PBFT_MESSAGE, b"o", &sig2).is_err());
    }

    #[test]
    fn duplicate_members_refused() {
        let k = keys(1)[0].identity();
        assert!(matches!(
            ValidatorSet::new(vec![k, k]),
            Err(CertificateError::DuplicateMember(_))
        ));
        assert_eq!(ValidatorSet::new(vec![]), Err(CertificateError::EmptySet));
    }
}
