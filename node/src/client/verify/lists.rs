//! Whole lists (rules 6): a grant, request or audit list proved with its length and every entry
//! by position, so the client knows none was left out.
//!
//! The client derives every key itself, in the order the node lays them out
//! (`PrivateLedger::prove_lists`): for each list its length entry, then entries `0..len`, then
//! (for a list of references) the grant or request each entry names. A node that hides an entry
//! must either prove a shorter length (and the state root says otherwise) or leave a position
//! out (and the count of entries does not match).

use medchain_api::StateProofs;
use medchain_ledger::contracts::state::{keys, list_len_value};
use medchain_ledger::MAX_PROVED_LIST;

use super::{verify_entry, Anchor, VerifiedHeader, VerifyError};

/// One proved list: its entries in order and, for a list of references, the entry each names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProvedList {
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
    /// Checks whole counted lists: `lists` are `(list, refs)` as the client asked for them.
    pub fn verify_lists(
        &self,
        proofs: &StateProofs,
        lists: &[(Vec<u8>, bool)],
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
        for (list, refs) in lists {
            let bad = |reason: String| VerifyError::BadList {
                list: list_name(list),
                reason,
            };
            let len_key = keys::list_len(list);
            let len = match next(&len_key)? {
                Some(b) => list_len_value(&len_key, &b).map_err(|e| bad(e.to_string()))?,
                None => 0,
            };
            if len > MAX_PROVED_LIST {
                return Err(bad(format!(
                    "{len} entries, more than the {MAX_PROVED_LIST} a proof covers"
                )));
            }
            let mut entries = Vec::with_capacity(len as usize);
            for i in 0..len {
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
            out.push(ProvedList { entries, named });
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
