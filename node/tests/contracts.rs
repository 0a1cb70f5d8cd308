//! The record, consent and access contracts (`medchain-ledger`) driven by transactions built the
//! way the CLI builds them (`medchain_node::client`): registrations, record writes with their
//! encryption, grants with sealed re-encryption fragments.

use medchain_crypto::hash::domains;
use medchain_crypto::keys::KeyMaterial;
use medchain_proto::v1::consent_scope::Scope as S;
use medchain_storage::Store;

use medchain_crypto::{Hash32, Identity};
use medchain_ledger::contracts::state::*;
use medchain_ledger::contracts::*;
use medchain_node::client::records::{build_record_write, PatientKeys, RecordInput};
use medchain_proto::v1::{self, transaction_body::Payload};

struct World {
    _dir: tempfile::TempDir,
    store: Store,
    authority: KeyMaterial,
    validators: Vec<Identity>,
    height: u64,
    rules: u32,
}

fn km(n: u8) -> KeyMaterial {
    KeyMaterial::from_seed(&[n; 32]).unwrap()
}

fn id(k: &KeyMaterial) -> Identity {
    k.signing_key().identity()
}

impl World {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        World {
            _dir: dir,
            store,
            authority: km(100),
            validators: (101..105).map(|n| id(&km(n))).collect(),
            height: 0,
            rules: rules::LATEST,
        }
    }

    /// A chain of rules `version` with doctor `km(1)` and patient `km(patient)` registered.
    fn with_doctor_and_patient(version: u32, patient: u8) -> (Self, KeyMaterial, KeyMaterial) {
        let mut w = World {
            rules: version,
            ..World::new()
        };
        let (doctor, patient) = (km(1), km(patient));
        w.register(&doctor, v1::Role::Doctor);
        w.register(&patient, v1::Role::Patient);
        (w, doctor, patient)
    }

    /// A chain that runs the rules of version 1 (genesis without `params.rules`).
    fn v1() -> Self {
        World {
            rules: rules::V1,
            ..World::new()
        }
    }

    /// Executes one transaction, signed at the block's time, as its own block.
    fn run(
        &mut self,
        signer: &Identity,
        payload: Payload,
        time_ms: u64,
    ) -> Result<(Hash32, SideEffects), ContractError> {
        self.run_signed_at(signer, payload, time_ms, time_ms)
    }

    /// Executes one transaction signed at `signed_ms` as its own block at `time_ms`, and keeps
    /// its writes if it succeeds.
    fn run_signed_at(
        &mut self,
        signer: &Identity,
        payload: Payload,
        time_ms: u64,
        signed_ms: u64,
    ) -> Result<(Hash32, SideEffects), ContractError> {
        let height = self.height + 1;
        let authorities = [id(&self.authority)];
        let ctx = ExecContext {
            height,
            index: 0,
            time_ms,
            authorities: &authorities,
            validators: &self.validators,
            rules: self.rules,
        };
        let tx_id = medchain_crypto::digest(domains::TRANSACTION, &height.to_be_bytes());
        let mut ov = Overlay::new(&self.store);
        let fx = execute(&mut ov, &ctx, signer, tx_id, signed_ms, &payload)?;
        let writes = ov.into_writes();
        // Commit the writes as the ledger would (a block with no transactions of its own here).
        let parent = self.store.tip().unwrap().map_or(Hash32::ZERO, |t| t.hash);
        let keys: Vec<_> = (1..=4u8)
            .map(|i| medchain_crypto::SigningKey::from_bytes(&[i; 32]).unwrap())
            .collect();
        let block = medchain_proto::ledger::make_block(&keys, "h", height, parent, time_ms, vec![]);
        self.store.commit_block(&block, &writes, &[], &[]).unwrap();
        self.height = height;
        Ok((tx_id, fx))
    }

    fn register(&mut self, who: &KeyMaterial, role: v1::Role) {
        // From rules 3 a patient is registered with no name.
        let name = (role != v1::Role::Patient || self.rules < rules::V3).then_some("x");
        let reg = medchain_node::client::KeyCard::from_binding(&who.key_binding())
            .registration_under(self.rules, role, name)
            .unwrap();
        let a = id(&self.authority);
        self.run(&a, Payload::IdentityRegistration(reg), 1).unwrap();
    }

    fn write(
        &mut self,
        doctor: &KeyMaterial,
        patient: &KeyMaterial,
        record_type: &str,
    ) -> Result<Hash32, ContractError> {
        self.write_correcting(doctor, patient, record_type, None)
    }

    /// A record write, or a correction of `replaces`.
    fn write_correcting(
        &mut self,
        doctor: &KeyMaterial,
        patient: &KeyMaterial,
        record_type: &str,
        replaces: Option<Hash32>,
    ) -> Result<Hash32, ContractError> {
        let w = build_record_write(
            "h",
            doctor,
            &PatientKeys {
                identity: id(patient),
                encryption: patient.encryption_key().public_key(),
                search: patient.search_key().public_key(),
            },
            &RecordInput {
                plaintext: br#"{"resourceType":"Observation"}"#.to_vec(),
                record_type: record_type.into(),
                keywords: vec![],
                replaces,
            },
            1,
            1,
        )
        .unwrap();
        let payload = w.transaction.body.unwrap().payload.unwrap();
        self.run(&id(doctor), payload, 1).map(|_| w.slip_id)
    }
}

