//! Validation of view-change and new-view messages, and the new-view plan (rule 9): every replica
//! recomputes the plan from the view changes a new view carries, so a Byzantine new primary cannot
//! drop or reorder a prepared batch.

use std::collections::{BTreeMap, BTreeSet};

use medchain_crypto::validators::Verifier;
use medchain_crypto::Hash32;
use medchain_proto::pbft::verify_signature;
use medchain_proto::v1::{self, pbft_message::Kind};
use medchain_proto::Hashed;

use crate::config::Config;
use crate::ReplicaId;

/// The empty batch proposed for a sequence number nobody prepared.
pub fn null_batch() -> v1::PbftBatch {
    v1::PbftBatch {
        timestamp_ms: 0,
        items: Vec::new(),
        proposer: 0,
    }
}

pub fn digest_field(bytes: &[u8]) -> Result<Hash32, String> {
    Hash32::from_slice(bytes).map_err(|e| e.to_string())
}

/// A verified stable checkpoint claim.
#[derive(Clone, Debug)]
pub struct CheckpointClaim {
    pub seq: u64,
    pub digest: Hash32,
    pub proof: Vec<v1::PbftMessage>,
}

/// Verifies that `proof` holds a quorum of distinct, valid `Checkpoint(seq, digest)`.
pub fn verify_checkpoint_proof(
    cfg: &Config,
    verifier: &impl Verifier,
    seq: u64,
    digest: &Hash32,
    proof: &[v1::PbftMessage],
) -> Result<(), String> {
    if seq == 0 {
        return if *digest == Hash32::ZERO {
            Ok(())
        } else {
            Err("checkpoint 0 must have the genesis digest".into())
        };
    }
    // At most one message per replica can count: a longer proof is padding that would only make
    // every receiver verify more signatures.
    if proof.len() > cfg.n() {
        return Err(format!(
            "checkpoint proof of {} messages, more than the {} replicas",
            proof.len(),
            cfg.n()
        ));
    }
    let mut signers = BTreeSet::new();
    for m in proof {
        verify_signature(m, &cfg.chain_id, &cfg.validators, verifier).map_err(|e| e.to_string())?;
        match &m.kind {
            Some(Kind::Checkpoint(c)) if c.seq == seq && c.state_digest == digest.as_bytes() => {
                signers.insert(m.replica);
            }
            _ => return Err("checkpoint proof holds a non-matching message".into()),
        }
    }
    if signers.len() < cfg.quorum() {
        return Err(format!(
            "checkpoint proof has {} signers, {} needed",
            signers.len(),
            cfg.quorum()
        ));
    }
    Ok(())
}

/// A prepared certificate extracted from a view change.
#[derive(Clone, Debug)]
pub struct PreparedClaim {
    pub view: u64,
    pub seq: u64,
    pub digest: Hash32,
    pub batch: v1::PbftBatch,
}

/// Verifies a prepared certificate: the pre-prepare comes from the primary of its view and carries
/// a batch with its digest, and `q - 1` distinct other replicas prepared the same (view, seq,
/// digest).
pub fn verify_prepared(
    cfg: &Config,
    verifier: &impl Verifier,
    pre_prepare: &v1::PbftMessage,
    prepares: &[v1::PbftMessage],
) -> Result<PreparedClaim, String> {
    verify_signature(pre_prepare, &cfg.chain_id, &cfg.validators, verifier)
        .map_err(|e| e.to_string())?;
    let Some(Kind::PrePrepare(pp)) = &pre_prepare.kind else {
        return Err("prepared proof does not start with a pre-prepare".into());
    };
    if pre_prepare.replica != cfg.primary(pp.view) {
        return Err("pre-prepare not from the primary of its view".into());
    }
    let digest = digest_field(&pp.digest)?;
    let batch = pre_prepare
        .batch
        .clone()
        .ok_or("prepared proof's pre-prepare lacks its batch")?;
    if batch.digest() != digest {
        return Err("batch does not match the pre-prepare digest".into());
    }
    let mut signers = BTreeSet::new();
    for m in prepares {
        verify_signature(m, &cfg.chain_id, &cfg.validators, verifier).map_err(|e| e.to_string())?;
        match &m.kind {
            Some(Kind::Prepare(p))
                if p.view == pp.view && p.seq == pp.seq && p.digest == pp.digest =>
            {
                if m.replica != pre_prepare.replica {
                    signers.insert(m.replica);
                }
            }
            _ => return Err("prepared proof holds a non-matching prepare".into()),
        }
    }
    if signers.len() < cfg.prepares_needed() {
        return Err(format!(
            "prepared proof has {} prepares, {} needed",
            signers.len(),
            cfg.prepares_needed()
        ));
    }
    Ok(PreparedClaim {
        view: pp.view,
        seq: pp.seq,
        digest,
        batch,
    })
}

/// A fully verified view change.
#[derive(Clone, Debug)]
pub struct VerifiedViewChange {
    pub sender: ReplicaId,
    pub new_view: u64,
    pub stable: CheckpointClaim,
    pub prepared: Vec<PreparedClaim>,
}

