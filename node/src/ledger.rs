//! Ledger execution of a private chain: which transactions may be ordered, and how a committed
//! batch becomes a stored block.
//!
//! A transaction is acceptable when it decodes canonically, is for this chain, its signatures
//! verify (`ledger::verify_transaction`), and neither it nor its `(signer, nonce)` pair is already
//! committed. Verification results are cached by the transaction's bytes, so a node checks each
//! transaction's signatures once even though the mempool and PBFT validation both look at it.
//! Committing writes the block, its certificate, its indexes, the used nonces and the PBFT
//! execution digest in one atomic RocksDB batch.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use medchain_crypto::hash::{digest, domains};
use medchain_crypto::validators::ValidatorSet;
use medchain_crypto::Hash32;
use medchain_proto::canonical::{Canonical, Hashed};
use medchain_proto::ledger::{private_block, verify_transaction};
use medchain_proto::v1;
use medchain_storage::{ChainTip, Store};

/// Chain-state key of the PBFT execution point: (sequence, execution digest).
pub const EXEC_KEY: &[u8] = b"pbft/exec";
/// Chain-state key of the number of transactions that took effect (u64 big-endian).
pub const COMMITTED_KEY: &[u8] = b"stats/committed";

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
    #[error("storage error: {0}")]
    Storage(String),
}

/// A transaction that passed [`PrivateLedger::check`].
#[derive(Clone, Debug)]
pub struct CheckedTx {
    pub id: Hash32,
    pub bytes: Vec<u8>,
}

/// The ledger of one private chain.
pub struct PrivateLedger {
    pub store: Arc<Store>,
    pub chain_id: String,
    pub validators: ValidatorSet,
    verified: Mutex<HashSet<Hash32>>,
}

impl std::fmt::Debug for PrivateLedger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PrivateLedger({})", self.chain_id)
    }
}

const VERIFIED_CAPACITY: usize = 1 << 20;

fn nonce_key(signer: &[u8], nonce: u64) -> Vec<u8> {
    let mut k = b"nonce/".to_vec();
    k.extend_from_slice(signer);
    k.extend_from_slice(&nonce.to_be_bytes());
    k
}

impl PrivateLedger {
    pub fn new(store: Arc<Store>, chain_id: String, validators: ValidatorSet) -> Self {
        PrivateLedger {
            store,
            chain_id,
            validators,
            verified: Mutex::new(HashSet::new()),
        }
    }

    /// Decodes and verifies a transaction (signatures checked once per distinct bytes), without
    /// looking at what is committed.
    pub fn check_form(&self, bytes: &[u8]) -> Result<(v1::Transaction, Hash32), TxError> {
        let tx = v1::Transaction::decode_canonical(bytes)
            .map_err(|e| TxError::Malformed(e.to_string()))?;
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
        let id = body.digest();
        let key = digest(domains::VERIFY_CACHE, bytes);
        let known = self
            .verified
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(&key);
        if !known {
            verify_transaction(tx.clone()).map_err(|e| TxError::Invalid(e.to_string()))?;
            let mut v = self.verified.lock().unwrap_or_else(|p| p.into_inner());
            if v.len() >= VERIFIED_CAPACITY {
                v.clear();
            }
            v.insert(key);
        }
        Ok((tx, id))
    }

