//! The final chain as the engine sees it: the tip, the certificate that finalized it, the sets
//! that certified it, and the credit registry. Block checking and block application live here so
//! that consensus, block sync and a restarted node all use one path.

use std::collections::BTreeSet;

use medchain_crypto::hash::{digest, domains};
use medchain_crypto::validators::Verifier;
use medchain_crypto::Hash32;
use medchain_proto::canonical::Canonical;
use medchain_proto::dpos::{block_hash, extras_digest, finality_threshold, verify_certificate};
use medchain_proto::v1;
use serde::{Deserialize, Serialize};

use crate::content::check_content;
use crate::evidence::{verify_evidence, CheckedEvidence};
use crate::mutant::Mutant;
use crate::params::{Genesis, Params};
use crate::registry::{Offence, Registry};
use crate::{Application, DposError};

/// What the engine knows of the final chain. The driver stores it atomically with each final block
/// ([`crate::Action::Finalize`]) and hands it back to [`crate::Engine::restore`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChainState {
    pub chain_id: String,
    /// Height of the last final block (0: genesis).
    pub height: u64,
    pub last_hash: [u8; 32],
    pub last_timestamp_ms: u64,
    /// Canonical bytes of the last block's finality certificate (empty at genesis). The next
    /// block must carry it (or another valid one for the same block).
    pub last_certificate: Vec<u8>,
    /// The auditors and the production order at `height`: the next block's parent certificate is
    /// checked against them, and its missed slots charged from them.
    pub certifier_atn: Vec<u32>,
    pub certifier_rpn: Vec<u32>,
    pub registry: Registry,
    /// Finality with half the auditors instead of more than two thirds. Never stored; only for
    /// showing that the simulator's checkers catch what a wrong threshold breaks.
    #[serde(skip)]
    pub broken_threshold_for_checker_tests: bool,
    /// A deliberate engine bug for the mutation check; never stored.
    #[serde(skip)]
    mutant: Option<Mutant>,
}

/// Why a block was not accepted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BlockFault {
    /// Its content is invalid whatever the context (bad items, wrong Merkle root, too many items):
    /// provable with the block alone, so whoever proposed or voted for it can be penalized.
    Invalid(String),
    /// It does not fit this chain now (wrong parent, height, certificate, evidence, timestamp):
    /// ignored, never penalized.
    Unacceptable(String),
}

impl std::fmt::Display for BlockFault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BlockFault::Invalid(r) => write!(f, "invalid block: {r}"),
            BlockFault::Unacceptable(r) => write!(f, "unacceptable block: {r}"),
        }
    }
}

/// A block that passed [`ChainState::check_block`], with its evidence verified.
#[derive(Clone, Debug)]
pub struct CheckedBlock {
    pub hash: Hash32,
    pub evidence: Vec<CheckedEvidence>,
}

impl ChainState {
    pub fn genesis(genesis: &Genesis) -> Result<Self, DposError> {
        let registry = Registry::genesis(genesis)?;
        Ok(ChainState {
            chain_id: genesis.chain_id.clone(),
            height: 0,
            last_hash: [0; 32],
            last_timestamp_ms: genesis.genesis_time_ms,
            last_certificate: Vec::new(),
            certifier_atn: registry.atn().to_vec(),
            certifier_rpn: registry.rpn().to_vec(),
            registry,
            broken_threshold_for_checker_tests: false,
            mutant: None,
        })
    }

    /// Switches on a deliberate bug (see [`Mutant`]) in this state and every state that follows
    /// it. Only for the simulator's mutation check.
    #[doc(hidden)]
    pub fn with_mutant_for_checker_tests(mut self, mutant: Mutant) -> Self {
        self.mutant = Some(mutant);
        self
    }

    pub(crate) fn mutant(&self, m: Mutant) -> bool {
        self.mutant == Some(m)
    }

    pub fn last_hash(&self) -> Hash32 {
        Hash32::from_slice(&self.last_hash).unwrap_or(Hash32::ZERO)
    }

    /// Votes needed to finalize the next block.
    pub fn quorum(&self) -> usize {
        self.threshold(self.registry.atn().len())
    }

