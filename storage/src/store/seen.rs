//! Read requests this node served, kept until they could no longer pass the freshness check,
//! so that a captured request is not served again after the node restarts (its access record
//! may not have committed yet, and the node's in-memory replay set starts empty).
//!
//! Keys are `seen_read/ ‖ expiry (big-endian ms) ‖ request digest` in the meta family: ordered
//! by expiry, so forgetting the expired ones is one range delete.

use medchain_crypto::Hash32;
use rocksdb::{Direction, IteratorMode};

use super::{synced, Store};
use crate::keys::CF_META;
use crate::StoreError;

const PREFIX: &[u8] = b"seen_read/";

fn key(expires_ms: u64, request: &Hash32) -> Vec<u8> {
    [PREFIX, &expires_ms.to_be_bytes(), request.as_bytes()].concat()
}

impl Store {
    /// Durably remembers that read request `request` was admitted, until `expires_ms`. Returns
    /// once the write is synced: only then may the node serve the read.
    pub fn remember_read_request(
        &self,
        request: &Hash32,
        expires_ms: u64,
    ) -> Result<(), StoreError> {
        self.db
            .put_cf_opt(self.cf(CF_META), key(expires_ms, request), [], &synced())?;
        Ok(())
    }

    /// Forgets the read requests that expired by `now_ms` (one range delete).
    pub fn forget_expired_read_requests(&self, now_ms: u64) -> Result<(), StoreError> {
        let cf = self.cf(CF_META);
        self.db
            .delete_range_cf(cf, key(0, &Hash32::ZERO), key(now_ms + 1, &Hash32::ZERO))?;
        Ok(())
    }

    /// The read requests remembered and not expired at `now_ms` (expiring later), with their
    /// expiry; forgets the expired ones.
    pub fn remembered_read_requests(&self, now_ms: u64) -> Result<Vec<(Hash32, u64)>, StoreError> {
        self.forget_expired_read_requests(now_ms)?;
        let cf = self.cf(CF_META);
        let mut out = Vec::new();
        for item in self
            .db
            .iterator_cf(cf, IteratorMode::From(PREFIX, Direction::Forward))
        {
            let (k, _) = item?;
            if !k.starts_with(PREFIX) {
                break;
            }
            let rest = &k[PREFIX.len()..];
            if rest.len() != 8 + 32 {
                return Err(StoreError::Corrupt {
                    what: "remembered read request".into(),
                    reason: format!("a key of {} bytes", k.len()),
                });
            }
            let expires = u64::from_be_bytes(rest[..8].try_into().expect("8 bytes"));
            out.push((Hash32::from_slice(&rest[8..]).expect("32 bytes"), expires));
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembered_requests_survive_reopening_until_they_expire() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (Hash32([1; 32]), Hash32([2; 32]));
        {
            let store = Store::open(dir.path()).unwrap();
            store.remember_read_request(&a, 1_000).unwrap();
            store.remember_read_request(&b, 5_000).unwrap();
        }
        let store = Store::open(dir.path()).unwrap();
        let mut seen = store.remembered_read_requests(500).unwrap();
        seen.sort();
        assert_eq!(seen, vec![(a, 1_000), (b, 5_000)]);
        assert_eq!(
            store.remembered_read_requests(1_000).unwrap(),
            vec![(b, 5_000)]
        );
        assert!(store.remembered_read_requests(6_000).unwrap().is_empty());
        // The chain's own metadata is untouched by the pruning.
        assert!(store.tip().unwrap().is_none());
    }
}
