//! Why a call to a node's API failed, in words that say what to do.

/// Why a call to the API failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("{0:?} is not a node API address: give http://HOST:PORT or https://HOST:PORT (e.g. http://127.0.0.1:8545)")]
    Address(String),
    #[error("cannot reach the node API at {url}: {reason} (is the node running, and is this its [api] listen address?)")]
    Unreachable { url: String, reason: String },
    #[error("the node API at {url} did not answer within {secs} s")]
    Timeout { url: String, secs: u64 },
    #[error("the node answered {status}: {message}")]
    Api { status: u16, message: String },
    #[error("the answer of {url} is not what the API describes: {reason}")]
    Decode { url: String, reason: String },
    #[error("cannot authenticate to the node: {0}")]
    Auth(String),
    #[error("the TLS setup failed: {0}")]
    Tls(String),
}

impl ClientError {
    /// The HTTP status of a refusal, if the node answered with one.
    pub fn status(&self) -> Option<u16> {
        match self {
            ClientError::Api { status, .. } => Some(*status),
            _ => None,
        }
    }
}

/// The whole chain of an error's causes, for a message that names the real one (hyper's own
/// top-level errors say only "client error (Connect)").
pub(crate) fn causes(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}
