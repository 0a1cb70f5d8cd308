//! The node's client API as types, and the client that speaks it.
//!
//! Every JSON body the node answers with is one of these types: the server builds them and the
//! client reads them, so the two cannot drift apart, and `tests/openapi.rs` checks
//! `docs/api/openapi.yaml` against them. Identities, hashes and canonical bytes travel as text
//! (bech32 `mcid1…` identities, hex digests and bytes), as the API has always shown them; a
//! client that relies on one re-derives it from signed bytes (the `block`, `slip` and
//! `transaction` fields carry the canonical protobuf) rather than trusting the text.
//!
//! This crate is a leaf: it knows HTTP and JSON, not the node, its storage or its consensus.

pub mod audit;
pub mod auth;
pub mod blocks;
pub mod chain;
pub mod client;
pub mod consent;
pub mod error;
pub mod events;
pub mod identities;
pub mod node;
pub mod proofs;
pub mod records;
pub mod transactions;

pub use audit::{AuditEntry, AuditTrail};
pub use auth::{Authenticator, Challenge, Token, TokenRequest};
pub use blocks::{Block, BlockEvent, CommitInfo, Lagged};
pub use chain::{AuthorityInfo, ChainInfo, RulesUpgradeInfo, ValidatorInfo};
pub use client::{ApiClient, Timeouts};
pub use consent::{
    ConsentList, GrantInfo, GrantStatus, RequestInfo, RequestOutcome, RequestStatus,
};
pub use error::ClientError;
pub use events::{EventStream, StreamEvent};
pub use identities::{IdentityInfo, Role, SuspensionInfo};
pub use node::{ErrorBody, Health, Ready, Status};
pub use proofs::{
    CertifiedHeader, HeaderList, InclusionProof, ProofQuery, ProvedEntry, RecordProof, StateProofs,
    TransactionProof,
};
pub use records::{
    IntegrityStatus, PatientRecords, RecordAccepted, RecordSlip, RecordView, Slip, VerifyReport,
};
pub use transactions::{Accepted, SubmitRequest, TransactionInfo};

/// What [`ApiClient::send`] takes and answers, so callers need not depend on hyper themselves.
pub use hyper::{Method, StatusCode};
