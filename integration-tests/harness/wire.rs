//! Raw HTTP/1.1 on the wire around the proxy, for tests that assert exact bytes: a framing
//! reader used on both sides, scripted raw-TCP backends on 127.0.0.1 that write exact bytes and
//! record what they received, and a proxy routing one host to one backend.
#![allow(dead_code)] // each test binary uses its own part

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use haloy::proxy::{AppRoute, Backend, DomainRoute, Proxy, ProxyConfig, Routes};

pub const HOST: &str = "up.test";

/// Upper bound for any single exchange: hitting it means the proxy hung.
pub const NO_HANG: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------- wire parsing

/// A parsed message head (request or response).
#[derive(Debug, Clone)]
pub struct Head {
    pub start_line: String,
    pub headers: Vec<(String, String)>,
}

impl Head {
    pub fn parse(raw: &[u8]) -> Head {
        let text = String::from_utf8_lossy(raw);
        let mut lines = text.split("\r\n").filter(|l| !l.is_empty());
        let start_line = lines.next().unwrap_or_default().to_string();
        let headers = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
            .collect();
        Head {
            start_line,
            headers,
        }
    }

    pub fn values(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
            .collect()
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.values(name).first().copied()
    }

    pub fn status(&self) -> u16 {
        self.start_line
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0)
    }

    pub fn is_chunked(&self) -> bool {
        self.values("transfer-encoding")
            .iter()
            .any(|v| v.to_ascii_lowercase().contains("chunked"))
    }

    pub fn content_length(&self) -> Option<usize> {
        self.get("content-length").map(|v| v.parse().unwrap())
    }
}

/// A TCP stream with a read buffer and HTTP/1.1 framing helpers; used on both sides.
pub struct Wire {
    pub stream: TcpStream,
    pub buf: Vec<u8>,
}

impl Wire {
    pub fn new(stream: TcpStream) -> Self {
        Self {
            stream,
            buf: Vec::new(),
        }
    }

    pub async fn connect(addr: SocketAddr) -> Self {
        Self::new(TcpStream::connect(addr).await.unwrap())
    }

    /// Read more bytes into the buffer; 0 at EOF. Cancel-safe.
    pub async fn fill(&mut self) -> Result<usize, String> {
        let mut chunk = [0u8; 16384];
        let n = self
            .stream
            .read(&mut chunk)
            .await
            .map_err(|e| format!("read failed: {e}"))?;
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(n)
    }

    pub async fn write(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.unwrap();
    }

    /// The next head; `None` when the peer closed before sending any byte of it.
    pub async fn read_head(&mut self) -> Result<Option<Head>, String> {
        loop {
            if let Some(end) = find(&self.buf, b"\r\n\r\n") {
                let raw: Vec<u8> = self.buf.drain(..end + 4).collect();
                return Ok(Some(Head::parse(&raw)));
            }
            if self.fill().await? == 0 {
                return if self.buf.is_empty() {
                    Ok(None)
                } else {
                    Err("EOF inside a head".into())
                };
            }
        }
    }

    pub async fn read_line(&mut self) -> Result<String, String> {
        loop {
            if let Some(end) = find(&self.buf, b"\r\n") {
                let raw: Vec<u8> = self.buf.drain(..end + 2).collect();
                return Ok(String::from_utf8_lossy(&raw[..end]).into_owned());
            }
            if self.fill().await? == 0 {
                return Err("EOF inside a line".into());
            }
        }
    }

    pub async fn read_exact_body(&mut self, n: usize) -> Result<Vec<u8>, String> {
        while self.buf.len() < n {
            if self.fill().await? == 0 {
                return Err(format!("EOF after {} of {n} body bytes", self.buf.len()));
            }
        }
        Ok(self.buf.drain(..n).collect())
    }

    /// Decode a chunked body strictly: hex sizes, extensions skipped, trailers skipped.
    pub async fn read_chunked(&mut self) -> Result<Vec<u8>, String> {
        let mut body = Vec::new();
        loop {
            let line = self.read_line().await?;
            let size_text = line.split(';').next().unwrap_or_default().trim();
            let size = usize::from_str_radix(size_text, 16)
                .map_err(|_| format!("invalid chunk size line {line:?}"))?;
            if size == 0 {
                while !self.read_line().await?.is_empty() {}
                return Ok(body);
            }
            body.extend(self.read_exact_body(size).await?);
            if !self.read_line().await?.is_empty() {
                return Err("chunk data not followed by CRLF".into());
            }
        }
    }

    pub async fn read_to_eof(&mut self) -> Result<Vec<u8>, String> {
        while self.fill().await? > 0 {}
        Ok(std::mem::take(&mut self.buf))
    }

