//! This node's re-encryption fragments as a proxy: kept (opened and checked against the
//! patient's and grantee's registered keys) when a grant naming it commits, destroyed when the
//! grant is revoked, read by the record API to re-encrypt for a grantee.

use medchain_crypto::delegation::{check_fragment, DelegationVerifyingKey};
use medchain_crypto::keys::EncryptionPublicKey;
use medchain_crypto::record::{decrypt_record, EncryptedRecord};
use medchain_crypto::{Hash32, Identity};
use medchain_proto::v1;

use medchain_ledger::contracts::queries::Queries;

/// Node-secret key of this proxy's fragment of a grant.
pub fn fragment_key(grant: &Hash32) -> Vec<u8> {
    [b"frag/".as_slice(), grant.as_bytes()].concat()
}

/// A proxy keeps its fragment of a new grant: opens it with its encryption key and checks it
/// against the patient's and grantee's registered keys. Returns why it did not, if it did not.
pub fn keep_fragment(
    node_key: &medchain_crypto::keys::KeyMaterial,
    me: u32,
    store: &medchain_storage::Store,
    grant_id: &Hash32,
    grant: &v1::ConsentGrant,
    patient: &Identity,
) -> Result<bool, String> {
    let Some(sealed) = grant.fragments.iter().find(|f| f.proxy == me) else {
        return Ok(false);
    };
    let q = Queries::new(store);
    let owner = q
        .identity(patient)
        .map_err(|e| e.to_string())?
        .ok_or("patient not registered")?;
    let grantee_id = Identity::from_bytes(&grant.grantee).map_err(|e| e.to_string())?;
    let grantee = q
        .identity(&grantee_id)
        .map_err(|e| e.to_string())?
        .ok_or("grantee not registered")?;
    let record = EncryptedRecord::from_bytes(&sealed.sealed).map_err(|e| e.to_string())?;
    let fragment = decrypt_record(&node_key.encryption_key(), &record)
        .map_err(|e| format!("cannot open the sealed fragment: {e}"))?;
    let vk =
        DelegationVerifyingKey::from_bytes(&grant.delegation_key).map_err(|e| e.to_string())?;
    let owner_key =
        EncryptionPublicKey::from_bytes(&owner.encryption_key).map_err(|e| e.to_string())?;
    let grantee_key =
        EncryptionPublicKey::from_bytes(&grantee.encryption_key).map_err(|e| e.to_string())?;
    check_fragment(&fragment, &vk, &owner_key, &grantee_key).map_err(|e| e.to_string())?;
    store
        .put_node_secret(&fragment_key(grant_id), &fragment)
        .map_err(|e| e.to_string())?;
    Ok(true)
}
