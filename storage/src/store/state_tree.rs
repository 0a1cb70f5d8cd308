//! The nodes of the authenticated chain state (a Jellyfish Merkle tree the ledger maintains),
//! and consistent reads of the state for proofs.
//!
//! The tree's nodes live in their own column family, keyed by the tree's node keys; the store
//! does not interpret them. Only the newest version is kept: each block's write deletes the
//! nodes it made stale, in the same atomic batch as the block, so the tree on disk is always
//! the tree of the tip. A proof of an older tip is served from a [`StateSnapshot`], which
//! RocksDB keeps whole while it is held.
//!
//! `meta/state_tree_version` names the height the tree is of. When it differs from the tip (a
//! data folder an older release wrote), the ledger rebuilds the tree from the chain state
//! ([`Store::rebuild_state_tree`]).

use rocksdb::{SnapshotWithThreadMode, WriteBatch, DB};

use super::{synced, ChainTip, Store};
use crate::keys::{CF_CHAIN_STATE, CF_META, CF_STATE_TREE, META_STATE_TREE_VERSION, META_TIP};
use crate::StoreError;

/// The tree's writes for one block: new nodes, nodes it made stale, and the version (height)
/// the tree is of afterwards.
#[derive(Debug, Default, Clone)]
pub struct StateTreeWrites {
    pub version: u64,
    pub puts: Vec<(Vec<u8>, Vec<u8>)>,
    pub deletes: Vec<Vec<u8>>,
}

impl StateTreeWrites {
    pub(super) fn apply(&self, store: &Store, batch: &mut WriteBatch) {
        let cf = store.cf(CF_STATE_TREE);
        for key in &self.deletes {
            batch.delete_cf(cf, key);
        }
        for (key, value) in &self.puts {
            batch.put_cf(cf, key, value);
        }
        batch.put_cf(
            store.cf(CF_META),
            META_STATE_TREE_VERSION,
            self.version.to_be_bytes(),
        );
    }
}

fn parse_version(v: &[u8]) -> Result<u64, StoreError> {
    <[u8; 8]>::try_from(v)
        .map(u64::from_be_bytes)
        .map_err(|_| StoreError::Corrupt {
            what: "state tree version".into(),
            reason: format!("{} bytes, expected 8", v.len()),
        })
}

impl Store {
    /// One node of the state tree, by its key.
    pub fn state_tree_node(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.db.get_cf(self.cf(CF_STATE_TREE), key)?)
    }

    /// How many nodes the state tree holds (a full scan: for tests and diagnostics).
    pub fn state_tree_nodes(&self) -> Result<usize, StoreError> {
        let mut n = 0;
        self.scan_prefix(CF_STATE_TREE, &[], |_, _| {
            n += 1;
            Ok(true)
        })?;
        Ok(n)
    }

    /// The height the state tree is of (`None`: this data folder has none yet).
    pub fn state_tree_version(&self) -> Result<Option<u64>, StoreError> {
        self.db
            .get_cf(self.cf(CF_META), META_STATE_TREE_VERSION)?
            .map(|v| parse_version(&v))
            .transpose()
    }

    /// Replaces the whole state tree with `tree` (built from the chain state at the tip), in one
    /// synced batch.
    pub fn rebuild_state_tree(&self, tree: &StateTreeWrites) -> Result<(), StoreError> {
        let mut batch = WriteBatch::default();
        // State-tree keys never start with 0xff 0xff… of this length; the range covers them all.
        batch.delete_range_cf(self.cf(CF_STATE_TREE), [].as_slice(), [0xff; 64].as_slice());
        tree.apply(self, &mut batch);
        self.db.write_opt(batch, &synced())?;
        Ok(())
    }

    /// A consistent view of the chain state, its tree and the tip, as of now: blocks committed
    /// later do not show in it.
    pub fn state_snapshot(&self) -> StateSnapshot<'_> {
        StateSnapshot {
            store: self,
            snapshot: self.db.snapshot(),
        }
    }
}

/// A point-in-time view of the chain state and its tree ([`Store::state_snapshot`]).
pub struct StateSnapshot<'a> {
    store: &'a Store,
    snapshot: SnapshotWithThreadMode<'a, DB>,
}

impl std::fmt::Debug for StateSnapshot<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StateSnapshot").finish_non_exhaustive()
    }
}

impl StateSnapshot<'_> {
    pub fn tip(&self) -> Result<Option<ChainTip>, StoreError> {
        match self.snapshot.get_cf(self.store.cf(CF_META), META_TIP)? {
            None => Ok(None),
            Some(v) => super::parse_tip(&v).map(Some),
        }
    }

    pub fn state_tree_version(&self) -> Result<Option<u64>, StoreError> {
        self.snapshot
            .get_cf(self.store.cf(CF_META), META_STATE_TREE_VERSION)?
            .map(|v| parse_version(&v))
            .transpose()
    }

    pub fn chain_state(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.snapshot.get_cf(self.store.cf(CF_CHAIN_STATE), key)?)
    }

    pub fn state_tree_node(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.snapshot.get_cf(self.store.cf(CF_STATE_TREE), key)?)
    }
}
