//! API authentication: what a caller signs to prove to one node that it holds a registered key.
//!
//! The node hands out a random challenge; the caller signs the challenge together with the chain,
//! the node it is talking to and its own identity. Binding the node means a response captured at
//! one validator opens nothing at another; binding the chain means a key used on two chains
//! cannot be walked from one to the other. The node then issues a short-lived token (its own
//! business: only the node that issued it checks it).

use medchain_crypto::hash::{digest_parts, domains};
use medchain_crypto::{Hash32, Identity, Signature, SigningKey};

use crate::ProtoError;

const KIND: &str = "authentication response";

/// The digest a caller signs to answer `challenge` from `node` on `chain_id`.
pub fn response_digest(
    chain_id: &str,
    node: &Identity,
    caller: &Identity,
    challenge: &[u8],
) -> Hash32 {
    digest_parts(
        domains::API_AUTH_RESPONSE,
        &[
            chain_id.as_bytes(),
            node.as_bytes(),
            caller.as_bytes(),
            challenge,
        ],
    )
}

/// Signs the answer to `challenge` as `caller`.
pub fn sign_response(
    caller: &SigningKey,
    chain_id: &str,
    node: &Identity,
    challenge: &[u8],
) -> Signature {
    caller.sign_digest(&response_digest(
        chain_id,
        node,
        &caller.identity(),
        challenge,
    ))
}

/// Checks that `signature` answers `challenge` from `node` on `chain_id` as `caller`.
pub fn verify_response(
    caller: &Identity,
    signature: &[u8],
    chain_id: &str,
    node: &Identity,
    challenge: &[u8],
) -> Result<(), ProtoError> {
    let field = |source| ProtoError::InvalidField {
        kind: KIND,
        field: "signature",
        source,
    };
    let signature = Signature::from_slice(signature).map_err(field)?;
    caller
        .verify_digest(
            &response_digest(chain_id, node, caller, challenge),
            &signature,
        )
        .map_err(field)
}

#[cfg(test)]
mod tests {
    use super::*;
    use medchain_crypto::keys::KeyMaterial;

    fn key(seed: u8) -> SigningKey {
        KeyMaterial::from_seed(&[seed; 32]).unwrap().signing_key()
    }

    #[test]
    fn a_response_verifies_only_for_its_chain_node_caller_and_challenge() {
        let (caller, node, other) = (key(1), key(2).identity(), key(3).identity());
        let sig = sign_response(&caller, "h1", &node, b"challenge");
        let me = caller.identity();
        let bytes = sig.as_bytes();
        verify_response(&me, bytes, "h1", &node, b"challenge").unwrap();
        assert!(verify_response(&me, bytes, "h2", &node, b"challenge").is_err());
        assert!(verify_response(&me, bytes, "h1", &other, b"challenge").is_err());
        assert!(verify_response(&other, bytes, "h1", &node, b"challenge").is_err());
        assert!(verify_response(&me, bytes, "h1", &node, b"challengf").is_err());
        assert!(verify_response(&me, &bytes[1..], "h1", &node, b"challenge").is_err());
    }
}
