//! A local network of real `medchain run` processes for end-to-end tests: made with
//! `medchain init --devnet`, driven over the HTTP API, killed with SIGKILL and restarted.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use medchain_crypto::hash::domains;
use medchain_crypto::keys::KeyMaterial;
use medchain_proto::canonical::{Canonical, Hashed};
use medchain_proto::ledger::sign_transaction;
use medchain_proto::v1;
use serde_json::Value;

use super::medchain_bin;

/// One `GET`/`POST` over a fresh connection; returns (status, body). `None` if unreachable.
pub fn http(addr: &str, method: &str, path: &str, body: Option<&str>) -> Option<(u16, String)> {
    let mut s = TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(20))).ok()?;
    let body = body.unwrap_or("");
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).ok()?;
    let mut resp = String::new();
    s.read_to_string(&mut resp).ok()?;
    let status = resp.split_whitespace().nth(1)?.parse().ok()?;
    let body = resp.split_once("\r\n\r\n").map(|(_, b)| b.to_string())?;
    Some((status, body))
}

/// The registration of a fresh participant (derived from `participant`) by `authority` with
/// `nonce`: a real transaction every node checks (two signatures: the authority's and the
/// participant's key binding) and executes.
pub fn registration_tx(
    chain_id: &str,
    authority: &KeyMaterial,
    nonce: u64,
    participant: u64,
) -> v1::Transaction {
    let seed = medchain_crypto::digest(domains::DERIVE_SIGNING_KEY, &participant.to_be_bytes());
    let binding = KeyMaterial::from_seed(seed.as_bytes())
        .expect("32 bytes")
        .key_binding();
    sign_transaction(
        &authority.signing_key(),
        v1::TransactionBody {
            chain_id: chain_id.into(),
            signer: vec![],
            nonce,
            timestamp_ms: 1_700_000_000_000 + nonce,
            payload: Some(v1::transaction_body::Payload::IdentityRegistration(
                v1::IdentityRegistration {
                    identity: binding.identity.as_bytes().to_vec(),
                    encryption_key: binding.encryption_key.to_bytes(),
                    search_key: binding.search_key.to_bytes().to_vec(),
                    binding_signature: binding.signature.as_bytes().to_vec(),
                    role: v1::Role::Patient as i32,
                    name: format!("e2e patient {participant}"),
                },
            )),
        },
    )
}

/// The id (hex) of a transaction.
pub fn tx_id(tx: &v1::Transaction) -> String {
    tx.body.as_ref().expect("body").digest().to_hex()
}

/// The JSON body the API takes.
pub fn submit_body(tx: &v1::Transaction) -> String {
    serde_json::json!({ "transaction": hex::encode(tx.canonical_bytes()) }).to_string()
}

/// Nodes of a local network.
#[derive(Debug)]
pub struct Devnet {
    pub dir: PathBuf,
    pub apis: Vec<String>,
    children: Vec<Option<Child>>,
}

impl Devnet {
    /// `medchain init --devnet n` into `dir` with ports from `base_port`.
    pub fn init(dir: &Path, n: usize, base_port: u16) -> Devnet {
        let out = Command::new(medchain_bin())
            .args(["init", "--devnet", &n.to_string(), "--out"])
            .arg(dir)
            .args(["--base-port", &base_port.to_string()])
            .output()
            .expect("medchain runs");
        assert!(
            out.status.success(),
            "init --devnet failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Devnet {
            dir: dir.to_path_buf(),
            apis: (0..n)
                .map(|i| format!("127.0.0.1:{}", base_port as usize + 100 + i))
                .collect(),
            children: (0..n).map(|_| None).collect(),
        }
    }

    /// The devnet's registration authority (its plaintext key beside the node folders).
    pub fn authority(&self) -> KeyMaterial {
        medchain_crypto::keystore::read_key_file(&self.dir.join("authority.key"), None)
            .expect("init --devnet writes authority.key")
    }

    pub fn home(&self, i: usize) -> PathBuf {
        self.dir.join(format!("node{i}"))
    }

