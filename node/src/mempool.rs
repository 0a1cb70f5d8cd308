//! The pending-transaction pool: admission control in front of consensus. Every transaction has
//! been decoded, size-checked, signature-verified and replay-checked by the ledger before it gets
//! here; the pool refuses duplicates and a second transaction for a `(signer, nonce)` already
//! pending (only one of them could ever take effect) and, when full, refuses new transactions
//! with an error the client can act on instead of growing without bound. The transactions
//! themselves wait in the consensus engine's queue; the pool holds their identities.
//!
//! Quotas keep one party from filling the pool for everyone: a signer has at most
//! [`Quotas::per_signer`] transactions pending (validators are exempt: their access records and
//! suspensions are one per read a reader asked for, and bounded by the kind's share instead),
//! and one kind of transaction takes at most [`Quotas::per_kind`] places, so a flood of reads
//! leaves room for records and consent, and a flood of records room for the audit.
//!
//! A record slip's ciphertext is stored on every validator while the slip is pending, so the
//! pool also holds one pending slip per ciphertext and at most [`Quotas::per_signer_bytes`] of a
//! signer's pending ciphertext, and shares the pending addresses ([`PendingBlobs`]) with the
//! blob room (which stores a peer's push only for a pending or committed slip) and the orphan
//! sweep (which never removes a pending one).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use medchain_crypto::Hash32;

pub use medchain_ledger::CheckedTx;

/// Why the pool refused a transaction.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum MempoolError {
    #[error("the mempool is full ({capacity} pending transactions); retry after the next block")]
    Full { capacity: usize },
    #[error("transaction {0} is already pending")]
    Duplicate(String),
    #[error(
        "transaction {pending} with the same signer and nonce is already pending; use a new nonce"
    )]
    NonceTaken { pending: String },
    #[error("the signer has {limit} transactions pending, its limit; retry after the next block")]
    SignerQuota { limit: usize },
    #[error(
        "{limit} {kind} transactions are pending, the most the mempool holds of one kind; retry after the next block"
    )]
    KindQuota { kind: &'static str, limit: usize },
    #[error("the signer has {limit} bytes of record ciphertext pending, its limit; retry after the next block")]
    SignerBytes { limit: u64 },
    #[error("pending transaction {pending} already names this ciphertext; each record has its own ciphertext, so encrypt this one afresh")]
    CiphertextPending { pending: String },
}

/// Content addresses of the ciphertexts pending slips name, shared by the pool with the parts of
/// the node that must not store or remove a ciphertext against the pool's view.
#[derive(Clone, Debug, Default)]
pub struct PendingBlobs(Arc<Mutex<HashMap<Hash32, Hash32>>>);

impl PendingBlobs {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Hash32, Hash32>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether a pending slip names this ciphertext.
    pub fn contains(&self, address: &Hash32) -> bool {
        self.lock().contains_key(address)
    }

    /// Whether transaction `id` is the pending slip naming this ciphertext.
    pub fn held_by(&self, address: &Hash32, id: &Hash32) -> bool {
        self.holder(address) == Some(*id)
    }

    /// The pending transaction naming this ciphertext.
    fn holder(&self, address: &Hash32) -> Option<Hash32> {
        self.lock().get(address).copied()
    }
}

/// How much of the pool one signer and one kind may hold.
#[derive(Clone, Debug)]
pub struct Quotas {
    pub per_signer: usize,
    pub per_kind: usize,
    /// Record ciphertext bytes one signer's pending slips may name.
    pub per_signer_bytes: u64,
    /// Signers without a per-signer limit (the chain's validators).
    pub exempt: HashSet<Vec<u8>>,
}

impl Quotas {
    /// The node's quotas for a pool of `capacity`: a signer a fiftieth of it (1,000 of 50,000,
    /// far more than a client has in flight), a kind half of it, and 1 GiB of a signer's pending
    /// ciphertext (64 records of the 16 MiB maximum waiting for one block).
    pub fn for_capacity(capacity: usize, exempt: HashSet<Vec<u8>>) -> Self {
        Quotas {
            per_signer: (capacity / 50).max(1),
            per_kind: (capacity / 2).max(1),
            per_signer_bytes: 1 << 30,
            exempt,
        }
    }

    /// No limit but the capacity.
    pub fn none() -> Self {
        Quotas {
            per_signer: usize::MAX,
            per_kind: usize::MAX,
            per_signer_bytes: u64::MAX,
            exempt: HashSet::new(),
        }
    }
}

#[derive(Debug)]
struct Entry {
    replay_key: Vec<u8>,
    signer: Vec<u8>,
    kind: &'static str,
    blob: Option<(Hash32, u64)>,
}

