//! Who may see what through the API (minimum necessary). One place, so that every endpoint
//! answers the same question the same way:
//!
//! - a patient: her own identity, records, consents and audit trail;
//! - a doctor: the records she wrote and those a live grant lets her read, the identities of
//!   patients (she needs a patient's encryption key to write for her) and of other doctors;
//! - a grantee or requester: her own grants and requests;
//! - an authority: everything its registry and supervision duties need (all of it, on its
//!   own chain);
//! - a validator: block bodies and transactions (it holds every block anyway);
//! - anyone, without authenticating: status, readiness, metrics, the chain's description, block
//!   headers with their commit certificates, and transaction ids in blocks.
//!
//! What a caller may not see is answered as if it did not exist (404 or an entry left out of a
//! listing), so that a refusal does not confirm that someone is a patient.

use medchain_crypto::{Hash32, Identity};
use medchain_ledger::contracts::state::{
    AuditEvent, GrantEntry, IdentityEntry, RequestEntry, SlipEntry,
};
use medchain_proto::v1;

use crate::api::auth::{Caller, CallerKind};
use crate::api::{internal, queries, ApiError};
use crate::private::{now_ms, NodeHandle};

impl Caller {
    fn is(&self, id: &[u8]) -> bool {
        self.id.as_bytes()[..] == *id
    }

    /// An authority in good standing: the registry and supervision.
    fn supervises(&self) -> bool {
        self.kind == CallerKind::Authority && !self.suspended
    }

    /// Acting through its role or its grants (which a suspension stops).
    fn acts_as(&self, kind: CallerKind) -> bool {
        self.kind == kind && !self.suspended
    }

    /// Whole blocks (every transaction's bytes): validators and authorities.
    pub fn sees_block_bodies(&self) -> bool {
        self.supervises() || self.acts_as(CallerKind::Validator)
    }

    /// Uploading a record (her own slip, which the upload checks): a doctor in good standing.
    pub fn may_upload(&self) -> bool {
        self.acts_as(CallerKind::Doctor)
    }

    /// A committed transaction signed by `signer`, with its bytes and its outcome.
    pub fn may_see_transaction(&self, signer: &Identity) -> bool {
        self.id == *signer || self.sees_block_bodies()
    }

    /// Whether an absence of any identity's registration may be proved to this caller: one who
    /// would see a registered identity whatever its role, bar authorities (which the genesis
    /// file names anyway), so the proof tells it nothing it could not ask.
    pub fn may_learn_absence(&self) -> bool {
        self.supervises() || (!self.suspended && self.kind == CallerKind::Doctor)
    }

    /// The registry entry of `target`.
    pub fn may_see_identity(&self, target: &Identity, entry: &IdentityEntry) -> bool {
        if self.id == *target || self.supervises() {
            return true;
        }
        if self.suspended {
            return false;
        }
        match v1::Role::try_from(entry.role) {
            // Care staff and data users are known to everyone who deals with the chain: a
            // patient needs a grantee's keys to grant her access.
            Ok(v1::Role::Doctor | v1::Role::Insurer | v1::Role::Researcher) => true,
            // A doctor needs a patient's keys to write a record for her.
            Ok(v1::Role::Patient) => self.kind == CallerKind::Doctor,
            _ => false,
        }
    }

    /// Record `slip_id`: its slip and state.
    pub fn may_see_record(
        &self,
        node: &NodeHandle,
        slip_id: &Hash32,
        slip: &SlipEntry,
    ) -> Result<bool, ApiError> {
        if self.is(&slip.patient) || self.supervises() {
            return Ok(true);
        }
        if self.suspended {
            return Ok(false);
        }
        if self.kind == CallerKind::Doctor && self.is(&slip.doctor) {
            return Ok(true);
        }
        queries(node)
            .holds_grant(
                &self.id,
                slip_id,
                slip,
                v1::ConsentAction::Read as u32,
                now_ms(),
            )
            .map_err(internal)
    }

    pub fn may_see_grant(&self, g: &GrantEntry) -> bool {
        self.is(&g.patient) || self.is(&g.grantee) || self.supervises()
    }

    pub fn may_see_request(&self, r: &RequestEntry) -> bool {
        self.is(&r.patient) || self.is(&r.requester) || self.supervises()
    }