    fn threshold(&self, auditors: usize) -> usize {
        if self.broken_threshold_for_checker_tests {
            (auditors / 2).max(1)
        } else {
            finality_threshold(auditors)
        }
    }

    /// A digest of the whole state: honest nodes at one height hold equal digests.
    pub fn digest(&self) -> Hash32 {
        let mut bytes = Vec::new();
        bytes.extend_from_slice(self.chain_id.as_bytes());
        bytes.push(0);
        bytes.extend_from_slice(&self.height.to_be_bytes());
        bytes.extend_from_slice(&self.last_hash);
        bytes.extend_from_slice(&self.last_timestamp_ms.to_be_bytes());
        for set in [&self.certifier_atn, &self.certifier_rpn] {
            bytes.extend_from_slice(&(set.len() as u64).to_be_bytes());
            for i in set {
                bytes.extend_from_slice(&i.to_be_bytes());
            }
        }
        self.registry.digest_into(&mut bytes);
        digest(domains::DPOS_STATE, &bytes)
    }

    /// Verifies a certificate for the next height against the current auditor set.
    pub fn check_certificate(
        &self,
        cert: &v1::DposFinalityCertificate,
        verifier: &impl Verifier,
    ) -> Result<Hash32, String> {
        if cert.height != self.height + 1 {
            return Err(format!(
                "certificate for height {}, expected {}",
                cert.height,
                self.height + 1
            ));
        }
        verify_certificate(
            cert,
            &self.chain_id,
            &self.registry.auditor_keys(),
            self.quorum(),
            verifier,
        )
        .map_err(|e| e.to_string())
    }

    /// Checks a block proposed for the next height: structure and links (else
    /// [`BlockFault::Unacceptable`]), then content (else [`BlockFault::Invalid`]).
    pub fn check_block(
        &self,
        block: &v1::DposBlock,
        params: &Params,
        app: &impl Application,
        verifier: &impl Verifier,
    ) -> Result<CheckedBlock, BlockFault> {
        let bad = |r: String| Err(BlockFault::Unacceptable(r));
        let Some(header) = &block.header else {
            return bad("no header".into());
        };
        let hash = block_hash(header);
        if header.height != self.height + 1 {
            return bad(format!(
                "height {}, the next height is {}",
                header.height,
                self.height + 1
            ));
        }
        if header.parent_hash != self.last_hash {
            return bad("parent is not the last final block".into());
        }
        if header.timestamp_ms <= self.last_timestamp_ms {
            return bad(format!(
                "timestamp {} is not after the parent's {}",
                header.timestamp_ms, self.last_timestamp_ms
            ));
        }
        if self.registry.identity(header.producer).is_none() {
            return bad(format!("unknown producer {}", header.producer));
        }
        if header.extras_digest != extras_digest(block.extras.as_ref()).as_bytes() {
            return bad("extras digest does not match".into());
        }
        let extras = block.extras.clone().unwrap_or_default();
        match (&extras.parent_certificate, self.height) {
            (None, 0) => {}
            (Some(_), 0) => return bad("block 1 carries a parent certificate".into()),
            (None, _) => return bad("no certificate for the parent".into()),
            (Some(cert), h) => {
                let certifiers = if self.mutant(Mutant::CertificateAgainstNextAuditors) {
                    self.registry.atn()
                } else {
                    &self.certifier_atn
                };
                let auditors: Vec<_> = certifiers
                    .iter()
                    .filter_map(|i| self.registry.identity(*i).map(|id| (*i, *id)))
                    .collect();
                if cert.height != h || cert.block_hash != self.last_hash {
                    return bad("parent certificate is for another block".into());
                }
                if let Err(e) = verify_certificate(
                    cert,
                    &self.chain_id,
                    &auditors,
                    self.threshold(certifiers.len()),
                    verifier,
                ) {
                    return bad(format!("parent certificate: {e}"));
                }
            }
        }
        if extras.evidence.len() > params.max_block_evidence {
            return bad(format!(
                "{} evidence entries, at most {}",
                extras.evidence.len(),
                params.max_block_evidence
            ));
        }
        let evidence_bytes: usize = extras.evidence.iter().map(|e| e.canonical_len()).sum();
        if evidence_bytes > params.max_block_evidence_bytes {
            return bad(format!(
                "{evidence_bytes} bytes of evidence, at most {}",
                params.max_block_evidence_bytes
            ));
        }
        let mut evidence = Vec::with_capacity(extras.evidence.len());
        let mut ids = BTreeSet::new();
        for (i, e) in extras.evidence.iter().enumerate() {
            let checked = verify_evidence(
                e,
                &self.chain_id,
                &self.registry,
                header.height,
                params,
                app,
                verifier,
            )
            .map_err(|r| BlockFault::Unacceptable(format!("evidence {i}: {r}")))?;
            if !ids.insert(checked.id) {
                return bad(format!("evidence {i} repeats an earlier entry"));
            }
            evidence.push(checked);
        }
        check_content(&self.chain_id, header, &block.items, params, app)
            .map_err(BlockFault::Invalid)?;
        Ok(CheckedBlock { hash, evidence })
    }