    /// The next final response (interim 1xx other than 101 skipped), body decoded.
    pub async fn read_response(&mut self, to_head_request: bool) -> Result<RawResponse, String> {
        loop {
            let head = self
                .read_head()
                .await?
                .ok_or("connection closed before a response")?;
            let status = head.status();
            if (100..200).contains(&status) && status != 101 {
                continue;
            }
            let bodiless = to_head_request || matches!(status, 101 | 204 | 304);
            let body = if bodiless {
                Vec::new()
            } else if head.is_chunked() {
                self.read_chunked().await?
            } else if let Some(n) = head.content_length() {
                self.read_exact_body(n).await?
            } else {
                self.read_to_eof().await?
            };
            return Ok(RawResponse { head, body });
        }
    }

    /// A request's body by its framing (chunked wins over Content-Length).
    pub async fn read_request_body(&mut self, head: &Head) -> Result<Vec<u8>, String> {
        if head.is_chunked() {
            self.read_chunked().await
        } else {
            self.read_exact_body(head.content_length().unwrap_or(0))
                .await
        }
    }
}

pub fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

#[derive(Debug)]
pub struct RawResponse {
    pub head: Head,
    pub body: Vec<u8>,
}

impl RawResponse {
    pub fn status(&self) -> u16 {
        self.head.status()
    }

    pub fn body_str(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

// ---------------------------------------------------------------- scripted backend

/// One request as a scripted backend saw it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub conn: usize,
    pub head: Head,
    pub body: Vec<u8>,
}

pub type Log = Arc<Mutex<Vec<Seen>>>;

/// One accepted backend connection handed to the script.
pub struct BackendConn {
    pub wire: Wire,
    pub index: usize,
    pub log: Log,
}

impl BackendConn {
    /// The next request head, `None` when the proxy closed the connection.
    pub async fn request_head(&mut self) -> Option<Head> {
        self.wire.read_head().await.ok().flatten()
    }

    pub fn record(&self, head: Head, body: Vec<u8>) -> Seen {
        let seen = Seen {
            conn: self.index,
            head,
            body,
        };
        self.log.lock().unwrap().push(seen.clone());
        seen
    }

    /// The next complete request (recorded), `None` when the proxy closed the connection.
    pub async fn next_request(&mut self) -> Option<Seen> {
        let head = self.request_head().await?;
        let body = self.wire.read_request_body(&head).await.ok()?;
        Some(self.record(head, body))
    }

    pub async fn send(&mut self, bytes: &[u8]) {
        // The proxy may have given up on this connection already; that is its right.
        let _ = self.wire.stream.write_all(bytes).await;
    }

    /// Answer every request on this connection with `response` (keep-alive).
    pub async fn serve(mut self, response: &[u8]) {
        while self.next_request().await.is_some() {
            self.send(response).await;
        }
    }
}

pub struct ScriptedBackend {
    pub addr: SocketAddr,
    pub accepted: Arc<AtomicUsize>,
    pub log: Log,
    pub task: JoinHandle<()>,
}

impl ScriptedBackend {
    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }

    pub fn requests(&self) -> Vec<Seen> {
        self.log.lock().unwrap().clone()
    }
}

impl Drop for ScriptedBackend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A backend on 127.0.0.1 running `script` for every accepted connection.
pub async fn scripted_backend<F, Fut>(script: F) -> ScriptedBackend
where
    F: Fn(BackendConn) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let log: Log = Arc::default();
    let (acc, lg) = (Arc::clone(&accepted), Arc::clone(&log));
    let task = tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let index = acc.fetch_add(1, Ordering::SeqCst);
            let conn = BackendConn {
                wire: Wire::new(stream),
                index,
                log: Arc::clone(&lg),
            };
            tokio::spawn(script(conn));
        }
    });
    ScriptedBackend {
        addr,
        accepted,
        log,
        task,
    }
}

/// A keep-alive backend answering every request with `response`.
pub async fn keepalive_backend(response: &'static [u8]) -> ScriptedBackend {
    scripted_backend(move |conn| conn.serve(response)).await
}

// ---------------------------------------------------------------- proxy + client

pub struct TestProxy {
    pub addr: SocketAddr,
    /// Dropping (or sending on) it shuts the proxy down.
    pub stop: oneshot::Sender<()>,
}

/// A backend whose first answer (on whichever connection) is `first`, every later one `then`.
pub async fn first_answer_then(first: Vec<u8>, then: &'static [u8]) -> ScriptedBackend {
    let first = Arc::new(first);
    let answered = Arc::new(AtomicUsize::new(0));
    scripted_backend(move |mut conn| {
        let (first, answered) = (Arc::clone(&first), Arc::clone(&answered));
        async move {
            while conn.next_request().await.is_some() {
                if answered.fetch_add(1, Ordering::SeqCst) == 0 {
                    // Kept open afterwards: the proxy must judge the framing itself.
                    conn.send(&first).await;
                } else {
                    conn.send(then).await;
                }
            }
        }
    })
    .await
}

