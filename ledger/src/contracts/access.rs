//! The contracts that change how the chain itself keeps account: a validator's record of a read
//! it served or refused, alone (rules 1 to 3) or in a batch of them (rules 4, [`rules::V4`]), and
//! an authority's upgrade of the rules at an agreed height ([`rules::effective`]).

use medchain_crypto::Identity;
use medchain_proto::v1;

use super::state::*;
use super::*;

impl ExecContext<'_> {
    /// Whether reads are recorded in batches ([`rules::V4`]).
    pub(super) fn batched_reads(&self) -> bool {
        self.rules >= rules::V4
    }
}

/// Records one read by `signer`, a validator. A read already recorded is refused alone; in a
/// batch (`in_batch`) it is skipped, so a batch re-sent after its first copy committed records
/// the rest and nothing twice (every node skips the same reads: it is the same state).
pub(super) fn access_record(
    audit: &mut Audit<'_, '_>,
    ctx: &ExecContext,
    signer: &Identity,
    a: &v1::AccessRecord,
    in_batch: bool,
) -> Result<(), ContractError> {
    if ctx.validator_index(signer).is_none() {
        return refuse("only a validator of this chain records accesses");
    }
    let request = hash32(&a.request)?;
    if ctx.v2() {
        // The form check verified the reader's signature and that it names this reader, record
        // and request; here: it was signed for this node.
        let signed_for = a
            .signed_request
            .as_ref()
            .and_then(|s| s.request.as_ref())
            .map(|r| r.node.as_slice());
        if signed_for != Some(signer.as_bytes()) {
            return refuse(format!(
                "an access record carries the reader's request signed for the node that records it ({signer}); without it a node could record reads that never happened"
            ));
        }
    }
    let key = keys::access(&request, signer);
    if audit.ov.contains(&key)? {
        if in_batch {
            return Ok(());
        }
        return refuse(format!("read request {request} is already recorded"));
    }
    audit.ov.put_raw(key, vec![u8::from(a.granted)]);
    let slip_id = hash32(&a.slip_id)?;
    let reader = ident(&a.reader)?;
    let patient = audit
        .ov
        .get::<SlipEntry>(&keys::slip(&slip_id))?
        .map(|s| s.patient);
    let op = if a.granted { "read" } else { "read-refused" };
    let detail = format!("by {reader} via node {signer}: {}", a.reason);
    // The reader is the actor of the trail; the node that served it is in the detail.
    audit.event(op, &reader, patient.as_deref(), Some(&slip_id), detail)?;
    Ok(())
}

/// Schedules the chain's move to rules `u.version` at `u.activation_height`, by a genesis
/// authority, with at least [`rules::UPGRADE_NOTICE_BLOCKS`] of notice. An upgrade not yet in
/// effect may be replaced (a wrong version or height is corrected before it takes effect, with
/// the same notice). The version is not checked against this binary's: every node must decide
/// alike, whatever it runs; a node that does not know it stops at the activation height.
pub(super) fn rules_upgrade(
    audit: &mut Audit<'_, '_>,
    ctx: &ExecContext,
    signer: &Identity,
    u: &v1::RulesUpgrade,
) -> Result<(), ContractError> {
    if !ctx.is_authority(signer) {
        return refuse(format!(
            "{signer} is not an authority of this chain; only a genesis authority schedules a rules upgrade"
        ));
    }
    let pending = audit
        .ov
        .get::<RulesUpgradeEntry>(keys::RULES_UPGRADE)?
        .filter(|p| p.activation_height > ctx.height);
    let before = pending.map_or(ctx.rules, |p| p.before);
    if u.version <= before {
        return refuse(format!(
            "this chain runs rules {before}; an upgrade names a later version"
        ));
    }
    let earliest = ctx.height + rules::UPGRADE_NOTICE_BLOCKS;
    if u.activation_height < earliest {
        return refuse(format!(
            "activation height {} is too soon: give at least {} blocks of notice (height {earliest} or later), so every operator can install a binary that knows rules {}",
            u.activation_height,
            rules::UPGRADE_NOTICE_BLOCKS,
            u.version
        ));
    }
    audit.ov.put(
        keys::RULES_UPGRADE.to_vec(),
        &RulesUpgradeEntry {
            before,
            version: u.version,
            activation_height: u.activation_height,
            scheduled_at: ctx.height,
        },
    );
    let replaced = pending
        .map(|p| {
            format!(
                ", replacing rules {} at height {}",
                p.version, p.activation_height
            )
        })
        .unwrap_or_default();
    audit.event(
        "rules-upgrade",
        signer,
        None,
        None,
        format!(
            "rules {} from height {}{replaced}",
            u.version, u.activation_height
        ),
    )?;
    Ok(())
}
