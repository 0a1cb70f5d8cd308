//! Peer-to-peer networking: one task owns the libp2p `Swarm` (TCP + noise + yamux) and talks to the
//! rest of the node over channels.
//!
//! **Who may connect.** A node's libp2p identity is its registered secp256k1 key, so its peer ID
//! is derived from the identity in genesis. Only the peer IDs of the chain's other validators are
//! allowed (`allow_block_list`): a connection from any other peer is refused during the handshake,
//! logged with its peer ID, and nothing it sends is ever read.
//!
//! **Why request-response and not gossipsub.** A hospital chain has a handful of replicas that all
//! talk to all (PBFT is all-to-all), and every consensus message is addressed to known validators.
//! Direct request-response streams over the full mesh give per-peer admission, back-pressure and
//! size limits with no gossip amplification, no mesh maintenance and no `InsufficientPeers`
//! start-up window; a "broadcast" is one request per connected validator. Gossipsub pays off for
//! large, partially connected meshes, which a private chain is not. Every request is a
//! `PeerMessage`; the response is an empty acknowledgement, except for a query (a block request
//! or a blob request), which is answered with the blocks or the ciphertext.
//!
//! **Rooms and limits.** Messages travel in [`Room`]s (consensus, transactions, sync, blobs),
//! each its own protocol (`/medchain/<room>/1`) with its own size limit, refused before the body
//! is read, and its own per-peer rate quota (token bucket); excess messages are dropped and
//! counted. The blob room is delivered to its own receiver, the others to the chain's driver.

mod codec;
mod rooms;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io;
use std::sync::Arc;
use std::time::Duration;

use libp2p::futures::StreamExt;
use libp2p::identity::{secp256k1, Keypair, PublicKey};
use libp2p::request_response::{self, OutboundRequestId, ProtocolSupport, ResponseChannel};
use libp2p::swarm::{NetworkBehaviour, SwarmEvent};
use libp2p::{allow_block_list, noise, tcp, yamux, Multiaddr, PeerId, StreamProtocol, Swarm};
use medchain_crypto::{Identity, SigningKey};
use medchain_proto::v1;
use tokio::sync::mpsc;

pub use codec::{PeerCodec, PeerTraffic};
use rooms::{Quotas, Rooms};
pub use rooms::{Room, RoomSpec, TRANSACTIONS_PER_MESSAGE};

/// The libp2p keypair of a node: its signing key, so the peer ID is bound to its identity.
pub fn keypair(key: &SigningKey) -> Keypair {
    let mut bytes = *key.to_bytes();
    let secret = secp256k1::SecretKey::try_from_bytes(&mut bytes)
        .expect("a valid signing key is a valid secp256k1 secret");
    Keypair::from(secp256k1::Keypair::from(secret))
}

/// The peer ID of a registered identity.
pub fn peer_id(identity: &Identity) -> PeerId {
    let pk = secp256k1::PublicKey::try_from_bytes(identity.as_bytes())
        .expect("identities are valid compressed secp256k1 keys");
    PublicKey::from(pk).to_peer_id()
}

#[derive(NetworkBehaviour)]
struct Behaviour {
    allowed: allow_block_list::Behaviour<allow_block_list::AllowedPeers>,
    consensus: request_response::Behaviour<PeerCodec>,
    transactions: request_response::Behaviour<PeerCodec>,
    sync: request_response::Behaviour<PeerCodec>,
    blobs: request_response::Behaviour<PeerCodec>,
}

impl Behaviour {
    fn room(&mut self, room: Room) -> &mut request_response::Behaviour<PeerCodec> {
        match room {
            Room::Consensus => &mut self.consensus,
            Room::Transactions => &mut self.transactions,
            Room::Sync => &mut self.sync,
            Room::Blobs => &mut self.blobs,
        }
    }
}

/// Another validator of the chain.
#[derive(Clone, Debug)]
pub struct Peer {
    pub index: u32,
    pub name: String,
    pub identity: Identity,
    pub address: Multiaddr,
}

/// What the node asks of the network task.
#[derive(Debug)]
pub enum NetCommand {
    /// Send to one validator (dropped if it is not connected).
    Send { to: u32, msg: v1::PeerMessage },
    /// Send to every connected validator.
    Broadcast(v1::PeerMessage),
    /// Answer a query received as [`NetEvent::Query`].
    Respond {
        channel: ResponseChannel<v1::PeerMessage>,
        msg: v1::PeerMessage,
    },
}

