//! `GET /v1/chain`: what a client builds transactions and grants from.

use serde::{Deserialize, Serialize};

/// The chain a node serves: its ID, validators (the proxies) and authorities.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChainInfo {
    pub chain_id: String,
    /// The contract rules the chain's next block runs (genesis `params.rules`, or a later version
    /// an upgrade on chain brought in): what a client's transactions must follow (from rules 3,
    /// a patient is registered with no name).
    pub rules: u32,
    /// The last rules upgrade scheduled on chain, if any (in effect once `rules` says so).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rules_upgrade: Option<RulesUpgradeInfo>,
    pub validators: Vec<ValidatorInfo>,
    pub authorities: Vec<AuthorityInfo>,
}

/// A rules upgrade scheduled on chain: blocks from `activation_height` on run `version`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RulesUpgradeInfo {
    pub version: u32,
    pub activation_height: u64,
    /// The height of the block that scheduled it.
    pub scheduled_at: u64,
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
