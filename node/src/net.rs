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
//! **Limits.** A message over [`limits::PEER_MESSAGE`] bytes is refused before it is read; each
//! peer may send at most [`RATE_PER_SEC`] messages per second (token bucket with a burst of
//! [`RATE_BURST`]); excess messages are dropped and counted.

use std::collections::{BTreeMap, HashMap};
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use libp2p::futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, StreamExt};
use libp2p::identity::{secp256k1, Keypair, PublicKey};
use libp2p::request_response::{self, OutboundRequestId, ProtocolSupport, ResponseChannel};
use libp2p::swarm::{NetworkBehaviour, SwarmEvent};
use libp2p::{allow_block_list, noise, tcp, yamux, Multiaddr, PeerId, StreamProtocol, Swarm};
use medchain_crypto::{Identity, SigningKey};
use medchain_proto::canonical::{decode_peer_message, limits, Canonical};
use medchain_proto::v1;
use tokio::sync::mpsc;

/// Protocol name of medchain's peer messages (version 1).
pub const PROTOCOL: &str = "/medchain/peer/1";
/// Sustained messages per second accepted from one peer.
pub const RATE_PER_SEC: f64 = 20_000.0;
/// Messages one peer may send in a burst.
pub const RATE_BURST: f64 = 40_000.0;

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

/// Whether a message is a query, answered with data rather than an acknowledgement.
fn is_query(msg: &v1::PeerMessage) -> bool {
    matches!(
        msg.body,
        Some(v1::peer_message::Body::BlockRequest(_) | v1::peer_message::Body::BlobRequest(_))
    )
}

/// Bytes of peer messages this node instance read and wrote (length prefixes included), counted
/// by its codec and read by its metrics: per instance, so two nodes in one process (tests) count
/// apart.
#[derive(Debug, Default)]
pub struct PeerTraffic {
    pub bytes_in: AtomicU64,
    pub bytes_out: AtomicU64,
}

/// Length-prefixed canonical `PeerMessage`s.
#[derive(Clone, Debug, Default)]
pub struct PeerCodec {
    traffic: Arc<PeerTraffic>,
}

async fn read_message<T: AsyncRead + Unpin + Send>(
    io: &mut T,
    traffic: &PeerTraffic,
) -> io::Result<v1::PeerMessage> {
    let mut len = [0u8; 4];
    io.read_exact(&mut len).await?;
    let len = u32::from_be_bytes(len) as usize;
    if len > limits::PEER_MESSAGE {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "peer message of {len} bytes is over the {}-byte limit",
                limits::PEER_MESSAGE
            ),
        ));
    }
    let mut buf = vec![0u8; len];
    io.read_exact(&mut buf).await?;
    traffic
        .bytes_in
        .fetch_add(4 + len as u64, Ordering::Relaxed);
    decode_peer_message(&buf).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

async fn write_message<T: AsyncWrite + Unpin + Send>(
    io: &mut T,
    msg: v1::PeerMessage,
    traffic: &PeerTraffic,
) -> io::Result<()> {
    let bytes = msg.canonical_bytes();
    io.write_all(&(bytes.len() as u32).to_be_bytes()).await?;
    io.write_all(&bytes).await?;
    traffic
        .bytes_out
        .fetch_add(4 + bytes.len() as u64, Ordering::Relaxed);
    io.close().await
}

impl request_response::Codec for PeerCodec {
    type Protocol = StreamProtocol;
    type Request = v1::PeerMessage;
    type Response = v1::PeerMessage;

    async fn read_request<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<Self::Request>
    where
        T: AsyncRead + Unpin + Send,
    {
        read_message(io, &self.traffic).await
    }

    async fn read_response<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
    ) -> io::Result<Self::Response>
    where
        T: AsyncRead + Unpin + Send,
    {
        read_message(io, &self.traffic).await
    }

    async fn write_request<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        req: Self::Request,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        write_message(io, req, &self.traffic).await
    }

    async fn write_response<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        res: Self::Response,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        write_message(io, res, &self.traffic).await
    }
}

#[derive(NetworkBehaviour)]
struct Behaviour {
    allowed: allow_block_list::Behaviour<allow_block_list::AllowedPeers>,
    peer: request_response::Behaviour<PeerCodec>,
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
    pub rate_limited: u64,
    pub refused_connections: u64,
}

struct Bucket {
    tokens: f64,
    last: tokio::time::Instant,
}

