//! Credit-scored DPoS for the consortium chain (MBDS "Consensus mechanism"), as a pure state
//! machine: [`Engine::handle`] takes an [`Event`] and the current time and returns [`Action`]s. No
//! tokio, sockets, clocks, threads or randomness: the node or the simulator drives it.
//!
//! Depends only on `medchain-proto` (messages, the one signing path) and `medchain-crypto`. It
//! must not depend on storage, networking or the node.
//!
//! # Roles and credit
//!
//! Institutions are admitted in genesis with three scores (institution rating, information-centre
//! scale, enterprise strength); starting credit is their weighted sum ([`CreditRules`]). Among
//! the institutions willing to serve whose credit is at least the threshold, ranked by credit
//! (ties by identity bytes), ranks `1..=R` are the representatives (RPN, default 101) and ranks
//! `R+1..=R+A` the auditors (ATN, default 20). Credit changes only when a block is final, and only
//! from what that block holds ([`ChainState::apply_block`]): its producer gains, in proportion to
//! the share of the parent's auditors whose precommits its parent certificate carries; those
//! auditors gain (a producer puts in every precommit for the parent it holds when it builds,
//! those that came after the parent was final included, so every auditor whose precommit arrived
//! in time is paid, and leaving one out costs the producer more than the auditor); the representatives of the rounds that
//! passed before the parent was final are charged a missed slot; the service its items report
//! gains; the misbehaviour evidence it carries (an equivocation, an invalid block, a wrong
//! verdict, a double vote) is charged once. Then any representative below the threshold (or
//! expelled for equivocating) is replaced in place by the best auditor, and the auditor set is
//! refilled from the ranking. When the slots recorded by certificates cross an epoch boundary,
//! both sets are re-elected and the production order is reshuffled by the parent block's hash,
//! which the boundary block's producer cannot choose. Everything is integer arithmetic, checked
//! and clamped, so every node computes the same registry.
//!
//! # Ordering and finality
//!
//! Heights are decided one at a time by a Tendermint-style protocol (Buchman, Kwon, Milosevic,
//! "The latest gossip on BFT consensus", 2018) in which representatives propose and auditors
//! vote. At height `h`, round `r`, the proposer is `rpn[(h + r) mod |rpn|]`: turns rotate with
//! the height, and a slot that passes without a final block passes the turn to the next
//! representative.
//!
//! 1. **Propose.** The round's representative proposes when `max_block_items` items are pending,
//!    when the oldest has waited `block_interval_ms`, when it holds evidence, or in any round
//!    after the first. If a quorum prevoted a block in an earlier round it re-proposes that block
//!    (with that round as its proof-of-lock round) instead of building a new one.
//! 2. **Prevote.** An auditor prevotes the proposal if the block is valid and it is not locked on
//!    another block (or the proof-of-lock round is at least its lock round); otherwise it
//!    prevotes nil, naming the block if the block's content is invalid. An auditor that sees no
//!    due proposal within the slot (`slot_ms`, growing with the round) prevotes nil.
//! 3. **Precommit.** On prevotes for one block from a quorum, an auditor locks on it and
//!    precommits it; on nil prevotes from a quorum, it precommits nil.
//! 4. **Final.** A block is **final when precommits for it come from more than 2/3 of the
//!    auditor set of its height** (`floor(2A/3) + 1`); those precommits are its finality
//!    certificate, checkable by anyone who knows the registry, and the next block carries it.
//! 5. **Rounds.** After precommits from a quorum without a decision, everyone moves to the next
//!    round after `vote_timeout_ms`; votes from more than `A - quorum` distinct auditors at a
//!    higher round make a node join that round.
//!
//! **Fault assumption:** fewer than a third of the auditors of any height are Byzantine
//! (`f < A/3`). Then two quorums share an honest auditor, an honest auditor precommits at most one
//! block per round and is locked on it in later rounds unless a quorum prevoted something newer,
//! so **no two different blocks are ever final at one height**, whatever representatives do and
//! however the network behaves. Representatives need no honest majority: one honest
//! representative suffices for progress. Liveness needs, after the network stabilises, an honest
//! representative's slot with a quorum of honest auditors up: round timeouts grow until they
//! exceed the network delay.
//!
//! An invalid block never becomes final: honest auditors check every item with
//! [`Application::validate_item`] and prevote nil on an invalid block, and a quorum of
//! prevotes needs an honest auditor.
//!
//! # Misbehaviour
//!
//! Two proposals signed by one representative for one (height, round) with different blocks are
//! equivocation evidence: it costs credit and expels the representative when the block carrying
//! the evidence is final. A proposal of an invalid block, a vote for an invalid block, a rejection
//! of a valid one, and two different votes of one kind in one round are also evidence. Nodes
//! gather evidence as they see it and representatives include it in their blocks.
//!
//! # Driver contract
//!
//! The driver performs the actions of one call in order: [`Action::Finalize`] (store the final
//! block and the chain state atomically), then [`Action::Persist`] (make the consensus state
//! durable), then sends. So a node never sends a vote it could forget, and after a crash
//! [`Engine::restore`] resumes with everything it signed at the current height.

mod chain;
mod content;
mod engine;
mod event;
mod evidence;
pub mod local_cluster;
mod mutant;
mod params;
mod persist;
mod registry;

pub use chain::{BlockFault, ChainState, CheckedBlock};
pub use content::check_content;
pub use engine::{Config, Engine};

pub use event::{Action, Event, Note, Timer};
pub use evidence::{verify_evidence, CheckedEvidence};
pub use mutant::Mutant;
pub use params::{CreditRules, Genesis, InstitutionSpec, Params};
pub use persist::PersistedState;
pub use registry::{Institution, Offence, Registry};

/// What the ledger above the engine decides about items.
pub trait Application {
    /// Whether an item may appear in a block at all. Must be a pure function of the item's bytes
    /// (signatures, encoding, sizes), because invalid-block evidence is judged with it later.
    fn validate_item(&self, item: &[u8]) -> Result<(), String>;
    /// Whether the item is already in a final block (it is then dropped from the pending set).
    fn already_final(&self, item: &[u8]) -> bool;
    /// Institutions that earn service credit for this final item (data-sharing service).
    fn service_credits(&self, _item: &[u8]) -> Vec<u32> {
        Vec::new()
    }
}

/// Errors in static inputs: genesis and parameters.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DposError {
    #[error("consortium parameter {field} is not usable: {fix}")]
    Params { field: &'static str, fix: String },
    #[error("consortium genesis: {0}")]
    Genesis(String),
}

/// Why [`Engine::restore`] refuses the persisted consensus state: starting anyway could make the
/// node sign a vote that contradicts one it signed before the crash.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RestoreError {
    #[error(
        "persisted consensus state is for height {persisted}, but the stored chain ends at \
         height {tip}: final blocks were lost (a rolled-back or replaced data folder); restore \
         the data folder with its blocks, or start from an empty one and sync"
    )]
    AheadOfChain { persisted: u64, tip: u64 },
    #[error(
        "persisted consensus state is damaged ({record}: {reason}); restore the data folder \
         from a backup or start from an empty one and sync"
    )]
    Damaged { record: String, reason: String },
}
