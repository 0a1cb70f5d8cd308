//! One-line trace summaries of the DPoS messages and evidence.

use super::*;

pub(super) fn evidence_summary(e: &v1::DposEvidence) -> String {
    use v1::dpos_evidence::Kind as E;
    match &e.kind {
        Some(E::Equivocation(x)) => {
            let (a, b) = (
                x.first.clone().unwrap_or_default(),
                x.second.clone().unwrap_or_default(),
            );
            format!(
                "equivocation(i{} h{} r{}/r{})",
                a.proposer, a.height, a.round, b.round
            )
        }
        Some(E::InvalidBlock(x)) => {
            let p = x.proposal.clone().unwrap_or_default();
            format!("invalid-block(i{} h{} r{})", p.proposer, p.height, p.round)
        }
        Some(E::WrongVerdict(x)) => {
            let v = x.vote.clone().unwrap_or_default();
            format!("wrong-verdict(i{} h{} r{})", v.voter, v.height, v.round)
        }
        Some(E::DoubleVote(x)) => {
            let v = x.first.clone().unwrap_or_default();
            format!("double-vote(i{} h{} r{})", v.voter, v.height, v.round)
        }
        None => "empty".into(),
    }
}

pub(super) fn summary(m: &v1::DposMessage) -> String {
    match &m.kind {
        Some(Kind::Proposal(p)) => {
            let pr = p.proposal.clone().unwrap_or_default();
            format!(
                "Proposal(h{},r{},{},pol{})",
                pr.height,
                pr.round,
                hex4(&pr.block_hash),
                pr.pol_round
            )
        }
        Some(Kind::Vote(v)) => format!(
            "{}(h{},r{},i{},{}{})",
            if v.kind == v1::DposVoteKind::Prevote as i32 {
                "Prevote"
            } else {
                "Precommit"
            },
            v.height,
            v.round,
            v.voter,
            if v.block_hash.is_empty() {
                "nil".into()
            } else {
                hex4(&v.block_hash)
            },
            if v.rejected.is_empty() {
                String::new()
            } else {
                format!(" reject {}", hex4(&v.rejected))
            }
        ),
        Some(Kind::Status(s)) => format!("Status(h{})", s.height),
        None => "Empty".into(),
    }
}
