//! The client of a node's API: hyper's pooled HTTP/1.1 client, over TLS (rustls, the web's
//! root certificates) for `https://` nodes, with a connect timeout and a whole-request timeout
//! so that a node that stops answering costs a client seconds, not forever.
//!
//! One typed method per endpoint: the paths live here once, answers are decoded into this
//! crate's types, and a refusal becomes [`ClientError::Api`] with the node's message, which says
//! what to do.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE};
use hyper::{Method, Request, StatusCode};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::error::{causes, ClientError};
use crate::events::EventStream;
use crate::{
    Accepted, AuditTrail, Authenticator, Block, ChainInfo, Challenge, ConsentList, ErrorBody,
    Health, IdentityInfo, PatientRecords, Ready, RecordAccepted, RecordView, Slip, Status,
    SubmitRequest, Token, TokenRequest, TransactionInfo, VerifyReport,
};

/// How long a client waits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timeouts {
    /// For the TCP (and TLS) connection.
    pub connect: Duration,
    /// For a whole request: sending it and reading the whole answer.
    pub request: Duration,
    /// For a record upload or read (up to 16 MiB each way): 16 MiB at 0.5 MiB/s.
    pub transfer: Duration,
    /// For the next bytes of an event stream (the node sends a keep-alive every 15 s).
    pub stream_idle: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            connect: Duration::from_secs(5),
            request: Duration::from_secs(30),
            transfer: Duration::from_secs(300),
            stream_idle: Duration::from_secs(45),
        }
    }
}

type Http = hyper_util::client::legacy::Client<HttpsConnector<HttpConnector>, Full<Bytes>>;

/// A client of one node's API. Cheap to clone: clones share the connection pool (and, once
/// authenticated, the token).
#[derive(Clone, Debug)]
pub struct ApiClient {
    /// `http(s)://host:port[/prefix]`, without a trailing slash.
    base: String,
    http: Http,
    timeouts: Timeouts,
    /// Who this client authenticates as, if anyone.
    auth: Option<Arc<dyn Authenticator>>,
    /// The node's current token for `auth`.
    token: Arc<Mutex<Option<Token>>>,
    /// Held while one request of the clones asks for a new token, so that many requests
    /// finding the token lapsed at once (or refused after a node restart) authenticate once,
    /// not once each.
    renewing: Arc<tokio::sync::Mutex<()>>,
}

