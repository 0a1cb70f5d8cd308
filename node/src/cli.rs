//! Command-line interface (clap derive).

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::config::NodeMode;
use crate::logging::LogFormat;

/// The node API a client command talks to by default (node0 of `medchain init --devnet`).
pub const DEFAULT_NODE: &str = "http://127.0.0.1:26700";

/// medchain: a permissioned two-tier blockchain node for health data.
///
/// Hospitals run private chains (PBFT); institutions share one consortium chain (credit-scored
/// DPoS). Records stay encrypted off chain; chains hold hashes, encrypted addresses and
/// signatures.
#[derive(Debug, Parser)]
#[command(name = "medchain", version, propagate_version = true)]
pub struct Cli {
    /// Log output format (stderr). `medchain run` defaults to `[log] format` of the node's config;
    /// other commands to human.
    #[arg(long, global = true, value_enum, env = "MEDCHAIN_LOG_FORMAT")]
    pub log_format: Option<LogFormat>,

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
    /// One command for a local network: create (or reuse) a 4-node hospital chain on 127.0.0.1
    /// in `--dir`, start it, run a short demo of the record workflow, and keep it running until
    /// Ctrl-C.
    Devnet {
        #[arg(long, value_name = "DIR", default_value = "devnet")]
        dir: PathBuf,
        /// Stop the nodes and exit once the demo is done.
        #[arg(long)]
        exit_after_demo: bool,
        /// First port (used when the folder is created): node i listens for peers on base+i and
        /// serves its API on base+100+i.
        #[arg(long, default_value_t = 26_600)]
        base_port: u16,
    },
    /// Load-test a running local network: signed record writes from concurrent clients; reports
    /// submitted, committed, throughput and commit latency.
    Bench(BenchArgs),
    /// Configuration tools.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Build a chain's genesis file: start one, add each validator and authority from their key
    /// cards, then copy it to every node.
    #[command(subcommand)]
    Genesis(GenesisCommand),
    /// Copy a stopped node's data folder (chain, state, record ciphertexts) into a new folder,
    /// consistently, and check the copy. The key file is not included: keep it backed up
    /// separately and offline.
    Backup {
        /// The node's home folder.
        #[arg(long, value_name = "DIR")]
        home: PathBuf,
        /// Folder to create for the backup (must not exist).
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
    },
    /// Put a backup made by `medchain backup` in place as a stopped node's data folder, after
    /// checking that it belongs to this node's chain. The data folder must be absent or empty.
    Restore {
        /// The node's home folder.
        #[arg(long, value_name = "DIR")]
        home: PathBuf,
        /// The backup folder.
        #[arg(long, value_name = "DIR")]
        from: PathBuf,
    },
    /// Participants: register (an authority), show, suspend, reinstate.
    #[command(subcommand)]
    Identity(IdentityCommand),
    /// Health records: write, confirm, read, verify, delete, list pending. Encryption and
    /// decryption happen here, on your side.
    #[command(subcommand)]
    Record(RecordCommand),
    /// Consent: grant, request, approve, deny, revoke, list.
    #[command(subcommand)]
    Consent(ConsentCommand),
    /// The provenance trail of a record, a patient or an actor, in chain order.
    Audit(AuditArgs),
    /// The contract rules a chain runs; an authority's upgrade of a running chain to a later
    /// version at an agreed height.
    #[command(subcommand)]
    Rules(RulesCommand),
    /// A light client: it keeps only the chain's genesis file and the headers the validators
    /// certified (header-only sync), and other commands given its folder (`--light DIR`) check
    /// every answer against them.
    #[command(subcommand)]
    Light(LightCommand),
    /// Authenticate to a node with `--key` and print a bearer token for its API (for curl and
    /// integration scripts: `Authorization: Bearer TOKEN`). It works at that node only, for ten
    /// minutes, and not after the node restarts.
    Token {
        #[command(flatten)]
        client: ClientArgs,
    },
    /// A running node's state: height, last block, view and primary, peers, mempool, catch-up,
    /// readiness.
    Status {
        /// The node's API.
        #[arg(long, env = "MEDCHAIN_NODE", default_value = DEFAULT_NODE)]
        node: String,
        /// Print the status as JSON.
        #[arg(long)]
        json: bool,
        /// Wait up to this many seconds for the node to answer and be ready (in consensus and
        /// caught up); fail if it is not. For scripts and service managers.
        #[arg(long, value_name = "SECS")]
        wait: Option<u64>,
    },
}

#[derive(Debug, Subcommand)]
pub enum RulesCommand {
    /// The rules the chain's next block runs, and the upgrade scheduled, if any.
    Show {
        /// The node's API.
        #[arg(long, env = "MEDCHAIN_NODE", default_value = DEFAULT_NODE)]
        node: String,
    },
    /// Schedule the chain's move to rules `--to` from `--at-height` (`--key` is a genesis
    /// authority's key). Every node must run a release that knows that version by then; one that
    /// does not stops before that block and says so. An upgrade not yet in effect can be replaced.
    Upgrade {
        /// The version to move to.
        #[arg(long)]
        to: u32,
        /// The first block to run it (default: the earliest allowed plus as much again).
        #[arg(long, value_name = "HEIGHT")]
        at_height: Option<u64>,
        #[command(flatten)]
        client: ClientArgs,
    },
}

