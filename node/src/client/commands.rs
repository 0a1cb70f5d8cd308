//! The client subcommands: `identity`, `record`, `consent`, `audit`.

use anyhow::{anyhow, bail, Context, Result};
use medchain_api::{IntegrityStatus, RecordSlip, RequestStatus, TransactionInfo};
use medchain_crypto::keys::KeyMaterial;
use medchain_crypto::{Hash32, Identity};
use medchain_proto::v1::{self, transaction_body::Payload};

use super::consent::{build_grant, parse_actions, parse_scope, parse_time};
use super::records::{build_record_write, record_type_of, RecordInput};
use super::verified_lists::Party;
use super::{encryption_key, fresh_nonce, load_key, now_ms, Client, KeyCard};
use crate::cli::{AuditArgs, ClientArgs, ConsentCommand, IdentityCommand, RecordCommand, RoleArg};
use medchain_ledger::contracts::queries::AuditSubject;

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}

fn key(args: &ClientArgs) -> Result<KeyMaterial> {
    let path = args
        .key
        .as_ref()
        .ok_or_else(|| anyhow!("this command signs: give --key FILE (or set MEDCHAIN_KEY)"))?;
    load_key(path, args.password_file.as_deref())
}

/// Connects to `--node`, authenticated as `--key` when one is given (endpoints that show
/// patient data answer only an authenticated caller); the key, if one was loaded.
async fn connect(args: &ClientArgs) -> Result<(Client, Option<KeyMaterial>)> {
    match &args.key {
        Some(_) => {
            let k = key(args)?;
            Ok((
                Client::connect_as(&args.node, &k)
                    .await?
                    .anchored(&args.trust())
                    .await?,
                Some(k),
            ))
        }
        None => Ok((
            Client::connect(&args.node)
                .await?
                .anchored(&args.trust())
                .await?,
            None,
        )),
    }
}

/// Signs `payload` with `--key`, submits it to `--node` and waits for its block.
async fn act(args: &ClientArgs, payload: Payload) -> Result<TransactionInfo> {
    let k = key(args)?;
    let c = Client::connect_as(&args.node, &k)
        .await?
        .anchored(&args.trust())
        .await?;
    let tx = c.sign(&k, payload);
    Ok(c.submit_and_wait(&tx).await?.1)
}

fn identity_arg(text: &str) -> Result<Identity> {
    text.parse::<Identity>()
        .map_err(|e| anyhow!("{text:?} is not an identity: {e}"))
}

fn hash_arg(text: &str, what: &str) -> Result<Hash32> {
    Hash32::from_hex(text).map_err(|_| anyhow!("{what} {text:?} must be 64 hex characters"))
}

/// The identity to act on: the one given, else the owner of `--key`.
fn subject(given: Option<&str>, key: Option<&KeyMaterial>, what: &str) -> Result<Identity> {
    match (given, key) {
        (Some(t), _) => identity_arg(t),
        (None, Some(k)) => Ok(k.signing_key().identity()),
        (None, None) => bail!("give --{what} ID or --key FILE"),
    }
}

fn time_text(ms: u64) -> String {
    let secs = (ms / 1_000) as i64;
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}Z",
        rem / 3_600,
        rem % 3_600 / 60,
        rem % 60
    )
}

