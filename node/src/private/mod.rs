//! A hospital private-chain node: the PBFT replica, its ledger and mempool, run by the generic
//! [`crate::driver`] (which owns the engine and performs its actions in order: persist (synced)
//! before any send, commit each block in one atomic batch, arm timers, fetch missing blocks), with
//! the hospital chain's own work as followers of its committed blocks: ciphertext replication
//! ([`blobs`]), this proxy's re-encryption fragments and the access guard ([`followers`]).
//!
//! Signature checks of client and peer transactions run outside the driver (in the API handlers
//! and on blocking threads), so they use both cores; the driver only sees checked transactions.

pub mod access_guard;
pub mod access_log;
pub mod blob_push;
pub mod blobs;
pub mod chain;
pub mod followers;
mod handle;
pub mod orphans;
pub mod proxy_fragments;
pub mod replica_state;

use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};

use anyhow::{anyhow, Context, Result};
use medchain_crypto::keys::KeyMaterial;
use medchain_crypto::validators::{CachingVerifier, ValidatorSet};
use medchain_crypto::SigningKey;
use medchain_pbft::{Config, Replica};
use medchain_storage::Store;
use tokio::sync::{broadcast, mpsc, watch};

use crate::config::LoadedConfig;
use crate::driver::{Driver, Follower, Wiring, BLOCK_EVENTS};
use crate::net::{self, Peer};
use access_guard::AccessGuard;
use chain::PrivateChain;
use medchain_ledger::PrivateLedger;

pub use crate::clock::now_ms;
pub use crate::status::Status;
pub use handle::{NodeHandle, OwnTxError, SubmitError};

/// Pending transactions a node holds at most.
pub const MEMPOOL_CAPACITY: usize = 50_000;

