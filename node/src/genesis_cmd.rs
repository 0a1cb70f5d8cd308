//! `medchain genesis`: build a chain's genesis file from the participants' key cards, so nobody
//! edits identities and keys by hand. Each change is checked before the file is rewritten
//! (atomically); `medchain config check` then checks the whole file from a node's point of view.

use std::path::Path;

use anyhow::{bail, Context, Result};
use libp2p::Multiaddr;

use crate::cli::{GenesisCommand, GenesisEntry};
use crate::client::KeyCard;
use crate::clock::now_ms;
use crate::config::{
    read_genesis, valid_chain_id, ChainParams, Genesis, GenesisAuthority, GenesisValidator,
};
use crate::home_files::{dev_params, write_genesis_file};

const NOTE: &str =
    "# Built with `medchain genesis`; copy this file unchanged to every node of the chain.";

pub fn run(cmd: GenesisCommand) -> Result<()> {
    match cmd {
        GenesisCommand::New {
            out,
            chain_id,
            kind,
            development,
            block_interval_ms,
            max_block_transactions,
        } => {
            let mut params = if development {
                dev_params()
            } else {
                ChainParams::default()
            };
            if let Some(ms) = block_interval_ms {
                params.block_interval_ms = ms;
            }
            if let Some(n) = max_block_transactions {
                params.max_block_transactions = n;
            }
            new(&out, &chain_id, kind.into(), params)
        }
        GenesisCommand::AddValidator { entry, address } => add_validator(&entry, &address),
        GenesisCommand::AddAuthority { entry } => add_authority(&entry),
    }
}

fn new(
    out: &Path,
    chain_id: &str,
    kind: crate::config::NodeMode,
    params: ChainParams,
) -> Result<()> {
    if out.exists() {
        bail!("{} already exists; choose another --out", out.display());
    }
    if !valid_chain_id(chain_id) {
        bail!("--chain-id {chain_id:?}: use letters, digits, - and _ (e.g. hospital-a)");
    }
    let genesis = Genesis {
        chain_id: chain_id.to_string(),
        kind,
        genesis_time_ms: now_ms(),
        params,
        validators: Vec::new(),
        authorities: Vec::new(),
    };
    write_genesis_file(out, &genesis, NOTE)?;
    out!(
        "wrote {} ({kind} chain {chain_id:?}); next: `medchain genesis add-validator` for each replica and `add-authority` for the registration office",
        out.display()
    );
    Ok(())
}

/// The checked card and the genesis it goes into, refusing an identity already listed.
fn load(entry: &GenesisEntry) -> Result<(Genesis, medchain_crypto::keys::KeyBinding)> {
    let (genesis, name) = (entry.genesis.as_path(), entry.name.as_str());
    let g = read_genesis(genesis)?;
    let binding = KeyCard::read(&entry.card)?.binding()?;
    if name.trim().is_empty() {
        bail!("--name must not be empty");
    }
    if g.validators.iter().any(|v| v.identity == binding.identity) {
        bail!(
            "{} is already a validator in {}",
            binding.identity,
            genesis.display()
        );
    }
    if g.authorities.iter().any(|a| a.identity == binding.identity) {
        bail!(
            "{} is already an authority in {}",
            binding.identity,
            genesis.display()
        );
    }
    if g.validators.iter().any(|v| v.name == name) || g.authorities.iter().any(|a| a.name == name) {
        bail!(
            "the name {name:?} is taken in {}; choose another --name",
            genesis.display()
        );
    }
    Ok((g, binding))
}

fn add_validator(entry: &GenesisEntry, address: &str) -> Result<()> {
    let (genesis, name) = (entry.genesis.as_path(), entry.name.as_str());
    let (mut g, binding) = load(entry)?;
    address.parse::<Multiaddr>().with_context(|| {
        format!("--address {address:?} is not a libp2p multiaddr; write it like /ip4/10.0.0.11/tcp/26656")
    })?;
    if g.validators.iter().any(|v| v.address == address) {
        bail!("another validator already has the address {address}");
    }
    g.validators.push(GenesisValidator {
        name: name.to_string(),
        identity: binding.identity,
        address: address.to_string(),
        encryption_key: Some(hex::encode(binding.encryption_key.to_bytes())),
    });
    write_genesis_file(genesis, &g, NOTE)?;
    out!(
        "added validator {name} ({}) at {address}: {} validator(s) in {}",
        binding.identity,
        g.validators.len(),
        genesis.display()
    );
    if g.kind == crate::config::NodeMode::Private && g.validators.len() < 4 {
        out!("a private chain needs at least 4 validators (PBFT tolerates one fault in four)");
    }
    Ok(())
}

fn add_authority(entry: &GenesisEntry) -> Result<()> {
    let (genesis, name) = (entry.genesis.as_path(), entry.name.as_str());
    let (mut g, binding) = load(entry)?;
    g.authorities.push(GenesisAuthority {
        name: name.to_string(),
        identity: binding.identity,
    });
    write_genesis_file(genesis, &g, NOTE)?;
    out!(
        "added authority {name} ({}): {} authority(ies) in {}",
        binding.identity,
        g.authorities.len(),
        genesis.display()
    );
    Ok(())
}
