//! The store itself.

use std::fmt;
use std::path::{Path, PathBuf};

use medchain_crypto::Hash32;
use medchain_proto::ledger::{slip_parties, verify_block_structure};
use medchain_proto::v1::{self, transaction_body::Payload};
use medchain_proto::{Canonical, Hashed};
use rocksdb::{
    ColumnFamily, ColumnFamilyDescriptor, Direction, IteratorMode, Options, WriteBatch,
    WriteOptions, DB,
};
use serde::{de::DeserializeOwned, Serialize};

use crate::keys::*;
use crate::lock::DirLock;
use crate::StoreError;

/// Version of the on-disk layout. Bump it whenever a column family or key layout changes.
pub const SCHEMA_VERSION: u32 = 2;

/// A key and its value.
pub type KeyValue = (Vec<u8>, Vec<u8>);

/// The last committed block.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChainTip {
    pub height: u64,
    pub hash: Hash32,
}

/// Where a transaction sits: block height and position in the block.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TxLocation {
    pub height: u64,
    pub index: u32,
}

/// A node's durable state.
pub struct Store {
    db: DB,
    path: PathBuf,
    _lock: DirLock,
}

impl fmt::Debug for Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Store").field("path", &self.path).finish()
    }
}

/// Consensus-state writes to apply together with [`Store::write_consensus`]. Values are encoded
/// with bincode here, the one encoding of consensus state on disk.
#[derive(Debug, Default)]
pub struct ConsensusChanges {
    puts: Vec<(Vec<u8>, Vec<u8>)>,
    delete_ranges: Vec<(Vec<u8>, Vec<u8>)>,
}

impl ConsensusChanges {
    pub fn put<T: Serialize>(&mut self, key: &[u8], value: &T) -> Result<(), StoreError> {
        let bytes = bincode::serde::encode_to_vec(value, bincode::config::standard())
            .map_err(|e| StoreError::Encode(e.to_string()))?;
        self.puts.push((key.to_vec(), bytes));
        Ok(())
    }

    /// Deletes the keys in `[from, to)`; applied before the puts of the same write.
    pub fn delete_range(&mut self, from: &[u8], to: &[u8]) {
        self.delete_ranges.push((from.to_vec(), to.to_vec()));
    }
}

fn decode_consensus<T: DeserializeOwned>(key: &[u8], bytes: &[u8]) -> Result<T, StoreError> {
    bincode::serde::decode_from_slice(bytes, bincode::config::standard())
        .map(|(v, _)| v)
        .map_err(|e| StoreError::Corrupt {
            what: format!("consensus state {:?}", String::from_utf8_lossy(key)),
            reason: e.to_string(),
        })
}

fn parse_tip(v: &[u8]) -> Result<ChainTip, StoreError> {
    if v.len() != 40 {
        return Err(StoreError::Corrupt {
            what: "chain tip".into(),
            reason: format!("{} bytes, expected 40", v.len()),
        });
    }
    let height = u64::from_be_bytes(v[..8].try_into().expect("8 bytes"));
    let hash = Hash32::from_slice(&v[8..]).expect("32 bytes");
    Ok(ChainTip { height, hash })
}

fn synced() -> WriteOptions {
    let mut wo = WriteOptions::default();
    wo.set_sync(true);
    wo
}

/// What a backup holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupSummary {
    pub height: u64,
    pub tip: Option<Hash32>,
    /// Record ciphertext files copied, and their bytes.
    pub records: usize,
    pub record_bytes: u64,
    /// This node's secrets in the copy (a proxy's sealed re-encryption fragments).
    pub node_secrets: usize,
}

/// Makes the data folder the node's user's alone (mode 0700): its files follow the umask, and
/// the folder holds patients' ciphertexts and this node's sealed fragments, which no other local
/// user has any business listing or copying.
fn owner_only(path: &Path) -> Result<(), StoreError> {
    use std::os::unix::fs::PermissionsExt;
    let io = |source| StoreError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mode = std::fs::metadata(path).map_err(io)?.permissions().mode();
    if mode & 0o077 != 0 {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode & 0o700 | 0o700))
            .map_err(io)?;
    }
    Ok(())
}