pub fn identity(cmd: IdentityCommand) -> Result<()> {
    runtime()?.block_on(async move {
        match cmd {
            IdentityCommand::Register {
                card,
                role,
                name,
                client: args,
            } => {
                let authority = key(&args)?;
                let card = KeyCard::read(&card)?;
                let role = match role {
                    RoleArg::Patient => v1::Role::Patient,
                    RoleArg::Doctor => v1::Role::Doctor,
                    RoleArg::Insurer => v1::Role::Insurer,
                    RoleArg::Researcher => v1::Role::Researcher,
                };
                let c = Client::connect_as(&args.node, &authority)
                    .await?
                    .anchored(&args.trust())
                    .await?;
                let reg = card.registration_under(c.chain.rules, role, name.as_deref())?;
                let tx = c.sign(&authority, Payload::IdentityRegistration(reg));
                let (_, v) = c.submit_and_wait(&tx).await?;
                out!(
                    "registered {}{} as {} at height {}",
                    card.identity,
                    name.map(|n| format!(" {n:?}")).unwrap_or_default(),
                    medchain_proto::records::role_name(role),
                    v.height
                );
            }
            IdentityCommand::Show {
                identity,
                client: args,
            } => {
                let (c, k) = connect(&args).await?;
                let id = subject(identity.as_deref(), k.as_ref(), "identity")?;
                let (info, verified) = c.verified_identity(&id).await?;
                out!("{}", serde_json::to_string_pretty(&info)?);
                // On stderr, so that stdout stays the identity's JSON.
                match verified {
                    Some(v) => eprintln!("{id}: {}", v.describe()),
                    None => {
                        eprintln!("{id}: as the node says (unverified: give --genesis to check it)")
                    }
                }
            }
            IdentityCommand::Suspend {
                identity,
                reason,
                client: args,
            } => {
                let id = identity_arg(&identity)?;
                let v = act(
                    &args,
                    Payload::Suspension(v1::Suspension {
                        identity: id.as_bytes().to_vec(),
                        reason,
                    }),
                )
                .await?;
                out!("suspended {id} at height {}", v.height);
            }
            IdentityCommand::Reinstate {
                identity,
                client: args,
            } => {
                let id = identity_arg(&identity)?;
                let v = act(
                    &args,
                    Payload::SuspensionLift(v1::SuspensionLift {
                        identity: id.as_bytes().to_vec(),
                    }),
                )
                .await?;
                out!("reinstated {id} at height {}", v.height);
            }
        }
        Ok(())
    })
}

fn print_record(s: &RecordSlip) {
    out!(
        "{}  {}  height {}  doctor {}  {}",
        s.slip.slip_id,
        s.slip.record_type,
        s.slip.height,
        s.slip.doctor,
        s.state_text()
    );
}

pub fn record(cmd: RecordCommand) -> Result<()> {
    runtime()?.block_on(async move {
        match cmd {
            RecordCommand::Add {
                patient,
                record_type,
                file,
                keywords,
                replaces,
                client: args,
            } => {
                let doctor = key(&args)?;
                let patient = identity_arg(&patient)?;
                let meta = std::fs::metadata(&file)
                    .with_context(|| format!("reading {}", file.display()))?;
                if meta.len() as usize > medchain_proto::canonical::limits::RECORD_PLAINTEXT {
                    bail!(
                        "{} is {} bytes; records are limited to {} bytes (16 MiB)",
                        file.display(),
                        meta.len(),
                        medchain_proto::canonical::limits::RECORD_PLAINTEXT
                    );
                }
                let plaintext =
                    std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?;
                let record_type = record_type_of(&plaintext, record_type.as_deref())?;
                let replaces = replaces.map(|r| hash_arg(&r, "--replaces")).transpose()?;
                let c = Client::connect_as(&args.node, &doctor).await?.anchored(&args.trust()).await?;
                let keys = c.patient_keys(&patient).await?;
                let w = build_record_write(
                    &c.chain.chain_id.clone(),
                    &doctor,
                    &keys,
                    &RecordInput {
                        plaintext,
                        record_type: record_type.clone(),
                        keywords,
                        replaces,
                    },
                    fresh_nonce(),
                    now_ms(),
                )?;
                let slip = c.upload_record(&w).await?;
                out!("{slip}");
                eprintln!(
                    "record {slip} ({record_type}, {} bytes encrypted) written for {patient}; it awaits the patient's confirmation",
                    w.ciphertext.len()
                );
            }
            RecordCommand::Confirm { slip, client: args } => {
                let patient = key(&args)?;
                let slip = hash_arg(&slip, "slip")?;
                let c = Client::connect_as(&args.node, &patient).await?.anchored(&args.trust()).await?;
                let plaintext = c.confirm(&patient, &slip).await?;
                out!(
                    "confirmed record {slip} ({} bytes, doctor's signature and H(M) checked)",
                    plaintext.len()
                );
            }
            RecordCommand::Pending { patient, client: args } => {
                let (c, k) = connect(&args).await?;
                let id = subject(patient.as_deref(), k.as_ref(), "patient")?;
                let list = c.api.patient_records(&id.to_string(), true).await?;
                if list.records.is_empty() {
                    out!("no records await confirmation by {id}");
                }
                for r in &list.records {
                    print_record(r);
                }
            }
            RecordCommand::Get { slip, out, client: args } => {
                let reader = key(&args)?;
                let slip = hash_arg(&slip, "slip")?;
                let c = Client::connect_as(&args.node, &reader).await?.anchored(&args.trust()).await?;
                let plaintext = c.read(&reader, &slip).await?;
                std::fs::write(&out, &plaintext)
                    .with_context(|| format!("writing {}", out.display()))?;
                out!(
                    "record {slip}: {} bytes written to {} (hash checked against the chain)",
                    plaintext.len(),
                    out.display()
                );
            }
            RecordCommand::Verify { slip, client: args } => {
                let slip = hash_arg(&slip, "slip")?;
                let (c, k) = connect(&args).await?;
                let v = c
                    .api
                    .verify(&slip.to_hex())
                    .await?
                    .ok_or_else(|| anyhow!("record {slip} does not exist"))?;
                let status = v.status;
                out!(
                    "record {slip} on node {}: stored ciphertext {status} (chain {}, stored {})",
                    v.node,
                    v.ciphertext_hash_on_chain,
                    v.ciphertext_hash_stored.as_deref().unwrap_or("-")
                );
                // An authority checks the ciphertext; it has no key that decrypts records.
                let reader = k.as_ref().filter(|k| {
                    let me = k.signing_key().identity().to_string();
                    !c.chain.authorities.iter().any(|a| a.identity == me)
                });
                if let (IntegrityStatus::Intact, Some(reader)) = (status, reader) {
                    c.read(reader, &slip).await?;
                    out!("plaintext hash matches H(M) on chain");
                }
                if status != IntegrityStatus::Intact {
                    bail!("record {slip} failed the tamper check: {status}");
                }
            }
            RecordCommand::Delete { slip, reason, client: args } => {
                let slip = hash_arg(&slip, "slip")?;
                let v = act(
                    &args,
                    Payload::RecordDeletion(v1::RecordDeletion {
                        slip_id: slip.as_bytes().to_vec(),
                        reason,
                    }),
                )
                .await?;
                out!(
                    "record {slip} deleted at height {}: its ciphertext is erased on every node; the slip and its history stay",
                    v.height
                );
            }
        }
        Ok(())
    })
}

