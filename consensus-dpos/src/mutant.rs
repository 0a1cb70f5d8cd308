//! Deliberate engine bugs for the simulator's mutation check.

use serde::{Deserialize, Serialize};

/// A deliberate engine bug, switched on only by the simulator's mutation check
/// ([`crate::ChainState::with_mutant_for_checker_tests`]): each one must make the CI simulation
/// report a violation, which shows the simulator can find bugs of its kind. The list is in
/// docs/PERFORMANCE.md ("Mutation check"). Nothing outside the simulator may set one; it is never
/// stored.
#[doc(hidden)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Mutant {
    /// An auditor locked in round `lr` prevotes a re-proposal whose proof-of-lock round is below
    /// `lr` (rule 2 asks for a proof-of-lock round of at least the lock round).
    UnlockOnLowerPol,
    /// A block's parent certificate is checked against the auditor set of the next height instead
    /// of the set that certified the parent.
    CertificateAgainstNextAuditors,
}
