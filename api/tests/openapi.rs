//! `docs/api/openapi.yaml` describes what the types of this crate serialize: for every schema,
//! its properties are the fields the type writes, its `required` the fields always written, and
//! each property's JSON type (with `nullable` and `enum`) fits the values. Each type is given
//! here as samples with every optional field filled and with every one empty, so a field added,
//! renamed or made optional in the code without the description (or the other way round) fails.

use std::collections::BTreeSet;

use medchain_api::*;
use serde::Serialize;
use serde_json::{json, Value};

fn description() -> Value {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/api/openapi.yaml");
    let text = std::fs::read_to_string(path).expect("docs/api/openapi.yaml is readable");
    serde_norway::from_str(&text).expect("docs/api/openapi.yaml is YAML")
}

/// Follows `$ref` and a single-entry `allOf` (how OpenAPI 3.0 writes a nullable reference).
fn resolve<'a>(doc: &'a Value, schema: &'a Value) -> &'a Value {
    if let Some(r) = schema.get("$ref").and_then(Value::as_str) {
        let name = r.trim_start_matches("#/components/schemas/");
        return resolve(doc, &doc["components"]["schemas"][name]);
    }
    if let Some([only]) = schema
        .get("allOf")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
    {
        return resolve(doc, only);
    }
    schema
}

fn nullable(schema: &Value) -> bool {
    schema.get("nullable").and_then(Value::as_bool) == Some(true)
}

/// Checks one value against a property's schema; `at` names it in failures.
fn fits(doc: &Value, schema: &Value, value: &Value, at: &str) {
    if value.is_null() {
        assert!(
            nullable(schema),
            "{at} is null but not nullable in the description"
        );
        return;
    }
    let target = resolve(doc, schema);
    let ty = target["type"]
        .as_str()
        .unwrap_or_else(|| panic!("{at} has no type"));
    match ty {
        "integer" => assert!(
            value.is_u64() || value.is_i64(),
            "{at}: {value} is not an integer"
        ),
        "string" => {
            let s = value
                .as_str()
                .unwrap_or_else(|| panic!("{at}: {value} is not a string"));
            if let Some(allowed) = target.get("enum").and_then(Value::as_array) {
                assert!(
                    allowed.iter().any(|a| a == s),
                    "{at}: {s:?} is not in {allowed:?}"
                );
            }
        }
        "boolean" => assert!(value.is_boolean(), "{at}: {value} is not a boolean"),
        "array" => {
            let items = value
                .as_array()
                .unwrap_or_else(|| panic!("{at}: {value} is not an array"));
            for (i, v) in items.iter().enumerate() {
                fits(doc, &target["items"], v, &format!("{at}[{i}]"));
            }
        }
        "object" => nested(doc, target, value, at),
        other => panic!("{at}: unexpected type {other}"),
    }
}

/// An object inside a sample: only the fields it has are checked (its own type's samples check
/// the rest).
fn nested(doc: &Value, schema: &Value, value: &Value, at: &str) {
    let props = schema["properties"]
        .as_object()
        .unwrap_or_else(|| panic!("{at} has no properties"));
    let fields = value
        .as_object()
        .unwrap_or_else(|| panic!("{at}: {value} is not an object"));
    for (k, v) in fields {
        let prop = props
            .get(k)
            .unwrap_or_else(|| panic!("{at}.{k} is written but not described"));
        fits(doc, prop, v, &format!("{at}.{k}"));
    }
    for r in schema["required"].as_array().into_iter().flatten() {
        let r = r.as_str().expect("required names are strings");
        assert!(
            fields.contains_key(r),
            "{at}.{r} is required but not written"
        );
    }
}

