//! Whole lists (rules 6): a grant, request or audit list proved with its length and every entry
//! by position, so the client knows none was left out.
//!
//! The client derives every key itself, in the order the node lays them out
//! (`PrivateLedger::prove_lists`): for each page ([`ListRange`]) the list's length entry, then
//! entries `from..end`, then (for a list of references) the grant or request each entry names.
//! A node that hides an entry must either prove a shorter length (and the state root says
//! otherwise) or leave a position out (and the count of entries does not match).

use medchain_api::StateProofs;
use medchain_ledger::contracts::state::{keys, list_len_value};
use medchain_ledger::ListRange;

use super::{verify_entry, Anchor, VerifiedHeader, VerifyError};

/// One proved page of a list: the list's length, its entries `from..` in order and, for a list
/// of references, the entry each names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProvedList {
    pub len: u64,
    pub from: u64,
    pub entries: Vec<Vec<u8>>,
    /// For a list of references, the value of the key each entry names (in the same order).
    pub named: Vec<Vec<u8>>,
}

/// Lists proved against one certified header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifiedLists {
    pub header: VerifiedHeader,
    pub lists: Vec<ProvedList>,
}

impl Anchor {
    /// Checks pages of counted lists, `lists` as the client asked for them.
    pub fn verify_lists(
        &self,
        proofs: &StateProofs,
        lists: &[ListRange],
    ) -> Result<VerifiedLists, VerifyError> {
        let (header, root) = self.certified_root(proofs)?;
        let height = header.header.height;
        let mut shown = proofs.entries.iter();
        let mut next = |key: &[u8]| -> Result<Option<Vec<u8>>, VerifyError> {
            let entry = shown.next().ok_or_else(|| VerifyError::BadList {
                list: list_name(key),
                reason: "the answer ends before this entry".into(),
            })?;
            verify_entry(height, &root, key, entry)
        };
        let mut out = Vec::with_capacity(lists.len());
        for range in lists {
            let (list, refs) = (&range.list, &range.refs);
            let bad = |reason: String| VerifyError::BadList {
                list: list_name(list),
                reason,
            };
            let len_key = keys::list_len(list);
            let len = match next(&len_key)? {
                Some(b) => list_len_value(&len_key, &b).map_err(|e| bad(e.to_string()))?,
                None => 0,
            };
            let end = range.end(len);
            let mut entries = Vec::with_capacity(end.saturating_sub(range.from) as usize);
            for i in range.from..end {
                let value = next(&keys::list_item(list, i))?
                    .ok_or_else(|| bad(format!("entry {i} of {len} is proved absent")))?;
                entries.push(value);
            }
            let mut named = Vec::new();
            if *refs {
                for (i, key) in entries.iter().enumerate() {
                    let value = next(key)?.ok_or_else(|| {
                        bad(format!("entry {i} names a key that is proved absent"))
                    })?;
                    named.push(value);
                }
            }
            out.push(ProvedList {
                len,
                from: range.from,
                entries,
                named,
            });
        }
        let extra = shown.count();
        if extra > 0 {
            return Err(VerifyError::WrongEntryCount {
                expected: proofs.entries.len() - extra,
                found: proofs.entries.len(),
            });
        }
        Ok(VerifiedLists { header, lists: out })
    }
}

/// A list's key as people read it: its text prefix and the hex of the rest.
fn list_name(key: &[u8]) -> String {
    let text = key
        .iter()
        .position(|b| !(b.is_ascii_alphanumeric() || *b == b'/'))
        .unwrap_or(key.len());
    String::from_utf8_lossy(&key[..text]).into_owned() + &hex::encode(&key[text..])
}