/// A token this close to its expiry is renewed before use, so it does not lapse in flight.
const TOKEN_MARGIN_MS: u64 = 30_000;

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Reads `http://host:port`, `https://host:port[/prefix]`, `host:port` or a bare port (on
/// loopback) into the base URL of the API.
pub fn parse_base(node: &str) -> Result<String, ClientError> {
    let text = node.trim();
    let (scheme, rest) = text.split_once("://").unwrap_or(("http", text));
    let rest = rest.trim_end_matches('/');
    if rest.is_empty() {
        return Err(ClientError::Address(node.to_string()));
    }
    let with_scheme = if rest.chars().all(|c| c.is_ascii_digit()) {
        format!("{scheme}://127.0.0.1:{rest}")
    } else {
        format!("{scheme}://{rest}")
    };
    let uri: hyper::Uri = with_scheme
        .parse()
        .map_err(|_| ClientError::Address(node.to_string()))?;
    let scheme_ok = matches!(uri.scheme_str(), Some("http" | "https"));
    if !scheme_ok || uri.authority().is_none() || uri.query().is_some() {
        return Err(ClientError::Address(node.to_string()));
    }
    Ok(with_scheme)
}

impl ApiClient {
    /// A client of the node at `node` with the default timeouts.
    pub fn new(node: &str) -> Result<Self, ClientError> {
        Self::with_timeouts(node, Timeouts::default())
    }

    pub fn with_timeouts(node: &str, timeouts: Timeouts) -> Result<Self, ClientError> {
        let base = parse_base(node)?;
        let mut tcp = HttpConnector::new();
        tcp.set_connect_timeout(Some(timeouts.connect));
        tcp.set_nodelay(true);
        tcp.enforce_http(false);
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_provider_and_webpki_roots(rustls::crypto::ring::default_provider())
            .map_err(|e| ClientError::Tls(e.to_string()))?
            .https_or_http()
            .enable_http1()
            .wrap_connector(tcp);
        let http = hyper_util::client::legacy::Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .build(connector);
        Ok(ApiClient {
            base,
            http,
            timeouts,
            auth: None,
            token: Arc::default(),
            renewing: Arc::default(),
        })
    }

    /// This client, authenticating as `auth`: it asks the node for a token when it first
    /// needs one, renews it before it expires, and asks again once when the node refuses it
    /// (a node forgets its tokens when it restarts).
    pub fn with_authenticator(mut self, auth: Arc<dyn Authenticator>) -> Self {
        self.auth = Some(auth);
        self.token = Arc::default();
        self
    }

    /// The identity this client authenticates as, if any.
    pub fn authenticated_as(&self) -> Option<String> {
        self.auth.as_ref().map(|a| a.identity())
    }

    /// A valid token for this client's identity (asking the node for one if needed), or `None`
    /// for an anonymous client and for the authentication calls themselves.
    async fn bearer(&self, path: &str) -> Result<Option<String>, ClientError> {
        if self.auth.is_none() {
            return Ok(None);
        }
        if path.starts_with("/v1/auth/") {
            return Ok(None);
        }
        if let Some(token) = self.current_token() {
            return Ok(Some(token));
        }
        let _renewing = self.renewing.lock().await;
        // Another request may have renewed it while this one waited.
        if let Some(token) = self.current_token() {
            return Ok(Some(token));
        }
        Ok(Some(self.authenticate().await?.token))
    }

    /// The kept token, if it is not about to lapse.
    fn current_token(&self) -> Option<String> {
        let kept = self.token.lock().unwrap_or_else(|p| p.into_inner());
        kept.as_ref()
            .filter(|t| t.expires_ms > now_ms() + TOKEN_MARGIN_MS)
            .map(|t| t.token.clone())
    }

    /// Asks the node for a new token (challenge, signed answer, token) and keeps it for the
    /// requests that follow.
    pub async fn authenticate(&self) -> Result<Token, ClientError> {
        let Some(auth) = &self.auth else {
            return Err(ClientError::Auth(
                "this client has no identity to authenticate as (give --key FILE)".into(),
            ));
        };
        let challenge: Challenge = self
            .post_json("/v1/auth/challenge", &serde_json::Map::new())
            .await?;
        let signature = auth.respond(&challenge).map_err(ClientError::Auth)?;
        let token: Token = self
            .post_json(
                "/v1/auth/token",
                &TokenRequest {
                    identity: auth.identity(),
                    challenge: challenge.challenge,
                    signature,
                },
            )
            .await?;
        *self.token.lock().unwrap_or_else(|p| p.into_inner()) = Some(token.clone());
        Ok(token)
    }

    /// Forgets the token the node refused, unless a concurrent request has already replaced it.
    fn forget_token(&self, refused: &str) {
        let mut kept = self.token.lock().unwrap_or_else(|p| p.into_inner());
        if kept.as_ref().is_some_and(|t| t.token == refused) {
            *kept = None;
        }
    }

    /// The API's base URL.
    pub fn base(&self) -> &str {
        &self.base
    }

    fn request(
        &self,
        method: Method,
        path: &str,
        content_type: &str,
        body: Bytes,
        bearer: Option<&str>,
    ) -> Result<Request<Full<Bytes>>, ClientError> {
        let mut builder = Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base))
            .header(CONTENT_TYPE, content_type);
        if let Some(token) = bearer {
            builder = builder.header(AUTHORIZATION, format!("Bearer {token}"));
        }
        builder
            .body(Full::new(body))
            .map_err(|_| ClientError::Address(format!("{}{path}", self.base)))
    }

    /// Sends one request and reads the whole answer, within the request timeout.
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        content_type: &str,
        body: Bytes,
    ) -> Result<(StatusCode, Bytes), ClientError> {
        self.send_within(self.timeouts.request, method, path, content_type, body)
            .await
    }

    /// Sends with this client's token, if it has an identity; a refused token (the node
    /// restarted, or the token lapsed in flight) is renewed and the request sent once more.
    async fn send_within(
        &self,
        limit: Duration,
        method: Method,
        path: &str,
        content_type: &str,
        body: Bytes,
    ) -> Result<(StatusCode, Bytes), ClientError> {
        let bearer = Box::pin(self.bearer(path)).await?;
        let (status, answer) = self
            .exchange(
                limit,
                method.clone(),
                path,
                content_type,
                body.clone(),
                bearer.as_deref(),
            )
            .await?;
        let Some(refused) = bearer.filter(|_| status == StatusCode::UNAUTHORIZED) else {
            return Ok((status, answer));
        };
        self.forget_token(&refused);
        let bearer = Box::pin(self.bearer(path)).await?;
        self.exchange(limit, method, path, content_type, body, bearer.as_deref())
            .await
    }

    async fn exchange(
        &self,
        limit: Duration,
        method: Method,
        path: &str,
        content_type: &str,
        body: Bytes,
        bearer: Option<&str>,
    ) -> Result<(StatusCode, Bytes), ClientError> {
        let url = format!("{}{path}", self.base);
        let request = self.request(method, path, content_type, body, bearer)?;
        let exchange = async {
            let response =
                self.http
                    .request(request)
                    .await
                    .map_err(|e| ClientError::Unreachable {
                        url: url.clone(),
                        reason: causes(&e),
                    })?;
            let status = response.status();
            let body = response
                .into_body()
                .collect()
                .await
                .map_err(|e| ClientError::Unreachable {
                    url: url.clone(),
                    reason: format!("the answer broke off: {}", causes(&e)),
                })?
                .to_bytes();
            Ok((status, body))
        };
        tokio::time::timeout(limit, exchange)
            .await
            .map_err(|_| ClientError::Timeout {
                url: url.clone(),
                secs: limit.as_secs(),
            })?
    }

    fn decode<T: DeserializeOwned>(&self, path: &str, body: &[u8]) -> Result<T, ClientError> {
        serde_json::from_slice(body).map_err(|e| ClientError::Decode {
            url: format!("{}{path}", self.base),
            reason: e.to_string(),
        })
    }

    /// A refusal, with the node's message when it sent one.
    fn refusal(status: StatusCode, body: &[u8]) -> ClientError {
        let message = serde_json::from_slice::<ErrorBody>(body)
            .map(|e| e.error)
            .unwrap_or_else(|_| String::from_utf8_lossy(body).into_owned());
        ClientError::Api {
            status: status.as_u16(),
            message,
        }
    }

    /// GET a JSON resource; a non-2xx answer is an error.
    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        let (status, body) = self
            .send(Method::GET, path, "application/json", Bytes::new())
            .await?;
        if !status.is_success() {
            return Err(Self::refusal(status, &body));
        }
        self.decode(path, &body)
    }

    /// GET a JSON resource that may not exist: `None` on 404.
    pub async fn find<T: DeserializeOwned>(&self, path: &str) -> Result<Option<T>, ClientError> {
        let (status, body) = self
            .send(Method::GET, path, "application/json", Bytes::new())
            .await?;
        match status {
            StatusCode::NOT_FOUND => Ok(None),
            s if s.is_success() => self.decode(path, &body).map(Some),
            s => Err(Self::refusal(s, &body)),
        }
    }

    /// POST a JSON body; the JSON answer on success.
    pub async fn post_json<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<T, ClientError> {
        let bytes = serde_json::to_vec(body).map_err(|e| ClientError::Decode {
            url: format!("{}{path}", self.base),
            reason: e.to_string(),
        })?;
        let (status, answer) = self
            .send(Method::POST, path, "application/json", bytes.into())
            .await?;
        if !status.is_success() {
            return Err(Self::refusal(status, &answer));
        }
        self.decode(path, &answer)
    }

    /// POST protobuf bytes (a record upload or read: the transfer timeout applies); the
    /// answer's bytes on success.
    pub async fn post_proto(&self, path: &str, body: Vec<u8>) -> Result<Bytes, ClientError> {
        let (status, answer) = self
            .send_within(
                self.timeouts.transfer,
                Method::POST,
                path,
                "application/x-protobuf",
                body.into(),
            )
            .await?;
        if !status.is_success() {
            return Err(Self::refusal(status, &answer));
        }
        Ok(answer)
    }

    /// `GET /health`.
    pub async fn health(&self) -> Result<Health, ClientError> {
        self.get("/health").await
    }

    /// `GET /ready`: the answer whether ready (200) or not (503).
    pub async fn ready(&self) -> Result<Ready, ClientError> {
        let (status, body) = self
            .send(Method::GET, "/ready", "application/json", Bytes::new())
            .await?;
        match status {
            StatusCode::OK | StatusCode::SERVICE_UNAVAILABLE => self.decode("/ready", &body),
            s => Err(Self::refusal(s, &body)),
        }
    }

    /// `GET /v1/status`.
    pub async fn status(&self) -> Result<Status, ClientError> {
        self.get("/v1/status").await
    }

    /// `GET /metrics`: the Prometheus text.
    pub async fn metrics(&self) -> Result<String, ClientError> {
        let (status, body) = self
            .send(Method::GET, "/metrics", "text/plain", Bytes::new())
            .await?;
        if !status.is_success() {
            return Err(Self::refusal(status, &body));
        }
        Ok(String::from_utf8_lossy(&body).into_owned())
    }

    /// `GET /v1/chain`.
    pub async fn chain(&self) -> Result<ChainInfo, ClientError> {
        self.get("/v1/chain").await
    }

    /// `POST /v1/transactions` with the hex of a transaction's canonical bytes.
    pub async fn submit(&self, transaction_hex: String) -> Result<Accepted, ClientError> {
        self.post_json(
            "/v1/transactions",
            &SubmitRequest {
                transaction: transaction_hex,
            },
        )
        .await
    }

    /// `GET /v1/transactions/{id}`: `None` while not committed.
    pub async fn transaction(&self, id: &str) -> Result<Option<TransactionInfo>, ClientError> {
        self.find(&format!("/v1/transactions/{id}")).await
    }

    /// `GET /v1/transactions/{id}?proof=true`: with its inclusion and outcome proved.
    pub async fn transaction_with_proof(
        &self,
        id: &str,
    ) -> Result<Option<TransactionInfo>, ClientError> {
        self.find(&format!("/v1/transactions/{id}?proof=true"))
            .await
    }

    /// `GET /v1/blocks/{height}`.
    pub async fn block(&self, height: u64) -> Result<Option<Block>, ClientError> {
        self.find(&format!("/v1/blocks/{height}")).await
    }

    /// `GET /v1/blocks/latest`: `None` before the first block.
    pub async fn latest_block(&self) -> Result<Option<Block>, ClientError> {
        self.find("/v1/blocks/latest").await
    }

    /// `GET /v1/slips/{id}`.
    pub async fn slip(&self, id: &str) -> Result<Option<Slip>, ClientError> {
        self.find(&format!("/v1/slips/{id}")).await
    }

    /// `GET /v1/identities/{id}`: `None` when not registered.
    pub async fn identity(&self, id: &str) -> Result<Option<IdentityInfo>, ClientError> {
        self.find(&format!("/v1/identities/{id}")).await
    }

    /// `GET /v1/identities/{id}?proof=true`: with the entries' proofs against a certified header.
    /// `GET /v1/identities/{id}?proof=true`: the identity with its proofs, or the node's 404
    /// answer (which, for a caller who sees every registered identity, proves the absence).
    pub async fn identity_with_proof(
        &self,
        id: &str,
    ) -> Result<Result<IdentityInfo, crate::ErrorBody>, ClientError> {
        let path = format!("/v1/identities/{id}?proof=true");
        let (status, body) = self
            .send(Method::GET, &path, "application/json", Bytes::new())
            .await?;
        match status {
            StatusCode::NOT_FOUND => Ok(Err(serde_json::from_slice(&body).unwrap_or_else(|_| {
                crate::ErrorBody {
                    error: String::from_utf8_lossy(&body).into_owned(),
                    proof: None,
                }
            }))),
            s if s.is_success() => self.decode(&path, &body).map(Ok),
            s => Err(Self::refusal(s, &body)),
        }
    }

    /// `GET /v1/headers?from=H&count=N`: headers with their certificates.
    pub async fn headers(&self, from: u64, count: u64) -> Result<crate::HeaderList, ClientError> {
        self.get(&format!("/v1/headers?from={from}&count={count}"))
            .await
    }

    /// `POST /v1/records` with a canonical `RecordUpload`.
    pub async fn upload(&self, upload: Vec<u8>) -> Result<RecordAccepted, ClientError> {
        let answer = self.post_proto("/v1/records", upload).await?;
        self.decode("/v1/records", &answer)
    }

    /// `GET /v1/records/{slip}`.
    pub async fn record(&self, slip: &str) -> Result<Option<RecordView>, ClientError> {
        self.find(&format!("/v1/records/{slip}")).await
    }

    /// `GET /v1/records/{slip}?proof=true`: the record's state and slip, with their proofs.
    pub async fn record_with_proof(&self, slip: &str) -> Result<Option<RecordView>, ClientError> {
        self.find(&format!("/v1/records/{slip}?proof=true")).await
    }

    /// `POST /v1/records/{slip}/read` with a canonical `SignedReadRequest`: the canonical
    /// `ReadResponse` bytes.
    pub async fn read(&self, slip: &str, request: Vec<u8>) -> Result<Bytes, ClientError> {
        self.post_proto(&format!("/v1/records/{slip}/read"), request)
            .await
    }

    /// `GET /v1/records/{slip}/verify`.
    pub async fn verify(&self, slip: &str) -> Result<Option<VerifyReport>, ClientError> {
        self.find(&format!("/v1/records/{slip}/verify")).await
    }

    /// `GET /v1/patients/{id}/records[?pending=true]`.
    pub async fn patient_records(
        &self,
        patient: &str,
        pending_only: bool,
    ) -> Result<PatientRecords, ClientError> {
        let query = if pending_only { "?pending=true" } else { "" };
        self.get(&format!("/v1/patients/{patient}/records{query}"))
            .await
    }

    /// `GET /v1/consent?patient=ID`: the grants a patient gave and the requests made to her.
    pub async fn consent_of_patient(&self, patient: &str) -> Result<ConsentList, ClientError> {
        self.get(&format!("/v1/consent?patient={patient}")).await
    }

    /// `GET /v1/consent?grantee=ID`: the grants one holds and the requests one made.
    pub async fn consent_of_grantee(&self, grantee: &str) -> Result<ConsentList, ClientError> {
        self.get(&format!("/v1/consent?grantee={grantee}")).await
    }

    /// `GET /v1/consent?{query}&proof=true` (`query` is `patient=ID` or `grantee=ID`): both
    /// lists proved whole (rules 6).
    pub async fn consent_with_proof(&self, query: &str) -> Result<ConsentList, ClientError> {
        self.get(&format!("/v1/consent?{query}&proof=true")).await
    }

    /// `GET /v1/audit?{query}&proof=true&from=N`: the trail, and the page of its counted list
    /// from position `from` proved (rules 6).
    pub async fn audit_with_proof(
        &self,
        query: &str,
        from: u64,
    ) -> Result<AuditTrail, ClientError> {
        self.get(&format!("/v1/audit?{query}&proof=true&from={from}"))
            .await
    }

    /// `GET /v1/audit?record=SLIP | patient=ID | actor=ID` (`query` is one of those).
    pub async fn audit(&self, query: &str) -> Result<AuditTrail, ClientError> {
        self.get(&format!("/v1/audit?{query}")).await
    }

    /// `GET /v1/events`: the committed blocks from now on, pushed.
    pub async fn events(&self) -> Result<EventStream, ClientError> {
        let url = format!("{}/v1/events", self.base);
        let request = hyper::Request::builder()
            .method(Method::GET)
            .uri(&url)
            .header(ACCEPT, "text/event-stream")
            .body(Full::new(Bytes::new()))
            .map_err(|_| ClientError::Address(url.clone()))?;
        let response = tokio::time::timeout(self.timeouts.request, self.http.request(request))
            .await
            .map_err(|_| ClientError::Timeout {
                url: url.clone(),
                secs: self.timeouts.request.as_secs(),
            })?
            .map_err(|e| ClientError::Unreachable {
                url: url.clone(),
                reason: causes(&e),
            })?;
        let status = response.status();
        if !status.is_success() {
            let body = tokio::time::timeout(self.timeouts.request, response.into_body().collect())
                .await
                .ok()
                .and_then(Result::ok)
                .map(|b| b.to_bytes())
                .unwrap_or_default();
            return Err(Self::refusal(status, &body));
        }
        Ok(EventStream::new(
            url,
            response.into_body(),
            self.timeouts.stream_idle,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses() {
        assert_eq!(
            parse_base("http://127.0.0.1:8545/").unwrap(),
            "http://127.0.0.1:8545"
        );
        assert_eq!(
            parse_base("localhost:9000").unwrap(),
            "http://localhost:9000"
        );
        assert_eq!(parse_base("8545").unwrap(), "http://127.0.0.1:8545");
        assert_eq!(
            parse_base("https://node.hospital.example/medchain").unwrap(),
            "https://node.hospital.example/medchain"
        );
        for bad in [
            "",
            "ftp://x:1",
            "http://",
            "http://h:1/?q=1",
            "not an address",
        ] {
            assert!(
                matches!(parse_base(bad), Err(ClientError::Address(_))),
                "{bad:?} was accepted"
            );
        }
    }

    /// A node that accepts the connection and never answers costs the request timeout, and the
    /// error says so.
    #[tokio::test]
    async fn a_silent_node_times_out() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let hold = tokio::spawn(async move {
            let mut open = Vec::new();
            loop {
                let (s, _) = listener.accept().await.unwrap();
                open.push(s);
            }
        });
        let client = ApiClient::with_timeouts(
            &addr.to_string(),
            Timeouts {
                request: Duration::from_millis(300),
                ..Timeouts::default()
            },
        )
        .unwrap();
        let err = client.status().await.unwrap_err();
        assert!(matches!(err, ClientError::Timeout { .. }), "{err}");
        assert!(err.to_string().contains("did not answer"), "{err}");
        hold.abort();
    }

    /// No listener: the error names the address and suggests the fix.
    #[tokio::test]
    async fn a_missing_node_is_unreachable() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        let err = ApiClient::new(&addr.to_string())
            .unwrap()
            .chain()
            .await
            .unwrap_err();
        assert!(matches!(err, ClientError::Unreachable { .. }), "{err}");
        assert!(err.to_string().contains(&addr.to_string()), "{err}");
        assert!(err.to_string().contains("refused"), "{err}");
    }

    #[derive(Debug)]
    struct AnyKey;

    impl Authenticator for AnyKey {
        fn identity(&self) -> String {
            "caller".into()
        }
        fn respond(&self, _: &Challenge) -> Result<String, String> {
            Ok("00".into())
        }
    }

    /// A node of one HTTP/1.1 exchange per connection: challenges and tokens on demand (counting
    /// the tokens it issues), 401 for a token it no longer accepts, 200 otherwise.
    async fn token_counting_node(
        refuse_first: &'static str,
    ) -> (String, Arc<std::sync::atomic::AtomicUsize>) {
        use std::sync::atomic::{AtomicUsize, Ordering};
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let issued = Arc::new(AtomicUsize::new(0));
        let count = issued.clone();
        tokio::spawn(async move {
            loop {
                let (mut s, _) = listener.accept().await.unwrap();
                let count = count.clone();
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 4096];
                    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                        match s.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    }
                    let head = String::from_utf8_lossy(&buf).to_string();
                    let (status, body) = if head.starts_with("POST /v1/auth/challenge") {
                        let far = now_ms() + 600_000;
                        (
                            200,
                            format!(
                                r#"{{"challenge":"00","chain_id":"c","node":"n","expires_ms":{far}}}"#
                            ),
                        )
                    } else if head.starts_with("POST /v1/auth/token") {
                        let n = count.fetch_add(1, Ordering::SeqCst) + 1;
                        let far = now_ms() + 600_000;
                        (
                            200,
                            format!(r#"{{"token":"t{n}","identity":"caller","expires_ms":{far}}}"#),
                        )
                    } else if head.contains(&format!("Bearer {refuse_first}")) {
                        (401, r#"{"error":"token refused"}"#.to_string())
                    } else {
                        (200, "{}".to_string())
                    };
                    let answer = format!(
                        "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = s.write_all(answer.as_bytes()).await;
                });
            }
        });
        (addr, issued)
    }

    /// Many requests that need a token at once (or find it refused after a node restart) ask
    /// for one token between them, not one each, and none of them drops the fresh one.
    #[tokio::test]
    async fn concurrent_requests_authenticate_once() {
        let (addr, issued) = token_counting_node("t1").await;
        let client = ApiClient::new(&addr)
            .unwrap()
            .with_authenticator(Arc::new(AnyKey));
        let send = |c: ApiClient| async move {
            c.send(
                Method::GET,
                "/v1/records/x",
                "application/json",
                Bytes::new(),
            )
            .await
            .unwrap()
            .0
        };
        let first: Vec<_> = (0..16)
            .map(|_| tokio::spawn(send(client.clone())))
            .collect();
        for h in first {
            // Each got the first token, "t1", which this node then refuses: each renews.
            assert_eq!(h.await.unwrap(), StatusCode::OK);
        }
        let n = issued.load(std::sync::atomic::Ordering::SeqCst);
        assert_eq!(n, 2, "16 concurrent requests asked for {n} tokens");
    }
}
