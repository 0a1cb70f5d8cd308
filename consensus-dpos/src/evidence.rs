//! Misbehaviour evidence: building it when the engine sees it, and checking it when a block
//! carries it. Evidence is self-contained (signed messages plus, where validity matters, the block
//! content), so its check is a pure function of the evidence and the institutions' identities:
//! every node reaches the same verdict at any later time.

use medchain_crypto::hash::{digest_parts, domains};
use medchain_crypto::validators::Verifier;
use medchain_crypto::Hash32;
use medchain_proto::dpos::{block_hash, verify_proposal, verify_vote};
use medchain_proto::v1::{self, dpos_evidence::Kind};

use crate::chain::{check_content, ChainState};
use crate::params::Params;
use crate::registry::Offence;
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

/// Checks `e` for inclusion in a block at `at_height` on top of `chain`.
pub fn verify_evidence(
    e: &v1::DposEvidence,
    chain: &ChainState,
    at_height: u64,
    params: &Params,
    app: &impl Application,
    verifier: &impl Verifier,
) -> Result<CheckedEvidence, String> {
    let reg = &chain.registry;
    let chain_id = chain.chain_id.as_str();
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
                id: id(b"equivocation", a.proposer, a.height, a.round, 0),
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
                id: id(b"invalid block", p.proposer, p.height, p.round, 0),
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
                id: id(b"wrong verdict", v.voter, v.height, v.round, v.kind),
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
                id: id(b"double vote", a.voter, a.height, a.round, a.kind),
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
