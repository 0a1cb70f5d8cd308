//! Structural and cryptographic checks of the health-record payloads (identities, records,
//! consent, access records, suspensions) and the signed read request. Rules that need chain state
//! (is the signer a registered doctor, is the grant still valid) live in the node's contracts.

use medchain_crypto::delegation::{DelegationVerifyingKey, MAX_SHARES};
use medchain_crypto::keys::{EncryptionPublicKey, KeyBinding};
use medchain_crypto::record::EncryptedRecord;
use medchain_crypto::search::{SearchPublicKey, KEYWORD_CIPHERTEXT_LEN};
use medchain_crypto::{Hash32, Identity, Signature, SigningKey};

use crate::canonical::{limits, Hashed};
use crate::v1;
use crate::ProtoError;

/// Longest free-text field (reasons, purposes, summaries' limit is separate).
pub const MAX_REASON: usize = 512;
/// Longest record type (a FHIR resourceType is under 40 characters).
pub const MAX_RECORD_TYPE: usize = 64;
/// Longest display name.
pub const MAX_NAME: usize = 128;
/// Longest content summary of a slip.
pub const MAX_SUMMARY: usize = 1024;
/// Most encrypted keywords on one slip.
pub const MAX_KEYWORDS: usize = 32;
/// Largest encrypted storage address.
pub const MAX_ENCRYPTED_ADDRESS: usize = 1024;
/// Every action bit a grant or request may carry.
pub const ALL_ACTIONS: u32 = v1::ConsentAction::Read as u32
    | v1::ConsentAction::Write as u32
    | v1::ConsentAction::Copy as u32;

fn invalid(kind: &'static str, reason: impl Into<String>) -> ProtoError {
    ProtoError::Invalid {
        kind,
        reason: reason.into(),
    }
}

fn field<T>(
    kind: &'static str,
    field: &'static str,
    r: Result<T, medchain_crypto::CryptoError>,
) -> Result<T, ProtoError> {
    r.map_err(|source| ProtoError::InvalidField {
        kind,
        field,
        source,
    })
}

pub(crate) fn identity(
    kind: &'static str,
    f: &'static str,
    b: &[u8],
) -> Result<Identity, ProtoError> {
    field(kind, f, Identity::from_bytes(b))
}

pub(crate) fn hash(kind: &'static str, f: &'static str, b: &[u8]) -> Result<Hash32, ProtoError> {
    field(kind, f, Hash32::from_slice(b))
}

fn text(
    kind: &'static str,
    f: &str,
    s: &str,
    max: usize,
    required: bool,
) -> Result<(), ProtoError> {
    if required && s.trim().is_empty() {
        return Err(invalid(kind, format!("`{f}` must not be empty")));
    }
    if s.len() > max {
        return Err(invalid(
            kind,
            format!("`{f}` is {} bytes; the limit is {max}", s.len()),
        ));
    }
    Ok(())
}

/// Checks the MBDS fields of a slip beyond its signatures: sizes, the ciphertext's address and
/// size, each encrypted keyword's form.
pub fn check_slip_fields(content: &v1::SlipContent) -> Result<(), ProtoError> {
    const KIND: &str = "private slip";
    text(
        KIND,
        "record_type",
        &content.record_type,
        MAX_RECORD_TYPE,
        true,
    )?;
    text(KIND, "summary", &content.summary, MAX_SUMMARY, false)?;
    hash(KIND, "content.ciphertext_hash", &content.ciphertext_hash)?;
    if content.ciphertext_size == 0 || content.ciphertext_size as usize > limits::RECORD_CIPHERTEXT
    {
        return Err(invalid(
            KIND,
            format!(
                "ciphertext_size {} is outside 1..={} (records are limited to {} bytes)",
                content.ciphertext_size,
                limits::RECORD_CIPHERTEXT,
                limits::RECORD_PLAINTEXT
            ),
        ));
    }
    if content.encrypted_address.is_empty()
        || content.encrypted_address.len() > MAX_ENCRYPTED_ADDRESS
    {
        return Err(invalid(
            KIND,
            format!("encrypted_address must be 1..={MAX_ENCRYPTED_ADDRESS} bytes"),
        ));
    }
    field(
        KIND,
        "content.encrypted_address",
        EncryptedRecord::check_format(&content.encrypted_address),
    )?;
    if content.encrypted_keywords.len() > MAX_KEYWORDS {
        return Err(invalid(
            KIND,
            format!(
                "{} encrypted keywords; the limit is {MAX_KEYWORDS}",
                content.encrypted_keywords.len()
            ),
        ));
    }
    for k in &content.encrypted_keywords {
        if k.len() != KEYWORD_CIPHERTEXT_LEN {
            return Err(invalid(
                KIND,
                format!("an encrypted keyword must be {KEYWORD_CIPHERTEXT_LEN} bytes"),
            ));
        }
    }
    Ok(())
}

