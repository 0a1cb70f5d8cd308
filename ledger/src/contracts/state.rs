//! The chain state the record contracts keep, its keys, and a write overlay for executing one
//! block. Values are bincode-encoded serde structs; keys start with a short prefix naming the
//! table and use fixed-width big-endian fields so that prefix scans walk in chain order.

use std::collections::BTreeMap;

use medchain_crypto::{Hash32, Identity};
use medchain_storage::Store;
use serde::{de::DeserializeOwned, Deserialize, Serialize};

use super::ContractError;

/// Registered participant.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdentityEntry {
    /// `v1::Role` as its number.
    pub role: i32,
    pub name: String,
    pub encryption_key: Vec<u8>,
    pub search_key: Vec<u8>,
    pub height: u64,
    pub registered_by: Vec<u8>,
}

/// What the chain knows of a record beyond its slip.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SlipEntry {
    pub patient: Vec<u8>,
    pub doctor: Vec<u8>,
    pub record_type: String,
    pub ciphertext_hash: [u8; 32],
    pub height: u64,
    pub confirmed_height: Option<u64>,
    pub deleted_height: Option<u64>,
    pub replaces: Option<[u8; 32]>,
    pub replaced_by: Option<[u8; 32]>,
}

/// Which records a grant or request covers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Scope {
    Record([u8; 32]),
    RecordType(String),
    All,
}

impl Scope {
    pub fn covers(&self, slip_id: &Hash32, slip: &SlipEntry) -> bool {
        match self {
            Scope::Record(s) => s == slip_id.as_bytes(),
            Scope::RecordType(t) => *t == slip.record_type,
            Scope::All => true,
        }
    }

