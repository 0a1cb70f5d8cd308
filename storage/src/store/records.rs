//! Record ciphertext files: `<data>/records/<first two hex digits>/<hash hex>`.
//!
//! Record ciphertexts (up to 16 MiB) are files, not RocksDB values: large values would be
//! rewritten by every compaction, and an operator can back up, inspect and check them with
//! ordinary tools. A ciphertext is first *staged* (written and synced under a temporary name that
//! starts with a dot) and put in place only once its slip is admitted, so a refused upload leaves
//! nothing behind; temporaries a crash left are collected by the node's orphan sweep.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

use medchain_crypto::Hash32;

use super::Store;
use crate::keys::RECORDS_DIR;
use crate::StoreError;

/// Distinguishes concurrent stagings of one ciphertext (two uploads of the same bytes).
static STAGING: AtomicU64 = AtomicU64::new(0);

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> StoreError {
    let path = path.to_path_buf();
    move |source| StoreError::Io { path, source }
}

fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_error(dir))
}

/// A ciphertext written and synced under a temporary name, not yet visible as a record.
/// [`StagedRecord::commit`] puts it in place; dropping it uncommitted removes the temporary, so
/// an upload whose slip is refused stores nothing.
#[derive(Debug)]
pub struct StagedRecord {
    tmp: PathBuf,
    path: PathBuf,
    committed: bool,
}

impl StagedRecord {
    /// Renames the staged file into place and syncs its folder: after this returns the record
    /// survives a crash.
    pub fn commit(mut self) -> Result<(), StoreError> {
        std::fs::rename(&self.tmp, &self.path).map_err(io_error(&self.path))?;
        self.committed = true;
        sync_dir(self.path.parent().expect("record paths have a parent"))
    }
}

impl Drop for StagedRecord {
    fn drop(&mut self) {
        if !self.committed {
            // A leftover (the removal failed) is a temporary the orphan sweep collects.
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}

/// A file found under `records/`, for the orphan sweep.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordFile {
    pub path: PathBuf,
    /// The content address its name gives; `None` for a temporary or a stray file.
    pub address: Option<Hash32>,
    pub modified: SystemTime,
    pub bytes: u64,
}

impl Store {
    /// Where the ciphertext with content address `content_hash` lives.
    pub fn record_path(&self, content_hash: &Hash32) -> PathBuf {
        let hex = content_hash.to_hex();
        self.path.join(RECORDS_DIR).join(&hex[..2]).join(hex)
    }

    /// Writes and syncs a ciphertext under a temporary name beside its place (see
    /// [`StagedRecord`]).
    pub fn stage_record(
        &self,
        content_hash: &Hash32,
        blob: &[u8],
    ) -> Result<StagedRecord, StoreError> {
        let path = self.record_path(content_hash);
        let dir = path.parent().expect("record paths have a parent");
        std::fs::create_dir_all(dir).map_err(io_error(dir))?;
        let n = STAGING.fetch_add(1, Ordering::Relaxed);
        let tmp = dir.join(format!(
            ".{}.{}.{n}.tmp",
            content_hash.to_hex(),
            std::process::id()
        ));
        // Made before the write, so a failed write is removed by the guard's drop.
        let staged = StagedRecord {
            tmp,
            path,
            committed: false,
        };
        let mut f = std::fs::File::create(&staged.tmp).map_err(io_error(&staged.tmp))?;
        std::io::Write::write_all(&mut f, blob).map_err(io_error(&staged.tmp))?;
        f.sync_all().map_err(io_error(&staged.tmp))?;
        Ok(staged)
    }

    /// Stores an encrypted record under its content address at once (staged, then put in
    /// place), so a crash leaves either the whole ciphertext or none.
    pub fn put_record(&self, content_hash: &Hash32, blob: &[u8]) -> Result<(), StoreError> {
        self.stage_record(content_hash, blob)?.commit()
    }

    /// Whether a ciphertext is stored (without reading it).
    pub fn has_record(&self, content_hash: &Hash32) -> bool {
        self.record_path(content_hash).is_file()
    }

