//! What the API, the metrics and operators see of a node: its chain, height, view, peers and
//! readiness. A leaf: the core fills it, the API and the metrics read it.

/// What the API and operators see of the node.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct Status {
    pub chain_id: String,
    /// The genesis's hash (identical on every node of the chain).
    pub genesis_hash: String,
    pub node: String,
    pub identity: String,
    pub height: u64,
    pub tip_hash: String,
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
    /// Connected peers needed, with this node, for a PBFT quorum.
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
}
