//! A local network of real `medchain run` processes for end-to-end tests: made with
//! `medchain init --devnet`, driven over the HTTP API, killed with SIGKILL and restarted.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use medchain_api::{ApiClient, Status, StreamEvent};
use medchain_crypto::hash::domains;
use medchain_crypto::keys::KeyMaterial;
use medchain_proto::canonical::{Canonical, Hashed};
use medchain_proto::ledger::sign_transaction;
use medchain_proto::v1;

use super::medchain_bin;

/// A runtime for the library client in these synchronous tests.
fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime")
}

/// The API client of the node at `addr` (`host:port`).
pub fn client(addr: &str) -> ApiClient {
    ApiClient::new(addr).expect("a node API address")
}

/// Answers a node's challenges with a test participant's key (the CLI has its own, which
/// also checks the node against the chain's validators).
#[derive(Debug)]
pub struct KeyAuth(pub KeyMaterial);

impl medchain_api::Authenticator for KeyAuth {
    fn identity(&self) -> String {
        self.0.signing_key().identity().to_string()
    }

    fn respond(&self, challenge: &medchain_api::Challenge) -> Result<String, String> {
        let node: medchain_crypto::Identity = challenge.node.parse().map_err(|e| format!("{e}"))?;
        let bytes = hex::decode(&challenge.challenge).map_err(|e| e.to_string())?;
        let signature = medchain_proto::auth::sign_response(
            &self.0.signing_key(),
            &challenge.chain_id,
            &node,
            &bytes,
        );
        Ok(hex::encode(signature.as_bytes()))
    }
}

/// The API client of the node at `addr`, authenticated as `key`.
pub fn client_as(addr: &str, key: &KeyMaterial) -> ApiClient {
    client(addr).with_authenticator(std::sync::Arc::new(KeyAuth(key.clone())))
}

/// A bearer token of the node at `addr` for `key`.
pub fn token(addr: &str, key: &KeyMaterial) -> String {
    call(client_as(addr, key).authenticate())
        .expect("a token")
        .token
}

/// Like [`http`], as the caller `key` (a bearer token fetched first). A test that asks many
/// times should keep one [`client_as`] and use [`http_with`]: a node gives one identity at most
/// 120 tokens a minute.
pub fn http_as(
    addr: &str,
    key: &KeyMaterial,
    method: &str,
    path: &str,
    body: Option<&str>,
) -> Option<(u16, String)> {
    http_with(&client_as(addr, key), method, path, body)
}

/// Like [`http`], through `client` (which keeps and renews its token).
pub fn http_with(
    client: &ApiClient,
    method: &str,
    path: &str,
    body: Option<&str>,
) -> Option<(u16, String)> {
    let method: medchain_api::Method = method.parse().expect("an HTTP method");
    let body = body.unwrap_or("").as_bytes().to_vec();
    let (status, bytes) = call(client.send(method, path, "application/json", body.into())).ok()?;
    Some((
        status.as_u16(),
        String::from_utf8_lossy(&bytes).into_owned(),
    ))
}

/// One raw HTTP/1.1 request (`Connection: close`) with the given extra header lines and no
/// body, as curl would send it; returns (status, body). A `Content-Length` header among them
/// announces a body that never comes (to see whether the node answers before reading it).
pub fn raw_http(addr: &str, method: &str, path: &str, headers: &[&str]) -> (u16, String) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).expect("the node's API");
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    if !headers
        .iter()
        .any(|h| h.to_ascii_lowercase().starts_with("content-length:"))
    {
        req.push_str("Content-Length: 0\r\n");
    }
    for h in headers {
        req.push_str(h);
        req.push_str("\r\n");
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).unwrap();
    let mut answer = String::new();
    let _ = s.read_to_string(&mut answer);
    let status = answer
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = answer
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

/// Runs one call of the library client to completion.
pub fn call<T>(f: impl std::future::Future<Output = T>) -> T {
    runtime().block_on(f)
}

/// One `GET`/`POST` with a JSON body through the library client; returns (status, body) so a
/// test can check refusals exactly. `None` if unreachable.
pub fn http(addr: &str, method: &str, path: &str, body: Option<&str>) -> Option<(u16, String)> {
    let method: medchain_api::Method = method.parse().expect("an HTTP method");
    let body = body.unwrap_or("").as_bytes().to_vec();
    let (status, bytes) =
        call(client(addr).send(method, path, "application/json", body.into())).ok()?;
    Some((
        status.as_u16(),
        String::from_utf8_lossy(&bytes).into_owned(),
    ))
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
            // Signed now: contract rules 2 refuse a transaction outside its validity window.
            timestamp_ms: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .expect("clock after 1970")
                .as_millis() as u64,
            payload: Some(v1::transaction_body::Payload::IdentityRegistration(
                v1::IdentityRegistration {
                    identity: binding.identity.as_bytes().to_vec(),
                    encryption_key: binding.encryption_key.to_bytes(),
                    search_key: binding.search_key.to_bytes().to_vec(),
                    binding_signature: binding.signature.as_bytes().to_vec(),
                    role: v1::Role::Patient as i32,
                    // A patient has no name on chain (rules 3).
                    name: String::new(),
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
    serde_json::to_string(&medchain_api::SubmitRequest {
        transaction: hex::encode(tx.canonical_bytes()),
    })
    .expect("serializes")
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

    /// Replaces the first `from` in node `i`'s `config.toml` by `to` (before it starts).
    pub fn set_config(&self, i: usize, from: &str, to: &str) {
        let path = self.home(i).join("config.toml");
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains(from), "{from:?} not in {}", path.display());
        std::fs::write(&path, text.replacen(from, to, 1)).unwrap();
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
            self.wait(30, |d| (0..n)
                .all(|i| d.status(i).is_some_and(|s| s.peers_connected == n - 1))),
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

    pub fn status(&self, i: usize) -> Option<Status> {
        call(client(&self.apis[i]).status()).ok()
    }

    pub fn height(&self, i: usize) -> u64 {
        self.status(i).map_or(0, |s| s.height)
    }

    pub fn committed(&self, i: usize) -> u64 {
        self.status(i).map_or(0, |s| s.committed_transactions)
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
        let block = call(client(&self.apis[i]).block(height)).ok()??;
        Some(block.hash)
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

/// Reads `GET /v1/events` from `addr` until the block events seen list `transactions`
/// transaction ids in all (or nothing arrives for `secs`); returns each block event's (height,
/// hash, transaction ids). The stream is open when this returns, so call it before submitting:
/// the stream carries only blocks committed after it connected.
pub fn block_events(
    addr: &str,
    transactions: usize,
    secs: u64,
) -> std::thread::JoinHandle<Vec<(u64, String, Vec<String>)>> {
    let rt = runtime();
    let mut stream = rt
        .block_on(client(addr).events())
        .expect("opening the event stream");
    std::thread::spawn(move || {
        rt.block_on(async move {
            let mut events = Vec::new();
            let mut seen = 0;
            let idle = Duration::from_secs(secs);
            while seen < transactions {
                match tokio::time::timeout(idle, stream.next()).await {
                    Ok(Some(Ok(StreamEvent::Block(b)))) => {
                        seen += b.transactions.len();
                        events.push((b.height, b.hash, b.transactions));
                    }
                    Ok(Some(Ok(StreamEvent::Lagged(l)))) => {
                        panic!("the stream lagged by {} blocks", l.missed)
                    }
                    _ => break,
                }
            }
            events
        })
    })
}
