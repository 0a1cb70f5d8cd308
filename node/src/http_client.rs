//! A minimal HTTP/1.1 client over one keep-alive TCP connection, for the CLI's client commands
//! (`medchain bench`, `record`, `consent`, ...). It speaks exactly what the node's API serves:
//! requests with a `Content-Length` body (JSON, or protobuf for record uploads and reads),
//! responses with a `Content-Length` body.

use std::net::SocketAddr;

use anyhow::{anyhow, bail, Context, Result};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// One connection to a node's API.
#[derive(Debug)]
pub struct HttpClient {
    addr: SocketAddr,
    stream: Option<BufReader<TcpStream>>,
}

impl HttpClient {
    pub fn new(addr: SocketAddr) -> Self {
        HttpClient { addr, stream: None }
    }

    async fn connection(&mut self) -> Result<&mut BufReader<TcpStream>> {
        if self.stream.is_none() {
            let s = TcpStream::connect(self.addr)
                .await
                .with_context(|| format!("connecting to the node API at {}", self.addr))?;
            s.set_nodelay(true)?;
            self.stream = Some(BufReader::new(s));
        }
        Ok(self.stream.as_mut().expect("just set"))
    }

    /// Sends one JSON request and returns (status, body). Reconnects once if the kept-alive
    /// connection was closed.
    pub async fn request(
        &mut self,
        method: &str,
        path: &str,
        body: Option<&str>,
    ) -> Result<(u16, String)> {
        let (status, bytes) = self
            .request_bytes(
                method,
                path,
                "application/json",
                body.unwrap_or("").as_bytes(),
            )
            .await?;
        Ok((status, String::from_utf8_lossy(&bytes).into_owned()))
    }

    /// Sends one request with a body of `content_type` and returns (status, body bytes).
    pub async fn request_bytes(
        &mut self,
        method: &str,
        path: &str,
        content_type: &str,
        body: &[u8],
    ) -> Result<(u16, Vec<u8>)> {
        match self.try_request(method, path, content_type, body).await {
            Ok(r) => Ok(r),
            Err(_) => {
                self.stream = None;
                self.try_request(method, path, content_type, body).await
            }
        }
    }

    async fn try_request(
        &mut self,
        method: &str,
        path: &str,
        content_type: &str,
        body: &[u8],
    ) -> Result<(u16, Vec<u8>)> {
        let addr = self.addr;
        let conn = self.connection().await?;
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: keep-alive\r\n\r\n",
            body.len()
        );
        conn.get_mut().write_all(head.as_bytes()).await?;
        conn.get_mut().write_all(body).await?;
        let mut line = String::new();
        if conn.read_line(&mut line).await? == 0 {
            bail!("connection closed");
        }
        let status: u16 = line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| anyhow!("bad status line {line:?}"))?;
        let mut len = 0usize;
        loop {
            line.clear();
            conn.read_line(&mut line).await?;
            let l = line.trim_end();
            if l.is_empty() {
                break;
            }
            if let Some((k, v)) = l.split_once(':') {
                if k.eq_ignore_ascii_case("content-length") {
                    len = v.trim().parse().context("content-length")?;
                }
            }
        }
        let mut buf = vec![0u8; len];
        conn.read_exact(&mut buf).await?;
        Ok((status, buf))
    }
}