/// What the network task tells the node. Every message comes from an admitted validator, already
/// size-checked and decoded strictly; nothing else about it is trusted.
#[derive(Debug)]
#[allow(clippy::large_enum_variant)] // events are moved once through a channel
pub enum NetEvent {
    Message {
        from: u32,
        msg: v1::PeerMessage,
    },
    /// A request that wants an answer (block or blob request); answer with
    /// [`NetCommand::Respond`].
    Query {
        from: u32,
        msg: v1::PeerMessage,
        channel: ResponseChannel<v1::PeerMessage>,
    },
    Connected(u32),
    Disconnected(u32),
}

/// Counters the node reports.
#[derive(Debug, Default, Clone)]
pub struct NetStats {
    pub connected: usize,
    /// Indexes of the connected validators.
    pub peers: std::collections::BTreeSet<u32>,
    pub rate_limited: u64,
    pub refused_connections: u64,
}

fn ack() -> v1::PeerMessage {
    v1::PeerMessage {
        version: medchain_proto::PEER_PROTOCOL_VERSION,
        body: None,
    }
}

/// The running network task's handles.
#[derive(Debug)]
pub struct Network {
    pub commands: mpsc::Sender<NetCommand>,
    /// The chain's rooms: consensus, transactions and block sync, with connection changes.
    pub events: mpsc::Receiver<NetEvent>,
    /// The blob room: pushed ciphertexts, blob requests and their answers.
    pub blobs: mpsc::Receiver<NetEvent>,
    /// Header votes (they travel in the consensus room, but a vote never waits behind the engine).
    pub header_votes: mpsc::Receiver<NetEvent>,
    pub stats: tokio::sync::watch::Receiver<NetStats>,
    pub local_peer_id: PeerId,
    /// What this instance's codec has read and written.
    pub traffic: Arc<PeerTraffic>,
}

/// Starts the network task: listens on `listen` and keeps dialing every peer in `peers` (with
/// backoff) until connected.
pub fn start(key: &SigningKey, listen: Multiaddr, peers: Vec<Peer>) -> anyhow::Result<Network> {
    let keypair = keypair(key);
    let local_peer_id = keypair.public().to_peer_id();
    let mut allowed = allow_block_list::Behaviour::<allow_block_list::AllowedPeers>::default();
    for p in &peers {
        allowed.allow_peer(peer_id(&p.identity));
    }
    let traffic = Arc::new(PeerTraffic::default());
    let room = |room: Room| {
        let spec = room.spec();
        let codec = PeerCodec {
            traffic: traffic.clone(),
            max_bytes: spec.max_bytes,
        };
        let config = request_response::Config::default()
            .with_request_timeout(Duration::from_secs(30))
            .with_max_concurrent_streams(4_096);
        request_response::Behaviour::with_codec(
            codec,
            [(StreamProtocol::new(spec.protocol), ProtocolSupport::Full)],
            config,
        )
    };
    let mut swarm = libp2p::SwarmBuilder::with_existing_identity(keypair)
        .with_tokio()
        .with_tcp(
            tcp::Config::default().nodelay(true),
            noise::Config::new,
            yamux::Config::default,
        )?
        .with_behaviour(|_| Behaviour {
            allowed,
            consensus: room(Room::Consensus),
            transactions: room(Room::Transactions),
            sync: room(Room::Sync),
            blobs: room(Room::Blobs),
        })?
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(3_600)))
        .build();
    swarm.listen_on(listen.clone())?;
    let (cmd_tx, cmd_rx) = mpsc::channel(65_536);
    let (ev_tx, ev_rx) = mpsc::channel(65_536);
    let (blob_tx, blob_rx) = mpsc::channel(4_096);
    let (vote_tx, vote_rx) = mpsc::channel(4_096);
    let (stats_tx, stats_rx) = tokio::sync::watch::channel(NetStats::default());
    let rooms = Rooms {
        chain: ev_tx,
        blobs: blob_tx,
        header_votes: vote_tx,
    };
    tokio::spawn(run(swarm, peers, cmd_rx, rooms, stats_tx));
    tracing::info!(%local_peer_id, %listen, "network started");
    Ok(Network {
        commands: cmd_tx,
        events: ev_rx,
        blobs: blob_rx,
        header_votes: vote_rx,
        stats: stats_rx,
        local_peer_id,
        traffic,
    })
}

struct Dialer {
    next_at: tokio::time::Instant,
    backoff: Duration,
}

