//! The reads this node answered whose access records are not on chain yet (contract rules 4,
//! where reads are recorded in batches: `AccessBatch`, up to
//! [`medchain_proto::records::MAX_ACCESS_BATCH`] a transaction).
//!
//! A read is answered only after its record is kept here and synced to the store
//! ([`medchain_storage::Store::log_access`]), so no answered read goes unaudited, even across a
//! crash. A flusher task signs what is kept into batches every [`FLUSH_MS`] (or at once when a
//! batch is full), queues them, and forgets their records once the batch is in a block. A batch
//! not in a block after [`RESUBMIT_MS`] (lost with a leader, say) is made again from the same
//! records; the contract records a read once even if both batches commit. When more than
//! [`MAX_PENDING`] records wait, the chain is not keeping up and reads are refused.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use medchain_crypto::Hash32;
use medchain_proto::records::MAX_ACCESS_BATCH;
use medchain_proto::v1;
use prost::Message;
use tokio::sync::Notify;

use super::handle::{NodeHandle, OwnTxError};
use crate::clock::now_ms;

/// How often the kept records are batched.
pub const FLUSH_MS: u64 = 250;
/// How long a queued batch may stay out of the chain before it is made again.
pub const RESUBMIT_MS: u64 = 60_000;
/// Records kept at most; past it a read is refused ("cannot be audited now").
pub const MAX_PENDING: usize = 16 * MAX_ACCESS_BATCH;
/// A batch's encoded records stay under this (a transaction's limit is 64 KiB).
const MAX_BATCH_BYTES: usize = 48 * 1024;

/// A queued batch: its transaction and the reads it records.
#[derive(Debug)]
struct InFlight {
    tx: Hash32,
    requests: Vec<Hash32>,
    sent_ms: u64,
}

#[derive(Debug, Default)]
struct Inner {
    /// Not in a queued batch, oldest first (by arrival number).
    waiting: BTreeMap<u64, (Hash32, v1::AccessRecord)>,
    next: u64,
    in_flight: Vec<InFlight>,
    /// Records of queued batches, until their batch is in a block.
    sent: BTreeMap<Hash32, v1::AccessRecord>,
}

impl Inner {
    fn len(&self) -> usize {
        self.waiting.len() + self.sent.len()
    }
}

/// See the module docs.
#[derive(Debug, Default)]
pub struct AccessLog {
    inner: Mutex<Inner>,
    /// Wakes the flusher when a full batch waits.
    full: Notify,
}

