//! Consortium-chain (DPoS) messages: the one way proposals and votes are signed and checked, block
//! hashing, and finality-certificate verification (used by the engine, block sync and the bridge).
//!
//! A proposal or vote is signed over its canonical bytes with `signature` cleared, under the "dpos
//! message" domain; the chain ID, height, round and signer index are inside the signed bytes, so a
//! signature cannot be replayed on another chain, height or round, or attributed to another
//! institution. Signers are named by their index in the consortium's institution registry, which
//! is append-only, so an index means the same identity forever.

use std::collections::BTreeSet;

use medchain_crypto::hash::{digest, domains};
use medchain_crypto::validators::{Signer, Verifier};
use medchain_crypto::{merkle, Hash32, Identity, Signature};

use crate::canonical::{Canonical, Hashed};
use crate::v1;
use crate::ProtoError;

/// The hash of a block: the digest of its header.
pub fn block_hash(header: &v1::DposBlockHeader) -> Hash32 {
    header.digest()
}

/// Merkle root over a block's items.
pub fn items_root(items: &[Vec<u8>]) -> Hash32 {
    merkle::root(items)
}

/// Identifies an item (a canonical transaction) for de-duplication.
pub fn item_id(item: &[u8]) -> Hash32 {
    digest(domains::DPOS_ITEM, item)
}

/// The digest the header commits to for the block's extras (parent certificate and evidence).
pub fn extras_digest(extras: Option<&v1::DposBlockExtras>) -> Hash32 {
    extras.cloned().unwrap_or_default().digest()
}

fn proposal_signing_bytes(p: &v1::DposProposal) -> Vec<u8> {
    let mut unsigned = p.clone();
    unsigned.signature.clear();
    unsigned.canonical_bytes()
}

fn vote_signing_bytes(v: &v1::DposVote) -> Vec<u8> {
    let mut unsigned = v.clone();
    unsigned.signature.clear();
    unsigned.canonical_bytes()
}

/// Builds and signs a proposal. `pol_round` is `Some(r)` when re-proposing a block locked in
/// round `r`.
pub fn sign_proposal(
    signer: &impl Signer,
    chain_id: &str,
    height: u64,
    round: u64,
    block_hash: &Hash32,
    pol_round: Option<u64>,
    proposer: u32,
) -> v1::DposProposal {
    let mut p = v1::DposProposal {
        chain_id: chain_id.to_string(),
        height,
        round,
        block_hash: block_hash.as_bytes().to_vec(),
        pol_round: pol_round.map_or(0, |r| r + 1),
        proposer,
        signature: Vec::new(),
    };
    p.signature = signer
        .sign(domains::DPOS_MESSAGE, &proposal_signing_bytes(&p))
        .as_bytes()
        .to_vec();
    p
}

/// The round whose prevotes justify a re-proposal, if any.
pub fn pol_round(p: &v1::DposProposal) -> Option<u64> {
    p.pol_round.checked_sub(1)
}

/// An unsigned vote, as a voter signs it and as a certificate verifier rebuilds it.
pub fn unsigned_vote(
    chain_id: &str,
    height: u64,
    round: u64,
    kind: v1::DposVoteKind,
    block_hash: Option<&Hash32>,
    rejected: Option<&Hash32>,
    voter: u32,
) -> v1::DposVote {
    v1::DposVote {
        chain_id: chain_id.to_string(),
        height,
        round,
        kind: kind as i32,
        block_hash: block_hash
            .map(|h| h.as_bytes().to_vec())
            .unwrap_or_default(),
        rejected: rejected.map(|h| h.as_bytes().to_vec()).unwrap_or_default(),
        voter,
        signature: Vec::new(),
    }
}

/// Signs a vote built by [`unsigned_vote`].
pub fn sign_vote(signer: &impl Signer, mut vote: v1::DposVote) -> v1::DposVote {
    vote.signature.clear();
    vote.signature = signer
        .sign(domains::DPOS_MESSAGE, &vote_signing_bytes(&vote))
        .as_bytes()
        .to_vec();
    vote
}

fn invalid(kind: &'static str, reason: impl Into<String>) -> ProtoError {
    ProtoError::Invalid {
        kind,
        reason: reason.into(),
    }
}

