//! A deterministic, single-process simulator for the consensus engines.
//!
//! Everything that varies comes from one seed: the scenario (sizes, faults, Byzantine behaviours),
//! message delays, drops, duplicates and reordering, partitions, crashes and restarts. Time is
//! virtual (milliseconds), events are processed in (time, insertion) order, and no `HashMap`
//! iteration order leaks into the run, so a seed replays exactly: the trace hash of two runs of one
//! seed is equal, which a test checks.

pub mod byzantine;
pub mod dpos;
pub mod network;
pub mod pbft;

/// A broken property, with the virtual time it was detected.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    pub at_ms: u64,
    pub property: &'static str,
    pub detail: String,
}

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} violated at t={}ms: {}",
            self.property, self.at_ms, self.detail
        )
    }
}

/// A running hash of everything that happened, plus the readable lines when asked for.
#[derive(Debug)]
pub struct Trace {
    hasher: blake3::Hasher,
    lines: Option<Vec<String>>,
}

impl Trace {
    pub fn new(keep_lines: bool) -> Self {
        Trace {
            hasher: blake3::Hasher::new(),
            lines: keep_lines.then(Vec::new),
        }
    }

    /// Records one line; the closure runs only when lines are kept or for the hash.
    pub fn record(&mut self, line: String) {
        self.hasher.update(line.as_bytes());
        self.hasher.update(b"\n");
        if let Some(lines) = &mut self.lines {
            lines.push(line);
        }
    }

    /// Records one line stamped with its virtual time; the stamp is hashed as a number, and the
    /// line is formatted with it only when lines are kept.
    pub fn record_at(&mut self, at_ms: u64, line: String) {
        self.hasher.update(&at_ms.to_be_bytes());
        self.hasher.update(line.as_bytes());
        self.hasher.update(b"\n");
        if let Some(lines) = &mut self.lines {
            lines.push(format!("{at_ms:>7} {line}"));
        }
    }

    /// Adds a diagnostic line (an engine's note) when lines are kept, outside the hash: a run
    /// hashes the same whether or not its lines are kept, and notes never change the outcome.
    pub fn annotate(&mut self, at_ms: u64, line: impl FnOnce() -> String) {
        if let Some(lines) = &mut self.lines {
            lines.push(format!("{at_ms:>7}   note: {}", line()));
        }
    }

    pub fn keeps_lines(&self) -> bool {
        self.lines.is_some()
    }

    pub fn hash(&self) -> String {
        self.hasher.finalize().to_hex().to_string()
    }

    pub fn lines(&self) -> &[String] {
        self.lines.as_deref().unwrap_or(&[])
    }
}

/// Runs `check` on every seed of `range` (it returns the scenario and violation of a failing
/// seed) and fails with every failing seed listed and the command that replays one.
pub fn assert_seeds_pass(
    engine: &str,
    range: std::ops::Range<u64>,
    mut check: impl FnMut(u64) -> Option<String>,
) {
    let failures: Vec<String> = range.clone().filter_map(&mut check).collect();
    assert!(
        failures.is_empty(),
        "{} of {} seeds failed (replay: cargo run --release -p medchain-tests --bin medchain-sim -- {engine} --seed S --trace):\n{}",
        failures.len(),
        range.end - range.start,
        failures.join("\n")
    );
}

/// The first seed of `range` on which `violation` (running that seed's scenario) reports one,
/// run a second time to show the seed replays to the same violation; the mutation check's helper.
pub fn first_caught(
    range: std::ops::Range<u64>,
    violation: impl Fn(u64) -> Option<Violation>,
) -> Option<(u64, Violation)> {
    let (seed, v) = range
        .into_iter()
        .find_map(|seed| Some((seed, violation(seed)?)))?;
    assert_eq!(violation(seed).as_ref(), Some(&v), "seed {seed} replays");
    Some((seed, v))
}

/// The first three bytes of a digest in hex, for trace lines.
pub(crate) fn hex4(d: &[u8]) -> String {
    d.iter().take(3).map(|b| format!("{b:02x}")).collect()
}