    pub fn describe(&self) -> String {
        match self {
            Scope::Record(s) => format!("record:{}", hex::encode(s)),
            Scope::RecordType(t) => format!("type:{t}"),
            Scope::All => "all".into(),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GrantEntry {
    pub patient: Vec<u8>,
    pub grantee: Vec<u8>,
    pub scope: Scope,
    pub actions: u32,
    pub expires_ms: u64,
    pub threshold: u32,
    pub delegation_key: Vec<u8>,
    /// Validator indexes holding a fragment.
    pub proxies: Vec<u32>,
    pub request: Option<[u8; 32]>,
    pub height: u64,
    pub revoked_height: Option<u64>,
}

impl GrantEntry {
    /// Whether this grant lets its grantee perform `actions` (a `ConsentAction` bit) on record
    /// `slip_id` at `now_ms`: the record's patient gave it, it is neither revoked nor expired,
    /// and its scope covers the record.
    pub fn allows(&self, slip_id: &Hash32, slip: &SlipEntry, actions: u32, now_ms: u64) -> bool {
        self.patient == slip.patient
            && self.revoked_height.is_none()
            && self.expires_ms > now_ms
            && self.actions & actions != 0
            && self.scope.covers(slip_id, slip)
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum RequestOutcome {
    Open,
    Approved { grant: [u8; 32], height: u64 },
    Denied { reason: String, height: u64 },
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestEntry {
    pub requester: Vec<u8>,
    pub patient: Vec<u8>,
    pub scope: Scope,
    pub actions: u32,
    pub expires_ms: u64,
    pub purpose: String,
    pub height: u64,
    pub outcome: RequestOutcome,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SuspensionEntry {
    pub reason: String,
    pub by: Vec<u8>,
    pub height: u64,
}

/// The chain's move to a later version of the rules ([`super::rules::effective`]): blocks from
/// `activation_height` on run `version`, those before it `before`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RulesUpgradeEntry {
    pub before: u32,
    pub version: u32,
    pub activation_height: u64,
    /// Height of the block that scheduled it.
    pub scheduled_at: u64,
}

/// A validator's report of abnormal access by an identity (rules 2), waiting for others.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report {
    pub by: Vec<u8>,
    pub reason: String,
    pub at_ms: u64,
    pub height: u64,
}

/// One line of the provenance trail.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEvent {
    /// upload, update, confirm, delete, grant, approve, request, deny, revoke, read,
    /// read-refused, register, suspend, unsuspend.
    pub op: String,
    pub height: u64,
    pub index: u32,
    pub time_ms: u64,
    pub actor: Vec<u8>,
    pub patient: Option<Vec<u8>>,
    pub record: Option<[u8; 32]>,
    pub detail: String,
    pub transaction: [u8; 32],
}

pub mod keys {
    use super::*;

    pub fn identity(id: &Identity) -> Vec<u8> {
        [b"id/".as_slice(), id.as_bytes()].concat()
    }
    /// The last rules upgrade scheduled (one key: a later upgrade starts from where it left).
    pub const RULES_UPGRADE: &[u8] = b"rules/upgrade";
    pub fn suspension(id: &Identity) -> Vec<u8> {
        [b"susp/".as_slice(), id.as_bytes()].concat()
    }
    /// Validators' reports of an identity not yet suspended (rules 2).
    pub fn reports(id: &Identity) -> Vec<u8> {
        [b"rep/".as_slice(), id.as_bytes()].concat()
    }
    pub fn slip(slip: &Hash32) -> Vec<u8> {
        [SLIPS, slip.as_bytes()].concat()
    }
    /// The slip a ciphertext belongs to (rules 2): one record per ciphertext, so erasing one
    /// record never destroys another's.
    pub fn ciphertext(address: &Hash32) -> Vec<u8> {
        [b"ct/".as_slice(), address.as_bytes()].concat()
    }
    /// The prefix of every slip entry (the orphan sweep walks them all).
    pub const SLIPS: &[u8] = b"slip/";
    pub fn grant(grant: &Hash32) -> Vec<u8> {
        [b"grant/".as_slice(), grant.as_bytes()].concat()
    }
    /// Grants of a patient: `gp/ patient grant`.
    pub fn grant_by_patient(patient: &[u8], grant: &Hash32) -> Vec<u8> {
        [grants_by_patient(patient).as_slice(), grant.as_bytes()].concat()
    }
    /// Grants to a grantee: `gg/ grantee grant`.
    pub fn grant_by_grantee(grantee: &[u8], grant: &Hash32) -> Vec<u8> {
        [grants_by_grantee(grantee).as_slice(), grant.as_bytes()].concat()
    }
    /// The prefix of [`grant_by_patient`] keys for one patient.
    pub fn grants_by_patient(patient: &[u8]) -> Vec<u8> {
        [b"gp/".as_slice(), patient].concat()
    }
    /// The prefix of [`grant_by_grantee`] keys for one grantee.
    pub fn grants_by_grantee(grantee: &[u8]) -> Vec<u8> {
        [b"gg/".as_slice(), grantee].concat()
    }
    /// The prefix of [`request_by_patient`] keys for one patient.
    pub fn requests_by_patient(patient: &[u8]) -> Vec<u8> {
        [b"rp/".as_slice(), patient].concat()
    }
    /// The prefix of [`request_by_requester`] keys for one requester.
    pub fn requests_by_requester(requester: &[u8]) -> Vec<u8> {
        [b"rr/".as_slice(), requester].concat()
    }
    pub fn request(request: &Hash32) -> Vec<u8> {
        [b"req/".as_slice(), request.as_bytes()].concat()
    }
    pub fn request_by_patient(patient: &[u8], request: &Hash32) -> Vec<u8> {
        [requests_by_patient(patient).as_slice(), request.as_bytes()].concat()
    }
    pub fn request_by_requester(requester: &[u8], request: &Hash32) -> Vec<u8> {
        [
            requests_by_requester(requester).as_slice(),
            request.as_bytes(),
        ]
        .concat()
    }
    /// One access record per (read request, serving validator).
    pub fn access(request: &Hash32, validator: &Identity) -> Vec<u8> {
        [b"acc/".as_slice(), request.as_bytes(), validator.as_bytes()].concat()
    }
    pub fn access_prefix(request: &Hash32) -> Vec<u8> {
        [b"acc/".as_slice(), request.as_bytes()].concat()
    }
    /// Rules 6: how many entries the counted list `list` holds (`ln/ list`, u64 big-endian).
    /// Proved with [`list_item`] `0..len`, it shows a client the whole list: a node cannot
    /// leave an entry out (a prefix of hashed keys cannot be proved complete).
    pub fn list_len(list: &[u8]) -> Vec<u8> {
        [b"ln/".as_slice(), list].concat()
    }
    /// Rules 6: entry `i` of the counted list `list` (`li/ list i`): an audit event itself, or
    /// the key of the grant or request listed.
    pub fn list_item(list: &[u8], i: u64) -> Vec<u8> {
        [list_items(list).as_slice(), &i.to_be_bytes()].concat()
    }
    /// The prefix of [`list_item`] keys of one list.
    pub fn list_items(list: &[u8]) -> Vec<u8> {
        [b"li/".as_slice(), list].concat()
    }
    /// Why a committed transaction was refused by a contract.
    pub fn failure(tx: &Hash32) -> Vec<u8> {
        [b"fail/".as_slice(), tx.as_bytes()].concat()
    }
    /// Audit index by subject kind (`r` record, `p` patient, `a` actor) and subject bytes.
    pub fn audit_prefix(kind: u8, subject: &[u8]) -> Vec<u8> {
        [b"audit/".as_slice(), &[kind, b'/'], subject].concat()
    }
    pub fn audit(kind: u8, subject: &[u8], height: u64, index: u32, n: u8) -> Vec<u8> {
        [
            audit_prefix(kind, subject).as_slice(),
            &height.to_be_bytes(),
            &index.to_be_bytes(),
            &[n],
        ]
        .concat()
    }
}

/// A counted list's length entry ([`keys::list_len`]).
pub fn list_len_value(key: &[u8], bytes: &[u8]) -> Result<u64, ContractError> {
    let b: [u8; 8] = bytes.try_into().map_err(|_| {
        ContractError::Storage(format!(
            "list length {} is {} bytes, not 8",
            String::from_utf8_lossy(&key[..key.len().min(8)]),
            bytes.len()
        ))
    })?;
    Ok(u64::from_be_bytes(b))
}

pub fn encode<T: Serialize>(v: &T) -> Vec<u8> {
    bincode::serde::encode_to_vec(v, bincode::config::standard())
        .expect("chain-state values always encode")
}

pub fn decode<T: DeserializeOwned>(key: &[u8], bytes: &[u8]) -> Result<T, ContractError> {
    bincode::serde::decode_from_slice(bytes, bincode::config::standard())
        .map(|(v, _)| v)
        .map_err(|e| {
            ContractError::Storage(format!(
                "chain-state entry {} is corrupt: {e}",
                String::from_utf8_lossy(&key[..key.len().min(8)])
            ))
        })
}

/// The committed state with the writes of the block being executed on top, and those of the
/// transaction being executed on top of that (dropped if the transaction fails).
#[derive(Debug)]
pub struct Overlay<'a> {
    store: &'a Store,
    block: BTreeMap<Vec<u8>, Option<Vec<u8>>>,
    tx: BTreeMap<Vec<u8>, Option<Vec<u8>>>,
}

impl<'a> Overlay<'a> {
    /// The committed state under this overlay.
    pub fn store(&self) -> &'a Store {
        self.store
    }

    pub fn new(store: &'a Store) -> Self {
        Overlay {
            store,
            block: BTreeMap::new(),
            tx: BTreeMap::new(),
        }
    }

    pub fn get_raw(&self, key: &[u8]) -> Result<Option<Vec<u8>>, ContractError> {
        if let Some(v) = self.tx.get(key).or_else(|| self.block.get(key)) {
            return Ok(v.clone());
        }
        self.store
            .chain_state(key)
            .map_err(|e| ContractError::Storage(e.to_string()))
    }

    pub fn get<T: DeserializeOwned>(&self, key: &[u8]) -> Result<Option<T>, ContractError> {
        self.get_raw(key)?.map(|b| decode(key, &b)).transpose()
    }

    pub fn contains(&self, key: &[u8]) -> Result<bool, ContractError> {
        Ok(self.get_raw(key)?.is_some())
    }

    pub fn put<T: Serialize>(&mut self, key: Vec<u8>, value: &T) {
        self.tx.insert(key, Some(encode(value)));
    }

    pub fn put_raw(&mut self, key: Vec<u8>, value: Vec<u8>) {
        self.tx.insert(key, Some(value));
    }

    pub fn delete(&mut self, key: Vec<u8>) {
        self.tx.insert(key, None);
    }

    /// Appends `value` to the counted list `list` (rules 6): entry `len`, then `len + 1`.
    pub fn list_push(&mut self, list: &[u8], value: Vec<u8>) -> Result<u64, ContractError> {
        let len_key = keys::list_len(list);
        let len = match self.get_raw(&len_key)? {
            Some(b) => list_len_value(&len_key, &b)?,
            None => 0,
        };
        self.put_raw(keys::list_item(list, len), value);
        self.put_raw(len_key, (len + 1).to_be_bytes().to_vec());
        Ok(len)
    }

    /// Keeps the current transaction's writes.
    pub fn keep_tx(&mut self) {
        let tx = std::mem::take(&mut self.tx);
        self.block.extend(tx);
    }

    /// Drops the current transaction's writes.
    pub fn drop_tx(&mut self) {
        self.tx.clear();
    }

    pub fn into_writes(mut self) -> Vec<(Vec<u8>, Option<Vec<u8>>)> {
        self.keep_tx();
        self.block.into_iter().collect()
    }
}