/// A proxy on 127.0.0.1 routing `HOST` to the single ready backend at `backend`.
pub async fn proxy_to(backend: SocketAddr) -> TestProxy {
    proxy_with(backend, ProxyConfig::default()).await
}

/// `proxy_to` with `config`.
pub async fn proxy_with(backend: SocketAddr, config: ProxyConfig) -> TestProxy {
    proxy_to_replicas(&[backend], config).await
}

/// A proxy on 127.0.0.1 routing `HOST` round-robin to ready `backends` (replicas 0, 1, …).
pub async fn proxy_to_replicas(backends: &[SocketAddr], config: ProxyConfig) -> TestProxy {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let routes = Routes::new();
    let backends = backends
        .iter()
        .enumerate()
        .map(|(i, addr)| {
            let task = Backend::new(format!("task{i}"), i as u32, *addr);
            task.set_ready(true);
            task
        })
        .collect();
    routes
        .set_app(AppRoute {
            app: "web".into(),
            domains: vec![DomainRoute {
                canonical: HOST.into(),
                aliases: Vec::new(),
            }],
            backends,
        })
        .unwrap();
    let proxy = Proxy::new(config, routes, None);
    let stop = serve_until_stopped(proxy, listener);
    TestProxy { addr, stop }
}

/// Serve plain HTTP with `proxy` on `listener` until the returned sender is dropped or sent on.
pub fn serve_until_stopped(proxy: Proxy, listener: TcpListener) -> oneshot::Sender<()> {
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(async move {
        proxy
            .serve_http(listener, async {
                let _ = stopped.await;
            })
            .await
    });
    stop
}

pub fn get_request(path: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: {HOST}\r\n\r\n").into_bytes()
}

/// Send `request` on `wire` and read the response, failing the test if the proxy hangs.
pub async fn exchange(wire: &mut Wire, request: &[u8], to_head_request: bool) -> RawResponse {
    wire.write(request).await;
    tokio::time::timeout(NO_HANG, wire.read_response(to_head_request))
        .await
        .expect("proxy did not answer in time")
        .unwrap()
}

/// GET `path` on a fresh client connection.
pub async fn get(proxy: &TestProxy, path: &str) -> RawResponse {
    let mut wire = Wire::connect(proxy.addr).await;
    exchange(&mut wire, &get_request(path), false).await
}

pub fn assert_response(resp: &RawResponse, status: u16, body: &str) {
    assert_eq!(
        (resp.status(), resp.body_str().as_str()),
        (status, body),
        "head: {:?}",
        resp.head
    );
}

/// How an upload the proxy answers early ended.
pub struct EarlyAnswer {
    pub answer: Vec<u8>,
    pub read: std::io::Result<usize>,
    pub uploaded: std::io::Result<()>,
}

impl EarlyAnswer {
    /// The answer has `status`, and neither side saw the connection reset.
    pub fn assert_clean(&self, status: u16) {
        let text = String::from_utf8_lossy(&self.answer);
        assert!(text.starts_with(&format!("HTTP/1.1 {status} ")), "{text}");
        assert!(
            self.read.is_ok(),
            "reading the answer failed: {:?}",
            self.read
        );
        assert!(
            self.uploaded.is_ok(),
            "the upload was cut off: {:?}",
            self.uploaded
        );
    }
}

/// POSTs a `body_len`-byte body with its Content-Length on `io`, and reads what the proxy
/// answers until it closes, both at once: the proxy may answer before the body is sent.
pub async fn upload_reading_the_answer<S>(io: S, host: &str, body_len: usize) -> EarlyAnswer
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + 'static,
{
    let (mut rd, mut wr) = tokio::io::split(io);
    let head = format!("POST /up HTTP/1.1\r\nHost: {host}\r\nContent-Length: {body_len}\r\n\r\n");
    let upload = tokio::spawn(async move {
        wr.write_all(head.as_bytes()).await?;
        let chunk = vec![b'x'; 64 * 1024];
        for _ in 0..body_len.div_ceil(chunk.len()) {
            wr.write_all(&chunk).await?;
        }
        wr.flush().await
    });
    let mut answer = Vec::new();
    let read = tokio::time::timeout(NO_HANG, rd.read_to_end(&mut answer))
        .await
        .expect("proxy did not close in time");
    let uploaded = tokio::time::timeout(NO_HANG, upload)
        .await
        .expect("upload hung")
        .expect("upload task");
    EarlyAnswer {
        answer,
        read,
        uploaded,
    }
}
