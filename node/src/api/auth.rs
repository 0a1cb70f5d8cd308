//! Caller authentication: `POST /v1/auth/challenge`, `POST /v1/auth/token`, and the [`Caller`]
//! extractor every patient-linked endpoint takes.
//!
//! A caller proves it holds a key the chain knows (a registered participant, a genesis
//! authority or a validator) by signing a challenge this node issued, bound to the chain, this
//! node and the caller (`medchain_proto::auth`). The node answers with a bearer token for ten
//! minutes. Both the challenge and the token are MACs under a secret drawn when the process
//! starts, so the node keeps no table of what it issued (a flood of challenge requests costs it
//! nothing to remember), a token works at this node only, and a restart voids every challenge
//! and token issued before it. Each challenge opens one token: the node remembers the
//! challenges answered until they expire (at most a minute), which only registered keys can
//! make it do.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{header, StatusCode};
use axum::{Extension, Json};
use medchain_api::{Challenge, Token, TokenRequest};
use medchain_crypto::hash::{domains, mac};
use medchain_crypto::{Hash32, Identity};
use medchain_proto::auth::verify_response;
use medchain_proto::v1;
use rand::RngCore;
use zeroize::Zeroizing;

use crate::api::{bad, internal, queries, ApiError};
use crate::private::{now_ms, NodeHandle};

/// How long a challenge can be answered.
pub const CHALLENGE_LIFETIME_MS: u64 = 60_000;
/// How long a token opens this node's API.
pub const TOKEN_LIFETIME_MS: u64 = 600_000;
/// At most this many answered, unexpired challenges are remembered; beyond it new tokens wait
/// (503) until the oldest expire, rather than the node growing without bound.
const MAX_ANSWERED: usize = 1_000_000;
/// At most this many tokens per identity per challenge lifetime (a client needs one per ten
/// minutes; a script of CLI commands, one per command), so that one key cannot fill the
/// answered set and lock everyone else out: that would take thousands of registered keys.
const TOKENS_PER_IDENTITY: usize = 120;

const NONCE_LEN: usize = 16;
const CHALLENGE_LEN: usize = NONCE_LEN + 8 + 16;
const TOKEN_LEN: usize = medchain_crypto::identity::IDENTITY_LEN + 8 + 32;

/// Issues and checks this node's challenges and tokens.
pub struct Gate {
    secret: Zeroizing<[u8; 32]>,
    chain_id: String,
    node: Identity,
    authorities: HashSet<Identity>,
    validators: HashSet<Identity>,
    /// Answered challenges (by their MAC) and when they expire.
    answered: Mutex<HashMap<Hash32, u64>>,
    /// When each identity's recent tokens were issued (within a challenge lifetime).
    issued: Mutex<HashMap<Identity, Vec<u64>>>,
}

impl std::fmt::Debug for Gate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Gate({})", self.node)
    }
}

fn unauthorized(m: impl Into<String>) -> ApiError {
    ApiError(StatusCode::UNAUTHORIZED, m.into())
}

impl Gate {
    /// The gate of `node`, with a fresh secret.
    pub fn new(node: &NodeHandle) -> Self {
        let mut secret = Zeroizing::new([0u8; 32]);
        rand::rngs::OsRng.fill_bytes(secret.as_mut());
        Gate {
            secret,
            chain_id: node.chain_id().to_string(),
            node: node.node_key.signing_key().identity(),
            authorities: node.ledger.authorities.iter().copied().collect(),
            validators: node
                .chain
                .validators
                .iter()
                .filter_map(|v| v.identity.parse().ok())
                .collect(),
            answered: Mutex::default(),
            issued: Mutex::default(),
        }
    }