impl AccessLog {
    /// The log with the records a previous run kept (`logged`: request digest, record bytes),
    /// less those already on chain (`recorded`).
    pub fn restore(
        logged: Vec<(Hash32, Vec<u8>)>,
        recorded: impl Fn(&Hash32) -> bool,
    ) -> anyhow::Result<(Self, Vec<Hash32>)> {
        let mut inner = Inner::default();
        let mut done = Vec::new();
        for (request, bytes) in logged {
            if recorded(&request) {
                done.push(request);
                continue;
            }
            let record = v1::AccessRecord::decode(bytes.as_slice()).map_err(|e| {
                anyhow::anyhow!("the access record kept for read request {request} does not decode ({e}); the data folder is damaged (restore it from a backup)")
            })?;
            inner.waiting.insert(inner.next, (request, record));
            inner.next += 1;
        }
        Ok((
            AccessLog {
                inner: Mutex::new(inner),
                full: Notify::new(),
            },
            done,
        ))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records kept and not yet on chain.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Refuses a new read when too many wait for the chain.
    pub fn has_room(&self) -> Result<(), OwnTxError> {
        let n = self.len();
        if n >= MAX_PENDING {
            return Err(OwnTxError::Unavailable(format!(
                "the read cannot be audited now ({n} answered reads wait for their access records to reach the chain); it is refused, retry shortly"
            )));
        }
        Ok(())
    }

    /// Keeps `record` (already synced to the store) for the next batch.
    pub fn push(&self, request: Hash32, record: v1::AccessRecord) {
        let mut inner = self.lock();
        let n = inner.next;
        inner.next += 1;
        inner.waiting.insert(n, (request, record));
        if inner.waiting.len() >= MAX_ACCESS_BATCH {
            self.full.notify_one();
        }
    }

    /// Takes the oldest waiting records for one batch (at most [`MAX_ACCESS_BATCH`], and
    /// [`MAX_BATCH_BYTES`] of them encoded).
    fn take_batch(&self) -> Vec<(Hash32, v1::AccessRecord)> {
        let mut inner = self.lock();
        let mut out = Vec::new();
        let mut bytes = 0;
        while out.len() < MAX_ACCESS_BATCH {
            let Some(entry) = inner.waiting.first_entry() else {
                break;
            };
            let size = entry.get().1.encoded_len();
            if !out.is_empty() && bytes + size > MAX_BATCH_BYTES {
                break;
            }
            bytes += size;
            out.push(entry.remove());
        }
        out
    }

    /// Puts records back in front of the waiting ones (their batch could not be queued).
    fn put_back(&self, records: Vec<(Hash32, v1::AccessRecord)>) {
        let mut inner = self.lock();
        let first = inner.waiting.keys().next().copied().unwrap_or(inner.next);
        let start = first.saturating_sub(records.len() as u64);
        for (k, r) in records.into_iter().enumerate() {
            inner.waiting.insert(start + k as u64, r);
        }
    }

    fn sent(&self, tx: Hash32, records: Vec<(Hash32, v1::AccessRecord)>, now: u64) {
        let mut inner = self.lock();
        let requests = records.iter().map(|(r, _)| *r).collect();
        inner.sent.extend(records);
        inner.in_flight.push(InFlight {
            tx,
            requests,
            sent_ms: now,
        });
    }

    /// Settles the queued batches: those in a block (`committed`) are done, their reads
    /// returned to be forgotten; those out too long go back to waiting.
    fn settle(&self, now: u64, committed: impl Fn(&Hash32) -> bool) -> Vec<(Hash32, Vec<Hash32>)> {
        let mut inner = self.lock();
        let mut done = Vec::new();
        let mut again = Vec::new();
        for f in std::mem::take(&mut inner.in_flight) {
            if committed(&f.tx) {
                done.push((f.tx, f.requests));
            } else if now.saturating_sub(f.sent_ms) >= RESUBMIT_MS {
                again.push(f);
            } else {
                inner.in_flight.push(f);
            }
        }
        for (_, requests) in &done {
            for r in requests {
                inner.sent.remove(r);
            }
        }
        for f in again {
            for r in f.requests {
                if let Some(record) = inner.sent.remove(&r) {
                    let n = inner.next;
                    inner.next += 1;
                    inner.waiting.insert(n, (r, record));
                }
            }
        }
        done
    }
}

/// Batches the kept records for as long as the node runs (see the module docs).
pub fn spawn_flusher(node: NodeHandle, log: Arc<AccessLog>) {
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(FLUSH_MS)) => {}
                _ = log.full.notified() => {}
            }
            if let Err(e) = flush(&node, &log).await {
                tracing::warn!(error = %e, "access records not batched yet; retrying");
            }
            node.metrics.access_records_pending.set(log.len() as i64);
        }
    });
}

