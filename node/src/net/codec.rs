//! The wire format of every room: a 4-byte big-endian length, then a canonical `PeerMessage`.
//! Each room's codec has its own size limit, checked before a byte of the body is read.

use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use libp2p::futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use libp2p::request_response;
use libp2p::StreamProtocol;
use medchain_proto::canonical::{decode_peer_message, Canonical};
use medchain_proto::v1;

/// Bytes of peer messages this node instance read and wrote (length prefixes included), counted
/// by its codecs and read by its metrics: per instance, so two nodes in one process (tests) count
/// apart.
#[derive(Debug, Default)]
pub struct PeerTraffic {
    pub bytes_in: AtomicU64,
    pub bytes_out: AtomicU64,
}

/// Length-prefixed canonical `PeerMessage`s of at most `max_bytes`.
#[derive(Clone, Debug)]
pub struct PeerCodec {
    pub traffic: Arc<PeerTraffic>,
    pub max_bytes: usize,
}

async fn read_message<T: AsyncRead + Unpin + Send>(
    io: &mut T,
    codec: &PeerCodec,
    protocol: &StreamProtocol,
) -> io::Result<v1::PeerMessage> {
    let mut len = [0u8; 4];
    io.read_exact(&mut len).await?;
    let len = u32::from_be_bytes(len) as usize;
    if len > codec.max_bytes {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "a {protocol} message of {len} bytes is over that room's {}-byte limit",
                codec.max_bytes
            ),
        ));
    }
    let mut buf = vec![0u8; len];
    io.read_exact(&mut buf).await?;
    codec
        .traffic
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

    async fn read_request<T>(&mut self, p: &StreamProtocol, io: &mut T) -> io::Result<Self::Request>
    where
        T: AsyncRead + Unpin + Send,
    {
        read_message(io, self, p).await
    }

    async fn read_response<T>(
        &mut self,
        p: &StreamProtocol,
        io: &mut T,
    ) -> io::Result<Self::Response>
    where
        T: AsyncRead + Unpin + Send,
    {
        read_message(io, self, p).await
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
