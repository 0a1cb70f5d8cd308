//! Native contracts of a hospital chain: identities, health records, consent and the audit trail
//! (DESIGN.md sections 2-4, MBDS Algorithms 1-2).
//!
//! Every committed transaction is executed here in block order on every node, against the chain
//! state as the previous transactions left it, so all nodes reach the same state. A transaction a
//! rule refuses still occupies its place in the block (its certificate covers it) and uses its
//! nonce, but changes nothing except the record of why it failed. The same rules run at admission
//! against the committed state, so a client hears "not registered" or "grant expired" when it
//! submits instead of after the next block.
//!
//! Who may do what:
//! - an authority listed in genesis registers patients and doctors, deletes records, suspends and
//!   reinstates identities;
//! - a registered doctor writes records for registered patients (and corrections of them);
//! - the patient confirms a record written for them, deletes it, grants, denies and revokes;
//! - any registered participant requests access to a patient's records;
//! - a validator records every read it served or refused, and may suspend an identity whose reads
//!   look abnormal.

mod access;
mod consent;
pub mod queries;
pub mod rules;
pub mod state;

use access::{access_record, rules_upgrade};
pub use consent::find_grant;

use medchain_crypto::hash::domains;
use medchain_crypto::{Hash32, Identity, Signature};
use medchain_proto::records::role_name;
use medchain_proto::v1::{self, transaction_body::Payload};

use state::*;

/// Why a contract refused a transaction. Each message names the problem and what to do.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum ContractError {
    #[error("{0}")]
    Refused(String),
    #[error("storage error: {0}")]
    Storage(String),
}

fn refuse<T>(m: impl Into<String>) -> Result<T, ContractError> {
    Err(ContractError::Refused(m.into()))
}

/// Where and when a transaction executes, and who holds authority on this chain.
#[derive(Clone, Copy, Debug)]
pub struct ExecContext<'a> {
    pub height: u64,
    pub index: u32,
    /// The block's timestamp (Unix ms): the time of every operation in it.
    pub time_ms: u64,
    pub authorities: &'a [Identity],
    pub validators: &'a [Identity],
    /// The chain's contract rules ([`rules`]): genesis `params.rules`.
    pub rules: u32,
}

impl ExecContext<'_> {
    /// Whether the rules of version 2 apply ([`rules::V2`]).
    fn v2(&self) -> bool {
        self.rules >= rules::V2
    }
    fn is_authority(&self, id: &Identity) -> bool {
        self.authorities.contains(id)
    }
    fn validator_index(&self, id: &Identity) -> Option<usize> {
        self.validators.iter().position(|v| v == id)
    }
}

/// What a node does after the block is written, beyond the chain state.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SideEffects {
    /// New records whose ciphertext every store must hold.
    pub new_blobs: Vec<Hash32>,
    /// Deleted records whose ciphertext every store erases.
    pub erased_blobs: Vec<Hash32>,
    /// New grants (grant id, the grant, its patient): a proxy opens and keeps its fragment.
    pub new_grants: Vec<(Hash32, v1::ConsentGrant, Identity)>,
    /// Revoked grants: a proxy destroys its fragment.
    pub revoked_grants: Vec<Hash32>,
    /// Identities an authority reinstated: a proxy resets their access counts.
    pub reinstated: Vec<Identity>,
}

impl SideEffects {
    pub fn extend(&mut self, other: SideEffects) {
        self.new_blobs.extend(other.new_blobs);
        self.erased_blobs.extend(other.erased_blobs);
        self.new_grants.extend(other.new_grants);
        self.revoked_grants.extend(other.revoked_grants);
        self.reinstated.extend(other.reinstated);
    }
}

fn role_of(entry: &IdentityEntry) -> v1::Role {
    medchain_proto::records::role_of(entry.role)
}

fn ident(bytes: &[u8]) -> Result<Identity, ContractError> {
    Identity::from_bytes(bytes).map_err(|e| ContractError::Refused(e.to_string()))
}

fn hash32(bytes: &[u8]) -> Result<Hash32, ContractError> {
    Hash32::from_slice(bytes).map_err(|e| ContractError::Refused(e.to_string()))
}

/// The registered participant `id`, or a refusal naming what is missing.
pub fn registered(
    ov: &Overlay,
    id: &Identity,
    what: &str,
    role: Option<v1::Role>,
) -> Result<IdentityEntry, ContractError> {
    let Some(entry) = ov.get::<IdentityEntry>(&keys::identity(id))? else {
        return refuse(format!(
            "{what} {id} is not registered on this chain; an authority registers it with `medchain identity register`"
        ));
    };
    if let Some(role) = role {
        if role_of(&entry) != role {
            return refuse(format!(
                "{what} {id} is registered as a {}, not a {}",
                role_name(role_of(&entry)),
                role_name(role)
            ));
        }
    }
    Ok(entry)
}

