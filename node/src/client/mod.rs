//! The `medchain` CLI as a client of a node: it holds the user's keys, encrypts, decrypts and
//! signs on the user's side, and talks to a node's API. A node never sees a plaintext record, a
//! keyword or a user's secret key.

pub mod card;
pub mod commands;
pub mod consent;
pub mod records;
pub mod rules;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use medchain_api::{ApiClient, Authenticator, Challenge, IdentityInfo, TransactionInfo};
use medchain_crypto::keys::{EncryptionPublicKey, KeyMaterial};
use medchain_crypto::keystore;
use medchain_crypto::{Hash32, Identity, SigningKey};
use medchain_proto::canonical::Canonical;
use medchain_proto::ledger::sign_transaction;
use medchain_proto::v1;

pub use card::{card_path, KeyCard};
pub use medchain_api::{ChainInfo, ValidatorInfo};

pub use crate::cli::DEFAULT_NODE;

/// A waiting client looks again this often even when the event stream says nothing.
const RECHECK: Duration = Duration::from_secs(2);

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

/// Answers a node's authentication challenges with a user's key: only for the chain this client
/// connected to, and only for a node that is one of its validators (a challenge relayed from
/// somewhere else gets no signature).
struct KeyAuth {
    key: SigningKey,
    chain: ChainInfo,
}

impl std::fmt::Debug for KeyAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "KeyAuth({})", self.key.identity())
    }
}

impl Authenticator for KeyAuth {
    fn identity(&self) -> String {
        self.key.identity().to_string()
    }

    fn respond(&self, challenge: &Challenge) -> std::result::Result<String, String> {
        if challenge.chain_id != self.chain.chain_id {
            return Err(format!(
                "the node's challenge is for chain {:?}; this client works on chain {:?}",
                challenge.chain_id, self.chain.chain_id
            ));
        }
        if !self
            .chain
            .validators
            .iter()
            .any(|v| v.identity == challenge.node)
        {
            return Err(format!(
                "the node names itself {}, which is no validator of chain {}",
                challenge.node, self.chain.chain_id
            ));
        }
        let node: Identity = challenge
            .node
            .parse()
            .map_err(|e| format!("the node names itself {:?}: {e}", challenge.node))?;
        let bytes = hex::decode(&challenge.challenge)
            .map_err(|_| "the node's challenge is not hex".to_string())?;
        let signature =
            medchain_proto::auth::sign_response(&self.key, &self.chain.chain_id, &node, &bytes);
        Ok(hex::encode(signature.as_bytes()))
    }
}

/// A connection to one node's API, with the chain it serves.
#[derive(Debug)]
pub struct Client {
    pub api: ApiClient,
    pub chain: ChainInfo,
}

impl Client {
    pub async fn connect(node: &str) -> Result<Self> {
        let api = ApiClient::new(node).with_context(|| format!("--node {node:?}"))?;
        let chain = api.chain().await?;
        Ok(Client { api, chain })
    }

    /// A connection that authenticates as `key` (the endpoints that show patient data answer
    /// only an authenticated caller, and only what that caller may see).
    pub async fn connect_as(node: &str, key: &KeyMaterial) -> Result<Self> {
        let c = Self::connect(node).await?;
        let auth = Arc::new(KeyAuth {
            key: key.signing_key(),
            chain: c.chain.clone(),
        });
        Ok(Client {
            api: c.api.with_authenticator(auth),
            chain: c.chain,
        })
    }

    /// The registered participant `id`.
    pub async fn identity(&self, id: &Identity) -> Result<IdentityInfo> {
        match self.api.identity(&id.to_string()).await? {
            Some(info) => Ok(info),
            None => bail!(
                "{id} is not registered on chain {} (or not visible to you); an authority registers it with `medchain identity register`",
                self.chain.chain_id
            ),
        }
    }