    /// The stored ciphertext, as found on disk (callers check it against its address).
    pub fn record(&self, content_hash: &Hash32) -> Result<Option<Vec<u8>>, StoreError> {
        let path = self.record_path(content_hash);
        match std::fs::read(&path) {
            Ok(b) => Ok(Some(b)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(StoreError::Io { path, source }),
        }
    }

    /// Destroys a record's ciphertext (erasure); the chain keeps its hash and history.
    pub fn delete_record(&self, content_hash: &Hash32) -> Result<(), StoreError> {
        remove_file_synced(&self.record_path(content_hash))
    }

    /// Removes a file [`Self::for_each_record_file`] found (an orphan or a stale temporary).
    pub fn remove_record_file(&self, file: &RecordFile) -> Result<(), StoreError> {
        let records = self.path.join(RECORDS_DIR);
        if !file.path.starts_with(&records) {
            return Err(StoreError::Corrupt {
                what: "record file".into(),
                reason: format!("{} is not under {}", file.path.display(), records.display()),
            });
        }
        remove_file_synced(&file.path)
    }

    /// Calls `visit` with every file under `records/`, one shard folder at a time (a store may
    /// hold millions: they are never all in memory).
    pub fn for_each_record_file(
        &self,
        mut visit: impl FnMut(RecordFile) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        let root = self.path.join(RECORDS_DIR);
        let shards = match std::fs::read_dir(&root) {
            Ok(s) => s,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(source) => return Err(StoreError::Io { path: root, source }),
        };
        for shard in shards {
            let shard = shard.map_err(io_error(&root))?.path();
            if !shard.is_dir() {
                continue;
            }
            for file in std::fs::read_dir(&shard).map_err(io_error(&shard))? {
                let file = file.map_err(io_error(&shard))?;
                let path = file.path();
                let meta = match file.metadata() {
                    Ok(m) if m.is_file() => m,
                    // Gone since the listing (erased or put in place), or not a file.
                    _ => continue,
                };
                let name = file.file_name();
                let address = name
                    .to_str()
                    .filter(|n| !n.starts_with('.'))
                    .and_then(|n| Hash32::from_hex(n).ok())
                    .filter(|h| path == self.record_path(h));
                visit(RecordFile {
                    modified: meta.modified().map_err(io_error(&path))?,
                    bytes: meta.len(),
                    address,
                    path,
                })?;
            }
        }
        Ok(())
    }
}

fn remove_file_synced(path: &Path) -> Result<(), StoreError> {
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(source) => {
            return Err(StoreError::Io {
                path: path.to_path_buf(),
                source,
            })
        }
    }
    match path.parent() {
        Some(dir) => sync_dir(dir),
        None => Ok(()),
    }
}

/// Copies `<from>/<xx>/<hash>` files (not temporaries) to `to`, syncing each file and folder.
pub(super) fn copy_records(from: &Path, to: &Path) -> Result<(usize, u64), StoreError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| StoreError::Io { path, source }
    };
    let mut count = 0;
    let mut bytes = 0;
    let Ok(shards) = std::fs::read_dir(from) else {
        return Ok((0, 0));
    };
    for shard in shards {
        let shard = shard.map_err(io(from))?;
        if !shard.file_type().map_err(io(&shard.path()))?.is_dir() {
            continue;
        }
        let target = to.join(shard.file_name());
        std::fs::create_dir_all(&target).map_err(io(&target))?;
        for file in std::fs::read_dir(shard.path()).map_err(io(&shard.path()))? {
            let file = file.map_err(io(&shard.path()))?;
            if file.file_name().to_string_lossy().starts_with('.') {
                continue;
            }
            let dest = target.join(file.file_name());
            bytes += std::fs::copy(file.path(), &dest).map_err(io(&dest))?;
            std::fs::File::open(&dest)
                .and_then(|f| f.sync_all())
                .map_err(io(&dest))?;
            count += 1;
        }
        std::fs::File::open(&target)
            .and_then(|d| d.sync_all())
            .map_err(io(&target))?;
    }
    Ok((count, bytes))
}
