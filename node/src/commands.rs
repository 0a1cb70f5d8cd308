//! Command handlers: the binary's edge, where errors become `anyhow` reports for the operator.

use std::path::Path;

use anyhow::{bail, Context, Result};

use crate::cli::{BenchArgs, Cli, Command, ConfigCommand, InitArgs, KeygenArgs, RunArgs};
use crate::clock::now_ms;
use crate::config::{self, ChainParams, Genesis, GenesisValidator, NodeMode};
use crate::home_files::{
    dev_params, ensure_empty, init_devnet, is_empty_dir, write_config, write_genesis, write_new_key,
};
use crate::logging::LogFormat;
use crate::password;
use medchain_crypto::keystore;
use medchain_storage::{Store, StoreError};

pub fn run(cli: Cli) -> Result<()> {
    // A node logs as its config says (it is read first); everything else logs at info.
    if !matches!(cli.command, Command::Run(_)) {
        crate::logging::init(cli.log_format.unwrap_or_default(), "info");
    }
    match cli.command {
        Command::Keygen(args) => keygen(args),
        Command::Init(args) => init(args),
        Command::Run(args) => run_node(args, cli.log_format),
        Command::Devnet {
            dir,
            exit_after_demo,
            base_port,
        } => crate::devnet::run(dir, exit_after_demo, base_port),
        Command::Bench(args) => bench(args),
        Command::Config(ConfigCommand::Check { home }) => config_check(&home),
        Command::Genesis(cmd) => crate::genesis_cmd::run(cmd),
        Command::Backup { home, out } => backup(&home, &out),
        Command::Restore { home, from } => restore(&home, &from),
        Command::Identity(cmd) => crate::client::commands::identity(cmd),
        Command::Record(cmd) => crate::client::commands::record(cmd),
        Command::Consent(cmd) => crate::client::commands::consent(cmd),
        Command::Audit(args) => crate::client::commands::audit(args),
        Command::Rules(cmd) => crate::client::rules::run(cmd),
        Command::Light(cmd) => crate::client::light_cmd::run(cmd),
        Command::Token { client } => crate::client::commands::token(client),
        Command::Status { node, json, wait } => crate::client::commands::status(&node, json, wait),
    }
}

fn keygen(args: KeygenArgs) -> Result<()> {
    let keys = write_new_key(&args.out, &args.password)?;
    let binding = keys.key_binding();
    let card_path = crate::client::card_path(&args.out);
    out!("identity:        {}", binding.identity);
    out!(
        "encryption key:  {}",
        hex::encode(binding.encryption_key.to_bytes())
    );
    out!(
        "search key:      {}",
        hex::encode(binding.search_key.to_bytes())
    );
    out!(
        "binding sig:     {}",
        hex::encode(binding.signature.as_bytes())
    );
    out!(
        "key card:        {} (public: give it to the authority that registers you)",
        card_path.display()
    );
    out!(
        "key file:        {} ({})",
        args.out.display(),
        if args.password.insecure_plaintext {
            "UNENCRYPTED, development only"
        } else {
            "encrypted, argon2id + xchacha20poly1305"
        }
    );
    Ok(())
}

fn init(args: InitArgs) -> Result<()> {
    if let Some(n) = args.devnet {
        let out = args.out.clone().context("--devnet needs --out DIR")?;
        return init_devnet(n, &out, args.base_port, &args.chain_id);
    }
    let home = args.home.clone().context("--home DIR is required")?;
    let home = &home;
    ensure_empty(home, "--home")?;
    let development = args.development || args.password.insecure_plaintext;
    let mode: NodeMode = args.mode.into();
    let key_rel = Path::new("keys/node.key");
    let keys = write_new_key(&home.join(key_rel), &args.password)?;
    let identity = keys.signing_key().identity();
    let genesis = Genesis {
        chain_id: args.chain_id.clone(),
        kind: mode,
        genesis_time_ms: now_ms(),
        params: if development {
            dev_params()
        } else {
            ChainParams::default()
        },
        validators: vec![GenesisValidator {
            name: args.name.clone(),
            identity,
            address: args.p2p_listen.clone(),
            encryption_key: Some(hex::encode(keys.encryption_key().public_key().to_bytes())),
        }],
        authorities: Vec::new(),
    };
    write_genesis(
        home,
        &genesis,
        "# This template lists only this node. Add one [[validators]] entry per replica\n\
         # (each made with `medchain keygen`); a private (PBFT) chain needs at least 4.\n\
         # Add an [[authorities]] entry (name, identity) for the key that registers doctors\n\
         # and patients.",
    )?;
    write_config(
        home,
        mode,
        development,
        key_rel,
        &args.p2p_listen,
        &args.api_listen,
    )?;
    out!("initialised {} node in {}", mode, home.display());
    out!("identity:  {identity}");
    out!("config:    {}", home.join(config::CONFIG_FILE).display());
    out!(
        "genesis:   {} (template listing this node only; replace it with the chain's genesis from `medchain genesis`)",
        home.join("genesis.toml").display()
    );
    out!("key:       {}", home.join(key_rel).display());
    out!(
        "key card:  {} (public: give it to whoever builds the genesis)",
        crate::client::card_path(&home.join(key_rel)).display()
    );
    Ok(())
}

