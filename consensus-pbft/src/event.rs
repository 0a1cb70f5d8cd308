//! What goes into the engine and what comes out, with the driver's obligations.

use medchain_crypto::Hash32;
use medchain_proto::v1;

use crate::persist::PersistDelta;
use crate::ReplicaId;

/// Timers the engine asks for. Setting a timer that is already set moves it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Timer {
    /// The block interval of the oldest pending item (primary).
    Batch,
    /// No execution progress while work is outstanding: start a view change.
    Progress,
    /// The view change to this view did not complete: try the next view.
    ViewChange(u64),
    /// A state-transfer request went unanswered: ask again.
    StateTransfer,
}

/// An input.
#[derive(Clone, Debug)]
pub enum Event {
    /// The replica starts (first start or after [`crate::Replica::restore`]). It re-sends its
    /// latest votes, which is harmless (they are identical) and helps peers that missed them.
    Start,
    /// A message from the network. Nothing about it is trusted: the engine verifies everything.
    Message(v1::PbftMessage),
    /// An item (a transaction's canonical bytes) that the node has already checked and wants
    /// ordered. Duplicates of pending or in-flight items are ignored.
    Submit(Vec<u8>),
    /// A timer set by [`Action::SetTimer`] fired.
    Timer(Timer),
    /// Committed batches fetched from peers in answer to [`Action::RequestStateTransfer`],
    /// untrusted: each one's commit certificate is verified before it is executed.
    StateTransfer(Vec<v1::CommittedBatch>),
}

/// An output. The driver performs the actions of one `handle` call in order; the call's
/// `Persist`, if any, is its first action.
#[derive(Clone, Debug)]
pub enum Action {
    /// Make this change durable, atomically, before performing any later action of the same call
    /// (persist, then execute, then send). It is always the call's first action, so what a
    /// replica voted and the certificates that justify an execution are durable before the
    /// execution and before any message that depends on them. Applied in order to the stored state as
    /// [`crate::PersistedState::apply`] does.
    Persist(Box<PersistDelta>),
    /// Send to every other replica.
    Broadcast(v1::PbftMessage),
    /// Send to one replica.
    Send {
        to: ReplicaId,
        msg: v1::PbftMessage,
    },
    /// Execute this batch: it is committed at `entry.seq`, which is exactly one above the previous
    /// `Commit`. `entry` carries its commit certificate (verifiable with
    /// `medchain_proto::pbft::verify_committed_batch`); `proposer` is the primary that proposed it.
    /// `repeats` lists the positions of items already executed earlier (or earlier in this batch):
    /// the ledger must skip them, so every item takes effect exactly once. The rule is
    /// deterministic, so every replica skips the same items.
    Commit {
        entry: v1::CommittedBatch,
        digest: Hash32,
        proposer: ReplicaId,
        repeats: Vec<u32>,
    },
    /// Arm (or move) a timer to fire at `at_ms` (same clock as `now_ms`).
    SetTimer {
        timer: Timer,
        at_ms: u64,
    },
    CancelTimer(Timer),
    /// Send these pending items to the other replicas again: the progress timer fired with them
    /// still unexecuted, and the primary may never have received them (a client that reached
    /// only this replica, a forward that was lost). The oldest first, at most a few batches.
    Forward(Vec<Vec<u8>>),
    /// Fetch committed batches from `from_seq` on (at least up to `target_seq`) from peers and feed
    /// them back as [`Event::StateTransfer`].
    RequestStateTransfer {
        from_seq: u64,
        target_seq: u64,
    },
    /// Something the engine did or refused, for the operator's logs and metrics. Nothing depends
    /// on notes for safety or liveness; a driver may drop them (the simulator does).
    Note(Note),
    /// Stop: this replica's own history contradicts a certified one. It is the only action of
    /// its call and the replica refuses every later event. The driver must stop the node loudly
    /// (log the fault at error level, exit non-zero) and must not restart it unattended: an
    /// operator has to find out which history is wrong (restore from a peer's backup or re-sync
    /// from genesis) before this replica signs anything again.
    Halt(SafetyFault),
}

/// A persisted record that [`crate::Replica::restore`] cannot use: the data folder is damaged.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("persisted consensus state is damaged ({record}: {reason}); restore the data folder from a backup or re-sync this replica from an empty one")]
pub struct CorruptState {
    /// Which record: the stable checkpoint proof, the last view change, or a slot's part.
    pub record: String,
    pub reason: String,
}

/// A contradiction between this replica's state and certified evidence. Never the result of
/// faulty peers alone while the fault assumption holds: it means this replica's own storage or
/// code is wrong, or more than f replicas are Byzantine.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SafetyFault {
    /// A quorum of checkpoint messages certifies `certified` at `seq`, and this replica's own
    /// executed history has digest `own` there.
    DivergedFromCheckpoint {
        seq: u64,
        own: Hash32,
        certified: Hash32,
        signers: Vec<ReplicaId>,
    },
}

impl std::fmt::Display for SafetyFault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SafetyFault::DivergedFromCheckpoint {
                seq,
                own,
                certified,
                signers,
            } => write!(
                f,
                "this replica executed a history with digest {own} up to sequence {seq}, but \
                 replicas {signers:?} certify {certified} there: its ledger differs from the \
                 agreed one"
            ),
        }
    }
}

/// What the engine reports about its progress and about input it refused. The node logs
/// progress at debug and refusals at info, each with its view and sequence number, so an operator
/// can follow a round or find the peer that sends bad messages.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Note {
    /// This replica, as primary, proposed a batch.
    Proposed { view: u64, seq: u64, items: usize },
    /// A batch gathered a prepare quorum here and this replica sent its commit.
    Prepared { view: u64, seq: u64 },
    /// A checkpoint became stable; everything up to `seq` is garbage-collected.
    Stable { seq: u64 },
    /// This replica's progress timer fired in `view` with work outstanding: it asks the others
    /// to leave the view and keeps working in it meanwhile.
    Complaint { view: u64 },
    /// This replica left `from_view` for `to_view` (more than f replicas complained about
    /// `from_view`, more than f had already left it, or more than f work in `to_view`).
    ViewChange { from_view: u64, to_view: u64 },
    /// View `view` began under `primary`, re-proposing `reproposed` batches from the old view.
    NewView {
        view: u64,
        primary: ReplicaId,
        reproposed: usize,
    },
    /// A message or transferred batch failed a check and was dropped. `from` is the claimed
    /// sender (`None` for state transfer, whose peer only the driver knows).
    Refused {
        from: Option<ReplicaId>,
        what: &'static str,
        view: u64,
        seq: u64,
        reason: String,
    },
}