/// Identities of pending transactions, by id and by replay key (signer and nonce), with counts
/// per signer and per kind.
#[derive(Debug)]
pub struct Mempool {
    capacity: usize,
    quotas: Quotas,
    by_id: HashMap<Hash32, Entry>,
    by_replay_key: HashMap<Vec<u8>, Hash32>,
    per_signer: HashMap<Vec<u8>, usize>,
    per_kind: HashMap<&'static str, usize>,
    per_signer_bytes: HashMap<Vec<u8>, u64>,
    blobs: PendingBlobs,
}

impl Mempool {
    /// A pool that publishes its pending ciphertexts in `blobs`.
    pub fn new(capacity: usize, quotas: Quotas, blobs: PendingBlobs) -> Self {
        Mempool {
            capacity: capacity.max(1),
            quotas,
            by_id: HashMap::new(),
            by_replay_key: HashMap::new(),
            per_signer: HashMap::new(),
            per_kind: HashMap::new(),
            per_signer_bytes: HashMap::new(),
            blobs,
        }
    }

    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    pub fn contains(&self, id: &Hash32) -> bool {
        self.by_id.contains_key(id)
    }

    /// Adds a checked transaction.
    pub fn insert(&mut self, tx: &CheckedTx) -> Result<(), MempoolError> {
        if self.by_id.contains_key(&tx.id) {
            return Err(MempoolError::Duplicate(tx.id.to_hex()));
        }
        if let Some(pending) = self.by_replay_key.get(&tx.replay_key) {
            return Err(MempoolError::NonceTaken {
                pending: pending.to_hex(),
            });
        }
        if self.by_id.len() >= self.capacity {
            return Err(MempoolError::Full {
                capacity: self.capacity,
            });
        }
        let limit = self.quotas.per_signer;
        if self.per_signer.get(&tx.signer).copied().unwrap_or(0) >= limit
            && !self.quotas.exempt.contains(&tx.signer)
        {
            return Err(MempoolError::SignerQuota { limit });
        }
        let limit = self.quotas.per_kind;
        if self.per_kind.get(tx.kind).copied().unwrap_or(0) >= limit {
            return Err(MempoolError::KindQuota {
                kind: tx.kind,
                limit,
            });
        }
        if let Some((address, size)) = tx.blob {
            if let Some(pending) = self.blobs.holder(&address) {
                return Err(MempoolError::CiphertextPending {
                    pending: pending.to_hex(),
                });
            }
            let limit = self.quotas.per_signer_bytes;
            let held = self.per_signer_bytes.get(&tx.signer).copied().unwrap_or(0);
            if held.saturating_add(size) > limit && !self.quotas.exempt.contains(&tx.signer) {
                return Err(MempoolError::SignerBytes { limit });
            }
            *self.per_signer_bytes.entry(tx.signer.clone()).or_default() += size;
            self.blobs.lock().insert(address, tx.id);
        }
        self.by_replay_key.insert(tx.replay_key.clone(), tx.id);
        *self.per_signer.entry(tx.signer.clone()).or_default() += 1;
        *self.per_kind.entry(tx.kind).or_default() += 1;
        self.by_id.insert(
            tx.id,
            Entry {
                replay_key: tx.replay_key.clone(),
                signer: tx.signer.clone(),
                kind: tx.kind,
                blob: tx.blob,
            },
        );
        Ok(())
    }

    fn remove(&mut self, id: &Hash32) {
        let Some(e) = self.by_id.remove(id) else {
            return;
        };
        self.by_replay_key.remove(&e.replay_key);
        if let Some(n) = self.per_signer.get_mut(&e.signer) {
            *n -= 1;
            if *n == 0 {
                self.per_signer.remove(&e.signer);
            }
        }
        if let Some(n) = self.per_kind.get_mut(e.kind) {
            *n -= 1;
        }
        if let Some((address, size)) = e.blob {
            self.blobs.lock().remove(&address);
            if let Some(n) = self.per_signer_bytes.get_mut(&e.signer) {
                *n -= size;
                if *n == 0 {
                    self.per_signer_bytes.remove(&e.signer);
                }
            }
        }
    }

