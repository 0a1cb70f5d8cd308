//! Deterministic execution of a hospital's private chain: which transactions may be ordered, how
//! a committed batch becomes a stored block, the record, consent and access contracts
//! ([`contracts`]) and the committed state's questions ([`contracts::queries`]).
//!
//! This crate sees no async runtime, network or HTTP (its dependencies are the wire types, the
//! crypto, the store and the PBFT `Application` trait): what every replica must compute alike
//! cannot depend on timing or I/O beyond its store. The node drives it.
//!
//! A transaction is acceptable when it decodes canonically, is for this chain, its signatures
//! verify (`ledger::verify_transaction`), and neither it nor its `(signer, nonce)` pair is already
//! committed. Decoded, verified transactions are kept by the digest of their bytes ([`known`]),
//! so a node decodes and verifies each once although its arrival, PBFT validation and the commit
//! all look at it. Committing executes every transaction with the record contracts and writes the
//! block, its certificate, its indexes, the contracts' state, the used nonces and the PBFT
//! execution digest in one atomic RocksDB batch.

use std::collections::HashSet;
use std::sync::Arc;

use medchain_crypto::hash::{digest, domains};
use medchain_crypto::validators::ValidatorSet;
use medchain_crypto::Hash32;
use medchain_crypto::Identity;
use medchain_proto::canonical::{limits, Canonical, Hashed};
use medchain_proto::ledger::{private_block_of, verify_transaction};
use medchain_proto::v1;
use medchain_storage::{ChainTip, Store};

use crate::contracts::{state::Overlay, ContractError, ExecContext, SideEffects};

pub mod known;
pub mod state_tree;
pub use known::{Decoded, Known, KNOWN_CAPACITY};

/// Chain-state key of the PBFT execution point: (sequence, execution digest).
pub const EXEC_KEY: &[u8] = b"pbft/exec";
/// Chain-state key of the number of transactions that took effect (u64 big-endian).
pub const COMMITTED_KEY: &[u8] = b"stats/committed";
/// Chain-state key of the last block's timestamp (Unix ms, u64 big-endian), for checking the
/// next proposal's. Chains written before it have none until their next block.
pub const LAST_TIME_KEY: &[u8] = b"meta/last_block_ms";

/// How far ahead of a backup's clock a proposed batch's timestamp may be. The primary chooses
/// block time, and grant expiry and transaction windows are judged by it: a primary whose
/// clock runs ahead (or lies) would otherwise expire every grant at once.
pub const BATCH_FUTURE_MS: u64 = 60_000;

mod proving;
pub use proving::{ListRange, MAX_PROVED_LIST};
/// How far a proposed batch's timestamp may fall behind the last block's: a lying primary
/// cannot turn time back to revive expired grants by more than this, and honest clocks that
/// differ a little do not stall the chain.
pub const BATCH_PAST_MS: u64 = 60_000;

/// Why a transaction is not acceptable.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum TxError {
    #[error("malformed transaction: {0}")]
    Malformed(String),
    #[error(
        "transaction is for chain {got:?}, this node serves {expected:?}; sign it for this chain"
    )]
    WrongChain { expected: String, got: String },
    #[error("invalid transaction: {0}")]
    Invalid(String),
    #[error("transaction {id} is already committed at height {height}")]
    AlreadyCommitted { id: String, height: u64 },
    #[error("nonce {nonce} of signer {signer} is already used; sign with a new nonce")]
    NonceUsed { signer: String, nonce: u64 },
    #[error("refused: {0}")]
    Refused(String),
    #[error("storage error: {0}")]
    Storage(String),
    #[error("this chain runs rules {version} from height {height} (scheduled on chain), and this binary knows rules up to {known}: install a release that knows rules {version} and start the node again")]
    UnknownRules {
        version: u32,
        height: u64,
        known: u32,
    },
}

impl From<ContractError> for TxError {
    fn from(e: ContractError) -> Self {
        match e {
            ContractError::Refused(m) => TxError::Refused(m),
            ContractError::Storage(m) => TxError::Storage(m),
        }
    }
}

pub mod contracts;

