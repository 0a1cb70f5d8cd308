//! What goes into the engine and what comes out, with the driver's obligations.

use medchain_proto::v1;

use crate::chain::ChainState;
use crate::persist::PersistedState;

/// Timers the engine asks for. Setting a timer that is already set moves it; a timer for a
/// height or round the engine has left is ignored when it fires.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Timer {
    /// Auditors: no proposal arrived in this round's slot; vote nil.
    Propose { height: u64, round: u64 },
    /// A quorum prevoted, but not for one block: precommit nil.
    Prevote { height: u64, round: u64 },
    /// A quorum precommitted without deciding: move to the next round.
    Precommit { height: u64, round: u64 },
    /// Representatives: the oldest pending item has waited the block interval.
    Produce,
    /// Re-send own votes and proposal and announce the final height.
    Resend,
    /// A block-sync request went unanswered.
    Sync,
}

/// An input.
#[derive(Clone, Debug)]
#[allow(clippy::large_enum_variant)] // inputs are moved once, never stored in bulk
pub enum Event {
    /// The node starts (first start or after [`crate::Engine::restore`]).
    Start,
    /// A message from the network. `from` is the sending institution as authenticated by the
    /// transport; it is used only to choose whom to ask for missing blocks. Nothing in the message
    /// is trusted: signatures and certificates are checked.
    Message {
        from: u32,
        msg: v1::DposMessage,
    },
    /// An item (a canonical consortium transaction) the node has checked and wants ordered.
    Submit(Vec<u8>),
    Timer(Timer),
    /// Final blocks from a peer in answer to [`Action::RequestSync`], untrusted: each is applied
    /// only if its certificate checks out against the auditor set of its height.
    Sync(Vec<v1::DposFinalizedBlock>),
}

/// An output. The driver performs the actions of one `handle` call in order.
#[derive(Clone, Debug)]
pub enum Action {
    /// Store this final block, its certificate and the chain state after it, atomically. Comes
    /// before any [`Action::Persist`] or send of the same call.
    Finalize {
        block: Box<v1::DposFinalizedBlock>,
        state: Box<ChainState>,
    },
    /// Make this consensus state durable before performing any later action of the same call.
    /// It replaces every earlier persisted state.
    Persist(Box<PersistedState>),
    /// Send to every other institution.
    Broadcast(v1::DposMessage),
    /// Send to one institution.
    Send { to: u32, msg: v1::DposMessage },
    /// Arm (or move) a timer to fire at `at_ms` (same clock as `now_ms`).
    SetTimer { timer: Timer, at_ms: u64 },
    /// Ask `peer` for final blocks from `from_height` on and feed them back as [`Event::Sync`].
    RequestSync { from_height: u64, peer: u32 },
    /// Something the operator may want to know; changes nothing. For logs and metrics only.
    Note(Note),
}

/// What the engine tells its driver about its inputs, for logs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Note {
    /// A message or synced block was refused: from which peer (as the transport named it), what
    /// it was, the (height, round) it claimed, and why. Nothing of it was kept.
    Refused {
        from: u32,
        what: &'static str,
        height: u64,
        round: u64,
        reason: String,
    },
}
