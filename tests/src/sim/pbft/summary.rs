//! One-line trace summaries of PBFT messages.

use super::*;

pub(super) fn summary(m: &v1::PbftMessage) -> String {
    let short = |d: &[u8]| hex4(d);
    match &m.kind {
        Some(Kind::PrePrepare(p)) => {
            format!("PrePrepare(v{},s{},{})", p.view, p.seq, short(&p.digest))
        }
        Some(Kind::Prepare(p)) => format!("Prepare(v{},s{},{})", p.view, p.seq, short(&p.digest)),
        Some(Kind::Commit(p)) => format!("Commit(v{},s{},{})", p.view, p.seq, short(&p.digest)),
        Some(Kind::Checkpoint(c)) => format!("Checkpoint(s{},{})", c.seq, short(&c.state_digest)),
        Some(Kind::ViewChange(v)) => format!(
            "ViewChange(v{},stable{},prepared{})",
            v.new_view,
            v.stable_seq,
            v.prepared.len()
        ),
        Some(Kind::NewView(v)) => format!("NewView(v{},pp{})", v.view, v.pre_prepares.len()),
        Some(Kind::Complaint(c)) => format!("Complaint(v{})", c.new_view),
        None => "Empty".into(),
    }
}