fn refused(r: Result<(Hash32, SideEffects), ContractError>, needle: &str) {
    match r {
        Err(ContractError::Refused(m)) => assert!(m.contains(needle), "{m:?} lacks {needle:?}"),
        other => panic!("expected a refusal containing {needle:?}, got {other:?}"),
    }
}

fn scope(s: S) -> Option<v1::ConsentScope> {
    Some(v1::ConsentScope { scope: Some(s) })
}

#[test]
fn only_authorities_register_and_only_once() {
    let mut w = World::new();
    let alice = km(1);
    let card = medchain_node::client::KeyCard::from_binding(&alice.key_binding());
    let reg = card
        .registration_under(w.rules, v1::Role::Patient, None)
        .unwrap();
    refused(
        w.run(&id(&alice), Payload::IdentityRegistration(reg.clone()), 1),
        "not an authority",
    );
    let a = id(&w.authority);
    // A named patient is refused in execution too (from rules 3; the form check keeps her out
    // of blocks first).
    let named = card.registration(v1::Role::Patient, "Alice").unwrap();
    refused(
        w.run(&a, Payload::IdentityRegistration(named), 1),
        "carries no name",
    );
    w.run(&a, Payload::IdentityRegistration(reg.clone()), 1)
        .unwrap();
    refused(
        w.run(&a, Payload::IdentityRegistration(reg), 1),
        "already registered",
    );
}

#[test]
fn records_need_registered_parties_and_only_the_patient_confirms() {
    let mut w = World::new();
    let (doctor, patient, other) = (km(1), km(2), km(3));
    assert!(matches!(
        w.write(&doctor, &patient, "Observation"),
        Err(ContractError::Refused(m)) if m.contains("doctor") && m.contains("not registered")
    ));
    w.register(&doctor, v1::Role::Doctor);
    w.register(&patient, v1::Role::Patient);
    w.register(&other, v1::Role::Patient);
    // A patient cannot write records.
    assert!(w.write(&other, &patient, "Observation").is_err());
    let slip = w.write(&doctor, &patient, "Observation").unwrap();
    let confirm = |k: &KeyMaterial| confirm_by(k, &slip);
    refused(w.run(&id(&other), confirm(&other), 1), "another patient");
    // A confirmation signature by someone else is refused even if the patient submits it.
    refused(w.run(&id(&patient), confirm(&other), 1), "does not verify");
    w.run(&id(&patient), confirm(&patient), 1).unwrap();
    refused(
        w.run(&id(&patient), confirm(&patient), 1),
        "already confirmed",
    );
    let del = Payload::RecordDeletion(v1::RecordDeletion {
        slip_id: slip.as_bytes().to_vec(),
        reason: "duplicate".into(),
    });
    refused(w.run(&id(&doctor), del.clone(), 1), "only the patient");
    let (_, fx) = w.run(&id(&patient), del.clone(), 1).unwrap();
    assert_eq!(fx.erased_blobs.len(), 1);
    refused(w.run(&id(&patient), del, 1), "already deleted");
}

