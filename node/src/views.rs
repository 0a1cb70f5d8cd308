//! Chain-state entries as the API shows them: one conversion, used by the node's answers and by
//! the client for entries it verified itself (so both show a proved grant alike).

use medchain_api::{
    AuditEntry, GrantInfo, GrantStatus, RequestInfo, RequestOutcome as OutcomeInfo, RequestStatus,
};
use medchain_crypto::{Hash32, Identity};
use medchain_ledger::contracts::state::{AuditEvent, GrantEntry, RequestEntry, RequestOutcome};
use medchain_proto::records::action_names;

/// An identity's text form, or the hex of bytes that are not one.
pub fn ident_text(bytes: &[u8]) -> String {
    Identity::from_bytes(bytes)
        .map(|i| i.to_string())
        .unwrap_or_else(|_| hex::encode(bytes))
}

/// Grant `id` with its status at `now` (Unix ms).
pub fn grant_info(id: &Hash32, g: &GrantEntry, now: u64) -> GrantInfo {
    let status = if g.revoked_height.is_some() {
        GrantStatus::Revoked
    } else if g.expires_ms <= now {
        GrantStatus::Expired
    } else {
        GrantStatus::Active
    };
    GrantInfo {
        grant: id.to_hex(),
        patient: ident_text(&g.patient),
        grantee: ident_text(&g.grantee),
        scope: g.scope.describe(),
        actions: action_names(g.actions)
            .into_iter()
            .map(String::from)
            .collect(),
        expires_ms: g.expires_ms,
        threshold: g.threshold,
        proxies: g.proxies.clone(),
        request: g.request.map(hex::encode),
        height: g.height,
        revoked_height: g.revoked_height,
        status,
    }
}

/// Request `id` with its outcome.
pub fn request_info(id: &Hash32, r: &RequestEntry) -> RequestInfo {
    let (status, outcome) = match &r.outcome {
        RequestOutcome::Open => (RequestStatus::Open, None),
        RequestOutcome::Approved { grant, height } => (
            RequestStatus::Approved,
            Some(OutcomeInfo {
                grant: Some(hex::encode(grant)),
                reason: None,
                height: *height,
            }),
        ),
        RequestOutcome::Denied { reason, height } => (
            RequestStatus::Denied,
            Some(OutcomeInfo {
                grant: None,
                reason: Some(reason.clone()),
                height: *height,
            }),
        ),
    };
    RequestInfo {
        request: id.to_hex(),
        requester: ident_text(&r.requester),
        patient: ident_text(&r.patient),
        scope: r.scope.describe(),
        actions: action_names(r.actions)
            .into_iter()
            .map(String::from)
            .collect(),
        expires_ms: r.expires_ms,
        purpose: r.purpose.clone(),
        height: r.height,
        status,
        outcome,
    }
}

/// An audit event; `show_patient` is whether the reader may see whom it is about.
pub fn audit_entry(e: AuditEvent, show_patient: bool) -> AuditEntry {
    AuditEntry {
        patient: e
            .patient
            .as_deref()
            .filter(|_| show_patient)
            .map(ident_text),
        op: e.op,
        height: e.height,
        index: e.index,
        time_ms: e.time_ms,
        actor: ident_text(&e.actor),
        record: e.record.map(hex::encode),
        detail: e.detail,
        transaction: hex::encode(e.transaction),
    }
}