    /// A new challenge, answerable until `now + CHALLENGE_LIFETIME_MS`.
    pub fn challenge(&self, now: u64) -> Challenge {
        let mut nonce = [0u8; NONCE_LEN];
        rand::rngs::OsRng.fill_bytes(&mut nonce);
        let expires = now + CHALLENGE_LIFETIME_MS;
        let tag = self.challenge_tag(&nonce, expires);
        let bytes = [&nonce[..], &expires.to_le_bytes(), &tag.0[..16]].concat();
        Challenge {
            challenge: hex::encode(bytes),
            chain_id: self.chain_id.clone(),
            node: self.node.to_string(),
            expires_ms: expires,
        }
    }

    fn challenge_tag(&self, nonce: &[u8], expires: u64) -> Hash32 {
        mac(
            &self.secret,
            domains::API_AUTH_CHALLENGE,
            &[nonce, &expires.to_le_bytes()],
        )
    }

    fn token_tag(&self, id: &Identity, expires: u64) -> Hash32 {
        mac(
            &self.secret,
            domains::API_TOKEN,
            &[id.as_bytes(), &expires.to_le_bytes()],
        )
    }

    /// Whether the chain knows `id` as someone who may hold a token.
    fn known(&self, node: &NodeHandle, id: &Identity) -> Result<bool, ApiError> {
        Ok(self.authorities.contains(id)
            || self.validators.contains(id)
            || queries(node).identity(id).map_err(internal)?.is_some())
    }

    /// Checks a signed answer and issues its token.
    pub fn token(
        &self,
        node: &NodeHandle,
        req: &TokenRequest,
        now: u64,
    ) -> Result<Token, ApiError> {
        let id: Identity = req
            .identity
            .parse()
            .map_err(|e| bad(format!("identity {:?}: {e}", req.identity)))?;
        let challenge = hex::decode(req.challenge.trim())
            .ok()
            .filter(|c| c.len() == CHALLENGE_LEN)
            .ok_or_else(|| {
                bad("`challenge` must be the hex of a challenge from POST /v1/auth/challenge")
            })?;
        let (nonce, rest) = challenge.split_at(NONCE_LEN);
        let (expires, tag) = rest.split_at(8);
        let expires = u64::from_le_bytes(expires.try_into().expect("8 bytes"));
        let expected = self.challenge_tag(nonce, expires);
        if !Hash32(pad(tag)).ct_eq(&Hash32(pad(&expected.0[..16]))) {
            return Err(unauthorized(
                "this node did not issue that challenge (or restarted since): ask POST /v1/auth/challenge for a new one",
            ));
        }
        if expires <= now {
            return Err(unauthorized(
                "the challenge expired (answer within 60 s): ask POST /v1/auth/challenge for a new one",
            ));
        }
        let signature =
            hex::decode(req.signature.trim()).map_err(|_| bad("`signature` must be hex"))?;
        verify_response(&id, &signature, &self.chain_id, &self.node, &challenge).map_err(|e| {
            unauthorized(format!(
                "{e}: sign the challenge for chain {:?}, node {} and identity {id} with that identity's key",
                self.chain_id, self.node
            ))
        })?;
        // Only after the signature: a caller who does not hold the key learns nothing about
        // whether the identity is registered.
        if !self.known(node, &id)? {
            return Err(ApiError(
                StatusCode::FORBIDDEN,
                format!("{id} is not registered on this chain; an authority registers it with `medchain identity register`"),
            ));
        }
        // The replay check before the quota: a captured answer replayed in someone's name is
        // refused without using up her tokens (else 120 replays would lock her out a minute).
        self.mark_answered(expected, expires, now)?;
        self.within_quota(&id, now)?;
        let expires = now + TOKEN_LIFETIME_MS;
        let tag = self.token_tag(&id, expires);
        let token = [&id.as_bytes()[..], &expires.to_le_bytes(), &tag.0].concat();
        Ok(Token {
            token: hex::encode(token),
            identity: id.to_string(),
            expires_ms: expires,
        })
    }

