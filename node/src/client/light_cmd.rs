//! `medchain light`: header-only sync of a light client's folder, and what it holds.

use anyhow::{Context, Result};
use medchain_api::ApiClient;
use std::path::Path;

use super::light::LightStore;
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
            .block_on(sync(&node, genesis.as_deref(), &light)),
        LightCommand::Status { light } => status(&light),
    }
}

async fn sync(node: &str, genesis: Option<&Path>, dir: &Path) -> Result<()> {
    let mut store =
        LightStore::open(dir, genesis).with_context(|| format!("--light {}", dir.display()))?;
    let api = ApiClient::new(node).with_context(|| format!("--node {node:?}"))?;
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
