//! What a validator does as a proxy when a block commits: keep or destroy its re-encryption
//! fragments, and reset the access counts of reinstated identities.

use std::sync::{Arc, Mutex};

use medchain_crypto::keys::KeyMaterial;
use medchain_storage::Store;

use super::access_guard::AccessGuard;
use super::proxy_fragments::{destroy_expired, destroy_fragment, keep_fragment};
use crate::driver::{Committed, DriverError, Follower};
use medchain_ledger::contracts::SideEffects;

/// Checks and keeps this proxy's sealed fragment of each new grant; destroys it on revocation
/// (expiry is [`super::proxy_fragments::spawn_expiry`]'s).
pub struct FragmentKeeper {
    pub node_key: Arc<KeyMaterial>,
    pub me: u32,
    pub store: Arc<Store>,
}

impl std::fmt::Debug for FragmentKeeper {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "FragmentKeeper(proxy {})", self.me)
    }
}

impl Follower<SideEffects> for FragmentKeeper {
    fn on_commit(&mut self, block: &Committed<SideEffects>) -> Result<(), DriverError> {
        for (grant_id, grant, patient) in &block.effects.new_grants {
            match keep_fragment(
                &self.node_key,
                self.me,
                &self.store,
                grant_id,
                grant,
                patient,
            ) {
                Ok(true) => {
                    tracing::info!(grant = %grant_id, "kept this proxy's re-encryption fragment")
                }
                Ok(false) => {}
                Err(e) => {
                    tracing::warn!(grant = %grant_id, error = %e, "could not keep this proxy's fragment; reads under this grant must use another proxy")
                }
            }
        }
        for grant_id in &block.effects.revoked_grants {
            destroy_fragment(&self.store, grant_id)
                .map_err(|e| DriverError::Storage(format!("destroying a fragment: {e}")))?;
            tracing::info!(grant = %grant_id, "destroyed this proxy's fragment of a revoked grant");
        }
        if !block.effects.erased_blobs.is_empty() {
            // A deletion also makes dead the fragments of grants covering only that record.
            destroy_expired(&self.store, block.timestamp_ms).map_err(|e| {
                DriverError::Storage(format!("destroying a deleted record's fragments: {e}"))
            })?;
        }
        Ok(())
    }
}

/// Resets the abnormal-access counts of identities an authority reinstated.
#[derive(Debug)]
pub struct Reinstatements {
    pub access: Arc<Mutex<AccessGuard>>,
}

impl Follower<SideEffects> for Reinstatements {
    fn on_commit(&mut self, block: &Committed<SideEffects>) -> Result<(), DriverError> {
        let mut guard = self.access.lock().unwrap_or_else(|p| p.into_inner());
        for id in &block.effects.reinstated {
            guard.reinstated(id);
        }
        Ok(())
    }
}