pub fn consent(cmd: ConsentCommand) -> Result<()> {
    runtime()?.block_on(async move {
        match cmd {
            ConsentCommand::Grant { to, scope, actions, until, client: args } => {
                let patient = key(&args)?;
                let grantee = identity_arg(&to)?;
                let c = Client::connect_as(&args.node, &patient).await?.anchored(&args.trust()).await?;
                let grantee_key = encryption_key(&c.identity(&grantee).await?)?;
                let grant = build_grant(
                    &c.chain,
                    &patient,
                    &grantee,
                    &grantee_key,
                    parse_scope(&scope)?,
                    parse_actions(&actions)?,
                    parse_time(&until, now_ms())?,
                    None,
                    1,
                )?;
                let tx = c.sign(&patient, Payload::ConsentGrant(grant));
                let (id, v) = c.submit_and_wait(&tx).await?;
                out!("{id}");
                eprintln!("grant {id} to {grantee} on {scope} ({actions}) committed at height {}", v.height);
            }
            ConsentCommand::Request { patient, scope, actions, until, purpose, client: args } => {
                let me = key(&args)?;
                let patient = identity_arg(&patient)?;
                let c = Client::connect_as(&args.node, &me).await?.anchored(&args.trust()).await?;
                let tx = c.sign(
                    &me,
                    Payload::ConsentRequest(v1::ConsentRequest {
                        patient: patient.as_bytes().to_vec(),
                        scope: Some(parse_scope(&scope)?),
                        actions: parse_actions(&actions)?,
                        expires_ms: parse_time(&until, now_ms())?,
                        purpose,
                    }),
                );
                let (id, v) = c.submit_and_wait(&tx).await?;
                out!("{id}");
                eprintln!("request {id} to {patient} committed at height {}", v.height);
            }
            ConsentCommand::Approve { request, client: args } => {
                let patient = key(&args)?;
                let req_id = hash_arg(&request, "request")?;
                let c = Client::connect_as(&args.node, &patient).await?.anchored(&args.trust()).await?;
                let me = patient.signing_key().identity();
                // With an anchor, the request comes from the proved list: the node cannot
                // substitute its requester or scope.
                let (list, _) = c.consent_list(Party::Patient(&me)).await?;
                let req = list
                    .requests
                    .into_iter()
                    .find(|r| r.request == req_id.to_hex())
                    .ok_or_else(|| anyhow!("request {req_id} is not one of yours"))?;
                if req.status != RequestStatus::Open {
                    bail!("request {req_id} is {}, not open", req.status);
                }
                let requester = identity_arg(&req.requester)?;
                let requester_key = encryption_key(&c.identity(&requester).await?)?;
                let actions = req.actions.join(",");
                let grant = build_grant(
                    &c.chain,
                    &patient,
                    &requester,
                    &requester_key,
                    parse_scope(&req.scope)?,
                    parse_actions(&actions)?,
                    req.expires_ms,
                    Some(req_id),
                    1,
                )?;
                let tx = c.sign(&patient, Payload::ConsentGrant(grant));
                let (id, v) = c.submit_and_wait(&tx).await?;
                out!("{id}");
                eprintln!(
                    "approved request {req_id}: grant {id} to {requester} on {} ({actions}) until {} committed at height {}",
                    req.scope,
                    time_text(req.expires_ms),
                    v.height
                );
            }
            ConsentCommand::Deny { request, reason, client: args } => {
                let req_id = hash_arg(&request, "request")?;
                let v = act(
                    &args,
                    Payload::ConsentDenial(v1::ConsentDenial {
                        request: req_id.as_bytes().to_vec(),
                        reason,
                    }),
                )
                .await?;
                out!("denied request {req_id} at height {}", v.height);
            }
            ConsentCommand::Revoke { grant, client: args } => {
                let grant_id = hash_arg(&grant, "grant")?;
                let v = act(
                    &args,
                    Payload::ConsentRevocation(v1::ConsentRevocation {
                        grant: grant_id.as_bytes().to_vec(),
                    }),
                )
                .await?;
                out!(
                    "revoked grant {grant_id} at height {}; the proxies destroy their fragments",
                    v.height
                );
            }
            ConsentCommand::List { patient, grantee, client: args } => {
                let (c, k) = connect(&args).await?;
                let (v, check) = match (patient, grantee) {
                    (Some(p), None) => c.consent_list(Party::Patient(&identity_arg(&p)?)).await?,
                    (None, Some(g)) => c.consent_list(Party::Grantee(&identity_arg(&g)?)).await?,
                    (None, None) => {
                        let me = subject(None, k.as_ref(), "patient")?;
                        c.consent_list(Party::Patient(&me)).await?
                    }
                    _ => bail!("give --patient or --grantee, not both"),
                };
                if let Some(check) = &check {
                    eprintln!("{} grants and {} requests, {}", v.grants.len(), v.requests.len(), check.describe());
                }
                for g in &v.grants {
                    out!(
                        "grant   {}  {} -> {}  {}  {}  until {}  {}",
                        g.grant,
                        g.patient,
                        g.grantee,
                        g.scope,
                        serde_json::to_string(&g.actions)?,
                        time_text(g.expires_ms),
                        g.status
                    );
                }
                for r in &v.requests {
                    out!(
                        "request {}  {} -> {}  {}  {}  until {}  {}",
                        r.request,
                        r.requester,
                        r.patient,
                        r.scope,
                        serde_json::to_string(&r.actions)?,
                        time_text(r.expires_ms),
                        r.status
                    );
                }
            }
        }
        Ok(())
    })
}

