//! The DPoS simulator's seeded fault schedules: Byzantine behaviours, what each seed draws, and
//! the scripted lock-split attack.

use super::*;

/// What a Byzantine institution does wrong (in whatever role it holds).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Behaviour {
    /// Sends nothing: a representative that misses its slots, an auditor that withholds votes.
    Silent,
    /// As representative, signs two different blocks for its slot and shows each to half.
    Equivocator,
    /// As representative, proposes blocks holding an invalid item.
    InvalidBlock,
    /// As representative, signs three blocks for its slot (its own, one with another timestamp
    /// and one holding an invalid item) and shows all of them to everyone: honest nodes see
    /// several pieces of evidence of one offence.
    MultiProposer,
    /// As auditor, accepts every block, invalid ones included, and votes for them.
    AttestInvalid,
    /// As auditor, rejects every valid block.
    RejectValid,
    /// As auditor, sends its vote to half the nodes and a different vote to the other half.
    DoubleVoter,
    /// As representative, in a round after the first, re-proposes the oldest block that a quorum
    /// prevoted at this height, with that old round as its proof-of-lock round, instead of the
    /// latest one; it knows every prevote any node sent (the colluders' shared view). Its fresh
    /// blocks it shows to every node but one auditor.
    StalePol,
    /// As auditor, instead of its engine's votes: prevotes every fresh proposal it sees to a random
    /// part of the honest auditors and precommits it to a random part of all nodes (splitting the
    /// honest auditors' locks, and finality between nodes), and backs a
    /// re-proposal by sending everyone its prevote of the proof-of-lock round and its votes for
    /// the re-proposal.
    Colluder,
    /// The lock-split attack of the mutation check (see [`Scenario::lock_split`]), as auditor: at
    /// height 1 it prevotes the first fresh block to one honest auditor only (who locks on it),
    /// prevotes the second fresh block to the other honest auditors (who lock on that) and
    /// precommits it to the honest representatives only (one of which finalizes it), and backs a
    /// re-proposal of the first block like a Colluder. Honest from height 2 on.
    LockSplitter,
    /// The lock-split attack's representatives: at height 1, in round 1 a fresh block of their
    /// own (never a re-proposal), in later rounds as StalePol. Honest from height 2 on.
    LockSplitProposer,
}

impl Behaviour {
    /// Whether the fault is in votes (it counts against the auditors' budget `f < A/3`); the
    /// others are faults of a representative's proposals only.
    pub fn votes_wrongly(self) -> bool {
        matches!(
            self,
            Behaviour::Silent
                | Behaviour::AttestInvalid
                | Behaviour::RejectValid
                | Behaviour::DoubleVoter
                | Behaviour::Colluder
                | Behaviour::LockSplitter
        )
    }
}

const RPN_BEHAVIOURS: [Behaviour; 5] = [
    Behaviour::Silent,
    Behaviour::Equivocator,
    Behaviour::InvalidBlock,
    Behaviour::MultiProposer,
    Behaviour::StalePol,
];
const ATN_BEHAVIOURS: [Behaviour; 5] = [
    Behaviour::Silent,
    Behaviour::AttestInvalid,
    Behaviour::RejectValid,
    Behaviour::DoubleVoter,
    Behaviour::Colluder,
];

/// The mutation check's deliberate engine bugs, by the names the command line uses.
pub const MUTANTS: [(&str, Mutant); 2] = [
    ("unlock-on-lower-pol", Mutant::UnlockOnLowerPol),
    (
        "certificate-against-next-auditors",
        Mutant::CertificateAgainstNextAuditors,
    ),
];

/// One seeded fault schedule.
#[derive(Clone, Debug)]
pub struct Scenario {
    pub seed: u64,
    pub rpn: usize,
    pub atn: usize,
    /// Institutions beyond R + A, eligible to refill the sets.
    pub spares: usize,
    pub byzantine: Vec<(u32, Behaviour)>,
    /// (node, crash time, restart time); restarts happen before GST.
    pub crashes: Vec<Crash>,
    pub items: usize,
    pub params: Params,
    /// Admission scores (rating = scale = strength) per institution.
    pub scores: Vec<u64>,
    pub net: NetConfig,
    /// Finality with fewer precommits than the real threshold, to show the checkers catch it.
    pub broken_threshold: bool,
    /// A deliberate engine bug in every node (the mutation check).
    pub mutant: Option<Mutant>,
    /// When every item is submitted (default: random times before GST + 5 s).
    pub items_at: Option<u64>,
}

fn sim_params(rng: &mut ChaCha8Rng, rpn: usize, atn: usize) -> Params {
    let mut p = Params {
        rpn_size: rpn,
        atn_size: atn,
        epoch_slots: rng.gen_range(8..=40),
        max_block_items: rng.gen_range(2..=8),
        block_interval_ms: 300,
        slot_ms: 1_000,
        vote_timeout_ms: 300,
        round_increment_ms: 200,
        resend_ms: 1_000,
        max_clock_drift_ms: 1_000,
        max_block_evidence: 8,
        evidence_max_age: 50,
        ..Params::default()
    };
    p.credit.missed_slot_penalty = 400;
    p.credit.invalid_block_penalty = 5_000;
    p
}

