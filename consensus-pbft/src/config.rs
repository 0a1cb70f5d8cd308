//! Static parameters of one replica.

use medchain_crypto::validators::ValidatorSet;

use crate::ReplicaId;

/// Parameters every replica of a chain shares, plus this replica's index.
#[derive(Clone, Debug)]
pub struct Config {
    pub chain_id: String,
    pub validators: ValidatorSet,
    pub me: ReplicaId,
    /// Most items in one batch (default 128).
    pub max_batch: usize,
    /// Propose once the oldest pending item has waited this long.
    pub block_interval_ms: u64,
    /// Checkpoint every K sequence numbers.
    pub checkpoint_interval: u64,
    /// Sequence numbers accepted above the stable checkpoint (the PBFT log size L); at least 2K so
    /// work continues while a checkpoint becomes stable.
    pub window: u64,
    /// Progress timeout before a view change; must exceed `block_interval_ms`. Doubles with each
    /// consecutive view change.
    pub view_change_timeout_ms: u64,
    /// How long to wait for a state-transfer answer before asking again.
    pub state_transfer_retry_ms: u64,
    quorum: usize,
    mutant: Option<Mutant>,
}

/// A deliberate engine bug, switched on only by the simulator's mutation check: each one must make
/// the CI simulation report a violation, which shows the simulator can find bugs of its kind. The
/// list is in docs/PERFORMANCE.md ("Mutation check"). Nothing outside the simulator may set one.
#[doc(hidden)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mutant {
    /// The order of issue 14: a batch is executed (`Action::Commit`) before the `Persist` of the
    /// prepared certificate that justifies it.
    CommitBeforePersist,
    /// A new view's pre-prepares are taken as the primary sent them, without recomputing the plan
    /// from its view changes (rule 9): a Byzantine primary can drop or replace a batch that may
    /// have committed in an earlier view.
    NoReproposalCheck,
    /// A prepared certificate needs one prepare fewer than rule 5 asks, both to become prepared
    /// and in the certificates view changes carry: two conflicting batches can be prepared in one
    /// view.
    OnePrepareTooFew,
    /// Help for laggards is rate-limited per view asked about only, as before simulator seed
    /// 178124: a Byzantine replica cycling through old views gets a stable proof and a new view
    /// for every message it sends, and a reactive one turns that into a message storm.
    HelpEveryOldView,
}

impl Config {
    pub fn new(
        chain_id: impl Into<String>,
        validators: ValidatorSet,
        me: ReplicaId,
        max_batch: usize,
        block_interval_ms: u64,
        checkpoint_interval: u64,
    ) -> Self {
        let quorum = validators.quorum();
        Config {
            chain_id: chain_id.into(),
            validators,
            me,
            max_batch: max_batch.max(1),
            block_interval_ms,
            checkpoint_interval: checkpoint_interval.max(1),
            window: 2 * checkpoint_interval.max(1),
            view_change_timeout_ms: (4 * block_interval_ms).max(1_000),
            state_transfer_retry_ms: (2 * block_interval_ms).max(500),
            quorum,
            mutant: None,
        }
    }

    pub fn n(&self) -> usize {
        self.validators.len()
    }

    pub fn f(&self) -> usize {
        self.validators.max_faulty()
    }

    /// Matching messages needed for prepared, committed and stable.
    pub fn quorum(&self) -> usize {
        self.quorum
    }

    pub fn primary(&self, view: u64) -> ReplicaId {
        (view % self.n() as u64) as ReplicaId
    }

    /// Prepares (besides the primary's pre-prepare) a prepared certificate needs: `q - 1` (rule 5).
    pub fn prepares_needed(&self) -> usize {
        let needed = self.quorum - 1;
        if self.mutant(Mutant::OnePrepareTooFew) {
            needed.saturating_sub(1)
        } else {
            needed
        }
    }

    /// Replaces the quorum with a wrong one. It exists only so that the simulator can show its
    /// checkers catch the resulting safety violations; nothing else may call it.
    #[doc(hidden)]
    pub fn with_broken_quorum_for_checker_tests(mut self, quorum: usize) -> Self {
        self.quorum = quorum;
        self
    }

    /// Switches on a deliberate bug (see [`Mutant`]). Only for the simulator's mutation check.
    #[doc(hidden)]
    pub fn with_mutant_for_checker_tests(mut self, mutant: Mutant) -> Self {
        self.mutant = Some(mutant);
        self
    }

    pub(crate) fn mutant(&self, m: Mutant) -> bool {
        self.mutant == Some(m)
    }
}
