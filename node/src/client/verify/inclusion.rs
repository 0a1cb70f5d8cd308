//! Transactions proved in their block: a Merkle path from the transaction's canonical bytes to
//! the `merkle_root` of a header already verified.

use medchain_api::InclusionProof;
use medchain_crypto::merkle::MerkleProof;
use medchain_crypto::Hash32;
use medchain_proto::canonical::Canonical;
use medchain_proto::v1;

use super::{VerifiedHeader, VerifyError};

/// The transaction `proof` shows, if it is in the block of `header` at the position it claims.
pub fn verify_inclusion(
    header: &VerifiedHeader,
    proof: &InclusionProof,
) -> Result<v1::Transaction, VerifyError> {
    let height = header.header.height;
    let not_in = |reason: String| VerifyError::NotIncluded {
        height,
        index: proof.index,
        reason,
    };
    let bytes = hex::decode(&proof.transaction)
        .map_err(|e| not_in(format!("the transaction is not hex: {e}")))?;
    let transaction = v1::Transaction::decode_canonical(&bytes)
        .map_err(|e| not_in(format!("the transaction is malformed: {e}")))?;
    let siblings = proof
        .siblings
        .iter()
        .map(|s| Hash32::from_hex(s).map_err(|_| not_in(format!("sibling {s:?} is not a hash"))))
        .collect::<Result<Vec<_>, _>>()?;
    if proof.leaf_count != u64::from(header.header.transaction_count) {
        return Err(not_in(format!(
            "the proof is for a block of {} transactions, the header has {}",
            proof.leaf_count, header.header.transaction_count
        )));
    }
    let root: [u8; 32] = header
        .header
        .merkle_root
        .as_slice()
        .try_into()
        .map_err(|_| not_in("the header's merkle_root is not 32 bytes".into()))?;
    MerkleProof {
        index: proof.index,
        leaf_count: proof.leaf_count,
        siblings,
    }
    .verify(&Hash32(root), &transaction.canonical_bytes())
    .map_err(|e| not_in(e.to_string()))?;
    Ok(transaction)
}
