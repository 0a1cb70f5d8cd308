//! Binary Merkle trees over a block's slips, with inclusion proofs.
//!
//! Leaves and inner nodes are hashed under different domains, so no inner node can be passed off as
//! a leaf (second-preimage attacks). An unpaired node at the end of a level is carried up unchanged
//! rather than paired with a copy of itself: duplication would let two different leaf lists share a
//! root (the flaw behind CVE-2012-2459). The root of no leaves is a fixed, domain-separated value.

use crate::hash::{digest, digest_parts, domains, Hash32};
use crate::CryptoError;

/// Hash of one leaf's canonical bytes.
pub fn leaf_hash(leaf: &[u8]) -> Hash32 {
    digest(domains::MERKLE_LEAF, leaf)
}

fn node_hash(left: &Hash32, right: &Hash32) -> Hash32 {
    digest_parts(domains::MERKLE_NODE, &[left.as_bytes(), right.as_bytes()])
}

/// Root of the tree over already-hashed leaves.
pub fn root_of_hashes(leaves: &[Hash32]) -> Hash32 {
    if leaves.is_empty() {
        return digest(domains::MERKLE_EMPTY, b"");
    }
    let mut level = leaves.to_vec();
    while level.len() > 1 {
        level = next_level(&level);
    }
    level[0]
}

/// Root of the tree over leaf bytes.
pub fn root<T: AsRef<[u8]>>(leaves: &[T]) -> Hash32 {
    let hashes: Vec<Hash32> = leaves.iter().map(|l| leaf_hash(l.as_ref())).collect();
    root_of_hashes(&hashes)
}

fn next_level(level: &[Hash32]) -> Vec<Hash32> {
    level
        .chunks(2)
        .map(|pair| match pair {
            [l, r] => node_hash(l, r),
            [single] => *single,
            _ => unreachable!("chunks(2) yields one or two items"),
        })
        .collect()
}

/// Proof that the leaf at `index` is in a tree of `leaf_count` leaves.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MerkleProof {
    pub index: u64,
    pub leaf_count: u64,
    /// Sibling hashes from the leaf level upwards; levels where the node is carried up have none.
    pub siblings: Vec<Hash32>,
}

impl MerkleProof {
    /// Builds the proof for `index` over already-hashed leaves.
    pub fn build(leaves: &[Hash32], index: usize) -> Result<Self, CryptoError> {
        if index >= leaves.len() {
            return Err(CryptoError::MerkleProof(format!(
                "index {index} out of range for {} leaves",
                leaves.len()
            )));
        }
        let mut siblings = Vec::new();
        let mut level = leaves.to_vec();
        let mut i = index;
        while level.len() > 1 {
            let sibling = i ^ 1;
            if sibling < level.len() {
                siblings.push(level[sibling]);
            }
            level = next_level(&level);
            i /= 2;
        }
        Ok(MerkleProof {
            index: index as u64,
            leaf_count: leaves.len() as u64,
            siblings,
        })
    }

    /// Checks that `leaf` (its bytes) sits at this proof's index under `root`.
    pub fn verify(&self, root: &Hash32, leaf: &[u8]) -> Result<(), CryptoError> {
        self.verify_hash(root, &leaf_hash(leaf))
    }

    /// Checks an already-hashed leaf.
    pub fn verify_hash(&self, root: &Hash32, leaf: &Hash32) -> Result<(), CryptoError> {
        if self.index >= self.leaf_count {
            return Err(CryptoError::MerkleProof(format!(
                "index {} out of range for {} leaves",
                self.index, self.leaf_count
            )));
        }
        let mut acc = *leaf;
        let mut i = self.index;
        let mut width = self.leaf_count;
        let mut siblings = self.siblings.iter();
        while width > 1 {
            let sibling = i ^ 1;
            if sibling < width {
                let s = siblings.next().ok_or_else(|| {
                    CryptoError::MerkleProof("proof is shorter than the tree is deep".into())
                })?;
                acc = if i.is_multiple_of(2) {
                    node_hash(&acc, s)
                } else {
                    node_hash(s, &acc)
                };
            }
            i /= 2;
            width = width.div_ceil(2);
        }
        if siblings.next().is_some() {
            return Err(CryptoError::MerkleProof(
                "proof has more siblings than the tree has levels".into(),
            ));
        }
        if &acc != root {
            return Err(CryptoError::MerkleProof(format!(
                "computed root {acc} differs from expected {root}"
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn leaves(n: usize) -> Vec<Vec<u8>> {
        (0..n).map(|i| format!("slip-{i}").into_bytes()).collect()
    }

    #[test]
    fn every_leaf_proves_for_sizes_1_to_33() {
        for n in 1..=33 {
            let ls = leaves(n);
            let hashes: Vec<Hash32> = ls.iter().map(|l| leaf_hash(l)).collect();
            let r = root(&ls);
            for (i, leaf) in ls.iter().enumerate() {
                let proof = MerkleProof::build(&hashes, i).unwrap();
                proof.verify(&r, leaf).unwrap();
                assert!(proof.verify(&r, b"other").is_err(), "n={n} i={i}");
            }
        }
    }

    #[test]
    fn bad_proofs_are_rejected() {
        let ls = leaves(5);
        let hashes: Vec<Hash32> = ls.iter().map(|l| leaf_hash(l)).collect();
        let r = root(&ls);
        let good = MerkleProof::build(&hashes, 2).unwrap();

        let mut wrong_index = good.clone();
        wrong_index.index = 3;
        assert!(wrong_index.verify(&r, &ls[2]).is_err());

        let mut truncated = good.clone();
        truncated.siblings.pop();
        assert!(truncated.verify(&r, &ls[2]).is_err());

        let mut extended = good.clone();
        extended.siblings.push(Hash32::ZERO);
        assert!(extended.verify(&r, &ls[2]).is_err());

        let mut flipped = good.clone();
        flipped.siblings[0].0[0] ^= 1;
        assert!(flipped.verify(&r, &ls[2]).is_err());

        let mut out_of_range = good;
        out_of_range.index = 9;
        assert!(out_of_range.verify(&r, &ls[2]).is_err());
        assert!(MerkleProof::build(&hashes, 5).is_err());
    }

    #[test]
    fn no_duplication_ambiguity_and_leaf_is_not_node() {
        // [a, b, c] and [a, b, c, c] must have different roots.
        let three = leaves(3);
        let mut four = three.clone();
        four.push(three[2].clone());
        assert_ne!(root(&three), root(&four));
        // An inner node presented as a leaf does not verify.
        assert_ne!(root(&leaves(0)), root(&[b"".to_vec()]));
    }

    proptest! {
        #[test]
        fn proofs_round_trip(n in 1usize..70, pick in 0usize..70) {
            let ls = leaves(n);
            let i = pick % n;
            let hashes: Vec<Hash32> = ls.iter().map(|l| leaf_hash(l)).collect();
            let proof = MerkleProof::build(&hashes, i).unwrap();
            prop_assert!(proof.verify(&root(&ls), &ls[i]).is_ok());
        }
    }
}
