//! Misbehaviour evidence: building it when the engine sees it, and checking it when a block
//! carries it. Evidence is self-contained (signed messages plus, where validity matters, the block
//! content), so its check is a pure function of the evidence and the institutions' identities:
//! every node reaches the same verdict at any later time.

use medchain_crypto::hash::{digest_parts, domains};
use medchain_crypto::validators::Verifier;
use medchain_crypto::Hash32;
use medchain_proto::dpos::{block_hash, verify_proposal, verify_vote};
use medchain_proto::v1::{self, dpos_evidence::Kind};

use crate::content::check_content;
use crate::params::Params;
use crate::registry::{Offence, Registry};
use crate::Application;

/// Evidence that checked out: who pays, for what, and its identity (so it is applied once).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckedEvidence {
    pub id: Hash32,
    pub offender: u32,
    pub offence: Offence,
    pub about_height: u64,
}

fn id(tag: &[u8], who: u32, height: u64, round: u64, kind: i32) -> Hash32 {
    digest_parts(
        domains::DPOS_EVIDENCE,
        &[
            tag,
            &who.to_be_bytes(),
            &height.to_be_bytes(),
            &round.to_be_bytes(),
            &kind.to_be_bytes(),
        ],
    )
}

/// The offence `e` claims (its kind, offender, height, round and vote kind), whether or not it
/// checks out. Two pieces of evidence of one offence (a representative that signed three
/// proposals in one slot gives two equivocation pairs) have one id: a pool keeps one entry per id
/// and a block may carry each id once, so the offence is charged once and no honest proposer can
/// build a block that its peers refuse for repeating an id.
pub fn offence_id(e: &v1::DposEvidence) -> Option<Hash32> {
    let p = |p: &Option<v1::DposProposal>| p.as_ref().map(|p| (p.proposer, p.height, p.round));
    let v = |v: &Option<v1::DposVote>| v.as_ref().map(|v| (v.voter, v.height, v.round, v.kind));
    Some(match e.kind.as_ref()? {
        Kind::Equivocation(x) => {
            let (who, height, round) = p(&x.first)?;
            id(b"equivocation", who, height, round, 0)
        }
        Kind::InvalidBlock(x) => {
            let (who, height, round) = p(&x.proposal)?;
            id(b"invalid block", who, height, round, 0)
        }
        Kind::WrongVerdict(x) => {
            let (who, height, round, kind) = v(&x.vote)?;
            id(b"wrong verdict", who, height, round, kind)
        }
        Kind::DoubleVote(x) => {
            let (who, height, round, kind) = v(&x.first)?;
            id(b"double vote", who, height, round, kind)
        }
    })
}

