//! `GET /v1/chain`: what a client builds transactions and grants from.

use serde::{Deserialize, Serialize};

/// The chain a node serves: its ID, validators (the proxies) and authorities.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChainInfo {
    pub chain_id: String,
    /// The contract rules the chain runs (genesis `params.rules`): what a client's transactions
    /// must follow (from rules 3, a patient is registered with no name).
    pub rules: u32,
    pub validators: Vec<ValidatorInfo>,
    pub authorities: Vec<AuthorityInfo>,
}

/// A validator of the chain.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ValidatorInfo {
    /// Its index in the validator set (the PBFT replica number).
    pub index: u32,
    pub name: String,
    /// `mcid1…` identity.
    pub identity: String,
    /// Hex of its record-encryption public key: patients seal its re-encryption key fragment to
    /// it. `None` for a validator that is not a proxy.
    pub encryption_key: Option<String>,
}

/// An authority: registers doctors and patients, suspends and reinstates them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuthorityInfo {
    pub name: String,
    /// `mcid1…` identity.
    pub identity: String,
}