/// The form rules that depend on the rules version (a registration's name, rules 3): checked
/// for the block a transaction is meant for, not cached with its signatures.
fn form_under(tx: &v1::Transaction, rules: u32) -> Result<(), TxError> {
    if let Some(v1::transaction_body::Payload::IdentityRegistration(r)) =
        tx.body.as_ref().and_then(|b| b.payload.as_ref())
    {
        contracts::rules::registration_form(rules, r).map_err(TxError::Invalid)?;
    }
    Ok(())
}

/// A transaction its chain's ledger has checked (decoding, signatures, replay, contract rules).
#[derive(Clone, Debug)]
pub struct CheckedTx {
    pub id: Hash32,
    /// Signer and nonce: at most one transaction with this key ever takes effect.
    pub replay_key: Vec<u8>,
    pub bytes: Vec<u8>,
    /// Its signer's identity bytes and its payload's kind: the mempool's quotas count them.
    pub signer: Vec<u8>,
    pub kind: &'static str,
    /// A record slip's ciphertext (content address and size): the mempool keeps one pending
    /// slip per ciphertext and counts a signer's pending bytes, and a peer's push of a
    /// ciphertext is stored only while its slip is pending or committed.
    pub blob: Option<(Hash32, u64)>,
}

/// The ciphertext a record slip points at, if the transaction is one.
fn slip_blob(body: &v1::TransactionBody) -> Option<(Hash32, u64)> {
    match body.payload.as_ref()? {
        v1::transaction_body::Payload::PrivateSlip(slip) => {
            let content = slip.content.as_ref()?;
            let address = Hash32::from_slice(&content.ciphertext_hash).ok()?;
            Some((address, content.ciphertext_size))
        }
        _ => None,
    }
}

/// What [`PrivateLedger::commit`] wrote.
#[derive(Clone, Debug)]
pub struct Committed {
    pub tip: ChainTip,
    /// Ids of the transactions that took effect.
    pub effective: Vec<Hash32>,
    /// (id, replay key) of every well-formed transaction in the block, skipped ones included.
    pub seen: Vec<(Hash32, Vec<u8>)>,
    /// Transactions a contract refused: (id, reason).
    pub failed: Vec<(Hash32, String)>,
    /// What the node does next (store or erase blobs, keep or destroy proxy fragments).
    pub effects: SideEffects,
}

/// The ledger of one private chain.
pub struct PrivateLedger {
    pub store: Arc<Store>,
    pub chain_id: String,
    pub validators: ValidatorSet,
    /// Genesis authorities: they register participants.
    pub authorities: Vec<Identity>,
    /// The contract rules of the chain (genesis `params.rules`, [`contracts::rules`]).
    pub rules: u32,
    /// Decoded, verified transactions by the digest of their bytes: decoded once per node.
    known: Known,
}

impl std::fmt::Debug for PrivateLedger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PrivateLedger({})", self.chain_id)
    }
}

fn nonce_key(signer: &[u8], nonce: u64) -> Vec<u8> {
    let mut k = b"nonce/".to_vec();
    k.extend_from_slice(signer);
    k.extend_from_slice(&nonce.to_be_bytes());
    k
}

