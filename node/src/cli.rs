//! Command-line interface (clap derive).

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::config::NodeMode;
use crate::logging::LogFormat;

/// medchain: a permissioned two-tier blockchain node for health data.
///
/// Hospitals run private chains (PBFT); institutions share one consortium chain (credit-scored
/// DPoS). Records stay encrypted off chain; chains hold hashes, encrypted addresses and
/// signatures.
#[derive(Debug, Parser)]
#[command(name = "medchain", version, propagate_version = true)]
pub struct Cli {
    /// Log output format.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Human, env = "MEDCHAIN_LOG_FORMAT")]
    pub log_format: LogFormat,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Generate a new participant key (signing, record-encryption and keyword-search keys from one
    /// seed) into a key file, and print its identity.
    Keygen(KeygenArgs),
    /// Create a node's home folder: config.toml, genesis.toml and the node key. With
    /// `--devnet N --out DIR`, create N home folders of a local network on 127.0.0.1 sharing one
    /// genesis.
    Init(InitArgs),
    /// Run a node from its home folder until interrupted (SIGINT or SIGTERM).
    Run(RunArgs),
    /// Load-test a running local network: signed record writes from concurrent clients; reports
    /// submitted, committed, throughput and commit latency.
    Bench(BenchArgs),
    /// Configuration tools.
    #[command(subcommand)]
    Config(ConfigCommand),
}

/// Where a key's password comes from.
#[derive(Debug, Args, Clone)]
pub struct PasswordArgs {
    /// Read the key password from this file (first line). Otherwise MEDCHAIN_PASSWORD, otherwise a
    /// prompt on the terminal.
    #[arg(long, value_name = "FILE")]
    pub password_file: Option<PathBuf>,

    /// Store the key unencrypted. Only for local development networks: a node refuses a plaintext
    /// key unless its config says `development = true`.
    #[arg(long)]
    pub insecure_plaintext: bool,
}

#[derive(Debug, Args)]
pub struct KeygenArgs {
    /// Path of the key file to write (must not exist).
    #[arg(long, short, value_name = "FILE")]
    pub out: PathBuf,

    #[command(flatten)]
    pub password: PasswordArgs,
}

#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum InitMode {
    /// A hospital private-chain node (PBFT replica).
    Private,
    /// A consortium-chain node (DPoS).
    Consortium,
}

impl From<InitMode> for NodeMode {
    fn from(m: InitMode) -> Self {
        match m {
            InitMode::Private => NodeMode::Private,
            InitMode::Consortium => NodeMode::Consortium,
        }
    }
}

#[derive(Debug, Args)]
pub struct BenchArgs {
    /// The devnet folder (made by `medchain init --devnet N --out DIR`), its nodes running.
    #[arg(long, value_name = "DIR")]
    pub home: PathBuf,
    /// Concurrent clients (client c sends to node c mod n).
    #[arg(long, default_value_t = 8)]
    pub clients: usize,
    /// Transactions to send in total.
    #[arg(long, default_value_t = 4_000)]
    pub transactions: usize,
    /// Offered load in transactions per second (0: as fast as the nodes accept).
    #[arg(long, default_value_t = 0.0)]
    pub rate: f64,
    /// How long to wait for the last commits, in seconds.
    #[arg(long, default_value_t = 120)]
    pub timeout_secs: u64,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// The node's home folder (made by `medchain init`).
    #[arg(long, value_name = "DIR")]
    pub home: PathBuf,

    /// Read the key password from this file (first line). Otherwise MEDCHAIN_PASSWORD, otherwise a
    /// prompt. Not needed for a plaintext development key.
    #[arg(long, value_name = "FILE")]
    pub password_file: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct InitArgs {
    /// Home folder to create (must not exist or be empty).
    #[arg(
        long,
        value_name = "DIR",
        required_unless_present = "devnet",
        conflicts_with = "devnet"
    )]
    pub home: Option<PathBuf>,

    /// Create a local development network of this many private-chain nodes (at least 4) under
    /// `--out`: plaintext keys, one shared genesis, ports from `--base-port`.
    #[arg(long, value_name = "N", requires = "out")]
    pub devnet: Option<usize>,

    /// Folder for the devnet's home folders (node0, node1, ...); must not exist or be empty.
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,

    /// First port of the devnet: node i listens for peers on base+i and serves its API on
    /// base+100+i.
    #[arg(long, default_value_t = 26_600)]
    pub base_port: u16,

    /// Which chain this node serves.
    #[arg(long, value_enum, default_value_t = InitMode::Private)]
    pub mode: InitMode,

    /// Chain ID written into the genesis template.
    #[arg(long, default_value = "hospital-dev")]
    pub chain_id: String,

    /// This node's name in the genesis validator list.
    #[arg(long, default_value = "node0")]
    pub name: String,

    /// Peer-to-peer listen address (libp2p multiaddr).
    #[arg(long, default_value = "/ip4/127.0.0.1/tcp/26656")]
    pub p2p_listen: String,

    /// Client API listen address.
    #[arg(long, default_value = "127.0.0.1:8545")]
    pub api_listen: String,

    /// Mark the config as a local development network (allows plaintext keys and shorter
    /// cadences). Implied by --insecure-plaintext.
    #[arg(long)]
    pub development: bool,

    #[command(flatten)]
    pub password: PasswordArgs,
}

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Validate a home folder's config.toml and genesis.toml; print every problem with its field
    /// and fix.
    Check {
        #[arg(long, value_name = "DIR")]
        home: PathBuf,
    },
}
