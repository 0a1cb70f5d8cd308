//! Node configuration (`config.toml`) and genesis (`genesis.toml`): typed structs, one loader, and
//! validation that reports every problem with its file, field and fix.
//!
//! Parsing is strict (`deny_unknown_fields`): a misspelt key is an error, not a silently ignored
//! setting. Parsing checks shape; [`validate`] then checks meaning (addresses parse, the validator
//! set is big enough, this node's key is in it, unsafe settings only on development networks).
//! Relative paths in `config.toml` are relative to the home folder.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use libp2p::Multiaddr;
use medchain_crypto::Identity;
use medchain_ledger::contracts::rules;
use serde::{Deserialize, Serialize};

use crate::logging::LogFormat;

pub const CONFIG_FILE: &str = "config.toml";

/// Which chain a node serves.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum NodeMode {
    Private,
    Consortium,
}

impl fmt::Display for NodeMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            NodeMode::Private => "private",
            NodeMode::Consortium => "consortium",
        })
    }
}

/// `config.toml`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct NodeConfig {
    pub mode: NodeMode,
    /// A local development network: allows plaintext key files and an API beyond loopback without
    /// authentication. Never set on a production node.
    #[serde(default)]
    pub development: bool,
    pub genesis_file: PathBuf,
    pub key_file: PathBuf,
    pub data_dir: PathBuf,
    pub network: NetworkConfig,
    pub api: ApiConfig,
    #[serde(default)]
    pub log: LogConfig,
    #[serde(default)]
    pub access: AccessConfig,
    #[serde(default)]
    pub storage: StorageConfig,
}

/// The record store's housekeeping.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct StorageConfig {
    /// How old a record file no pending or live slip names must be before the orphan sweep
    /// removes it, in hours.
    pub orphan_grace_hours: u64,
}

impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig {
            orphan_grace_hours: 24,
        }
    }
}

impl StorageConfig {
    pub fn orphan_grace(&self) -> std::time::Duration {
        std::time::Duration::from_secs(self.orphan_grace_hours.saturating_mul(3600))
    }
}

/// Abnormal-access detection (DESIGN.md flow 7): reads per identity and per source address over
/// a sliding window. An identity past its limit is suspended on chain until an authority lifts
/// it; a source past its limit is refused for the rest of the window.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct AccessConfig {
    /// Length of the sliding window, in seconds.
    pub window_secs: u64,
    /// Reads one identity may make in a window.
    pub max_reads_per_identity: u32,
    /// Reads one source address may make in a window.
    pub max_reads_per_source: u32,
}

