//! What a replica must remember across a crash so that it never contradicts itself.
//!
//! Executed batches are not here: the ledger is the record of what was executed, and
//! [`crate::Replica::restore`] takes its tip. What is here bounds what the replica may sign next:
//! its view and status, the last sequence number it assigned as primary, and, for every sequence
//! number in the window, the pre-prepare it accepted, the prepare and commit it sent, and its
//! prepared certificate (which a later view change must report). Messages are kept as their
//! canonical bytes.
//!
//! The engine emits changes, not snapshots: a [`PersistDelta`] carries the small header and only
//! the slots that changed in one call, because a slot holds a whole batch (up to 128 transactions)
//! and rewriting every slot of the window before each vote cost a loaded node a tenth of its CPU.
//! A driver keeps the state as separate records (header, last view change, one record per slot)
//! and applies each delta atomically; [`PersistedState::apply`] is the reference semantics.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// One sequence number's durable record.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SlotRecord {
    pub seq: u64,
    /// The accepted pre-prepare (with its batch), as canonical bytes.
    pub pre_prepare: Option<Vec<u8>>,
    /// (view, digest) of the prepare this replica sent.
    pub sent_prepare: Option<(u64, [u8; 32])>,
    /// (view, digest) of the commit this replica sent.
    pub sent_commit: Option<(u64, [u8; 32])>,
    /// Prepared certificate: the pre-prepare followed by the prepares, canonical bytes.
    pub prepared: Option<Vec<Vec<u8>>>,
}

/// The small part of the durable state, rewritten whole by every delta.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PersistedHeader {
    pub view: u64,
    /// True while changing to `view` (no new view accepted yet).
    pub view_changing: bool,
    /// Highest sequence number this replica assigned as primary.
    pub next_seq: u64,
    pub stable_seq: u64,
    pub stable_digest: [u8; 32],
    /// The quorum of checkpoint messages proving the stable checkpoint.
    pub stable_proof: Vec<Vec<u8>>,
}

/// The durable state of a replica, as [`crate::Replica::restore`] takes it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PersistedState {
    pub header: PersistedHeader,
    /// Slots above the stable checkpoint, by sequence number.
    pub slots: BTreeMap<u64, SlotRecord>,
    /// The last view change this replica sent, re-sent after a restart.
    pub last_view_change: Option<Vec<u8>>,
    /// The new-view message of the view this replica entered last: after a restart it can still
    /// hand it to a laggard (rule 12), or no replica might hold it any more.
    #[serde(default)]
    pub new_view: Option<Vec<u8>>,
}

/// What changed in one call of [`crate::Replica::handle`]; see the module docs.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PersistDelta {
    /// Replaces the stored header. Slots at or below `header.stable_seq` are garbage from then on
    /// and may be deleted in the same write.
    pub header: PersistedHeader,
    /// Each replaces the stored record of its sequence number.
    pub slots: Vec<SlotRecord>,
    /// A view change this replica is about to send, if it signed one in this call.
    pub last_view_change: Option<Vec<u8>>,
    /// The new-view message of the view it entered in this call, if any.
    #[serde(default)]
    pub new_view: Option<Vec<u8>>,
}

impl PersistedState {
    /// Applies one delta, as a driver's store must (atomically).
    pub fn apply(&mut self, delta: PersistDelta) {
        self.header = delta.header;
        for rec in delta.slots {
            self.slots.insert(rec.seq, rec);
        }
        if delta.last_view_change.is_some() {
            self.last_view_change = delta.last_view_change;
        }
        if delta.new_view.is_some() {
            self.new_view = delta.new_view;
        }
        self.slots = self.slots.split_off(&(self.header.stable_seq + 1));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slot(seq: u64, tag: u8) -> SlotRecord {
        SlotRecord {
            seq,
            pre_prepare: Some(vec![tag]),
            ..SlotRecord::default()
        }
    }

    #[test]
    fn apply_replaces_changed_slots_keeps_the_rest_and_drops_stable_ones() {
        let mut s = PersistedState::default();
        s.apply(PersistDelta {
            header: PersistedHeader {
                view: 1,
                ..Default::default()
            },
            slots: vec![slot(1, 1), slot(2, 2), slot(3, 3)],
            last_view_change: Some(vec![7]),
            new_view: Some(vec![8]),
        });
        s.apply(PersistDelta {
            header: PersistedHeader {
                view: 1,
                stable_seq: 1,
                ..Default::default()
            },
            slots: vec![slot(3, 30)],
            last_view_change: None,
            new_view: None,
        });
        assert_eq!(s.header.stable_seq, 1);
        assert_eq!(s.slots.keys().copied().collect::<Vec<_>>(), vec![2, 3]);
        assert_eq!(s.slots[&2].pre_prepare, Some(vec![2]));
        assert_eq!(s.slots[&3].pre_prepare, Some(vec![30]));
        // A delta without a view change or new view keeps the ones recorded earlier.
        assert_eq!(s.last_view_change, Some(vec![7]));
        assert_eq!(s.new_view, Some(vec![8]));
    }
}
