//! The transactions this node already decoded and verified, by the digest of their bytes.
//!
//! One transaction's bytes reach a node's ledger several times: when a client submits it or a
//! peer forwards it, in every proposal that orders it (each replica validates a pre-prepare's
//! items), and at commit, when the block is built. Decoding a canonical transaction (decode, then
//! re-encode to prove canonical form) and verifying its signatures are the costly parts, so
//! each is done once: later sightings of the same bytes find the decoded, verified transaction
//! here. Bounded: past the capacity the oldest entries go, and a transaction seen again after
//! that is simply decoded and verified again.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use medchain_crypto::Hash32;
use medchain_proto::v1;

/// A transaction decoded from canonical bytes whose signatures verified.
#[derive(Debug)]
pub struct Decoded {
    pub tx: v1::Transaction,
    /// Its id (the digest of its body).
    pub id: Hash32,
}

/// How many decoded transactions are kept: the next blocks' worth (tens of MiB at most, at a
/// few KiB each). A mempool holding more than this (it may hold 50,000) has its oldest decoded
/// again when their block commits: correct, only slower.
pub const KNOWN_CAPACITY: usize = 16_384;

#[derive(Debug, Default)]
struct Inner {
    by_bytes: HashMap<Hash32, Arc<Decoded>>,
    order: VecDeque<Hash32>,
}

/// The cache, shared by the ledger's callers (API workers, the forwarding checker, the driver).
#[derive(Debug)]
pub struct Known {
    inner: Mutex<Inner>,
    capacity: usize,
}

impl Known {
    pub fn new(capacity: usize) -> Self {
        Known {
            inner: Mutex::new(Inner::default()),
            capacity: capacity.max(1),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The transaction whose bytes have digest `key`, if it was decoded and verified.
    pub fn get(&self, key: &Hash32) -> Option<Arc<Decoded>> {
        self.lock().by_bytes.get(key).cloned()
    }

    /// Keeps a decoded, verified transaction; the oldest goes when full.
    pub fn insert(&self, key: Hash32, decoded: Arc<Decoded>) {
        let mut inner = self.lock();
        if inner.by_bytes.insert(key, decoded).is_some() {
            return;
        }
        inner.order.push_back(key);
        while inner.order.len() > self.capacity {
            if let Some(old) = inner.order.pop_front() {
                inner.by_bytes.remove(&old);
            }
        }
    }

    pub fn len(&self) -> usize {
        self.lock().by_bytes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.lock().by_bytes.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(n: u8) -> (Hash32, Arc<Decoded>) {
        (
            Hash32([n; 32]),
            Arc::new(Decoded {
                tx: v1::Transaction::default(),
                id: Hash32([n; 32]),
            }),
        )
    }

    #[test]
    fn bounded_oldest_first() {
        let known = Known::new(2);
        for n in 0..3 {
            let (k, d) = entry(n);
            known.insert(k, d);
        }
        assert_eq!(known.len(), 2);
        assert!(known.get(&Hash32([0; 32])).is_none(), "the oldest went");
        assert!(known.get(&Hash32([2; 32])).is_some());
        let (k, d) = entry(2);
        known.insert(k, d);
        assert_eq!(known.len(), 2, "a repeat takes no second place");
        assert!(known.get(&Hash32([1; 32])).is_some());
    }
}
