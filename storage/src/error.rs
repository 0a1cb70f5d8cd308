//! Storage errors.

use std::path::PathBuf;

/// Why a storage operation failed. Nothing is half-written when one of these is returned.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("data folder {path} is already in use by process {pid} (lock file {lock}); stop that node first, or point --home elsewhere")]
    InUse {
        path: PathBuf,
        pid: String,
        lock: PathBuf,
    },
    #[error("data folder {path} holds schema version {found}, this build uses version {expected}; migrate it with a matching medchain release or start a fresh data folder")]
    SchemaMismatch {
        path: PathBuf,
        found: u32,
        expected: u32,
    },
    #[error(
        "data folder {path} holds data but no medchain schema version; it is not a medchain store"
    )]
    NotAStore { path: PathBuf },
    #[error("data folder {path} belongs to the chain with genesis {stored}, but the config's genesis hashes to {expected}; point data_dir at this chain's data (or an empty folder to sync from peers), or use the genesis this data was made with")]
    OtherGenesis {
        path: PathBuf,
        stored: String,
        expected: String,
    },
    #[error("backup target {0} already exists; choose a new folder for each backup")]
    BackupExists(PathBuf),
    #[error("block at height {got} cannot be appended: the next height is {expected}")]
    NotNextHeight { expected: u64, got: u64 },
    #[error("block at height {height} does not extend the tip: its previous hash is {got}, the tip is {expected}")]
    WrongParent {
        height: u64,
        expected: String,
        got: String,
    },
    #[error("stored {what} is corrupt: {reason}")]
    Corrupt { what: String, reason: String },
    #[error("invalid block: {0}")]
    InvalidBlock(#[from] medchain_proto::ProtoError),
    #[error("RocksDB: {0}")]
    Rocks(#[from] rocksdb::Error),
    #[error("I/O error on {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("encoding consensus state: {0}")]
    Encode(String),
}