#[test]
fn grants_cover_their_scope_until_expiry_or_revocation() {
    let mut w = World::new();
    let (doctor_a, doctor_b, patient) = (km(1), km(2), km(3));
    w.register(&doctor_a, v1::Role::Doctor);
    w.register(&doctor_b, v1::Role::Doctor);
    w.register(&patient, v1::Role::Patient);
    let obs = w.write(&doctor_a, &patient, "Observation").unwrap();
    let cond = w.write(&doctor_a, &patient, "Condition").unwrap();
    // B requests read on Observations; the patient approves with a grant that references it.
    let (req_id, _) = w
        .run(
            &id(&doctor_b),
            Payload::ConsentRequest(v1::ConsentRequest {
                patient: id(&patient).as_bytes().to_vec(),
                scope: scope(S::RecordType("Observation".into())),
                actions: 1,
                expires_ms: 10_000,
                purpose: "follow-up".into(),
            }),
            1,
        )
        .unwrap();
    let grant = medchain_node::client::consent::build_grant(
        &medchain_node::client::ChainInfo {
            chain_id: "h".into(),
            rules: rules::LATEST,
            rules_upgrade: None,
            validators: vec![],
            authorities: vec![],
        },
        &patient,
        &id(&doctor_b),
        &doctor_b.encryption_key().public_key(),
        scope(S::RecordType("Observation".into())).unwrap(),
        1,
        10_000,
        Some(req_id),
        0,
    );
    // No proxies with keys in this chain description: the client refuses a threshold of 0.
    assert!(grant.is_err());
    let grant = v1::ConsentGrant {
        grantee: id(&doctor_b).as_bytes().to_vec(),
        scope: scope(S::RecordType("Observation".into())),
        actions: 1,
        expires_ms: 10_000,
        request: req_id.as_bytes().to_vec(),
        delegation_key: medchain_crypto::delegation::DelegationVerifyingKey::of(&patient)
            .to_bytes(),
        threshold: 1,
        fragments: vec![],
    };
    refused(
        w.run(&id(&doctor_b), Payload::ConsentGrant(grant.clone()), 1),
        "patient",
    );
    let (grant_id, _) = w
        .run(&id(&patient), Payload::ConsentGrant(grant.clone()), 1)
        .unwrap();
    // The request is answered: a second approval is refused.
    refused(
        w.run(&id(&patient), Payload::ConsentGrant(grant), 1),
        "already answered",
    );

    let ov = Overlay::new(&w.store);
    let slip = |s: &Hash32| slip_entry(&ov, s).unwrap();
    let b = id(&doctor_b);
    let read = v1::ConsentAction::Read;
    assert!(
        find_grant(&ov, &b, &obs, &slip(&obs), read, 5_000, &w.store)
            .unwrap()
            .is_some()
    );
    assert!(
        find_grant(&ov, &b, &cond, &slip(&cond), read, 5_000, &w.store)
            .unwrap()
            .is_none()
    );
    assert!(find_grant(
        &ov,
        &b,
        &obs,
        &slip(&obs),
        v1::ConsentAction::Write,
        5_000,
        &w.store
    )
    .unwrap()
    .is_none());
    // Expired.
    assert!(
        find_grant(&ov, &b, &obs, &slip(&obs), read, 10_000, &w.store)
            .unwrap()
            .is_none()
    );
    drop(ov);
    let revoke = Payload::ConsentRevocation(v1::ConsentRevocation {
        grant: grant_id.as_bytes().to_vec(),
    });
    refused(w.run(&id(&doctor_a), revoke.clone(), 1), "another patient");
    let (_, fx) = w.run(&id(&patient), revoke.clone(), 1).unwrap();
    assert_eq!(fx.revoked_grants, vec![grant_id]);
    refused(w.run(&id(&patient), revoke, 1), "already revoked");
    let ov = Overlay::new(&w.store);
    assert!(find_grant(
        &ov,
        &b,
        &obs,
        &slip_entry(&ov, &obs).unwrap(),
        read,
        5_000,
        &w.store
    )
    .unwrap()
    .is_none());
}

/// The doctor's read request for `slip`, signed for validator `node` (nonce `n`), and the
/// access record of its refusal (with no signed request if `signed` is false).
fn asked(doctor: &KeyMaterial, slip: &Hash32, node: &Identity, n: u8) -> v1::SignedReadRequest {
    medchain_proto::records::sign_read_request(
        &doctor.signing_key(),
        v1::ReadRequest {
            chain_id: "h".into(),
            reader: vec![],
            slip_id: slip.as_bytes().to_vec(),
            timestamp_ms: 1,
            nonce: vec![n; 16],
            node: node.as_bytes().to_vec(),
        },
    )
}