    /// The state after `block` (checked by [`ChainState::check_block`]) is final with `cert`.
    /// Every credit change comes from the block itself: its producer (in proportion to the
    /// precommits its parent certificate carries), its items' service, its evidence, and its
    /// parent's certificate (auditors who signed it earn verification credit; representatives
    /// whose rounds passed before it are charged missed slots).
    pub fn apply_block(
        &self,
        block: &v1::DposBlock,
        checked: &CheckedBlock,
        cert: &v1::DposFinalityCertificate,
        params: &Params,
        app: &impl Application,
    ) -> ChainState {
        let rules = &params.credit;
        let header = block.header.clone().unwrap_or_default();
        let mut reg = self.registry.clone();
        let extras = block.extras.clone().unwrap_or_default();
        let mut new_epoch = false;
        if let Some(pc) = &extras.parent_certificate {
            for s in &pc.precommits {
                reg.reward(s.validator, rules.verify_reward, rules);
            }
            let order = &self.certifier_rpn;
            if !order.is_empty() {
                // One charge per representative at most: a long stall is not everyone's fault
                // many times over.
                let missed = pc.round.min(order.len() as u64);
                for i in 0..missed {
                    let who = order[(pc.height.wrapping_add(i) % order.len() as u64) as usize];
                    reg.penalize(who, Offence::MissedSlot, rules);
                }
            }
            new_epoch = reg.advance_slots(pc.round + 1, params);
        }
        let reward = match &extras.parent_certificate {
            // Checked by check_block: distinct auditors of the parent's set, so signed <= set.
            Some(pc) if !self.certifier_atn.is_empty() => {
                let signed = pc.precommits.len() as u64;
                let set = self.certifier_atn.len() as u64;
                rules.produce_reward.saturating_mul(signed.min(set)) / set
            }
            _ => rules.produce_reward,
        };
        reg.reward(header.producer, reward, rules);
        for item in &block.items {
            for who in app.service_credits(item) {
                reg.reward(who, rules.service_reward, rules);
            }
        }
        for e in &checked.evidence {
            if !reg.evidence_applied(&e.id) {
                reg.penalize(e.offender, e.offence, rules);
                reg.record_evidence(e.id, e.about_height);
            }
        }
        reg.prune_evidence(header.height.saturating_sub(params.evidence_max_age));
        reg.replace_fallen(rules);
        if new_epoch {
            // Seeded by the parent, final before this block's producer built anything: the
            // producer of the boundary block cannot grind its block to pick the next order.
            reg.elect(rules, &self.last_hash());
        }
        ChainState {
            chain_id: self.chain_id.clone(),
            height: header.height,
            last_hash: *checked.hash.as_bytes(),
            last_timestamp_ms: header.timestamp_ms,
            last_certificate: cert.canonical_bytes(),
            certifier_atn: self.registry.atn().to_vec(),
            certifier_rpn: self.registry.rpn().to_vec(),
            registry: reg,
            broken_threshold_for_checker_tests: self.broken_threshold_for_checker_tests,
            mutant: self.mutant,
        }
    }
}
