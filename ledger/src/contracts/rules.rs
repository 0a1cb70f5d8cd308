//! Versions of the contract rules.
//!
//! Every node of a chain executes every block by the same rules, or their states part while
//! their blocks agree. So a change to which transactions take effect is a new version, chosen by
//! the chain in genesis (`params.rules`), never a silent change of the binary: a chain whose
//! genesis predates versions runs version 1 whatever binary runs it, and a new chain runs the
//! latest. A running chain moves to a later version at an activation height agreed on chain
//! ([`effective`]; DESIGN §4.1a, "Rule versions").

/// The rules every chain ran before versions existed.
pub const V1: u32 = 1;
/// Version 2, which closes the gaps of version 1 (each rule is checked where it applies):
/// - a suspended identity does nothing (it no longer confirms, deletes, denies or revokes): the
///   chain cannot tell a patient from a thief holding her key, an authority can, and it
///   reinstates her or deletes on her behalf;
/// - only a record's author, or a doctor holding the patient's live write grant for it,
///   corrects a record, so no doctor can lock another's record by "correcting" it;
/// - write is granted to and requested by doctors only, and copy is refused: a node cannot
///   enforce it (a read already hands the grantee the record);
/// - a registration names a known role, and insurers and researchers register as data users
///   who request and read but never write;
/// - a transaction takes effect only within [`TX_VALIDITY_MS`] after the time it was signed
///   and at most [`TX_FUTURE_MS`] before it, by the block's time: a signed transaction that
///   someone held back cannot be played long after its signer meant it;
/// - a validator alone no longer suspends an identity: its suspension is a report, and
///   [`reports_needed`] reports from distinct validators within [`REPORT_WINDOW_MS`] suspend
///   (one Byzantine validator could otherwise lock anyone out); an authority still suspends at
///   once;
/// - a consent request is not refused for naming someone who is not a registered patient, or a
///   record of another patient (the refusal would tell any registered key who is a patient); it
///   is recorded and never approved;
/// - a slip carries no summary in clear (every validator reads it, and it would tell them about
///   the patient's health);
/// - each record has its own ciphertext: a slip naming a ciphertext another record uses is
///   refused, since erasing either record would destroy the other's.
pub const V2: u32 = 2;
/// Version 3: rules 2 and a patient's registration carries no name. Every validator and
/// authority reads a registration, and a name next to the patient role says who is a patient
/// of this hospital, which is itself health data; her name stays in the registering office's
/// own register and in her own client. Doctors, data users and authorities are still named
/// (they act professionally, and patients need to know who asks for their records). The
/// check is a form check ([`registration_form`]): a named patient's registration is never
/// ordered, so the name never reaches a block.
pub const V3: u32 = 3;
/// Version 4: rules 3 and reads are recorded in batches. A validator records the reads it served
/// in [`medchain_proto::v1::AccessBatch`] transactions of up to
/// [`medchain_proto::records::MAX_ACCESS_BATCH`] reads each (refused before rules 4): one
/// transaction per read let a flood of reads fill the mempool and push genuine events out of the
/// chain. A lone `AccessRecord` still takes effect (one queued just before an upgrade to rules 4
/// took effect is not lost), but nodes running rules 4 make batches. A read a batch records twice (a batch re-sent after a restart, the first one having
/// committed meanwhile) is recorded once and the rest of the batch still takes effect.
pub const V4: u32 = 4;
/// Version 5: rules 4 and every block header carries the root of the authenticated chain state
/// after it ([`crate::state_tree`]), so a client that trusts only the validator set can check
/// any key, grant or record status a node tells it. Which transactions take effect is as in
/// rules 4; the header, and so the block hash, is what changes, which is why it is a version
/// (every node of a chain must compute it alike). A chain that moves to rules 5 builds its tree
/// from its state at the activation height.
pub const V5: u32 = 5;
/// Version 6: rules 5 and every list a client reads is a counted list ([`super::state::keys::list_len`]):
/// a patient's grants and the requests made to her, a grantee's grants and requests, and the
/// audit trail of each record, patient and actor. Each list keeps its length and its entries
/// by position in the authenticated state, so a node proves a whole list (length, then every
/// entry) and a client sees that none was left out: a hidden grant is one the patient cannot
/// revoke, a hidden read one she never learns of. Audit events are written only to those
/// lists from rules 6 (before: keys by height, which are still read). What takes effect is as
/// in rules 5; the state, and so its root, is what changes.
pub const V6: u32 = 6;
/// What new chains run.
pub const LATEST: u32 = V6;

/// Blocks of notice a rules upgrade gives at least ([`effective`]): time for every operator to
/// install a binary that knows the new version before the chain needs it.
pub const UPGRADE_NOTICE_BLOCKS: u64 = 10;

