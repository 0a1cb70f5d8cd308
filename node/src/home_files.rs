//! Node home folders as files: fresh keys with their cards, `config.toml`, genesis files (written
//! atomically) and the folders of a local development network. Used by `init`, `genesis`,
//! `devnet` and `bench`; a leaf below the command handlers.

use std::path::Path;

use anyhow::{bail, Context, Result};
use medchain_crypto::keys::KeyMaterial;
use medchain_crypto::keystore::{self, KdfParams, Protection};

use crate::cli::PasswordArgs;
use crate::clock::now_ms;
use crate::config::{self, ChainParams, Genesis, GenesisAuthority, GenesisValidator, NodeMode};
use crate::password;

pub(crate) fn protection(args: &PasswordArgs) -> Result<Protection> {
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

/// Writes a fresh key and its public key card beside it (`x.key` -> `x.card.json`).
pub(crate) fn write_new_key(path: &Path, args: &PasswordArgs) -> Result<KeyMaterial> {
    let protection = protection(args)?;
    let keys = KeyMaterial::generate();
    keystore::write_key_file(path, &keys, &protection)?;
    crate::client::KeyCard::from_binding(&keys.key_binding())
        .write(&crate::client::card_path(path))?;
    Ok(keys)
}

/// Where `init --devnet` puts the registration authority's key.
pub const DEVNET_AUTHORITY_KEY: &str = "authority.key";

pub(crate) fn ensure_empty(dir: &Path, flag: &str) -> Result<()> {
    if !is_empty_dir(dir)? {
        bail!(
            "{} already exists and is not empty; choose another {flag} or move it away",
            dir.display()
        );
    }
    Ok(())
}

pub(crate) fn write_genesis(home: &Path, genesis: &Genesis, note: &str) -> Result<()> {
    write_genesis_file(&home.join("genesis.toml"), genesis, note)
}

/// Writes a genesis file with a header comment, atomically (a crash leaves the old file or the
/// new one, never half of one).
pub(crate) fn write_genesis_file(path: &Path, genesis: &Genesis, note: &str) -> Result<()> {
    let text = format!(
        "# Genesis of chain {:?}: identical on every node of the chain.\n{note}\n\n{}",
        genesis.chain_id,
        toml::to_string_pretty(genesis).context("serialising genesis")?
    );
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let tmp = dir.join(format!(
        ".{}.tmp",
        path.file_name()
            .map(|n| n.to_string_lossy())
            .unwrap_or_default()
    ));
    let write = || -> std::io::Result<()> {
        let mut f = std::fs::File::create(&tmp)?;
        std::io::Write::write_all(&mut f, text.as_bytes())?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        std::fs::File::open(dir)?.sync_all()
    };
    write().with_context(|| format!("writing {}", path.display()))
}

pub(crate) fn write_config(
    home: &Path,
    mode: NodeMode,
    development: bool,
    key_rel: &Path,
    p2p: &str,
    api: &str,
) -> Result<()> {
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
# libp2p listen address. Peers are dialed at the addresses listed in genesis.
listen = "{p2p}"
# Other nodes to dial at start-up (multiaddrs), besides the validators in genesis.
bootstrap = []

[api]
# Client API address. Keep it on loopback unless an authenticating proxy fronts it.
listen = "{api}"
# Abuse limits (the defaults shown). A client must send its headers within this many ms:
header_read_timeout_ms = 10000
# A request, body included, is answered 408 after this many ms (a 16 MiB upload at 0.5 MiB/s):
request_timeout_ms = 300000
# Open connections at most; more are closed on arrival (file descriptors are the store's too):
max_connections = 1024
# Requests in progress at most; more wait:
max_concurrent_requests = 256

[log]
# "human" or "json".
format = "human"
# error | warn | info | debug | trace, or a filter such as "medchain_node=debug".
level = "info"

[access]
# Abnormal-access detection: reads per identity and per source address in a sliding window.
# An identity past its limit is suspended on chain until an authority lifts the suspension.
window_secs = 60
max_reads_per_identity = 120
max_reads_per_source = 600

[storage]
# Record files no pending or committed slip names are removed once this many hours old.
orphan_grace_hours = 24
"#,
        key = key_rel.display(),
    );
    let path = home.join(config::CONFIG_FILE);
    std::fs::write(&path, config_text).with_context(|| format!("writing {}", path.display()))
}