/// The registration an authority signs for a participant's key binding (the inverse of
/// [`check_registration`]).
pub fn registration(b: &KeyBinding, role: v1::Role, name: &str) -> v1::IdentityRegistration {
    v1::IdentityRegistration {
        identity: b.identity.as_bytes().to_vec(),
        encryption_key: b.encryption_key.to_bytes(),
        search_key: b.search_key.to_bytes().to_vec(),
        binding_signature: b.signature.as_bytes().to_vec(),
        role: role as i32,
        name: name.to_string(),
    }
}

/// Checks a registration: the keys parse and the participant's binding signature covers them.
pub fn check_registration(r: &v1::IdentityRegistration) -> Result<KeyBinding, ProtoError> {
    const KIND: &str = "identity registration";
    let binding = KeyBinding {
        identity: identity(KIND, "identity", &r.identity)?,
        encryption_key: field(
            KIND,
            "encryption_key",
            EncryptionPublicKey::from_bytes(&r.encryption_key),
        )?,
        search_key: field(
            KIND,
            "search_key",
            SearchPublicKey::from_bytes(&r.search_key),
        )?,
        signature: field(
            KIND,
            "binding_signature",
            Signature::from_slice(&r.binding_signature),
        )?,
    };
    field(KIND, "binding_signature", binding.verify())?;
    if v1::Role::try_from(r.role).unwrap_or(v1::Role::Unspecified) == v1::Role::Unspecified {
        return Err(invalid(KIND, "role must be patient or doctor"));
    }
    // Whether the name may be empty depends on the chain's rules (a patient's carries none
    // from rules 3): the ledger checks that; here only its length and characters.
    text(KIND, "name", &r.name, MAX_NAME, false)?;
    Ok(binding)
}

/// Checks a consent scope.
pub fn check_scope(kind: &'static str, scope: Option<&v1::ConsentScope>) -> Result<(), ProtoError> {
    use v1::consent_scope::Scope;
    match scope.and_then(|s| s.scope.as_ref()) {
        None => Err(ProtoError::MissingField {
            kind,
            field: "scope",
        }),
        Some(Scope::Record(slip)) => hash(kind, "scope.record", slip).map(|_| ()),
        Some(Scope::RecordType(t)) => text(kind, "scope.record_type", t, MAX_RECORD_TYPE, true),
        Some(Scope::All(all)) => {
            if *all {
                Ok(())
            } else {
                Err(invalid(kind, "scope `all` must be true"))
            }
        }
    }
}

fn check_actions(kind: &'static str, actions: u32) -> Result<(), ProtoError> {
    if actions == 0 || actions & !ALL_ACTIONS != 0 {
        return Err(invalid(
            kind,
            format!("actions {actions:#x}: give one or more of read (1), write (2), copy (4)"),
        ));
    }
    Ok(())
}