fn access_record(
    doctor: &KeyMaterial,
    slip: &Hash32,
    signed: Option<v1::SignedReadRequest>,
) -> v1::AccessRecord {
    let request = signed
        .as_ref()
        .and_then(|s| s.request.as_ref())
        .map(medchain_proto::Hashed::digest)
        .map_or(vec![7; 32], |d| d.as_bytes().to_vec());
    v1::AccessRecord {
        reader: id(doctor).as_bytes().to_vec(),
        slip_id: slip.as_bytes().to_vec(),
        request,
        granted: false,
        reason: "no grant".into(),
        grant: vec![],
        at_ms: 1,
        signed_request: signed,
    }
}

fn read_trail(w: &World, slip: &Hash32) -> Vec<String> {
    let trail = w
        .store
        .chain_state_prefix(&keys::audit_prefix(b'r', slip.as_bytes()), 100)
        .unwrap();
    trail
        .iter()
        .map(|(k, v)| state::decode::<AuditEvent>(k, v).unwrap().op)
        .collect()
}

#[test]
fn access_records_come_from_validators_once_per_request() {
    let (mut w, doctor, patient) = World::with_doctor_and_patient(rules::V3, 2);
    let slip = w.write(&doctor, &patient, "Observation").unwrap();
    let v = w.validators[0];
    let record = |signed| Payload::AccessRecord(access_record(&doctor, &slip, signed));
    let rec = record(Some(asked(&doctor, &slip, &v, 9)));
    refused(w.run(&id(&doctor), rec.clone(), 1), "only a validator");
    // Under rules 2 a validator records only reads the reader asked of it, signed.
    refused(w.run(&v, record(None), 1), "carries the reader's request");
    refused(
        w.run(
            &v,
            record(Some(asked(&doctor, &slip, &w.validators[1], 9))),
            1,
        ),
        "carries the reader's request",
    );
    // Batches are rules 4.
    let batch = Payload::AccessBatch(v1::AccessBatch {
        records: vec![access_record(
            &doctor,
            &slip,
            Some(asked(&doctor, &slip, &v, 9)),
        )],
    });
    refused(w.run(&v, batch, 1), "access batches are rules 4");
    w.run(&v, rec.clone(), 1).unwrap();
    refused(w.run(&v, rec, 1), "already recorded");
    // Rules 1 took a validator's word.
    World::v1().run(&v, record(None), 1).unwrap();
    assert_eq!(read_trail(&w, &slip), vec!["upload", "read-refused"]);
}

/// Under rules 4 a validator records reads in batches, each read once: a batch sent again
/// after its first copy committed records only what is new; a lone record (queued before an
/// upgrade) still counts; a batch with one read signed for another node is refused whole.
#[test]
fn rules_4_record_reads_in_batches_each_read_once() {
    let (mut w, doctor, patient) = World::with_doctor_and_patient(rules::V4, 2);
    let slip = w.write(&doctor, &patient, "Observation").unwrap();
    let v = w.validators[0];
    let rec = |n: u8, node: &Identity| {
        access_record(&doctor, &slip, Some(asked(&doctor, &slip, node, n)))
    };
    let batch = |records| Payload::AccessBatch(v1::AccessBatch { records });
    refused(
        w.run(&id(&doctor), batch(vec![rec(1, &v)]), 1),
        "only a validator",
    );
    refused(
        w.run(&v, batch(vec![rec(1, &v), rec(2, &w.validators[1])]), 1),
        "carries the reader's request",
    );
    assert_eq!(
        read_trail(&w, &slip),
        vec!["upload"],
        "nothing of a refused batch"
    );
    w.run(&v, batch(vec![rec(1, &v), rec(2, &v)]), 1).unwrap();
    w.run(&v, batch(vec![rec(2, &v), rec(3, &v)]), 1).unwrap();
    w.run(&v, Payload::AccessRecord(rec(4, &v)), 1).unwrap();
    refused(
        w.run(&v, Payload::AccessRecord(rec(4, &v)), 1),
        "already recorded",
    );
    assert_eq!(
        read_trail(&w, &slip),
        vec![
            "upload",
            "read-refused",
            "read-refused",
            "read-refused",
            "read-refused"
        ],
        "four reads, each once"
    );
}