/// Refuses a suspended identity.
pub fn not_suspended(ov: &Overlay, id: &Identity) -> Result<(), ContractError> {
    if let Some(s) = ov.get::<SuspensionEntry>(&keys::suspension(id))? {
        return refuse(format!(
            "{id} is suspended since height {} ({}); an authority lifts it with `medchain identity reinstate`",
            s.height, s.reason
        ));
    }
    Ok(())
}

/// A record by slip ID, or a refusal.
pub fn slip_entry(ov: &Overlay, slip: &Hash32) -> Result<SlipEntry, ContractError> {
    match ov.get::<SlipEntry>(&keys::slip(slip))? {
        Some(s) => Ok(s),
        None => refuse(format!("record {slip} does not exist on this chain")),
    }
}

fn scope_of(scope: Option<&v1::ConsentScope>) -> Result<Scope, ContractError> {
    use v1::consent_scope::Scope as S;
    Ok(match scope.and_then(|s| s.scope.as_ref()) {
        Some(S::Record(slip)) => Scope::Record(hash32(slip)?.0),
        Some(S::RecordType(t)) => Scope::RecordType(t.clone()),
        Some(S::All(_)) => Scope::All,
        None => return refuse("a consent scope is required"),
    })
}

struct Audit<'a, 'b> {
    ov: &'a mut Overlay<'b>,
    ctx: &'a ExecContext<'a>,
    tx: Hash32,
    n: u8,
}

impl Audit<'_, '_> {
    /// Appends one provenance event, indexed by actor, patient and record: under rules 6 as
    /// the next entry of each subject's counted list (so its whole trail can be proved, none
    /// left out), before as keys by height.
    fn event(
        &mut self,
        op: &str,
        actor: &Identity,
        patient: Option<&[u8]>,
        record: Option<&Hash32>,
        detail: String,
    ) -> Result<(), ContractError> {
        let ev = AuditEvent {
            op: op.into(),
            height: self.ctx.height,
            index: self.ctx.index,
            time_ms: self.ctx.time_ms,
            actor: actor.as_bytes().to_vec(),
            patient: patient.map(|p| p.to_vec()),
            record: record.map(|r| r.0),
            detail,
            transaction: self.tx.0,
        };
        let bytes = encode(&ev);
        self.n += 1;
        if self.ctx.rules >= rules::V6 {
            self.ov
                .list_push(&keys::audit_prefix(b'a', actor.as_bytes()), bytes.clone())?;
            if let Some(p) = patient {
                self.ov
                    .list_push(&keys::audit_prefix(b'p', p), bytes.clone())?;
            }
            if let Some(r) = record {
                self.ov
                    .list_push(&keys::audit_prefix(b'r', r.as_bytes()), bytes)?;
            }
            return Ok(());
        }
        let (h, i, n) = (self.ctx.height, self.ctx.index, self.n - 1);
        self.ov
            .put_raw(keys::audit(b'a', actor.as_bytes(), h, i, n), bytes.clone());
        if let Some(p) = patient {
            self.ov
                .put_raw(keys::audit(b'p', p, h, i, n), bytes.clone());
        }
        if let Some(r) = record {
            self.ov
                .put_raw(keys::audit(b'r', r.as_bytes(), h, i, n), bytes);
        }
        Ok(())
    }
}

/// Under rules 2, refuses a suspended `signer` (rules 1 let it confirm, delete, deny and revoke).
fn frozen_v2(ov: &Overlay, ctx: &ExecContext, signer: &Identity) -> Result<(), ContractError> {
    if ctx.v2() {
        not_suspended(ov, signer)?;
    }
    Ok(())
}

/// Under rules 2, whether `doctor` may correct record `old_id`: she wrote it, or the patient
/// gave her a live write grant that covers it.
fn may_correct(
    ov: &Overlay,
    ctx: &ExecContext,
    doctor: &Identity,
    old_id: &Hash32,
    old: &SlipEntry,
) -> Result<(), ContractError> {
    if !ctx.v2() || old.doctor == doctor.as_bytes() {
        return Ok(());
    }
    let write = v1::ConsentAction::Write;
    if find_grant(ov, doctor, old_id, old, write, ctx.time_ms, ov.store())?.is_some() {
        return Ok(());
    }
    refuse(format!(
        "record {old_id} was written by another doctor; only its author corrects it, or a doctor the patient granted write access to it (`medchain consent grant --actions write`)"
    ))
}