impl PrivateLedger {
    /// Questions over the committed state (the API reads through these, never through keys).
    pub fn queries(&self) -> crate::contracts::queries::Queries<'_> {
        crate::contracts::queries::Queries::new(&self.store)
    }

    pub fn new(
        store: Arc<Store>,
        chain_id: String,
        validators: ValidatorSet,
        authorities: Vec<Identity>,
        rules: u32,
    ) -> Self {
        PrivateLedger {
            store,
            chain_id,
            validators,
            authorities,
            rules,
            known: Known::new(KNOWN_CAPACITY),
        }
    }

    /// Decodes and verifies a transaction, without looking at what is committed. Bytes seen
    /// before are neither decoded nor verified again (see [`known`]).
    pub fn check_form(&self, bytes: &[u8]) -> Result<Arc<Decoded>, TxError> {
        let key = digest(domains::VERIFY_CACHE, bytes);
        if let Some(d) = self.known.get(&key) {
            return Ok(d);
        }
        let tx = v1::Transaction::decode_canonical(bytes)
            .map_err(|e| TxError::Malformed(e.to_string()))?;
        self.verify_form(key, tx)
    }

    /// The chain and signature checks of a decoded transaction; keeps it as known.
    fn verify_form(&self, key: Hash32, tx: v1::Transaction) -> Result<Arc<Decoded>, TxError> {
        let body = tx
            .body
            .as_ref()
            .ok_or_else(|| TxError::Malformed("no body".into()))?;
        if body.chain_id != self.chain_id {
            return Err(TxError::WrongChain {
                expected: self.chain_id.clone(),
                got: body.chain_id.clone(),
            });
        }
        let verified = verify_transaction(tx).map_err(|e| TxError::Invalid(e.to_string()))?;
        let decoded = Arc::new(Decoded {
            tx: verified.transaction,
            id: verified.id,
        });
        self.known.insert(key, decoded.clone());
        Ok(decoded)
    }

    /// Everything a transaction must pass to be ordered in the next block: form (by the rules
    /// that block runs), signatures and replay.
    pub fn check(&self, bytes: &[u8]) -> Result<CheckedTx, TxError> {
        let rules = self.rules_at(self.next_height()?)?;
        self.check_under(bytes, rules)
    }

    fn check_under(&self, bytes: &[u8], rules: u32) -> Result<CheckedTx, TxError> {
        let d = self.check_form(bytes)?;
        form_under(&d.tx, rules)?;
        self.checked(&d.tx, d.id, bytes)
    }

    /// The height of the next block.
    fn next_height(&self) -> Result<u64, TxError> {
        Ok(self
            .store
            .tip()
            .map_err(|e| TxError::Storage(e.to_string()))?
            .map_or(1, |t| t.height + 1))
    }

    /// The rules block `height` runs ([`contracts::rules::effective`]): genesis `params.rules`
    /// until an upgrade scheduled on chain takes effect. A version this binary does not know is
    /// an error: the node must not execute, or vote for, a block under rules it cannot apply.
    pub fn rules_at(&self, height: u64) -> Result<u32, TxError> {
        let upgrade = self
            .queries()
            .rules_upgrade()
            .map_err(|e| TxError::Storage(e.to_string()))?;
        let version = contracts::rules::effective(self.rules, upgrade.as_ref(), height);
        if version > contracts::rules::LATEST {
            return Err(TxError::UnknownRules {
                version,
                height: upgrade.map_or(height, |u| u.activation_height),
                known: contracts::rules::LATEST,
            });
        }
        Ok(version)
    }

    /// The rules the next block runs, and the upgrade scheduled, if any.
    pub fn rules_now(&self) -> Result<(u32, Option<contracts::state::RulesUpgradeEntry>), TxError> {
        let upgrade = self
            .queries()
            .rules_upgrade()
            .map_err(|e| TxError::Storage(e.to_string()))?;
        let height = self.next_height()?;
        Ok((
            contracts::rules::effective(self.rules, upgrade.as_ref(), height),
            upgrade,
        ))
    }

    /// The replay check of a decoded, verified transaction.
    fn checked(
        &self,
        tx: &v1::Transaction,
        id: Hash32,
        bytes: &[u8],
    ) -> Result<CheckedTx, TxError> {
        self.check_not_committed(tx, &id)?;
        let body = tx.body.as_ref().expect("checked by check_form");
        Ok(CheckedTx {
            id,
            replay_key: nonce_key(&body.signer, body.nonce),
            bytes: bytes.to_vec(),
            signer: body.signer.clone(),
            kind: body
                .payload
                .as_ref()
                .map_or("none", medchain_proto::records::payload_kind),
            blob: slip_blob(body),
        })
    }

    fn check_not_committed(&self, tx: &v1::Transaction, id: &Hash32) -> Result<(), TxError> {
        let storage = |e: medchain_storage::StoreError| TxError::Storage(e.to_string());
        if let Some(loc) = self.store.transaction_location(id).map_err(storage)? {
            return Err(TxError::AlreadyCommitted {
                id: id.to_hex(),
                height: loc.height,
            });
        }
        let body = tx.body.as_ref().expect("checked by check_form");
        if self
            .store
            .chain_state(&nonce_key(&body.signer, body.nonce))
            .map_err(storage)?
            .is_some()
        {
            return Err(TxError::NonceUsed {
                signer: hex::encode(&body.signer),
                nonce: body.nonce,
            });
        }
        Ok(())
    }

    /// [`Self::check`] plus the contract rules against the committed state, for a transaction a
    /// client submits (so "not registered" or "grant expired" is answered at once). Transactions
    /// forwarded by other validators get [`Self::check`] only: this node's state may lag theirs by
    /// a block, and the contracts decide again, deterministically, at commit.
    pub fn check_client(&self, bytes: &[u8], now_ms: u64) -> Result<CheckedTx, TxError> {
        let d = self.check_form(bytes)?;
        self.check_contracts(&d, bytes, now_ms)
    }

    /// [`Self::check_client`] of a transaction the caller already decoded (an upload carries
    /// it inside the `RecordUpload`): it is not decoded a second time. Its bytes are its
    /// canonical encoding, so what is kept as known always matches them.
    pub fn check_client_decoded(
        &self,
        tx: v1::Transaction,
        now_ms: u64,
    ) -> Result<CheckedTx, TxError> {
        let bytes = tx.canonical_bytes();
        if bytes.len() > limits::TRANSACTION {
            return Err(TxError::Malformed(format!(
                "transaction of {} bytes is over the {}-byte limit",
                bytes.len(),
                limits::TRANSACTION
            )));
        }
        let key = digest(domains::VERIFY_CACHE, &bytes);
        let d = match self.known.get(&key) {
            Some(d) => d,
            None => self.verify_form(key, tx)?,
        };
        self.check_contracts(&d, &bytes, now_ms)
    }

    fn check_contracts(
        &self,
        d: &Decoded,
        bytes: &[u8],
        now_ms: u64,
    ) -> Result<CheckedTx, TxError> {
        let (tx, id) = (&d.tx, d.id);
        let checked = self.checked(tx, id, bytes)?;
        let body = tx.body.as_ref().expect("checked by check_form");
        let signer =
            Identity::from_bytes(&body.signer).map_err(|e| TxError::Malformed(e.to_string()))?;
        let payload = body
            .payload
            .as_ref()
            .ok_or_else(|| TxError::Malformed("no payload".into()))?;
        let height = self.next_height()?;
        let rules = self.rules_at(height)?;
        form_under(tx, rules)?;
        let ctx = ExecContext {
            height,
            index: 0,
            time_ms: now_ms,
            authorities: &self.authorities,
            validators: self.validators.members(),
            rules,
        };
        let mut ov = Overlay::new(&self.store);
        contracts::execute(
            &mut ov,
            &ctx,
            &signer,
            checked.id,
            body.timestamp_ms,
            payload,
        )?;
        Ok(checked)
    }

    /// Whether the transaction (or another with its signer and nonce) is committed.
    pub fn is_committed(&self, bytes: &[u8]) -> bool {
        let (known, owned);
        let tx = match self.known.get(&digest(domains::VERIFY_CACHE, bytes)) {
            Some(d) => {
                known = d;
                &known.tx
            }
            None => match v1::Transaction::decode_canonical(bytes) {
                Ok(tx) => {
                    owned = tx;
                    &owned
                }
                Err(_) => return false,
            },
        };
        let Some(body) = tx.body.as_ref() else {
            return false;
        };
        matches!(
            self.check_not_committed(tx, &body.digest()),
            Err(TxError::AlreadyCommitted { .. } | TxError::NonceUsed { .. })
        )
    }

    /// The decoded items of a batch: the known ones as they were decoded on arrival, any other
    /// (a block fetched from a peer) decoded now.
    pub fn decode_items(&self, items: &[Vec<u8>]) -> Result<Vec<v1::Transaction>, TxError> {
        items
            .iter()
            .map(
                |bytes| match self.known.get(&digest(domains::VERIFY_CACHE, bytes)) {
                    Some(d) => Ok(d.tx.clone()),
                    None => v1::Transaction::decode_canonical(bytes)
                        .map_err(|e| TxError::Malformed(e.to_string())),
                },
            )
            .collect()
    }

    /// The PBFT execution point stored with the last block: (sequence, execution digest).
    pub fn exec_point(&self) -> Result<(u64, Hash32), TxError> {
        let v = self
            .store
            .chain_state(EXEC_KEY)
            .map_err(|e| TxError::Storage(e.to_string()))?;
        Ok(match v {
            Some(b) if b.len() == 40 => (
                u64::from_be_bytes(b[..8].try_into().expect("8 bytes")),
                Hash32::from_slice(&b[8..]).expect("32 bytes"),
            ),
            _ => (0, Hash32::ZERO),
        })
    }

    /// Writes a committed batch as the next block. `repeats` are positions the engine found
    /// already executed; positions whose `(signer, nonce)` was used earlier (in this batch or
    /// before) are skipped too. Returns the new tip and the ids of the transactions that took
    /// effect.
    pub fn commit(
        &self,
        committed: &v1::CommittedBatch,
        repeats: &[u32],
        exec_digest: Hash32,
    ) -> Result<Committed, TxError> {
        let storage = |e: medchain_storage::StoreError| TxError::Storage(e.to_string());
        let parent = self
            .store
            .tip()
            .map_err(storage)?
            .map_or(Hash32::ZERO, |t| t.hash);
        let items = committed.batch.as_ref().map_or(&[][..], |b| &b.items[..]);
        let transactions = self.decode_items(items)?;
        let mut block = private_block_of(
            &self.chain_id,
            &self.validators,
            committed,
            parent,
            transactions,
        )
        .map_err(|e| TxError::Malformed(e.to_string()))?;
        let header = block.header.as_ref().expect("built above");
        let (height, time_ms) = (header.height, header.timestamp_ms);
        // One version for the whole block: an upgrade it schedules takes effect later.
        let rules = self.rules_at(height)?;
        let mut skipped: Vec<u32> = repeats.to_vec();
        let mut failed_at: Vec<u32> = Vec::new();
        let mut failed = Vec::new();
        let mut effects = SideEffects::default();
        let mut ov = Overlay::new(&self.store);
        let mut state = Vec::new();
        let mut used = HashSet::new();
        let mut effective = Vec::new();
        let mut seen = Vec::new();
        for (i, tx) in block.transactions.iter().enumerate() {
            let i = i as u32;
            let Some(body) = tx.body.as_ref() else {
                skipped.push(i);
                continue;
            };
            let key = nonce_key(&body.signer, body.nonce);
            let id = body.digest();
            seen.push((id, key.clone()));
            if skipped.contains(&i) {
                continue;
            }
            let taken = !used.insert(key.clone())
                || self.store.chain_state(&key).map_err(storage)?.is_some()
                || self
                    .store
                    .transaction_location(&id)
                    .map_err(storage)?
                    .is_some();
            if taken {
                skipped.push(i);
                continue;
            }
            state.push((key, Some(id.as_bytes().to_vec())));
            let ctx = ExecContext {
                height,
                index: i,
                time_ms,
                authorities: &self.authorities,
                validators: self.validators.members(),
                rules,
            };
            let outcome = match (Identity::from_bytes(&body.signer), body.payload.as_ref()) {
                (Ok(signer), Some(payload)) => {
                    contracts::execute(&mut ov, &ctx, &signer, id, body.timestamp_ms, payload)
                }
                _ => Err(ContractError::Refused("malformed signer or payload".into())),
            };
            match outcome {
                Ok(fx) => {
                    ov.keep_tx();
                    effects.extend(fx);
                    effective.push(id);
                }
                Err(ContractError::Storage(e)) => return Err(TxError::Storage(e)),
                Err(ContractError::Refused(reason)) => {
                    // Deterministic on every node: the transaction stays in the block, uses its
                    // nonce, and its failure is recorded instead of its effects.
                    ov.drop_tx();
                    state.push((
                        contracts::state::keys::failure(&id),
                        Some(reason.clone().into_bytes()),
                    ));
                    failed_at.push(i);
                    failed.push((id, reason));
                }
            }
        }
        state.extend(ov.into_writes());
        let before = self
            .store
            .chain_state(COMMITTED_KEY)
            .map_err(storage)?
            .and_then(|b| b.try_into().ok())
            .map(u64::from_be_bytes)
            .unwrap_or(0);
        let total = before + effective.len() as u64;
        state.push((COMMITTED_KEY.to_vec(), Some(total.to_be_bytes().to_vec())));
        state.push((LAST_TIME_KEY.to_vec(), Some(time_ms.to_be_bytes().to_vec())));
        let mut exec = committed.seq.to_be_bytes().to_vec();
        exec.extend_from_slice(exec_digest.as_bytes());
        state.push((EXEC_KEY.to_vec(), Some(exec)));
        let tree = if rules >= contracts::rules::V5 {
            let (root, writes) = self.state_root_after(height, &state)?;
            block.header.as_mut().expect("built above").state_root = root.to_vec();
            Some(writes)
        } else {
            None
        };
        let tip = self
            .store
            .commit_block_with_tree(&block, &state, &skipped, &failed_at, tree.as_ref())
            .map_err(storage)?;
        Ok(Committed {
            tip,
            effective,
            seen,
            failed,
            effects,
        })
    }
}