impl Store {
    /// Opens (creating if needed) the store in `path`.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        std::fs::create_dir_all(path).map_err(|source| StoreError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        owner_only(path)?;
        let lock = DirLock::acquire(path)?;
        let mut opts = Options::default();
        opts.create_if_missing(true);
        opts.create_missing_column_families(true);
        // Open every family present, including ones a newer schema may have added, so that the
        // version check below can speak instead of RocksDB's "column families not opened".
        let mut names: Vec<String> = DB::list_cf(&opts, path).unwrap_or_default();
        for cf in ALL_CFS {
            if !names.iter().any(|n| n == cf) {
                names.push(cf.to_string());
            }
        }
        let descriptors = names
            .iter()
            .map(|n| ColumnFamilyDescriptor::new(n, Options::default()));
        let db = DB::open_cf_descriptors(&opts, path, descriptors)?;
        let store = Store {
            db,
            path: path.to_path_buf(),
            _lock: lock,
        };
        store.check_schema()?;
        Ok(store)
    }

    fn check_schema(&self) -> Result<(), StoreError> {
        match self.db.get_cf(self.cf(CF_META), META_SCHEMA_VERSION)? {
            Some(v) => {
                let found = <[u8; 4]>::try_from(v.as_slice())
                    .map(u32::from_be_bytes)
                    .map_err(|_| StoreError::Corrupt {
                        what: "schema version".into(),
                        reason: format!("{} bytes", v.len()),
                    })?;
                if found != SCHEMA_VERSION {
                    return Err(StoreError::SchemaMismatch {
                        path: self.path.clone(),
                        found,
                        expected: SCHEMA_VERSION,
                    });
                }
                Ok(())
            }
            None => {
                let empty = ALL_CFS.iter().all(|cf| {
                    self.db
                        .iterator_cf(self.cf(cf), IteratorMode::Start)
                        .next()
                        .is_none()
                });
                if !empty {
                    return Err(StoreError::NotAStore {
                        path: self.path.clone(),
                    });
                }
                self.db.put_cf_opt(
                    self.cf(CF_META),
                    META_SCHEMA_VERSION,
                    SCHEMA_VERSION.to_be_bytes(),
                    &synced(),
                )?;
                Ok(())
            }
        }
    }

    fn cf(&self, name: &str) -> &ColumnFamily {
        self.db
            .cf_handle(name)
            .expect("every column family is opened in Store::open")
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The last committed block, or `None` on an empty chain.
    pub fn tip(&self) -> Result<Option<ChainTip>, StoreError> {
        let Some(v) = self.db.get_cf(self.cf(CF_META), META_TIP)? else {
            return Ok(None);
        };
        parse_tip(&v).map(Some)
    }

    /// The hash of the genesis this data folder was made with (`None` for a fresh folder).
    pub fn genesis_hash(&self) -> Result<Option<Hash32>, StoreError> {
        match self.db.get_cf(self.cf(CF_META), META_GENESIS)? {
            None => Ok(None),
            Some(v) => Hash32::from_slice(&v)
                .map(Some)
                .map_err(|_| StoreError::Corrupt {
                    what: "genesis hash".into(),
                    reason: format!("{} bytes", v.len()),
                }),
        }
    }

    /// Ties this data folder to one genesis: the first call records `hash`, later calls refuse
    /// any other. A node started with an edited or foreign genesis over existing data would
    /// otherwise verify new blocks against a validator set its stored chain was not built with.
    pub fn pin_genesis(&self, hash: &Hash32) -> Result<(), StoreError> {
        if !self.check_genesis(hash)? {
            self.db
                .put_cf_opt(self.cf(CF_META), META_GENESIS, hash.as_bytes(), &synced())?;
        }
        Ok(())
    }

    /// Refuses a data folder pinned to another genesis, writing nothing: true when pinned to
    /// `hash`, false when no genesis is recorded yet.
    pub fn check_genesis(&self, hash: &Hash32) -> Result<bool, StoreError> {
        match self.genesis_hash()? {
            Some(stored) if stored == *hash => Ok(true),
            Some(stored) => Err(StoreError::OtherGenesis {
                path: self.path.clone(),
                stored: stored.to_hex(),
                expected: hash.to_hex(),
            }),
            None => Ok(false),
        }
    }

    /// Writes a consistent copy of this store into `out`, which must not exist: a RocksDB
    /// checkpoint (hard-linked where the file system allows) and a copy of every record
    /// ciphertext, each synced. The copy is itself a data folder (restoring is putting it in
    /// place), and it is opened and checked before this returns.
    pub fn backup(&self, out: &Path) -> Result<BackupSummary, StoreError> {
        if out.exists() {
            return Err(StoreError::BackupExists(out.to_path_buf()));
        }
        if let Some(parent) = out.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(|source| StoreError::Io {
                path: parent.to_path_buf(),
                source,
            })?;
        }
        let tip = self.tip()?;
        rocksdb::checkpoint::Checkpoint::new(&self.db)?.create_checkpoint(out)?;
        owner_only(out)?;
        let (records, record_bytes) =
            records::copy_records(&self.path.join(RECORDS_DIR), &out.join(RECORDS_DIR))?;
        let copy = Store::open(out)?;
        let copied_tip = copy.tip()?;
        if copied_tip != tip {
            return Err(StoreError::Corrupt {
                what: "backup".into(),
                reason: format!("its tip {copied_tip:?} differs from the store's {tip:?}"),
            });
        }
        Ok(BackupSummary {
            height: tip.map_or(0, |t| t.height),
            tip: tip.map(|t| t.hash),
            records,
            record_bytes,
            node_secrets: copy.node_secrets(b"")?.len(),
        })
    }

    /// Appends a committed block with its state changes, atomically and durably.
    ///
    /// The block must extend the tip (next height, previous hash = tip hash) and be internally
    /// consistent; its slips are indexed by ID and by patient. `state` holds chain-state writes
    /// (`None` deletes the key) computed by executing the block. `skipped` lists the positions of
    /// transactions the ledger did not execute (repeats of earlier ones, which consensus may order
    /// twice): they stay in the block, whose certificate covers them, but are not indexed, so an
    /// index always points at a transaction's first, effective occurrence. `failed` lists the
    /// positions of transactions that were executed but refused by a ledger rule: they are indexed
    /// by ID (so a client can learn the outcome) but not by what they would have written.
    pub fn commit_block(
        &self,
        block: &v1::Block,
        state: &[(Vec<u8>, Option<Vec<u8>>)],
        skipped: &[u32],
        failed: &[u32],
    ) -> Result<ChainTip, StoreError> {
        self.commit_block_with_tree(block, state, skipped, failed, None)
    }

    /// [`Store::commit_block`], with the state tree's writes for the block in the same batch.
    pub fn commit_block_with_tree(
        &self,
        block: &v1::Block,
        state: &[(Vec<u8>, Option<Vec<u8>>)],
        skipped: &[u32],
        failed: &[u32],
        tree: Option<&StateTreeWrites>,
    ) -> Result<ChainTip, StoreError> {
        let hash = verify_block_structure(block)?;
        let header = block
            .header
            .as_ref()
            .expect("checked by verify_block_structure");
        let (expected_height, expected_parent) = match self.tip()? {
            Some(t) => (t.height + 1, t.hash),
            None => (1, Hash32::ZERO),
        };
        if header.height != expected_height {
            return Err(StoreError::NotNextHeight {
                expected: expected_height,
                got: header.height,
            });
        }
        if header.previous_hash != expected_parent.as_bytes() {
            return Err(StoreError::WrongParent {
                height: header.height,
                expected: expected_parent.to_hex(),
                got: Hash32::from_slice(&header.previous_hash)
                    .expect("length checked by verify_block_structure")
                    .to_hex(),
            });
        }
        let height = header.height;
        let mut batch = WriteBatch::default();
        batch.put_cf(
            self.cf(CF_BLOCKS),
            height_key(height),
            block.canonical_bytes(),
        );
        batch.put_cf(
            self.cf(CF_BLOCK_HASHES),
            hash.as_bytes(),
            height_key(height),
        );
        batch.put_cf(
            self.cf(CF_HEADERS),
            height_key(height),
            header.canonical_bytes(),
        );
        for (i, tx) in block.transactions.iter().enumerate() {
            let index = i as u32;
            if skipped.contains(&index) {
                continue;
            }
            let location = location_value(height, index);
            let Some(body) = tx.body.as_ref() else {
                continue;
            };
            batch.put_cf(self.cf(CF_TRANSACTIONS), body.digest().as_bytes(), location);
            if failed.contains(&index) {
                continue;
            }
            if let Some(Payload::PrivateSlip(slip)) = &body.payload {
                // The node verified every signature when it accepted the transaction.
                let parties = slip_parties(slip)?;
                batch.put_cf(self.cf(CF_SLIPS), parties.slip_id.as_bytes(), location);
                batch.put_cf(
                    self.cf(CF_PATIENT_INDEX),
                    patient_key(parties.patient.as_bytes(), height, index),
                    parties.slip_id.as_bytes(),
                );
            }
        }
        for (key, value) in state {
            match value {
                Some(v) => batch.put_cf(self.cf(CF_CHAIN_STATE), key, v),
                None => batch.delete_cf(self.cf(CF_CHAIN_STATE), key),
            }
        }
        let mut tip = height.to_be_bytes().to_vec();
        tip.extend_from_slice(hash.as_bytes());
        batch.put_cf(self.cf(CF_META), META_TIP, tip);
        if let Some(tree) = tree {
            tree.apply(self, &mut batch);
        }
        self.db.write_opt(batch, &synced())?;
        Ok(ChainTip { height, hash })
    }

    /// The committed block at `height`.
    pub fn block(&self, height: u64) -> Result<Option<v1::Block>, StoreError> {
        let Some(bytes) = self.db.get_cf(self.cf(CF_BLOCKS), height_key(height))? else {
            return Ok(None);
        };
        v1::Block::decode_canonical(&bytes)
            .map(Some)
            .map_err(|e| StoreError::Corrupt {
                what: format!("block {height}"),
                reason: e.to_string(),
            })
    }

    /// The header of the committed block at `height`, without reading the block's body.
    pub fn header(&self, height: u64) -> Result<Option<v1::BlockHeader>, StoreError> {
        match self.db.get_cf(self.cf(CF_HEADERS), height_key(height))? {
            Some(bytes) => v1::BlockHeader::decode_canonical(&bytes)
                .map(Some)
                .map_err(|e| StoreError::Corrupt {
                    what: format!("header {height}"),
                    reason: e.to_string(),
                }),
            // Committed before headers were kept on their own.
            None => Ok(self.block(height)?.and_then(|b| b.header)),
        }
    }

    /// The height of the block with this hash.
    pub fn height_of(&self, hash: &Hash32) -> Result<Option<u64>, StoreError> {
        let Some(v) = self.db.get_cf(self.cf(CF_BLOCK_HASHES), hash.as_bytes())? else {
            return Ok(None);
        };
        let arr: [u8; 8] = v.as_slice().try_into().map_err(|_| StoreError::Corrupt {
            what: "block hash index".into(),
            reason: format!("{} bytes", v.len()),
        })?;
        Ok(Some(u64::from_be_bytes(arr)))
    }

    fn location(&self, cf: &str, id: &Hash32) -> Result<Option<TxLocation>, StoreError> {
        let Some(v) = self.db.get_cf(self.cf(cf), id.as_bytes())? else {
            return Ok(None);
        };
        let (height, index) = parse_location(&v).ok_or_else(|| StoreError::Corrupt {
            what: format!("{cf} index"),
            reason: format!("{} bytes", v.len()),
        })?;
        Ok(Some(TxLocation { height, index }))
    }

    /// Where a committed transaction is, by ID.
    pub fn transaction_location(&self, id: &Hash32) -> Result<Option<TxLocation>, StoreError> {
        self.location(CF_TRANSACTIONS, id)
    }

    /// A committed private slip by slip ID, with its location.
    pub fn slip(
        &self,
        slip_id: &Hash32,
    ) -> Result<Option<(TxLocation, v1::PrivateSlip)>, StoreError> {
        let Some(loc) = self.location(CF_SLIPS, slip_id)? else {
            return Ok(None);
        };
        let corrupt = |reason: &str| StoreError::Corrupt {
            what: format!("slip {slip_id}"),
            reason: reason.to_string(),
        };
        let block = self
            .block(loc.height)?
            .ok_or_else(|| corrupt("its block is missing"))?;
        let tx = block
            .transactions
            .into_iter()
            .nth(loc.index as usize)
            .ok_or_else(|| corrupt("index past the block's end"))?;
        match tx.body.and_then(|b| b.payload) {
            Some(Payload::PrivateSlip(slip)) => Ok(Some((loc, slip))),
            _ => Err(corrupt("indexed transaction is not a slip")),
        }
    }

    /// Slip IDs of a patient's records, in chain order.
    pub fn patient_slips(&self, patient: &[u8]) -> Result<Vec<Hash32>, StoreError> {
        let mut out = Vec::new();
        self.scan_prefix(CF_PATIENT_INDEX, patient, |_, v| {
            out.push(Hash32::from_slice(v).map_err(|e| StoreError::Corrupt {
                what: "patient index".into(),
                reason: e.to_string(),
            })?);
            Ok(true)
        })?;
        Ok(out)
    }

    /// Calls `visit` with each entry of column family `cf` whose key starts with `prefix`, in
    /// key order, until it returns `false`.
    fn scan_prefix(
        &self,
        cf: &str,
        prefix: &[u8],
        mut visit: impl FnMut(&[u8], &[u8]) -> Result<bool, StoreError>,
    ) -> Result<(), StoreError> {
        for item in self
            .db
            .iterator_cf(self.cf(cf), IteratorMode::From(prefix, Direction::Forward))
        {
            let (k, v) = item?;
            if !k.starts_with(prefix) || !visit(&k, &v)? {
                break;
            }
        }
        Ok(())
    }

    pub fn chain_state(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.db.get_cf(self.cf(CF_CHAIN_STATE), key)?)
    }

    /// Chain-state entries whose key starts with `prefix`, in key order, at most `limit`.
    pub fn chain_state_prefix(
        &self,
        prefix: &[u8],
        limit: usize,
    ) -> Result<Vec<KeyValue>, StoreError> {
        let mut out = Vec::new();
        self.scan_prefix(CF_CHAIN_STATE, prefix, |k, v| {
            if out.len() >= limit {
                return Ok(false);
            }
            out.push((k.to_vec(), v.to_vec()));
            Ok(true)
        })?;
        Ok(out)
    }

    /// Calls `visit` with every chain-state entry whose key starts with `prefix`, in key order,
    /// without collecting them (a scan of every record's slip for the orphan sweep).
    pub fn for_each_chain_state(
        &self,
        prefix: &[u8],
        mut visit: impl FnMut(&[u8], &[u8]) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        self.scan_prefix(CF_CHAIN_STATE, prefix, |k, v| visit(k, v).map(|()| true))
    }

    /// Keeps one of this node's secrets (synced).
    pub fn put_node_secret(&self, key: &[u8], value: &[u8]) -> Result<(), StoreError> {
        self.db
            .put_cf_opt(self.cf(CF_NODE_SECRETS), key, value, &synced())?;
        Ok(())
    }

    pub fn node_secret(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.db.get_cf(self.cf(CF_NODE_SECRETS), key)?)
    }

    /// This node's secrets whose key starts with `prefix`, in key order.
    pub fn node_secrets(&self, prefix: &[u8]) -> Result<Vec<KeyValue>, StoreError> {
        let mut out = Vec::new();
        self.scan_prefix(CF_NODE_SECRETS, prefix, |k, v| {
            out.push((k.to_vec(), v.to_vec()));
            Ok(true)
        })?;
        Ok(out)
    }

    /// Replaces the secret under `old` by `value` under `new`, in one synced write: a crash
    /// leaves one of the two, never both or neither.
    pub fn move_node_secret(&self, old: &[u8], new: &[u8], value: &[u8]) -> Result<(), StoreError> {
        let mut batch = WriteBatch::default();
        batch.delete_cf(self.cf(CF_NODE_SECRETS), old);
        batch.put_cf(self.cf(CF_NODE_SECRETS), new, value);
        self.db.write_opt(batch, &synced())?;
        Ok(())
    }

    /// Destroys one of this node's secrets (synced).
    pub fn delete_node_secret(&self, key: &[u8]) -> Result<(), StoreError> {
        self.db
            .delete_cf_opt(self.cf(CF_NODE_SECRETS), key, &synced())?;
        Ok(())
    }

    /// Durably records one piece of consensus state (e.g. what this replica voted). Returns only
    /// once the write is synced, so the caller may then send the vote.
    pub fn put_consensus_state<T: Serialize>(
        &self,
        key: &str,
        value: &T,
    ) -> Result<(), StoreError> {
        let mut changes = ConsensusChanges::default();
        changes.put(key.as_bytes(), value)?;
        self.write_consensus(changes)
    }

    /// Applies a set of consensus-state changes atomically; returns once they are synced.
    pub fn write_consensus(&self, changes: ConsensusChanges) -> Result<(), StoreError> {
        let cf = self.cf(CF_CONSENSUS_STATE);
        let mut batch = WriteBatch::default();
        for (from, to) in &changes.delete_ranges {
            batch.delete_range_cf(cf, from, to);
        }
        for (k, v) in &changes.puts {
            batch.put_cf(cf, k, v);
        }
        self.db.write_opt(batch, &synced())?;
        Ok(())
    }

    pub fn consensus_state<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>, StoreError> {
        let Some(bytes) = self
            .db
            .get_cf(self.cf(CF_CONSENSUS_STATE), key.as_bytes())?
        else {
            return Ok(None);
        };
        decode_consensus(key.as_bytes(), &bytes).map(Some)
    }

    /// Every consensus-state record whose key starts with `prefix`, in key order.
    pub fn consensus_records<T: DeserializeOwned>(
        &self,
        prefix: &[u8],
    ) -> Result<Vec<(Vec<u8>, T)>, StoreError> {
        let mut out = Vec::new();
        self.scan_prefix(CF_CONSENSUS_STATE, prefix, |k, v| {
            out.push((k.to_vec(), decode_consensus(k, v)?));
            Ok(true)
        })?;
        Ok(out)
    }
}

mod access_log;
mod header_certificates;
mod records;
pub use records::{RecordFile, StagedRecord};
mod seen;
mod state_tree;
pub use state_tree::{StateSnapshot, StateTreeWrites};
#[cfg(test)]
mod tests;