    /// Removes a committed transaction and any pending one its replay key made void.
    pub fn remove_committed(&mut self, id: &Hash32, replay_key: &[u8]) {
        self.remove(id);
        if let Some(other) = self.by_replay_key.get(replay_key).copied() {
            self.remove(&other);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(b: u8) -> Hash32 {
        Hash32::from_slice(&[b; 32]).unwrap()
    }

    /// A transaction `id` with replay key `key`, signed by `signer`, of `kind`.
    fn tx(id: u8, key: u8, signer: u8, kind: &'static str) -> CheckedTx {
        CheckedTx {
            id: h(id),
            replay_key: vec![key],
            bytes: vec![],
            signer: vec![signer],
            kind,
            blob: None,
        }
    }

    fn t(id: u8, key: u8) -> CheckedTx {
        tx(id, key, id, "record")
    }

    #[test]
    fn bounded_and_deduplicated() {
        let mut m = Mempool::new(2, Quotas::none(), PendingBlobs::default());
        m.insert(&t(1, 1)).unwrap();
        assert_eq!(
            m.insert(&t(1, 1)),
            Err(MempoolError::Duplicate(h(1).to_hex()))
        );
        m.insert(&t(2, 2)).unwrap();
        let e = m.insert(&t(3, 3)).unwrap_err();
        assert!(e.to_string().contains("full (2 pending"), "{e}");
        m.remove_committed(&h(1), &[1]);
        m.insert(&t(3, 3)).unwrap();
        assert_eq!(m.len(), 2);
        assert!(m.contains(&h(2)) && m.contains(&h(3)) && !m.contains(&h(1)));
    }

    #[test]
    fn one_pending_transaction_per_signer_and_nonce() {
        let mut m = Mempool::new(10, Quotas::none(), PendingBlobs::default());
        m.insert(&t(1, 7)).unwrap();
        let e = m.insert(&t(2, 7)).unwrap_err();
        assert_eq!(
            e,
            MempoolError::NonceTaken {
                pending: h(1).to_hex()
            }
        );
        // Another transaction with that replay key commits: the pending one is void.
        m.remove_committed(&h(9), &[7]);
        assert!(m.is_empty());
        m.insert(&t(2, 7)).unwrap();
    }

    /// One signer holds at most its quota (validators none), one kind at most its share, and
    /// both are freed as transactions commit.
    #[test]
    fn signers_and_kinds_keep_to_their_quotas() {
        let quotas = Quotas {
            per_signer: 2,
            per_kind: 3,
            per_signer_bytes: u64::MAX,
            exempt: [vec![200u8]].into_iter().collect(),
        };
        let mut m = Mempool::new(10, quotas, PendingBlobs::default());
        m.insert(&tx(1, 1, 7, "request")).unwrap();
        m.insert(&tx(2, 2, 7, "request")).unwrap();
        let e = m.insert(&tx(3, 3, 7, "grant")).unwrap_err();
        assert_eq!(e, MempoolError::SignerQuota { limit: 2 });
        assert!(e.to_string().contains("retry after the next block"), "{e}");
        // Another signer is not held up by the first.
        m.insert(&tx(4, 4, 8, "request")).unwrap();
        let e = m.insert(&tx(5, 5, 9, "request")).unwrap_err();
        assert_eq!(
            e,
            MempoolError::KindQuota {
                kind: "request",
                limit: 3
            }
        );
        // Other kinds still get in, and a validator past the per-signer count too.
        for (id, kind) in [(6, "record"), (7, "access_record"), (8, "access_record")] {
            m.insert(&tx(id, id, 200, kind)).unwrap();
        }
        m.remove_committed(&h(1), &[1]);
        m.insert(&tx(3, 3, 7, "request")).unwrap();
        assert_eq!(m.len(), 6);
    }

    /// A slip's ciphertext is published as pending while the slip is, one slip per ciphertext,
    /// and a signer's pending ciphertext bytes keep to their quota.
    #[test]
    fn pending_ciphertexts_are_published_and_bounded() {
        let quotas = Quotas {
            per_signer_bytes: 100,
            ..Quotas::none()
        };
        let blobs = PendingBlobs::default();
        let mut m = Mempool::new(10, quotas, blobs.clone());
        let slip = |id: u8, key: u8, blob: u8, size: u64| CheckedTx {
            blob: Some((h(blob), size)),
            ..tx(id, key, 7, "record")
        };
        m.insert(&slip(1, 1, 50, 60)).unwrap();
        assert!(blobs.contains(&h(50)));
        assert_eq!(
            m.insert(&slip(2, 2, 50, 10)),
            Err(MempoolError::CiphertextPending {
                pending: h(1).to_hex()
            })
        );
        let e = m.insert(&slip(3, 3, 51, 41)).unwrap_err();
        assert_eq!(e, MempoolError::SignerBytes { limit: 100 });
        m.insert(&slip(4, 4, 52, 40)).unwrap();
        m.remove_committed(&h(1), &[1]);
        assert!(!blobs.contains(&h(50)) && blobs.contains(&h(52)));
        m.insert(&slip(3, 3, 51, 41)).unwrap();
        assert_eq!(m.len(), 2);
    }
}
