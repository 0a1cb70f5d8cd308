//! The access-record contract: a validator's record of a read it served or refused, alone
//! (rules 1 to 3) or in a batch of them (rules 4, [`rules::V4`]).

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
    audit.event(op, &reader, patient.as_deref(), Some(&slip_id), detail);
    Ok(())
}
