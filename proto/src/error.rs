//! Errors of decoding and validating wire messages.

use medchain_crypto::CryptoError;

/// Why bytes or a message were refused. Each variant names the message kind and the problem.
#[derive(Debug, thiserror::Error)]
pub enum ProtoError {
    #[error("{kind} is {size} bytes, over the {limit}-byte limit")]
    TooLarge {
        kind: &'static str,
        size: usize,
        limit: usize,
    },
    #[error("{kind} is not valid protobuf: {reason}")]
    Malformed { kind: &'static str, reason: String },
    #[error("{kind} is not in canonical encoding (re-encoding differs); senders must encode with medchain's canonical form")]
    NonCanonical { kind: &'static str },
    #[error("peer message version {got} is not supported (this node speaks version {supported}); upgrade the older node")]
    UnknownVersion { got: u32, supported: u32 },
    #[error("{kind}: required field `{field}` is missing")]
    MissingField {
        kind: &'static str,
        field: &'static str,
    },
    #[error("{kind}: field `{field}` is invalid: {source}")]
    InvalidField {
        kind: &'static str,
        field: &'static str,
        #[source]
        source: CryptoError,
    },
    #[error("{kind}: {reason}")]
    Invalid { kind: &'static str, reason: String },
}
