//! Durable storage of a medchain node on RocksDB: committed blocks and their indexes, chain state,
//! consensus state (what a replica voted, persisted before it is sent) and the off-chain store of
//! encrypted records.
//!
//! Depends on `medchain-proto` and `medchain-crypto` only; it knows nothing of consensus rules or
//! networking. Invariants it keeps:
//! - a committed block, its indexes and its state changes are written in one atomic, synced
//!   `WriteBatch`: after a crash a block is wholly present or wholly absent;
//! - blocks are appended strictly in height order onto the current tip;
//! - a data folder is used by one process at a time (a lock file naming the holder's PID);
//! - a store written under another schema version is refused, naming both versions.

mod error;
mod keys;
mod lock;
mod store;

pub use error::StoreError;
pub use store::{
    BackupSummary, ChainTip, ConsensusChanges, RecordFile, StagedRecord, StateSnapshot,
    StateTreeWrites, Store, TxLocation, SCHEMA_VERSION,
};