fn run_node(args: RunArgs, log_format: Option<LogFormat>) -> Result<()> {
    let loaded = config::load(&args.home)?;
    crate::logging::init(
        log_format.unwrap_or(loaded.config.log.format),
        &loaded.config.log.level,
    );
    if loaded.config.mode != NodeMode::Private {
        bail!(
            "{}: consortium mode cannot run yet: the consortium node (DPoS over the network) is not built; run a private-chain node (mode = \"private\")",
            args.home.display()
        );
    }
    let key_path = loaded.key_path();
    let password = if keystore::is_plaintext(&key_path)? {
        None
    } else {
        Some(password::obtain(args.password_file.as_deref(), false)?)
    };
    let keys = keystore::read_key_file(&key_path, password.as_ref().map(|p| p.as_str()))
        .with_context(|| format!("reading the node key {}", key_path.display()))?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async move {
        let (handle, core) = crate::private::start(&loaded, keys)?;
        let api = tokio::spawn(crate::api::serve(loaded.config.api.clone(), handle));
        tokio::select! {
            r = core => match r {
                Ok(Ok(())) => Ok(()),
                Ok(Err(e)) => Err(e.context("the replica stopped")),
                Err(e) => Err(anyhow::anyhow!("the replica task failed: {e}")),
            },
            r = api => match r {
                Ok(Ok(())) => Ok(()),
                Ok(Err(e)) => Err(e),
                Err(e) => Err(anyhow::anyhow!("the API task failed: {e}")),
            },
            _ = shutdown_signal() => {
                tracing::info!("shutting down");
                Ok(())
            }
        }
    })
}

fn bench(args: BenchArgs) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let report = runtime.block_on(crate::bench::run(crate::bench::BenchConfig {
        devnet: args.home.clone(),
        clients: args.clients,
        transactions: args.transactions,
        rate: args.rate,
        timeout: std::time::Duration::from_secs(args.timeout_secs),
    }))?;
    if args.json {
        out!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        out!(
            "submitted {} from {} clients{}: accepted {}, refused {}",
            report.submitted,
            args.clients,
            if args.rate > 0.0 {
                format!(" at {} tx/s offered", args.rate)
            } else {
                String::new()
            },
            report.accepted,
            report.refused
        );
        for r in &report.refusals {
            out!("  refused: {r}");
        }
        out!(
            "committed {} in {:.2} s: {:.0} tx/s",
            report.committed,
            report.seconds,
            report.tps
        );
        out!(
            "commit latency (sent -> in a block on node 0): p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms",
            report.p50_ms, report.p99_ms, report.max_ms
        );
    }
    if report.committed < report.accepted {
        bail!(
            "{} accepted transactions were not committed within {} s",
            report.accepted - report.committed,
            args.timeout_secs
        );
    }
    Ok(())
}