#[test]
fn suspended_identities_cannot_act_until_reinstated() {
    let mut w = World::new();
    let (doctor, patient) = (km(1), km(2));
    w.register(&doctor, v1::Role::Doctor);
    w.register(&patient, v1::Role::Patient);
    let v = w.validators[1];
    let suspend = Payload::Suspension(v1::Suspension {
        identity: id(&doctor).as_bytes().to_vec(),
        reason: "200 reads in 60 s".into(),
    });
    // Under rules 2 one validator's word is a report: f + 1 = 2 of the 4 suspend.
    w.run(&v, suspend.clone(), 1).unwrap();
    w.write(&doctor, &patient, "Observation").unwrap();
    refused(w.run(&v, suspend.clone(), 1), "already reported");
    let other = w.validators[2];
    w.run(&other, suspend, 1).unwrap();
    assert!(matches!(
        w.write(&doctor, &patient, "Observation"),
        Err(ContractError::Refused(m)) if m.contains("suspended")
    ));
    let lift = Payload::SuspensionLift(v1::SuspensionLift {
        identity: id(&doctor).as_bytes().to_vec(),
    });
    refused(w.run(&v, lift.clone(), 1), "only an authority");
    let a = id(&w.authority);
    let (_, fx) = w.run(&a, lift, 1).unwrap();
    assert_eq!(fx.reinstated, vec![id(&doctor)]);
    w.write(&doctor, &patient, "Observation").unwrap();
}

fn confirm_by(k: &KeyMaterial, slip: &Hash32) -> Payload {
    Payload::PatientConfirmation(v1::PatientConfirmation {
        slip_id: slip.as_bytes().to_vec(),
        patient_signature: k
            .signing_key()
            .sign(domains::PATIENT_CONFIRMATION, slip.as_bytes())
            .as_bytes()
            .to_vec(),
    })
}

fn grant_to(grantee: &KeyMaterial, patient: &KeyMaterial, actions: u32) -> Payload {
    Payload::ConsentGrant(v1::ConsentGrant {
        grantee: id(grantee).as_bytes().to_vec(),
        scope: scope(S::All(true)),
        actions,
        expires_ms: 10_000,
        request: vec![],
        delegation_key: medchain_crypto::delegation::DelegationVerifyingKey::of(patient).to_bytes(),
        threshold: 1,
        fragments: vec![],
    })
}

fn request_by(patient: &KeyMaterial, actions: u32) -> Payload {
    Payload::ConsentRequest(v1::ConsentRequest {
        patient: id(patient).as_bytes().to_vec(),
        scope: scope(S::All(true)),
        actions,
        expires_ms: 10_000,
        purpose: "claim".into(),
    })
}

/// A suspended patient's key is frozen under rules 2: it confirms, deletes, denies and revokes
/// nothing until an authority reinstates her, while the authority can still delete on her
/// behalf. Under rules 1 (a chain made before versions) the same transactions take effect.
#[test]
fn a_suspended_key_is_frozen_under_rules_2_only() {
    for rules_version in [rules::V1, rules::V2] {
        let (mut w, doctor, patient) = World::with_doctor_and_patient(rules_version, 2);
        let (a, b) = (w.write(&doctor, &patient, "Observation").unwrap(), {
            w.write(&doctor, &patient, "Condition").unwrap()
        });
        let (grant, _) = w
            .run(&id(&patient), grant_to(&doctor, &patient, 1), 1)
            .unwrap();
        let (request, _) = w.run(&id(&doctor), request_by(&patient, 1), 1).unwrap();
        let suspend = Payload::Suspension(v1::Suspension {
            identity: id(&patient).as_bytes().to_vec(),
            reason: "key reported stolen".into(),
        });
        let authority = id(&w.authority);
        w.run(&authority, suspend, 1).unwrap();
        let p = id(&patient);
        let acts = [
            confirm_by(&patient, &a),
            Payload::RecordDeletion(v1::RecordDeletion {
                slip_id: a.as_bytes().to_vec(),
                reason: "thief".into(),
            }),
            Payload::ConsentDenial(v1::ConsentDenial {
                request: request.as_bytes().to_vec(),
                reason: "thief".into(),
            }),
            Payload::ConsentRevocation(v1::ConsentRevocation {
                grant: grant.as_bytes().to_vec(),
            }),
        ];
        for act in acts {
            let outcome = w.run(&p, act.clone(), 1);
            if rules_version == rules::V1 {
                assert!(outcome.is_ok(), "rules 1 keep {act:?}: {outcome:?}");
            } else {
                refused(outcome, "is suspended");
            }
        }
        // The authority, who can tell the patient from a thief, still deletes for her.
        let del = Payload::RecordDeletion(v1::RecordDeletion {
            slip_id: b.as_bytes().to_vec(),
            reason: "on the patient's written request".into(),
        });
        w.run(&authority, del, 1).unwrap();
    }
}

