//! The seam between the driver and the chain it drives: what one engine step takes and gives, how
//! a chain makes its state durable and executes a committed block, and what a commit reports to
//! the chain's followers.
//!
//! Both engines fit it: PBFT (`Event::Message` / `StateTransfer` in, `Persist` / `Commit` /
//! `RequestStateTransfer` out) and DPoS (`Event::Message { from, .. }` / `Sync` in, `Finalize` /
//! `Persist` / `RequestSync { peer, .. }` out). The mapping of each is its adapter's job; the
//! driver never sees an engine type.

use medchain_crypto::Hash32;
use medchain_proto::v1::{self, peer_message::Body};

use super::writer::Job;
use crate::mempool::CheckedTx;

/// One input to the engine.
pub enum Input<C: Chain + ?Sized> {
    /// The node starts (first start or after a restart from the persisted state).
    Start,
    /// A consensus message from peer `from` (authenticated by the transport, nothing else trusted).
    Message { from: u32, msg: C::Msg },
    /// A checked transaction's canonical bytes to order.
    Submit(Vec<u8>),
    /// A timer the engine set has fired.
    Timer(C::Timer),
    /// Blocks a peer sent in answer to [`Output::Fetch`], untrusted: the engine checks each.
    Blocks(Vec<C::Block>),
}

/// One output of an engine step. The driver performs a step's outputs in order and stops at the
/// first failure: a `Persist` is durable before anything after it is executed or sent, and a
/// failed `Persist` or `Commit` sends nothing more.
pub enum Output<C: Chain + ?Sized> {
    /// Make this durable before performing any later output of the same step.
    Persist(C::Persist),
    /// Execute and store this committed (final) block, atomically.
    Commit(C::Commit),
    Broadcast(C::Msg),
    Send {
        to: u32,
        msg: C::Msg,
    },
    /// Arm or move a timer (same clock as the step's `now_ms`).
    SetTimer {
        timer: C::Timer,
        at_ms: u64,
    },
    CancelTimer(C::Timer),
    /// Send these pending transactions to the other nodes again.
    Forward(Vec<Vec<u8>>),
    /// Fetch blocks from `from_height` on (the peers are at `target` or above) from `peer`, or
    /// from the next connected peer in turn.
    Fetch {
        from_height: u64,
        target: u64,
        peer: Option<u32>,
    },
    /// For logs and metrics only.
    Note(C::Note),
    /// The node's own history contradicts a certified one: stop loudly, do not restart unattended.
    Halt(String),
}

/// A peer message as the chain reads it.
pub enum Incoming<C: Chain + ?Sized> {
    Consensus(C::Msg),
    /// A block-sync answer: the blocks (or why they could not be read) and the peer's height.
    Blocks {
        blocks: Vec<C::Block>,
        malformed: Option<String>,
        peer_tip: u64,
    },
    /// Not this chain's: the driver ignores it.
    Other,
}

/// The variant's name: inputs and outputs carry engine types that need not be `Debug`.
macro_rules! debug_by_variant {
    ($ty:ident { $($variant:ident),* }) => {
        impl<C: Chain + ?Sized> std::fmt::Debug for $ty<C> {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(match self {
                    $($ty::$variant { .. } => concat!(stringify!($ty), "::", stringify!($variant)),)*
                })
            }
        }
    };
}

debug_by_variant!(Input {
    Start,
    Message,
    Submit,
    Timer,
    Blocks
});
debug_by_variant!(Output {
    Persist,
    Commit,
    Broadcast,
    Send,
    SetTimer,
    CancelTimer,
    Forward,
    Fetch,
    Note,
    Halt
});
debug_by_variant!(Incoming {
    Consensus,
    Blocks,
    Other
});

/// What executing one committed block did.
#[derive(Clone, Debug)]
pub struct Committed<E> {
    pub height: u64,
    pub hash: Hash32,
    /// The block's own timestamp (Unix ms).
    pub timestamp_ms: u64,
    /// The view (PBFT) or round (DPoS) the block was decided in, and its leader.
    pub view: u64,
    pub leader: u32,
    /// Transactions that took effect.
    pub effective: Vec<Hash32>,
    /// Items ordered again and skipped (already executed).
    pub skipped: usize,
    /// (id, replay key) of every well-formed transaction in the block: they leave the mempool.
    pub seen: Vec<(Hash32, Vec<u8>)>,
    /// Transactions the contracts refused, with the reason.
    pub failed: Vec<(Hash32, String)>,
    /// The chain's own consequences (blobs to fetch or erase, grants to keep, ...).
    pub effects: E,
}

/// Why the driver stopped.
#[derive(Debug, thiserror::Error)]
pub enum DriverError {
    /// The store refused a write or a read: nothing after it was sent.
    #[error("storage: {0}")]
    Storage(String),
    /// The engine found this node's history contradicting a certified one.
    #[error("safety fault, node stopped: {0}")]
    Safety(String),
    /// The network task is gone.
    #[error("the network task stopped")]
    NetworkStopped,
}

/// A transaction checker that runs off the driver (on a blocking thread).
pub type Checker = std::sync::Arc<dyn Fn(&[u8]) -> Result<CheckedTx, String> + Send + Sync>;

/// A chain the driver can run. The adapter owns the engine, its ledger and its store.
pub trait Chain: Send + 'static {
    type Msg: Send;
    type Timer: Copy + Ord + Send + std::fmt::Debug;
    /// A block from block sync, untrusted until the engine checks it.
    type Block: Send;
    type Persist: Send;
    type Commit: Send;
    /// The chain-specific consequences of a commit, for its followers.
    type Effects: Send;
    type Note;

    /// One engine step; the outputs come back in the order they must be performed.
    fn step(&mut self, now_ms: u64, input: Input<Self>) -> Vec<Output<Self>>;
    /// The write that makes one `Persist` durable (synced); the driver performs nothing after it
    /// before it returns. It runs on the writer thread.
    fn persist(&mut self, persist: Self::Persist) -> Job<()>;
    /// The write that executes and stores a committed block in one atomic batch, on the writer
    /// thread. If it fails the driver stops, so the adapter may advance its own view of the
    /// chain (an execution digest) when it builds the job.
    fn commit(&mut self, commit: Self::Commit) -> Job<Committed<Self::Effects>>;
    /// The engine's current view or round: a rise is counted as a view change.
    fn view(&self) -> u64;
    /// Wraps a consensus message in the peer envelope's body.
    fn wrap(msg: Self::Msg) -> Body;
    /// Reads a peer message of the consensus or sync kind.
    fn read(body: Body) -> Incoming<Self>;
    /// This node's stored blocks from `from_height` on (at most `count`, within the message size
    /// limit), as a sync answer's body.
    fn serve_blocks(&self, from_height: u64, count: u32) -> Result<v1::BlockResponse, DriverError>;
    /// Logs a note; returns the kind of a refused peer message, which the driver counts.
    fn log_note(&self, note: Self::Note) -> Option<&'static str>;
    /// The check a transaction forwarded by a peer passes before it is queued.
    fn checker(&self) -> Checker;
}

/// A part of the node that acts on every committed block, in commit order, before the driver
/// takes its next input (ciphertext replication, proxy fragments, the access guard; later the
/// bridge and indexes). An error stops the node: a follower that cannot keep up with the chain
/// must not silently fall behind it.
pub trait Follower<E>: Send {
    fn on_commit(&mut self, block: &Committed<E>) -> Result<(), DriverError>;
}
