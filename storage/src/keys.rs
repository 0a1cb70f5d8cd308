//! Column families and key layouts. Integers are big-endian so that RocksDB's byte order is numeric
//! order and range scans walk heights in sequence.

pub const CF_META: &str = "meta";
pub const CF_BLOCKS: &str = "blocks";
pub const CF_BLOCK_HASHES: &str = "block_hashes";
pub const CF_TRANSACTIONS: &str = "transactions";
pub const CF_SLIPS: &str = "slips";
pub const CF_PATIENT_INDEX: &str = "patient_index";
pub const CF_CHAIN_STATE: &str = "chain_state";
pub const CF_CONSENSUS_STATE: &str = "consensus_state";
/// Folder (inside the data folder) of the off-chain record store: one file per ciphertext.
pub const RECORDS_DIR: &str = "records";
/// This node's own secrets derived from the chain (a proxy's re-encryption key fragments); never
/// served to peers.
pub const CF_NODE_SECRETS: &str = "node_secrets";
/// Nodes of the authenticated chain state's Merkle tree (the tip's version only).
pub const CF_STATE_TREE: &str = "state_tree";
/// Header certificates (2f + 1 validators' votes over a block's header), by height.
pub const CF_HEADER_CERTIFICATES: &str = "header_certificates";

/// Block headers alone, by height: header-only sync reads these, not whole blocks. Blocks
/// committed by a release before this one have none (their header is read from the block).
pub const CF_HEADERS: &str = "headers";

pub const ALL_CFS: [&str; 12] = [
    CF_META,
    CF_BLOCKS,
    CF_BLOCK_HASHES,
    CF_TRANSACTIONS,
    CF_SLIPS,
    CF_PATIENT_INDEX,
    CF_CHAIN_STATE,
    CF_CONSENSUS_STATE,
    CF_NODE_SECRETS,
    CF_STATE_TREE,
    CF_HEADER_CERTIFICATES,
    CF_HEADERS,
];

pub const META_SCHEMA_VERSION: &[u8] = b"schema_version";
pub const META_TIP: &[u8] = b"tip";
pub const META_GENESIS: &[u8] = b"genesis_hash";
pub const META_STATE_TREE_VERSION: &[u8] = b"state_tree_version";

pub fn height_key(height: u64) -> [u8; 8] {
    height.to_be_bytes()
}

/// `(height, index)` of a transaction inside a block.
pub fn location_value(height: u64, index: u32) -> [u8; 12] {
    let mut v = [0u8; 12];
    v[..8].copy_from_slice(&height.to_be_bytes());
    v[8..].copy_from_slice(&index.to_be_bytes());
    v
}

pub fn parse_location(bytes: &[u8]) -> Option<(u64, u32)> {
    if bytes.len() != 12 {
        return None;
    }
    let height = u64::from_be_bytes(bytes[..8].try_into().ok()?);
    let index = u32::from_be_bytes(bytes[8..].try_into().ok()?);
    Some((height, index))
}

/// `patient (33) || height (8) || index (4)`: a patient's slips in chain order.
pub fn patient_key(patient: &[u8], height: u64, index: u32) -> Vec<u8> {
    let mut k = Vec::with_capacity(patient.len() + 12);
    k.extend_from_slice(patient);
    k.extend_from_slice(&location_value(height, index));
    k
}
