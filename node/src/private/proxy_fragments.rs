//! This node's re-encryption fragments as a proxy: kept (opened and checked against the
//! patient's and grantee's registered keys) when a grant naming it commits, destroyed when the
//! grant is revoked or expires, opened by the record API to re-encrypt for a grantee.
//!
//! A fragment is kept as the patient sealed it, to this node's encryption key, never in clear:
//! the data folder (and every backup of it) is then useless to whoever takes it without the
//! node's key file and its password. Opening one costs a key agreement per read, far below the
//! read's own re-encryption. Releases before this one kept fragments in clear under `frag/`;
//! [`seal_legacy_fragments`] seals them at start-up.

use std::time::Duration;

use medchain_crypto::delegation::{check_fragment, DelegationVerifyingKey};
use medchain_crypto::keys::{EncryptionPublicKey, KeyMaterial};
use medchain_crypto::record::{decrypt_record, encrypt_record, EncryptedRecord};
use medchain_crypto::{Hash32, Identity};
use medchain_proto::v1;
use medchain_storage::{Store, StoreError};

use medchain_ledger::contracts::queries::Queries;
use medchain_ledger::contracts::state::{GrantEntry, Scope};

/// Node-secret prefix of fragments sealed to this node's encryption key.
const SEALED: &[u8] = b"sfrag/";
/// Node-secret prefix of fragments kept in clear by earlier releases.
const LEGACY: &[u8] = b"frag/";

/// Node-secret key of this proxy's sealed fragment of a grant.
pub fn fragment_key(grant: &Hash32) -> Vec<u8> {
    [SEALED, grant.as_bytes()].concat()
}

fn legacy_key(grant: &Hash32) -> Vec<u8> {
    [LEGACY, grant.as_bytes()].concat()
}

/// Why a fragment could not be kept or opened.
#[derive(Debug, thiserror::Error)]
pub enum FragmentError {
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

fn invalid(e: impl std::fmt::Display) -> FragmentError {
    FragmentError::Invalid(e.to_string())
}

/// A proxy keeps its fragment of a new grant: opens it with its encryption key and checks it
/// against the patient's and grantee's registered keys, then keeps the sealed bytes. Returns
/// whether this node is one of the grant's proxies.
pub fn keep_fragment(
    node_key: &KeyMaterial,
    me: u32,
    store: &Store,
    grant_id: &Hash32,
    grant: &v1::ConsentGrant,
    patient: &Identity,
) -> Result<bool, FragmentError> {
    let Some(sealed) = grant.fragments.iter().find(|f| f.proxy == me) else {
        return Ok(false);
    };
    let q = Queries::new(store);
    let owner = q
        .identity(patient)
        .map_err(invalid)?
        .ok_or_else(|| invalid("patient not registered"))?;
    let grantee_id = Identity::from_bytes(&grant.grantee).map_err(invalid)?;
    let grantee = q
        .identity(&grantee_id)
        .map_err(invalid)?
        .ok_or_else(|| invalid("grantee not registered"))?;
    let fragment = open(node_key, &sealed.sealed)?;
    let vk = DelegationVerifyingKey::from_bytes(&grant.delegation_key).map_err(invalid)?;
    let owner_key = EncryptionPublicKey::from_bytes(&owner.encryption_key).map_err(invalid)?;
    let grantee_key = EncryptionPublicKey::from_bytes(&grantee.encryption_key).map_err(invalid)?;
    check_fragment(&fragment, &vk, &owner_key, &grantee_key).map_err(invalid)?;
    store.put_node_secret(&fragment_key(grant_id), &sealed.sealed)?;
    Ok(true)
}

fn open(node_key: &KeyMaterial, sealed: &[u8]) -> Result<Vec<u8>, FragmentError> {
    let record = EncryptedRecord::from_bytes(sealed).map_err(invalid)?;
    decrypt_record(&node_key.encryption_key(), &record)
        .map_err(|e| invalid(format!("cannot open the sealed fragment: {e}")))
}

/// This proxy's fragment of `grant`, opened; `None` if it holds none.
pub fn open_fragment(
    node_key: &KeyMaterial,
    store: &Store,
    grant: &Hash32,
) -> Result<Option<Vec<u8>>, FragmentError> {
    match store.node_secret(&fragment_key(grant))? {
        Some(sealed) => open(node_key, &sealed).map(Some),
        None => Ok(None),
    }
}

/// Destroys this proxy's fragment of `grant` (sealed, and any legacy copy).
pub fn destroy_fragment(store: &Store, grant: &Hash32) -> Result<(), StoreError> {
    store.delete_node_secret(&fragment_key(grant))?;
    store.delete_node_secret(&legacy_key(grant))
}

/// Seals the fragments an earlier release kept in clear, each in one atomic write. Returns how
/// many it sealed.
pub fn seal_legacy_fragments(
    node_key: &KeyMaterial,
    store: &Store,
) -> Result<usize, FragmentError> {
    let own = node_key.encryption_key().public_key();
    let legacy = store.node_secrets(LEGACY)?;
    for (key, fragment) in &legacy {
        let grant = Hash32::from_slice(&key[LEGACY.len()..]).map_err(invalid)?;
        let sealed = encrypt_record(&own, fragment).map_err(invalid)?;
        store.move_node_secret(key, &fragment_key(&grant), &sealed.to_bytes())?;
    }
    Ok(legacy.len())
}

/// Why a kept fragment can open nothing any more, if it cannot.
fn dead(
    q: &Queries,
    grant: Option<&GrantEntry>,
    now_ms: u64,
) -> Result<Option<&'static str>, FragmentError> {
    let Some(g) = grant else {
        // Only a damaged store keeps a fragment of a grant its chain does not know.
        return Ok(Some("its grant is unknown to this chain"));
    };
    if g.revoked_height.is_some() {
        return Ok(Some("its grant was revoked"));
    }
    if g.expires_ms <= now_ms {
        return Ok(Some("its grant expired"));
    }
    if let Scope::Record(slip) = &g.scope {
        let deleted = q
            .slip(&Hash32(*slip))
            .map_err(invalid)?
            .is_none_or(|s| s.deleted_height.is_some());
        if deleted {
            // Erasure destroys what opens the record, not only its ciphertext.
            return Ok(Some("the one record its grant covers was deleted"));
        }
    }
    Ok(None)
}