fn check_signature(
    kind: &'static str,
    signer: &Identity,
    bytes: &[u8],
    signature: &[u8],
    verifier: &impl Verifier,
) -> Result<(), ProtoError> {
    let sig = Signature::from_slice(signature).map_err(|source| ProtoError::InvalidField {
        kind,
        field: "signature",
        source,
    })?;
    verifier
        .verify(signer, domains::DPOS_MESSAGE, bytes, &sig)
        .map_err(|source| ProtoError::InvalidField {
            kind,
            field: "signature",
            source,
        })
}

/// Checks a proposal's chain, block-hash length and its signature by `signer` (the identity of
/// institution `p.proposer`).
pub fn verify_proposal(
    p: &v1::DposProposal,
    chain_id: &str,
    signer: &Identity,
    verifier: &impl Verifier,
) -> Result<Hash32, ProtoError> {
    const KIND: &str = "dpos proposal";
    if p.chain_id != chain_id {
        return Err(invalid(
            KIND,
            format!("for chain {:?}, this is {chain_id:?}", p.chain_id),
        ));
    }
    let hash = Hash32::from_slice(&p.block_hash).map_err(|source| ProtoError::InvalidField {
        kind: KIND,
        field: "block_hash",
        source,
    })?;
    check_signature(
        KIND,
        signer,
        &proposal_signing_bytes(p),
        &p.signature,
        verifier,
    )?;
    Ok(hash)
}

/// What a checked vote says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VoteValue {
    pub kind: v1::DposVoteKind,
    /// `None` is nil.
    pub block: Option<Hash32>,
    /// The block the voter judged invalid (only on a nil vote).
    pub rejected: Option<Hash32>,
}

fn optional_hash(
    kind: &'static str,
    field: &'static str,
    bytes: &[u8],
) -> Result<Option<Hash32>, ProtoError> {
    if bytes.is_empty() {
        return Ok(None);
    }
    Hash32::from_slice(bytes)
        .map(Some)
        .map_err(|source| ProtoError::InvalidField {
            kind,
            field,
            source,
        })
}

/// Checks a vote's chain, form and signature by `signer` (the identity of institution `v.voter`).
pub fn verify_vote(
    v: &v1::DposVote,
    chain_id: &str,
    signer: &Identity,
    verifier: &impl Verifier,
) -> Result<VoteValue, ProtoError> {
    const KIND: &str = "dpos vote";
    if v.chain_id != chain_id {
        return Err(invalid(
            KIND,
            format!("for chain {:?}, this is {chain_id:?}", v.chain_id),
        ));
    }
    let kind = match v1::DposVoteKind::try_from(v.kind) {
        Ok(k @ (v1::DposVoteKind::Prevote | v1::DposVoteKind::Precommit)) => k,
        _ => return Err(invalid(KIND, format!("unknown vote kind {}", v.kind))),
    };
    let block = optional_hash(KIND, "block_hash", &v.block_hash)?;
    let rejected = optional_hash(KIND, "rejected", &v.rejected)?;
    if block.is_some() && rejected.is_some() {
        return Err(invalid(KIND, "a vote both for and against a block"));
    }
    check_signature(KIND, signer, &vote_signing_bytes(v), &v.signature, verifier)?;
    Ok(VoteValue {
        kind,
        block,
        rejected,
    })
}

/// Verifies a finality certificate: precommits for `cert.block_hash` at (`cert.height`,
/// `cert.round`) from at least `threshold` distinct members of the auditor set, each member given
/// as (institution index, identity). Every signature present must verify.
pub fn verify_certificate(
    cert: &v1::DposFinalityCertificate,
    chain_id: &str,
    auditors: &[(u32, Identity)],
    threshold: usize,
    verifier: &impl Verifier,
) -> Result<Hash32, ProtoError> {
    const KIND: &str = "dpos finality certificate";
    let hash = Hash32::from_slice(&cert.block_hash).map_err(|source| ProtoError::InvalidField {
        kind: KIND,
        field: "block_hash",
        source,
    })?;
    let mut seen = BTreeSet::new();
    for s in &cert.precommits {
        let Some((_, identity)) = auditors.iter().find(|(i, _)| *i == s.validator) else {
            return Err(invalid(
                KIND,
                format!(
                    "signer {} is not an auditor at height {}",
                    s.validator, cert.height
                ),
            ));
        };
        if !seen.insert(s.validator) {
            return Err(invalid(
                KIND,
                format!("signer {} appears twice", s.validator),
            ));
        }
        let vote = unsigned_vote(
            chain_id,
            cert.height,
            cert.round,
            v1::DposVoteKind::Precommit,
            Some(&hash),
            None,
            s.validator,
        );
        check_signature(
            KIND,
            identity,
            &vote_signing_bytes(&vote),
            &s.signature,
            verifier,
        )?;
    }
    if seen.len() < threshold {
        return Err(invalid(
            KIND,
            format!(
                "{} precommits, more than 2/3 of {} auditors ({threshold}) are needed",
                seen.len(),
                auditors.len()
            ),
        ));
    }
    Ok(hash)
}