pub fn audit(args: AuditArgs) -> Result<()> {
    runtime()?.block_on(async move {
        let (record, patient, actor);
        let (subject, query) = match (&args.record, &args.patient, &args.actor) {
            (Some(r), None, None) => {
                record = hash_arg(r, "--record")?;
                (AuditSubject::Record(&record), format!("record={record}"))
            }
            (None, Some(p), None) => {
                patient = identity_arg(p)?;
                (
                    AuditSubject::Patient(&patient),
                    format!("patient={patient}"),
                )
            }
            (None, None, Some(a)) => {
                actor = identity_arg(a)?;
                (AuditSubject::Actor(&actor), format!("actor={actor}"))
            }
            _ => bail!("give one of --record SLIP, --patient ID, --actor ID"),
        };
        let (c, _) = connect(&args.client).await?;
        let (events, check) = c.audit_trail(subject, &query).await?;
        if let Some(check) = &check {
            eprintln!("{} events, {}", events.len(), check.describe());
        }
        if args.json {
            out!("{}", serde_json::to_string_pretty(&events)?);
            return Ok(());
        }
        for e in &events {
            out!(
                "{:>6}.{:<3} {}  {:<12} actor {}{}  {}",
                e.height,
                e.index,
                time_text(e.time_ms),
                e.op,
                short(&e.actor),
                e.record
                    .as_deref()
                    .map(|r| format!("  record {}", &r[..16.min(r.len())]))
                    .unwrap_or_default(),
                e.detail
            );
        }
        if check.is_none() {
            eprintln!("{} events", events.len());
        }
        Ok(())
    })
}