/// Under rules 2 only a record's author, or a doctor the patient granted write, corrects it; a
/// read grant is not enough. Rules 1 let any doctor correct (and so lock) any record.
#[test]
fn only_the_author_or_a_write_grantee_corrects_a_record() {
    let mut old_chain = World::v1();
    let mut w = World::new();
    for w in [&mut old_chain, &mut w] {
        for (k, role) in [
            (km(1), v1::Role::Doctor),
            (km(2), v1::Role::Doctor),
            (km(3), v1::Role::Doctor),
            (km(9), v1::Role::Patient),
        ] {
            w.register(&k, role);
        }
    }
    let (author, other, writer, patient) = (km(1), km(2), km(3), km(9));
    let old = old_chain.write(&author, &patient, "Observation").unwrap();
    old_chain
        .write_correcting(&other, &patient, "Observation", Some(old))
        .unwrap();

    let first = w.write(&author, &patient, "Observation").unwrap();
    w.run(&id(&patient), grant_to(&other, &patient, 1), 1)
        .unwrap();
    assert!(matches!(
        w.write_correcting(&other, &patient, "Observation", Some(first)),
        Err(ContractError::Refused(m)) if m.contains("only its author corrects it")
    ));
    let second = w
        .write_correcting(&author, &patient, "Observation", Some(first))
        .unwrap();
    w.run(&id(&patient), grant_to(&writer, &patient, 3), 1)
        .unwrap();
    w.write_correcting(&writer, &patient, "Observation", Some(second))
        .unwrap();
}

/// Under rules 2 write goes to doctors only, copy to no one, and a grant carries some action.
#[test]
fn write_is_for_doctors_and_copy_is_refused() {
    let mut w = World::new();
    let (doctor, insurer, patient) = (km(1), km(2), km(9));
    w.register(&doctor, v1::Role::Doctor);
    w.register(&insurer, v1::Role::Insurer);
    w.register(&patient, v1::Role::Patient);
    let p = id(&patient);
    refused(w.run(&p, grant_to(&doctor, &patient, 5), 1), "copy");
    refused(
        w.run(&p, grant_to(&doctor, &patient, 0), 1),
        "carries actions 0x0",
    );
    refused(
        w.run(&p, grant_to(&doctor, &patient, 8), 1),
        "carries actions 0x8",
    );
    refused(
        w.run(&p, grant_to(&insurer, &patient, 3), 1),
        "registered as insurer; only doctors write records",
    );
    w.run(&p, grant_to(&insurer, &patient, 1), 1).unwrap();
    w.run(&p, grant_to(&doctor, &patient, 3), 1).unwrap();
    refused(
        w.run(&id(&insurer), request_by(&patient, 2), 1),
        "only doctors",
    );
    refused(w.run(&id(&doctor), request_by(&patient, 4), 1), "copy");
    w.run(&id(&insurer), request_by(&patient, 1), 1).unwrap();
    // Rules 1 stored whatever bits were sent.
    let mut old = World::v1();
    old.register(&doctor, v1::Role::Doctor);
    old.register(&patient, v1::Role::Patient);
    old.run(&p, grant_to(&doctor, &patient, 7), 1).unwrap();
}

/// Insurers and researchers are data users: they hold read grants and request access, but
/// never write a record; a registration names a known role.
#[test]
fn data_users_read_but_never_write() {
    let mut w = World::new();
    let (researcher, patient) = (km(4), km(9));
    w.register(&researcher, v1::Role::Researcher);
    w.register(&patient, v1::Role::Patient);
    assert!(matches!(
        w.write(&researcher, &patient, "Observation"),
        Err(ContractError::Refused(m)) if m.contains("registered as a researcher, not a doctor")
    ));
    w.run(&id(&researcher), request_by(&patient, 1), 1).unwrap();
    let mut reg = medchain_node::client::KeyCard::from_binding(&km(5).key_binding())
        .registration(v1::Role::Patient, "x")
        .unwrap();
    reg.role = 42;
    let a = id(&w.authority);
    refused(
        w.run(&a, Payload::IdentityRegistration(reg), 1),
        "role 42 is not a role of this chain",
    );
}

