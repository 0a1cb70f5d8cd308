//! Rooms: the purposes peer messages serve, each on its own libp2p protocol with its own size
//! limit and rate quota, and delivered to its own receiver. A burst of one kind (ciphertexts after
//! a batch of uploads, a peer's catch-up) is bounded by its own quota and never queues ahead of
//! another (votes); a message of one kind sent on another's protocol is refused.

use std::collections::HashMap;

use libp2p::PeerId;
use medchain_proto::canonical::limits;
use medchain_proto::v1::{self, peer_message::Body};
use tokio::sync::mpsc;

use super::NetEvent;

/// Most transactions forwarded in one message; a peer sending more is refused.
pub const TRANSACTIONS_PER_MESSAGE: usize = 256;

/// The purpose a peer message serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Room {
    /// Votes, proposals, checkpoints, view changes, header votes (and the empty acknowledgement).
    Consensus,
    /// Transactions forwarded to the other validators.
    Transactions,
    /// Block-sync requests and their answers.
    Sync,
    /// Record ciphertexts: pushed after an upload, requested when missing, and the answers.
    Blobs,
}

/// A room's protocol and limits.
#[derive(Clone, Copy, Debug)]
pub struct RoomSpec {
    pub protocol: &'static str,
    /// Largest message, refused before its body is read.
    pub max_bytes: usize,
    /// Sustained requests per second accepted from one peer, and the burst allowed.
    pub rate_per_sec: f64,
    pub burst: f64,
}

impl Room {
    pub const ALL: [Room; 4] = [Room::Consensus, Room::Transactions, Room::Sync, Room::Blobs];

    /// The room a message belongs to.
    pub fn of(msg: &v1::PeerMessage) -> Room {
        match &msg.body {
            Some(Body::Pbft(_) | Body::HeaderVote(_)) | None => Room::Consensus,
            Some(Body::Transactions(_)) => Room::Transactions,
            Some(Body::BlockRequest(_) | Body::BlockResponse(_)) => Room::Sync,
            Some(Body::Blob(_) | Body::BlobRequest(_) | Body::BlobResponse(_)) => Room::Blobs,
        }
    }

    pub fn spec(self) -> RoomSpec {
        match self {
            // A new view can carry re-proposed batches: the envelope's own limit.
            Room::Consensus => RoomSpec {
                protocol: "/medchain/consensus/1",
                max_bytes: limits::PEER_MESSAGE,
                rate_per_sec: 20_000.0,
                burst: 40_000.0,
            },
            Room::Transactions => RoomSpec {
                protocol: "/medchain/transactions/1",
                max_bytes: TRANSACTIONS_PER_MESSAGE * limits::TRANSACTION + limits::SMALL,
                rate_per_sec: 2_000.0,
                burst: 4_000.0,
            },
            // An answer holds blocks up to the block limit, the last one may cross it.
            Room::Sync => RoomSpec {
                protocol: "/medchain/sync/1",
                max_bytes: 2 * limits::BLOCK + limits::SMALL,
                rate_per_sec: 200.0,
                burst: 400.0,
            },
            Room::Blobs => RoomSpec {
                protocol: "/medchain/blobs/1",
                max_bytes: limits::RECORD_CIPHERTEXT + limits::SMALL,
                rate_per_sec: 2_000.0,
                burst: 4_000.0,
            },
        }
    }

    /// Whether a message of this room wants an answer with data rather than an acknowledgement.
    pub fn is_query(msg: &v1::PeerMessage) -> bool {
        matches!(msg.body, Some(Body::BlockRequest(_) | Body::BlobRequest(_)))
    }
}

/// A token bucket.
struct Bucket {
    tokens: f64,
    last: tokio::time::Instant,
}

/// Per peer and room request quotas.
#[derive(Default)]
pub struct Quotas {
    buckets: HashMap<(PeerId, Room), Bucket>,
}

impl Quotas {
    /// Takes one request of `room` from `peer`; false if it is over its quota.
    pub fn take(&mut self, peer: PeerId, room: Room, now: tokio::time::Instant) -> bool {
        let spec = room.spec();
        let b = self.buckets.entry((peer, room)).or_insert(Bucket {
            tokens: spec.burst,
            last: now,
        });
        let dt = now.duration_since(b.last).as_secs_f64();
        b.last = now;
        b.tokens = (b.tokens + dt * spec.rate_per_sec).min(spec.burst);
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// Where each room's events go.
pub struct Rooms {
    /// Consensus, transactions, sync and connection changes: the driver.
    pub chain: mpsc::Sender<NetEvent>,
    pub blobs: mpsc::Sender<NetEvent>,
    /// Header votes: the vote task (`crate::header_votes`).
    pub header_votes: mpsc::Sender<NetEvent>,
}

impl Rooms {
    pub async fn deliver(&self, room: Room, ev: NetEvent) {
        let is_vote = matches!(
            &ev,
            NetEvent::Message { msg, .. } if matches!(msg.body, Some(Body::HeaderVote(_)))
        );
        let to = if room == Room::Blobs {
            &self.blobs
        } else if is_vote {
            &self.header_votes
        } else {
            &self.chain
        };
        // A closed receiver means the node is stopping.
        let _ = to.send(ev).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_message_kind_has_one_room_with_its_own_protocol() {
        let protocols: std::collections::BTreeSet<_> =
            Room::ALL.iter().map(|r| r.spec().protocol).collect();
        assert_eq!(protocols.len(), Room::ALL.len());
        let blob = v1::PeerMessage {
            version: 1,
            body: Some(Body::Blob(v1::RecordBlob::default())),
        };
        assert_eq!(Room::of(&blob), Room::Blobs);
        assert!(Room::Blobs.spec().max_bytes >= limits::RECORD_CIPHERTEXT);
        assert!(Room::Blobs.spec().max_bytes < limits::PEER_MESSAGE);
    }

    #[test]
    fn a_peer_over_one_rooms_quota_is_not_limited_in_another() {
        let mut q = Quotas::default();
        let peer = PeerId::random();
        let now = tokio::time::Instant::now();
        let burst = Room::Sync.spec().burst as usize;
        assert!((0..burst).all(|_| q.take(peer, Room::Sync, now)));
        assert!(!q.take(peer, Room::Sync, now), "over the sync quota");
        assert!(q.take(peer, Room::Consensus, now), "votes still pass");
        let later = now + std::time::Duration::from_millis(100);
        assert!(q.take(peer, Room::Sync, later), "the bucket refills");
    }
}
