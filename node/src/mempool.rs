//! The pending-transaction pool: admission control in front of consensus. Every transaction has
//! been decoded, size-checked, signature-verified and replay-checked by the ledger before it gets
//! here; the pool refuses duplicates and a second transaction for a `(signer, nonce)` already
//! pending (only one of them could ever take effect) and, when full, refuses new transactions
//! with an error the client can act on instead of growing without bound. The transactions
//! themselves wait in the consensus engine's queue; the pool holds their identities.

use std::collections::HashMap;

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
}

/// Identities of pending transactions, by id and by replay key (signer and nonce).
#[derive(Debug)]
pub struct Mempool {
    capacity: usize,
    by_id: HashMap<Hash32, Vec<u8>>,
    by_replay_key: HashMap<Vec<u8>, Hash32>,
}

impl Mempool {
    pub fn new(capacity: usize) -> Self {
        Mempool {
            capacity: capacity.max(1),
            by_id: HashMap::new(),
            by_replay_key: HashMap::new(),
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
    pub fn insert(&mut self, id: Hash32, replay_key: Vec<u8>) -> Result<(), MempoolError> {
        if self.by_id.contains_key(&id) {
            return Err(MempoolError::Duplicate(id.to_hex()));
        }
        if let Some(pending) = self.by_replay_key.get(&replay_key) {
            return Err(MempoolError::NonceTaken {
                pending: pending.to_hex(),
            });
        }
        if self.by_id.len() >= self.capacity {
            return Err(MempoolError::Full {
                capacity: self.capacity,
            });
        }
        self.by_replay_key.insert(replay_key.clone(), id);
        self.by_id.insert(id, replay_key);
        Ok(())
    }

    /// Removes a committed transaction and any pending one its replay key made void.
    pub fn remove_committed(&mut self, id: &Hash32, replay_key: &[u8]) {
        if let Some(key) = self.by_id.remove(id) {
            self.by_replay_key.remove(&key);
        }
        if let Some(other) = self.by_replay_key.remove(replay_key) {
            self.by_id.remove(&other);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(b: u8) -> Hash32 {
        Hash32::from_slice(&[b; 32]).unwrap()
    }

    #[test]
    fn bounded_and_deduplicated() {
        let mut m = Mempool::new(2);
        m.insert(h(1), vec![1]).unwrap();
        assert_eq!(
            m.insert(h(1), vec![1]),
            Err(MempoolError::Duplicate(h(1).to_hex()))
        );
        m.insert(h(2), vec![2]).unwrap();
        let e = m.insert(h(3), vec![3]).unwrap_err();
        assert!(e.to_string().contains("full (2 pending"), "{e}");
        m.remove_committed(&h(1), &[1]);
        m.insert(h(3), vec![3]).unwrap();
        assert_eq!(m.len(), 2);
        assert!(m.contains(&h(2)) && m.contains(&h(3)) && !m.contains(&h(1)));
    }

    #[test]
    fn one_pending_transaction_per_signer_and_nonce() {
        let mut m = Mempool::new(10);
        m.insert(h(1), vec![7]).unwrap();
        let e = m.insert(h(2), vec![7]).unwrap_err();
        assert_eq!(
            e,
            MempoolError::NonceTaken {
                pending: h(1).to_hex()
            }
        );
        // Another transaction with that replay key commits: the pending one is void.
        m.remove_committed(&h(9), &[7]);
        assert!(m.is_empty());
        m.insert(h(2), vec![7]).unwrap();
    }
}