    /// The identity of the validator this client talks to, as its status names it, checked
    /// against the chain's validator set (a read request is signed for that one validator).
    pub async fn validator_identity(&self) -> Result<Identity> {
        let named = self.api.status().await?.identity;
        if !self.chain.validators.iter().any(|v| v.identity == named) {
            bail!(
                "the node names itself {named}, which is no validator of chain {}",
                self.chain.chain_id
            );
        }
        named
            .parse()
            .map_err(|e| anyhow!("the node names itself {named:?}, which is no identity: {e}"))
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

    /// Waits until `id` is in a block, told by the node's event stream; fails with the
    /// contract's reason if it was refused there.
    pub async fn wait_committed(&self, id: &Hash32, timeout: Duration) -> Result<TransactionInfo> {
        let hex = id.to_hex();
        let found = self
            .until(timeout, || async {
                Ok(self.api.transaction(&hex).await?)
            })
            .await?
            .ok_or_else(|| {
                anyhow!(
                    "transaction {id} is not committed after {} s; check the network with `medchain status`",
                    timeout.as_secs()
                )
            })?;
        if let Some(reason) = &found.failed {
            bail!("transaction {id} was refused by the chain: {reason}");
        }
        Ok(found)
    }

    /// Waits until this node has record `slip` (written through another node): a record is
    /// there once the node executed the block that holds its slip.
    pub async fn wait_for_record(&self, slip: &Hash32) -> Result<()> {
        let hex = slip.to_hex();
        self.until(Duration::from_secs(10), || async {
            Ok(self.api.record(&hex).await?.map(|_| ()))
        })
        .await?
        .ok_or_else(|| anyhow!("record {slip} did not reach this node within 10 s"))
    }

    /// Waits until this node has applied block `target` with everything it triggers (its status
    /// height moves only after the block's side effects, such as a proxy keeping its fragment).
    /// Another node's status is no substitute: it can lag that node's own transaction index.
    pub async fn wait_for_height(&self, target: u64) -> Result<()> {
        self.until(Duration::from_secs(10), || async {
            Ok((self.api.status().await?.height >= target).then_some(()))
        })
        .await?
        .ok_or_else(|| anyhow!("this node did not reach height {target} within 10 s"))
    }

    /// Asks `check` until it answers, within `timeout`: again after every block the node's
    /// event stream pushes, and every [`RECHECK`] whatever the stream does, so a proxy that
    /// buffers the stream, a lagging or broken stream, or a node that names no refused
    /// transactions in its events (before they were added) only slows the wait, never fails
    /// it. Subscribes before the first look, so a block committed in between is not missed.
    /// `None` when `timeout` passed first.
    async fn until<T, F, Fut>(&self, timeout: Duration, mut check: F) -> Result<Option<T>>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<Option<T>>>,
    {
        let wait = async {
            let mut events = self.api.events().await.ok();
            let mut backoff = Duration::from_millis(100);
            loop {
                if let Some(found) = check().await? {
                    return Ok(found);
                }
                match events.as_mut() {
                    Some(stream) => {
                        tokio::select! {
                            event = stream.next() => match event {
                                Some(Ok(_)) => backoff = Duration::from_millis(100),
                                // Ended or broken: look now, reopen after a pause.
                                Some(Err(_)) | None => events = None,
                            },
                            _ = tokio::time::sleep(RECHECK) => {}
                        }
                    }
                    None => {
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(RECHECK);
                        events = self.api.events().await.ok();
                    }
                }
            }
        };
        match tokio::time::timeout(timeout, wait).await {
            Ok(found) => found.map(Some),
            Err(_) => Ok(None),
        }
    }

    /// Submits and waits for the commit.
    pub async fn submit_and_wait(&self, tx: &v1::Transaction) -> Result<(Hash32, TransactionInfo)> {
        let id = self.submit(tx).await?;
        let info = self.wait_committed(&id, Duration::from_secs(60)).await?;
        Ok((id, info))
    }
}