/// Checks `e` for inclusion in a block at `at_height` of chain `chain_id`, whose institutions are
/// those of `reg`.
pub fn verify_evidence(
    e: &v1::DposEvidence,
    chain_id: &str,
    reg: &Registry,
    at_height: u64,
    params: &Params,
    app: &impl Application,
    verifier: &impl Verifier,
) -> Result<CheckedEvidence, String> {
    let identity = |i: u32| {
        reg.identity(i)
            .copied()
            .ok_or_else(|| format!("unknown institution {i}"))
    };
    let proposal = |p: &Option<v1::DposProposal>| -> Result<(v1::DposProposal, Hash32), String> {
        let p = p.clone().ok_or("missing proposal")?;
        let hash = verify_proposal(&p, chain_id, &identity(p.proposer)?, verifier)
            .map_err(|e| e.to_string())?;
        Ok((p, hash))
    };
    let vote = |v: &Option<v1::DposVote>| {
        let v = v.clone().ok_or("missing vote")?;
        let value =
            verify_vote(&v, chain_id, &identity(v.voter)?, verifier).map_err(|e| e.to_string())?;
        Ok::<_, String>((v, value))
    };
    let content_valid = |c: &Option<v1::DposBlockContent>, hash: &Hash32, height: u64| {
        let c = c.clone().ok_or("missing block content")?;
        let header = c.header.clone().ok_or("missing header")?;
        if block_hash(&header) != *hash || header.height != height {
            return Err("the content is not the proposed block".to_string());
        }
        Ok(check_content(chain_id, &header, &c.items, params, app).is_ok())
    };
    let id = offence_id(e).ok_or("empty or incomplete evidence")?;
    let checked = match e.kind.as_ref().ok_or("empty evidence")? {
        Kind::Equivocation(x) => {
            let (a, ha) = proposal(&x.first)?;
            let (b, hb) = proposal(&x.second)?;
            if a.proposer != b.proposer || a.height != b.height || a.round != b.round {
                return Err("the proposals are for different slots or proposers".into());
            }
            if ha == hb {
                return Err("the proposals are for the same block".into());
            }
            CheckedEvidence {
                id,
                offender: a.proposer,
                offence: Offence::Equivocation,
                about_height: a.height,
            }
        }
        Kind::InvalidBlock(x) => {
            let (p, hash) = proposal(&x.proposal)?;
            if content_valid(&x.content, &hash, p.height)? {
                return Err("the proposed block is valid".into());
            }
            CheckedEvidence {
                id,
                offender: p.proposer,
                offence: Offence::InvalidBlock,
                about_height: p.height,
            }
        }
        Kind::WrongVerdict(x) => {
            let (v, value) = vote(&x.vote)?;
            let (p, hash) = proposal(&x.proposal)?;
            if v.height != p.height {
                return Err("the vote and the proposal are for different heights".into());
            }
            let valid = content_valid(&x.content, &hash, p.height)?;
            let wrong =
                (value.block == Some(hash) && !valid) || (value.rejected == Some(hash) && valid);
            if !wrong {
                return Err("the vote agrees with the block's validity".into());
            }
            CheckedEvidence {
                id,
                offender: v.voter,
                offence: Offence::WrongVerdict,
                about_height: v.height,
            }
        }
        Kind::DoubleVote(x) => {
            let (a, va) = vote(&x.first)?;
            let (b, vb) = vote(&x.second)?;
            if a.voter != b.voter || a.height != b.height || a.round != b.round || a.kind != b.kind
            {
                return Err("the votes are from different voters or rounds".into());
            }
            if (va.block, va.rejected) == (vb.block, vb.rejected) {
                return Err("the votes agree".into());
            }
            CheckedEvidence {
                id,
                offender: a.voter,
                offence: Offence::DoubleVote,
                about_height: a.height,
            }
        }
    };
    if checked.about_height > at_height
        || checked.about_height.saturating_add(params.evidence_max_age) < at_height
    {
        return Err(format!(
            "evidence about height {} cannot be included at height {at_height} (max age {})",
            checked.about_height, params.evidence_max_age
        ));
    }
    Ok(checked)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chain::ChainState;
    use crate::local_cluster::{test_genesis, test_keys, test_params, MemoryLedger};
    use medchain_crypto::validators::EcdsaVerifier;
    use medchain_proto::dpos::{items_root, sign_proposal, sign_vote, unsigned_vote};
    use medchain_proto::v1::dpos_evidence::Kind;

    fn setup() -> (Vec<medchain_crypto::SigningKey>, ChainState, MemoryLedger) {
        let keys = test_keys(7);
        let state = ChainState::genesis(&test_genesis(&keys, 4, 3, test_params())).unwrap();
        let ledger = MemoryLedger {
            blocks: Vec::new(),
            state: state.clone(),
            items: Default::default(),
            persisted: None,
        };
        (keys, state, ledger)
    }

    fn content(items: &[&[u8]]) -> v1::DposBlockContent {
        let items: Vec<Vec<u8>> = items.iter().map(|i| i.to_vec()).collect();
        v1::DposBlockContent {
            header: Some(v1::DposBlockHeader {
                chain_id: "consortium-test".into(),
                height: 1,
                parent_hash: vec![0; 32],
                timestamp_ms: 5,
                producer: 0,
                items_root: items_root(&items).as_bytes().to_vec(),
                item_count: items.len() as u32,
                extras_digest: vec![0; 32],
            }),
            items,
        }
    }

    fn propose(
        keys: &[medchain_crypto::SigningKey],
        who: u32,
        c: &v1::DposBlockContent,
    ) -> v1::DposProposal {
        let hash = block_hash(c.header.as_ref().unwrap());
        sign_proposal(
            &keys[who as usize],
            "consortium-test",
            1,
            0,
            &hash,
            None,
            who,
        )
    }

    fn check(e: Kind, state: &ChainState, app: &MemoryLedger) -> Result<CheckedEvidence, String> {
        let p = test_params();
        verify_evidence(
            &v1::DposEvidence { kind: Some(e) },
            &state.chain_id,
            &state.registry,
            1,
            &p,
            app,
            &EcdsaVerifier,
        )
    }

    #[test]
    fn equivocation_needs_two_signed_blocks_for_one_slot() {
        let (keys, state, app) = setup();
        let a = propose(&keys, 2, &content(&[b"x"]));
        let b = propose(&keys, 2, &content(&[b"y"]));
        let e = |first: &v1::DposProposal, second: &v1::DposProposal| {
            Kind::Equivocation(v1::DposEquivocation {
                first: Some(first.clone()),
                second: Some(second.clone()),
            })
        };
        let ok = check(e(&a, &b), &state, &app).unwrap();
        assert_eq!((ok.offender, ok.offence), (2, Offence::Equivocation));
        assert!(check(e(&a, &a), &state, &app)
            .unwrap_err()
            .contains("same block"));
        let other = propose(&keys, 3, &content(&[b"y"]));
        assert!(check(e(&a, &other), &state, &app).is_err());
        let mut forged = b.clone();
        forged.signature[10] ^= 1;
        assert!(check(e(&a, &forged), &state, &app).is_err());
    }

    #[test]
    fn invalid_block_evidence_is_judged_by_content() {
        let (keys, state, app) = setup();
        let bad = content(&[b"bad item"]);
        let e = |c: &v1::DposBlockContent| {
            Kind::InvalidBlock(v1::DposInvalidBlock {
                proposal: Some(propose(&keys, 1, c)),
                content: Some(c.clone()),
            })
        };
        assert_eq!(
            check(e(&bad), &state, &app).unwrap().offence,
            Offence::InvalidBlock
        );
        let good = content(&[b"fine"]);
        assert!(check(e(&good), &state, &app).unwrap_err().contains("valid"));
    }

    #[test]
    fn wrong_verdicts_are_votes_against_the_content() {
        let (keys, state, app) = setup();
        let good = content(&[b"fine"]);
        let bad = content(&[b"bad"]);
        let auditor = state.registry.atn()[0];
        let vote = |c: &v1::DposBlockContent, reject: bool| {
            let hash = block_hash(c.header.as_ref().unwrap());
            let (block, rejected) = if reject {
                (None, Some(&hash))
            } else {
                (Some(&hash), None)
            };
            sign_vote(
                &keys[auditor as usize],
                unsigned_vote(
                    "consortium-test",
                    1,
                    0,
                    v1::DposVoteKind::Prevote,
                    block,
                    rejected,
                    auditor,
                ),
            )
        };
        let e = |c: &v1::DposBlockContent, reject: bool| {
            Kind::WrongVerdict(v1::DposWrongVerdict {
                vote: Some(vote(c, reject)),
                proposal: Some(propose(&keys, 1, c)),
                content: Some(c.clone()),
            })
        };
        assert_eq!(
            check(e(&bad, false), &state, &app).unwrap().offender,
            auditor
        );
        assert_eq!(
            check(e(&good, true), &state, &app).unwrap().offence,
            Offence::WrongVerdict
        );
        assert!(check(e(&good, false), &state, &app).is_err());
        assert!(check(e(&bad, true), &state, &app).is_err());
    }

    #[test]
    fn old_evidence_is_refused() {
        let (keys, state, app) = setup();
        let a = propose(&keys, 2, &content(&[b"x"]));
        let b = propose(&keys, 2, &content(&[b"y"]));
        let e = v1::DposEvidence {
            kind: Some(Kind::Equivocation(v1::DposEquivocation {
                first: Some(a),
                second: Some(b),
            })),
        };
        let p = test_params();
        let late = 1 + p.evidence_max_age + 1;
        let err = verify_evidence(
            &e,
            &state.chain_id,
            &state.registry,
            late,
            &p,
            &app,
            &EcdsaVerifier,
        )
        .unwrap_err();
        assert!(err.contains("max age"), "{err}");
    }
}