/// Checks a grant's form: grantee, scope, actions, expiry, fragments (distinct proxies, at least
/// `threshold`, each a sealed record).
pub fn check_grant(g: &v1::ConsentGrant) -> Result<(), ProtoError> {
    const KIND: &str = "consent grant";
    identity(KIND, "grantee", &g.grantee)?;
    check_scope(KIND, g.scope.as_ref())?;
    check_actions(KIND, g.actions)?;
    if g.expires_ms == 0 {
        return Err(invalid(KIND, "expires_ms must be set"));
    }
    if !g.request.is_empty() {
        hash(KIND, "request", &g.request)?;
    }
    field(
        KIND,
        "delegation_key",
        DelegationVerifyingKey::from_bytes(&g.delegation_key),
    )?;
    let n = g.fragments.len();
    if g.threshold == 0 || g.threshold as usize > n || n > MAX_SHARES {
        return Err(invalid(
            KIND,
            format!(
                "threshold {} of {n} fragments; need 1 <= threshold <= fragments <= {MAX_SHARES}",
                g.threshold
            ),
        ));
    }
    let mut seen = std::collections::BTreeSet::new();
    for f in &g.fragments {
        if !seen.insert(f.proxy) {
            return Err(invalid(
                KIND,
                format!("two fragments for proxy {}", f.proxy),
            ));
        }
        field(
            KIND,
            "fragments.sealed",
            EncryptedRecord::check_format(&f.sealed),
        )?;
    }
    Ok(())
}

pub fn check_request(r: &v1::ConsentRequest) -> Result<(), ProtoError> {
    const KIND: &str = "consent request";
    identity(KIND, "patient", &r.patient)?;
    check_scope(KIND, r.scope.as_ref())?;
    check_actions(KIND, r.actions)?;
    if r.expires_ms == 0 {
        return Err(invalid(KIND, "expires_ms must be set"));
    }
    text(KIND, "purpose", &r.purpose, MAX_REASON, false)
}

pub fn check_access_record(a: &v1::AccessRecord) -> Result<(), ProtoError> {
    const KIND: &str = "access record";
    identity(KIND, "reader", &a.reader)?;
    hash(KIND, "slip_id", &a.slip_id)?;
    hash(KIND, "request", &a.request)?;
    if !a.grant.is_empty() {
        hash(KIND, "grant", &a.grant)?;
    }
    if let Some(signed) = &a.signed_request {
        let v = verify_read_request(signed)?;
        if v.reader.as_bytes() != a.reader.as_slice()
            || v.slip_id.as_bytes() != a.slip_id.as_slice()
            || v.digest.as_bytes() != a.request.as_slice()
        {
            return Err(invalid(
                KIND,
                "the signed request is for another reader, record or request",
            ));
        }
    }
    text(KIND, "reason", &a.reason, MAX_REASON, false)
}

/// At most this many reads in one [`v1::AccessBatch`]: at most [`MAX_REASON`] bytes of reason
/// and about 300 of ids, request and signature each, so a full batch stays well inside a
/// transaction's size limit.
pub const MAX_ACCESS_BATCH: usize = 64;

/// A batch of access records: 1 to [`MAX_ACCESS_BATCH`] well-formed records, no read request
/// twice (each read is recorded once).
pub fn check_access_batch(b: &v1::AccessBatch) -> Result<(), ProtoError> {
    const KIND: &str = "access batch";
    if b.records.is_empty() || b.records.len() > MAX_ACCESS_BATCH {
        return Err(invalid(
            KIND,
            format!(
                "it holds {} records; a batch holds 1 to {MAX_ACCESS_BATCH}",
                b.records.len()
            ),
        ));
    }
    let mut seen = std::collections::HashSet::new();
    for a in &b.records {
        check_access_record(a)?;
        let request = hash(KIND, "request", &a.request)?;
        if !seen.insert(request) {
            return Err(invalid(
                KIND,
                format!("read request {} is in it twice", request.to_hex()),
            ));
        }
    }
    Ok(())
}

