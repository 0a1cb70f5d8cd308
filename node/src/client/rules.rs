//! `medchain rules`: which contract rules a chain runs, and an authority's upgrade of them at a
//! height agreed on chain (DESIGN §4.1a).

use anyhow::{bail, Context, Result};
use medchain_ledger::contracts::rules::{LATEST, UPGRADE_NOTICE_BLOCKS};
use medchain_proto::v1::{self, transaction_body::Payload};

use super::{load_key, Client};
use crate::cli::{ClientArgs, RulesCommand};

pub fn run(cmd: RulesCommand) -> Result<()> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?
        .block_on(async move {
            match cmd {
                RulesCommand::Show { node } => show(&node).await,
                RulesCommand::Upgrade {
                    to,
                    at_height,
                    client,
                } => upgrade(to, at_height, &client).await,
            }
        })
}

async fn show(node: &str) -> Result<()> {
    let c = Client::connect(node).await?;
    out!(
        "chain {:?} runs rules {} (this binary knows 1 to {LATEST})",
        c.chain.chain_id,
        c.chain.rules
    );
    if let Some(u) = &c.chain.rules_upgrade {
        let status = if c.chain.rules >= u.version {
            "in effect"
        } else {
            "scheduled"
        };
        out!(
            "upgrade to rules {} from height {} ({status}; scheduled at height {})",
            u.version,
            u.activation_height,
            u.scheduled_at
        );
    }
    Ok(())
}

/// Signs and submits the upgrade, after the checks a binary can make for its operator: a
/// version it knows (a node that does not know the version stops at the activation height), a
/// later one than the chain runs, and enough notice. The chain checks notice and order again.
async fn upgrade(to: u32, at_height: Option<u64>, args: &ClientArgs) -> Result<()> {
    if to > LATEST {
        bail!(
            "this binary knows rules up to {LATEST}; every node stops at the activation height of an upgrade to rules {to} until it runs a release that knows them: install one here first"
        );
    }
    let Some(path) = &args.key else {
        bail!("an upgrade is signed by a genesis authority: give --key FILE (its key)");
    };
    let authority = load_key(path, args.password_file.as_deref())?;
    let c = Client::connect_as(&args.node, &authority)
        .await?
        .anchored(&args.trust())
        .await?;
    if to <= c.chain.rules {
        bail!(
            "chain {:?} already runs rules {}: an upgrade names a later version",
            c.chain.chain_id,
            c.chain.rules
        );
    }
    let height = c.api.status().await?.height;
    let earliest = height + 1 + UPGRADE_NOTICE_BLOCKS;
    let at = at_height.unwrap_or(earliest + UPGRADE_NOTICE_BLOCKS);
    if at < earliest {
        bail!(
            "--at-height {at} is too soon: the chain is at height {height} and an upgrade gives at least {UPGRADE_NOTICE_BLOCKS} blocks of notice (height {earliest} or later)"
        );
    }
    let tx = c.sign(
        &authority,
        Payload::RulesUpgrade(v1::RulesUpgrade {
            version: to,
            activation_height: at,
        }),
    );
    let (_, info) = c.submit_and_wait(&tx).await?;
    out!(
        "scheduled at height {}: chain {:?} runs rules {to} from height {at}; every node must run a release that knows rules {to} by then",
        info.height,
        c.chain.chain_id
    );
    Ok(())
}
