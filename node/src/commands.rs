//! Command handlers: the binary's edge, where errors become `anyhow` reports for the operator.

use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use medchain_crypto::keys::KeyMaterial;
use medchain_crypto::keystore::{self, KdfParams, Protection};

use crate::cli::{Cli, Command, ConfigCommand, InitArgs, KeygenArgs, PasswordArgs};
use crate::config::{self, ChainParams, Genesis, GenesisValidator, NodeMode};
use crate::password;

pub fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Keygen(args) => keygen(args),
        Command::Init(args) => init(args),
        Command::Config(ConfigCommand::Check { home }) => config_check(&home),
    }
}

fn protection(args: &PasswordArgs) -> Result<Protection> {
    if args.insecure_plaintext {
        tracing::warn!(
            "writing an UNENCRYPTED key file; use it only on a local development network"
        );
        return Ok(Protection::InsecurePlaintext);
    }
    Ok(Protection::Password {
        password: password::obtain(args.password_file.as_deref(), true)?,
        params: KdfParams::default(),
    })
}

/// Writes a fresh key and prints what others need to know of it.
fn write_new_key(path: &Path, args: &PasswordArgs) -> Result<KeyMaterial> {
    let protection = protection(args)?;
    let keys = KeyMaterial::generate();
    keystore::write_key_file(path, &keys, &protection)?;
    Ok(keys)
}

fn keygen(args: KeygenArgs) -> Result<()> {
    let keys = write_new_key(&args.out, &args.password)?;
    let binding = keys.key_binding();
    println!("identity:        {}", binding.identity);
    println!(
        "encryption key:  {}",
        hex::encode(binding.encryption_key.to_bytes())
    );
    println!(
        "binding sig:     {}",
        hex::encode(binding.signature.as_bytes())
    );
    println!(
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

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn init(args: InitArgs) -> Result<()> {
    let home = &args.home;
    if home.exists()
        && std::fs::read_dir(home)
            .with_context(|| format!("reading {}", home.display()))?
            .next()
            .is_some()
    {
        bail!(
            "{} already exists and is not empty; choose another --home or move it away",
            home.display()
        );
    }
    let development = args.development || args.password.insecure_plaintext;
    let mode: NodeMode = args.mode.into();
    let key_rel = Path::new("keys/node.key");
    let keys = write_new_key(&home.join(key_rel), &args.password)?;
    let identity = keys.signing_key().identity();

    let params = if development {
        ChainParams {
            block_interval_ms: 2_000,
            checkpoint_interval: 20,
            ..ChainParams::default()
        }
    } else {
        ChainParams::default()
    };
    let genesis = Genesis {
        chain_id: args.chain_id.clone(),
        kind: mode,
        genesis_time_ms: now_ms(),
        params,
        validators: vec![GenesisValidator {
            name: args.name.clone(),
            identity,
            address: args.p2p_listen.clone(),
        }],
    };
    let genesis_text = format!(
        "# Genesis of chain {:?}: identical on every node of the chain.\n\
         # This template lists only this node. Add one [[validators]] entry per replica\n\
         # (each made with `medchain keygen`); a private (PBFT) chain needs at least 4.\n\n{}",
        args.chain_id,
        toml::to_string_pretty(&genesis).context("serialising genesis")?
    );
    std::fs::write(home.join("genesis.toml"), genesis_text)
        .with_context(|| format!("writing {}", home.join("genesis.toml").display()))?;

    let config_text = format!(
        r#"# medchain node configuration. Relative paths are relative to this folder.

# "private": a hospital private-chain replica (PBFT). "consortium": a consortium-chain node (DPoS).
mode = "{mode}"
# true only on a local development network: allows plaintext key files and an
# unauthenticated client API beyond 127.0.0.1.
development = {development}
genesis_file = "genesis.toml"
key_file = "{key}"
data_dir = "data"

[network]
# libp2p listen address.
listen = "{p2p}"
# Other nodes to dial at start-up (multiaddrs).
bootstrap = []

[api]
# Client API address. Keep it on loopback unless an authenticating proxy fronts it.
listen = "{api}"

[log]
# "human" or "json".
format = "human"
# error | warn | info | debug | trace, or a filter such as "medchain_node=debug".
level = "info"
"#,
        key = key_rel.display(),
        p2p = args.p2p_listen,
        api = args.api_listen,
    );
    std::fs::write(home.join(config::CONFIG_FILE), config_text)
        .with_context(|| format!("writing {}", home.join(config::CONFIG_FILE).display()))?;

    println!("initialised {} node in {}", mode, home.display());
    println!("identity:  {identity}");
    println!("config:    {}", home.join(config::CONFIG_FILE).display());
    println!(
        "genesis:   {} (template: add the other validators)",
        home.join("genesis.toml").display()
    );
    println!("key:       {}", home.join(key_rel).display());
    Ok(())
}

fn config_check(home: &Path) -> Result<()> {
    let loaded = config::load(home)?;
    println!(
        "{}: config and genesis are valid ({} node of chain {:?}, {} validators)",
        home.display(),
        loaded.config.mode,
        loaded.genesis.chain_id,
        loaded.genesis.validators.len()
    );
    Ok(())
}
