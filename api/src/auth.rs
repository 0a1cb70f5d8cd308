//! Caller authentication: a challenge, the signed answer, and the short-lived token a node
//! issues for it (`POST /v1/auth/challenge`, `POST /v1/auth/token`). Every endpoint that shows
//! anything linked to a patient answers only a caller that sends `Authorization: Bearer TOKEN`.

use serde::{Deserialize, Serialize};

/// `POST /v1/auth/challenge`: what the caller signs, and for whom.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Challenge {
    /// Hex bytes to sign (with the chain, the node and the caller's identity).
    pub challenge: String,
    pub chain_id: String,
    /// The identity of the node that issued it: the token works at this node only.
    pub node: String,
    /// After this (Unix ms) the node refuses an answer to it.
    pub expires_ms: u64,
}

/// `POST /v1/auth/token`: the caller's signed answer to a challenge.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenRequest {
    /// The caller's registered identity (or a genesis authority or validator).
    pub identity: String,
    /// The challenge as the node issued it (hex).
    pub challenge: String,
    /// Hex signature over the challenge, chain, node and identity.
    pub signature: String,
}

/// The answer to a [`TokenRequest`]: a bearer token for this node.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Token {
    pub token: String,
    pub identity: String,
    /// Unix ms after which the node refuses the token (and the client asks for another).
    pub expires_ms: u64,
}

/// Signs challenges for an [`crate::ApiClient`], which then fetches, renews and sends tokens by
/// itself. Implemented where the keys are (this crate holds none).
pub trait Authenticator: Send + Sync + std::fmt::Debug {
    /// The identity the caller authenticates as.
    fn identity(&self) -> String;
    /// The hex signature answering `challenge`, or why the caller will not sign it (for example
    /// a node that names itself something the caller does not trust).
    fn respond(&self, challenge: &Challenge) -> Result<String, String>;
}
