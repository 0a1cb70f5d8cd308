//! The `medchain` CLI as a client of a node: it holds the user's keys, encrypts, decrypts and
//! signs on the user's side, and talks to a node's API. A node never sees a plaintext record, a
//! keyword or a user's secret key.

pub mod card;
pub mod commands;
pub mod consent;
pub mod light;
pub mod light_cmd;
pub mod records;
pub mod rules;
pub mod verified_lists;
pub mod verified_record;
pub mod verify;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use medchain_api::{ApiClient, Authenticator, Challenge, IdentityInfo, Role, TransactionInfo};
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

/// The API's name of a role kept on chain as its `v1::Role` number.
pub fn role_of(role: i32) -> Role {
    match v1::Role::try_from(role) {
        Ok(v1::Role::Patient) => Role::Patient,
        Ok(v1::Role::Doctor) => Role::Doctor,
        Ok(v1::Role::Insurer) => Role::Insurer,
        Ok(v1::Role::Researcher) => Role::Researcher,
        _ => Role::Unspecified,
    }
}

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
    /// The chain this client trusts, from its genesis file: with it, the validators (and their
    /// proxy keys) come from the genesis file and every identity's keys are checked against a
    /// certified state root. Without it the client has only the node's word.
    pub anchor: Option<verify::Anchor>,
    /// The newest block this client has verified an answer against: an older one is stale.
    verified: std::sync::atomic::AtomicU64,
    /// The light client's folder, if given: its verified headers.
    pub light: Option<tokio::sync::Mutex<light::LightStore>>,
}

/// What a client trusts instead of its node: `--genesis`, `--light`, or both.
#[derive(Clone, Debug, Default)]
pub struct Trust {
    pub genesis: Option<PathBuf>,
    pub light: Option<PathBuf>,
    /// `--trust-node`: no default light folder either.
    pub trust_node: bool,
}

impl crate::cli::ClientArgs {
    /// What the client trusts instead of the node.
    pub fn trust(&self) -> Trust {
        Trust {
            genesis: self.genesis.clone(),
            light: self.light.clone(),
            trust_node: self.trust_node,
        }
    }
}