/// The rules block `height` runs: the chain's genesis version until an upgrade scheduled on
/// chain (a `RulesUpgrade` by an authority) takes effect at its activation height. A running
/// chain moves to a later version only this way: every node reads the same schedule from the
/// same state, so none executes a block under other rules than the rest.
pub fn effective(
    genesis: u32,
    upgrade: Option<&super::state::RulesUpgradeEntry>,
    height: u64,
) -> u32 {
    match upgrade {
        Some(u) if height >= u.activation_height => u.version,
        Some(u) => u.before,
        None => genesis,
    }
}

/// The rule-dependent form check of a registration: whether it may name the participant.
/// Before rules 3 every registration names its participant (rules 1 and 2 refused an empty
/// name, and they still do); from rules 3 a patient's must not, any other must.
pub fn registration_form(
    rules: u32,
    r: &medchain_proto::v1::IdentityRegistration,
) -> Result<(), String> {
    let patient = medchain_proto::records::role_of(r.role) == medchain_proto::v1::Role::Patient;
    if rules >= V3 && patient {
        if !r.name.is_empty() {
            return Err(format!(
                "this chain runs rules {rules}, under which a patient's registration carries no name (every validator would read it): keep her name in your own register and register her with no name"
            ));
        }
    } else if r.name.trim().is_empty() {
        return Err(format!(
            "this chain runs rules {rules}, under which a {} registration names its participant: give a name",
            if patient { "patient's" } else { "non-patient" }
        ));
    }
    Ok(())
}

/// How long after its timestamp a transaction may still take effect (rules 2).
pub const TX_VALIDITY_MS: u64 = 60 * 60 * 1000;
/// How far ahead of the block's time a transaction's timestamp may be (rules 2): clocks differ.
pub const TX_FUTURE_MS: u64 = 5 * 60 * 1000;

/// How long a validator's report of abnormal access counts towards a suspension (rules 2).
pub const REPORT_WINDOW_MS: u64 = 60 * 60 * 1000;

/// Reports from distinct validators that suspend an identity (rules 2): f + 1 of `validators`,
/// so at least one honest validator saw the abnormal access.
pub fn reports_needed(validators: usize) -> usize {
    validators.saturating_sub(1) / 3 + 1
}

/// Why a transaction signed at `signed_ms` cannot take effect at `time_ms`, if it cannot.
pub fn outside_window(signed_ms: u64, time_ms: u64) -> Option<String> {
    if signed_ms > time_ms.saturating_add(TX_FUTURE_MS) {
        return Some(format!(
            "the transaction is signed at {signed_ms} ms, more than {} s after this block's time {time_ms} ms; check the signer's clock and sign again",
            TX_FUTURE_MS / 1000
        ));
    }
    if time_ms > signed_ms.saturating_add(TX_VALIDITY_MS) {
        return Some(format!(
            "the transaction is signed at {signed_ms} ms and expired {} s later, before this block's time {time_ms} ms; sign it again",
            TX_VALIDITY_MS / 1000
        ));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_window_is_an_hour_back_and_five_minutes_ahead() {
        let t = 10 * TX_VALIDITY_MS;
        assert_eq!(outside_window(t, t), None);
        assert_eq!(outside_window(t, t + TX_VALIDITY_MS), None);
        assert!(outside_window(t, t + TX_VALIDITY_MS + 1)
            .unwrap()
            .contains("expired"));
        assert_eq!(outside_window(t + TX_FUTURE_MS, t), None);
        assert!(outside_window(t + TX_FUTURE_MS + 1, t)
            .unwrap()
            .contains("check the signer's clock"));
        assert!(outside_window(u64::MAX, 0).is_some());
    }

    #[test]
    fn only_rules_3_keeps_a_patients_name_off_chain() {
        use medchain_proto::v1::{IdentityRegistration, Role};
        let reg = |role: Role, name: &str| IdentityRegistration {
            role: role as i32,
            name: name.into(),
            ..Default::default()
        };
        for rules in [V1, V2] {
            assert_eq!(
                registration_form(rules, &reg(Role::Patient, "Alice")),
                Ok(())
            );
            for blank in ["", " "] {
                let e = registration_form(rules, &reg(Role::Patient, blank)).unwrap_err();
                assert!(e.contains("give a name"), "{e}");
            }
        }
        for named in ["Alice", " "] {
            let e = registration_form(V3, &reg(Role::Patient, named)).unwrap_err();
            assert!(e.contains("carries no name"), "{e}");
        }
        assert_eq!(registration_form(V3, &reg(Role::Patient, "")), Ok(()));
        for role in [Role::Doctor, Role::Insurer, Role::Researcher] {
            assert_eq!(registration_form(V3, &reg(role, "Dr Grey")), Ok(()));
            assert!(registration_form(V3, &reg(role, "")).is_err());
        }
    }
}
