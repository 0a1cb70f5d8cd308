//! The committed chain state as questions the API and the node's own tasks ask: who is
//! registered, a record's state, a patient's grants and requests, an audit trail, whether a read
//! request was already recorded, why a transaction failed. The chain-state keys and their
//! encoding stay in `state.rs`; nothing outside the contracts builds a key.

use medchain_crypto::{Hash32, Identity};
use medchain_storage::Store;
use serde::de::DeserializeOwned;

use super::state::{
    decode, keys, AuditEvent, GrantEntry, IdentityEntry, RequestEntry, RulesUpgradeEntry,
    SlipEntry, SuspensionEntry,
};
use super::ContractError;

/// At most this many entries per listing: a patient's grants, an actor's audit trail.
pub const MAX_LISTED: usize = 100_000;

/// Whose audit trail.
#[derive(Clone, Copy, Debug)]
pub enum AuditSubject<'a> {
    Record(&'a Hash32),
    Patient(&'a Identity),
    Actor(&'a Identity),
}

impl AuditSubject<'_> {
    /// The prefix of its audit keys before rules 6, and the name of its counted list from
    /// rules 6.
    pub fn trail(&self) -> Vec<u8> {
        match self {
            AuditSubject::Record(r) => keys::audit_prefix(b'r', r.as_bytes()),
            AuditSubject::Patient(p) => keys::audit_prefix(b'p', p.as_bytes()),
            AuditSubject::Actor(a) => keys::audit_prefix(b'a', a.as_bytes()),
        }
    }
}

/// Read-only questions over the committed state of one store.
#[derive(Clone, Copy, Debug)]
pub struct Queries<'a> {
    store: &'a Store,
}

fn storage(e: impl std::fmt::Display) -> ContractError {
    ContractError::Storage(e.to_string())
}

impl<'a> Queries<'a> {
    pub fn new(store: &'a Store) -> Self {
        Queries { store }
    }

    fn get<T: DeserializeOwned>(&self, key: &[u8]) -> Result<Option<T>, ContractError> {
        match self.store.chain_state(key).map_err(storage)? {
            Some(bytes) => decode(key, &bytes).map(Some),
            None => Ok(None),
        }
    }

    /// The ids under an index prefix (`prefix ‖ id`), in key order.
    fn ids_under(&self, prefix: &[u8]) -> Result<Vec<Hash32>, ContractError> {
        Ok(self
            .store
            .chain_state_prefix(prefix, MAX_LISTED)
            .map_err(storage)?
            .into_iter()
            .filter_map(|(k, _)| Hash32::from_slice(&k[prefix.len()..]).ok())
            .collect())
    }

    /// The entries an index names, skipping any the index outlived.
    fn listed<T: DeserializeOwned>(
        &self,
        prefix: &[u8],
        key: fn(&Hash32) -> Vec<u8>,
    ) -> Result<Vec<(Hash32, T)>, ContractError> {
        let mut out = Vec::new();
        for id in self.ids_under(prefix)? {
            if let Some(entry) = self.get(&key(&id))? {
                out.push((id, entry));
            }
        }
        Ok(out)
    }

    pub fn identity(&self, id: &Identity) -> Result<Option<IdentityEntry>, ContractError> {
        self.get(&keys::identity(id))
    }

    pub fn suspension(&self, id: &Identity) -> Result<Option<SuspensionEntry>, ContractError> {
        self.get(&keys::suspension(id))
    }

    pub fn slip(&self, slip: &Hash32) -> Result<Option<SlipEntry>, ContractError> {
        self.get(&keys::slip(slip))
    }

    pub fn grant(&self, grant: &Hash32) -> Result<Option<GrantEntry>, ContractError> {
        self.get(&keys::grant(grant))
    }

    /// The grants a patient gave, in grant-id order.
    pub fn grants_of_patient(
        &self,
        patient: &Identity,
    ) -> Result<Vec<(Hash32, GrantEntry)>, ContractError> {
        self.listed(&keys::grants_by_patient(patient.as_bytes()), keys::grant)
    }

    /// The grants a grantee holds.
    pub fn grants_to(
        &self,
        grantee: &Identity,
    ) -> Result<Vec<(Hash32, GrantEntry)>, ContractError> {
        self.listed(&keys::grants_by_grantee(grantee.as_bytes()), keys::grant)
    }

    /// Whether `reader` holds a grant that lets it perform `actions` on record `slip_id` now.
    pub fn holds_grant(
        &self,
        reader: &Identity,
        slip_id: &Hash32,
        slip: &SlipEntry,
        actions: u32,
        now_ms: u64,
    ) -> Result<bool, ContractError> {
        Ok(self
            .grants_to(reader)?
            .iter()
            .any(|(_, g)| g.allows(slip_id, slip, actions, now_ms)))
    }

    /// The consent requests made to a patient.
    pub fn requests_to(
        &self,
        patient: &Identity,
    ) -> Result<Vec<(Hash32, RequestEntry)>, ContractError> {
        self.listed(
            &keys::requests_by_patient(patient.as_bytes()),
            keys::request,
        )
    }

    /// The consent requests one made.
    pub fn requests_by(
        &self,
        requester: &Identity,
    ) -> Result<Vec<(Hash32, RequestEntry)>, ContractError> {
        self.listed(
            &keys::requests_by_requester(requester.as_bytes()),
            keys::request,
        )
    }

    /// The audit trail of a record, a patient or an actor, in chain order.
    pub fn audit(&self, subject: AuditSubject<'_>) -> Result<Vec<AuditEvent>, ContractError> {
        let prefix = subject.trail();
        // Events before rules 6 by height, then those of its counted list (rules 6), which
        // all come later.
        let mut events: Vec<AuditEvent> = self
            .store
            .chain_state_prefix(&prefix, MAX_LISTED)
            .map_err(storage)?
            .iter()
            .map(|(k, v)| decode(k, v))
            .collect::<Result<_, _>>()?;
        let listed = self
            .store
            .chain_state_prefix(&keys::list_items(&prefix), MAX_LISTED)
            .map_err(storage)?;
        for (k, v) in &listed {
            events.push(decode(k, v)?);
        }
        Ok(events)
    }

    /// Whether some node already recorded an access for this signed read request (its digest):
    /// a request seen on chain is a replay, even to a node that restarted since.
    /// The last rules upgrade scheduled on chain, if any (in effect or not yet).
    pub fn rules_upgrade(&self) -> Result<Option<RulesUpgradeEntry>, ContractError> {
        self.store
            .chain_state(keys::RULES_UPGRADE)
            .map_err(storage)?
            .map(|b| decode(keys::RULES_UPGRADE, &b))
            .transpose()
    }

    pub fn read_recorded(&self, request: &Hash32) -> Result<bool, ContractError> {
        let found = self
            .store
            .chain_state_prefix(&keys::access_prefix(request), 1)
            .map_err(storage)?;
        Ok(!found.is_empty())
    }

    /// Why a committed transaction was refused by a contract, if it was.
    pub fn failure(&self, tx: &Hash32) -> Result<Option<String>, ContractError> {
        Ok(self
            .store
            .chain_state(&keys::failure(tx))
            .map_err(storage)?
            .map(|r| String::from_utf8_lossy(&r).into_owned()))
    }
}