/// The form checks of every record-workflow payload (called by `verify_transaction`).
pub(crate) fn check_payload(p: &v1::transaction_body::Payload) -> Result<(), ProtoError> {
    use v1::transaction_body::Payload;
    match p {
        Payload::IdentityRegistration(r) => check_registration(r).map(|_| ()),
        Payload::RecordDeletion(d) => {
            hash("record deletion", "slip_id", &d.slip_id)?;
            text("record deletion", "reason", &d.reason, MAX_REASON, false)
        }
        Payload::ConsentGrant(g) => check_grant(g),
        Payload::ConsentRequest(r) => check_request(r),
        Payload::ConsentDenial(d) => {
            hash("consent denial", "request", &d.request)?;
            text("consent denial", "reason", &d.reason, MAX_REASON, false)
        }
        Payload::ConsentRevocation(r) => hash("consent revocation", "grant", &r.grant).map(|_| ()),
        Payload::AccessRecord(a) => check_access_record(a),
        Payload::AccessBatch(b) => check_access_batch(b),
        Payload::RulesUpgrade(u) => {
            if u.version < 2 || u.activation_height == 0 {
                return Err(invalid(
                    "rules upgrade",
                    "it names a version from 2 on and an activation height from 1 on",
                ));
            }
            Ok(())
        }
        Payload::Suspension(s) => {
            identity("suspension", "identity", &s.identity)?;
            text("suspension", "reason", &s.reason, MAX_REASON, true)
        }
        Payload::SuspensionLift(l) => {
            identity("suspension lift", "identity", &l.identity).map(|_| ())
        }
        Payload::PrivateSlip(_) | Payload::PatientConfirmation(_) | Payload::ConsortiumSlip(_) => {
            Ok(())
        }
    }
}

/// Signs a read request as its reader.
pub fn sign_read_request(
    reader: &SigningKey,
    mut request: v1::ReadRequest,
) -> v1::SignedReadRequest {
    request.reader = reader.identity().as_bytes().to_vec();
    let signature = reader.sign_digest(&request.digest());
    v1::SignedReadRequest {
        request: Some(request),
        signature: signature.as_bytes().to_vec(),
    }
}

/// A read request whose signature verified: the request, its reader and its digest (the replay
/// key and the ID its access record carries).
#[derive(Clone, Debug)]
pub struct VerifiedReadRequest {
    pub request: v1::ReadRequest,
    pub reader: Identity,
    pub slip_id: Hash32,
    /// The validator the reader asked: a node serves only requests signed for itself, so a
    /// captured request cannot be replayed at another validator.
    pub node: Identity,
    pub digest: Hash32,
    /// The request as the reader signed it: access records carry it as proof she asked.
    pub signed: v1::SignedReadRequest,
}

pub fn verify_read_request(
    signed: &v1::SignedReadRequest,
) -> Result<VerifiedReadRequest, ProtoError> {
    const KIND: &str = "read request";
    let request = signed.request.clone().ok_or(ProtoError::MissingField {
        kind: KIND,
        field: "request",
    })?;
    let reader = identity(KIND, "reader", &request.reader)?;
    let slip_id = hash(KIND, "slip_id", &request.slip_id)?;
    let node = identity(KIND, "node", &request.node)?;
    if request.nonce.len() != 16 {
        return Err(invalid(KIND, "nonce must be 16 random bytes"));
    }
    let digest = request.digest();
    let sig = field(KIND, "signature", Signature::from_slice(&signed.signature))?;
    field(KIND, "signature", reader.verify_digest(&digest, &sig))?;
    Ok(VerifiedReadRequest {
        request,
        reader,
        slip_id,
        node,
        digest,
        signed: signed.clone(),
    })
}

/// A payload's kind, as quotas, metrics and refusals name it.
pub fn payload_kind(payload: &v1::transaction_body::Payload) -> &'static str {
    use v1::transaction_body::Payload as P;
    match payload {
        P::PrivateSlip(_) => "record",
        P::PatientConfirmation(_) => "confirmation",
        P::ConsortiumSlip(_) => "consortium_slip",
        P::IdentityRegistration(_) => "registration",
        P::RecordDeletion(_) => "deletion",
        P::ConsentGrant(_) => "grant",
        P::ConsentRequest(_) => "request",
        P::ConsentDenial(_) => "denial",
        P::ConsentRevocation(_) => "revocation",
        P::AccessRecord(_) => "access_record",
        P::AccessBatch(_) => "access_batch",
        P::RulesUpgrade(_) => "rules_upgrade",
        P::Suspension(_) => "suspension",
        P::SuspensionLift(_) => "suspension_lift",
    }
}