impl PrivateLedger {
    /// The state root after block `height` writes `state`, and the tree's writes for the block's
    /// batch. A chain that has just moved to rules 5 (or a data folder an older release wrote)
    /// first gets the tree of its tip built from its state.
    fn state_root_after(
        &self,
        height: u64,
        state: &[(Vec<u8>, Option<Vec<u8>>)],
    ) -> Result<([u8; 32], medchain_storage::StateTreeWrites), TxError> {
        let tree = state_tree::StateTree::new(&self.store);
        let tree_error = |e: state_tree::StateTreeError| TxError::Storage(e.to_string());
        tree.ensure().map_err(tree_error)?;
        tree.update(
            height,
            state.iter().map(|(k, v)| (k.as_slice(), v.as_deref())),
        )
        .map_err(tree_error)
    }

    /// Whether a proposed batch may be ordered, judged at this replica's time `now_ms`: its
    /// timestamp within [`BATCH_FUTURE_MS`] of the clock and [`BATCH_PAST_MS`] of the last
    /// block, and every item well formed, signed and not executed.
    pub fn validate_at(&self, seq: u64, batch: &v1::PbftBatch, now_ms: u64) -> Result<(), String> {
        let rules = self.rules_at(seq).map_err(|e| e.to_string())?;
        let t = batch.timestamp_ms;
        if t > now_ms.saturating_add(BATCH_FUTURE_MS) {
            return Err(format!(
                "the batch's timestamp {t} ms is {} ms ahead of this replica's clock (limit {BATCH_FUTURE_MS} ms): the primary's clock is wrong",
                t - now_ms
            ));
        }
        let last = self
            .store
            .chain_state(LAST_TIME_KEY)
            .map_err(|e| format!("reading the last block's time: {e}"))?
            .and_then(|b| b.try_into().ok())
            .map_or(0, u64::from_be_bytes);
        if t.saturating_add(BATCH_PAST_MS) < last {
            return Err(format!(
                "the batch's timestamp {t} ms is {} ms before the last block's {last} ms (limit {BATCH_PAST_MS} ms): the primary's clock is wrong",
                last - t
            ));
        }
        let mut ids = HashSet::new();
        for (i, item) in batch.items.iter().enumerate() {
            let checked = self
                .check_under(item, rules)
                .map_err(|e| format!("item {i}: {e}"))?;
            if !ids.insert(checked.id) {
                return Err(format!("item {i} repeats an earlier item of the batch"));
            }
        }
        Ok(())
    }
}

impl medchain_pbft::Application for PrivateLedger {
    fn validate(&self, seq: u64, batch: &v1::PbftBatch) -> Result<(), String> {
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        self.validate_at(seq, batch, now_ms)
    }

    fn already_executed(&self, item: &[u8]) -> bool {
        self.is_committed(item)
    }
}

#[cfg(test)]
mod tests;
