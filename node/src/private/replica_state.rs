//! The PBFT replica's durable state in the store: one record for the header, one for the last
//! view change, one for the last new view, one per slot (keyed by big-endian sequence number so that the slots at or below
//! the stable checkpoint are one range to delete). Each [`PersistDelta`] is one synced write.

use anyhow::{Context, Result};
use medchain_pbft::{PersistDelta, PersistedHeader, PersistedState, SlotRecord};
use medchain_storage::{ConsensusChanges, Store};

const HEADER: &str = "pbft/header";
const VIEW_CHANGE: &str = "pbft/view_change";
const NEW_VIEW: &str = "pbft/new_view";
const SLOT_PREFIX: &[u8] = b"pbft/slot/";

fn slot_key(seq: u64) -> Vec<u8> {
    [SLOT_PREFIX, &seq.to_be_bytes()].concat()
}

/// The persisted state, or `None` on a fresh data folder.
pub fn load(store: &Store) -> Result<Option<PersistedState>> {
    let Some(header) = store
        .consensus_state::<PersistedHeader>(HEADER)
        .context("reading the replica's persisted header")?
    else {
        return Ok(None);
    };
    let last_view_change = store
        .consensus_state::<Vec<u8>>(VIEW_CHANGE)
        .context("reading the replica's last view change")?;
    let new_view = store
        .consensus_state::<Vec<u8>>(NEW_VIEW)
        .context("reading the replica's last new view")?;
    let slots = store
        .consensus_records::<SlotRecord>(SLOT_PREFIX)
        .context("reading the replica's persisted slots")?
        .into_iter()
        .map(|(_, rec)| (rec.seq, rec))
        .filter(|(seq, _)| *seq > header.stable_seq)
        .collect();
    Ok(Some(PersistedState {
        header,
        slots,
        last_view_change,
        new_view,
    }))
}

/// Makes one delta durable (synced) before the caller sends anything that depends on it.
pub fn persist(store: &Store, delta: &PersistDelta) -> Result<()> {
    let mut changes = ConsensusChanges::default();
    changes.delete_range(&slot_key(0), &slot_key(delta.header.stable_seq + 1));
    changes.put(HEADER.as_bytes(), &delta.header)?;
    if let Some(vc) = &delta.last_view_change {
        changes.put(VIEW_CHANGE.as_bytes(), vc)?;
    }
    if let Some(nv) = &delta.new_view {
        changes.put(NEW_VIEW.as_bytes(), nv)?;
    }
    for rec in &delta.slots {
        changes.put(&slot_key(rec.seq), rec)?;
    }
    store
        .write_consensus(changes)
        .context("persisting consensus state; refusing to send unpersisted votes")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deltas_round_trip_through_the_store_like_apply() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        assert!(load(&store).unwrap().is_none());
        let rec = |seq: u64, tag: u8| SlotRecord {
            seq,
            pre_prepare: Some(vec![tag; 3]),
            sent_prepare: Some((1, [tag; 32])),
            ..SlotRecord::default()
        };
        let deltas = [
            PersistDelta {
                header: PersistedHeader {
                    view: 1,
                    next_seq: 3,
                    ..Default::default()
                },
                slots: vec![rec(1, 1), rec(2, 2), rec(3, 3)],
                last_view_change: Some(vec![9, 9]),
                new_view: Some(vec![8, 8]),
            },
            PersistDelta {
                header: PersistedHeader {
                    view: 1,
                    next_seq: 4,
                    stable_seq: 2,
                    ..Default::default()
                },
                slots: vec![rec(4, 4), rec(3, 33)],
                last_view_change: None,
                new_view: None,
            },
        ];
        let mut expected = PersistedState::default();
        for d in deltas {
            persist(&store, &d).unwrap();
            expected.apply(d);
        }
        assert_eq!(load(&store).unwrap().unwrap(), expected);
        assert_eq!(expected.new_view, Some(vec![8, 8]));
        assert_eq!(
            expected.slots.keys().copied().collect::<Vec<_>>(),
            vec![3, 4]
        );
    }
}