/// A role's name, as the CLI, the API and refusals spell it.
pub fn role_name(role: v1::Role) -> &'static str {
    match role {
        v1::Role::Patient => "patient",
        v1::Role::Doctor => "doctor",
        v1::Role::Insurer => "insurer",
        v1::Role::Researcher => "researcher",
        v1::Role::Unspecified => "unspecified",
    }
}

/// The role stored in a registration (`role` as its wire integer): unknown values are
/// `Unspecified`, which may do nothing.
pub fn role_of(role: i32) -> v1::Role {
    v1::Role::try_from(role).unwrap_or(v1::Role::Unspecified)
}

/// Decodes a `ConsentAction` bit set for display.
pub fn action_names(actions: u32) -> Vec<&'static str> {
    let mut out = Vec::new();
    if actions & v1::ConsentAction::Read as u32 != 0 {
        out.push("read");
    }
    if actions & v1::ConsentAction::Write as u32 != 0 {
        out.push("write");
    }
    if actions & v1::ConsentAction::Copy as u32 != 0 {
        out.push("copy");
    }
    out
}

/// A well-formed slip content for tests and benchmarks: the record and its address encrypted to a
/// fixed throwaway key, one encrypted keyword. Real clients build slips with the node's client
/// (`medchain record add`), encrypting to the patient's registered keys.
#[doc(hidden)]
pub fn sample_slip_content(
    doctor: &Identity,
    patient: &Identity,
    record: &[u8],
) -> v1::SlipContent {
    let keys = medchain_crypto::keys::KeyMaterial::from_seed(&[7; 32]).expect("32 bytes");
    let sealed =
        medchain_crypto::record::encrypt_record(&keys.encryption_key().public_key(), record)
            .expect("encryption to a valid key")
            .to_bytes();
    let address = medchain_crypto::digest(medchain_crypto::hash::domains::STORAGE_ADDRESS, &sealed);
    v1::SlipContent {
        timestamp_ms: 1_700_000_000_000,
        record_type: "Observation".into(),
        summary: "sample".into(),
        doctor: doctor.as_bytes().to_vec(),
        patient: patient.as_bytes().to_vec(),
        record_hash: medchain_crypto::record::record_hash(record)
            .as_bytes()
            .to_vec(),
        encrypted_address: medchain_crypto::record::encrypt_record(
            &keys.encryption_key().public_key(),
            address.to_hex().as_bytes(),
        )
        .expect("encryption to a valid key")
        .to_bytes(),
        encrypted_keywords: vec![keys
            .search_key()
            .public_key()
            .encrypt_keyword("sample")
            .expect("valid keyword")
            .to_bytes()],
        replaces: vec![],
        ciphertext_hash: address.as_bytes().to_vec(),
        ciphertext_size: sealed.len() as u64,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use medchain_crypto::keys::KeyMaterial;

    fn registration(m: &KeyMaterial, role: v1::Role) -> v1::IdentityRegistration {
        super::registration(&m.key_binding(), role, "Dr. A")
    }

    #[test]
    fn registration_needs_the_participants_own_binding() {
        let m = KeyMaterial::from_seed(&[1; 32]).unwrap();
        let r = registration(&m, v1::Role::Doctor);
        check_registration(&r).unwrap();
        let mut swapped = r.clone();
        swapped.encryption_key = KeyMaterial::from_seed(&[2; 32])
            .unwrap()
            .encryption_key()
            .public_key()
            .to_bytes();
        let e = check_registration(&swapped).unwrap_err().to_string();
        assert!(e.contains("binding_signature"), "{e}");
        let mut no_role = r.clone();
        no_role.role = 0;
        assert!(check_registration(&no_role).is_err());
        let mut long_name = r;
        long_name.name = "x".repeat(MAX_NAME + 1);
        assert!(check_registration(&long_name).is_err());
    }

    #[test]
    fn read_requests_verify_and_any_change_breaks_them() {
        let k = KeyMaterial::from_seed(&[3; 32]).unwrap().signing_key();
        let signed = sign_read_request(
            &k,
            v1::ReadRequest {
                chain_id: "h".into(),
                reader: vec![],
                slip_id: vec![7; 32],
                timestamp_ms: 5,
                nonce: vec![1; 16],
                node: KeyMaterial::from_seed(&[4; 32])
                    .unwrap()
                    .signing_key()
                    .identity()
                    .as_bytes()
                    .to_vec(),
            },
        );
        let v = verify_read_request(&signed).unwrap();
        assert_eq!(v.reader, k.identity());
        let mut elsewhere = signed.clone();
        elsewhere.request.as_mut().unwrap().node = vec![5; 33];
        assert!(verify_read_request(&elsewhere).is_err());
        let mut other = signed.clone();
        other.request.as_mut().unwrap().slip_id = vec![8; 32];
        assert!(verify_read_request(&other).is_err());
        let mut short = signed.clone();
        short.request.as_mut().unwrap().nonce = vec![1; 3];
        assert!(verify_read_request(&short).is_err());

        // An access record that carries the request must match it, and its signature verify.
        let record = |signed: v1::SignedReadRequest, slip: Vec<u8>| v1::AccessRecord {
            reader: k.identity().as_bytes().to_vec(),
            slip_id: slip,
            request: v.digest.as_bytes().to_vec(),
            granted: true,
            reason: String::new(),
            grant: vec![],
            at_ms: 5,
            signed_request: Some(signed),
        };
        check_access_record(&record(signed.clone(), vec![7; 32])).unwrap();
        let e = check_access_record(&record(signed.clone(), vec![8; 32])).unwrap_err();
        assert!(
            e.to_string().contains("another reader, record or request"),
            "{e}"
        );
        let mut forged = signed.clone();
        forged.signature[10] ^= 1;
        assert!(check_access_record(&record(forged.clone(), vec![7; 32])).is_err());

        // A batch holds 1 to MAX_ACCESS_BATCH good records, each request once.
        let one = record(signed, vec![7; 32]);
        let batch = |records: Vec<v1::AccessRecord>| v1::AccessBatch { records };
        check_access_batch(&batch(vec![one.clone()])).unwrap();
        let e = check_access_batch(&batch(vec![])).unwrap_err();
        assert!(e.to_string().contains("holds 0 records"), "{e}");
        let e = check_access_batch(&batch(vec![one.clone(), one.clone()])).unwrap_err();
        assert!(e.to_string().contains("in it twice"), "{e}");
        let e = check_access_batch(&batch(vec![one.clone(); MAX_ACCESS_BATCH + 1])).unwrap_err();
        assert!(e.to_string().contains("1 to 64"), "{e}");
        assert!(check_access_batch(&batch(vec![one, record(forged, vec![7; 32])])).is_err());
    }

    #[test]
    fn scopes_and_actions_are_checked() {
        use v1::consent_scope::Scope;
        let s = |scope| Some(v1::ConsentScope { scope: Some(scope) });
        check_scope("t", s(Scope::All(true)).as_ref()).unwrap();
        check_scope("t", s(Scope::RecordType("Observation".into())).as_ref()).unwrap();
        assert!(check_scope("t", s(Scope::All(false)).as_ref()).is_err());
        assert!(check_scope("t", s(Scope::Record(vec![1; 3])).as_ref()).is_err());
        assert!(check_scope("t", None).is_err());
        assert!(check_actions("t", 0).is_err());
        assert!(check_actions("t", 8).is_err());
        check_actions("t", 5).unwrap();
        assert_eq!(action_names(5), vec!["read", "copy"]);
    }
}
