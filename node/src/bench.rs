//! `medchain bench`: drives a running private network with signed record-write transactions from
//! several concurrent clients and reports what was submitted and committed, throughput and commit
//! latency.
//!
//! Each transaction is a record write as `medchain record add` makes it: a 1 KiB FHIR Observation
//! encrypted to its patient with one encrypted keyword, uploaded with its slip signed by the
//! doctor (the client's key), so a node verifies two signatures per transaction (the envelope and
//! the slip) and stores and replicates the ciphertext. The bench registers its doctors and
//! patients with the devnet's authority key, and builds, encrypts and signs every write before
//! the clock starts. Client `c` sends to the `c mod n`-th node that answers. Commit time is
//! when the first answering node pushes the block holding the transaction on its event stream
//! (`GET /v1/events`); latency is from the moment the client sent it.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use medchain_crypto::hash::domains;
use medchain_crypto::keys::KeyMaterial;
use medchain_proto::canonical::{Canonical, Hashed};
use medchain_proto::v1;
use tokio::time::Instant;

use crate::client::records::{build_record_write, PatientKeys, RecordInput};

use medchain_api::{ApiClient, StreamEvent};

use crate::config;

/// What to run.
#[derive(Debug, Clone)]
pub struct BenchConfig {
    pub devnet: PathBuf,
    pub clients: usize,
    pub transactions: usize,
    /// Offered load in transactions per second over all clients; 0 sends as fast as accepted.
    pub rate: f64,
    pub timeout: Duration,
}

/// The figures of one run.
#[derive(Debug, Clone, serde::Serialize)]
pub struct BenchReport {
    pub submitted: usize,
    pub accepted: usize,
    pub refused: usize,
    pub committed: usize,
    pub seconds: f64,
    pub tps: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    pub refusals: Vec<String>,
}

/// A deterministic participant key for run `seed`, role tag and number.
fn participant(seed: u64, tag: u8, n: usize) -> KeyMaterial {
    let d = medchain_crypto::digest(
        domains::DERIVE_SIGNING_KEY,
        &[
            seed.to_be_bytes().as_slice(),
            &[tag],
            &(n as u64).to_be_bytes(),
        ]
        .concat(),
    );
    KeyMaterial::from_seed(d.as_bytes()).expect("32 bytes")
}

/// A small FHIR Observation, the common case of a record (about 1 KiB).
pub fn sample_observation(n: u64) -> Vec<u8> {
    serde_json::json!({
        "resourceType": "Observation",
        "id": format!("bench-{n}"),
        "status": "final",
        "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category", "code": "vital-signs"}]}],
        "code": {"coding": [{"system": "http://loinc.org", "code": "85354-9", "display": "Blood pressure panel"}]},
        "effectiveDateTime": "2026-11-22T09:30:00Z",
        "component": [
            {"code": {"coding": [{"system": "http://loinc.org", "code": "8480-6", "display": "Systolic blood pressure"}]},
             "valueQuantity": {"value": 110 + n % 40, "unit": "mmHg", "system": "http://unitsofmeasure.org", "code": "mm[Hg]"}},
            {"code": {"coding": [{"system": "http://loinc.org", "code": "8462-4", "display": "Diastolic blood pressure"}]},
             "valueQuantity": {"value": 70 + n % 20, "unit": "mmHg", "system": "http://unitsofmeasure.org", "code": "mm[Hg]"}}
        ],
        "note": [{"text": "Routine check; patient seated, right arm, adult cuff. Repeat in three months unless symptoms change."}]
    })
    .to_string()
    .into_bytes()
}

/// Registers the bench's doctors and patients with the devnet's authority key and waits until
/// every registration is committed.
async fn register_participants(
    api: SocketAddr,
    authority: &KeyMaterial,
    doctors: &[KeyMaterial],
    patients: &[KeyMaterial],
) -> Result<()> {
    let client = crate::client::Client::connect_as(&format!("http://{api}"), authority).await?;
    let mut ids = Vec::new();
    for (keys, role) in doctors
        .iter()
        .map(|k| (k, v1::Role::Doctor))
        .chain(patients.iter().map(|k| (k, v1::Role::Patient)))
    {
        let named =
            role != v1::Role::Patient || client.chain.rules < medchain_ledger::contracts::rules::V3;
        let reg = crate::client::KeyCard::from_binding(&keys.key_binding()).registration_under(
            client.chain.rules,
            role,
            named.then_some("bench participant"),
        )?;
        let tx = client.sign(
            authority,
            v1::transaction_body::Payload::IdentityRegistration(reg),
        );
        ids.push(client.submit(&tx).await?);
    }
    for id in ids {
        client.wait_committed(&id, Duration::from_secs(60)).await?;
    }
    Ok(())
}