    /// The patient named by an audit line: hidden from the actor of a refused read (a reader
    /// without access must not learn whose record she asked for).
    pub fn may_see_patient_of(&self, e: &AuditEvent) -> bool {
        e.op != "read-refused"
            || self.supervises()
            || e.patient.as_deref().is_some_and(|p| self.is(p))
    }

    /// One line of an audit trail: what the caller did, what was done about her, or all of it
    /// for an authority.
    pub fn may_see_audit_event(&self, e: &AuditEvent) -> bool {
        self.is(&e.actor) || e.patient.as_deref().is_some_and(|p| self.is(p)) || self.supervises()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use medchain_crypto::keys::KeyMaterial;

    fn id(seed: u8) -> Identity {
        KeyMaterial::from_seed(&[seed; 32])
            .unwrap()
            .signing_key()
            .identity()
    }

    fn caller(seed: u8, kind: CallerKind, suspended: bool) -> Caller {
        Caller {
            id: id(seed),
            kind,
            suspended,
        }
    }

    fn entry(role: v1::Role) -> IdentityEntry {
        IdentityEntry {
            role: role as i32,
            name: String::new(),
            encryption_key: vec![],
            search_key: vec![],
            height: 1,
            registered_by: vec![],
        }
    }

    #[test]
    fn patients_are_visible_to_themselves_doctors_and_authorities_only() {
        let alice = id(1);
        let patient = entry(v1::Role::Patient);
        assert!(caller(1, CallerKind::Patient, false).may_see_identity(&alice, &patient));
        assert!(caller(2, CallerKind::Doctor, false).may_see_identity(&alice, &patient));
        assert!(caller(3, CallerKind::Authority, false).may_see_identity(&alice, &patient));
        assert!(!caller(4, CallerKind::Patient, false).may_see_identity(&alice, &patient));
        assert!(!caller(5, CallerKind::Validator, false).may_see_identity(&alice, &patient));
        assert!(!caller(2, CallerKind::Doctor, true).may_see_identity(&alice, &patient));
        // A suspended patient still sees herself.
        assert!(caller(1, CallerKind::Patient, true).may_see_identity(&alice, &patient));
    }

    #[test]
    fn doctors_are_visible_to_every_registered_caller() {
        let bob = id(2);
        let doctor = entry(v1::Role::Doctor);
        assert!(caller(4, CallerKind::Patient, false).may_see_identity(&bob, &doctor));
        assert!(caller(5, CallerKind::Other, false).may_see_identity(&bob, &doctor));
        for role in [v1::Role::Insurer, v1::Role::Researcher] {
            assert!(caller(4, CallerKind::Patient, false).may_see_identity(&bob, &entry(role)));
        }
    }

    #[test]
    fn audit_lines_go_to_their_actor_their_patient_and_authorities() {
        let e = AuditEvent {
            op: "read".into(),
            height: 1,
            index: 0,
            time_ms: 0,
            actor: id(2).as_bytes().to_vec(),
            patient: Some(id(1).as_bytes().to_vec()),
            record: None,
            detail: String::new(),
            transaction: [0; 32],
        };
        assert!(caller(1, CallerKind::Patient, false).may_see_audit_event(&e));
        assert!(caller(2, CallerKind::Doctor, false).may_see_audit_event(&e));
        assert!(caller(3, CallerKind::Authority, false).may_see_audit_event(&e));
        assert!(!caller(3, CallerKind::Authority, true).may_see_audit_event(&e));
        assert!(!caller(4, CallerKind::Doctor, false).may_see_audit_event(&e));
        assert!(!caller(5, CallerKind::Validator, false).may_see_audit_event(&e));
    }

    #[test]
    fn block_bodies_and_others_transactions_are_for_validators_and_authorities() {
        let signer = id(1);
        assert!(caller(1, CallerKind::Patient, false).may_see_transaction(&signer));
        assert!(caller(5, CallerKind::Validator, false).may_see_transaction(&signer));
        assert!(caller(3, CallerKind::Authority, false).may_see_transaction(&signer));
        assert!(!caller(2, CallerKind::Doctor, false).may_see_transaction(&signer));
        assert!(!caller(2, CallerKind::Doctor, false).sees_block_bodies());
    }
}