/// Destroys the fragments that can open nothing any more: their grant expired by `now_ms`,
/// was revoked, or covers one record and that record was deleted. Returns how many it
/// destroyed.
pub fn destroy_expired(store: &Store, now_ms: u64) -> Result<usize, FragmentError> {
    let q = Queries::new(store);
    let mut destroyed = 0;
    for (key, _) in store.node_secrets(SEALED)? {
        let grant_id = Hash32::from_slice(&key[SEALED.len()..]).map_err(invalid)?;
        let grant = q.grant(&grant_id).map_err(invalid)?;
        if let Some(why) = dead(&q, grant.as_ref(), now_ms)? {
            destroy_fragment(store, &grant_id)?;
            tracing::info!(grant = %grant_id, "destroyed this proxy's fragment: {why}");
            destroyed += 1;
        }
    }
    Ok(destroyed)
}

/// How often expired grants' fragments are looked for: a grant past its time is refused by
/// every read, so its fragment outliving it by a minute opens nothing.
const EXPIRY_EVERY: Duration = Duration::from_secs(60);

/// Runs [`destroy_expired`] every minute (and so within a minute of a deletion), on a blocking thread, until the runtime stops.
pub fn spawn_expiry(store: std::sync::Arc<Store>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(EXPIRY_EVERY);
        loop {
            tick.tick().await;
            let store = store.clone();
            let done = tokio::task::spawn_blocking(move || {
                destroy_expired(&store, crate::clock::now_ms())
            })
            .await;
            match done {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "could not destroy expired fragments; trying again in a minute")
                }
                Err(_) => return,
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A legacy clear fragment is sealed to the node's key: the store no longer holds it in
    /// clear, and opening gives it back; destroying removes it.
    #[test]
    fn legacy_fragments_are_sealed_and_open_again() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let node = KeyMaterial::from_seed(&[7; 32]).unwrap();
        let grant = Hash32::from_slice(&[3; 32]).unwrap();
        let fragment = b"a capsule fragment's bytes".to_vec();
        store
            .put_node_secret(&legacy_key(&grant), &fragment)
            .unwrap();
        assert_eq!(seal_legacy_fragments(&node, &store).unwrap(), 1);
        assert_eq!(store.node_secret(&legacy_key(&grant)).unwrap(), None);
        let sealed = store.node_secret(&fragment_key(&grant)).unwrap().unwrap();
        assert!(
            !sealed.windows(fragment.len()).any(|w| w == fragment),
            "the fragment is still in clear"
        );
        assert_eq!(
            open_fragment(&node, &store, &grant).unwrap(),
            Some(fragment)
        );
        let other = KeyMaterial::from_seed(&[8; 32]).unwrap();
        assert!(open_fragment(&other, &store, &grant).is_err());
        assert_eq!(seal_legacy_fragments(&node, &store).unwrap(), 0);
        // No grant on this chain names it: an expiry pass destroys it.
        assert_eq!(destroy_expired(&store, 0).unwrap(), 1);
        assert_eq!(open_fragment(&node, &store, &grant).unwrap(), None);
    }

    /// A fragment lives until its grant's time and no longer.
    #[test]
    fn a_fragment_is_destroyed_when_its_grant_expires() {
        use medchain_ledger::contracts::state::{encode, keys, GrantEntry, Scope};
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let grant = Hash32::from_slice(&[4; 32]).unwrap();
        let entry = GrantEntry {
            patient: vec![1],
            grantee: vec![2],
            scope: Scope::All,
            actions: 1,
            expires_ms: 100,
            threshold: 1,
            delegation_key: vec![],
            proxies: vec![0],
            request: None,
            height: 1,
            revoked_height: None,
        };
        let validators: Vec<_> = (1..=4u8)
            .map(|i| medchain_crypto::SigningKey::from_bytes(&[i; 32]).unwrap())
            .collect();
        let block =
            medchain_proto::ledger::make_block(&validators, "h", 1, Hash32::ZERO, 1, vec![]);
        store
            .commit_block(
                &block,
                &[(keys::grant(&grant), Some(encode(&entry)))],
                &[],
                &[],
            )
            .unwrap();
        store
            .put_node_secret(&fragment_key(&grant), b"sealed")
            .unwrap();
        assert_eq!(destroy_expired(&store, 99).unwrap(), 0);
        assert!(store.node_secret(&fragment_key(&grant)).unwrap().is_some());
        assert_eq!(destroy_expired(&store, 100).unwrap(), 1);
        assert_eq!(store.node_secret(&fragment_key(&grant)).unwrap(), None);
    }
}
