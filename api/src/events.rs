//! The client side of `GET /v1/events`: a server-sent event stream read into typed events.
//!
//! The parser follows the SSE format as far as the node uses it (WHATWG HTML, "server-sent
//! events"): `event:` and `data:` fields, several `data:` lines joined by newlines, comment
//! lines (`:`, the node's keep-alive) skipped, events ended by a blank line, `\n` or `\r\n`
//! line ends. Events of a name it does not know are skipped, so a newer node can add some.

use std::time::Duration;

use http_body_util::BodyExt;
use hyper::body::Incoming;

use crate::error::ClientError;
use crate::{BlockEvent, Lagged};

/// One event of the stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StreamEvent {
    /// A block this node committed, in commit order.
    Block(BlockEvent),
    /// The client read too slowly and missed blocks: look up what you wait for directly.
    Lagged(Lagged),
}

/// A raw event: its name (`message` when none was given) and its data.
#[derive(Clone, Debug, PartialEq, Eq)]
struct RawEvent {
    name: String,
    data: String,
}

/// Splits a byte stream into events, whatever the chunking.
#[derive(Debug, Default)]
struct Parser {
    pending: Vec<u8>,
    name: Option<String>,
    data: Option<String>,
}

/// An event stream larger than this without an end is not the node's: refuse it rather than
/// buffer without bound.
const MAX_EVENT_BYTES: usize = 4 << 20;

impl Parser {
    /// Feeds bytes; returns the events they completed.
    fn push(&mut self, bytes: &[u8]) -> Result<Vec<RawEvent>, String> {
        self.pending.extend_from_slice(bytes);
        let mut out = Vec::new();
        while let Some(end) = self.pending.iter().position(|&b| b == b'\n') {
            let mut line: Vec<u8> = self.pending.drain(..=end).collect();
            line.pop();
            if line.last() == Some(&b'\r') {
                line.pop();
            }
            let line = String::from_utf8(line).map_err(|_| "an event line is not UTF-8")?;
            if line.is_empty() {
                // An event with no data is not dispatched (the SSE rule).
                if let Some(data) = self.data.take().filter(|d| !d.is_empty()) {
                    out.push(RawEvent {
                        name: self.name.take().unwrap_or_else(|| "message".into()),
                        data,
                    });
                }
                self.name = None;
                continue;
            }
            if line.starts_with(':') {
                continue;
            }
            let (field, value) = line.split_once(':').unwrap_or((&line, ""));
            let value = value.strip_prefix(' ').unwrap_or(value);
            match field {
                "event" => self.name = Some(value.to_string()),
                "data" => match &mut self.data {
                    Some(d) => {
                        d.push('\n');
                        d.push_str(value);
                    }
                    None => self.data = Some(value.to_string()),
                },
                _ => {}
            }
        }
        let held = self.pending.len() + self.data.as_ref().map_or(0, String::len);
        if held > MAX_EVENT_BYTES {
            return Err(format!("an event is over {MAX_EVENT_BYTES} bytes"));
        }
        Ok(out)
    }
}

fn typed(raw: RawEvent) -> Result<Option<StreamEvent>, String> {
    let bad = |e: serde_json::Error| format!("`{}` event data: {e}", raw.name);
    Ok(match raw.name.as_str() {
        "block" => Some(StreamEvent::Block(
            serde_json::from_str(&raw.data).map_err(bad)?,
        )),
        "lagged" => Some(StreamEvent::Lagged(
            serde_json::from_str(&raw.data).map_err(bad)?,
        )),
        _ => None,
    })
}

/// The open stream of a node's committed blocks.
#[derive(Debug)]
pub struct EventStream {
    url: String,
    body: Incoming,
    idle: Duration,
    parser: Parser,
    ready: std::collections::VecDeque<StreamEvent>,
    /// A malformed event, reported after the good ones that came before it.
    failed: Option<String>,
}