/// Verifies the contents of a view-change message whose own signature was already checked.
pub fn verify_view_change(
    cfg: &Config,
    verifier: &impl Verifier,
    msg: &v1::PbftMessage,
) -> Result<VerifiedViewChange, String> {
    let Some(Kind::ViewChange(vc)) = &msg.kind else {
        return Err("not a view change".into());
    };
    let stable_digest = digest_field(&vc.stable_digest)?;
    verify_checkpoint_proof(
        cfg,
        verifier,
        vc.stable_seq,
        &stable_digest,
        &vc.checkpoint_proof,
    )?;
    let mut seqs = BTreeSet::new();
    let mut prepared = Vec::new();
    for p in &vc.prepared {
        let pp = p
            .pre_prepare
            .as_ref()
            .ok_or("prepared proof lacks its pre-prepare")?;
        let claim = verify_prepared(cfg, verifier, pp, &p.prepares)?;
        if claim.view >= vc.new_view {
            return Err("prepared proof from a view not below the new view".into());
        }
        if claim.seq <= vc.stable_seq || claim.seq > vc.stable_seq + cfg.window {
            return Err(format!(
                "prepared proof for seq {} outside the window",
                claim.seq
            ));
        }
        if !seqs.insert(claim.seq) {
            return Err(format!("two prepared proofs for seq {}", claim.seq));
        }
        prepared.push(claim);
    }
    Ok(VerifiedViewChange {
        sender: msg.replica,
        new_view: vc.new_view,
        stable: CheckpointClaim {
            seq: vc.stable_seq,
            digest: stable_digest,
            proof: vc.checkpoint_proof.clone(),
        },
        prepared,
    })
}

/// What a new view must re-propose.
#[derive(Clone, Debug)]
pub struct NewViewPlan {
    /// The highest stable checkpoint among the view changes.
    pub stable: CheckpointClaim,
    /// For each seq above it up to the highest prepared: the digest and batch to propose.
    pub proposals: BTreeMap<u64, (Hash32, v1::PbftBatch)>,
}

/// Computes the plan from (at least a quorum of) verified view changes.
pub fn plan(vcs: &[VerifiedViewChange]) -> NewViewPlan {
    let stable = vcs
        .iter()
        .map(|v| &v.stable)
        .max_by_key(|s| s.seq)
        .expect("a plan needs at least one view change")
        .clone();
    let mut best: BTreeMap<u64, &PreparedClaim> = BTreeMap::new();
    for claim in vcs.iter().flat_map(|v| &v.prepared) {
        if claim.seq <= stable.seq {
            continue;
        }
        match best.get(&claim.seq) {
            Some(b) if b.view >= claim.view => {}
            _ => {
                best.insert(claim.seq, claim);
            }
        }
    }
    let max_seq = best.keys().next_back().copied().unwrap_or(stable.seq);
    let proposals = (stable.seq + 1..=max_seq)
        .map(|s| {
            let entry = match best.get(&s) {
                Some(c) => (c.digest, c.batch.clone()),
                None => {
                    let b = null_batch();
                    (b.digest(), b)
                }
            };
            (s, entry)
        })
        .collect();
    NewViewPlan { stable, proposals }
}

/// Verifies a new-view message (its own signature already checked): it comes from the primary of
/// its view, carries a quorum of valid view changes for that view from distinct replicas, and its
/// pre-prepares are exactly the plan those view changes imply.
pub fn verify_new_view(
    cfg: &Config,
    verifier: &impl Verifier,
    msg: &v1::PbftMessage,
) -> Result<(u64, NewViewPlan, Vec<v1::PbftMessage>), String> {
    let Some(Kind::NewView(nv)) = &msg.kind else {
        return Err("not a new view".into());
    };
    if msg.replica != cfg.primary(nv.view) {
        return Err("new view not from the primary of its view".into());
    }
    let mut senders = BTreeSet::new();
    let mut vcs = Vec::new();
    for m in &nv.view_changes {
        verify_signature(m, &cfg.chain_id, &cfg.validators, verifier).map_err(|e| e.to_string())?;
        let vc = verify_view_change(cfg, verifier, m)?;
        if vc.new_view != nv.view {
            return Err("new view carries a view change for another view".into());
        }
        if senders.insert(vc.sender) {
            vcs.push(vc);
        }
    }
    if vcs.len() < cfg.quorum() {
        return Err(format!(
            "new view carries {} view changes, {} needed",
            vcs.len(),
            cfg.quorum()
        ));
    }
    let plan = plan(&vcs);
    if cfg.mutant(crate::config::Mutant::NoReproposalCheck) {
        return Ok((nv.view, plan, nv.pre_prepares.clone()));
    }
    if nv.pre_prepares.len() != plan.proposals.len() {
        return Err("new view's pre-prepares differ from the plan".into());
    }
    for (m, (seq, (digest, _))) in nv.pre_prepares.iter().zip(&plan.proposals) {
        verify_signature(m, &cfg.chain_id, &cfg.validators, verifier).map_err(|e| e.to_string())?;
        let ok = match &m.kind {
            Some(Kind::PrePrepare(pp)) => {
                m.replica == msg.replica
                    && pp.view == nv.view
                    && pp.seq == *seq
                    && pp.digest == digest.as_bytes()
                    && m.batch.as_ref().map(|b| b.digest()) == Some(*digest)
            }
            _ => false,
        };
        if !ok {
            return Err(format!(
                "new view's pre-prepare for seq {seq} differs from the plan"
            ));
        }
    }
    Ok((nv.view, plan, nv.pre_prepares.clone()))
}
