//! `medchain light`: header-only sync of a light client's folder, and what it holds.

use anyhow::{anyhow, bail, Context, Result};
use medchain_api::ApiClient;
use std::path::{Path, PathBuf};

use super::light::{folders, LightStore};
use crate::cli::LightCommand;

pub fn run(cmd: LightCommand) -> Result<()> {
    match cmd {
        LightCommand::Sync {
            node,
            genesis,
            light,
        } => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("starting the async runtime")?
            .block_on(sync(&node, genesis.as_deref(), light)),
        LightCommand::Status { light: Some(dir) } => status(&dir),
        LightCommand::Status { light: None } => {
            let root = default_root()?;
            let kept = folders::kept(&root);
            if kept.is_empty() {
                bail!(
                    "no light folder in {}: `medchain light sync --genesis FILE` makes one",
                    root.display()
                );
            }
            for chain in kept {
                status(&root.join(chain))?;
            }
            Ok(())
        }
    }
}

fn default_root() -> Result<PathBuf> {
    folders::root().ok_or_else(|| {
        anyhow!(
            "no home folder to keep light folders in: give --light DIR or set MEDCHAIN_LIGHT_ROOT"
        )
    })
}

async fn sync(node: &str, genesis: Option<&Path>, dir: Option<PathBuf>) -> Result<()> {
    let api = ApiClient::new(node).with_context(|| format!("--node {node:?}"))?;
    let dir = match dir {
        Some(dir) => dir,
        None => {
            // The chain's default folder: named by the genesis file's chain id, or (for a folder
            // made before) by the node's; the folder's own genesis is what is trusted.
            let chain = match genesis {
                Some(path) => crate::config::read_genesis(path)?.chain_id,
                None => api.chain().await?.chain_id,
            };
            let root = default_root()?;
            folders::folder(&root, &chain).ok_or_else(|| {
                anyhow!("chain id {chain:?} is not a plain folder name: give --light DIR")
            })?
        }
    };
    let dir = dir.as_path();
    let mut store =
        LightStore::open(dir, genesis).with_context(|| format!("--light {}", dir.display()))?;
    let before = store.tip().map_or(0, |(h, _)| h);
    let started = crate::clock::now_us();
    let tip = store
        .sync(&api, None)
        .await
        .with_context(|| format!("header-only sync from {node}"))?;
    let took = crate::clock::now_us().saturating_sub(started) as f64 / 1e6;
    out!(
        "light client of chain {:?}: verified headers 1..{tip} ({} new from {node} in {:.2} s)",
        store.anchor.chain_id,
        tip - before,
        took
    );
    describe_tip(&store);
    Ok(())
}

fn status(dir: &Path) -> Result<()> {
    let store =
        LightStore::open(dir, None).with_context(|| format!("--light {}", dir.display()))?;
    out!(
        "light client of chain {:?} (genesis hash {}, {} validators)",
        store.anchor.chain_id,
        store.genesis_hash.to_hex(),
        store.anchor.validators.len()
    );
    describe_tip(&store);
    Ok(())
}

fn describe_tip(store: &LightStore) {
    match store
        .tip()
        .and_then(|(h, hash)| Some((store.header(h)?, hash)))
    {
        Some((header, hash)) => out!(
            "newest verified header: block {} {} (state root {})",
            header.height,
            hash.to_hex(),
            if header.state_root.is_empty() {
                "none: before rules 5".to_string()
            } else {
                hex::encode(&header.state_root)
            }
        ),
        None => out!("no verified header yet: run `medchain light sync`"),
    }
}