impl Default for AccessConfig {
    fn default() -> Self {
        AccessConfig {
            window_secs: 60,
            max_reads_per_identity: 120,
            max_reads_per_source: 600,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct NetworkConfig {
    /// libp2p listen address, e.g. `/ip4/0.0.0.0/tcp/26656`.
    pub listen: String,
    /// Other nodes to dial at start, as multiaddrs.
    #[serde(default)]
    pub bootstrap: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ApiConfig {
    /// Client API listen address, e.g. `127.0.0.1:8545`.
    pub listen: String,
    /// A client must send its request's headers within this many milliseconds of connecting (or
    /// of its previous request on a kept-alive connection), else the connection is closed: a
    /// client that trickles headers cannot hold connections forever.
    #[serde(default = "default_header_read_timeout_ms")]
    pub header_read_timeout_ms: u64,
    /// A request (reading its body and computing the answer) gets this many milliseconds before
    /// it is answered 408. Long enough for a 16 MiB upload at 0.5 MiB/s (what the CLI waits
    /// too); event streams are not cut (their answer starts at once).
    #[serde(default = "default_request_timeout_ms")]
    pub request_timeout_ms: u64,
    /// Open client connections at most; more are closed as they arrive, so a flood of
    /// connections cannot exhaust the process's file descriptors (which the store needs).
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// Requests in progress at most; more wait for a slot.
    #[serde(default = "default_max_concurrent_requests")]
    pub max_concurrent_requests: usize,
}

fn default_header_read_timeout_ms() -> u64 {
    10_000
}
fn default_request_timeout_ms() -> u64 {
    300_000
}
fn default_max_connections() -> usize {
    1_024
}
fn default_max_concurrent_requests() -> usize {
    256
}

impl ApiConfig {
    /// The API on `listen` with the default limits.
    pub fn on(listen: impl Into<String>) -> Self {
        ApiConfig {
            listen: listen.into(),
            header_read_timeout_ms: default_header_read_timeout_ms(),
            request_timeout_ms: default_request_timeout_ms(),
            max_connections: default_max_connections(),
            max_concurrent_requests: default_max_concurrent_requests(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    #[serde(default)]
    pub format: LogFormat,
    /// An `EnvFilter` directive, e.g. `info` or `medchain_node=debug`.
    #[serde(default = "default_level")]
    pub level: String,
}

fn default_level() -> String {
    "info".into()
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            format: LogFormat::Human,
            level: default_level(),
        }
    }
}

/// `genesis.toml`: what every node of one chain must agree on.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Genesis {
    pub chain_id: String,
    pub kind: NodeMode,
    /// Unix milliseconds.
    pub genesis_time_ms: u64,
    pub params: ChainParams,
    pub validators: Vec<GenesisValidator>,
    /// Who registers participants (the hospital's records office, a health authority).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub authorities: Vec<GenesisAuthority>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct GenesisAuthority {
    pub name: String,
    pub identity: Identity,
}

/// Cadences and sizes (DESIGN.md section 6).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ChainParams {
    /// Cut a block when this many transactions are pending (default 128).
    pub max_block_transactions: u32,
    /// ...or when this long has passed with at least one pending (default 10 minutes).
    pub block_interval_ms: u64,
    /// PBFT checkpoint every this many sequence numbers.
    pub checkpoint_interval: u64,
    /// The contract rules the chain runs (DESIGN §4, "Rule versions"). A genesis written before
    /// rules had versions has no `rules` and runs version 1, so its hash and its blocks' effects
    /// stay what they were; new chains get the latest.
    #[serde(default = "rules_v1", skip_serializing_if = "is_rules_v1")]
    pub rules: u32,
}

fn rules_v1() -> u32 {
    rules::V1
}

fn is_rules_v1(r: &u32) -> bool {
    *r == rules::V1
}

impl Default for ChainParams {
    fn default() -> Self {
        ChainParams {
            max_block_transactions: 128,
            block_interval_ms: 10 * 60 * 1000,
            checkpoint_interval: 100,
            rules: rules::LATEST,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct GenesisValidator {
    pub name: String,
    pub identity: Identity,
    /// Where peers reach it (libp2p multiaddr).
    pub address: String,
    /// Its record-encryption public key (hex), which makes it a proxy: patients seal its
    /// re-encryption key fragment to this key. `medchain keygen` prints it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encryption_key: Option<String>,
}

impl Genesis {
    /// What every node of the chain must agree on, as one hash: the genesis's fields in a fixed
    /// order (JSON of the typed struct), so comments and layout of the TOML do not matter. A data
    /// folder is pinned to it at first start; operators compare it across nodes
    /// (`medchain config check` prints it).
    pub fn hash(&self) -> medchain_crypto::Hash32 {
        let fields = serde_json::to_vec(self).expect("a genesis always serialises");
        medchain_crypto::digest(medchain_crypto::hash::domains::GENESIS, &fields)
    }
}

/// One problem found in a file, with where and how to fix it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub file: PathBuf,
    pub field: String,
    pub problem: String,
    pub fix: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: `{}`: {} (fix: {})",
            self.file.display(),
            self.field,
            self.problem,
            self.fix
        )
    }
}

/// Why a home folder's configuration cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error(
        "cannot read {file}: {source} (run `medchain init --home <dir>` to create a home folder)"
    )]
    Read {
        file: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{file} is not a valid {what}:\n{message}")]
    Parse {
        file: PathBuf,
        what: &'static str,
        message: String,
    },
    #[error("{} problem(s) in the configuration:\n{}", .0.len(), list(.0))]
    Invalid(Vec<Problem>),
}

fn list(problems: &[Problem]) -> String {
    problems
        .iter()
        .map(|p| format!("  - {p}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// A parsed and validated home folder.
#[derive(Debug, Clone)]
pub struct LoadedConfig {
    pub home: PathBuf,
    pub config: NodeConfig,
    pub genesis: Genesis,
}

impl LoadedConfig {
    pub fn resolve(&self, path: &Path) -> PathBuf {
        self.home.join(path)
    }
    pub fn key_path(&self) -> PathBuf {
        self.resolve(&self.config.key_file)
    }
    pub fn data_path(&self) -> PathBuf {
        self.resolve(&self.config.data_dir)
    }
}

fn read_toml<T: serde::de::DeserializeOwned>(
    file: &Path,
    what: &'static str,
) -> Result<T, ConfigError> {
    let text = std::fs::read_to_string(file).map_err(|source| ConfigError::Read {
        file: file.to_path_buf(),
        source,
    })?;
    toml::from_str(&text).map_err(|e| ConfigError::Parse {
        file: file.to_path_buf(),
        what,
        message: e.to_string(),
    })
}

/// A chain ID is signed into every transaction and message and shown everywhere: non-empty
/// letters, digits, `-` and `_`.
pub fn valid_chain_id(id: &str) -> bool {
    !id.is_empty()
        && id
            .chars()
            .all(|ch| ch.is_ascii_alphanumeric() || ch == '-' || ch == '_')
}

/// Reads a genesis file (shape only; [`validate`] checks meaning in the context of a node).
pub fn read_genesis(file: &Path) -> Result<Genesis, ConfigError> {
    read_toml(file, "medchain genesis")
}

/// Loads and validates `home/config.toml` and the genesis file it names.
pub fn load(home: &Path) -> Result<LoadedConfig, ConfigError> {
    let config_path = home.join(CONFIG_FILE);
    let config: NodeConfig = read_toml(&config_path, "medchain config")?;
    let genesis_path = home.join(&config.genesis_file);
    let genesis: Genesis = read_toml(&genesis_path, "medchain genesis")?;
    let loaded = LoadedConfig {
        home: home.to_path_buf(),
        config,
        genesis,
    };
    let problems = validate(&loaded);
    if problems.is_empty() {
        Ok(loaded)
    } else {
        Err(ConfigError::Invalid(problems))
    }
}

/// Every semantic problem of a parsed home folder; empty when it is usable.
pub fn validate(loaded: &LoadedConfig) -> Vec<Problem> {
    let mut out = Vec::new();
    let cfg_file = loaded.home.join(CONFIG_FILE);
    let gen_file = loaded.resolve(&loaded.config.genesis_file);
    let mut add = |file: &Path, field: &str, problem: String, fix: &str| {
        out.push(Problem {
            file: file.to_path_buf(),
            field: field.to_string(),
            problem,
            fix: fix.to_string(),
        })
    };
    let c = &loaded.config;
    let g = &loaded.genesis;

    if c.network.listen.parse::<Multiaddr>().is_err() {
        add(
            &cfg_file,
            "network.listen",
            format!("{:?} is not a libp2p multiaddr", c.network.listen),
            "write it like \"/ip4/0.0.0.0/tcp/26656\"",
        );
    }
    for (i, b) in c.network.bootstrap.iter().enumerate() {
        if b.parse::<Multiaddr>().is_err() {
            add(
                &cfg_file,
                &format!("network.bootstrap[{i}]"),
                format!("{b:?} is not a libp2p multiaddr"),
                "write it like \"/ip4/10.0.0.2/tcp/26656\"",
            );
        }
    }
    match c.api.listen.parse::<SocketAddr>() {
        Err(_) => add(
            &cfg_file,
            "api.listen",
            format!("{:?} is not an IP:port address", c.api.listen),
            "write it like \"127.0.0.1:8545\"",
        ),
        Ok(addr) if !addr.ip().is_loopback() && !c.development => add(
            &cfg_file,
            "api.listen",
            format!("{addr} exposes the client API beyond this machine without authentication"),
            "listen on 127.0.0.1 and put an authenticating proxy in front, or set development = true on a local network",
        ),
        Ok(_) => {}
    }
    for (field, value) in [
        ("api.header_read_timeout_ms", c.api.header_read_timeout_ms),
        ("api.request_timeout_ms", c.api.request_timeout_ms),
        ("api.max_connections", c.api.max_connections as u64),
        (
            "api.max_concurrent_requests",
            c.api.max_concurrent_requests as u64,
        ),
    ] {
        if value == 0 {
            add(
                &cfg_file,
                field,
                "0 would refuse every client".into(),
                "give a positive number, or remove the line for the default",
            );
        }
    }
    if c.storage.orphan_grace_hours == 0 {
        add(
            &cfg_file,
            "storage.orphan_grace_hours",
            "0 would let the orphan sweep remove a ciphertext whose slip is about to be ordered"
                .into(),
            "give at least 1 (hours), or remove the line for the default of 24",
        );
    }
    if tracing_subscriber::EnvFilter::try_new(&c.log.level).is_err() {
        add(
            &cfg_file,
            "log.level",
            format!("{:?} is not a log filter", c.log.level),
            "use error, warn, info, debug or trace",
        );
    }
    let key_path = loaded.key_path();
    match medchain_crypto::keystore::peek_identity(&key_path) {
        Err(e) => add(
            &cfg_file,
            "key_file",
            e.to_string(),
            "point key_file at a key made by `medchain keygen`",
        ),
        Ok(id) => {
            if medchain_crypto::keystore::is_plaintext(&key_path).unwrap_or(false) && !c.development
            {
                add(
                    &cfg_file,
                    "key_file",
                    "the key file is not encrypted".into(),
                    "re-create it with a password (medchain keygen without --insecure-plaintext), or set development = true on a local network",
                );
            }
            if !g.validators.iter().any(|v| v.identity == id) && c.mode == NodeMode::Private {
                add(
                    &gen_file,
                    "validators",
                    format!("this node's identity {id} is not in the validator set"),
                    "add a [[validators]] entry with this identity, or use the right key_file",
                );
            }
        }
    }
    if g.kind != c.mode {
        add(
            &gen_file,
            "kind",
            format!(
                "genesis is for a {} chain but the node runs in {} mode",
                g.kind, c.mode
            ),
            "use the genesis of the chain this node serves, or change `mode`",
        );
    }
    if !valid_chain_id(&g.chain_id) {
        add(
            &gen_file,
            "chain_id",
            format!(
                "{:?} is empty or has characters other than letters, digits, - and _",
                g.chain_id
            ),
            "choose an ID like \"hospital-a\"",
        );
    }
    if g.kind == NodeMode::Private && g.validators.len() < 4 {
        add(
            &gen_file,
            "validators",
            format!(
                "{} validator(s); PBFT needs at least 4 to tolerate one fault",
                g.validators.len()
            ),
            "add a [[validators]] entry for each replica (run `medchain keygen` on each)",
        );
    }
    let mut seen = std::collections::BTreeSet::new();
    for (i, v) in g.validators.iter().enumerate() {
        if !seen.insert(v.identity) {
            add(
                &gen_file,
                &format!("validators[{i}].identity"),
                format!("{} is listed twice", v.identity),
                "give each validator its own key",
            );
        }
        if v.address.parse::<Multiaddr>().is_err() {
            add(
                &gen_file,
                &format!("validators[{i}].address"),
                format!("{:?} is not a libp2p multiaddr", v.address),
                "write it like \"/ip4/10.0.0.2/tcp/26656\"",
            );
        }
    }
    for (i, v) in g.validators.iter().enumerate() {
        if let Some(k) = &v.encryption_key {
            let ok = hex::decode(k).ok().is_some_and(|b| {
                medchain_crypto::keys::EncryptionPublicKey::from_bytes(&b).is_ok()
            });
            if !ok {
                add(
                    &gen_file,
                    &format!("validators[{i}].encryption_key"),
                    format!("{k:?} is not a record-encryption public key"),
                    "copy the \"encryption key\" line that `medchain keygen` printed for this validator",
                );
            }
        }
    }
    let mut seen_authorities = std::collections::BTreeSet::new();
    for (i, a) in g.authorities.iter().enumerate() {
        if g.validators.iter().any(|v| v.identity == a.identity) {
            add(
                &gen_file,
                &format!("authorities[{i}].identity"),
                format!("{} is also a validator", a.identity),
                "give the authority its own key (`medchain keygen`), kept off the nodes",
            );
        }
        if !seen_authorities.insert(a.identity) {
            add(
                &gen_file,
                &format!("authorities[{i}].identity"),
                format!("{} is listed twice", a.identity),
                "list each authority once",
            );
        }
    }
    if g.kind == NodeMode::Private && g.authorities.is_empty() {
        add(
            &gen_file,
            "authorities",
            "no authority: nobody could register doctors and patients".into(),
            "add an [[authorities]] entry with the identity of the hospital's registration key",
        );
    }
    let p = &g.params;
    if p.max_block_transactions == 0 || p.max_block_transactions > 10_000 {
        add(
            &gen_file,
            "params.max_block_transactions",
            format!("{} is out of range", p.max_block_transactions),
            "use 1 to 10000 (default 128)",
        );
    }
    if p.block_interval_ms < 100 {
        add(
            &gen_file,
            "params.block_interval_ms",
            format!("{} ms is too short", p.block_interval_ms),
            "use at least 100 (default 600000, ten minutes)",
        );
    }
    if p.checkpoint_interval == 0 {
        add(
            &gen_file,
            "params.checkpoint_interval",
            "must be positive".into(),
            "use e.g. 100",
        );
    }
    if !(rules::V1..=rules::LATEST).contains(&p.rules) {
        add(
            &gen_file,
            "params.rules",
            format!(
                "contract rules version {} is unknown to this medchain (it runs 1 to {})",
                p.rules,
                rules::LATEST
            ),
            "run the medchain release the chain was made with, or a later one",
        );
    }
    out
}

#[cfg(test)]
mod tests;