    /// Refuses an identity that asked for too many tokens within a challenge lifetime.
    fn within_quota(&self, id: &Identity, now: u64) -> Result<(), ApiError> {
        let mut issued = self.issued.lock().unwrap_or_else(|p| p.into_inner());
        if issued.len() >= MAX_ANSWERED {
            issued.retain(|_, times| times.iter().any(|t| t + CHALLENGE_LIFETIME_MS > now));
        }
        let times = issued.entry(*id).or_default();
        times.retain(|t| t + CHALLENGE_LIFETIME_MS > now);
        if times.len() >= TOKENS_PER_IDENTITY {
            return Err(ApiError(
                StatusCode::TOO_MANY_REQUESTS,
                format!("{id} asked for {TOKENS_PER_IDENTITY} tokens within a minute; a token lasts ten minutes: reuse it"),
            ));
        }
        times.push(now);
        Ok(())
    }

    /// Remembers an answered challenge until it expires; a second answer is a replay.
    fn mark_answered(&self, tag: Hash32, expires: u64, now: u64) -> Result<(), ApiError> {
        let mut answered = self.answered.lock().unwrap_or_else(|p| p.into_inner());
        if answered.len() >= MAX_ANSWERED {
            answered.retain(|_, e| *e > now);
        }
        if answered.len() >= MAX_ANSWERED {
            return Err(ApiError(
                StatusCode::SERVICE_UNAVAILABLE,
                "too many authentications in the last minute; retry shortly".into(),
            ));
        }
        if answered.insert(tag, expires).is_some() {
            return Err(unauthorized(
                "that challenge was answered already (each opens one token): ask POST /v1/auth/challenge for a new one",
            ));
        }
        Ok(())
    }

    /// The identity a bearer token stands for, if this node issued it and it has not expired.
    pub fn check(&self, token: &str, now: u64) -> Result<Identity, ApiError> {
        let renew = "get a new one with POST /v1/auth/challenge and POST /v1/auth/token (the CLI does with --key)";
        let bytes = hex::decode(token.trim())
            .ok()
            .filter(|b| b.len() == TOKEN_LEN)
            .ok_or_else(|| {
                unauthorized(format!(
                    "the bearer token is not a token of this API: {renew}"
                ))
            })?;
        let (id, rest) = bytes.split_at(medchain_crypto::identity::IDENTITY_LEN);
        let (expires, tag) = rest.split_at(8);
        let expires = u64::from_le_bytes(expires.try_into().expect("8 bytes"));
        let id = Identity::from_bytes(id).map_err(|_| {
            unauthorized(format!(
                "the bearer token is not a token of this API: {renew}"
            ))
        })?;
        if !self.token_tag(&id, expires).ct_eq(&Hash32(pad(tag))) {
            return Err(unauthorized(format!(
                "this node did not issue the bearer token (tokens work only at the node that issued them, and not after it restarts): {renew}"
            )));
        }
        if expires <= now {
            return Err(unauthorized(format!("the bearer token expired: {renew}")));
        }
        Ok(id)
    }

    /// Who `id` is to this node's API.
    fn caller(&self, node: &NodeHandle, id: Identity) -> Result<Caller, ApiError> {
        let q = queries(node);
        let entry = q.identity(&id).map_err(internal)?;
        let kind = if self.authorities.contains(&id) {
            CallerKind::Authority
        } else if self.validators.contains(&id) {
            CallerKind::Validator
        } else {
            match entry.as_ref().map(|e| v1::Role::try_from(e.role)) {
                Some(Ok(v1::Role::Patient)) => CallerKind::Patient,
                Some(Ok(v1::Role::Doctor)) => CallerKind::Doctor,
                _ => CallerKind::Other,
            }
        };
        let suspended = q.suspension(&id).map_err(internal)?.is_some();
        Ok(Caller {
            id,
            kind,
            suspended,
        })
    }
}

