//! Logs as an operator configures them: `[log] format = "json"` gives one JSON object per line,
//! consensus progress appears at debug with view and sequence, and every refused input appears at
//! info with its reason; a node left on the defaults logs human-readable lines.

mod support;

use serde_json::Value;
use support::devnet::{client_as, http, http_with, registration_tx, submit_body, tx_id, Devnet};

#[test]
fn json_logs_by_config_with_consensus_events_and_refusals() {
    let tmp = tempfile::tempdir().unwrap();
    let base = support::base_port(28_000, 110, 40);
    let mut net = Devnet::init(&tmp.path().join("devnet"), 4, base);
    net.set_config(0, "format = \"human\"", "format = \"json\"");
    net.set_config(
        0,
        "level = \"info\"",
        "level = \"info,medchain_node=debug\"",
    );
    net.start_all_connected();

    let tx = registration_tx("hospital-dev", &net.authority(), 1, 1);
    let (code, body) = net.submit(0, &tx);
    assert_eq!(code, 202, "{body}");
    assert!(net.wait(30, |d| d.committed(0) >= 1 && d.committed(1) >= 1));
    let id = tx_id(&tx);
    let registry = client_as(&net.apis[0], &net.authority());
    assert!(net.wait(10, |_| http_with(
        &registry,
        "GET",
        &format!("/v1/transactions/{id}"),
        None
    )
    .is_some_and(|(c, _)| c == 200)));
    // Refused inputs: not hex, then hex that is no transaction, then a replay.
    let bad = http(
        &net.apis[0],
        "POST",
        "/v1/transactions",
        Some(r#"{"transaction":"zz"}"#),
    )
    .unwrap();
    assert_eq!(bad.0, 400);
    let garbage = http(
        &net.apis[0],
        "POST",
        "/v1/transactions",
        Some(r#"{"transaction":"0a0b"}"#),
    )
    .unwrap();
    assert_eq!(garbage.0, 400);
    let replay = http(
        &net.apis[0],
        "POST",
        "/v1/transactions",
        Some(&submit_body(&tx)),
    )
    .unwrap();
    assert_eq!(replay.0, 409, "{}", replay.1);
    net.kill(0);
    net.kill(1);
    net.kill(2);
    net.kill(3);

    let log = net.log(0);
    let events: Vec<Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let with = |message: &str| -> Vec<&Value> {
        events
            .iter()
            .filter(|e| e["fields"]["message"] == message)
            .collect()
    };
    // Consensus progress at debug, with view and sequence (node0 is the primary of view 0).
    let proposed = with("proposed a batch");
    assert!(!proposed.is_empty(), "{log}");
    assert_eq!(proposed[0]["level"], "DEBUG");
    assert_eq!(proposed[0]["fields"]["view"], 0);
    assert_eq!(proposed[0]["fields"]["seq"], 1);
    let prepared = with("prepared (quorum of prepares); sent commit");
    assert!(prepared.iter().any(|e| e["fields"]["seq"] == 1), "{log}");
    let committed = with("committed block");
    assert!(committed
        .iter()
        .any(|e| e["level"] == "INFO" && e["fields"]["height"] == 1));
    // Every refused request at info with its status and reason.
    let refused = with("refused a request");
    let reasons: Vec<(u64, String)> = refused
        .iter()
        .map(|e| {
            assert_eq!(e["level"], "INFO");
            assert_eq!(e["fields"]["path"], "/v1/transactions");
            (
                e["fields"]["status"].as_u64().unwrap(),
                e["fields"]["reason"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(reasons.len(), 3, "{reasons:?}");
    assert!(reasons[0].1.contains("must be the hex"), "{reasons:?}");
    assert!(
        reasons[1].1.contains("malformed transaction"),
        "{reasons:?}"
    );
    assert_eq!(reasons[2].0, 409);
    assert!(reasons[2].1.contains("already committed"), "{reasons:?}");

    // node1 kept the default: human-readable lines.
    let human = net.log(1);
    assert!(
        human.contains("INFO") && human.contains("committed block height=1"),
        "{human}"
    );
    assert!(human.lines().all(|l| !l.starts_with('{')));
}
