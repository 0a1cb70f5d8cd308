//! Access records this node signed for reads it already answered, kept until their batch is on
//! chain (contract rules 4). A read is answered only after its record is here, synced, so a
//! crash between the answer and the batch loses no record: the node batches what is left when
//! it starts again.
//!
//! Keys are `pending_access/ ‖ request digest` in the meta family; values are the record's
//! canonical bytes, which the node wrote and reads back.

use medchain_crypto::Hash32;
use rocksdb::WriteBatch;

use super::{synced, Store};
use crate::keys::CF_META;
use crate::StoreError;

const PREFIX: &[u8] = b"pending_access/";

fn key(request: &Hash32) -> Vec<u8> {
    [PREFIX, request.as_bytes()].concat()
}

impl Store {
    /// Durably keeps the access record (`record`, canonical bytes) of read request `request`.
    /// Returns once the write is synced: only then may the node answer the read.
    pub fn log_access(&self, request: &Hash32, record: &[u8]) -> Result<(), StoreError> {
        self.db
            .put_cf_opt(self.cf(CF_META), key(request), record, &synced())?;
        Ok(())
    }

    /// The access records kept and not yet forgotten, by request digest.
    pub fn logged_accesses(&self) -> Result<Vec<(Hash32, Vec<u8>)>, StoreError> {
        let mut out = Vec::new();
        self.scan_prefix(CF_META, PREFIX, |k, v| {
            let request =
                Hash32::from_slice(&k[PREFIX.len()..]).map_err(|_| StoreError::Corrupt {
                    what: "logged access record".into(),
                    reason: format!("a key of {} bytes", k.len()),
                })?;
            out.push((request, v.to_vec()));
            Ok(true)
        })?;
        Ok(out)
    }

    /// Forgets the access records of `requests` (their batch is on chain). Not synced: one
    /// that comes back after a crash is found on chain and forgotten again.
    pub fn forget_accesses(&self, requests: &[Hash32]) -> Result<(), StoreError> {
        let mut batch = WriteBatch::default();
        for r in requests {
            batch.delete_cf(self.cf(CF_META), key(r));
        }
        self.db.write(batch)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logged_accesses_survive_reopening_until_forgotten() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (Hash32([1; 32]), Hash32([2; 32]));
        {
            let store = Store::open(dir.path()).unwrap();
            store.log_access(&a, b"record a").unwrap();
            store.log_access(&b, b"record b").unwrap();
            // Read requests remembered beside them are another prefix.
            store.remember_read_request(&a, 9_000).unwrap();
        }
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(
            store.logged_accesses().unwrap(),
            vec![(a, b"record a".to_vec()), (b, b"record b".to_vec())]
        );
        store.forget_accesses(&[a]).unwrap();
        assert_eq!(
            store.logged_accesses().unwrap(),
            vec![(b, b"record b".to_vec())]
        );
        assert_eq!(store.remembered_read_requests(0).unwrap(), vec![(a, 9_000)]);
    }
}