#[derive(Debug, Subcommand)]
pub enum LightCommand {
    /// Fetch the headers after the folder's newest from `--node`, keep those a certificate of
    /// 2f + 1 genesis validators vouches for, and print the newest. The first sync needs
    /// `--genesis` (copied into the folder); later ones check it against the folder's.
    Sync {
        /// The node's API.
        #[arg(long, env = "MEDCHAIN_NODE", default_value = DEFAULT_NODE)]
        node: String,
        /// The chain's genesis file (needed the first time).
        #[arg(long, env = "MEDCHAIN_GENESIS", value_name = "FILE")]
        genesis: Option<PathBuf>,
        /// The light client's folder (default: the chain's folder under
        /// MEDCHAIN_LIGHT_ROOT or ~/.medchain/light, which client commands then use by
        /// themselves).
        #[arg(long, env = "MEDCHAIN_LIGHT", value_name = "DIR")]
        light: Option<PathBuf>,
    },
    /// The folder's chain and its newest verified header; no node is asked. Without `--light`,
    /// every default folder (under MEDCHAIN_LIGHT_ROOT or ~/.medchain/light).
    Status {
        /// The light client's folder.
        #[arg(long, env = "MEDCHAIN_LIGHT", value_name = "DIR")]
        light: Option<PathBuf>,
    },
}

