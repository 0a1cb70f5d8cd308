//! The authenticated chain state: a Jellyfish Merkle tree (the maintained `jmt` crate) over
//! every chain-state entry the contracts keep, whose root each block header carries from rules
//! 5 ([`contracts::rules`](crate::contracts::rules)).
//!
//! What is authenticated: every chain-state key except the bookkeeping that is not the
//! contracts' ([`authenticated`]): the PBFT execution point, the statistics, the last block's
//! time and the used nonces (replay protection, answered by a transaction's inclusion instead).
//! So identities and their keys, slips and their status, grants, requests, revocations,
//! suspensions, access records, the audit index and contract refusals all have proofs of
//! membership and of absence.
//!
//! The tree is updated in the block's own atomic write ([`StateTree::update`]), so a crash
//! leaves block and tree together. A data folder without a tree of its tip (written by an older
//! release, or a chain that has just moved to rules 5) gets one built from its state
//! ([`StateTree::rebuild`]): the root depends only on the entries, so it matches the tree every
//! other replica kept.

use std::collections::BTreeMap;

use jmt::storage::{LeafNode, NibblePath, Node, NodeKey, TreeReader, TreeUpdateBatch};
use jmt::{JellyfishMerkleTree, KeyHash, OwnedValue, Version};
use medchain_crypto::state_proof::{key_hash, StateProof};
use medchain_storage::{StateSnapshot, StateTreeWrites, Store, StoreError};
use sha2::Sha256;

use crate::{COMMITTED_KEY, EXEC_KEY, LAST_TIME_KEY};

/// Why the state tree could not be read, updated or proved from.
#[derive(Debug, thiserror::Error)]
pub enum StateTreeError {
    #[error("state tree storage: {0}")]
    Storage(#[from] StoreError),
    #[error("state tree node {0} is corrupt: {1}")]
    Corrupt(String, String),
    #[error("state tree: {0}")]
    Tree(String),
    #[error("this data folder has no state tree of its tip (height {tip}; the tree is of {tree:?}): it is built at the next block under rules 5")]
    Missing { tip: u64, tree: Option<u64> },
}

/// Whether a chain-state key is part of the authenticated state.
pub fn authenticated(key: &[u8]) -> bool {
    !(key.starts_with(b"nonce/") || key == EXEC_KEY || key == COMMITTED_KEY || key == LAST_TIME_KEY)
}

/// The key of the root node of `version` (the crate makes the empty path only through its
/// encoding: a nibble count and a byte vector, both empty).
fn root_key(version: Version) -> NodeKey {
    let empty: NibblePath = borsh::from_slice(&[0u8; 12]).expect("the empty nibble path");
    NodeKey::new(version, empty)
}

fn node_key_bytes(key: &NodeKey) -> Vec<u8> {
    borsh::to_vec(key).expect("a node key always encodes")
}

fn decode_node(key: &NodeKey, bytes: &[u8]) -> anyhow::Result<Node> {
    borsh::from_slice(bytes)
        .map_err(|e| anyhow::Error::new(StateTreeError::Corrupt(format!("{key:?}"), e.to_string())))
}

/// Reads the tree's nodes from the live store, for an update.
struct LiveReader<'a>(&'a Store);

impl TreeReader for LiveReader<'_> {
    fn get_node_option(&self, node_key: &NodeKey) -> anyhow::Result<Option<Node>> {
        self.0
            .state_tree_node(&node_key_bytes(node_key))?
            .map(|b| decode_node(node_key, &b))
            .transpose()
    }

    fn get_value_option(&self, _: Version, _: KeyHash) -> anyhow::Result<Option<OwnedValue>> {
        // An update reads nodes only; values live in the chain state.
        anyhow::bail!("the state tree does not read values during an update")
    }

    fn get_rightmost_leaf(&self) -> anyhow::Result<Option<(NodeKey, LeafNode)>> {
        anyhow::bail!("the state tree is never restored from chunks")
    }
}

/// An empty tree just before `version`: the start of a rebuild.
struct EmptyBefore(Version);

impl TreeReader for EmptyBefore {
    fn get_node_option(&self, node_key: &NodeKey) -> anyhow::Result<Option<Node>> {
        Ok((self.0 > 0 && *node_key == root_key(self.0 - 1)).then_some(Node::Null))
    }

    fn get_value_option(&self, _: Version, _: KeyHash) -> anyhow::Result<Option<OwnedValue>> {
        anyhow::bail!("an empty tree has no values")
    }

    fn get_rightmost_leaf(&self) -> anyhow::Result<Option<(NodeKey, LeafNode)>> {
        Ok(None)
    }
}

/// Reads one snapshot of the store, to prove one key: its value comes from the chain state of
/// the same snapshot.
struct ProofReader<'a, 'b> {
    snapshot: &'a StateSnapshot<'b>,
    key: &'a [u8],
    hash: KeyHash,
}

impl TreeReader for ProofReader<'_, '_> {
    fn get_node_option(&self, node_key: &NodeKey) -> anyhow::Result<Option<Node>> {
        self.snapshot
            .state_tree_node(&node_key_bytes(node_key))?
            .map(|b| decode_node(node_key, &b))
            .transpose()
    }

    fn get_value_option(&self, _: Version, hash: KeyHash) -> anyhow::Result<Option<OwnedValue>> {
        anyhow::ensure!(hash == self.hash, "the proof walked to another key's leaf");
        Ok(self.snapshot.chain_state(self.key)?)
    }

