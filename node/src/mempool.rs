//! The pending-transaction pool: admission control in front of consensus. Every transaction has
//! been decoded, size-checked, signature-verified and replay-checked by the ledger before it gets
//! here; the pool refuses duplicates and, when full, refuses new transactions with an error the
//! client can act on instead of growing without bound.

use std::collections::{BTreeMap, HashMap};

use medchain_crypto::Hash32;

/// Why the pool refused a transaction.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum MempoolError {
    #[error("the mempool is full ({capacity} pending transactions); retry after the next block")]
    Full { capacity: usize },
    #[error("transaction {0} is already pending")]
    Duplicate(String),
}

/// Pending transactions in arrival order.
#[derive(Debug)]
pub struct Mempool {
    capacity: usize,
    by_id: HashMap<Hash32, u64>,
    order: BTreeMap<u64, (Hash32, Vec<u8>)>,
    next: u64,
}

impl Mempool {
    pub fn new(capacity: usize) -> Self {
        Mempool {
            capacity: capacity.max(1),
            by_id: HashMap::new(),
            order: BTreeMap::new(),
            next: 0,
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
    pub fn insert(&mut self, id: Hash32, bytes: Vec<u8>) -> Result<(), MempoolError> {
        if self.by_id.contains_key(&id) {
            return Err(MempoolError::Duplicate(id.to_hex()));
        }
        if self.by_id.len() >= self.capacity {
            return Err(MempoolError::Full {
                capacity: self.capacity,
            });
        }
        self.by_id.insert(id, self.next);
        self.order.insert(self.next, (id, bytes));
        self.next += 1;
        Ok(())
    }

    /// Removes committed transactions.
    pub fn remove(&mut self, id: &Hash32) {
        if let Some(k) = self.by_id.remove(id) {
            self.order.remove(&k);
        }
    }

    /// Pending transactions, oldest first.
    pub fn iter(&self) -> impl Iterator<Item = (&Hash32, &Vec<u8>)> {
        self.order.values().map(|(id, b)| (id, b))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(b: u8) -> Hash32 {
        Hash32::from_slice(&[b; 32]).unwrap()
    }

    #[test]
    fn bounded_ordered_and_deduplicated() {
        let mut m = Mempool::new(2);
        m.insert(h(1), vec![1]).unwrap();
        assert_eq!(
            m.insert(h(1), vec![1]),
            Err(MempoolError::Duplicate(h(1).to_hex()))
        );
        m.insert(h(2), vec![2]).unwrap();
        let e = m.insert(h(3), vec![3]).unwrap_err();
        assert!(e.to_string().contains("full (2 pending"), "{e}");
        m.remove(&h(1));
        m.insert(h(3), vec![3]).unwrap();
        let order: Vec<_> = m.iter().map(|(id, _)| *id).collect();
        assert_eq!(order, vec![h(2), h(3)]);
        assert_eq!(m.len(), 2);
    }
}
