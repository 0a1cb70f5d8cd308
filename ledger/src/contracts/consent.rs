//! The consent contracts: a patient's grants (with the proxies' sealed re-encryption fragments),
//! doctors' requests and their denial, revocations, and the rule that finds the grant that lets
//! a reader act on a record.

use medchain_crypto::{Hash32, Identity};
use medchain_proto::records::action_names;
use medchain_proto::v1;

use super::state::*;
use super::*;

/// Under rules 2, the actions a grant to (or a request by) `who` may carry: read for anyone,
/// write for doctors only, copy for no one (a node cannot enforce it: a read already hands the
/// grantee the record), and at least one.
fn check_actions(
    ov: &Overlay,
    ctx: &ExecContext,
    actions: u32,
    who: &Identity,
    what: &str,
) -> Result<(), ContractError> {
    if !ctx.v2() {
        return Ok(());
    }
    let (read, write, copy) = (
        v1::ConsentAction::Read as u32,
        v1::ConsentAction::Write as u32,
        v1::ConsentAction::Copy as u32,
    );
    if actions & copy != 0 {
        return refuse(format!(
            "{what} asks for copy, which this chain does not grant (a read already hands the reader the record); use read"
        ));
    }
    if actions == 0 || actions & !(read | write) != 0 {
        return refuse(format!(
            "{what} carries actions {actions:#x}; use read (1), write (2) or both"
        ));
    }
    if actions & write != 0 {
        let entry = registered(ov, who, "grantee", None)?;
        if role_of(&entry) != v1::Role::Doctor {
            return refuse(format!(
                "{what} asks for write for {who}, registered as {}; only doctors write records",
                role_name(role_of(&entry))
            ));
        }
    }
    Ok(())
}

pub(super) fn consent_grant(
    audit: &mut Audit<'_, '_>,
    ctx: &ExecContext,
    signer: &Identity,
    tx_id: Hash32,
    fx: &mut SideEffects,
    g: &v1::ConsentGrant,
) -> Result<(), ContractError> {
    registered(audit.ov, signer, "patient", Some(v1::Role::Patient))?;
    not_suspended(audit.ov, signer)?;
    let grantee = ident(&g.grantee)?;
    if grantee == *signer {
        return refuse("a patient does not need a grant for their own records");
    }
    registered(audit.ov, &grantee, "grantee", None)?;
    check_actions(audit.ov, ctx, g.actions, &grantee, "the grant")?;
    let scope = scope_of(g.scope.as_ref())?;
    if let Scope::Record(s) = &scope {
        let slip = slip_entry(audit.ov, &Hash32(*s))?;
        if slip.patient != signer.as_bytes() {
            return refuse("a patient grants access to their own records only");
        }
    }
    if g.expires_ms <= ctx.time_ms {
        return refuse(format!(
            "the grant expires at {} ms, before this block's time {}; choose a later --until",
            g.expires_ms, ctx.time_ms
        ));
    }
    for f in &g.fragments {
        if f.proxy as usize >= ctx.validators.len() {
            return refuse(format!(
                "fragment for proxy {}: this chain has {} validators",
                f.proxy,
                ctx.validators.len()
            ));
        }
    }
    let request = if g.request.is_empty() {
        None
    } else {
        let req_id = hash32(&g.request)?;
        let mut req = match audit.ov.get::<RequestEntry>(&keys::request(&req_id))? {
            Some(r) => r,
            None => return refuse(format!("request {req_id} does not exist")),
        };
        if req.patient != signer.as_bytes() {
            return refuse(format!("request {req_id} was made to another patient"));
        }
        if req.requester != g.grantee {
            return refuse(format!(
                "request {req_id} came from another participant than the grantee"
            ));
        }
        if req.outcome != RequestOutcome::Open {
            return refuse(format!("request {req_id} was already answered"));
        }
        req.outcome = RequestOutcome::Approved {
            grant: tx_id.0,
            height: ctx.height,
        };
        audit.ov.put(keys::request(&req_id), &req);
        Some(req_id)
    };
    let entry = GrantEntry {
        patient: signer.as_bytes().to_vec(),
        grantee: g.grantee.clone(),
        scope: scope.clone(),
        actions: g.actions,
        expires_ms: g.expires_ms,
        threshold: g.threshold,
        delegation_key: g.delegation_key.clone(),
        proxies: g.fragments.iter().map(|f| f.proxy).collect(),
        request: request.map(|r| r.0),
        height: ctx.height,
        revoked_height: None,
    };
    audit.ov.put(keys::grant(&tx_id), &entry);
    audit
        .ov
        .put_raw(keys::grant_by_patient(signer.as_bytes(), &tx_id), vec![]);
    audit
        .ov
        .put_raw(keys::grant_by_grantee(&g.grantee, &tx_id), vec![]);
    if ctx.rules >= rules::V6 {
        let grant_key = keys::grant(&tx_id);
        audit.ov.list_push(
            &keys::grants_by_patient(signer.as_bytes()),
            grant_key.clone(),
        )?;
        audit
            .ov
            .list_push(&keys::grants_by_grantee(&g.grantee), grant_key)?;
    }
    fx.new_grants.push((tx_id, g.clone(), *signer));
    let detail = format!(
        "grant {tx_id} to {grantee}: {} on {} until {}",
        action_names(g.actions).join(","),
        scope.describe(),
        g.expires_ms
    );
    let op = if request.is_some() {
        "approve"
    } else {
        "grant"
    };
    audit.event(op, signer, Some(signer.as_bytes()), None, detail)?;
    Ok(())
}

