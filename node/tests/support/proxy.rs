//! A lying node: an HTTP proxy in front of a real node's API that passes every request on and,
//! when told to, rewrites the JSON answers on their way back, as a compromised or impersonated
//! node would. Clients talk to it exactly as to the node (challenge, read tokens, proofs all
//! pass through), so whatever they refuse, they refuse for the lie alone.

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How an answer is rewritten: the request's path (with query) and the answer's JSON.
pub type Lie = Arc<dyn Fn(&str, &mut serde_json::Value) + Send + Sync>;

/// The proxy: its address, and the lie it tells now (none: it relays faithfully).
pub struct LyingProxy {
    pub addr: String,
    lie: Arc<Mutex<Option<Lie>>>,
}

impl LyingProxy {
    /// Listens on a free local port and relays to the API at `upstream` (`host:port`).
    pub fn start(upstream: &str) -> LyingProxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("a local port for the proxy");
        let addr = listener.local_addr().unwrap().to_string();
        let lie: Arc<Mutex<Option<Lie>>> = Arc::default();
        let (upstream, shared) = (upstream.to_string(), lie.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                let (upstream, lie) = (upstream.clone(), shared.lock().unwrap().clone());
                std::thread::spawn(move || relay(conn, &upstream, lie));
            }
        });
        LyingProxy { addr, lie }
    }

    /// From now on, answers are rewritten by `f`.
    pub fn lie(&self, f: impl Fn(&str, &mut serde_json::Value) + Send + Sync + 'static) {
        *self.lie.lock().unwrap() = Some(Arc::new(f));
    }

    /// From now on, answers pass unchanged.
    pub fn honest(&self) {
        *self.lie.lock().unwrap() = None;
    }
}

/// One request of `conn`, passed to `upstream` with `Connection: close`, its answer rewritten
/// by `lie` if it is JSON.
fn relay(conn: TcpStream, upstream: &str, lie: Option<Lie>) {
    let _ = conn.set_read_timeout(Some(Duration::from_secs(30)));
    let mut reader = BufReader::new(conn.try_clone().expect("a socket clone"));
    let Some((head, body)) = read_message(&mut reader) else {
        return;
    };
    let path = head
        .lines()
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .unwrap_or("")
        .to_string();
    let mut up = TcpStream::connect(upstream).expect("the node behind the proxy");
    if path.starts_with("/v1/events") {
        // The event stream never ends: it is passed through as it comes, unchanged.
        let _ = up.write_all(head.as_bytes());
        let _ = up.write_all(b"\r\n");
        let mut conn = conn;
        let _ = std::io::copy(&mut up, &mut conn);
        return;
    }
    up.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    up.write_all(with_length(&head, body.len()).as_bytes())
        .unwrap();
    up.write_all(&body).unwrap();
    let mut up_reader = BufReader::new(up);
    let Some((answer_head, mut answer)) = read_message(&mut up_reader) else {
        return;
    };
    if let Some(lie) = lie {
        if let Ok(mut json) = serde_json::from_slice::<serde_json::Value>(&answer) {
            lie(&path, &mut json);
            answer = serde_json::to_vec(&json).unwrap();
        }
    }
    let mut conn = conn;
    let _ = conn.write_all(with_length(&answer_head, answer.len()).as_bytes());
    let _ = conn.write_all(&answer);
}

/// The head of an HTTP/1.1 message (start line and headers, without the blank line) and its
/// body (by `Content-Length`, or chunked, or none).
fn read_message(r: &mut impl BufRead) -> Option<(String, Vec<u8>)> {
    let mut head = String::new();
    loop {
        let mut line = String::new();
        if r.read_line(&mut line).ok()? == 0 {
            return None;
        }
        if line == "\r\n" {
            break;
        }
        head.push_str(&line);
    }
    let header = |name: &str| {
        head.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim()
                .eq_ignore_ascii_case(name)
                .then(|| v.trim().to_string())
        })
    };
    let mut body = Vec::new();
    if let Some(n) = header("content-length").and_then(|v| v.parse::<usize>().ok()) {
        body.resize(n, 0);
        r.read_exact(&mut body).ok()?;
    } else if header("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
        loop {
            let mut size = String::new();
            r.read_line(&mut size).ok()?;
            let n = usize::from_str_radix(size.trim(), 16).ok()?;
            let mut chunk = vec![0; n + 2];
            r.read_exact(&mut chunk).ok()?;
            if n == 0 {
                break;
            }
            body.extend_from_slice(&chunk[..n]);
        }
    }
    Some((head, body))
}

/// `head` with its length, framing and connection headers replaced: a body of `len` bytes,
/// and the connection closed after it.
fn with_length(head: &str, len: usize) -> String {
    let mut out = String::new();
    for (i, line) in head.lines().enumerate() {
        let name = line.split(':').next().unwrap_or("").trim();
        let framing = ["content-length", "transfer-encoding", "connection"]
            .iter()
            .any(|h| name.eq_ignore_ascii_case(h));
        if i == 0 || !framing {
            out.push_str(line);
            out.push_str("\r\n");
        }
    }
    out.push_str(&format!(
        "Content-Length: {len}\r\nConnection: close\r\n\r\n"
    ));
    out
}