async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("installing a SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

fn config_check(home: &Path) -> Result<()> {
    let loaded = config::load(home)?;
    let genesis = loaded.genesis.hash();
    out!(
        "{}: config and genesis are valid ({} node of chain {:?}, {} validators, {} authorities)",
        home.display(),
        loaded.config.mode,
        loaded.genesis.chain_id,
        loaded.genesis.validators.len(),
        loaded.genesis.authorities.len()
    );
    out!("genesis hash: {genesis} (the same on every node of the chain)");
    let data = loaded.data_path();
    if is_empty_dir(&data)? {
        out!(
            "data folder:  {} (empty: the node will fetch the chain from its peers)",
            data.display()
        );
        return Ok(());
    }
    // The same checks the node makes at start: schema version, then the genesis pin.
    match Store::open(&data) {
        Ok(store) => {
            store.check_genesis(&genesis)?;
            let height = store.tip()?.map_or(0, |t| t.height);
            out!(
                "data folder:  {} (height {height}, this genesis)",
                data.display()
            );
        }
        Err(StoreError::InUse { pid, .. }) => out!(
            "data folder:  {} (in use by the running node, process {pid}; not checked)",
            data.display()
        ),
        Err(e) => return Err(e.into()),
    }
    Ok(())
}

fn backup(home: &Path, out: &Path) -> Result<()> {
    let loaded = config::load(home)?;
    let data = loaded.data_path();
    if is_empty_dir(&data)? {
        bail!("{} holds no data yet: nothing to back up", data.display());
    }
    // Taking the store's lock is what makes the copy consistent; a running node holds it and the
    // error names its process.
    let store = Store::open(&data)?;
    store.check_genesis(&loaded.genesis.hash())?;
    let s = store.backup(out)?;
    let manifest = backup_manifest(&loaded, &s);
    let manifest_path = out.join(BACKUP_MANIFEST);
    let mut manifest = serde_json::to_vec_pretty(&manifest)?;
    manifest.push(b'\n');
    std::fs::write(&manifest_path, manifest)
        .with_context(|| format!("writing {}", manifest_path.display()))?;
    out!(
        "backed up {} to {}: height {}{}, {} record ciphertexts ({} bytes), {} sealed proxy fragments; copy checked",
        data.display(),
        out.display(),
        s.height,
        s.tip
            .map(|t| format!(" (tip {})", &t.to_hex()[..16]))
            .unwrap_or_default(),
        s.records,
        s.record_bytes,
        s.node_secrets
    );
    out!(
        "not included: the node key {} (keep it backed up separately, offline); what the backup holds is in {}",
        loaded.key_path().display(),
        manifest_path.display()
    );
    Ok(())
}

/// The file a backup describes itself in, beside the data it holds.
const BACKUP_MANIFEST: &str = "medchain-backup.json";

/// What a backup holds and what it does not, for whoever keeps it: it holds patient data (record
/// ciphertexts, deleted ones included) and is to be kept and destroyed as such.
fn backup_manifest(
    loaded: &config::LoadedConfig,
    s: &medchain_storage::BackupSummary,
) -> serde_json::Value {
    serde_json::json!({
        "chain_id": loaded.genesis.chain_id,
        "genesis_hash": loaded.genesis.hash().to_hex(),
        "height": s.height,
        "tip": s.tip.map(|t| t.to_hex()),
        "taken_at_ms": now_ms(),
        "holds": {
            "blocks_and_chain_state": "every block to the tip, the chain state and indexes, this replica's consensus state",
            "record_ciphertexts": s.records,
            "record_ciphertext_bytes": s.record_bytes,
            "record_note": "encrypted to each patient; includes records erased after the backup was taken: destroy the backup on the retention schedule",
            "sealed_proxy_fragments": s.node_secrets,
            "fragment_note": "re-encryption key fragments sealed to this node's encryption key: useless without the node key file and its password",
        },
        "not_included": [
            format!("the node key {} (back it up separately, offline)", loaded.key_path().display()),
            "the node's configuration and genesis files",
        ],
    })
}

fn restore(home: &Path, from: &Path) -> Result<()> {
    let loaded = config::load(home)?;
    let data = loaded.data_path();
    if !is_empty_dir(&data)? {
        bail!(
            "{} is not empty; stop the node and move the folder away first (restore never overwrites data)",
            data.display()
        );
    }
    if !from.is_dir() {
        bail!("{} is not a backup folder", from.display());
    }
    let backup =
        Store::open(from).with_context(|| format!("opening the backup {}", from.display()))?;
    if !backup.check_genesis(&loaded.genesis.hash())? {
        bail!(
            "{} records no genesis: it was not made by a node of this chain",
            from.display()
        );
    }
    if data.exists() {
        std::fs::remove_dir(&data)
            .with_context(|| format!("removing the empty {}", data.display()))?;
    }
    let s = backup.backup(&data)?;
    out!(
        "restored {} into {}: height {}, {} record ciphertexts; start the node and it fetches the blocks committed since",
        from.display(),
        data.display(),
        s.height,
        s.records
    );
    Ok(())
}
