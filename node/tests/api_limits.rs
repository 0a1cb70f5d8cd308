//! The client API under abuse, through the real binary: a client that trickles its headers
//! (slowloris) is cut off after `[api] header_read_timeout_ms`, connections past
//! `max_connections` are closed on arrival and counted, legitimate requests go on meanwhile, and
//! a limit of 0 is refused by `medchain config check`.

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use support::devnet::{http, Devnet};

/// Reads until the server closes the connection or `limit` passes; whether it closed.
fn closed_within(s: &mut TcpStream, limit: Duration) -> bool {
    s.set_read_timeout(Some(limit)).unwrap();
    let mut buf = [0u8; 1024];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return true,
            Err(_) => return false,
        }
    }
}

#[test]
#[allow(clippy::disallowed_methods)] // real processes, real time
fn slow_clients_and_connection_floods_are_cut_off() {
    let tmp = tempfile::tempdir().unwrap();
    let base = support::base_port(32_420, 110, 3);
    let mut net = Devnet::init(&tmp.path().join("devnet"), 4, base);
    net.set_config(
        0,
        "header_read_timeout_ms = 10000",
        "header_read_timeout_ms = 1000",
    );
    net.set_config(0, "max_connections = 1024", "max_connections = 4");

    // A limit of 0 is a configuration error that names the field.
    net.set_config(1, "max_connections = 1024", "max_connections = 0");
    let out = support::medchain(&["config", "check", "--home", net.home(1).to_str().unwrap()]);
    let (_, err) = support::text(&out);
    assert!(!out.status.success());
    assert!(err.contains("api.max_connections"), "{err}");

    // One node is enough: the API serves without a quorum.
    net.start(0);
    let api = net.apis[0].clone();
    assert!(net.wait(30, |d| http(&d.apis[0], "GET", "/health", None).is_some()));

    // Slowloris: headers never finish; the node closes the connection after about 1 s.
    let mut slow = TcpStream::connect(&api).unwrap();
    slow.write_all(b"GET /health HTTP/1.1\r\nHost: medchain\r\n")
        .unwrap();
    let t0 = Instant::now();
    let (code, _) =
        http(&api, "GET", "/health", None).expect("a legitimate client is served meanwhile");
    assert_eq!(code, 200);
    assert!(
        closed_within(&mut slow, Duration::from_secs(8)),
        "the slow client was not cut off"
    );
    let held = t0.elapsed();
    assert!(
        held >= Duration::from_millis(800),
        "cut off after {held:?}, before its timeout"
    );

    // A connection flood: four idle connections take every slot; a fifth is closed at once.
    let idle: Vec<TcpStream> = (0..4).map(|_| TcpStream::connect(&api).unwrap()).collect();
    std::thread::sleep(Duration::from_millis(300));
    let mut fifth = TcpStream::connect(&api).unwrap();
    let _ = fifth.write_all(b"GET /health HTTP/1.1\r\nHost: medchain\r\n\r\n");
    assert!(
        closed_within(&mut fifth, Duration::from_secs(1)),
        "a connection past the limit was served"
    );
    // The idle ones are cut off by the header timeout too, and the node serves again.
    drop(idle);
    assert!(net.wait(10, |d| http(&d.apis[0], "GET", "/health", None)
        .is_some_and(|(c, _)| c == 200)));
    let (_, metrics) = http(&api, "GET", "/metrics", None).unwrap();
    let refused = metrics
        .lines()
        .find(|l| l.starts_with("medchain_api_connections_refused_total"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or(0.0);
    assert!(refused >= 1.0, "refusals not counted:\n{metrics}");
    assert!(
        net.log(0).contains("max_connections"),
        "the refusal is not logged"
    );
}