/// Opens the store, restores the replica and starts the network, the blob room and the driver.
/// Returns the handle for the API and the driver's join handle.
pub fn start(
    loaded: &LoadedConfig,
    keys: KeyMaterial,
) -> Result<(NodeHandle, tokio::task::JoinHandle<Result<()>>)> {
    let key: SigningKey = keys.signing_key();
    let g = &loaded.genesis;
    let validators = ValidatorSet::new(g.validators.iter().map(|v| v.identity).collect())
        .map_err(|e| anyhow!("genesis validator set: {e}"))?;
    let me = validators
        .index_of(&key.identity())
        .ok_or_else(|| anyhow!("this node's key is not in the genesis validator set"))?;
    let store =
        Arc::new(Store::open(&loaded.data_path()).with_context(|| {
            format!("opening the data folder {}", loaded.data_path().display())
        })?);
    store.pin_genesis(&g.hash())?;
    let ledger = Arc::new(PrivateLedger::new(
        store.clone(),
        g.chain_id.clone(),
        validators.clone(),
        g.authorities.iter().map(|a| a.identity).collect(),
        g.params.rules,
    ));
    let chain = medchain_api::ChainInfo {
        chain_id: g.chain_id.clone(),
        rules: g.params.rules,
        rules_upgrade: None,
        validators: g
            .validators
            .iter()
            .enumerate()
            .map(|(i, v)| medchain_api::ValidatorInfo {
                index: i as u32,
                name: v.name.clone(),
                identity: v.identity.to_string(),
                encryption_key: v.encryption_key.clone(),
            })
            .collect(),
        authorities: g
            .authorities
            .iter()
            .map(|a| medchain_api::AuthorityInfo {
                name: a.name.clone(),
                identity: a.identity.to_string(),
            })
            .collect(),
    };
    let cfg = Config::new(
        g.chain_id.clone(),
        validators.clone(),
        me,
        g.params.max_block_transactions as usize,
        g.params.block_interval_ms,
        g.params.checkpoint_interval,
    );
    let persisted = replica_state::load(&store)?;
    let (exec_seq, exec_digest) = ledger.exec_point()?;
    let tip = store.tip()?.map_or(0, |t| t.height);
    if tip != exec_seq {
        return Err(anyhow!(
            "the store's tip is height {tip} but its execution point is {exec_seq}; the data folder is inconsistent (restore it from a backup or resync from peers into an empty folder)"
        ));
    }
    // A chain that moved (on chain) to rules this binary does not know: stop before the block
    // that needs them rather than execute or vote for it under other rules.
    let rules = ledger.rules_at(tip + 1)?;
    tracing::info!(
        height = tip,
        rules,
        restored_consensus_state = persisted.is_some(),
        "starting private-chain replica {me} of {}",
        validators.len()
    );
    let replica = Replica::restore(
        cfg,
        key.clone(),
        CachingVerifier::new(1 << 16),
        persisted,
        (exec_seq, exec_digest),
    )?;
    let peers: Vec<Peer> = g
        .validators
        .iter()
        .enumerate()
        .filter(|(i, _)| *i as u32 != me)
        .map(|(i, v)| {
            Ok(Peer {
                index: i as u32,
                name: v.name.clone(),
                identity: v.identity,
                address: v.address.parse()?,
            })
        })
        .collect::<Result<_>>()?;
    let listen = loaded.config.network.listen.parse()?;
    let network = net::start(&key, listen, peers)?;
    let committed_transactions = store
        .chain_state(medchain_ledger::COMMITTED_KEY)?
        .and_then(|b| b.try_into().ok())
        .map(u64::from_be_bytes)
        .unwrap_or(0);
    let tip_hash = store.tip()?.map(|t| t.hash.to_hex()).unwrap_or_default();
    let last_block_time_ms = store
        .block(tip)?
        .and_then(|b| b.header)
        .map_or(0, |h| h.timestamp_ms);
    let status = Status {
        last_block_time_ms,
        chain_id: g.chain_id.clone(),
        genesis_hash: g.hash().to_hex(),
        node: g.validators[me as usize].name.clone(),
        identity: key.identity().to_string(),
        height: tip,
        tip_hash,
        validators: validators.len(),
        mempool_capacity: MEMPOOL_CAPACITY,
        committed_transactions,
        peers_needed: validators.quorum().saturating_sub(1),
        ..Status::default()
    };
    let (status_tx, status_rx) = watch::channel(status.clone());
    let (submit_tx, submit_rx) = mpsc::channel(16_384);
    let node_key = Arc::new(keys);
    let metrics = Arc::new(crate::metrics::Metrics::new(network.traffic.clone()));
    let mut guard = AccessGuard::new(loaded.config.access.clone());
    // Read requests this node admitted before it stopped stay replays after the restart.
    guard.restore(
        store
            .remembered_read_requests(now_ms())
            .context("loading the read requests this node served before it stopped")?,
    );
    let access = Arc::new(Mutex::new(guard));
    // Access records of reads answered before the node stopped whose batch is not on chain.
    let queries = ledger.queries();
    let (access_log, on_chain) = access_log::AccessLog::restore(
        store
            .logged_accesses()
            .context("loading the access records this node kept before it stopped")?,
        |request| queries.read_recorded(request).unwrap_or(false),
    )?;
    store.forget_accesses(&on_chain)?;
    if !access_log.is_empty() {
        tracing::info!(
            reads = access_log.len(),
            "access records of reads answered before the restart are batched again"
        );
    }
    let access_log = Arc::new(access_log);
    let (blocks, _) = broadcast::channel(BLOCK_EVENTS);
    let (certified_tx, certified) = watch::channel(
        store
            .last_certified_height()
            .context("reading the header certificates")?
            .unwrap_or(0),
    );
    let handle = NodeHandle {
        blocks: blocks.clone(),
        store: store.clone(),
        ledger: ledger.clone(),
        status: status_rx,
        submit: submit_tx.clone(),
        chain: Arc::new(chain),
        node_key: node_key.clone(),
        me,
        net: network.commands.clone(),
        access: access.clone(),
        own_nonce: Arc::new(AtomicU64::new(0)),
        metrics: metrics.clone(),
        access_log: access_log.clone(),
        certified,
    };
    access_log::spawn_flusher(handle.clone(), access_log);
    let nodes = validators.len() as u32;
    let missing = blobs::Missing::default();
    let pending_blobs = crate::mempool::PendingBlobs::default();
    blobs::spawn(blobs::BlobRoom {
        store: store.clone(),
        missing: missing.clone(),
        gate: blob_push::PushGate {
            store: store.clone(),
            ledger: ledger.clone(),
            submit: submit_tx.clone(),
            missing: missing.clone(),
            pending: pending_blobs.clone(),
        },
        metrics: metrics.clone(),
        net: network.commands.clone(),
        events: network.blobs,
        stats: network.stats.clone(),
        nodes,
        me,
    });
    let sealed = proxy_fragments::seal_legacy_fragments(&node_key, &store)
        .context("sealing the proxy fragments an earlier release kept in clear")?;
    if sealed > 0 {
        tracing::info!(
            fragments = sealed,
            "sealed proxy fragments an earlier release kept in clear"
        );
    }
    let (vote_commits, commits) = mpsc::channel(crate::header_votes::QUEUE);
    crate::header_votes::spawn(crate::header_votes::VoteRoom {
        chain_id: g.chain_id.clone(),
        validators: validators.clone(),
        me,
        key: key.clone(),
        store: store.clone(),
        metrics: metrics.clone(),
        net: network.commands.clone(),
        events: network.header_votes,
        commits,
        certified: certified_tx,
    });
    proxy_fragments::spawn_expiry(store.clone());
    orphans::spawn(
        store.clone(),
        pending_blobs.clone(),
        missing.clone(),
        loaded.config.storage.orphan_grace(),
        metrics.clone(),
    );
    let followers: Vec<Box<dyn Follower<_>>> = vec![
        Box::new(blobs::BlobFollower {
            store: store.clone(),
            missing,
        }),
        Box::new(followers::FragmentKeeper {
            node_key,
            me,
            store: store.clone(),
        }),
        Box::new(followers::Reinstatements { access }),
        Box::new(crate::header_votes::HeaderVoter {
            commits: vote_commits,
        }),
    ];
    let chain = PrivateChain {
        replica,
        ledger,
        store,
        exec_digest,
        validators: nodes,
    };
    let wiring = Wiring {
        net: network.commands,
        events: network.events,
        stats: network.stats,
        submits: submit_rx,
        resubmit: submit_tx,
        status,
        status_tx,
        blocks,
        metrics,
        nodes,
        me,
        mempool_capacity: MEMPOOL_CAPACITY,
        mempool_quotas: crate::mempool::Quotas::for_capacity(
            MEMPOOL_CAPACITY,
            validators
                .members()
                .iter()
                .map(|v| v.as_bytes().to_vec())
                .collect(),
        ),
        pending_blobs,
        followers,
    };
    let join = tokio::spawn(async move { Ok(Driver::run(chain, wiring).await?) });
    Ok((handle, join))
}