/// One round of the flusher: settles the queued batches, then queues every full or waiting one.
async fn flush(node: &NodeHandle, log: &AccessLog) -> anyhow::Result<()> {
    let store = node.store.clone();
    let ledger = node.ledger.clone();
    let done = log.settle(now_ms(), |tx| {
        matches!(store.transaction_location(tx), Ok(Some(_)))
    });
    for (tx, requests) in done {
        if let Ok(Some(why)) = ledger.queries().failure(&tx) {
            // Only a bug (or a node no longer a validator) makes an own batch fail in a block.
            tracing::error!(transaction = %tx, reason = %why, reads = requests.len(), "an access batch of this node was refused in its block");
        }
        let store = store.clone();
        tokio::task::spawn_blocking(move || store.forget_accesses(&requests)).await??;
    }
    loop {
        let records = log.take_batch();
        if records.is_empty() {
            return Ok(());
        }
        let tx = node.own_transaction(v1::transaction_body::Payload::AccessBatch(
            v1::AccessBatch {
                records: records.iter().map(|(_, r)| r.clone()).collect(),
            },
        ));
        let bytes = medchain_proto::Canonical::canonical_bytes(&tx);
        let ledger = node.ledger.clone();
        let checked = tokio::task::spawn_blocking(move || ledger.check(&bytes)).await?;
        let queued = match checked {
            Ok(checked) => node.queue(checked).await.map_err(anyhow::Error::from),
            Err(e) => Err(anyhow::anyhow!(
                "this node's ledger refused its own access batch: {e}"
            )),
        };
        match queued {
            Ok(id) => log.sent(id, records, now_ms()),
            Err(e) => {
                log.put_back(records);
                return Err(e);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(n: u8, reason: usize) -> (Hash32, v1::AccessRecord) {
        (
            Hash32([n; 32]),
            v1::AccessRecord {
                request: vec![n; 32],
                reason: "r".repeat(reason),
                ..Default::default()
            },
        )
    }

    #[test]
    fn batches_are_bounded_and_settle_when_committed_or_come_back_when_lost() {
        let log = AccessLog::default();
        for n in 0..(MAX_ACCESS_BATCH as u8 + 6) {
            let (r, rec) = record(n, 10);
            log.push(r, rec);
        }
        let first = log.take_batch();
        assert_eq!(first.len(), MAX_ACCESS_BATCH);
        assert_eq!(first[0].0, Hash32([0; 32]), "oldest first");
        log.sent(Hash32([200; 32]), first, 1_000);
        let second = log.take_batch();
        assert_eq!(second.len(), 6);
        // A batch that could not be queued goes back in front, in its order.
        log.put_back(second);
        let second = log.take_batch();
        assert_eq!(second[0].0, Hash32([MAX_ACCESS_BATCH as u8; 32]));
        log.sent(Hash32([201; 32]), second, 2_000);
        assert_eq!(
            log.len(),
            MAX_ACCESS_BATCH + 6,
            "queued records still count"
        );

        // The first batch is in a block; the second is not, and comes back after RESUBMIT_MS.
        let committed = |tx: &Hash32| *tx == Hash32([200; 32]);
        let done = log.settle(3_000, committed);
        assert_eq!(done.len(), 1);
        assert_eq!(done[0].1.len(), MAX_ACCESS_BATCH);
        assert_eq!(log.len(), 6);
        assert!(log.take_batch().is_empty(), "the second batch is still out");
        assert!(log.settle(2_000 + RESUBMIT_MS, committed).is_empty());
        assert_eq!(
            log.take_batch().len(),
            6,
            "made again from the same records"
        );
    }

    #[test]
    fn a_batch_keeps_to_its_byte_bound_and_the_log_to_its_room() {
        let log = AccessLog::default();
        for n in 0..4 {
            let (r, rec) = record(n, 20_000);
            log.push(r, rec);
        }
        assert_eq!(log.take_batch().len(), 2, "two 20 kB records fit in 48 KiB");
        let log = AccessLog::default();
        for n in 0..MAX_PENDING as u64 {
            let mut h = [0u8; 32];
            h[..8].copy_from_slice(&n.to_be_bytes());
            log.push(Hash32(h), v1::AccessRecord::default());
        }
        let e = log.has_room().unwrap_err();
        assert!(e.to_string().contains("cannot be audited now"), "{e}");
    }

    #[test]
    fn a_restart_keeps_what_is_not_on_chain() {
        let (a, b) = (record(1, 5), record(2, 5));
        let logged = vec![(a.0, a.1.encode_to_vec()), (b.0, b.1.encode_to_vec())];
        let (log, done) = AccessLog::restore(logged, |r| *r == a.0).unwrap();
        assert_eq!(done, vec![a.0]);
        assert_eq!(log.take_batch(), vec![b]);
        let e = AccessLog::restore(vec![(a.0, vec![0xff; 3])], |_| false)
            .err()
            .unwrap();
        assert!(e.to_string().contains("does not decode"), "{e}");
    }
}
