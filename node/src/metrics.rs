//! The node's Prometheus metrics (`GET /metrics`, text format, prometheus-client).
//!
//! Counters move where the events happen (commits in the core, admissions in the API, reads in
//! the record API, bytes in the peer codec); gauges that mirror the status are refreshed when
//! scraped, and the store's size is measured then too, so nothing is computed for nobody.

use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use crate::net::PeerTraffic;
use crate::status::Status;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Reason {
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Call {
    pub call: String,
    pub result: String,
}

/// Every metric the node exports.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    height: Gauge,
    pub commits: Counter,
    pub view_changes: Counter,
    /// Seconds from a batch's proposal (its timestamp) to its commit at this node.
    pub round_seconds: Histogram,
    pub transactions_accepted: Counter,
    pub transactions_rejected: Family<Reason, Counter>,
    mempool: Gauge,
    peers: Gauge,
    bytes_in: Gauge,
    bytes_out: Gauge,
    store_bytes: Gauge,
    pub record_api: Family<Call, Counter>,
    /// Peer messages dropped because they failed a check, by message kind.
    pub peer_messages_refused: Family<Kind, Counter>,
    /// Client connections closed on arrival at the `[api] max_connections` limit.
    api_connections_refused: Counter,
    /// Files the orphan sweep removed from the record store (no pending or live slip).
    pub orphans_removed: Counter,
    /// Access records of answered reads not yet on chain (rules 4: waiting for their batch).
    pub access_records_pending: Gauge,
    /// Height of the newest block with a header certificate (2f + 1 validators' votes).
    pub certified_height: Gauge,
    /// Heights at which f + 1 validators signed another header than this node stored.
    pub header_divergences: Counter,
    traffic: Arc<PeerTraffic>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Kind {
    pub kind: String,
}

impl Default for Metrics {
    /// Metrics of a node instance with no network (its peer byte counters stay 0).
    fn default() -> Self {
        Metrics::new(Arc::default())
    }
}

impl Metrics {
    /// The metrics of one node instance, reading its peer traffic from `traffic`.
    pub fn new(traffic: Arc<PeerTraffic>) -> Self {
        let mut registry = Registry::with_prefix("medchain");
        let m = Metrics {
            traffic,
            height: Gauge::default(),
            commits: Counter::default(),
            view_changes: Counter::default(),
            round_seconds: Histogram::new(exponential_buckets(0.01, 2.0, 12)),
            transactions_accepted: Counter::default(),
            transactions_rejected: Family::default(),
            mempool: Gauge::default(),
            peers: Gauge::default(),
            bytes_in: Gauge::default(),
            bytes_out: Gauge::default(),
            store_bytes: Gauge::default(),
            record_api: Family::default(),
            peer_messages_refused: Family::default(),
            api_connections_refused: Counter::default(),
            orphans_removed: Counter::default(),
            access_records_pending: Gauge::default(),
            certified_height: Gauge::default(),
            header_divergences: Counter::default(),
            registry: Registry::default(),
        };
        registry.register(
            "height",
            "Height of the last committed block",
            m.height.clone(),
        );
        registry.register(
            "commits",
            "Blocks committed by this node",
            m.commits.clone(),
        );
        registry.register(
            "view_changes",
            "PBFT views this node moved to",
            m.view_changes.clone(),
        );
        registry.register(
            "round_seconds",
            "Seconds from a batch's proposal to its commit at this node",
            m.round_seconds.clone(),
        );
        registry.register(
            "orphan_records_removed",
            "Record files removed by the orphan sweep: no pending or live slip named them within the grace period",
            m.orphans_removed.clone(),
        );
        registry.register(
            "access_records_pending",
            "Access records of reads this node answered that are not on chain yet (waiting for their batch)",
            m.access_records_pending.clone(),
        );
        registry.register(
            "certified_height",
            "Height of the newest block whose header 2f + 1 validators signed",
            m.certified_height.clone(),
        );
        registry.register(
            "header_divergences",
            "Heights at which f + 1 validators signed another header than this node stored: some ledger is wrong",
            m.header_divergences.clone(),
        );
        registry.register(
            "transactions_accepted",
            "Transactions accepted into the mempool",
            m.transactions_accepted.clone(),
        );
        registry.register(
            "transactions_rejected",
            "Transactions refused at admission, by reason",
            m.transactions_rejected.clone(),
        );
        registry.register(
            "mempool_transactions",
            "Pending transactions",
            m.mempool.clone(),
        );
        registry.register("peers_connected", "Connected validators", m.peers.clone());
        registry.register(
            "peer_bytes_in",
            "Bytes of peer messages received",
            m.bytes_in.clone(),
        );
        registry.register(
            "peer_bytes_out",
            "Bytes of peer messages sent",
            m.bytes_out.clone(),
        );
        registry.register(
            "store_bytes",
            "Size of the data folder",
            m.store_bytes.clone(),
        );
        registry.register(
            "record_api_calls",
            "Record API calls by call and result",
            m.record_api.clone(),
        );
        registry.register(
            "peer_messages_refused",
            "Peer messages dropped because they failed a check, by kind",
            m.peer_messages_refused.clone(),
        );
        registry.register(
            "api_connections_refused",
            "Client API connections closed on arrival at the [api] max_connections limit",
            m.api_connections_refused.clone(),
        );
        Metrics { registry, ..m }
    }
}

fn dir_size(path: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(path) else {
        return 0;
    };
    entries
        .filter_map(|e| e.ok())
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_size(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

impl Metrics {
    pub fn reject(&self, reason: &str) {
        self.transactions_rejected
            .get_or_create(&Reason {
                reason: reason.to_string(),
            })
            .inc();
    }

    pub fn refuse_peer_message(&self, kind: &str) {
        self.peer_messages_refused
            .get_or_create(&Kind {
                kind: kind.to_string(),
            })
            .inc();
    }

    pub fn api_connection_refused(&self) {
        self.api_connections_refused.inc();
    }

    pub fn record_call(&self, call: &str, result: &str) {
        self.record_api
            .get_or_create(&Call {
                call: call.to_string(),
                result: result.to_string(),
            })
            .inc();
    }

    /// The text exposition, with the status gauges and the store size refreshed.
    pub fn render(&self, status: &Status, data_dir: &Path) -> String {
        self.height.set(status.height as i64);
        self.mempool.set(status.mempool as i64);
        self.peers.set(status.peers_connected as i64);
        self.bytes_in
            .set(self.traffic.bytes_in.load(Ordering::Relaxed) as i64);
        self.bytes_out
            .set(self.traffic.bytes_out.load(Ordering::Relaxed) as i64);
        self.store_bytes.set(dir_size(data_dir) as i64);
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposition_names_every_metric_with_its_values() {
        let m = Metrics::default();
        m.commits.inc();
        m.reject("nonce_used");
        m.record_call("read", "granted");
        m.round_seconds.observe(0.3);
        let status = Status {
            height: 7,
            peers_connected: 3,
            ..Status::default()
        };
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("f"), [0u8; 100]).unwrap();
        let text = m.render(&status, dir.path());
        for needle in [
            "medchain_height 7",
            "medchain_commits_total 1",
            "medchain_transactions_rejected_total{reason=\"nonce_used\"} 1",
            "medchain_record_api_calls_total{call=\"read\",result=\"granted\"} 1",
            "medchain_peers_connected 3",
            "medchain_store_bytes 100",
            "medchain_round_seconds_bucket",
            "medchain_view_changes_total 0",
        ] {
            assert!(text.contains(needle), "{needle} missing:\n{text}");
        }
    }
}