    fn get_rightmost_leaf(&self) -> anyhow::Result<Option<(NodeKey, LeafNode)>> {
        anyhow::bail!("the state tree is never restored from chunks")
    }
}

/// A key's value (or absence) in the state of one block, with its proof.
#[derive(Debug, Clone)]
pub struct ProvedValue {
    /// The block whose state this is (the tip of the snapshot).
    pub height: u64,
    pub root: [u8; 32],
    pub value: Option<Vec<u8>>,
    pub proof: StateProof,
}

fn tree_error(e: anyhow::Error) -> StateTreeError {
    match e.downcast::<StateTreeError>() {
        Ok(e) => e,
        Err(e) => StateTreeError::Tree(format!("{e:#}")),
    }
}

/// The writes of a tree update, in the store's terms.
fn writes_of(version: Version, batch: TreeUpdateBatch) -> StateTreeWrites {
    let puts = batch
        .node_batch
        .nodes()
        .iter()
        .map(|(k, n)| {
            (
                node_key_bytes(k),
                borsh::to_vec(n).expect("a node always encodes"),
            )
        })
        .collect();
    let mut deletes: Vec<Vec<u8>> = batch
        .stale_node_index_batch
        .iter()
        .map(|s| node_key_bytes(&s.node_key))
        .collect();
    // A block that changes nothing copies the root to its version without marking the old one
    // stale; only the tip's version is kept.
    if version > 0 {
        deletes.push(node_key_bytes(&root_key(version - 1)));
    }
    StateTreeWrites {
        version,
        puts,
        deletes,
    }
}

fn value_set<'a>(
    writes: impl IntoIterator<Item = (&'a [u8], Option<&'a [u8]>)>,
) -> Vec<(KeyHash, Option<OwnedValue>)> {
    // One entry per key: the last write wins, as in the chain state.
    let mut set = BTreeMap::new();
    for (key, value) in writes {
        if authenticated(key) {
            set.insert(KeyHash(key_hash(key)), value.map(<[u8]>::to_vec));
        }
    }
    set.into_iter().collect()
}

/// The state tree of one store.
#[derive(Debug, Clone, Copy)]
pub struct StateTree<'a> {
    store: &'a Store,
}

impl<'a> StateTree<'a> {
    pub fn new(store: &'a Store) -> Self {
        StateTree { store }
    }

    /// Applies one block's chain-state writes at `version` (its height) to the tree of
    /// `version - 1`. Returns the new root and the tree's writes, for the block's batch.
    pub fn update<'w>(
        &self,
        version: Version,
        writes: impl IntoIterator<Item = (&'w [u8], Option<&'w [u8]>)>,
    ) -> Result<([u8; 32], StateTreeWrites), StateTreeError> {
        let reader = LiveReader(self.store);
        let tree = JellyfishMerkleTree::<_, Sha256>::new(&reader);
        let (root, batch) = tree
            .put_value_set(value_set(writes), version)
            .map_err(tree_error)?;
        Ok((root.0, writes_of(version, batch)))
    }

    /// The tree of the whole chain state as it is, at `version` (the tip's height), built
    /// afresh.
    pub fn build(&self, version: Version) -> Result<([u8; 32], StateTreeWrites), StateTreeError> {
        let mut entries = Vec::new();
        self.store.for_each_chain_state(b"", |k, v| {
            entries.push((k.to_vec(), v.to_vec()));
            Ok(())
        })?;
        let reader = EmptyBefore(version);
        let tree = JellyfishMerkleTree::<_, Sha256>::new(&reader);
        let set = value_set(
            entries
                .iter()
                .map(|(k, v)| (k.as_slice(), Some(v.as_slice()))),
        );
        let (root, batch) = tree.put_value_set(set, version).map_err(tree_error)?;
        let mut writes = writes_of(version, batch);
        // Nothing of an older tree survives a rebuild.
        writes.deletes.clear();
        Ok((root.0, writes))
    }

    /// Makes sure the store holds the tree of its tip, building it if not. Returns whether it
    /// had to.
    pub fn ensure(&self) -> Result<bool, StateTreeError> {
        let tip = self.store.tip()?.map_or(0, |t| t.height);
        if self.store.state_tree_version()? == Some(tip) {
            return Ok(false);
        }
        let (_, writes) = self.build(tip)?;
        self.store.rebuild_state_tree(&writes)?;
        Ok(true)
    }

    /// `key`'s value in the state of `snapshot`'s tip, and its proof of membership or absence.
    pub fn prove(snapshot: &StateSnapshot<'_>, key: &[u8]) -> Result<ProvedValue, StateTreeError> {
        let height = snapshot.tip()?.map_or(0, |t| t.height);
        let tree_version = snapshot.state_tree_version()?;
        if tree_version != Some(height) {
            return Err(StateTreeError::Missing {
                tip: height,
                tree: tree_version,
            });
        }
        if !authenticated(key) {
            return Err(StateTreeError::Tree(format!(
                "key {} is node bookkeeping, not authenticated state",
                String::from_utf8_lossy(key)
            )));
        }
        let reader = ProofReader {
            snapshot,
            key,
            hash: KeyHash(key_hash(key)),
        };
        let tree = JellyfishMerkleTree::<_, Sha256>::new(&reader);
        let root = tree.get_root_hash(height).map_err(tree_error)?.0;
        let (value, proof) = tree
            .get_with_proof(KeyHash(key_hash(key)), height)
            .map_err(tree_error)?;
        Ok(ProvedValue {
            height,
            root,
            value,
            proof: StateProof::new(proof),
        })
    }
}

#[cfg(test)]
mod tests;
