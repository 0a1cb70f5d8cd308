//! The PBFT simulator's checkers: what every execution, the end of the workload and the probe
//! must satisfy.

use super::*;

impl Sim<'_> {
    pub(super) fn all_done(&self) -> bool {
        self.now >= self.scn.net.gst_ms
            && self
                .honest()
                .filter(|(r, _)| !self.gone.contains(r))
                .all(|(_, h)| h.ledger.items.len() >= self.valid_items.len())
    }

    /// The views of the honest replicas that are up and will stay up, if they all share one in
    /// normal status; else what each holds.
    pub(super) fn common_view(&self) -> Result<u64, String> {
        let views: Vec<(u32, u64, bool)> = self
            .honest()
            .filter(|(r, _)| !self.gone.contains(r))
            .filter_map(|(r, h)| {
                h.engine
                    .as_ref()
                    .map(|e| (r, e.view(), e.is_view_changing()))
            })
            .collect();
        match views.first() {
            Some((_, v, false)) if views.iter().all(|(_, w, c)| w == v && !c) => Ok(*v),
            _ => Err(views
                .iter()
                .map(|(r, v, c)| format!("r{r}:v{v}{}", if *c { "(changing)" } else { "" }))
                .collect::<Vec<_>>()
                .join(" ")),
        }
    }

    pub(super) fn commit(
        &mut self,
        r: u32,
        entry: v1::CommittedBatch,
        digest: Hash32,
        repeats: Vec<u32>,
    ) {
        let seq = entry.seq;
        self.trace.record(format!(
            "t={} r{r} EXECUTE s{seq} {}",
            self.now,
            hex4(digest.as_bytes())
        ));
        match self.decided.get(&seq) {
            Some(d) if *d != digest => {
                let d = *d;
                return self.fail(
                    "agreement",
                    format!(
                        "r{r} executed {digest} at seq {seq}, another honest replica executed {d}"
                    ),
                );
            }
            Some(_) => {}
            None => {
                self.decided.insert(seq, digest);
            }
        }
        let batch = entry.batch.clone().unwrap_or_default();
        let mut problem = None;
        let Node::Honest(h) = &mut self.nodes[r as usize] else {
            return;
        };
        if let Some(missing) = unjustified_execution(r, &entry, &digest, h.persisted.as_ref()) {
            problem = Some(("persist before execute", missing));
        }
        if seq != h.ledger.entries.len() as u64 + 1 {
            problem = Some((
                "order",
                format!("r{r} executed seq {seq} after {}", h.ledger.entries.len()),
            ));
        }
        for (i, item) in batch.items.iter().enumerate() {
            if repeats.contains(&(i as u32)) {
                continue;
            }
            if !self.valid_items.contains(item) {
                problem = Some((
                    "validity",
                    format!(
                        "r{r} executed {:?}, never submitted as valid",
                        String::from_utf8_lossy(item)
                    ),
                ));
            } else if !h.ledger.items.insert(item.clone()) {
                problem = Some((
                    "integrity",
                    format!("r{r} executed {:?} twice", String::from_utf8_lossy(item)),
                ));
            }
        }
        h.ledger.state = chain_state_digest(&h.ledger.state, seq, &digest);
        h.ledger.entries.push(entry);
        if let Some((p, d)) = problem {
            self.fail(p, d);
        }
    }
}

/// Why `r` may not execute `entry` yet, if its durable state (`persisted`) lacks what justifies
/// it: a certificate carrying r's own commit signature means r voted, and a replica votes commit
/// only once prepared, so its prepared certificate for the same digest must be durable (unless a
/// durable stable checkpoint already covers the sequence number). Otherwise a crash here would
/// restart r with a certified block and no certificate for its view changes to report.
pub(super) fn unjustified_execution(
    r: u32,
    entry: &v1::CommittedBatch,
    digest: &Hash32,
    persisted: Option<&PersistedState>,
) -> Option<String> {
    if !entry.commits.iter().any(|c| c.validator == r) {
        return None;
    }
    let stable = persisted.map_or(0, |p| p.header.stable_seq);
    if entry.seq <= stable {
        return None;
    }
    let prepared_digest = persisted
        .and_then(|p| p.slots.get(&entry.seq))
        .and_then(|slot| slot.prepared.as_ref())
        .and_then(|msgs| msgs.first())
        .and_then(|b| v1::PbftMessage::decode_canonical(b).ok())
        .and_then(|m| match m.kind {
            Some(Kind::PrePrepare(pp)) => Some(pp.digest),
            _ => None,
        });
    match prepared_digest {
        Some(d) if d == digest.as_bytes() => None,
        Some(_) => Some(format!(
            "r{r} executes s{} with its own commit signature while its durable prepared certificate is for another digest",
            entry.seq
        )),
        None => Some(format!(
            "r{r} executes s{} with its own commit signature before its prepared certificate is durable",
            entry.seq
        )),
    }
}