/// Checks samples of one object type against its schema.
fn object(doc: &Value, schema: &Value, samples: &[Value], at: &str) {
    let keys = |v: &Value| -> BTreeSet<String> {
        v.as_object()
            .unwrap_or_else(|| panic!("{at} is not an object"))
            .keys()
            .cloned()
            .collect()
    };
    let written: BTreeSet<String> = samples.iter().flat_map(keys).collect();
    let always: BTreeSet<String> = samples
        .iter()
        .map(keys)
        .reduce(|a, b| a.intersection(&b).cloned().collect())
        .unwrap_or_default();
    let props = schema["properties"]
        .as_object()
        .unwrap_or_else(|| panic!("{at} has no properties"));
    let described: BTreeSet<String> = props.keys().cloned().collect();
    assert_eq!(
        written, described,
        "{at}: fields written (left) vs described (right)"
    );
    let required: BTreeSet<String> = schema["required"]
        .as_array()
        .map(|r| {
            r.iter()
                .filter_map(|k| k.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    assert_eq!(
        always, required,
        "{at}: fields always written (left) vs required (right)"
    );
    for sample in samples {
        for (k, v) in sample.as_object().expect("checked") {
            fits(doc, &props[k], v, &format!("{at}.{k}"));
        }
    }
}

thread_local! {
    static CHECKED: std::cell::RefCell<BTreeSet<String>> = Default::default();
}

fn check(doc: &Value, name: &str, samples: &[Value]) {
    CHECKED.with(|c| c.borrow_mut().insert(name.to_string()));
    let schema = &doc["components"]["schemas"][name];
    assert!(schema.is_object(), "the description has no schema {name}");
    object(doc, schema, samples, name);
}

fn v(x: impl Serialize) -> Value {
    serde_json::to_value(x).expect("serializes")
}

fn slip() -> Slip {
    Slip {
        slip_id: "aa".into(),
        height: 3,
        index: 0,
        timestamp_ms: 1,
        record_type: "Observation".into(),
        summary: "s".into(),
        doctor: "mcid1d".into(),
        patient: "mcid1p".into(),
        record_hash: "bb".into(),
        encrypted_address: "cc".into(),
        encrypted_keywords: vec!["dd".into()],
        patient_confirmed: false,
        ciphertext_hash: "ee".into(),
        ciphertext_size: 9,
        replaces: String::new(),
        slip: "ff".into(),
    }
}

fn record_slips() -> [RecordSlip; 2] {
    let full = RecordSlip {
        slip: slip(),
        confirmed_height: Some(4),
        deleted_height: Some(5),
        replaced_by: Some("11".into()),
        stored_here: true,
    };
    let empty = RecordSlip {
        confirmed_height: None,
        deleted_height: None,
        replaced_by: None,
        ..full.clone()
    };
    [full, empty]
}

fn grant(request: Option<String>, revoked: Option<u64>) -> GrantInfo {
    GrantInfo {
        grant: "g".into(),
        patient: "p".into(),
        grantee: "d".into(),
        scope: "all".into(),
        actions: vec!["read".into()],
        expires_ms: 1,
        threshold: 1,
        proxies: vec![0, 1],
        request,
        height: 2,
        revoked_height: revoked,
        status: GrantStatus::Active,
    }
}

fn request(status: RequestStatus, outcome: Option<RequestOutcome>) -> RequestInfo {
    RequestInfo {
        request: "r".into(),
        requester: "d".into(),
        patient: "p".into(),
        scope: "type:Observation".into(),
        actions: vec!["read".into()],
        expires_ms: 1,
        purpose: "care".into(),
        height: 2,
        status,
        outcome,
    }
}

fn audit(patient: Option<String>, record: Option<String>) -> AuditEntry {
    AuditEntry {
        op: "read".into(),
        height: 1,
        index: 0,
        time_ms: 2,
        actor: "a".into(),
        patient,
        record,
        detail: "granted".into(),
        transaction: "t".into(),
    }
}

#[test]
fn the_description_matches_the_types() {
    let doc = description();
    let status = Status {
        catching_up: Some((1, 9)),
        ..Status::default()
    };
    let no_proof = ErrorBody {
        error: "e".into(),
        proof: None,
    };
    check(
        &doc,
        "Health",
        &[v(Health {
            status: "ok".into(),
        })],
    );
    check(
        &doc,
        "Ready",
        &[v(status.readiness()), v(Status::default().readiness())],
    );
    check(&doc, "Status", &[v(&status), v(Status::default())]);
    let validator = ValidatorInfo {
        index: 0,
        name: "n".into(),
        identity: "i".into(),
        encryption_key: Some("k".into()),
    };
    let no_proxy = ValidatorInfo {
        encryption_key: None,
        ..validator.clone()
    };
    check(&doc, "ValidatorInfo", &[v(&validator), v(&no_proxy)]);
    let authority = AuthorityInfo {
        name: "a".into(),
        identity: "i".into(),
    };
    check(&doc, "AuthorityInfo", &[v(&authority)]);
    check(
        &doc,
        "ChainInfo",
        &[
            v(ChainInfo {
                chain_id: "c".into(),
                rules: 3,
                rules_upgrade: None,
                validators: vec![validator.clone(), no_proxy.clone()],
                authorities: vec![authority.clone()],
            }),
            v(ChainInfo {
                chain_id: "c".into(),
                rules: 4,
                rules_upgrade: Some(RulesUpgradeInfo {
                    version: 4,
                    activation_height: 30,
                    scheduled_at: 12,
                }),
                validators: vec![validator, no_proxy],
                authorities: vec![authority],
            }),
        ],
    );
    check(
        &doc,
        "RulesUpgradeInfo",
        &[v(RulesUpgradeInfo {
            version: 4,
            activation_height: 30,
            scheduled_at: 12,
        })],
    );
    check(
        &doc,
        "SubmitRequest",
        &[v(SubmitRequest {
            transaction: "00".into(),
        })],
    );
    check(
        &doc,
        "Accepted",
        &[v(Accepted {
            id: "i".into(),
            status: "pending".into(),
        })],
    );
    let tx = TransactionInfo {
        id: "i".into(),
        failed: Some("refused".into()),
        height: 1,
        index: 0,
        block_hash: "h".into(),
        transaction: "t".into(),
        proof: None,
    };
    let commit = CommitInfo {
        view: 0,
        signers: vec![0, 1, 2],
    };
    check(&doc, "CommitInfo", &[v(&commit)]);
    let block = Block {
        height: 1,
        hash: "h".into(),
        previous_hash: "p".into(),
        timestamp_ms: 1,
        creator: "c".into(),
        merkle_root: "m".into(),
        state_root: "s".into(),
        transaction_count: 1,
        transactions: vec!["t".into()],
        commit,
        header: "hd".into(),
        certificate: "cc".into(),
        block: Some("b".into()),
    };
    check(
        &doc,
        "Block",
        &[
            v(&block),
            v(Block {
                block: None,
                ..block.clone()
            }),
        ],
    );
    check(
        &doc,
        "Challenge",
        &[v(Challenge {
            challenge: "c".into(),
            chain_id: "h".into(),
            node: "n".into(),
            expires_ms: 1,
        })],
    );
    check(
        &doc,
        "TokenRequest",
        &[v(TokenRequest {
            identity: "i".into(),
            challenge: "c".into(),
            signature: "s".into(),
        })],
    );
    check(
        &doc,
        "Token",
        &[v(Token {
            token: "t".into(),
            identity: "i".into(),
            expires_ms: 1,
        })],
    );
    check(
        &doc,
        "BlockEvent",
        &[v(BlockEvent {
            height: 1,
            hash: "h".into(),
            timestamp_ms: 2,
            transactions: vec!["t".into()],
            failed: vec!["f".into()],
        })],
    );
    check(&doc, "Lagged", &[v(Lagged { missed: 3 })]);
    check(&doc, "Slip", &[v(slip())]);
    let [full, empty] = record_slips();
    check(&doc, "RecordSlip", &[v(&full), v(&empty)]);
    check(
        &doc,
        "PatientRecords",
        &[v(PatientRecords {
            patient: "p".into(),
            records: vec![full, empty],
        })],
    );
    check(
        &doc,
        "RecordAccepted",
        &[v(RecordAccepted {
            id: "i".into(),
            slip_id: "s".into(),
            status: "pending".into(),
        })],
    );
    let report = VerifyReport {
        slip_id: "s".into(),
        status: IntegrityStatus::Intact,
        ciphertext_hash_on_chain: "a".into(),
        ciphertext_hash_stored: Some("a".into()),
        record_hash_on_chain: "r".into(),
        node: "node0".into(),
    };
    let missing = VerifyReport {
        status: IntegrityStatus::Missing,
        ciphertext_hash_stored: None,
        ..report.clone()
    };
    check(&doc, "VerifyReport", &[v(&report), v(&missing)]);
    let suspension = SuspensionInfo {
        reason: "r".into(),
        height: 1,
        by: "a".into(),
    };
    check(&doc, "SuspensionInfo", &[v(&suspension)]);
    let identity = IdentityInfo {
        identity: "i".into(),
        role: Role::Doctor,
        name: "n".into(),
        encryption_key: "e".into(),
        search_key: "s".into(),
        height: 1,
        registered_by: "a".into(),
        suspended: Some(suspension),
        proof: None,
    };
    let certified = CertifiedHeader {
        height: 4,
        header: "h".into(),
        certificate: Some("c".into()),
    };
    let uncertified = CertifiedHeader {
        certificate: None,
        ..certified.clone()
    };
    check(&doc, "CertifiedHeader", &[v(&certified), v(&uncertified)]);
    check(
        &doc,
        "HeaderList",
        &[v(HeaderList {
            headers: vec![certified.clone(), uncertified],
            tip: 4,
        })],
    );
    let present = ProvedEntry {
        key: "k".into(),
        value: Some("v".into()),
        proof: "p".into(),
    };
    let absent = ProvedEntry {
        value: None,
        ..present.clone()
    };
    check(&doc, "ProvedEntry", &[v(&present), v(&absent)]);
    let proofs = StateProofs {
        header: certified.clone(),
        entries: vec![present, absent],
    };
    check(&doc, "StateProofs", &[v(&proofs)]);
    check(
        &doc,
        "ErrorBody",
        &[
            v(&no_proof),
            v(ErrorBody {
                proof: Some(proofs.clone()),
                ..no_proof.clone()
            }),
        ],
    );
    let inclusion = InclusionProof {
        header: certified.clone(),
        transaction: "t".into(),
        index: 1,
        leaf_count: 3,
        siblings: vec!["s".into(), "s".into()],
    };
    check(&doc, "InclusionProof", &[v(&inclusion)]);
    let record_proof = RecordProof {
        state: proofs.clone(),
        inclusion,
    };
    check(&doc, "RecordProof", &[v(&record_proof)]);
    let tx_proof = TransactionProof {
        inclusion: record_proof.inclusion.clone(),
        outcome: proofs.clone(),
    };
    check(&doc, "TransactionProof", &[v(&tx_proof)]);
    check(
        &doc,
        "TransactionInfo",
        &[
            v(&tx),
            v(TransactionInfo {
                failed: None,
                ..tx.clone()
            }),
            v(TransactionInfo {
                proof: Some(tx_proof),
                ..tx.clone()
            }),
        ],
    );
    let [full, empty] = record_slips();
    check(
        &doc,
        "RecordView",
        &[
            v(RecordView {
                slip: full.clone(),
                proof: None,
            }),
            v(RecordView {
                slip: empty,
                proof: None,
            }),
            v(RecordView {
                slip: full,
                proof: Some(record_proof),
            }),
        ],
    );
    check(
        &doc,
        "IdentityInfo",
        &[
            v(&identity),
            v(IdentityInfo {
                suspended: None,
                role: Role::Patient,
                ..identity.clone()
            }),
            v(IdentityInfo {
                proof: Some(proofs.clone()),
                ..identity.clone()
            }),
        ],
    );
    let approved = RequestOutcome {
        grant: Some("g".into()),
        reason: None,
        height: 3,
    };
    let denied = RequestOutcome {
        grant: None,
        reason: Some("no".into()),
        height: 3,
    };
    check(
        &doc,
        "RequestOutcome",
        &[v(&approved), v(&denied), v(json!({"height": 1}))],
    );
    let grants = vec![grant(Some("r".into()), Some(4)), grant(None, None)];
    check(&doc, "GrantInfo", &grants.iter().map(v).collect::<Vec<_>>());
    let requests = vec![
        request(RequestStatus::Approved, Some(approved)),
        request(RequestStatus::Denied, Some(denied)),
        request(RequestStatus::Open, None),
    ];
    check(
        &doc,
        "RequestInfo",
        &requests.iter().map(v).collect::<Vec<_>>(),
    );
    check(
        &doc,
        "ConsentList",
        &[
            v(ConsentList {
                grants: grants.clone(),
                requests: requests.clone(),
                proof: None,
            }),
            v(ConsentList {
                grants,
                requests,
                proof: Some(proofs.clone()),
            }),
        ],
    );
    let events = vec![audit(Some("p".into()), Some("r".into())), audit(None, None)];
    check(
        &doc,
        "AuditEntry",
        &events.iter().map(v).collect::<Vec<_>>(),
    );
    check(
        &doc,
        "AuditTrail",
        &[
            v(AuditTrail {
                events: events.clone(),
                proof: None,
            }),
            v(AuditTrail {
                events,
                proof: Some(proofs),
            }),
        ],
    );
    // Every schema the description lists is a type checked above: no stale leftovers.
    let listed: BTreeSet<String> = doc["components"]["schemas"]
        .as_object()
        .expect("schemas")
        .keys()
        .cloned()
        .collect();
    let checked = CHECKED.with(|c| c.borrow().clone());
    assert_eq!(
        listed, checked,
        "schemas described (left) vs checked against a type (right)"
    );
}