impl Bucket {
    fn take(&mut self, now: tokio::time::Instant) -> bool {
        let dt = now.duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + dt * RATE_PER_SEC).min(RATE_BURST);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
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
    pub events: mpsc::Receiver<NetEvent>,
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
    let rr_config = request_response::Config::default()
        .with_request_timeout(Duration::from_secs(30))
        .with_max_concurrent_streams(4_096);
    let codec = PeerCodec::default();
    let traffic = codec.traffic.clone();
    let mut swarm = libp2p::SwarmBuilder::with_existing_identity(keypair)
        .with_tokio()
        .with_tcp(
            tcp::Config::default().nodelay(true),
            noise::Config::new,
            yamux::Config::default,
        )?
        .with_behaviour(|_| Behaviour {
            allowed,
            peer: request_response::Behaviour::with_codec(
                codec,
                [(StreamProtocol::new(PROTOCOL), ProtocolSupport::Full)],
                rr_config,
            ),
        })?
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(3_600)))
        .build();
    swarm.listen_on(listen.clone())?;
    let (cmd_tx, cmd_rx) = mpsc::channel(65_536);
    let (ev_tx, ev_rx) = mpsc::channel(65_536);
    let (stats_tx, stats_rx) = tokio::sync::watch::channel(NetStats::default());
    tokio::spawn(run(swarm, peers, cmd_rx, ev_tx, stats_tx));
    tracing::info!(%local_peer_id, %listen, "network started");
    Ok(Network {
        commands: cmd_tx,
        events: ev_rx,
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
    events: mpsc::Sender<NetEvent>,
    stats_tx: tokio::sync::watch::Sender<NetStats>,
) {
    let by_peer: HashMap<PeerId, &Peer> = peers.iter().map(|p| (peer_id(&p.identity), p)).collect();
    let by_index: BTreeMap<u32, PeerId> = by_peer.iter().map(|(id, p)| (p.index, *id)).collect();
    let mut connected: BTreeMap<PeerId, usize> = BTreeMap::new();
    let mut buckets: HashMap<PeerId, Bucket> = HashMap::new();
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
    let mut pending_block_requests: HashMap<OutboundRequestId, u32> = HashMap::new();
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
                                let query = is_query(&msg);
                                let rid = swarm.behaviour_mut().peer.send_request(id, msg);
                                if query {
                                    pending_block_requests.insert(rid, to);
                                }
                            }
                        }
                    }
                    NetCommand::Broadcast(msg) => {
                        let ids: Vec<PeerId> = connected.keys().copied().collect();
                        for id in ids {
                            swarm.behaviour_mut().peer.send_request(&id, msg.clone());
                        }
                    }
                    NetCommand::Respond { channel, msg } => {
                        let _ = swarm.behaviour_mut().peer.send_response(channel, msg);
                    }
                }
            }
            event = swarm.select_next_some() => {
                match event {
                    SwarmEvent::ConnectionEstablished { peer_id, .. } => {
                        let count = connected.entry(peer_id).or_default();
                        *count += 1;
                        if *count == 1 {
                            if let Some(p) = by_peer.get(&peer_id) {
                                tracing::info!(peer = %p.name, %peer_id, "connected");
                                if let Some(d) = dialers.get_mut(&peer_id) {
                                    d.backoff = Duration::from_millis(500);
                                }
                                let _ = events.send(NetEvent::Connected(p.index)).await;
                            }
                        }
                    }
                    SwarmEvent::ConnectionClosed { peer_id, num_established: 0, .. } => {
                        connected.remove(&peer_id);
                        if let Some(p) = by_peer.get(&peer_id) {
                            tracing::warn!(peer = %p.name, %peer_id, "disconnected; will redial");
                            if let Some(d) = dialers.get_mut(&peer_id) {
                                d.next_at = tokio::time::Instant::now() + d.backoff;
                            }
                            let _ = events.send(NetEvent::Disconnected(p.index)).await;
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
                    SwarmEvent::Behaviour(BehaviourEvent::Peer(ev)) => match ev {
                        request_response::Event::Message { peer, message, .. } => {
                            let Some(p) = by_peer.get(&peer) else { continue };
                            match message {
                                request_response::Message::Request { request, channel, .. } => {
                                    let bucket = buckets.entry(peer).or_insert(Bucket {
                                        tokens: RATE_BURST,
                                        last: tokio::time::Instant::now(),
                                    });
                                    if !bucket.take(tokio::time::Instant::now()) {
                                        stats.rate_limited += 1;
                                        if stats.rate_limited.is_power_of_two() {
                                            tracing::warn!(peer = %p.name, dropped = stats.rate_limited, "peer over its message rate; dropping");
                                        }
                                        continue;
                                    }
                                    if is_query(&request) {
                                        let _ = events.send(NetEvent::Query { from: p.index, msg: request, channel }).await;
                                    } else {
                                        let _ = swarm.behaviour_mut().peer.send_response(channel, ack());
                                        let _ = events.send(NetEvent::Message { from: p.index, msg: request }).await;
                                    }
                                }
                                request_response::Message::Response { request_id, response } => {
                                    if pending_block_requests.remove(&request_id).is_some() {
                                        let _ = events.send(NetEvent::Message { from: p.index, msg: response }).await;
                                    }
                                }
                            }
                        }
                        request_response::Event::OutboundFailure { request_id, peer, error, .. } => {
                            pending_block_requests.remove(&request_id);
                            tracing::debug!(%peer, %error, "request failed");
                        }
                        request_response::Event::InboundFailure { peer, error, .. } => {
                            let name = by_peer.get(&peer).map_or("unknown", |p| p.name.as_str());
                            match &error {
                                // The codec refused the bytes: oversize, not canonical, or not a
                                // peer message.
                                request_response::InboundFailure::Io(e)
                                    if e.kind() == io::ErrorKind::InvalidData =>
                                {
                                    tracing::info!(peer = name, %peer, error = %e, "refused a malformed peer message");
                                }
                                _ => tracing::debug!(peer = name, %peer, %error, "inbound request failed"),
                            }
                        }
                        request_response::Event::ResponseSent { .. } => {}
                    },
                    SwarmEvent::NewListenAddr { address, .. } => {
                        tracing::info!(%address, "listening");
                    }
                    _ => {}
                }
                stats.connected = connected.len();
                stats_tx.send_if_modified(|s| {
                    let changed = s.connected != stats.connected
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
