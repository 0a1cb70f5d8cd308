//! The PBFT simulator's seeded fault schedules: what each seed draws.

use super::*;

/// The mutation check's deliberate engine bugs, by the names the command line uses.
pub const MUTANTS: [(&str, Mutant); 4] = [
    ("commit-before-persist", Mutant::CommitBeforePersist),
    ("no-reproposal-check", Mutant::NoReproposalCheck),
    ("one-prepare-too-few", Mutant::OnePrepareTooFew),
    ("help-every-old-view", Mutant::HelpEveryOldView),
];

/// One seeded fault schedule.
#[derive(Clone, Debug)]
pub struct Scenario {
    pub seed: u64,
    pub n: usize,
    pub byzantine: Vec<(u32, Behaviour)>,
    /// Crashes of honest replicas; every restart happens before GST.
    pub crashes: Vec<Crash>,
    pub items: usize,
    pub max_batch: usize,
    pub checkpoint_interval: u64,
    pub net: NetConfig,
    /// A deliberately wrong quorum, to show the checkers catch what it breaks.
    pub broken_quorum: Option<usize>,
    /// A deliberate engine bug in every honest replica (the mutation check).
    pub mutant: Option<Mutant>,
}

impl Scenario {
    /// The scenario of `seed`; `n` overrides the replica count (else 4, 7 or 10 by seed).
    pub fn generate(seed: u64, n: Option<usize>) -> Self {
        let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x9e37_79b9_7f4a_7c15);
        let n = n.unwrap_or([4, 7, 10][(seed % 3) as usize]);
        let f = (n - 1) / 3;
        let mut ids: Vec<u32> = (0..n as u32).collect();
        ids.shuffle(&mut rng);
        let b = rng.gen_range(0..=f);
        let byzantine: Vec<(u32, Behaviour)> = ids[..b]
            .iter()
            .map(|r| (*r, *ALL.choose(&mut rng).expect("non-empty")))
            .collect();
        let gst = rng.gen_range(8_000..=30_000);
        let mut crashes = if rng.gen_range(0..8) == 0 {
            // More than n - quorum replicas down at once: no progress until they return, and
            // nothing unsafe when they do.
            mass_crash(&mut rng, &ids[b..], gst)
        } else {
            let crash_count = rng.gen_range(0..=(f - b).max(1)).min(n - b);
            let mut crashes = crash_schedule(&mut rng, &ids[b..b + crash_count], gst);
            // A replica that never comes back, when the Byzantine budget leaves room for it.
            if b < f && rng.gen_bool(0.25) {
                if let Some(c) = crashes.first_mut() {
                    c.restart = None;
                }
            }
            crashes
        };
        crashes.sort_by_key(|c| (c.at, c.node));
        let partitions = partitions(&mut rng, n, gst, 10_000);
        Scenario {
            seed,
            n,
            byzantine,
            crashes,
            items: rng.gen_range(8..=40),
            max_batch: rng.gen_range(2..=8),
            checkpoint_interval: rng.gen_range(2..=5),
            net: NetConfig::random(
                &mut rng,
                n,
                gst,
                partitions,
                NetBounds {
                    max_drop_per_mille: 150,
                    max_duplicate_per_mille: 100,
                    max_delay_ms: 300,
                    max_clock_offset_ms: 500,
                },
            ),
            broken_quorum: None,
            mutant: None,
        }
    }

    pub fn describe(&self) -> String {
        let byz: Vec<String> = self
            .byzantine
            .iter()
            .map(|(r, b)| format!("r{r}:{b:?}"))
            .collect();
        let in_call = self
            .crashes
            .iter()
            .filter(|c| c.cut != Cut::BetweenEvents)
            .count();
        let gone = self.crashes.iter().filter(|c| c.restart.is_none()).count();
        format!(
            "seed {} n={} byzantine=[{}] crashes={} (in-call {in_call}, no restart {gone}) partitions={} slow-links={} skewed-clocks={} items={} drop={}‰ dup={}‰ delay<={}ms gst={}ms{}{}",
            self.seed,
            self.n,
            byz.join(","),
            self.crashes.len(),
            self.net.partitions.len(),
            self.net.slow_links.len(),
            self.net.skewed(),
            self.items,
            self.net.drop_per_mille,
            self.net.duplicate_per_mille,
            self.net.max_delay_ms,
            self.net.gst_ms,
            self.broken_quorum.map(|q| format!(" BROKEN-QUORUM={q}")).unwrap_or_default(),
            self.mutant.map(|m| format!(" MUTANT={m:?}")).unwrap_or_default()
        )
    }
}
