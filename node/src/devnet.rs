//! `medchain devnet`: the one-command local network. It creates (or reuses) a 4-node hospital
//! chain on 127.0.0.1 in a folder, starts the nodes as child processes (logs beside them), runs a
//! short scripted demo of the record workflow through the client library with a readable
//! summary, and keeps the network running until Ctrl-C (or exits after the demo). Ctrl-C reaches
//! the nodes too (same process group); each shuts down cleanly and this command waits for them.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use medchain_crypto::keys::KeyMaterial;
use medchain_crypto::keystore::{self, Protection};
use medchain_proto::v1::{self, transaction_body::Payload};

use crate::client::consent::{build_grant, parse_scope};
use crate::client::records::{build_record_write, RecordInput};
use crate::client::{fresh_nonce, now_ms, Client, KeyCard};

/// Nodes of the local network.
pub const NODES: usize = 4;
/// The API address of node `i`, read from its config (a reused folder keeps its ports).
fn api_of(dir: &Path, i: usize) -> Result<String> {
    let loaded = crate::config::load(&dir.join(format!("node{i}")))?;
    Ok(format!("http://{}", loaded.config.api.listen))
}

/// Children, stopped cleanly (SIGTERM, then waited for) when dropped.
struct Nodes(Vec<Child>);

impl Nodes {
    fn stop(&mut self) {
        for c in &self.0 {
            // SIGTERM through kill(1): the node's handler shuts it down cleanly.
            let _ = Command::new("kill")
                .args(["-TERM", &c.id().to_string()])
                .status();
        }
        for c in &mut self.0 {
            let _ = c.wait();
        }
        self.0.clear();
    }
}

impl Drop for Nodes {
    fn drop(&mut self) {
        self.stop();
    }
}

fn start_nodes(dir: &Path) -> Result<Nodes> {
    let exe = std::env::current_exe().context("locating the medchain binary")?;
    let mut children = Vec::new();
    for i in 0..NODES {
        let log_path = dir.join(format!("node{i}.log"));
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .with_context(|| format!("opening {}", log_path.display()))?;
        let child = Command::new(&exe)
            .args(["run", "--home"])
            .arg(dir.join(format!("node{i}")))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting node{i}"))?;
        children.push(child);
    }
    Ok(Nodes(children))
}

/// A demo participant's key in `dir/demo`, created on first use.
fn participant(dir: &Path, name: &str) -> Result<KeyMaterial> {
    let path = dir.join("demo").join(format!("{name}.key"));
    if path.exists() {
        return Ok(keystore::read_key_file(&path, None)?);
    }
    let keys = KeyMaterial::generate();
    keystore::write_key_file(&path, &keys, &Protection::InsecurePlaintext)?;
    KeyCard::from_binding(&keys.key_binding()).write(&crate::client::card_path(&path))?;
    Ok(keys)
}

