//! PBFT (Castro & Liskov, OSDI 1999 / TOCS 2002) for a hospital's private chain, as a pure state
//! machine: [`Replica::handle`] takes an [`Event`] and the current time and returns [`Action`]s.
//! No tokio, sockets, clocks, threads or randomness: the node or the simulator drives it.
//!
//! This crate depends only on `medchain-proto` (message types, the canonical signing path) and
//! `medchain-crypto`. It must not depend on storage, networking or the node; it asks for
//! persistence through [`Action::Persist`] and learns what the ledger executed through
//! [`Replica::restore`].
//!
//! # Protocol
//!
//! `n` replicas with indices `0..n` (the genesis order), `f = floor((n-1)/3)`, quorum
//! `q = ceil((n+f+1)/2)` (`2f+1` when `n = 3f+1`; any two quorums share an honest replica for
//! every `n`). The primary of view `v` is replica `v mod n`.
//!
//! 1. **Messages.** Every message is a `PbftMessage` envelope carrying the chain ID and the
//!    sender's index, signed over its canonical bytes. A message whose chain, sender or signature
//!    does not check out is dropped before anything else looks at it.
//! 2. **Watermarks.** Sequence numbers `s` are accepted only in `(h, h + L]`, where `h` is the last
//!    stable checkpoint and `L` the window ([`Config::window`]).
//! 3. **Proposing.** The primary of view `v`, in normal status, proposes a batch of pending items
//!    when `max_batch` items are pending, or when `block_interval` has passed since the oldest
//!    pending item arrived. It assigns the next sequence number within the window, so several are
//!    in flight at once, and never puts an item into two in-flight batches.
//! 4. **Pre-prepare.** A backup in view `v` accepts `PrePrepare(v, s, d)` from the primary if `s`
//!    is in the window, the attached batch hashes to `d`, it has accepted no other digest for
//!    `(v, s)`, no item of the batch is in another in-flight batch, and the ledger validates the
//!    batch ([`Application::validate`]). It then sends `Prepare(v, s, d)`.
//! 5. **Prepared.** `(v, s, d)` is prepared at a replica when it accepted the pre-prepare and holds
//!    matching prepares such that the primary plus the distinct preparers number at least `q`. The
//!    replica then records the prepared certificate and sends `Commit(v, s, d)`.
//! 6. **Committed.** `(v, s, d)` is committed at a replica when it is prepared and `q` distinct
//!    replicas sent `Commit(v, s, d)`. Batches are executed strictly in sequence order
//!    ([`Action::Commit`]), each with its commit certificate: the `q` commit signatures, which
//!    anyone who knows the validator set can check.
//! 7. **Checkpoints.** After executing `s` with `s mod K = 0` a replica sends `Checkpoint(s, D)`,
//!    `D` being the hash chain of all executed batch digests. `q` matching checkpoints make it
//!    stable: the low watermark moves to `s` and all older log entries are discarded, so memory
//!    stays bounded over an unbounded run. A replica re-sends its checkpoints above the stable one
//!    whenever it starts or enters a view, and signs its checkpoint again after a restart whose
//!    executed prefix ends on one, so lost checkpoints cannot freeze the window. Before adopting
//!    a stable checkpoint a replica compares it with its own digest at that sequence number; a
//!    different one means its history is not the certified one, and it halts
//!    ([`Action::Halt`], [`SafetyFault`]) instead of going on.
//! 8. **View change.** A replica with outstanding work (pending items or accepted, unexecuted
//!    batches) that sees no execution for the progress timeout sends `Complaint(v+1)` and keeps
//!    working in view `v` (it complains again after each further timeout). Once it holds
//!    complaints for `v+1` from `f+1` replicas (its own included), so at least one honest replica
//!    sees no progress, it moves to view `v+1`: it stops accepting messages of view `v` and sends
//!    `ViewChange(v+1)` with its stable checkpoint (and its proof) and a prepared certificate for
//!    every sequence number above it. A replica that timed out alone (it was slow or cut off)
//!    therefore never leaves the others' view. A replica that sees `f+1` valid view changes for
//!    views above its own joins the smallest of them. The timeout doubles with each consecutive
//!    view change and resets when a batch executes; a replica waiting for a new view moves past
//!    it only once a quorum asked for it (else it repeats its view change).
//! 9. **New view.** The primary of `v'` with `q` valid `ViewChange(v')` messages sends
//!    `NewView(v')` with them and, for every `s` from the highest stable checkpoint among them up to
//!    the highest prepared `s`, a `PrePrepare(v', s, d)` where `d` is the digest prepared in the
//!    highest view for `s`, or the empty (null) batch if none. Every replica recomputes this set
//!    from the included view changes and accepts the new view only if it matches; so whatever
//!    may have committed in an earlier view is re-proposed at the same sequence number.
//! 10. **Safety guard and persistence.** Before a replica sends a pre-prepare, prepare, commit or
//!     view change, or executes a batch, the fact and the certificate that justifies it are
//!     recorded in [`PersistedState`] and the change emitted as [`Action::Persist`]: the first
//!     action of its `handle` call, which the driver must make durable before it performs any
//!     later action of the call (persist, then execute, then send). A replica that crashes
//!     between any two actions therefore restarts with the prepared certificate of every batch it
//!     executed, and its view changes carry it. A replica never signs a second, different pre-prepare, prepare or commit
//!     for one `(view, seq)`, and never returns to a lower view, including after a restart.
//! 11. **State transfer.** A replica that learns of a stable checkpoint above what it executed
//!     (from `q` checkpoint messages or a new view) asks the driver for the missing committed
//!     batches ([`Action::RequestStateTransfer`]), verifies each one's commit certificate, executes
//!     them in order and resumes from the checkpoint.
//! 12. **Help for laggards.** A replica receiving a view change for a view not above its own,
//!     or a complaint about a view it has left, answers with its checkpoint proof (if the sender's
//!     is older) and the new-view message of its current view, so the laggard can catch up and
//!     rejoin.
//! 13. **Moving up.** A replica that receives normal-case messages (pre-prepares, prepares,
//!     commits) of views above its own from `f+1` replicas, or executes a transferred batch whose
//!     commit certificate is from a higher view, knows at least one honest replica works in that
//!     view, and moves to it through a view change; rule 12 then brings it the new-view message.
//!     Moving to a higher view is always safe (rule 10); requiring `f+1` senders keeps Byzantine
//!     replicas from dragging honest ones into views of their choosing.

mod config;
mod engine;
mod event;
pub mod local_cluster;
mod log;
mod persist;
mod view_change;

pub use config::{Config, Mutant};
pub use engine::{chain_state_digest, Application, Replica};
pub use event::{Action, CorruptState, Event, Note, SafetyFault, Timer};
pub use persist::{PersistDelta, PersistedHeader, PersistedState, SlotRecord};
pub use view_change::null_batch;

/// Why a view-change message would be refused (for diagnostics and the simulator's traces).
pub fn check_view_change(
    cfg: &Config,
    verifier: &impl medchain_crypto::validators::Verifier,
    msg: &medchain_proto::v1::PbftMessage,
) -> Result<(), String> {
    view_change::verify_view_change(cfg, verifier, msg).map(|_| ())
}

/// Index of a replica in the validator set.
pub type ReplicaId = u32;
