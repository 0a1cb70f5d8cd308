//! `GET /v1/events`: committed blocks pushed to the client as server-sent events, so a client
//! waits for its transaction without polling.
//!
//! Each event is `event: block` with JSON data a [`medchain_api::BlockEvent`] (height, hash,
//! timestamp, the ids of the transactions that took effect and of those refused by a chain
//! rule), in commit order. A client that reads too slowly to keep up with
//! [`crate::driver::BLOCK_EVENTS`] blocks gets `event: lagged` with `{"missed": n}` and should
//! look up what it waits for directly (`GET /v1/transactions/{id}`). The stream carries what
//! `GET /v1/blocks/{height}` already shows: ids and hashes, never a transaction's contents.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures_util::stream::{self, Stream};
use medchain_api::{BlockEvent, Lagged};
use tokio::sync::broadcast::error::RecvError;

use crate::private::NodeHandle;

/// A comment line this often keeps proxies and idle timeouts from closing a quiet stream.
const KEEP_ALIVE: Duration = Duration::from_secs(15);

pub async fn events(
    State(node): State<NodeHandle>,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let blocks = node.subscribe_blocks();
    let stream = stream::unfold(blocks, |mut blocks| async move {
        let event = match blocks.recv().await {
            Ok(b) => Event::default().event("block").json_data(BlockEvent {
                height: b.height,
                hash: b.hash.to_hex(),
                timestamp_ms: b.timestamp_ms,
                transactions: b.transactions.iter().map(|t| t.to_hex()).collect(),
                failed: b.failed.iter().map(|t| t.to_hex()).collect(),
            }),
            Err(RecvError::Lagged(missed)) => Event::default()
                .event("lagged")
                .json_data(Lagged { missed }),
            Err(RecvError::Closed) => return None,
        };
        // Serializing these types cannot fail; an event that did would be skipped by the
        // client as unnamed data, never mistaken for another.
        let event = event.unwrap_or_else(|_| Event::default().comment("unserializable event"));
        Some((Ok(event), blocks))
    });
    Sse::new(stream).keep_alive(KeepAlive::new().interval(KEEP_ALIVE))
}