/// Executes one transaction's payload. `signed_ms` is the transaction's own timestamp. On `Err`
/// the caller drops the transaction's writes.
/// A validator's suspension under rules 2 is a report: one validator alone could be Byzantine
/// and suspend anyone, so an identity is suspended once [`rules::reports_needed`] distinct
/// validators reported it within [`rules::REPORT_WINDOW_MS`] (an authority suspends at once).
/// Returns the suspension's reason when this report completes the count, `None` while it
/// waits for more; each report is on the audit trail either way.
fn reported(
    audit: &mut Audit<'_, '_>,
    ctx: &ExecContext,
    signer: &Identity,
    id: &Identity,
    reason: &str,
) -> Result<Option<String>, ContractError> {
    let key = keys::reports(id);
    let mut reports: Vec<Report> = audit.ov.get(&key)?.unwrap_or_default();
    reports.retain(|r| r.at_ms.saturating_add(rules::REPORT_WINDOW_MS) > ctx.time_ms);
    if reports.iter().any(|r| r.by == signer.as_bytes()) {
        return refuse(format!(
            "{signer} already reported {id}; another validator's report is needed to suspend it"
        ));
    }
    reports.push(Report {
        by: signer.as_bytes().to_vec(),
        reason: reason.to_string(),
        at_ms: ctx.time_ms,
        height: ctx.height,
    });
    let needed = rules::reports_needed(ctx.validators.len());
    let count = format!("{} of the {needed} reports that suspend", reports.len());
    audit.event(
        "report",
        signer,
        None,
        None,
        format!("{id}: {reason} ({count})"),
    )?;
    audit.event(
        "report",
        id,
        None,
        None,
        format!("by {signer}: {reason} ({count})"),
    )?;
    if reports.len() < needed {
        audit.ov.put(key, &reports);
        return Ok(None);
    }
    audit.ov.delete(key);
    let reasons: Vec<&str> = reports.iter().map(|r| r.reason.as_str()).collect();
    Ok(Some(format!(
        "reported by {needed} validators: {}",
        reasons.join("; ")
    )))
}

