//! The `medchain` CLI as a client of a node: it holds the user's keys, encrypts, decrypts and
//! signs on the user's side, and talks to a node's API. A node never sees a plaintext record, a
//! keyword or a user's secret key.

pub mod card;
pub mod commands;
pub mod consent;
pub mod records;

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use medchain_crypto::keys::{EncryptionPublicKey, KeyMaterial};
use medchain_crypto::keystore;
use medchain_crypto::{Hash32, Identity};
use medchain_proto::canonical::Canonical;
use medchain_proto::ledger::sign_transaction;
use medchain_proto::v1;
use serde::Deserialize;
use serde_json::Value;

use crate::http_client::HttpClient;

pub use card::{card_path, KeyCard};

pub use crate::cli::DEFAULT_NODE;

/// A validator as the chain's API describes it.
#[derive(Clone, Debug, Deserialize)]
pub struct ValidatorInfo {
    pub index: u32,
    pub name: String,
    pub identity: String,
    pub encryption_key: Option<String>,
}

/// What a client needs to know of the chain.
#[derive(Clone, Debug, Deserialize)]
pub struct ChainInfo {
    pub chain_id: String,
    pub validators: Vec<ValidatorInfo>,
}

/// A registered participant as the API describes it.
#[derive(Clone, Debug, Deserialize)]
pub struct IdentityInfo {
    pub identity: String,
    pub role: String,
    pub name: String,
    pub encryption_key: String,
    pub search_key: String,
    pub height: u64,
    pub suspended: Option<Value>,
}

impl IdentityInfo {
    pub fn encryption_key(&self) -> Result<EncryptionPublicKey> {
        Ok(EncryptionPublicKey::from_bytes(&hex::decode(
            &self.encryption_key,
        )?)?)
    }
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

/// Parses `http://host:port`, `host:port` or a bare port.
pub fn parse_node(node: &str) -> Result<SocketAddr> {
    let s = node
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .replace("localhost", "127.0.0.1");
    s.parse().map_err(|_| {
        anyhow!(
            "--node {node:?}: give the node API address as http://HOST:PORT (e.g. {DEFAULT_NODE})"
        )
    })
}

/// A connection to one node's API, with the chain it serves.
#[derive(Debug)]
pub struct Client {
    http: HttpClient,
    pub chain: ChainInfo,
}

fn api_error(status: u16, body: &[u8]) -> anyhow::Error {
    let text = String::from_utf8_lossy(body);
    let msg = serde_json::from_str::<Value>(&text)
        .ok()
        .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(str::to_string))
        .unwrap_or_else(|| text.into_owned());
    anyhow!("the node answered {status}: {msg}")
}

impl Client {
    pub async fn connect(node: &str) -> Result<Self> {
        let mut http = HttpClient::new(parse_node(node)?);
        let (status, body) = http
            .request("GET", "/v1/chain", None)
            .await
            .with_context(|| format!("is a node running at {node}?"))?;
        if status != 200 {
            return Err(api_error(status, body.as_bytes()));
        }
        let chain = serde_json::from_str(&body).context("reading the chain description")?;
        Ok(Client { http, chain })
    }

    /// GET a JSON resource; `None` on 404.
    pub async fn get(&mut self, path: &str) -> Result<Option<Value>> {
        let (status, body) = self.http.request("GET", path, None).await?;
        match status {
            200 => Ok(Some(serde_json::from_str(&body)?)),
            404 => Ok(None),
            s => Err(api_error(s, body.as_bytes())),
        }
    }

    /// GET a JSON resource whatever its status: (status, body).
    pub async fn get_with_status(&mut self, path: &str) -> Result<(u16, Value)> {
        let (status, body) = self.http.request("GET", path, None).await?;
        Ok((status, serde_json::from_str(&body).unwrap_or(Value::Null)))
    }

    /// POST protobuf bytes; the answer's bytes on success.
    pub async fn post_proto(&mut self, path: &str, body: &[u8]) -> Result<Vec<u8>> {
        let (status, bytes) = self
            .http
            .request_bytes("POST", path, "application/x-protobuf", body)
            .await?;
        if !(200..300).contains(&status) {
            return Err(api_error(status, &bytes));
        }
        Ok(bytes)
    }

    /// The registered participant `id`.
    pub async fn identity(&mut self, id: &Identity) -> Result<IdentityInfo> {
        match self.get(&format!("/v1/identities/{id}")).await? {
            Some(v) => Ok(serde_json::from_value(v)?),
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
    pub async fn submit(&mut self, tx: &v1::Transaction) -> Result<Hash32> {
        let body = serde_json::json!({ "transaction": hex::encode(tx.canonical_bytes()) });
        let (status, text) = self
            .http
            .request("POST", "/v1/transactions", Some(&body.to_string()))
            .await?;
        if status != 202 && status != 200 {
            return Err(api_error(status, text.as_bytes()));
        }
        let v: Value = serde_json::from_str(&text)?;
        let id = v["id"].as_str().ok_or_else(|| anyhow!("no id in {text}"))?;
        Ok(Hash32::from_hex(id)?)
    }

    /// Waits until `id` is in a block; fails with the contract's reason if it was refused there.
    pub async fn wait_committed(&mut self, id: &Hash32, timeout: Duration) -> Result<Value> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(v) = self.get(&format!("/v1/transactions/{id}")).await? {
                if let Some(reason) = v.get("failed").and_then(|f| f.as_str()) {
                    bail!("transaction {id} was refused by the chain: {reason}");
                }
                return Ok(v);
            }
            if tokio::time::Instant::now() >= deadline {
                bail!(
                    "transaction {id} is not committed after {} s; check the network with `medchain status`",
                    timeout.as_secs()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until this node has record `slip` (written through another node).
    pub async fn wait_for_record(&mut self, slip: &Hash32) -> Result<()> {
        for _ in 0..100 {
            if self.get(&format!("/v1/records/{slip}")).await?.is_some() {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        bail!("record {slip} did not reach this node within 10 s")
    }

    /// Waits until this node has applied block `target` with everything it triggers (its status
    /// height moves only after the block's side effects, such as a proxy keeping its fragment).
    /// Another node's status is no substitute: it can lag that node's own transaction index.
    pub async fn wait_for_height(&mut self, target: u64) -> Result<()> {
        for _ in 0..100 {
            let h = self
                .get("/v1/status")
                .await?
                .and_then(|s| s["height"].as_u64())
                .unwrap_or(0);
            if h >= target {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        bail!("this node did not reach height {target} within 10 s")
    }

    /// Submits and waits for the commit.
    pub async fn submit_and_wait(&mut self, tx: &v1::Transaction) -> Result<(Hash32, Value)> {
        let id = self.submit(tx).await?;
        let v = self.wait_committed(&id, Duration::from_secs(60)).await?;
        Ok((id, v))
    }
}