fn devnet_nodes(dir: &Path) -> Result<(String, Vec<SocketAddr>)> {
    let mut homes: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("reading devnet folder {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.join(config::CONFIG_FILE).exists())
        .collect();
    homes.sort();
    if homes.is_empty() {
        bail!(
            "{} holds no node home folders (make one with `medchain init --devnet 4 --out {}`)",
            dir.display(),
            dir.display()
        );
    }
    let mut chain = String::new();
    let mut apis = Vec::new();
    for h in homes {
        let loaded = config::load(&h)?;
        chain = loaded.genesis.chain_id.clone();
        apis.push(loaded.config.api.listen.parse()?);
    }
    Ok((chain, apis))
}

use crate::clock::now_ms;

/// One prepared upload: the transaction's id (hex) and the `RecordUpload` bytes.
type Upload = (String, Vec<u8>);

/// Runs the benchmark against a running devnet.
pub async fn run(cfg: BenchConfig) -> Result<BenchReport> {
    let (chain_id, all) = devnet_nodes(&cfg.devnet)?;
    // Only the nodes that answer take part (a node may be down on purpose).
    let mut apis = Vec::new();
    for a in all {
        if ApiClient::new(&a.to_string())?.status().await.is_ok() {
            apis.push(a);
        }
    }
    if apis.is_empty() {
        bail!(
            "no node of {} answers on its API; start them with `medchain run`",
            cfg.devnet.display()
        );
    }
    let clients = cfg.clients.max(1);
    let seed = now_ms();
    // One doctor per client, writing for a handful of patients, registered by the devnet's
    // authority before the clock starts.
    let authority_path = cfg.devnet.join(crate::home_files::DEVNET_AUTHORITY_KEY);
    let authority = crate::client::load_key(&authority_path, None).with_context(|| {
        format!(
            "the bench registers its doctors and patients with the devnet's authority key {}",
            authority_path.display()
        )
    })?;
    let doctors: Vec<KeyMaterial> = (0..clients).map(|c| participant(seed, b'd', c)).collect();
    let patients: Vec<KeyMaterial> = (0..clients.clamp(1, 8))
        .map(|p| participant(seed, b'p', p))
        .collect();
    eprintln!(
        "registering {} doctors and {} patients...",
        doctors.len(),
        patients.len()
    );
    register_participants(apis[0], &authority, &doctors, &patients).await?;
    // Each client uploads as its doctor, authenticated before the clock starts.
    let mut uploaders = Vec::new();
    for (c, doctor) in doctors.iter().enumerate() {
        let api = apis[c % apis.len()];
        let client = crate::client::Client::connect_as(&format!("http://{api}"), doctor).await?;
        client.api.authenticate().await?;
        uploaders.push(client.api);
    }
    // Build, encrypt and sign every record write first.
    eprintln!(
        "encrypting and signing {} record writes...",
        cfg.transactions
    );
    let per_client = cfg.transactions.div_ceil(clients);
    let work: Vec<Vec<Upload>> = {
        let chain_id = chain_id.clone();
        let total = cfg.transactions;
        let patient_keys: Vec<PatientKeys> = patients
            .iter()
            .map(|p| PatientKeys {
                identity: p.signing_key().identity(),
                encryption: p.encryption_key().public_key(),
                search: p.search_key().public_key(),
            })
            .collect();
        tokio::task::spawn_blocking(move || -> Result<Vec<Vec<Upload>>> {
            let now = now_ms();
            let mut all = Vec::new();
            for (c, doctor) in doctors.iter().enumerate() {
                let mut mine = Vec::new();
                for k in (0..per_client).filter(|k| c * per_client + k < total) {
                    let n = (c * per_client + k) as u64;
                    let w = build_record_write(
                        &chain_id,
                        doctor,
                        &patient_keys[k % patient_keys.len()],
                        &RecordInput {
                            plaintext: sample_observation(n),
                            record_type: "Observation".into(),
                            keywords: vec!["blood pressure".into()],
                            replaces: None,
                        },
                        k as u64 + 1,
                        now,
                    )?;
                    let id = w
                        .transaction
                        .body
                        .as_ref()
                        .expect("built with a body")
                        .digest()
                        .to_hex();
                    let upload = v1::RecordUpload {
                        transaction: Some(w.transaction),
                        ciphertext: w.ciphertext,
                    };
                    mine.push((id, upload.canonical_bytes()));
                }
                all.push(mine);
            }
            Ok(all)
        })
        .await??
    };
    let watcher = ApiClient::new(&apis[0].to_string())?;
    let start_height = watcher.status().await?.height;
    let sent_at: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let committed_at: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let refusals: Arc<Mutex<Vec<String>>> = Arc::default();
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    eprintln!(
        "sending {} record writes from {clients} clients to {} nodes...",
        cfg.transactions,
        apis.len()
    );
    let t0 = Instant::now();

    // Watcher: records when each transaction's block is pushed by node 0.
    let poller = {
        let committed_at = committed_at.clone();
        let done = done.clone();
        let mut events = watcher.events().await?;
        tokio::spawn(async move {
            let seen = |ids: &mut dyn Iterator<Item = &String>| {
                let now = Instant::now();
                let mut m = committed_at.lock().expect("not poisoned");
                for id in ids {
                    m.entry(id.clone()).or_insert(now);
                }
            };
            let mut next = start_height + 1;
            loop {
                if done.load(std::sync::atomic::Ordering::Relaxed) {
                    return;
                }
                let event = tokio::select! {
                    e = events.next() => e,
                    _ = tokio::time::sleep(Duration::from_millis(200)) => continue,
                };
                match event {
                    Some(Ok(StreamEvent::Block(b))) => {
                        // Blocks the stream did not carry (committed before it opened) first.
                        while next < b.height {
                            if let Ok(Some(block)) = watcher.block(next).await {
                                seen(&mut block.transactions.iter());
                            }
                            next += 1;
                        }
                        seen(&mut b.transactions.iter().chain(&b.failed));
                        next = next.max(b.height + 1);
                    }
                    // Lagged or broken: reopen (after a pause: node 0 may be down), then
                    // fetch what was missed.
                    _ => {
                        tokio::time::sleep(Duration::from_millis(200)).await;
                        if let Ok(e) = watcher.events().await {
                            events = e;
                        }
                        while let Ok(Some(block)) = watcher.block(next).await {
                            seen(&mut block.transactions.iter());
                            next += 1;
                        }
                    }
                }
            }
        })
    };

    // Progress on stderr every few seconds: a long run shows it is moving, and how fast.
    let progress = {
        let (sent_at, committed_at, refusals, done) = (
            sent_at.clone(),
            committed_at.clone(),
            refusals.clone(),
            done.clone(),
        );
        let total = cfg.transactions;
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(5));
            tick.tick().await;
            loop {
                tick.tick().await;
                if done.load(std::sync::atomic::Ordering::Relaxed) {
                    return;
                }
                let sent = sent_at.lock().expect("not poisoned").len();
                let refused = refusals.lock().expect("not poisoned").len();
                let committed = committed_at.lock().expect("not poisoned").len().min(sent);
                eprintln!(
                    "  {:>5.1} s: accepted {sent} of {total}, refused {refused}, committed {committed}",
                    t0.elapsed().as_secs_f64()
                );
            }
        })
    };

    let mut tasks = Vec::new();
    let interval = if cfg.rate > 0.0 {
        Some(Duration::from_secs_f64(clients as f64 / cfg.rate))
    } else {
        None
    };
    for (txs, client) in work.into_iter().zip(uploaders) {
        let sent_at = sent_at.clone();
        let refusals = refusals.clone();
        tasks.push(tokio::spawn(async move {
            let mut accepted = 0usize;
            let mut next_send = Instant::now();
            for (id, body) in txs {
                if let Some(iv) = interval {
                    tokio::time::sleep_until(next_send).await;
                    next_send += iv;
                }
                let sent = Instant::now();
                match client.upload(body).await {
                    Ok(_) => {
                        sent_at.lock().expect("not poisoned").insert(id, sent);
                        accepted += 1;
                    }
                    Err(e) => refusals.lock().expect("not poisoned").push(e.to_string()),
                }
            }
            accepted
        }));
    }
    let mut accepted = 0;
    for t in tasks {
        accepted += t.await?;
    }
    // Wait for the accepted transactions to commit.
    let deadline = Instant::now() + cfg.timeout;
    loop {
        let committed = {
            let s = sent_at.lock().expect("not poisoned");
            let c = committed_at.lock().expect("not poisoned");
            s.keys().filter(|k| c.contains_key(*k)).count()
        };
        if committed >= accepted || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    let _ = poller.await;
    progress.abort();
    let sent = sent_at.lock().expect("not poisoned").clone();
    let committed = committed_at.lock().expect("not poisoned").clone();
    let mut latencies: Vec<f64> = Vec::new();
    let mut last = t0;
    for (id, s) in &sent {
        if let Some(c) = committed.get(id) {
            latencies.push(c.duration_since(*s).as_secs_f64() * 1000.0);
            last = last.max(*c);
        }
    }
    latencies.sort_by(|a, b| a.total_cmp(b));
    let pct = |p: f64| {
        if latencies.is_empty() {
            0.0
        } else {
            latencies[((latencies.len() as f64 * p).ceil() as usize).clamp(1, latencies.len()) - 1]
        }
    };
    let seconds = last.duration_since(t0).as_secs_f64();
    let refusals = refusals.lock().expect("not poisoned").clone();
    let mut reasons: Vec<String> = refusals.iter().take(5).cloned().collect();
    reasons.dedup();
    Ok(BenchReport {
        submitted: cfg.transactions,
        accepted,
        refused: refusals.len(),
        committed: latencies.len(),
        seconds,
        tps: if seconds > 0.0 {
            latencies.len() as f64 / seconds
        } else {
            0.0
        },
        p50_ms: pct(0.50),
        p99_ms: pct(0.99),
        max_ms: latencies.last().copied().unwrap_or(0.0),
        refusals: reasons,
    })
}