impl Client {
    pub async fn connect(node: &str) -> Result<Self> {
        let api = ApiClient::new(node).with_context(|| format!("--node {node:?}"))?;
        let chain = api.chain().await?;
        Ok(Client {
            api,
            chain,
            anchor: None,
            verified: Default::default(),
            light: None,
        })
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
            anchor: None,
            verified: Default::default(),
            light: None,
        })
    }

    /// Trusts the chain of `trust` (a genesis file, or a light client's folder) instead of the
    /// node's word: the node must serve that chain, the validators and their proxy keys are the
    /// genesis file's, and every identity is verified against a certified header. With a light
    /// client's folder, a proof against an older header than the folder's newest is refused as
    /// stale, and the folder's headers are synced up to each header verified. Given neither,
    /// the default light folder of the node's chain is used if there is one
    /// ([`light::folders`]); with folders for other chains only, the client refuses (a node
    /// could otherwise escape verification by naming another chain); with none, or with
    /// `--trust-node`, it believes the node.
    pub async fn anchored(self, trust: &Trust) -> Result<Self> {
        if trust.light.is_some() || trust.genesis.is_some() || trust.trust_node {
            return self.anchored_to(trust);
        }
        let Some(root) = light::folders::root() else {
            return Ok(self);
        };
        let chain = self.chain.chain_id.clone();
        match light::folders::folder(&root, &chain) {
            Some(dir) if dir.join(light::GENESIS_FILE).is_file() => {
                let kept = light::LightStore::open(&dir, None)
                    .with_context(|| format!("the light folder {}", dir.display()))?
                    .genesis_hash;
                let served = self.api.status().await?.genesis_hash;
                if served != kept.to_hex() {
                    bail!(
                        "the light folder {} keeps chain {chain:?} of genesis {}, but the node serves genesis {served}: a chain started again under the same id, or the wrong node; remove the folder and run `medchain light sync --genesis FILE`, or give --genesis",
                        dir.display(),
                        kept.to_hex()
                    );
                }
                self.anchored_to(&Trust {
                    light: Some(dir),
                    ..Trust::default()
                })
            }
            _ => {
                let kept = light::folders::kept(&root);
                if !kept.is_empty() {
                    bail!(
                        "the node says it serves chain {chain:?}, and this client verifies chains {} only ({}): give that chain's --genesis FILE (or run `medchain light sync --genesis FILE` once), or --trust-node to believe this node",
                        kept.join(", "),
                        root.display()
                    );
                }
                use std::io::IsTerminal;
                if std::io::stderr().is_terminal() {
                    eprintln!(
                        "note: answers of {} are not verified (no genesis file or light folder for chain {chain:?}); `medchain light sync --genesis FILE` once makes every command verify them",
                        self.api.base()
                    );
                }
                Ok(self)
            }
        }
    }

    /// [`Client::anchored`] with the trust given.
    fn anchored_to(mut self, trust: &Trust) -> Result<Self> {
        let (anchor, genesis_path) = match (&trust.light, &trust.genesis) {
            (Some(dir), genesis) => {
                let store = light::LightStore::open(dir, genesis.as_deref())
                    .with_context(|| format!("--light {}", dir.display()))?;
                let anchor = store.anchor.clone();
                self.light = Some(tokio::sync::Mutex::new(store));
                (anchor, dir.join(light::GENESIS_FILE))
            }
            (None, Some(path)) => (
                verify::Anchor::from_genesis_file(path)
                    .with_context(|| format!("--genesis {}", path.display()))?
                    .0,
                path.clone(),
            ),
            (None, None) => return Ok(self),
        };
        let g = crate::config::read_genesis(&genesis_path)?;
        // Rules only move up: a node that claims older rules than the genesis file's would have
        // the client skip proofs those rules give (the lists of rules 6).
        if self.chain.rules < g.params.rules {
            bail!(
                "the node says chain {:?} runs contract rules {}, but its genesis file {} starts at rules {}: refused",
                self.chain.chain_id,
                self.chain.rules,
                genesis_path.display(),
                g.params.rules
            );
        }
        if self.chain.chain_id != anchor.chain_id {
            bail!(
                "the node serves chain {:?}, but the genesis file {} is of chain {:?}: wrong node or wrong file",
                self.chain.chain_id,
                genesis_path.display(),
                anchor.chain_id
            );
        }
        self.chain.validators = g
            .validators
            .iter()
            .enumerate()
            .map(|(i, v)| ValidatorInfo {
                index: i as u32,
                name: v.name.clone(),
                identity: v.identity.to_string(),
                encryption_key: v.encryption_key.clone(),
            })
            .collect();
        self.chain.authorities = g
            .authorities
            .iter()
            .map(|a| medchain_api::AuthorityInfo {
                name: a.name.clone(),
                identity: a.identity.to_string(),
            })
            .collect();
        self.anchor = Some(anchor);
        Ok(self)
    }

    /// Checks `proofs` for `keys` against the anchor, and that the node did not go back to an
    /// older block than one this client already verified (or keeps, as a light client).
    pub async fn verify_state(
        &self,
        anchor: &verify::Anchor,
        proofs: Option<&medchain_api::StateProofs>,
        keys: &[Vec<u8>],
    ) -> Result<verify::VerifiedState> {
        let proofs = proofs.ok_or(verify::VerifyError::NoProof)?;
        let state = anchor.verify_state(proofs, keys)?;
        self.observe(&state.header).await?;
        Ok(state)
    }

    /// Refuses a header older than the newest this client verified, or another than the one
    /// its light folder keeps at that height; extends the light folder up to it.
    async fn observe(&self, header: &verify::VerifiedHeader) -> Result<()> {
        use std::sync::atomic::Ordering;
        let height = header.header.height;
        let Some(light) = &self.light else {
            let known = self.verified.fetch_max(height, Ordering::Relaxed);
            if height < known {
                return Err(verify::VerifyError::Stale { height, known }.into());
            }
            return Ok(());
        };
        let mut store = light.lock().await;
        store.check(header)?;
        if store.tip().is_none_or(|(tip, _)| tip < height) {
            store.sync(&self.api, Some(height)).await?;
            store.check(header)?;
            let tip = store.tip().map_or(0, |(h, _)| h);
            if tip != height {
                bail!(
                    "the node proved its answer against block {height}, but gave certified headers only up to block {tip}: refused"
                );
            }
        }
        Ok(())
    }

    /// The registered participant `id`: with an anchor, its keys and suspension as proved
    /// against a certified header (whatever the JSON says), else as the node says.
    pub async fn identity(&self, id: &Identity) -> Result<IdentityInfo> {
        Ok(self.verified_identity(id).await?.0)
    }

    /// As [`Client::identity`], with the header it was verified against (`None` without an
    /// anchor).
    pub async fn verified_identity(
        &self,
        id: &Identity,
    ) -> Result<(IdentityInfo, Option<verify::VerifiedHeader>)> {
        let unknown = || {
            anyhow!(
                "{id} is not registered on chain {} (or not visible to you); an authority registers it with `medchain identity register`",
                self.chain.chain_id
            )
        };
        let Some(anchor) = &self.anchor else {
            let info = self
                .api
                .identity(&id.to_string())
                .await?
                .ok_or_else(unknown)?;
            return Ok((info, None));
        };
        use medchain_ledger::contracts::state::{decode, keys, IdentityEntry, SuspensionEntry};
        let (id_key, susp_key) = (keys::identity(id), keys::suspension(id));
        let mut info = match self.api.identity_with_proof(&id.to_string()).await? {
            Ok(info) => info,
            // A 404: proved absent to a caller who would see it (a doctor, an authority), or
            // said without proof (to others it cannot be told apart from hidden).
            Err(answer) => {
                let Some(proof) = &answer.proof else {
                    return Err(unknown());
                };
                let state = self
                    .verify_state(anchor, Some(proof), &[id_key.clone(), susp_key.clone()])
                    .await
                    .with_context(|| {
                        format!("the node's word that {id} is not registered did not verify")
                    })?;
                if state.values[0].is_some() {
                    bail!("the node says {id} is not registered, but its own proof shows the registration: refused");
                }
                bail!(
                    "{id} is not registered on chain {} ({}); an authority registers it with `medchain identity register`",
                    self.chain.chain_id,
                    state.header.describe()
                );
            }
        };
        let state = self
            .verify_state(
                anchor,
                info.proof.as_ref(),
                &[id_key.clone(), susp_key.clone()],
            )
            .await
            .with_context(|| format!("the node's answer about {id} did not verify"))?;
        let entry: IdentityEntry = match &state.values[0] {
            Some(bytes) => decode(&id_key, bytes)?,
            None => bail!(
                "the node shows {id} as registered, but its own proof says {id} is not: refused"
            ),
        };
        let suspension: Option<SuspensionEntry> = state.values[1]
            .as_ref()
            .map(|b| decode(&susp_key, b))
            .transpose()?;
        // Everything the client acts on comes from the proved entries.
        info.identity = id.to_string();
        info.role = role_of(entry.role);
        info.name = entry.name;
        info.encryption_key = hex::encode(&entry.encryption_key);
        info.search_key = hex::encode(&entry.search_key);
        info.height = entry.height;
        info.registered_by = Identity::from_bytes(&entry.registered_by)
            .map(|i| i.to_string())
            .unwrap_or_else(|_| hex::encode(&entry.registered_by));
        info.suspended = suspension.map(|s| medchain_api::SuspensionInfo {
            reason: s.reason,
            height: s.height,
            by: Identity::from_bytes(&s.by)
                .map(|i| i.to_string())
                .unwrap_or_else(|_| hex::encode(&s.by)),
        });
        Ok((info, Some(state.header)))
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
        let found = match &self.anchor {
            Some(anchor) => self.verified_outcome(anchor, id, found).await?,
            None => found,
        };
        if let Some(reason) = &found.failed {
            bail!("transaction {id} was refused by the chain: {reason}");
        }
        Ok(found)
    }

    /// With an anchor, a transaction's outcome as proved, not as told: the node shows the
    /// transaction in a certified block (its body's digest is `id`, so it is the one this
    /// client signed) and proves the contract's `fail/` entry for it, or its absence (it took
    /// effect). A node cannot claim a revocation or a grant committed that is not.
    async fn verified_outcome(
        &self,
        anchor: &verify::Anchor,
        id: &Hash32,
        told: TransactionInfo,
    ) -> Result<TransactionInfo> {
        use medchain_proto::canonical::Hashed;
        let shown = self
            .api
            .transaction_with_proof(&id.to_hex())
            .await?
            .ok_or_else(|| {
                anyhow!("the node no longer shows transaction {id} it said was committed")
            })?;
        let proof = shown.proof.as_ref().ok_or(verify::VerifyError::NoProof)?;
        let context = || format!("the node's word that transaction {id} committed did not verify");
        let block = self
            .verify_past_header(anchor, &proof.inclusion.header)
            .await
            .with_context(context)?;
        let tx = verify::verify_inclusion(&block, &proof.inclusion).with_context(context)?;
        if tx.body.as_ref().map(|b| b.digest()) != Some(*id) {
            bail!(
                "the node proved another transaction than {id} in block {}: refused",
                block.header.height
            );
        }
        let key = medchain_ledger::contracts::state::keys::failure(id);
        let state = self
            .verify_state(anchor, Some(&proof.outcome), std::slice::from_ref(&key))
            .await
            .with_context(context)?;
        if state.header.header.height < block.header.height {
            bail!(
                "the node proved the outcome of transaction {id} at block {}, before its block {}: refused",
                state.header.header.height,
                block.header.height
            );
        }
        Ok(TransactionInfo {
            failed: state.values[0]
                .as_ref()
                .map(|r| String::from_utf8_lossy(r).into_owned()),
            height: block.header.height,
            index: proof.inclusion.index as u32,
            block_hash: block.hash.to_hex(),
            ..told
        })
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