async fn wait_ready(nodes: &mut Nodes, apis: &[String]) -> Result<()> {
    for _ in 0..150 {
        let mut ready = 0;
        for api in apis {
            let answer = match medchain_api::ApiClient::new(api) {
                Ok(c) => c.ready().await.ok(),
                Err(e) => return Err(e.into()),
            };
            if answer.is_some_and(|r| r.ready) {
                ready += 1;
            }
        }
        if ready == NODES {
            return Ok(());
        }
        for (i, c) in nodes.0.iter_mut().enumerate() {
            if let Some(status) = c.try_wait()? {
                bail!("node{i} exited ({status}); see its log");
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    bail!("the nodes did not become ready within 30 s; see the node logs")
}

async fn register(
    c: &Client,
    authority: &KeyMaterial,
    who: &KeyMaterial,
    role: v1::Role,
    name: Option<&str>,
) -> Result<()> {
    let id = who.signing_key().identity();
    if c.api.identity(&id.to_string()).await?.is_some() {
        return Ok(());
    }
    let reg =
        KeyCard::from_binding(&who.key_binding()).registration_under(c.chain.rules, role, name)?;
    let tx = c.sign(authority, Payload::IdentityRegistration(reg));
    c.submit_and_wait(&tx).await?;
    Ok(())
}

/// The scripted walk through the record workflow.
async fn demo(dir: &Path, apis: &[String]) -> Result<()> {
    let authority =
        keystore::read_key_file(&dir.join(crate::home_files::DEVNET_AUTHORITY_KEY), None)?;
    let (doctor_a, doctor_b, patient) = (
        participant(dir, "doctor-a")?,
        participant(dir, "doctor-b")?,
        participant(dir, "patient")?,
    );
    // Each participant talks to the API as herself: the endpoints that show patient data
    // answer only an authenticated caller, and only what she may see.
    let registry = Client::connect_as(&apis[0], &authority).await?;
    let patient_id = patient.signing_key().identity();
    let b_id = doctor_b.signing_key().identity();
    out!(
        "demo: the record workflow on chain {:?}",
        registry.chain.chain_id
    );

    register(
        &registry,
        &authority,
        &doctor_a,
        v1::Role::Doctor,
        Some("Dr A (demo)"),
    )
    .await?;
    register(
        &registry,
        &authority,
        &doctor_b,
        v1::Role::Doctor,
        Some("Dr B (demo)"),
    )
    .await?;
    register(
        &registry,
        &authority,
        &patient,
        v1::Role::Patient,
        // Named only on chains from before rules 3: from then on a patient has no name on
        // chain.
        (registry.chain.rules < medchain_ledger::contracts::rules::V3).then_some("Patient (demo)"),
    )
    .await?;
    out!(
        "  1. registered two doctors and a patient (keys in {})",
        dir.join("demo").display()
    );

    // The participants trust the chain's genesis file, not the nodes: every key they use is
    // checked against a header 2f + 1 validators certified.
    let genesis = dir.join("node0").join("genesis.toml");
    let trust = crate::client::Trust {
        genesis: Some(genesis),
        ..Default::default()
    };
    let a0 = Client::connect_as(&apis[0], &doctor_a)
        .await?
        .anchored(&trust)
        .await?;
    let b0 = Client::connect_as(&apis[0], &doctor_b)
        .await?
        .anchored(&trust)
        .await?;
    let b1 = Client::connect_as(&apis[1], &doctor_b)
        .await?
        .anchored(&trust)
        .await?;
    let p0 = Client::connect_as(&apis[0], &patient)
        .await?
        .anchored(&trust)
        .await?;
    let p1 = Client::connect_as(&apis[1], &patient)
        .await?
        .anchored(&trust)
        .await?;
    let record = crate::bench::sample_observation(now_ms());
    let keys = a0.patient_keys(&patient_id).await?;
    if let (_, Some(verified)) = a0.verified_identity(&patient_id).await? {
        out!(
            "     Dr A took the patient's keys from a proof: {}",
            verified.describe()
        );
    }
    let w = build_record_write(
        &a0.chain.chain_id.clone(),
        &doctor_a,
        &keys,
        &RecordInput {
            plaintext: record.clone(),
            record_type: "Observation".into(),
            keywords: vec!["blood pressure".into()],
            replaces: None,
        },
        fresh_nonce(),
        now_ms(),
    )?;
    let slip = a0.upload_record(&w).await?;
    out!(
        "  2. Dr A wrote an encrypted FHIR Observation ({} bytes of ciphertext): record {slip}",
        w.ciphertext.len()
    );
    p1.wait_for_record(&slip).await?;
    p1.confirm(&patient, &slip).await?;
    out!("  3. the patient checked the doctor's signature and H(M), and co-signed it");
    match b0.read(&doctor_b, &slip).await {
        Err(e) => out!("  4. Dr B's read was refused and audited: {e}"),
        Ok(_) => bail!("Dr B read the record without a grant"),
    }
    let grantee_key = crate::client::encryption_key(&p0.identity(&b_id).await?)?;
    let grant = build_grant(
        &p0.chain,
        &patient,
        &b_id,
        &grantee_key,
        parse_scope(&format!("record:{slip}"))?,
        v1::ConsentAction::Read as u32,
        now_ms() + 10 * 60 * 1000,
        None,
        1,
    )?;
    let (grant_id, committed) = p0
        .submit_and_wait(&p0.sign(&patient, Payload::ConsentGrant(grant)))
        .await?;
    out!("  5. the patient granted Dr B read on it for 10 minutes: grant {grant_id}");
    b1.wait_for_height(committed.height).await?;
    let read = b1.read(&doctor_b, &slip).await?;
    if read != record {
        bail!("Dr B decrypted something else than the record");
    }
    out!(
        "  6. Dr B read it through node1's proxy re-encryption: {} bytes, identical to what Dr A wrote",
        read.len()
    );
    tokio::time::sleep(Duration::from_millis(600)).await;
    let (events, check) = p0
        .audit_trail(
            medchain_ledger::contracts::queries::AuditSubject::Record(&slip),
            &format!("record={slip}"),
        )
        .await?;
    let proved = check.map_or("not verified".to_string(), |c| {
        format!("proved whole: {}", c.describe())
    });
    out!("  7. the record's audit trail, as the patient sees it ({proved}):");
    for e in events {
        out!(
            "       height {:>5}  {:<12} {}",
            e.height,
            e.op,
            e.detail.chars().take(90).collect::<String>()
        );
    }
    let v = p0
        .api
        .verify(&slip.to_hex())
        .await?
        .ok_or_else(|| anyhow!("record {slip} vanished"))?;
    out!("  8. tamper check on node0: stored ciphertext {}", v.status);
    Ok(())
}

/// Runs `medchain devnet`.
pub fn run(dir: PathBuf, exit_after_demo: bool, base_port: u16) -> Result<()> {
    if dir.join("node0/config.toml").exists() {
        out!(
            "reusing the devnet in {} (delete it for a fresh chain)",
            dir.display()
        );
    } else {
        crate::home_files::init_devnet(NODES, &dir, base_port, "hospital-dev")?;
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let apis = (0..NODES)
        .map(|i| api_of(&dir, i))
        .collect::<Result<Vec<_>>>()?;
    runtime.block_on(async move {
        let mut nodes = start_nodes(&dir)?;
        out!(
            "starting {NODES} nodes (logs in {}/node*.log)...",
            dir.display()
        );
        wait_ready(&mut nodes, &apis).await?;
        for (i, api) in apis.iter().enumerate() {
            out!("  node{i}: {api}  (status: medchain status --node {api})");
        }
        if let Err(e) = demo(&dir, &apis).await {
            out!("demo failed: {e:#}");
            if exit_after_demo {
                nodes.stop();
                return Err(e);
            }
        }
        if exit_after_demo {
            out!("demo done; stopping the nodes");
            nodes.stop();
            return Ok(());
        }
        out!("the devnet is running; Ctrl-C stops it");
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        out!("stopping the nodes...");
        nodes.stop();
        out!("stopped");
        Ok(())
    })
}