async fn run(
    mut swarm: Swarm<Behaviour>,
    peers: Vec<Peer>,
    mut commands: mpsc::Receiver<NetCommand>,
    events: Rooms,
    stats_tx: tokio::sync::watch::Sender<NetStats>,
) {
    let by_peer: HashMap<PeerId, &Peer> = peers.iter().map(|p| (peer_id(&p.identity), p)).collect();
    let by_index: BTreeMap<u32, PeerId> = by_peer.iter().map(|(id, p)| (p.index, *id)).collect();
    let mut connected: BTreeMap<PeerId, usize> = BTreeMap::new();
    let mut quotas = Quotas::default();
    let mut dialers: HashMap<PeerId, Dialer> = by_peer
        .keys()
        .map(|id| {
            (
                *id,
                Dialer {
                    next_at: tokio::time::Instant::now(),
                    backoff: Duration::from_millis(500),
                },
            )
        })
        .collect();
    let mut stats = NetStats::default();
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    // Queries this node sent and awaits an answer to (request ids are per room).
    let mut pending_queries: HashSet<(Room, OutboundRequestId)> = HashSet::new();
    loop {
        tokio::select! {
            _ = tick.tick() => {
                let now = tokio::time::Instant::now();
                for (id, d) in dialers.iter_mut() {
                    if connected.contains_key(id) || d.next_at > now {
                        continue;
                    }
                    let peer = by_peer[id];
                    let opts = libp2p::swarm::dial_opts::DialOpts::peer_id(*id)
                        .addresses(vec![peer.address.clone()])
                        .build();
                    if let Err(e) = swarm.dial(opts) {
                        tracing::debug!(peer = %peer.name, error = %e, "dial not started");
                    }
                    d.next_at = now + d.backoff;
                    d.backoff = (d.backoff * 2).min(Duration::from_secs(30));
                }
            }
            cmd = commands.recv() => {
                let Some(cmd) = cmd else { return };
                match cmd {
                    NetCommand::Send { to, msg } => {
                        if let Some(id) = by_index.get(&to) {
                            if connected.contains_key(id) {
                                let room = Room::of(&msg);
                                let query = Room::is_query(&msg);
                                let rid = swarm.behaviour_mut().room(room).send_request(id, msg);
                                if query {
                                    pending_queries.insert((room, rid));
                                }
                            }
                        }
                    }
                    NetCommand::Broadcast(msg) => {
                        let room = Room::of(&msg);
                        let ids: Vec<PeerId> = connected.keys().copied().collect();
                        for id in ids {
                            swarm.behaviour_mut().room(room).send_request(&id, msg.clone());
                        }
                    }
                    NetCommand::Respond { channel, msg } => {
                        let room = Room::of(&msg);
                        let _ = swarm.behaviour_mut().room(room).send_response(channel, msg);
                    }
                }
            }
            event = swarm.select_next_some() => {
                match event {
                    SwarmEvent::ConnectionEstablished { peer_id, .. } => {
                        let count = connected.entry(peer_id).or_default();
                        *count += 1;
                        if let Some(p) = by_peer.get(&peer_id) {
                            stats.peers.insert(p.index);
                        }
                        if *count == 1 {
                            if let Some(p) = by_peer.get(&peer_id) {
                                tracing::info!(peer = %p.name, %peer_id, "connected");
                                if let Some(d) = dialers.get_mut(&peer_id) {
                                    d.backoff = Duration::from_millis(500);
                                }
                                events.deliver(Room::Consensus, NetEvent::Connected(p.index)).await;
                            }
                        }
                    }
                    SwarmEvent::ConnectionClosed { peer_id, num_established: 0, .. } => {
                        connected.remove(&peer_id);
                        if let Some(p) = by_peer.get(&peer_id) {
                            stats.peers.remove(&p.index);
                        }
                        if let Some(p) = by_peer.get(&peer_id) {
                            tracing::warn!(peer = %p.name, %peer_id, "disconnected; will redial");
                            if let Some(d) = dialers.get_mut(&peer_id) {
                                d.next_at = tokio::time::Instant::now() + d.backoff;
                            }
                            events.deliver(Room::Consensus, NetEvent::Disconnected(p.index)).await;
                        }
                    }
                    SwarmEvent::IncomingConnectionError { send_back_addr, error, peer_id, .. } => {
                        stats.refused_connections += 1;
                        tracing::warn!(
                            peer_id = ?peer_id,
                            from = %send_back_addr,
                            error = %error,
                            "refused an incoming connection (only this chain's validators are admitted)"
                        );
                    }
                    SwarmEvent::OutgoingConnectionError { peer_id, error, .. } => {
                        tracing::debug!(?peer_id, %error, "dial failed");
                    }
                    SwarmEvent::Behaviour(ev) => {
                        let (room, ev) = match ev {
                            BehaviourEvent::Consensus(ev) => (Room::Consensus, ev),
                            BehaviourEvent::Transactions(ev) => (Room::Transactions, ev),
                            BehaviourEvent::Sync(ev) => (Room::Sync, ev),
                            BehaviourEvent::Blobs(ev) => (Room::Blobs, ev),
                            BehaviourEvent::Allowed(never) => match never {},
                        };
                        let mut link = Link {
                            swarm: &mut swarm,
                            by_peer: &by_peer,
                            quotas: &mut quotas,
                            pending: &mut pending_queries,
                            stats: &mut stats,
                            rooms: &events,
                        };
                        link.on_room_event(room, ev).await;
                    }
                    SwarmEvent::NewListenAddr { address, .. } => {
                        tracing::info!(%address, "listening");
                    }
                    _ => {}
                }
                stats.connected = connected.len();
                stats_tx.send_if_modified(|s| {
                    let changed = s.peers != stats.peers
                        || s.rate_limited != stats.rate_limited
                        || s.refused_connections != stats.refused_connections;
                    if changed {
                        *s = stats.clone();
                    }
                    changed
                });
            }
        }
    }
}

