//! Serving the API so that abuse costs the abuser, not the node: a client must send its headers
//! within `header_read_timeout_ms`, a request is answered 408 after `request_timeout_ms`, at most
//! `max_connections` connections are open (more are closed on arrival: the process's file
//! descriptors are the store's too) and at most `max_concurrent_requests` requests are in
//! progress (more wait). The pieces are hyper's and tower's; only the accept loop is ours, since
//! axum's `serve` exposes none of these limits.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ConnectInfo;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::sync::Semaphore;
use tower::ServiceExt;

use crate::config::ApiConfig;
use crate::private::NodeHandle;

/// After a failed accept (out of file descriptors, say), wait this long before the next.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// Serves the API on `cfg.listen` until the task is dropped.
pub async fn serve(cfg: ApiConfig, node: NodeHandle) -> anyhow::Result<()> {
    let addr: SocketAddr = cfg
        .listen
        .parse()
        .map_err(|_| anyhow::anyhow!("[api] listen {:?} is not an IP:port address", cfg.listen))?;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {addr} for the client API: {e} (is another node using it? change [api] listen)"))?;
    tracing::info!(%addr, max_connections = cfg.max_connections, "client API listening");
    let app = super::router(node.clone())
        .layer(tower_http::timeout::TimeoutLayer::with_status_code(
            axum::http::StatusCode::REQUEST_TIMEOUT,
            Duration::from_millis(cfg.request_timeout_ms),
        ))
        .layer(tower::limit::ConcurrencyLimitLayer::new(
            cfg.max_concurrent_requests,
        ));
    let connections = Arc::new(Semaphore::new(cfg.max_connections));
    let header_timeout = Duration::from_millis(cfg.header_read_timeout_ms);
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "the client API could not accept a connection");
                tokio::time::sleep(ACCEPT_BACKOFF).await;
                continue;
            }
        };
        let Ok(permit) = connections.clone().try_acquire_owned() else {
            node.metrics.api_connection_refused();
            tracing::warn!(source = %peer.ip(), "refused a client API connection: at the [api] max_connections limit");
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        // Reads are counted per source address (abnormal-access detection), so each request
        // carries its connection's peer, as axum's ConnectInfo expects.
        let service =
            app.clone()
                .map_request(move |mut request: hyper::Request<hyper::body::Incoming>| {
                    request.extensions_mut().insert(ConnectInfo(peer));
                    request
                });
        tokio::spawn(async move {
            let served = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(header_timeout)
                .serve_connection(TokioIo::new(stream), TowerToHyperService::new(service))
                .await;
            if let Err(e) = served {
                tracing::debug!(source = %peer.ip(), error = %e, "client API connection ended");
            }
            drop(permit);
        });
    }
}