/// A local network cuts blocks within 200 ms (not the 10 minutes of a production chain) so a
/// transaction commits well inside a second at moderate load.
pub(crate) fn dev_params() -> ChainParams {
    ChainParams {
        block_interval_ms: 200,
        checkpoint_interval: 20,
        ..ChainParams::default()
    }
}

/// N home folders of a local private network on 127.0.0.1 with one shared genesis.
pub(crate) fn init_devnet(n: usize, out: &Path, base_port: u16, chain_id: &str) -> Result<()> {
    if n < 4 {
        bail!("--devnet {n}: a PBFT network needs at least 4 nodes to tolerate one fault");
    }
    if n > 64 {
        bail!("--devnet {n}: at most 64 nodes on one machine");
    }
    let last = base_port as usize + 100 + n;
    if last > u16::MAX as usize {
        bail!("--base-port {} leaves no room for {n} nodes", base_port);
    }
    ensure_empty(out, "--out")?;
    let key_rel = Path::new("keys/node.key");
    let plaintext = PasswordArgs {
        password_file: None,
        insecure_plaintext: true,
    };
    let mut validators = Vec::new();
    let mut apis = Vec::new();
    for i in 0..n {
        let home = out.join(format!("node{i}"));
        let keys = write_new_key(&home.join(key_rel), &plaintext)?;
        let p2p = format!("/ip4/127.0.0.1/tcp/{}", base_port as usize + i);
        let api = format!("127.0.0.1:{}", base_port as usize + 100 + i);
        write_config(&home, NodeMode::Private, true, key_rel, &p2p, &api)?;
        validators.push(GenesisValidator {
            name: format!("node{i}"),
            identity: keys.signing_key().identity(),
            address: p2p,
            encryption_key: Some(hex::encode(keys.encryption_key().public_key().to_bytes())),
        });
        apis.push(api);
    }
    // The devnet's registration authority: a key kept beside the nodes, not on them.
    let authority = write_new_key(&out.join(DEVNET_AUTHORITY_KEY), &plaintext)?;
    let genesis = Genesis {
        chain_id: chain_id.to_string(),
        kind: NodeMode::Private,
        genesis_time_ms: now_ms(),
        params: dev_params(),
        validators,
        authorities: vec![GenesisAuthority {
            name: "devnet registration office".into(),
            identity: authority.signing_key().identity(),
        }],
    };
    for i in 0..n {
        write_genesis(
            &out.join(format!("node{i}")),
            &genesis,
            "# Local development network made by `medchain init --devnet`.",
        )?;
    }
    for i in 0..n {
        config::load(&out.join(format!("node{i}")))
            .with_context(|| format!("checking the generated node{i}"))?;
    }
    out!(
        "devnet of {n} private-chain nodes (chain {:?}) in {}",
        chain_id,
        out.display()
    );
    for (i, api) in apis.iter().enumerate() {
        out!(
            "  node{i}: medchain run --home {}   (API http://{api})",
            out.join(format!("node{i}")).display()
        );
    }
    out!(
        "  authority key (registers doctors and patients): {}",
        out.join(DEVNET_AUTHORITY_KEY).display()
    );
    out!("keys are UNENCRYPTED (development only)");
    Ok(())
}

pub(crate) fn is_empty_dir(dir: &Path) -> Result<bool> {
    match std::fs::read_dir(dir) {
        Ok(mut entries) => Ok(entries.next().is_none()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(true),
        Err(e) => Err(e).with_context(|| format!("reading {}", dir.display())),
    }
}