/// The last 16 bytes zero: compares a 16-byte tag through [`Hash32::ct_eq`].
fn pad(tag: &[u8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    let n = tag.len().min(32);
    out[..n].copy_from_slice(&tag[..n]);
    out
}

/// What the chain makes a caller.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CallerKind {
    /// A genesis authority: the registry and supervision (it sees what they need).
    Authority,
    /// A validator of this chain (it holds every block anyway).
    Validator,
    Patient,
    Doctor,
    /// A data user (insurer, researcher), or registered with no role the API knows: it sees
    /// its own registration, grants and requests and the records it holds a grant for.
    Other,
}

/// An authenticated caller. Handlers ask it what it may see; see `access.rs`.
#[derive(Clone, Debug)]
pub struct Caller {
    pub id: Identity,
    pub kind: CallerKind,
    /// A suspended caller still sees what is about itself, and nothing through its role or
    /// grants.
    pub suspended: bool,
}

/// The bearer token of a request, if it sent one.
fn bearer(parts: &Parts) -> Result<Option<&str>, ApiError> {
    let Some(value) = parts.headers.get(header::AUTHORIZATION) else {
        return Ok(None);
    };
    let text = value
        .to_str()
        .map_err(|_| unauthorized("the Authorization header is not text"))?;
    match text.split_once(' ') {
        Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") => Ok(Some(token)),
        _ => Err(unauthorized(
            "the Authorization header must be `Bearer TOKEN` (a token from POST /v1/auth/token)",
        )),
    }
}

fn gate(parts: &Parts) -> Result<Arc<Gate>, ApiError> {
    parts
        .extensions
        .get::<Arc<Gate>>()
        .cloned()
        .ok_or_else(|| internal("the API router has no authentication gate"))
}

impl FromRequestParts<NodeHandle> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, node: &NodeHandle) -> Result<Self, ApiError> {
        match Option::<Caller>::from_request_parts(parts, node).await? {
            Some(c) => Ok(c),
            None => Err(unauthorized(
                "this endpoint shows patient data and answers only an authenticated caller: send `Authorization: Bearer TOKEN` (POST /v1/auth/challenge, then POST /v1/auth/token; the CLI does it with --key, and `medchain token` prints one)",
            )),
        }
    }
}

impl axum::extract::OptionalFromRequestParts<NodeHandle> for Caller {
    type Rejection = ApiError;

    /// `None` for a request without a token; a token that does not check is refused (the
    /// client should know its token is no good rather than silently see less).
    async fn from_request_parts(
        parts: &mut Parts,
        node: &NodeHandle,
    ) -> Result<Option<Self>, ApiError> {
        let Some(token) = bearer(parts)? else {
            return Ok(None);
        };
        let gate = gate(parts)?;
        let id = gate.check(token, now_ms())?;
        gate.caller(node, id).map(Some)
    }
}

/// A caller who may upload records (a doctor in good standing), checked from the headers, so a
/// refused caller's body is never read.
#[derive(Clone, Debug)]
pub struct Uploader(pub Caller);

impl FromRequestParts<NodeHandle> for Uploader {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, node: &NodeHandle) -> Result<Self, ApiError> {
        let caller =
            <Caller as FromRequestParts<NodeHandle>>::from_request_parts(parts, node).await?;
        if !caller.may_upload() {
            return Err(ApiError(
                StatusCode::FORBIDDEN,
                format!(
                    "{} may not upload records: only a registered doctor in good standing writes records",
                    caller.id
                ),
            ));
        }
        Ok(Uploader(caller))
    }
}

/// `POST /v1/auth/challenge`.
pub async fn challenge(Extension(gate): Extension<Arc<Gate>>) -> Json<Challenge> {
    Json(gate.challenge(now_ms()))
}

/// `POST /v1/auth/token`.
pub async fn token(
    State(node): State<NodeHandle>,
    Extension(gate): Extension<Arc<Gate>>,
    Json(req): Json<TokenRequest>,
) -> Result<Json<Token>, ApiError> {
    let issued = gate.token(&node, &req, now_ms());
    node.metrics
        .record_call("auth", if issued.is_ok() { "issued" } else { "refused" });
    issued.map(Json)
}
