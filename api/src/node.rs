//! The node itself: liveness, readiness, status, and the error body every refusal carries.

use serde::{Deserialize, Serialize};

/// `GET /health`: the process answers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Health {
    /// Always `ok`.
    pub status: String,
}

/// `GET /ready`: 200 with `ready: true` when the node is in consensus and caught up, 503 with
/// the reason otherwise.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ready {
    pub ready: bool,
    /// What is missing, when not ready.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub height: u64,
}

/// Every refusal: what went wrong and what to do about it. The status code says which kind
/// (see the crate's API description).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: String,
    /// `GET /v1/identities/{id}?proof=true` answered 404 to a caller who would see the identity
    /// whatever its role: the absence of its registration, proved.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proof: Option<crate::StateProofs>,
}

/// `GET /v1/status`: what the API and operators see of a node.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Status {
    pub chain_id: String,
    /// The genesis's hash (identical on every node of the chain).
    pub genesis_hash: String,
    pub node: String,
    pub identity: String,
    pub height: u64,
    pub tip_hash: String,
    /// The consensus view (PBFT) of the last committed block.
    pub view: u64,
    pub primary: u32,
    pub mempool: usize,
    pub mempool_capacity: usize,
    pub peers_connected: usize,
    pub validators: usize,
    pub committed_transactions: u64,
    /// (from, target) while fetching missing blocks.
    pub catching_up: Option<(u64, u64)>,
    /// Timestamp of the last committed block (Unix ms), 0 before the first.
    pub last_block_time_ms: u64,
    /// Connected peers needed, with this node, for a quorum.
    pub peers_needed: usize,
}

impl Status {
    /// Why the node is not ready to serve (in consensus and caught up), if it is not.
    pub fn not_ready(&self) -> Option<String> {
        if self.peers_connected < self.peers_needed {
            return Some(format!(
                "connected to {} of the {} other validators; {} are needed for a quorum",
                self.peers_connected,
                self.validators.saturating_sub(1),
                self.peers_needed
            ));
        }
        if let Some((from, target)) = self.catching_up {
            return Some(format!(
                "catching up: at height {} of at least {target} (fetching from {from})",
                self.height
            ));
        }
        None
    }

    /// The `/ready` answer for this status.
    pub fn readiness(&self) -> Ready {
        let reason = self.not_ready();
        Ready {
            ready: reason.is_none(),
            reason,
            height: self.height,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_only_with_a_quorum_of_peers_and_caught_up() {
        let mut s = Status {
            validators: 4,
            peers_needed: 2,
            peers_connected: 1,
            height: 7,
            ..Status::default()
        };
        let r = s.readiness();
        assert!(!r.ready);
        assert!(r.reason.unwrap().contains("connected to 1 of the 3"));
        s.peers_connected = 2;
        s.catching_up = Some((3, 10));
        assert!(s.readiness().reason.unwrap().contains("at least 10"));
        s.catching_up = None;
        assert_eq!(
            s.readiness(),
            Ready {
                ready: true,
                reason: None,
                height: 7
            }
        );
    }
}