pub(super) fn consent_request(
    audit: &mut Audit<'_, '_>,
    ctx: &ExecContext,
    signer: &Identity,
    tx_id: Hash32,
    r: &v1::ConsentRequest,
) -> Result<(), ContractError> {
    registered(audit.ov, signer, "requester", None)?;
    not_suspended(audit.ov, signer)?;
    let patient = ident(&r.patient)?;
    // Under rules 2 a request does not tell its requester whether the identity it names is a
    // patient, or whose a record is: a refusal saying so would answer "is X a patient?" for
    // anyone registered. A request naming anyone else is recorded like any other and never
    // approved (only the named patient grants, and only for her own records).
    if !ctx.v2() {
        registered(audit.ov, &patient, "patient", Some(v1::Role::Patient))?;
    }
    if patient == *signer {
        return refuse("a patient does not request access to their own records");
    }
    check_actions(audit.ov, ctx, r.actions, signer, "the request")?;
    let scope = scope_of(r.scope.as_ref())?;
    if let (Scope::Record(s), false) = (&scope, ctx.v2()) {
        let slip = slip_entry(audit.ov, &Hash32(*s))?;
        if slip.patient != r.patient {
            return refuse("the requested record belongs to another patient");
        }
    }
    audit.ov.put(
        keys::request(&tx_id),
        &RequestEntry {
            requester: signer.as_bytes().to_vec(),
            patient: r.patient.clone(),
            scope: scope.clone(),
            actions: r.actions,
            expires_ms: r.expires_ms,
            purpose: r.purpose.clone(),
            height: ctx.height,
            outcome: RequestOutcome::Open,
        },
    );
    audit
        .ov
        .put_raw(keys::request_by_patient(&r.patient, &tx_id), vec![]);
    audit.ov.put_raw(
        keys::request_by_requester(signer.as_bytes(), &tx_id),
        vec![],
    );
    if ctx.rules >= rules::V6 {
        let request_key = keys::request(&tx_id);
        audit
            .ov
            .list_push(&keys::requests_by_patient(&r.patient), request_key.clone())?;
        audit
            .ov
            .list_push(&keys::requests_by_requester(signer.as_bytes()), request_key)?;
    }
    audit.event(
        "request",
        signer,
        Some(&r.patient),
        None,
        format!(
            "request {tx_id}: {} on {} until {} ({})",
            action_names(r.actions).join(","),
            scope.describe(),
            r.expires_ms,
            r.purpose
        ),
    )?;
    Ok(())
}

pub(super) fn consent_denial(
    audit: &mut Audit<'_, '_>,
    ctx: &ExecContext,
    signer: &Identity,
    d: &v1::ConsentDenial,
) -> Result<(), ContractError> {
    let req_id = hash32(&d.request)?;
    let Some(mut req) = audit.ov.get::<RequestEntry>(&keys::request(&req_id))? else {
        return refuse(format!("request {req_id} does not exist"));
    };
    if req.patient != signer.as_bytes() {
        return refuse(format!("request {req_id} was made to another patient"));
    }
    frozen_v2(audit.ov, ctx, signer)?;
    if req.outcome != RequestOutcome::Open {
        return refuse(format!("request {req_id} was already answered"));
    }
    req.outcome = RequestOutcome::Denied {
        reason: d.reason.clone(),
        height: ctx.height,
    };
    audit.ov.put(keys::request(&req_id), &req);
    audit.event(
        "deny",
        signer,
        Some(signer.as_bytes()),
        None,
        format!("request {req_id}: {}", d.reason),
    )?;
    Ok(())
}

pub(super) fn consent_revocation(
    audit: &mut Audit<'_, '_>,
    ctx: &ExecContext,
    signer: &Identity,
    fx: &mut SideEffects,
    r: &v1::ConsentRevocation,
) -> Result<(), ContractError> {
    let grant_id = hash32(&r.grant)?;
    let Some(mut grant) = audit.ov.get::<GrantEntry>(&keys::grant(&grant_id))? else {
        return refuse(format!("grant {grant_id} does not exist"));
    };
    if grant.patient != signer.as_bytes() {
        return refuse(format!("grant {grant_id} was made by another patient"));
    }
    frozen_v2(audit.ov, ctx, signer)?;
    if let Some(h) = grant.revoked_height {
        return refuse(format!(
            "grant {grant_id} was already revoked at height {h}"
        ));
    }
    grant.revoked_height = Some(ctx.height);
    audit.ov.put(keys::grant(&grant_id), &grant);
    fx.revoked_grants.push(grant_id);
    audit.event(
        "revoke",
        signer,
        Some(signer.as_bytes()),
        None,
        format!("grant {grant_id}"),
    )?;
    Ok(())
}

/// The grant that lets `reader` perform `action` on record `slip_id` at `now_ms`, if any.
pub fn find_grant(
    ov: &Overlay,
    reader: &Identity,
    slip_id: &Hash32,
    slip: &SlipEntry,
    action: v1::ConsentAction,
    now_ms: u64,
    store: &medchain_storage::Store,
) -> Result<Option<(Hash32, GrantEntry)>, ContractError> {
    let prefix = keys::grants_by_grantee(reader.as_bytes());
    let rows = store
        .chain_state_prefix(&prefix, 10_000)
        .map_err(|e| ContractError::Storage(e.to_string()))?;
    for (k, _) in rows {
        let grant_id = hash32(&k[prefix.len()..])?;
        let Some(g) = ov.get::<GrantEntry>(&keys::grant(&grant_id))? else {
            continue;
        };
        if g.allows(slip_id, slip, action as u32, now_ms) {
            return Ok(Some((grant_id, g)));
        }
    }
    Ok(None)
}