    /// Everything a transaction must pass to be ordered: form, signatures and replay.
    pub fn check(&self, bytes: &[u8]) -> Result<CheckedTx, TxError> {
        let (tx, id) = self.check_form(bytes)?;
        self.check_not_committed(&tx, &id)?;
        Ok(CheckedTx {
            id,
            bytes: bytes.to_vec(),
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

    /// Whether the transaction (or another with its signer and nonce) is committed.
    pub fn is_committed(&self, bytes: &[u8]) -> bool {
        match v1::Transaction::decode_canonical(bytes) {
            Ok(tx) => {
                let Some(body) = tx.body.as_ref() else {
                    return false;
                };
                matches!(
                    self.check_not_committed(&tx, &body.digest()),
                    Err(TxError::AlreadyCommitted { .. } | TxError::NonceUsed { .. })
                )
            }
            Err(_) => false,
        }
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
    ) -> Result<(ChainTip, Vec<Hash32>), TxError> {
        let storage = |e: medchain_storage::StoreError| TxError::Storage(e.to_string());
        let parent = self
            .store
            .tip()
            .map_err(storage)?
            .map_or(Hash32::ZERO, |t| t.hash);
        let block = private_block(&self.chain_id, &self.validators, committed, parent)
            .map_err(|e| TxError::Malformed(e.to_string()))?;
        let mut skipped: Vec<u32> = repeats.to_vec();
        let mut state = Vec::new();
        let mut used = HashSet::new();
        let mut effective = Vec::new();
        for (i, tx) in block.transactions.iter().enumerate() {
            let i = i as u32;
            if skipped.contains(&i) {
                continue;
            }
            let Some(body) = tx.body.as_ref() else {
                skipped.push(i);
                continue;
            };
            let key = nonce_key(&body.signer, body.nonce);
            let id = body.digest();
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
            effective.push(id);
        }
        let before = self
            .store
            .chain_state(COMMITTED_KEY)
            .map_err(storage)?
            .and_then(|b| b.try_into().ok())
            .map(u64::from_be_bytes)
            .unwrap_or(0);
        let total = before + effective.len() as u64;
        state.push((COMMITTED_KEY.to_vec(), Some(total.to_be_bytes().to_vec())));
        let mut exec = committed.seq.to_be_bytes().to_vec();
        exec.extend_from_slice(exec_digest.as_bytes());
        state.push((EXEC_KEY.to_vec(), Some(exec)));
        let tip = self
            .store
            .commit_block(&block, &state, &skipped)
            .map_err(storage)?;
        Ok((tip, effective))
    }
}

impl medchain_pbft::Application for PrivateLedger {
    fn validate(&self, _seq: u64, batch: &v1::PbftBatch) -> Result<(), String> {
        let mut ids = HashSet::new();
        for (i, item) in batch.items.iter().enumerate() {
            let checked = self.check(item).map_err(|e| format!("item {i}: {e}"))?;
            if !ids.insert(checked.id) {
                return Err(format!("item {i} repeats an earlier item of the batch"));
            }
        }
        Ok(())
    }

    fn already_executed(&self, item: &[u8]) -> bool {
        self.is_committed(item)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use medchain_crypto::SigningKey;
    use medchain_proto::ledger::sign_committed_batch;

    fn keys() -> Vec<SigningKey> {
        (1..=4u8)
            .map(|i| SigningKey::from_bytes(&[i; 32]).unwrap())
            .collect()
    }

    fn tx(chain: &str, nonce: u64, summary: &str) -> Vec<u8> {
        let doctor = SigningKey::from_bytes(&[9; 32]).unwrap();
        let mut t = crate::bench::slip_transaction(chain, &doctor, nonce, 5);
        if let Some(v1::transaction_body::Payload::PrivateSlip(s)) =
            t.body.as_mut().and_then(|b| b.payload.as_mut())
        {
            s.content.as_mut().unwrap().summary = summary.into();
            *s = medchain_proto::ledger::make_private_slip(&doctor, s.content.clone().unwrap());
        }
        let t = sign_transaction_again(&doctor, t);
        t.canonical_bytes()
    }

    fn sign_transaction_again(k: &SigningKey, t: v1::Transaction) -> v1::Transaction {
        medchain_proto::ledger::sign_transaction(k, t.body.unwrap())
    }

    #[test]
    fn replays_and_reused_nonces_are_refused_and_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::open(dir.path()).unwrap());
        let ks = keys();
        let set = ValidatorSet::new(ks.iter().map(|k| k.identity()).collect()).unwrap();
        let ledger = PrivateLedger::new(store, "h".into(), set);
        let a = tx("h", 1, "a");
        let same_nonce = tx("h", 1, "b");
        assert!(ledger.check(&a).is_ok());
        assert!(matches!(
            ledger.check(&tx("other", 1, "a")),
            Err(TxError::WrongChain { .. })
        ));
        let mut bad = a.clone();
        let last = bad.len() - 1;
        bad[last] ^= 1;
        assert!(ledger.check(&bad).is_err());

        // Both with nonce 1 in one batch: only the first takes effect.
        let batch = v1::PbftBatch {
            timestamp_ms: 7,
            items: vec![a.clone(), same_nonce.clone()],
            proposer: 0,
        };
        let committed = sign_committed_batch(&ks, "h", 1, 0, batch);
        let (tip, effective) = ledger.commit(&committed, &[], Hash32::ZERO).unwrap();
        assert_eq!(tip.height, 1);
        assert_eq!(effective.len(), 1);
        assert!(matches!(
            ledger.check(&a),
            Err(TxError::AlreadyCommitted { height: 1, .. })
        ));
        assert!(matches!(
            ledger.check(&same_nonce),
            Err(TxError::NonceUsed { nonce: 1, .. })
        ));
        assert!(ledger.is_committed(&same_nonce));
        assert_eq!(ledger.exec_point().unwrap().0, 1);
    }
}
