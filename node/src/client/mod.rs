//! The `medchain` CLI as a client of a node: it holds the user's keys, encrypts, decrypts and
//! signs on the user's side, and talks to a node's API. A node never sees a plaintext record, a
//! keyword or a user's secret key.

pub mod card;
pub mod commands;
pub mod consent;
pub mod records;

use std::path::Path;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use medchain_api::{ApiClient, IdentityInfo, StreamEvent, TransactionInfo};
use medchain_crypto::keys::{EncryptionPublicKey, KeyMaterial};
use medchain_crypto::keystore;
use medchain_crypto::{Hash32, Identity};
use medchain_proto::canonical::Canonical;
use medchain_proto::ledger::sign_transaction;
use medchain_proto::v1;

pub use card::{card_path, KeyCard};
pub use medchain_api::{ChainInfo, ValidatorInfo};

pub use crate::cli::DEFAULT_NODE;

/// The record-encryption key of a registered participant.
pub fn encryption_key(info: &IdentityInfo) -> Result<EncryptionPublicKey> {
    let bytes = hex::decode(&info.encryption_key)
        .with_context(|| format!("the encryption key of {} is not hex", info.identity))?;
    Ok(EncryptionPublicKey::from_bytes(&bytes)?)
}

/// Reads a user's key file (asking for its password unless it is a plaintext development key).
pub fn load_key(path: &Path, password_file: Option<&Path>) -> Result<KeyMaterial> {
    let password = if keystore::is_plaintext(path)
        .with_context(|| format!("reading key file {}", path.display()))?
    {
        None
    } else {
        Some(crate::password::obtain(password_file, false)?)
    };
    keystore::read_key_file(path, password.as_ref().map(|p| p.as_str()))
        .with_context(|| format!("reading key file {}", path.display()))
}

/// A fresh nonce: microseconds since the Unix epoch. A user's commands run one at a time, so
/// these never repeat for one signer; the chain refuses a reused nonce anyway.
pub fn fresh_nonce() -> u64 {
    crate::clock::now_us()
}

pub use crate::clock::now_ms;

/// A connection to one node's API, with the chain it serves.
#[derive(Debug)]
pub struct Client {
    pub api: ApiClient,
    pub chain: ChainInfo,
}

impl Client {
    pub async fn connect(node: &str) -> Result<Self> {
        let api = ApiClient::new(node)?;
        let chain = api.chain().await?;
        Ok(Client { api, chain })
    }

    /// The registered participant `id`.
    pub async fn identity(&self, id: &Identity) -> Result<IdentityInfo> {
        match self.api.identity(&id.to_string()).await? {
            Some(info) => Ok(info),
            None => bail!(
                "{id} is not registered on chain {}; an authority registers it with `medchain identity register`",
                self.chain.chain_id
            ),
        }
    }

    /// Signs `payload` as `key` for this chain with a fresh nonce.
    pub fn sign(
        &self,
        key: &KeyMaterial,
        payload: v1::transaction_body::Payload,
    ) -> v1::Transaction {
        sign_transaction(
            &key.signing_key(),
            v1::TransactionBody {
                chain_id: self.chain.chain_id.clone(),
                signer: vec![],
                nonce: fresh_nonce(),
                timestamp_ms: now_ms(),
                payload: Some(payload),
            },
        )
    }

    /// Submits a transaction and returns its ID once the node accepted it.
    pub async fn submit(&self, tx: &v1::Transaction) -> Result<Hash32> {
        let accepted = self.api.submit(hex::encode(tx.canonical_bytes())).await?;
        Hash32::from_hex(&accepted.id).map_err(|_| {
            anyhow!(
                "the node accepted the transaction under a malformed id {:?}",
                accepted.id
            )
        })
    }

    /// Waits until `id` is in a block, told by the node's event stream (no polling); fails with
    /// the contract's reason if it was refused there.
    pub async fn wait_committed(&self, id: &Hash32, timeout: Duration) -> Result<TransactionInfo> {
        let found = tokio::time::timeout(timeout, self.settled(id)).await.map_err(|_| {
            anyhow!(
                "transaction {id} is not committed after {} s; check the network with `medchain status`",
                timeout.as_secs()
            )
        })??;
        if let Some(reason) = &found.failed {
            bail!("transaction {id} was refused by the chain: {reason}");
        }
        Ok(found)
    }

    /// The transaction once a block settled it. Subscribes before it looks, so a block
    /// committed in between is in the stream; looks again whenever the stream cannot say (it
    /// lagged, or ended and was reopened).
    async fn settled(&self, id: &Hash32) -> Result<TransactionInfo> {
        let hex = id.to_hex();
        loop {
            let mut events = self.api.events().await?;
            if let Some(t) = self.api.transaction(&hex).await? {
                return Ok(t);
            }
            loop {
                match events.next().await {
                    Some(Ok(StreamEvent::Block(b))) if b.settles(&hex) => {
                        return self.api.transaction(&hex).await?.ok_or_else(|| {
                            anyhow!(
                                "block {} settled transaction {id}, but the node does not find it",
                                b.height
                            )
                        });
                    }
                    Some(Ok(StreamEvent::Block(_))) => {}
                    Some(Ok(StreamEvent::Lagged(_))) | None => break,
                    Some(Err(e)) => return Err(e.into()),
                }
            }
        }
    }

    /// Waits until this node has record `slip` (written through another node): a record is
    /// there once the node executed the block that holds its slip.
    pub async fn wait_for_record(&self, slip: &Hash32) -> Result<()> {
        let wait = async {
            let mut events = self.api.events().await?;
            loop {
                if self.api.record(&slip.to_hex()).await?.is_some() {
                    return Ok::<(), anyhow::Error>(());
                }
                match events.next().await {
                    Some(Ok(_)) => {}
                    Some(Err(e)) => return Err(e.into()),
                    None => events = self.api.events().await?,
                }
            }
        };
        tokio::time::timeout(Duration::from_secs(10), wait)
            .await
            .map_err(|_| anyhow!("record {slip} did not reach this node within 10 s"))?
    }

    /// Waits until this node has applied block `target` with everything it triggers (its status
    /// height moves only after the block's side effects, such as a proxy keeping its fragment).
    /// Another node's status is no substitute: it can lag that node's own transaction index.
    pub async fn wait_for_height(&self, target: u64) -> Result<()> {
        let wait = async {
            let mut events = self.api.events().await?;
            loop {
                if self.api.status().await?.height >= target {
                    return Ok::<(), anyhow::Error>(());
                }
                match events.next().await {
                    Some(Ok(_)) => {}
                    Some(Err(e)) => return Err(e.into()),
                    None => events = self.api.events().await?,
                }
            }
        };
        tokio::time::timeout(Duration::from_secs(10), wait)
            .await
            .map_err(|_| anyhow!("this node did not reach height {target} within 10 s"))?
    }

    /// Submits and waits for the commit.
    pub async fn submit_and_wait(&self, tx: &v1::Transaction) -> Result<(Hash32, TransactionInfo)> {
        let id = self.submit(tx).await?;
        let info = self.wait_committed(&id, Duration::from_secs(60)).await?;
        Ok((id, info))
    }
}