/// More than 2/3 of `n`: the finality threshold of an auditor set of size `n`.
pub fn finality_threshold(n: usize) -> usize {
    n * 2 / 3 + 1
}

#[cfg(test)]
mod tests {
    use super::*;
    use medchain_crypto::validators::EcdsaVerifier;
    use medchain_crypto::SigningKey;

    fn key(i: u8) -> SigningKey {
        SigningKey::from_bytes(&[i + 1; 32]).unwrap()
    }

    #[test]
    fn thresholds_are_more_than_two_thirds() {
        for (n, t) in [(1, 1), (3, 3), (4, 3), (6, 5), (7, 5), (20, 14), (21, 15)] {
            assert_eq!(finality_threshold(n), t, "n={n}");
            assert!(3 * finality_threshold(n) > 2 * n);
        }
    }

    #[test]
    fn proposals_and_votes_bind_chain_and_signer() {
        let h = Hash32::from_slice(&[7; 32]).unwrap();
        let p = sign_proposal(&key(0), "c", 3, 1, &h, Some(0), 0);
        assert_eq!(
            verify_proposal(&p, "c", &key(0).identity(), &EcdsaVerifier).unwrap(),
            h
        );
        assert!(verify_proposal(&p, "other", &key(0).identity(), &EcdsaVerifier).is_err());
        assert!(verify_proposal(&p, "c", &key(1).identity(), &EcdsaVerifier).is_err());
        let mut moved = p.clone();
        moved.round = 2;
        assert!(verify_proposal(&moved, "c", &key(0).identity(), &EcdsaVerifier).is_err());
        assert_eq!(pol_round(&p), Some(0));

        let v = sign_vote(
            &key(1),
            unsigned_vote("c", 3, 1, v1::DposVoteKind::Prevote, None, Some(&h), 1),
        );
        let value = verify_vote(&v, "c", &key(1).identity(), &EcdsaVerifier).unwrap();
        assert_eq!(value.block, None);
        assert_eq!(value.rejected, Some(h));
        let mut both = v.clone();
        both.block_hash = h.as_bytes().to_vec();
        assert!(verify_vote(&both, "c", &key(1).identity(), &EcdsaVerifier).is_err());
    }

    #[test]
    fn certificates_need_distinct_auditors_over_the_threshold() {
        let h = Hash32::from_slice(&[9; 32]).unwrap();
        let auditors: Vec<(u32, Identity)> =
            (0..4).map(|i| (10 + i, key(i as u8).identity())).collect();
        let sig = |i: u32| {
            let v = sign_vote(
                &key((i - 10) as u8),
                unsigned_vote("c", 5, 2, v1::DposVoteKind::Precommit, Some(&h), None, i),
            );
            v1::IndexedSignature {
                validator: i,
                signature: v.signature,
            }
        };
        let mut cert = v1::DposFinalityCertificate {
            height: 5,
            round: 2,
            block_hash: h.as_bytes().to_vec(),
            precommits: vec![sig(10), sig(11), sig(12)],
        };
        assert_eq!(
            verify_certificate(&cert, "c", &auditors, 3, &EcdsaVerifier).unwrap(),
            h
        );
        cert.precommits[2] = sig(11);
        assert!(verify_certificate(&cert, "c", &auditors, 3, &EcdsaVerifier)
            .unwrap_err()
            .to_string()
            .contains("twice"));
        cert.precommits.truncate(2);
        assert!(verify_certificate(&cert, "c", &auditors, 3, &EcdsaVerifier).is_err());
        cert.precommits = vec![sig(10), sig(11), sig(12)];
        cert.round = 3;
        assert!(verify_certificate(&cert, "c", &auditors, 3, &EcdsaVerifier).is_err());
    }
}