/// What handling one room event needs of the network task's state.
struct Link<'a> {
    swarm: &'a mut Swarm<Behaviour>,
    by_peer: &'a HashMap<PeerId, &'a Peer>,
    quotas: &'a mut Quotas,
    pending: &'a mut HashSet<(Room, OutboundRequestId)>,
    stats: &'a mut NetStats,
    rooms: &'a Rooms,
}

impl Link<'_> {
    async fn on_room_event(
        &mut self,
        room: Room,
        ev: request_response::Event<v1::PeerMessage, v1::PeerMessage>,
    ) {
        match ev {
            request_response::Event::Message { peer, message, .. } => {
                let Some(p) = self.by_peer.get(&peer) else {
                    return;
                };
                match message {
                    request_response::Message::Request {
                        request, channel, ..
                    } => {
                        if !self.quotas.take(peer, room, tokio::time::Instant::now()) {
                            self.stats.rate_limited += 1;
                            if self.stats.rate_limited.is_power_of_two() {
                                tracing::warn!(peer = %p.name, ?room, dropped = self.stats.rate_limited, "peer over its message rate in this room; dropping");
                            }
                            return;
                        }
                        if Room::of(&request) != room {
                            tracing::info!(peer = %p.name, ?room, sent = ?Room::of(&request), "refused a message sent in another room's protocol");
                            return;
                        }
                        let from = p.index;
                        if Room::is_query(&request) {
                            let ev = NetEvent::Query {
                                from,
                                msg: request,
                                channel,
                            };
                            self.rooms.deliver(room, ev).await;
                        } else {
                            let _ = self
                                .swarm
                                .behaviour_mut()
                                .room(room)
                                .send_response(channel, ack());
                            let ev = NetEvent::Message { from, msg: request };
                            self.rooms.deliver(room, ev).await;
                        }
                    }
                    request_response::Message::Response {
                        request_id,
                        response,
                    } => {
                        if self.pending.remove(&(room, request_id)) {
                            let ev = NetEvent::Message {
                                from: p.index,
                                msg: response,
                            };
                            self.rooms.deliver(room, ev).await;
                        }
                    }
                }
            }
            request_response::Event::OutboundFailure {
                request_id,
                peer,
                error,
                ..
            } => {
                self.pending.remove(&(room, request_id));
                tracing::debug!(%peer, ?room, %error, "request failed");
            }
            request_response::Event::InboundFailure { peer, error, .. } => {
                let name = self
                    .by_peer
                    .get(&peer)
                    .map_or("unknown", |p| p.name.as_str());
                match &error {
                    // The codec refused the bytes: oversize, not canonical, or not a peer message.
                    request_response::InboundFailure::Io(e)
                        if e.kind() == io::ErrorKind::InvalidData =>
                    {
                        tracing::info!(peer = name, %peer, ?room, error = %e, "refused a malformed peer message");
                    }
                    _ => {
                        tracing::debug!(peer = name, %peer, ?room, %error, "inbound request failed")
                    }
                }
            }
            request_response::Event::ResponseSent { .. } => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peer_id_is_bound_to_the_identity() {
        let key = SigningKey::from_bytes(&[5; 32]).unwrap();
        assert_eq!(
            keypair(&key).public().to_peer_id(),
            peer_id(&key.identity())
        );
        let other = SigningKey::from_bytes(&[6; 32]).unwrap();
        assert_ne!(peer_id(&other.identity()), peer_id(&key.identity()));
    }
}