impl EventStream {
    pub(crate) fn new(url: String, body: Incoming, idle: Duration) -> Self {
        EventStream {
            url,
            body,
            idle,
            parser: Parser::default(),
            ready: Default::default(),
            failed: None,
        }
    }

    /// The next event; `None` when the node closed the stream. Fails when nothing (not even a
    /// keep-alive) arrives within the idle timeout, or when the stream is not well formed.
    pub async fn next(&mut self) -> Option<Result<StreamEvent, ClientError>> {
        loop {
            if let Some(e) = self.ready.pop_front() {
                return Some(Ok(e));
            }
            if let Some(reason) = self.failed.take() {
                return Some(Err(ClientError::Decode {
                    url: self.url.clone(),
                    reason,
                }));
            }
            let frame = match tokio::time::timeout(self.idle, self.body.frame()).await {
                Err(_) => {
                    return Some(Err(ClientError::Timeout {
                        url: self.url.clone(),
                        secs: self.idle.as_secs(),
                    }))
                }
                Ok(None) => return None,
                Ok(Some(Err(e))) => {
                    return Some(Err(ClientError::Unreachable {
                        url: self.url.clone(),
                        reason: format!("the event stream broke off: {e}"),
                    }))
                }
                Ok(Some(Ok(frame))) => frame,
            };
            let Ok(data) = frame.into_data() else {
                continue;
            };
            match self.parser.push(&data) {
                Ok(raws) => {
                    for raw in raws {
                        match typed(raw) {
                            Ok(Some(event)) => self.ready.push_back(event),
                            Ok(None) => {}
                            Err(reason) => {
                                self.failed = Some(reason);
                                break;
                            }
                        }
                    }
                }
                Err(reason) => self.failed = Some(reason),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STREAM: &str = ": keep-alive\r\n\r\nevent: block\ndata: {\"height\":3,\"hash\":\"ab\",\"timestamp_ms\":9,\"transactions\":[\"01\"],\"failed\":[]}\n\nevent: future\ndata: x\n\nevent: lagged\r\ndata:{\"missed\":4}\r\n\r\n";

    fn all(chunks: &[&[u8]]) -> Vec<StreamEvent> {
        let mut p = Parser::default();
        chunks
            .iter()
            .flat_map(|c| p.push(c).unwrap())
            .filter_map(|r| typed(r).unwrap())
            .collect()
    }

    #[test]
    fn events_whatever_the_chunking() {
        let expected = vec![
            StreamEvent::Block(BlockEvent {
                height: 3,
                hash: "ab".into(),
                timestamp_ms: 9,
                transactions: vec!["01".into()],
                failed: vec![],
            }),
            StreamEvent::Lagged(Lagged { missed: 4 }),
        ];
        let bytes = STREAM.as_bytes();
        assert_eq!(all(&[bytes]), expected);
        for split in 1..bytes.len() {
            assert_eq!(
                all(&[&bytes[..split], &bytes[split..]]),
                expected,
                "split at {split}"
            );
        }
        let singles: Vec<&[u8]> = bytes.chunks(1).collect();
        assert_eq!(all(&singles), expected);
    }

    #[test]
    fn multi_line_data_is_joined_and_empty_events_are_not_sent() {
        let mut p = Parser::default();
        assert!(p.push(b"event: block\n\ndata:\n\n").unwrap().is_empty());
        let raws = p.push(b"data: a\ndata: b\n\n").unwrap();
        assert_eq!(
            raws,
            vec![RawEvent {
                name: "message".into(),
                data: "a\nb".into()
            }]
        );
    }

    #[test]
    fn malformed_or_endless_events_are_refused() {
        let mut p = Parser::default();
        let raws = p.push(b"event: block\ndata: {\"height\":\n\n").unwrap();
        let err = typed(raws[0].clone()).unwrap_err();
        assert!(err.contains("`block` event data"), "{err}");
        let mut p = Parser::default();
        let endless = vec![b'x'; MAX_EVENT_BYTES + 1];
        assert!(p.push(&endless).unwrap_err().contains("over"));
    }
}
