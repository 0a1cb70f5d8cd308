//! Consent lists and audit trails as proved, not as the node lists them (rules 6).
//!
//! With an anchor the client asks for the whole counted lists with their proofs and shows only
//! what they prove: a node cannot hide a grant from the patient who would revoke it, or a read
//! from the patient whose record it was. Entries the node lists beyond the proved ones (written
//! before the chain ran rules 6, or made up) are counted and reported, never shown as proved.

use anyhow::{bail, Context, Result};
use medchain_api::{AuditEntry, ConsentList};
use medchain_crypto::Hash32;
use medchain_ledger::contracts::queries::AuditSubject;
use medchain_ledger::contracts::state::{decode, keys, AuditEvent, GrantEntry, RequestEntry};

use medchain_ledger::{ListRange, MAX_PROVED_LIST};

use super::verify::{ProvedList, VerifiedHeader};
use super::{now_ms, Client};
use crate::views;

/// Whose consent lists: a patient's (grants she gave, requests made to her) or a grantee's
/// (grants held, requests made).
#[derive(Clone, Copy, Debug)]
pub enum Party<'a> {
    Patient(&'a medchain_crypto::Identity),
    Grantee(&'a medchain_crypto::Identity),
}

/// How a proved answer was checked: against which header, and how many entries the node listed
/// that no proof covers.
#[derive(Clone, Debug)]
pub struct ListCheck {
    pub header: VerifiedHeader,
    pub unproved: usize,
}

impl ListCheck {
    /// "verified against block H, ..." and what was not proved.
    pub fn describe(&self) -> String {
        let mut text = self.header.describe();
        if self.unproved > 0 {
            text += &format!(
                "; {} more the node lists are not proved (written before rules 6) and not shown",
                self.unproved
            );
        }
        text
    }
}

impl Client {
    /// `party`'s grants and requests: with an anchor, exactly those the proved lists hold.
    pub async fn consent_list(&self, party: Party<'_>) -> Result<(ConsentList, Option<ListCheck>)> {
        let (query, lists) = match party {
            Party::Patient(p) => (
                format!("patient={p}"),
                [
                    keys::grants_by_patient(p.as_bytes()),
                    keys::requests_by_patient(p.as_bytes()),
                ],
            ),
            Party::Grantee(g) => (
                format!("grantee={g}"),
                [
                    keys::grants_by_grantee(g.as_bytes()),
                    keys::requests_by_requester(g.as_bytes()),
                ],
            ),
        };
        let Some(anchor) = &self.anchor else {
            let list = match party {
                Party::Patient(p) => self.api.consent_of_patient(&p.to_string()).await?,
                Party::Grantee(g) => self.api.consent_of_grantee(&g.to_string()).await?,
            };
            return Ok((list, None));
        };
        if self.chain.rules < medchain_ledger::contracts::rules::V6 {
            // Before rules 6 no list can be proved whole: shown as the node lists it, and said.
            eprintln!(
                "note: chain {:?} runs rules {}: consent lists are proved from rules 6, so this one is the node's word",
                self.chain.chain_id, self.chain.rules
            );
            let list = match party {
                Party::Patient(p) => self.api.consent_of_patient(&p.to_string()).await?,
                Party::Grantee(g) => self.api.consent_of_grantee(&g.to_string()).await?,
            };
            return Ok((list, None));
        }
        let shown = self.api.consent_with_proof(&query).await?;
        let asked = [
            ListRange::first(lists[0].clone(), true),
            ListRange::first(lists[1].clone(), true),
        ];
        let proofs = shown
            .proof
            .as_ref()
            .ok_or(super::verify::VerifyError::NoProof)?;
        let verified = anchor
            .verify_lists(proofs, &asked)
            .context("the node's consent lists did not verify")?;
        self.observe(&verified.header).await?;
        for list in &verified.lists {
            if (list.entries.len() as u64) < list.len {
                bail!(
                    "a consent list of {} entries is more than one proof covers ({MAX_PROVED_LIST}): not proved whole, so not shown",
                    list.len
                );
            }
        }
        let now = now_ms();
        let grants = named(&verified.lists[0], b"grant/")?
            .map(|(id, key, bytes)| {
                let g: GrantEntry = decode(&key, bytes)?;
                Ok(views::grant_info(&id, &g, now))
            })
            .collect::<Result<Vec<_>>>()?;
        let requests = named(&verified.lists[1], b"req/")?
            .map(|(id, key, bytes)| {
                let r: RequestEntry = decode(&key, bytes)?;
                Ok(views::request_info(&id, &r))
            })
            .collect::<Result<Vec<_>>>()?;
        let unproved = shown
            .grants
            .iter()
            .filter(|g| !grants.iter().any(|p| p.grant == g.grant))
            .count()
            + shown
                .requests
                .iter()
                .filter(|r| !requests.iter().any(|p| p.request == r.request))
                .count();
        let check = ListCheck {
            header: verified.header,
            unproved,
        };
        Ok((
            ConsentList {
                grants,
                requests,
                proof: None,
            },
            Some(check),
        ))
    }

    /// The audit trail of `subject` (`query` is its `record=`, `patient=` or `actor=` form):
    /// with an anchor, exactly the events its proved list holds.
    pub async fn audit_trail(
        &self,
        subject: AuditSubject<'_>,
        query: &str,
    ) -> Result<(Vec<AuditEntry>, Option<ListCheck>)> {
        let Some(anchor) = &self.anchor else {
            return Ok((self.api.audit(query).await?.events, None));
        };
        let list = subject.trail();
        if self.chain.rules < medchain_ledger::contracts::rules::V6 {
            eprintln!(
                "note: chain {:?} runs rules {}: audit trails are proved from rules 6, so this one is the node's word",
                self.chain.chain_id, self.chain.rules
            );
            return Ok((self.api.audit(query).await?.events, None));
        }
        // Page by page: the trail only grows and its entries never change, so pages proved
        // against successive roots add up, until a page reaches the length it proves.
        let mut events = Vec::new();
        let mut listed = 0;
        let mut len = 0;
        let header = loop {
            let from = events.len() as u64;
            let shown = self.api.audit_with_proof(query, from).await?;
            listed = listed.max(shown.events.len());
            let proofs = shown
                .proof
                .as_ref()
                .ok_or(super::verify::VerifyError::NoProof)?;
            let page = ListRange {
                list: list.clone(),
                refs: false,
                from,
            };
            let verified = anchor
                .verify_lists(proofs, &[page])
                .context("the node's audit trail did not verify")?;
            self.observe(&verified.header).await?;
            let proved = &verified.lists[0];
            if proved.len < len {
                bail!(
                    "the node's audit trail shrank from {len} to {} events between two pages: refused",
                    proved.len
                );
            }
            len = proved.len;
            for (i, bytes) in proved.entries.iter().enumerate() {
                let key = keys::list_item(&list, from + i as u64);
                let e: AuditEvent = decode(&key, bytes)?;
                // The node proves a trail only to a caller who may see every event's patient.
                events.push(views::audit_entry(e, true));
            }
            if events.len() as u64 >= len {
                break verified.header;
            }
        };
        let unproved = listed.saturating_sub(events.len());
        Ok((events, Some(ListCheck { header, unproved })))
    }
}

/// The entries of a proved list of references, each `prefix` + a 32-byte id: the id, the key
/// and the named entry's bytes. An entry naming anything else is refused.
fn named<'a>(
    list: &'a ProvedList,
    prefix: &'static [u8],
) -> Result<impl Iterator<Item = (Hash32, Vec<u8>, &'a [u8])>> {
    let mut out = Vec::with_capacity(list.entries.len());
    for (i, (key, value)) in list.entries.iter().zip(&list.named).enumerate() {
        let Some(id) = key
            .strip_prefix(prefix)
            .and_then(|id| Hash32::from_slice(id).ok())
        else {
            bail!(
                "entry {i} of the proved list names {}, not a {} entry: refused",
                hex::encode(key),
                String::from_utf8_lossy(prefix)
            );
        };
        out.push((id, key.clone(), value.as_slice()));
    }
    Ok(out.into_iter())
}