/// Under rules 2 a transaction takes effect within an hour of its signing, by the block's
/// time, and not more than five minutes before it: one held back is dead when played late.
#[test]
fn transactions_take_effect_only_within_their_window() {
    let mut w = World::new();
    let (doctor, patient) = (km(1), km(2));
    w.register(&doctor, v1::Role::Doctor);
    w.register(&patient, v1::Role::Patient);
    let signed = 1_000_000;
    let late = signed + rules::TX_VALIDITY_MS + 1;
    refused(
        w.run_signed_at(&id(&doctor), request_by(&patient, 1), late, signed),
        "expired",
    );
    refused(
        w.run_signed_at(
            &id(&doctor),
            request_by(&patient, 1),
            signed,
            signed + rules::TX_FUTURE_MS + 1,
        ),
        "check the signer's clock",
    );
    w.run_signed_at(&id(&doctor), request_by(&patient, 1), late - 1, signed)
        .unwrap();
    let mut old = World::v1();
    old.register(&doctor, v1::Role::Doctor);
    old.register(&patient, v1::Role::Patient);
    old.run_signed_at(&id(&doctor), request_by(&patient, 1), late, signed)
        .unwrap();
}

/// A record write of `doctor` for `patient` as a payload, its content then changed by `edit`
/// (the contracts run here without the form checks that would notice the broken signature).
fn slip_edited(
    doctor: &KeyMaterial,
    patient: &KeyMaterial,
    record_type: &str,
    edit: impl FnOnce(&mut v1::SlipContent),
) -> Payload {
    let keys = PatientKeys {
        identity: id(patient),
        encryption: patient.encryption_key().public_key(),
        search: patient.search_key().public_key(),
    };
    let input = RecordInput {
        plaintext: format!(r#"{{"resourceType":"{record_type}"}}"#).into_bytes(),
        record_type: record_type.into(),
        keywords: vec![],
        replaces: None,
    };
    let mut payload = build_record_write("h", doctor, &keys, &input, 2, 1)
        .unwrap()
        .transaction
        .body
        .unwrap()
        .payload
        .unwrap();
    let Payload::PrivateSlip(slip) = &mut payload else {
        unreachable!("a record write carries a slip")
    };
    edit(slip.content.as_mut().unwrap());
    payload
}

/// Under rules 2 a slip cannot name a ciphertext another record uses (erasing one would erase
/// the other); rules 1 let two records share one.
#[test]
fn each_record_has_its_own_ciphertext_under_rules_2() {
    for rules_version in [rules::V1, rules::V2] {
        let (mut w, doctor, patient) = World::with_doctor_and_patient(rules_version, 9);
        let first = w.write(&doctor, &patient, "Observation").unwrap();
        let entry = slip_entry(&Overlay::new(&w.store), &first).unwrap();
        let payload = slip_edited(&doctor, &patient, "Condition", |c| {
            c.ciphertext_hash = entry.ciphertext_hash.to_vec()
        });
        let result = w.run(&id(&doctor), payload, 1);
        if rules_version == rules::V1 {
            result.unwrap();
        } else {
            refused(result, &format!("already belongs to record {first}"));
        }
    }
}

/// Rules 1 let one validator suspend; under rules 2 reports older than the window do not add
/// up, and an authority still suspends at once.
#[test]
fn suspensions_by_validators_need_f_plus_1_recent_reports_under_rules_2() {
    let report = |who: &KeyMaterial| {
        Payload::Suspension(v1::Suspension {
            identity: id(who).as_bytes().to_vec(),
            reason: "abnormal access".into(),
        })
    };
    let mut old_chain = World::v1();
    let (doctor, patient) = (km(1), km(2));
    old_chain.register(&doctor, v1::Role::Doctor);
    old_chain.register(&patient, v1::Role::Patient);
    let v = old_chain.validators[0];
    old_chain.run(&v, report(&doctor), 1).unwrap();
    refused(
        old_chain
            .write(&doctor, &patient, "Observation")
            .map(|_| (Hash32::ZERO, SideEffects::default())),
        "suspended",
    );

    let mut w = World::new();
    w.register(&doctor, v1::Role::Doctor);
    w.register(&patient, v1::Role::Patient);
    let (v0, v1_) = (w.validators[0], w.validators[1]);
    w.run(&v0, report(&doctor), 1_000).unwrap();
    // An hour later the first report no longer counts: the second waits for another.
    w.run(&v1_, report(&doctor), 1_000 + rules::REPORT_WINDOW_MS)
        .unwrap();
    w.write(&doctor, &patient, "Observation").unwrap();
    let a = id(&w.authority);
    w.run(&a, report(&patient), 1).unwrap();
    refused(w.run(&v0, report(&patient), 1), "already suspended");
    assert_eq!(rules::reports_needed(4), 2);
    assert_eq!(rules::reports_needed(7), 3);
}

/// Under rules 2 a slip with a summary in clear is refused (every validator would read it);
/// rules 1 kept it.
#[test]
fn no_summary_in_clear_under_rules_2() {
    for rules_version in [rules::V1, rules::V2] {
        let (mut w, doctor, patient) = World::with_doctor_and_patient(rules_version, 9);
        let payload = slip_edited(&doctor, &patient, "Observation", |c| {
            c.summary = "biopsy, suspected carcinoma".into()
        });
        let result = w.run(&id(&doctor), payload, 1);
        if rules_version == rules::V1 {
            result.unwrap();
        } else {
            refused(result, "no summary in clear");
        }
    }
}

/// Under rules 2 a data user's request tells it nothing about who is a patient: a request naming
/// a doctor, an unregistered key or a patient is accepted alike (only the patient could ever
/// approve one); rules 1 refused the first two, an oracle for "is X a patient?".
#[test]
fn a_request_is_no_oracle_for_who_is_a_patient_under_rules_2() {
    for rules_version in [rules::V1, rules::V2] {
        let (mut w, doctor, patient) = World::with_doctor_and_patient(rules_version, 9);
        let insurer = km(5);
        w.register(&insurer, v1::Role::Insurer);
        let stranger = km(6);
        for (named, is_patient) in [(&doctor, false), (&stranger, false), (&patient, true)] {
            let result = w.run(&id(&insurer), request_by(named, 1), 1);
            if rules_version == rules::V2 || is_patient {
                result.unwrap();
            } else {
                assert!(
                    result.is_err(),
                    "rules 1 refuses a request naming a non-patient"
                );
            }
        }
        // The doctor cannot approve a request naming her as if she were a patient.
        let grant = grant_to(&insurer, &doctor, 1);
        assert!(w.run(&id(&doctor), grant, 1).is_err());
    }
}

/// Only a genesis authority schedules a rules upgrade, to a later version, with the notice;
/// one not yet in effect can be replaced, and it is on the authority's audit trail.
#[test]
fn rules_upgrades_come_from_authorities_with_notice() {
    let mut w = World {
        rules: rules::V3,
        ..World::new()
    };
    let a = id(&w.authority);
    let validator = w.validators[0];
    let up = |version, activation_height| {
        Payload::RulesUpgrade(v1::RulesUpgrade {
            version,
            activation_height,
        })
    };
    refused(w.run(&validator, up(4, 50), 1), "only a genesis authority");
    refused(w.run(&a, up(3, 50), 1), "runs rules 3");
    // The next block is height 1: the earliest activation is 1 + the notice.
    let earliest = 1 + rules::UPGRADE_NOTICE_BLOCKS;
    refused(w.run(&a, up(4, earliest - 1), 1), "too soon");
    w.run(&a, up(4, earliest + 20), 1).unwrap();
    // Replaced before it takes effect (a version 9 by mistake would stop every node at 40).
    w.run(&a, up(9, 40), 1).unwrap();
    w.run(&a, up(4, 40), 1).unwrap();
    let entry: RulesUpgradeEntry = {
        let q = queries::Queries::new(&w.store);
        q.rules_upgrade().unwrap().unwrap()
    };
    assert_eq!(
        (entry.before, entry.version, entry.activation_height),
        (3, 4, 40)
    );
    assert_eq!(rules::effective(3, Some(&entry), 39), 3);
    assert_eq!(rules::effective(3, Some(&entry), 40), 4);
    let trail = w
        .store
        .chain_state_prefix(&keys::audit_prefix(b'a', a.as_bytes()), 100)
        .unwrap();
    let details: Vec<String> = trail
        .iter()
        .map(|(k, v)| state::decode::<AuditEvent>(k, v).unwrap())
        .filter(|e| e.op == "rules-upgrade")
        .map(|e| e.detail)
        .collect();
    assert_eq!(details.len(), 3, "{details:?}");
    assert!(
        details[2].contains("replacing rules 9 at height 40"),
        "{details:?}"
    );
}