    /// Starts node `i` (appending its logs to `node{i}.log`).
    pub fn start(&mut self, i: usize) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join(format!("node{i}.log")))
            .expect("log file");
        let child = Command::new(medchain_bin())
            .args(["run", "--home"])
            .arg(self.home(i))
            // Logging as the node's config says (`[log]`), not as the caller's shell does.
            .env_remove("MEDCHAIN_LOG")
            .env_remove("MEDCHAIN_LOG_FORMAT")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("medchain run starts");
        self.children[i] = Some(child);
    }

    /// Starts every node and waits until each is connected to all the others.
    pub fn start_all_connected(&mut self) {
        let n = self.children.len();
        for i in 0..n {
            self.start(i);
        }
        assert!(
            self.wait(30, |d| (0..n).all(|i| d
                .status(i)
                .is_some_and(|s| s["peers_connected"] == n - 1))),
            "the {n} nodes did not connect:\n{}",
            self.log(0)
        );
    }

    /// SIGKILLs node `i`.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut c) = self.children[i].take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn log(&self, i: usize) -> String {
        std::fs::read_to_string(self.dir.join(format!("node{i}.log"))).unwrap_or_default()
    }

    pub fn status(&self, i: usize) -> Option<Value> {
        let (code, body) = http(&self.apis[i], "GET", "/v1/status", None)?;
        (code == 200).then(|| serde_json::from_str(&body).ok())?
    }

    pub fn height(&self, i: usize) -> u64 {
        self.status(i)
            .and_then(|s| s["height"].as_u64())
            .unwrap_or(0)
    }

    pub fn committed(&self, i: usize) -> u64 {
        self.status(i)
            .and_then(|s| s["committed_transactions"].as_u64())
            .unwrap_or(0)
    }

    /// Posts a transaction to node `i`; returns (status, body).
    pub fn submit(&self, i: usize, tx: &v1::Transaction) -> (u16, String) {
        http(
            &self.apis[i],
            "POST",
            "/v1/transactions",
            Some(&submit_body(tx)),
        )
        .unwrap_or((0, "unreachable".into()))
    }

    pub fn block_hash(&self, i: usize, height: u64) -> Option<String> {
        let (code, body) = http(&self.apis[i], "GET", &format!("/v1/blocks/{height}"), None)?;
        if code != 200 {
            return None;
        }
        let v: Value = serde_json::from_str(&body).ok()?;
        v["hash"].as_str().map(str::to_string)
    }

    /// Polls `cond` every 200 ms for up to `secs` seconds (a test waiting on real processes).
    #[allow(clippy::disallowed_methods)]
    pub fn wait(&self, secs: u64, mut cond: impl FnMut(&Devnet) -> bool) -> bool {
        for _ in 0..secs * 5 {
            if cond(self) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        cond(self)
    }
}

impl Drop for Devnet {
    fn drop(&mut self) {
        for i in 0..self.children.len() {
            self.kill(i);
        }
    }
}

/// Reads `GET /v1/events` from `addr` until the block events seen list `transactions` transaction
/// ids in all (or nothing arrives for `secs`); returns each block event's (height, hash, transaction ids).
/// Spawn it before submitting: the stream carries only blocks committed after it connected.
pub fn block_events(
    addr: &str,
    transactions: usize,
    secs: u64,
) -> std::thread::JoinHandle<Vec<(u64, String, Vec<String>)>> {
    let addr = addr.to_string();
    let mut s = TcpStream::connect(&addr).expect("connecting to the event stream");
    s.set_read_timeout(Some(Duration::from_secs(secs))).unwrap();
    let req =
        format!("GET /v1/events HTTP/1.1\r\nHost: {addr}\r\nAccept: text/event-stream\r\n\r\n");
    s.write_all(req.as_bytes()).unwrap();
    std::thread::spawn(move || {
        let mut raw = Vec::new();
        let mut buf = [0u8; 16_384];
        let mut events = Vec::new();
        let mut seen = 0;
        // Ends when enough were seen, or when nothing came for `secs` (the read timeout).
        while seen < transactions {
            let Ok(n) = s.read(&mut buf) else { break };
            if n == 0 {
                break;
            }
            raw.extend_from_slice(&buf[..n]);
            // Chunk framing aside, every event's data is one `data: {json}` line.
            events = String::from_utf8_lossy(&raw)
                .lines()
                .filter_map(|l| l.strip_prefix("data: "))
                .filter_map(|d| serde_json::from_str::<Value>(d).ok())
                .filter(|v| v.get("height").is_some())
                .map(|v| {
                    let ids = v["transactions"].as_array().unwrap().iter();
                    (
                        v["height"].as_u64().unwrap(),
                        v["hash"].as_str().unwrap().to_string(),
                        ids.map(|i| i.as_str().unwrap().to_string())
                            .collect::<Vec<_>>(),
                    )
                })
                .collect::<Vec<_>>();
            seen = events.iter().map(|e| e.2.len()).sum();
        }
        events
    })
}