impl Scenario {
    /// The scenario of `seed`. `large` forces the 121-institution consortium (101 RPN + 20 ATN);
    /// otherwise small consortia (4-7 representatives, 3-7 auditors), and one seed in 50 is large.
    pub fn generate(seed: u64, large: Option<bool>) -> Self {
        let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0xd905_51ab_c0de_2026);
        let large = large.unwrap_or(seed % 50 == 49);
        let (rpn, atn, spares) = if large {
            (101, 20, 10)
        } else {
            *[(4, 3, 3), (4, 4, 5), (5, 7, 6), (7, 4, 5), (4, 7, 6)]
                .choose(&mut rng)
                .expect("non-empty")
        };
        let n = rpn + atn + spares;
        // Byzantine institutions: at most f of the auditor set in total, whatever roles they
        // end up in (the full budget, in large consortia too: spares refill the sets, so the
        // auditor set keeps its size while misbehaving representatives are replaced).
        let f = (atn - 1) / 3;
        let b = rng.gen_range(0..=f);
        let mut scores: Vec<u64> = (0..n).map(|_| rng.gen_range(64..=90)).collect();
        // The genesis ranking decides the first roles: give chosen Byzantine institutions a rank.
        scores.sort_unstable_by(|a, b| b.cmp(a));
        let mut byzantine = Vec::new();
        let mut taken = BTreeSet::new();
        for _ in 0..b {
            let as_rpn = rng.gen_bool(0.5);
            let idx = if as_rpn {
                rng.gen_range(0..rpn)
            } else {
                rng.gen_range(rpn..rpn + atn)
            } as u32;
            if !taken.insert(idx) {
                continue;
            }
            let behaviour = if as_rpn {
                *RPN_BEHAVIOURS.choose(&mut rng).expect("non-empty")
            } else {
                *ATN_BEHAVIOURS.choose(&mut rng).expect("non-empty")
            };
            byzantine.push((idx, behaviour));
        }
        // Representatives need no honest majority: one schedule in three adds representatives
        // whose only fault is in their proposals (StalePol), beyond the auditors' budget; one
        // honest representative stays. As auditors (after an election) they vote as the engine
        // says, so they never count against f.
        if rng.gen_bool(0.3) {
            let extra = rng.gen_range(1..=(rpn - 2).min(10));
            for _ in 0..extra {
                let idx = rng.gen_range(0..rpn) as u32;
                let seated = taken.iter().filter(|x| (**x as usize) < rpn).count();
                if seated < rpn - 1 && taken.insert(idx) {
                    byzantine.push((idx, Behaviour::StalePol));
                }
            }
        }
        let gst = rng.gen_range(6_000..=25_000);
        let honest: Vec<u32> = (0..n as u32).filter(|i| !taken.contains(i)).collect();
        let crash_count = rng.gen_range(0..=2usize).min(honest.len());
        let chosen: Vec<u32> = honest
            .choose_multiple(&mut rng, crash_count)
            .copied()
            .collect();
        let crashes = crash_schedule(&mut rng, &chosen, gst);
        let partitions = partitions(&mut rng, n, gst, 8_000);
        let params = sim_params(&mut rng, rpn, atn);
        Scenario {
            seed,
            rpn,
            atn,
            spares,
            byzantine,
            crashes,
            items: if large {
                rng.gen_range(10..=20)
            } else {
                rng.gen_range(12..=40)
            },
            params,
            scores,
            net: NetConfig::random(
                &mut rng,
                n,
                gst,
                partitions,
                NetBounds {
                    max_drop_per_mille: 120,
                    max_duplicate_per_mille: 80,
                    max_delay_ms: 250,
                    max_clock_offset_ms: 300,
                },
            ),
            broken_threshold: false,
            mutant: None,
            items_at: None,
        }
    }

    /// The lock-split attack (Tendermint's classic safety argument, as a schedule): 4
    /// representatives, 4 auditors (and 2 spares), one of them a LockSplitter, the proposers of
    /// rounds 0-2 of height 1 LockSplitProposers. Round 0: the last honest auditor is cut off, the first one
    /// alone sees a quorum of prevotes and locks on block X. Round 1: the other two lock on a
    /// fresh block Y, and the honest representative (the proposer of round 3) sees Y's quorum of
    /// precommits and finalizes Y, then crashes before telling anyone (back at 15 s). Round 2: X
    /// is re-proposed with round 0 as its proof-of-lock round. A correct auditor locked on Y in
    /// round 1 refuses it (the proof is older than its lock); one that unlocks on a lower-round
    /// proof (the `UnlockOnLowerPol` mutant) prevotes X, X is final at the auditors, and the
    /// agreement checker must see two blocks at height 1. `seed` varies the network delays.
    pub fn lock_split(seed: u64) -> Self {
        let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x10c4_5b11_7000);
        // Two spares refill the auditors when a LockSplitProposer is expelled (its engine's own
        // proposals still go out in direct answers: it equivocates, and is caught doing so).
        let (rpn, atn, spares) = (4usize, 4usize, 2usize);
        let n = rpn + atn + spares;
        let mut params = sim_params(&mut rng, rpn, atn);
        params.epoch_slots = 10_000;
        params.max_block_items = 8;
        let scores: Vec<u64> = (0..n as u64).map(|i| 90 - i).collect();
        let mut scn = Scenario {
            seed,
            rpn,
            atn,
            spares,
            byzantine: Vec::new(),
            crashes: Vec::new(),
            items: 4,
            params,
            scores,
            net: NetConfig {
                drop_per_mille: 0,
                duplicate_per_mille: 0,
                max_delay_ms: rng.gen_range(5..=20),
                max_delay_after_gst_ms: 20,
                gst_ms: 25_000,
                partitions: Vec::new(),
                slow_links: Vec::new(),
                clocks: vec![Default::default(); n],
            },
            broken_threshold: false,
            mutant: None,
            items_at: Some(0),
        };
        let state = ChainState::genesis(&scn.genesis(&sim_keys(n))).expect("valid genesis");
        let reg = &state.registry;
        let auditors = reg.atn().to_vec();
        let splitter = *auditors.last().expect("4 auditors");
        let cut_off = auditors[auditors.len() - 2];
        let honest_rep = reg.proposer(1, 3);
        for r in 0..3 {
            scn.byzantine
                .push((reg.proposer(1, r), Behaviour::LockSplitProposer));
        }
        scn.byzantine.push((splitter, Behaviour::LockSplitter));
        scn.net.partitions = vec![(50, 1_250, vec![cut_off])];
        scn.crashes = vec![Crash {
            node: honest_rep,
            at: 0,
            restart: Some(15_000),
            cut: Cut::AfterExecution,
        }];
        scn
    }

    pub fn n(&self) -> usize {
        self.rpn + self.atn + self.spares
    }

    pub fn genesis(&self, keys: &[SigningKey]) -> Genesis {
        Genesis {
            chain_id: CHAIN.into(),
            genesis_time_ms: 0,
            params: self.params.clone(),
            institutions: keys
                .iter()
                .zip(&self.scores)
                .enumerate()
                .map(|(i, (k, s))| InstitutionSpec {
                    name: format!("inst{i}"),
                    identity: k.identity(),
                    rating: *s,
                    scale: *s,
                    strength: *s,
                    willing: true,
                })
                .collect(),
        }
    }

    /// Chargeable misbehaviours after which `who` must have lost its representative seat.
    pub fn strikes_needed(&self, who: u32, behaviour: Behaviour) -> usize {
        let c = &self.params.credit;
        match behaviour {
            Behaviour::Silent => {
                let credit = (c.weight_rating + c.weight_scale + c.weight_strength)
                    * self.scores[who as usize];
                let excess = credit.saturating_sub(c.threshold) + 1;
                excess.div_ceil(c.missed_slot_penalty) as usize
            }
            _ => 1,
        }
    }

    pub fn describe(&self) -> String {
        let byz: Vec<String> = self
            .byzantine
            .iter()
            .map(|(r, b)| format!("i{r}:{b:?}"))
            .collect();
        format!(
            "seed {} rpn={} atn={} spares={} byzantine=[{}] crashes={} partitions={} slow-links={} skewed-clocks={} items={} batch={} epoch={} drop={}‰ dup={}‰ delay<={}ms gst={}ms{}{}",
            self.seed,
            self.rpn,
            self.atn,
            self.spares,
            byz.join(","),
            self.crashes.len(),
            self.net.partitions.len(),
            self.net.slow_links.len(),
            self.net.skewed(),
            self.items,
            self.params.max_block_items,
            self.params.epoch_slots,
            self.net.drop_per_mille,
            self.net.duplicate_per_mille,
            self.net.max_delay_ms,
            self.net.gst_ms,
            if self.broken_threshold { " BROKEN-THRESHOLD" } else { "" },
            self.mutant.map(|m| format!(" MUTANT={m:?}")).unwrap_or_default()
        )
    }
}

/// The institutions' keys, the same in every run.
pub(super) fn sim_keys(n: usize) -> Vec<SigningKey> {
    (0..n)
        .map(|i| {
            let mut b = [0u8; 32];
            b[0] = 0x22;
            b[24..].copy_from_slice(&(i as u64 + 1).to_be_bytes());
            SigningKey::from_bytes(&b).expect("valid scalar")
        })
        .collect()
}