/// How a client command reaches the chain and whose key it uses.
#[derive(Debug, Args, Clone)]
pub struct ClientArgs {
    /// The node's API.
    #[arg(long, env = "MEDCHAIN_NODE", default_value = DEFAULT_NODE)]
    pub node: String,
    /// Your key file (made by `medchain keygen`).
    #[arg(long, env = "MEDCHAIN_KEY", value_name = "FILE")]
    pub key: Option<PathBuf>,
    /// Read the key password from this file. Otherwise MEDCHAIN_PASSWORD, otherwise a prompt.
    #[arg(long, value_name = "FILE")]
    pub password_file: Option<PathBuf>,
    /// The chain's genesis file: the client then trusts its validators, not the node, and
    /// verifies every key it uses against a header 2f + 1 of them certified.
    #[arg(long, env = "MEDCHAIN_GENESIS", value_name = "FILE")]
    pub genesis: Option<PathBuf>,
    /// A light client's folder (`medchain light sync` makes it): its genesis file is trusted as
    /// `--genesis` is, and an answer proved against an older header than the newest it keeps is
    /// refused as stale.
    #[arg(long, env = "MEDCHAIN_LIGHT", value_name = "DIR")]
    pub light: Option<PathBuf>,
    /// Believe the node without verifying, even where a light folder for its chain exists
    /// (`~/.medchain/light/CHAIN`, or under MEDCHAIN_LIGHT_ROOT): without `--genesis`,
    /// `--light` or this, a client verifies against that folder.
    #[arg(long, conflicts_with_all = ["genesis", "light"])]
    pub trust_node: bool,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum RoleArg {
    Patient,
    Doctor,
    /// A data user: requests access and reads under a grant, never writes (contract rules 2).
    Insurer,
    /// A data user, as an insurer.
    Researcher,
}

#[derive(Debug, Subcommand)]
pub enum IdentityCommand {
    /// Register a participant from their key card (`--key` is the authority's key).
    Register {
        /// The participant's key card (written by `medchain keygen` beside their key).
        #[arg(long, value_name = "FILE")]
        card: PathBuf,
        #[arg(long, value_enum)]
        role: RoleArg,
        /// Display name (no health data). Doctors, data users: required. Patients: none on a
        /// chain of rules 3 or later (her name would tell every validator she is a patient
        /// here); required on older chains.
        #[arg(long)]
        name: Option<String>,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Show a registered participant (default: the owner of `--key`).
    Show {
        identity: Option<String>,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Suspend an identity (`--key` is an authority's key).
    Suspend {
        identity: String,
        #[arg(long)]
        reason: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Lift a suspension (`--key` is an authority's key).
    Reinstate {
        identity: String,
        #[command(flatten)]
        client: ClientArgs,
    },
}

#[derive(Debug, Subcommand)]
pub enum RecordCommand {
    /// Write a record for a patient (`--key` is the doctor's key): encrypt it and its keywords
    /// to the patient, upload the ciphertext, put the signed slip on chain.
    Add {
        #[arg(long)]
        patient: String,
        /// Record type; derived from a FHIR resource's resourceType when omitted.
        #[arg(long = "type")]
        record_type: Option<String>,
        #[arg(long, value_name = "PATH")]
        file: PathBuf,
        /// A searchable keyword (repeat for several).
        #[arg(long = "keyword")]
        keywords: Vec<String>,
        /// The slip this record corrects.
        #[arg(long, value_name = "SLIP")]
        replaces: Option<String>,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Confirm a record written for you (`--key` is the patient's key): check the doctor's
    /// signature, decrypt, check the hash, co-sign.
    Confirm {
        slip: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Records awaiting the patient's confirmation (default: the owner of `--key`).
    Pending {
        #[arg(long)]
        patient: Option<String>,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Read a record into a file: as its patient directly, as a grantee through the proxy.
    Get {
        slip: String,
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Tamper check: the node recomputes the stored ciphertext's hash against the chain; with
    /// `--key` of someone allowed to read, the plaintext's hash is checked against H(M) too.
    Verify {
        slip: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Delete a record (`--key`: its patient or an authority). The ciphertext is erased
    /// everywhere; the slip and its history stay.
    Delete {
        slip: String,
        #[arg(long, default_value = "")]
        reason: String,
        #[command(flatten)]
        client: ClientArgs,
    },
}

#[derive(Debug, Subcommand)]
pub enum ConsentCommand {
    /// Grant access to your records (`--key` is the patient's key).
    Grant {
        /// The grantee's identity.
        #[arg(long)]
        to: String,
        /// record:<slip>, type:<record type> or all.
        #[arg(long)]
        scope: String,
        /// read[,write] (write for doctors only; copy is refused under contract rules 2)
        #[arg(long, default_value = "read")]
        actions: String,
        /// Expiry: +30m, +2h, +7d, Unix milliseconds or 2026-12-31T23:59:59Z.
        #[arg(long)]
        until: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Ask a patient for access (`--key` is yours).
    Request {
        #[arg(long)]
        patient: String,
        #[arg(long)]
        scope: String,
        #[arg(long, default_value = "read")]
        actions: String,
        #[arg(long)]
        until: String,
        #[arg(long, default_value = "")]
        purpose: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Approve a request: grant exactly what it asked for (`--key` is the patient's key).
    Approve {
        request: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Deny a request (`--key` is the patient's key).
    Deny {
        request: String,
        #[arg(long, default_value = "")]
        reason: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Revoke a grant; the proxies destroy their fragments (`--key` is the patient's key).
    Revoke {
        grant: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Grants and requests of a patient (`--patient`) or of a grantee (`--grantee`); default:
    /// the owner of `--key` as patient.
    List {
        #[arg(long)]
        patient: Option<String>,
        #[arg(long)]
        grantee: Option<String>,
        #[command(flatten)]
        client: ClientArgs,
    },
}

#[derive(Debug, Args)]
pub struct AuditArgs {
    #[arg(long, value_name = "SLIP", conflicts_with_all = ["patient", "actor"])]
    pub record: Option<String>,
    #[arg(long, conflicts_with = "actor")]
    pub patient: Option<String>,
    #[arg(long)]
    pub actor: Option<String>,
    /// Print the events as JSON.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub client: ClientArgs,
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
pub enum GenesisCommand {
    /// Start a genesis file with no validators or authorities yet.
    New {
        /// The file to write (must not exist).
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
        /// The chain's ID, e.g. hospital-a.
        #[arg(long)]
        chain_id: String,
        /// Which chain: a hospital's private chain or the consortium chain.
        #[arg(long, value_enum, default_value_t = InitMode::Private)]
        kind: InitMode,
        /// Development cadences (blocks within 200 ms) instead of production ones.
        #[arg(long, conflicts_with_all = ["block_interval_ms", "max_block_transactions"])]
        development: bool,
        /// Cut a block when the oldest pending transaction has waited this long (default ten
        /// minutes, DESIGN.md; interactive use wants seconds).
        #[arg(long)]
        block_interval_ms: Option<u64>,
        /// ...or as soon as this many transactions are pending (default 128).
        #[arg(long)]
        max_block_transactions: Option<u32>,
    },
    /// Add a validator (a replica) from its key card (`keys/node.card.json` of its home folder).
    AddValidator {
        #[command(flatten)]
        entry: GenesisEntry,
        /// Where the other validators reach it (libp2p multiaddr), e.g. /ip4/10.0.0.11/tcp/26656.
        #[arg(long)]
        address: String,
    },
    /// Add an authority (the key that registers doctors and patients) from its key card.
    AddAuthority {
        #[command(flatten)]
        entry: GenesisEntry,
    },
}

/// Who is added to which genesis file.
#[derive(Debug, Args)]
pub struct GenesisEntry {
    /// The genesis file to change.
    #[arg(long, value_name = "FILE")]
    pub genesis: PathBuf,
    /// The participant's key card.
    #[arg(long, value_name = "FILE")]
    pub card: PathBuf,
    /// Its name in logs and status.
    #[arg(long)]
    pub name: String,
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
