//! What the ledger proves to clients: chain-state entries against the tip's state root, and
//! pages of counted lists (rules 6), each answer from one snapshot so all its proofs are against
//! one root even while blocks commit.

use crate::{contracts, state_tree, PrivateLedger};

/// Most entries of one counted list a proof covers ([`PrivateLedger::prove_lists`]), a page:
/// about 1 KB of proof per entry (2 KB as hex), so some 2 MB per answer at most.
pub const MAX_PROVED_LIST: u64 = 1_000;

/// A page of a counted list to prove (rules 6): its length, then entries `from..` up to
/// [`MAX_PROVED_LIST`] of them (fewer at the list's end), and with `refs` the entries they
/// name. Lists only grow and entries never change, so pages proved against different roots
/// add up to the list.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListRange {
    pub list: Vec<u8>,
    pub refs: bool,
    pub from: u64,
}

impl ListRange {
    /// The first page of `list`.
    pub fn first(list: Vec<u8>, refs: bool) -> Self {
        ListRange {
            list,
            refs,
            from: 0,
        }
    }

    /// Where the page ends in a list of `len` entries.
    pub fn end(&self, len: u64) -> u64 {
        len.min(self.from.saturating_add(MAX_PROVED_LIST))
    }
}

impl PrivateLedger {
    /// `key`'s value in the state of the tip, with its proof against the tip's state root.
    pub fn prove(&self, key: &[u8]) -> Result<state_tree::ProvedValue, state_tree::StateTreeError> {
        state_tree::StateTree::prove(&self.store.state_snapshot(), key)
    }

    /// Each of `keys`' values with its proof, all from one snapshot of the tip (so against one
    /// root, even while blocks commit).
    pub fn prove_all(
        &self,
        keys: &[Vec<u8>],
    ) -> Result<Vec<state_tree::ProvedValue>, state_tree::StateTreeError> {
        let snapshot = self.store.state_snapshot();
        keys.iter()
            .map(|k| state_tree::StateTree::prove(&snapshot, k))
            .collect()
    }

    /// Pages of counted lists (rules 6) with their proofs, all from one snapshot of the tip: for
    /// each [`ListRange`] the length entry, then its entries by position, then (with `refs`) the
    /// entry each one names (a grant or a request). What the client checks is laid out the same
    /// way (`client::verify`), so it knows every key before it reads a proof.
    pub fn prove_lists(
        &self,
        lists: &[ListRange],
    ) -> Result<Vec<(Vec<u8>, state_tree::ProvedValue)>, state_tree::StateTreeError> {
        use contracts::state::{keys, list_len_value};
        let snapshot = self.store.state_snapshot();
        let prove = |k: &[u8]| state_tree::StateTree::prove(&snapshot, k).map(|p| (k.to_vec(), p));
        let mut out = Vec::new();
        for range in lists {
            let len_key = keys::list_len(&range.list);
            let len_proof = prove(&len_key)?;
            let len = match &len_proof.1.value {
                Some(b) => list_len_value(&len_key, b)
                    .map_err(|e| state_tree::StateTreeError::Tree(e.to_string()))?,
                None => 0,
            };
            out.push(len_proof);
            let items = (range.from..range.end(len))
                .map(|i| prove(&keys::list_item(&range.list, i)))
                .collect::<Result<Vec<_>, _>>()?;
            let named = if range.refs {
                items
                    .iter()
                    .map(|(_, p)| prove(p.value.as_deref().unwrap_or_default()))
                    .collect::<Result<Vec<_>, _>>()?
            } else {
                Vec::new()
            };
            out.extend(items);
            out.extend(named);
        }
        Ok(out)
    }
}
