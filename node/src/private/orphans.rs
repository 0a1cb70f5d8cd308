//! The orphan sweep: record files no slip accounts for are removed after a grace period.
//!
//! A ciphertext is kept while a pending slip names it (the mempool publishes them,
//! [`PendingBlobs`]) or a committed, undeleted slip does. Anything else under `records/` is an
//! orphan: a push whose slip was refused at commit or never ordered, a deleted record's copy
//! that arrived after its erasure, a temporary a crash left behind. Each is removed once it is
//! older than the grace period (`[storage] orphan_grace_hours`), which covers a slip admitted
//! just before the sweep looked and a restart in the middle of an upload.
//!
//! The sweep also finds live slips whose ciphertext this node lacks (it restarted before a
//! fetch finished) and hands them to the blob room to fetch again.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use medchain_crypto::Hash32;
use medchain_ledger::contracts::state::{decode, keys, SlipEntry};
use medchain_storage::{RecordFile, Store, StoreError};

use super::blobs::{lock, Missing};
use crate::mempool::PendingBlobs;
use crate::metrics::Metrics;

/// How often the sweep runs, and how soon after start the first one does.
const EVERY: Duration = Duration::from_secs(10 * 60);
const FIRST_AFTER: Duration = Duration::from_secs(60);

/// What the sweep does with one file, and why.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Keep(&'static str),
    Remove(&'static str),
}

/// The sweep's rule for one file (pure: the caller gathers the facts).
pub fn judge(
    file_is_record: bool,
    age: Duration,
    grace: Duration,
    pending: bool,
    live: bool,
) -> Verdict {
    if age < grace {
        // An upload being staged, a push just ahead of its slip, a slip about to be ordered.
        Verdict::Keep("younger than the grace period")
    } else if !file_is_record {
        Verdict::Remove("a stale temporary or stray file")
    } else if pending {
        Verdict::Keep("a pending slip names it")
    } else if live {
        Verdict::Keep("a live record's ciphertext")
    } else {
        Verdict::Remove("no pending or live slip names it")
    }
}

/// What one sweep did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SweepReport {
    pub files: usize,
    pub removed: usize,
    pub removed_bytes: u64,
    /// Live records whose ciphertext this node lacks, handed to the blob room to fetch.
    pub lacking: usize,
}

fn age(now: SystemTime, modified: SystemTime) -> Duration {
    // A file from the future (a clock set back) counts as new: it is kept, never removed early.
    now.duration_since(modified).unwrap_or_default()
}

/// One sweep of `store`'s record files (blocking: it walks the folder and every slip).
pub fn sweep(
    store: &Store,
    pending: &PendingBlobs,
    missing: &Missing,
    grace: Duration,
    now: SystemTime,
) -> Result<SweepReport, StoreError> {
    let mut report = SweepReport::default();
    // Files first, then slips: a slip committed between the two is seen as live.
    let mut candidates: Vec<RecordFile> = Vec::new();
    store.for_each_record_file(|file| {
        report.files += 1;
        // Liveness is decided below, against the slips read after this walk.
        let pending = file.address.is_some_and(|a| pending.contains(&a));
        if age(now, file.modified) >= grace && !pending {
            candidates.push(file);
        }
        Ok(())
    })?;
    let mut live: HashSet<Hash32> = HashSet::new();
    let mut lacking = Vec::new();
    store.for_each_chain_state(keys::SLIPS, |key, value| {
        let slip: SlipEntry = decode(key, value).map_err(|e| StoreError::Corrupt {
            what: "slip entry".into(),
            reason: e.to_string(),
        })?;
        if slip.deleted_height.is_none() {
            let address = Hash32(slip.ciphertext_hash);
            if !store.has_record(&address) {
                lacking.push(address);
            }
            live.insert(address);
        }
        Ok(())
    })?;
    report.lacking = lacking.len();
    lock(missing).extend(lacking);
    for file in candidates {
        // Looked at again just before removal: an upload of the same bytes renames a fresh
        // file over it, and a slip may have been admitted since.
        let Ok(modified) = std::fs::metadata(&file.path).and_then(|m| m.modified()) else {
            continue;
        };
        let verdict = judge(
            file.address.is_some(),
            age(now.max(SystemTime::now()), modified),
            grace,
            file.address.is_some_and(|a| pending.contains(&a)),
            file.address.is_some_and(|a| live.contains(&a)),
        );
        if let Verdict::Remove(why) = verdict {
            store.remove_record_file(&file)?;
            tracing::info!(file = %file.path.display(), bytes = file.bytes, "removed an orphan record file: {why}");
            report.removed += 1;
            report.removed_bytes += file.bytes;
        }
    }
    Ok(report)
}

/// Runs the sweep on a blocking thread soon after start and then every ten minutes, until the
/// runtime stops. A failed sweep is logged and tried again at the next turn: it removes
/// nothing it has not checked, so stopping the node over it would gain nothing.
pub fn spawn(
    store: Arc<Store>,
    pending: PendingBlobs,
    missing: Missing,
    grace: Duration,
    metrics: Arc<Metrics>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut next = tokio::time::Instant::now() + FIRST_AFTER;
        loop {
            tokio::time::sleep_until(next).await;
            next += EVERY;
            let (store, pending, missing) = (store.clone(), pending.clone(), missing.clone());
            let done = tokio::task::spawn_blocking(move || {
                sweep(&store, &pending, &missing, grace, SystemTime::now())
            })
            .await;
            match done {
                Ok(Ok(report)) => {
                    metrics.orphans_removed.inc_by(report.removed as u64);
                    if report.removed > 0 || report.lacking > 0 {
                        tracing::info!(
                            files = report.files,
                            removed = report.removed,
                            removed_bytes = report.removed_bytes,
                            lacking = report.lacking,
                            "orphan sweep"
                        );
                    }
                }
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "the orphan sweep failed; it runs again in ten minutes")
                }
                Err(_) => return,
            }
        }
    })
}

#[cfg(test)]
mod tests;
