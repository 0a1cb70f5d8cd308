//! Loading a replica's persisted state after a restart; a record that does not decode refuses the
//! start ([`CorruptState`]).

use super::*;

impl<S: Signer, V: Verifier> Replica<S, V> {
    pub(super) fn load(&mut self, p: PersistedState) -> Result<(), CorruptState> {
        let decode = |b: &[u8], record: String| {
            v1::PbftMessage::decode_canonical(b).map_err(|e| CorruptState {
                record,
                reason: e.to_string(),
            })
        };
        let corrupt = |record: String, reason: &str| CorruptState {
            record,
            reason: reason.to_string(),
        };
        let h = p.header;
        self.view = h.view;
        self.view_changing = h.view_changing;
        self.next_seq = h.next_seq;
        let proof = h
            .stable_proof
            .iter()
            .enumerate()
            .map(|(i, b)| decode(b, format!("stable checkpoint proof, message {i}")))
            .collect::<Result<_, _>>()?;
        self.stable = CheckpointClaim {
            seq: h.stable_seq,
            digest: Hash32(h.stable_digest),
            proof,
        };
        self.last_view_change = p
            .last_view_change
            .as_deref()
            .map(|b| decode(b, "last view change".into()))
            .transpose()?;
        // The new view of the current view only: an older one helps no laggard.
        self.new_view_msg = p
            .new_view
            .as_deref()
            .map(|b| decode(b, "new view".into()))
            .transpose()?
            .filter(|m| matches!(&m.kind, Some(Kind::NewView(nv)) if nv.view == self.view));
        for rec in p.slots.into_values() {
            if rec.seq <= self.stable.seq {
                continue;
            }
            let seq = rec.seq;
            let slot = self.slots.entry(seq).or_default();
            if let Some(b) = rec.pre_prepare.as_deref() {
                let what = format!("slot {seq}: accepted pre-prepare");
                let pp = decode(b, what.clone())?;
                let (Some(Kind::PrePrepare(k)), Some(batch)) = (&pp.kind, &pp.batch) else {
                    return Err(corrupt(what, "not a pre-prepare with its batch"));
                };
                let d = digest_field(&k.digest).map_err(|e| corrupt(what, &e))?;
                slot.batches.insert(d, batch.clone());
                slot.pre_prepare = Some((k.view, d, pp.clone()));
            }
            if let Some(msgs) = rec.prepared {
                let what = format!("slot {seq}: prepared certificate");
                let msgs = msgs
                    .iter()
                    .map(|b| decode(b, what.clone()))
                    .collect::<Result<Vec<_>, _>>()?;
                let Some((pp, prepares)) = msgs.split_first() else {
                    return Err(corrupt(what, "empty"));
                };
                let (Some(Kind::PrePrepare(k)), Some(batch)) = (&pp.kind, &pp.batch) else {
                    return Err(corrupt(
                        what,
                        "does not start with a pre-prepare and its batch",
                    ));
                };
                let d = digest_field(&k.digest).map_err(|e| corrupt(what, &e))?;
                slot.batches.insert(d, batch.clone());
                slot.prepared = Some((k.view, d, pp.clone(), prepares.to_vec()));
            }
            slot.sent_prepare = rec.sent_prepare.map(|(v, d)| (v, Hash32(d)));
            slot.sent_commit = rec.sent_commit.map(|(v, d)| (v, Hash32(d)));
        }
        Ok(())
    }
}