pub fn execute(
    ov: &mut Overlay,
    ctx: &ExecContext,
    signer: &Identity,
    tx_id: Hash32,
    signed_ms: u64,
    payload: &Payload,
) -> Result<SideEffects, ContractError> {
    if ctx.v2() {
        if let Some(why) = rules::outside_window(signed_ms, ctx.time_ms) {
            return refuse(why);
        }
    }
    let mut fx = SideEffects::default();
    let mut audit = Audit {
        ov,
        ctx,
        tx: tx_id,
        n: 0,
    };
    match payload {
        Payload::IdentityRegistration(r) => {
            if !ctx.is_authority(signer) {
                return refuse(format!(
                    "{signer} is not an authority of this chain (genesis `authorities`); only an authority registers participants"
                ));
            }
            // The form check at admission and in proposals keeps such a registration out of
            // blocks; checked here too, by the rules of this block's height.
            rules::registration_form(ctx.rules, r).map_err(ContractError::Refused)?;
            let id = ident(&r.identity)?;
            if ctx.is_authority(&id) || ctx.validator_index(&id).is_some() {
                return refuse(format!(
                    "{id} is an authority or validator of this chain; participants use their own identity"
                ));
            }
            if let Some(existing) = audit.ov.get::<IdentityEntry>(&keys::identity(&id))? {
                return refuse(format!(
                    "{id} is already registered (as {} {:?} at height {}); one identity per participant",
                    role_name(role_of(&existing)),
                    existing.name,
                    existing.height
                ));
            }
            let role = medchain_proto::records::role_of(r.role);
            if ctx.v2() && role == v1::Role::Unspecified {
                return refuse(format!(
                    "role {} is not a role of this chain; register as a patient, doctor, insurer or researcher",
                    r.role
                ));
            }
            audit.ov.put(
                keys::identity(&id),
                &IdentityEntry {
                    role: r.role,
                    name: r.name.clone(),
                    encryption_key: r.encryption_key.clone(),
                    search_key: r.search_key.clone(),
                    height: ctx.height,
                    registered_by: signer.as_bytes().to_vec(),
                },
            );
            let patient = (role == v1::Role::Patient).then(|| id.as_bytes().to_vec());
            audit.event(
                "register",
                signer,
                patient.as_deref(),
                None,
                if r.name.is_empty() {
                    format!("{} {id}", role_name(role))
                } else {
                    format!("{} {id} ({})", role_name(role), r.name)
                },
            )?;
        }
        Payload::PrivateSlip(slip) => {
            let content = slip
                .content
                .as_ref()
                .ok_or_else(|| ContractError::Refused("a slip needs its content".into()))?;
            let doctor = ident(&content.doctor)?;
            let patient = ident(&content.patient)?;
            if doctor != *signer {
                return refuse(format!(
                    "the slip names doctor {doctor} but {signer} signed the transaction; the writing doctor signs"
                ));
            }
            registered(audit.ov, &doctor, "doctor", Some(v1::Role::Doctor))?;
            not_suspended(audit.ov, &doctor)?;
            registered(audit.ov, &patient, "patient", Some(v1::Role::Patient))?;
            if !slip.patient_signature.is_empty() {
                return refuse(
                    "a new record carries no patient signature; the patient confirms it with `medchain record confirm`",
                );
            }
            if ctx.v2() && !content.summary.is_empty() {
                return refuse(
                    "a slip carries no summary in clear: every validator reads the chain, and a summary tells it about the patient's health; the record type and the record itself say what it is",
                );
            }
            let slip_id = hash32(&slip.slip_id)?;
            if audit.ov.contains(&keys::slip(&slip_id))? {
                return refuse(format!("record {slip_id} already exists"));
            }
            let replaces = if content.replaces.is_empty() {
                None
            } else {
                let old_id = hash32(&content.replaces)?;
                let mut old = slip_entry(audit.ov, &old_id)?;
                if old.patient != content.patient {
                    return refuse(format!(
                        "record {old_id} belongs to another patient; a correction is for the same patient"
                    ));
                }
                if old.deleted_height.is_some() {
                    return refuse(format!(
                        "record {old_id} was deleted; it cannot be corrected"
                    ));
                }
                if let Some(newer) = old.replaced_by {
                    return refuse(format!(
                        "record {old_id} was already corrected by {}; correct the newest version",
                        hex::encode(newer)
                    ));
                }
                may_correct(audit.ov, ctx, signer, &old_id, &old)?;
                old.replaced_by = Some(slip_id.0);
                audit.ov.put(keys::slip(&old_id), &old);
                Some(old_id)
            };
            let ciphertext_hash = hash32(&content.ciphertext_hash)?;
            if ctx.v2() {
                if let Some(owner) = audit.ov.get_raw(&keys::ciphertext(&ciphertext_hash))? {
                    return refuse(format!(
                        "ciphertext {ciphertext_hash} already belongs to record {}; each record has its own ciphertext (erasing one must not erase another), so encrypt this one afresh",
                        hex::encode(owner)
                    ));
                }
                audit.ov.put_raw(
                    keys::ciphertext(&ciphertext_hash),
                    slip_id.as_bytes().to_vec(),
                );
            }
            audit.ov.put(
                keys::slip(&slip_id),
                &SlipEntry {
                    patient: content.patient.clone(),
                    doctor: content.doctor.clone(),
                    record_type: content.record_type.clone(),
                    ciphertext_hash: ciphertext_hash.0,
                    height: ctx.height,
                    confirmed_height: None,
                    deleted_height: None,
                    replaces: replaces.map(|h| h.0),
                    replaced_by: None,
                },
            );
            fx.new_blobs.push(ciphertext_hash);
            let (op, detail) = match replaces {
                Some(old) => (
                    "update",
                    format!("{} correcting {old}", content.record_type),
                ),
                None => ("upload", content.record_type.clone()),
            };
            audit.event(
                op,
                signer,
                Some(&content.patient),
                Some(&slip_id),
                detail.clone(),
            )?;
            if let Some(old) = replaces {
                audit.event(
                    "update",
                    signer,
                    Some(&content.patient),
                    Some(&old),
                    format!("corrected by {slip_id}"),
                )?;
            }
        }
        Payload::PatientConfirmation(c) => {
            let slip_id = hash32(&c.slip_id)?;
            let mut slip = slip_entry(audit.ov, &slip_id)?;
            if slip.patient != signer.as_bytes() {
                return refuse(format!(
                    "record {slip_id} belongs to another patient; only its patient confirms it"
                ));
            }
            frozen_v2(audit.ov, ctx, signer)?;
            if slip.deleted_height.is_some() {
                return refuse(format!("record {slip_id} was deleted"));
            }
            if let Some(h) = slip.confirmed_height {
                return refuse(format!(
                    "record {slip_id} was already confirmed at height {h}"
                ));
            }
            let sig = Signature::from_slice(&c.patient_signature)
                .map_err(|e| ContractError::Refused(e.to_string()))?;
            signer
                .verify(domains::PATIENT_CONFIRMATION, slip_id.as_bytes(), &sig)
                .map_err(|_| {
                    ContractError::Refused(
                        "the confirmation signature does not verify over the slip ID".into(),
                    )
                })?;
            slip.confirmed_height = Some(ctx.height);
            audit.ov.put(keys::slip(&slip_id), &slip);
            audit.event(
                "confirm",
                signer,
                Some(&slip.patient),
                Some(&slip_id),
                String::new(),
            )?;
        }
        Payload::RecordDeletion(d) => {
            let slip_id = hash32(&d.slip_id)?;
            let mut slip = slip_entry(audit.ov, &slip_id)?;
            if slip.patient != signer.as_bytes() && !ctx.is_authority(signer) {
                return refuse(format!(
                    "only the patient of record {slip_id} or an authority deletes it"
                ));
            }
            if !ctx.is_authority(signer) {
                frozen_v2(audit.ov, ctx, signer)?;
            }
            if let Some(h) = slip.deleted_height {
                return refuse(format!(
                    "record {slip_id} was already deleted at height {h}"
                ));
            }
            slip.deleted_height = Some(ctx.height);
            audit.ov.put(keys::slip(&slip_id), &slip);
            fx.erased_blobs.push(Hash32(slip.ciphertext_hash));
            audit.event(
                "delete",
                signer,
                Some(&slip.patient),
                Some(&slip_id),
                d.reason.clone(),
            )?;
        }
        Payload::ConsentGrant(g) => {
            consent::consent_grant(&mut audit, ctx, signer, tx_id, &mut fx, g)?
        }
        Payload::ConsentRequest(r) => consent::consent_request(&mut audit, ctx, signer, tx_id, r)?,
        Payload::ConsentDenial(d) => consent::consent_denial(&mut audit, ctx, signer, d)?,
        Payload::ConsentRevocation(r) => {
            consent::consent_revocation(&mut audit, ctx, signer, &mut fx, r)?
        }
        // Still taken under rules 4, where nodes make batches: a record queued just before an
        // upgrade took effect is not lost.
        Payload::AccessRecord(a) => access_record(&mut audit, ctx, signer, a, false)?,
        Payload::AccessBatch(b) => {
            if !ctx.batched_reads() {
                return refuse(format!(
                    "this chain runs rules {}, under which reads are recorded one transaction each; access batches are rules 4",
                    ctx.rules
                ));
            }
            for a in &b.records {
                access_record(&mut audit, ctx, signer, a, true)?;
            }
        }
        Payload::RulesUpgrade(u) => rules_upgrade(&mut audit, ctx, signer, u)?,
        Payload::Suspension(s) => {
            let by_authority = ctx.is_authority(signer);
            if ctx.validator_index(signer).is_none() && !by_authority {
                return refuse("only a validator or an authority suspends an identity");
            }
            let id = ident(&s.identity)?;
            registered(audit.ov, &id, "identity", None)?;
            if audit.ov.contains(&keys::suspension(&id))? {
                return refuse(format!("{id} is already suspended"));
            }
            let reason = if ctx.v2() && !by_authority {
                match reported(&mut audit, ctx, signer, &id, &s.reason)? {
                    Some(reason) => reason,
                    None => return Ok(fx),
                }
            } else {
                s.reason.clone()
            };
            audit.ov.put(
                keys::suspension(&id),
                &SuspensionEntry {
                    reason: reason.clone(),
                    by: signer.as_bytes().to_vec(),
                    height: ctx.height,
                },
            );
            audit.event("suspend", signer, None, None, format!("{id}: {reason}"))?;
            // Also on the suspended identity's own trail.
            audit.event("suspend", &id, None, None, format!("by {signer}: {reason}"))?;
        }
        Payload::SuspensionLift(l) => {
            if !ctx.is_authority(signer) {
                return refuse("only an authority lifts a suspension");
            }
            let id = ident(&l.identity)?;
            if !audit.ov.contains(&keys::suspension(&id))? {
                return refuse(format!("{id} is not suspended"));
            }
            audit.ov.delete(keys::suspension(&id));
            audit.ov.delete(keys::reports(&id));
            fx.reinstated.push(id);
            audit.event("reinstate", signer, None, None, format!("{id}"))?;
            audit.event("reinstate", &id, None, None, format!("by {signer}"))?;
        }
        Payload::ConsortiumSlip(_) => {
            return refuse(
                "consortium slips belong on the consortium chain; the bridge submits them there",
            )
        }
    }
    Ok(fx)
}