/// `medchain token`: a bearer token for `--node`, as `--key`.
pub fn token(args: ClientArgs) -> Result<()> {
    runtime()?.block_on(async move {
        let k = key(&args)?;
        let c = Client::connect_as(&args.node, &k)
            .await?
            .anchored(&args.trust())
            .await?;
        let token = c.api.authenticate().await?;
        out!("{}", token.token);
        eprintln!(
            "token for {} at {}, valid until {}",
            token.identity,
            c.api.base(),
            time_text(token.expires_ms)
        );
        Ok(())
    })
}

fn short(id: &str) -> &str {
    &id[..id.len().min(20)]
}

/// Polls the node until `/ready` answers 200, for at most `secs` seconds.
async fn wait_ready(node: &str, secs: u64) -> Result<()> {
    let api = medchain_api::ApiClient::new(node).with_context(|| format!("--node {node:?}"))?;
    let mut reason = String::from("no answer yet");
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(secs.max(1));
    loop {
        match tokio::time::timeout_at(deadline, api.ready()).await {
            Ok(Ok(r)) if r.ready => return Ok(()),
            Ok(Ok(r)) => reason = r.reason.unwrap_or_else(|| "not ready".into()),
            Ok(Err(e)) => reason = e.to_string(),
            Err(_) => break,
        }
        if tokio::time::Instant::now() + std::time::Duration::from_millis(250) >= deadline {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }
    bail!("the node at {node} is not ready after {secs} s: {reason}")
}

/// `medchain status`: what an operator checks first.
pub fn status(node: &str, json: bool, wait: Option<u64>) -> Result<()> {
    runtime()?.block_on(async move {
        if let Some(secs) = wait {
            wait_ready(node, secs).await?;
        }
        let c = Client::connect(node).await?;
        let s = c.api.status().await?;
        let ready = c.api.ready().await?;
        if json {
            let mut all = serde_json::to_value(&s)?;
            all["ready"] = serde_json::to_value(&ready)?;
            out!("{}", serde_json::to_string_pretty(&all)?);
            return Ok(());
        }
        let primary = s.primary as usize;
        let primary_name = c
            .chain
            .validators
            .get(primary)
            .map_or_else(|| format!("validator {primary}"), |v| v.name.clone());
        let last = s.last_block_time_ms;
        let ago = if last == 0 {
            "no block yet".to_string()
        } else {
            format!(
                "{} ({} s ago)",
                time_text(last),
                now_ms().saturating_sub(last) / 1_000
            )
        };
        out!("{} ({}) on chain {}", s.node, s.identity, s.chain_id);
        out!(
            "height      {}  (tip {})",
            s.height,
            &s.tip_hash[..16.min(s.tip_hash.len())]
        );
        out!("last block  {ago}");
        out!("view        {}, primary {primary_name}", s.view);
        out!(
            "peers       {} of {} connected ({} needed for a quorum)",
            s.peers_connected,
            s.validators.saturating_sub(1),
            s.peers_needed
        );
        out!("mempool     {} of {}", s.mempool, s.mempool_capacity);
        out!("committed   {} transactions", s.committed_transactions);
        match s.catching_up {
            Some((_, target)) => out!(
                "catch-up    at height {} of at least {target} ({}%)",
                s.height,
                (s.height * 100).checked_div(target).unwrap_or(0).min(100)
            ),
            None => out!("catch-up    none"),
        }
        match ready.reason {
            None => out!("ready       yes"),
            Some(reason) => out!("ready       no: {reason}"),
        }
        Ok(())
    })
}
