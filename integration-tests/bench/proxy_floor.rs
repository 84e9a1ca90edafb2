//! Benchmark instrument, not a product: the least a tokio HTTP/1.1 keep-alive reverse proxy
//! costs in `proxy.sh`'s harness, so the gap between haloyd and that floor can be told apart
//! from the cost of tokio and of the kernel's TCP path.
//!
//! It does what the harness needs and no more: per client connection one upstream
//! connection, kept alive; a request head is found by its blank line and sent on with two
//! fields added (X-Forwarded-For/-Proto, as every measured proxy adds them); a response is
//! delimited by its Content-Length and sent back unchanged. No routing, no header hygiene, no
//! metrics, no request bodies. The same multi-thread tokio runtime as haloyd (one worker under
//! `TOKIO_WORKER_THREADS=1`), the same socket calls (recv/send, edge-triggered epoll).
//!
//! With `FLOOR_MODE=lean` it also does, in the plainest code, the work per request a complete
//! proxy cannot skip, as haloyd's HTTP/1 path does it: a strict parse (httparse), the fields
//! classified in one pass, the host normalized and routed through an `ArcSwap`'d map to a
//! round-robin backend, hop-by-hop and forwarding fields dropped, X-Forwarded-For/-Proto/-Host
//! and Forwarded written, the response head parsed and framed by Content-Length, its
//! hop-by-hop fields dropped, Date added when missing, and per-app counters (requests, status
//! class, latency bucket, bytes). It only closes a connection on anything else (the real path
//! hands such requests to its full machinery). It is what haloyd's HTTP layer would cost
//! written as a byte-level path: the bound a rewrite of that path can reach.
//!
//! Started by `proxy.sh` with `FLOOR=1` (or `FLOOR=lean`) in haloyd's place as peer B, so it takes haloyd's
//! command line: `serve --config FILE` (only `http_listen` and `https_listen` are read), the
//! backend from `HALOYD_BENCH_STATIC_ROUTES` (its first `host=addr`). Its HTTPS port only
//! tunnels bytes to `FLOOR_TLS_UPSTREAM` (haloyd's TLS port), so the harness's checks pass;
//! it measures plain HTTP only.

// Tests start real containerd, registries, Pebble and tools (see clippy.toml).
#![allow(clippy::disallowed_methods)]

use std::mem::MaybeUninit;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, Context as _};
use arc_swap::ArcSwap;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const ADDED_FIELDS: &[u8] = b"x-forwarded-for: 127.0.0.1\r\nx-forwarded-proto: http\r\n\r\n";

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let config_path = args
        .iter()
        .position(|a| a == "--config")
        .and_then(|i| args.get(i + 1))
        .ok_or_else(|| anyhow!("usage: bench-floor serve --config FILE"))?;
    let config = std::fs::read_to_string(config_path).with_context(|| config_path.clone())?;
    let http = config_value(&config, "http_listen:")?;
    let https = config_value(&config, "https_listen:")?;
    let routes =
        std::env::var("HALOYD_BENCH_STATIC_ROUTES").context("HALOYD_BENCH_STATIC_ROUTES")?;
    let backend = routes
        .split_whitespace()
        .next()
        .and_then(|route| route.split_once('='))
        .map(|(_, addr)| addr.to_string())
        .ok_or_else(|| anyhow!("HALOYD_BENCH_STATIC_ROUTES holds no host=addr"))?;
    let tls_upstream = std::env::var("FLOOR_TLS_UPSTREAM").context("FLOOR_TLS_UPSTREAM")?;
    let mode = match std::env::var("FLOOR_MODE").as_deref() {
        Ok("lean") => Mode::Lean(Arc::new(Lean::from_routes(&routes)?)),
        Ok("bare") | Err(_) => Mode::Bare(backend),
        Ok(other) => return Err(anyhow!("FLOOR_MODE is bare or lean, not {other}")),
    };
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(serve_all(http, https, mode, tls_upstream))
}

/// What the proxy does per request (see the module header).
#[derive(Clone)]
enum Mode {
    /// Everything to this backend, heads passed through.
    Bare(String),
    Lean(Arc<Lean>),
}

/// The lean mode's route table.
struct Lean {
    routes: ArcSwap<foldhash::HashMap<String, Arc<App>>>,
}

/// A routed app: its backends and the counters a proxy keeps per app.
struct App {
    backends: Vec<String>,
    next: AtomicUsize,
    requests: AtomicU64,
    bytes: AtomicU64,
    status_class: [AtomicU64; 6],
    latency_log2_us: [AtomicU64; 16],
    latency_sum_us: AtomicU64,
}

impl Lean {
    fn from_routes(routes: &str) -> anyhow::Result<Self> {
        let mut table = foldhash::HashMap::default();
        for route in routes.split_whitespace() {
            let (host, addr) = route
                .split_once('=')
                .ok_or_else(|| anyhow!("route {route} is not host=addr"))?;
            let app = App {
                backends: vec![addr.to_string()],
                next: AtomicUsize::new(0),
                requests: AtomicU64::new(0),
                bytes: AtomicU64::new(0),
                status_class: Default::default(),
                latency_log2_us: Default::default(),
                latency_sum_us: AtomicU64::new(0),
            };
            table.insert(host.to_ascii_lowercase(), Arc::new(app));
        }
        Ok(Self {
            routes: ArcSwap::from_pointee(table),
        })
    }
}

/// The value after `key` in haloyd's one-line YAML maps (`{http_listen: ADDR, ...}`).
fn config_value(config: &str, key: &str) -> anyhow::Result<String> {
    let start = config
        .find(key)
        .ok_or_else(|| anyhow!("the config has no {key}"))?
        + key.len();
    let value = config[start..].split([',', '}', '\n']).next().unwrap_or("");
    Ok(value.trim().to_string())
}

async fn serve_all(
    http: String,
    https: String,
    mode: Mode,
    tls_upstream: String,
) -> anyhow::Result<()> {
    let plain = TcpListener::bind(&http).await.context(http)?;
    let tls = TcpListener::bind(&https).await.context(https)?;
    tokio::spawn(async move {
        while let Ok((client, _)) = tls.accept().await {
            tokio::spawn(tunnel(client, tls_upstream.clone()));
        }
    });
    loop {
        let (client, peer) = plain.accept().await?;
        let mode = mode.clone();
        tokio::spawn(async move {
            let served = match mode {
                Mode::Bare(backend) => proxy(client, &backend).await,
                Mode::Lean(lean) => proxy_lean(client, &lean, peer.ip()).await,
            };
            if let Err(e) = served {
                eprintln!("bench-floor: {e}");
            }
        });
    }
}

async fn tunnel(mut client: TcpStream, to: String) {
    if let Ok(mut upstream) = TcpStream::connect(&to).await {
        let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
    }
}

/// Serve one client connection until it closes (or asks to).
async fn proxy(mut client: TcpStream, backend: &str) -> anyhow::Result<()> {
    client.set_nodelay(true)?;
    let mut upstream: Option<TcpStream> = None;
    let mut request = Vec::with_capacity(4096);
    let mut out = Vec::with_capacity(4096);
    let mut response = Vec::with_capacity(4096);
    loop {
        let Some(end) = read_head(&mut client, &mut request).await? else {
            return Ok(());
        };
        // proxy.sh's own check asks to close; wrk never does.
        let close = memchr::memmem::find(&request[..end], b": close").is_some();
        out.clear();
        out.extend_from_slice(&request[..end - 2]);
        out.extend_from_slice(ADDED_FIELDS);
        request.drain(..end);
        let conn = connected(&mut upstream, backend).await?;
        let head_end = send(conn, &out, &mut response).await?;
        let total = head_end + content_length(&response[..head_end])?;
        read_to(conn, &mut response, total).await?;
        client.write_all(&response[..total]).await?;
        if close {
            return Ok(());
        }
    }
}

/// The client connection's upstream connection, opened on first use.
async fn connected<'a>(
    upstream: &'a mut Option<TcpStream>,
    backend: &str,
) -> anyhow::Result<&'a mut TcpStream> {
    if upstream.is_none() {
        let conn = TcpStream::connect(backend).await?;
        conn.set_nodelay(true)?;
        *upstream = Some(conn);
    }
    upstream
        .as_mut()
        .ok_or_else(|| anyhow!("no upstream connection"))
}

/// Send `request` on `conn` and read the response head into `response` (cleared first); the
/// head's length.
async fn send(
    conn: &mut TcpStream,
    request: &[u8],
    response: &mut Vec<u8>,
) -> anyhow::Result<usize> {
    conn.write_all(request).await?;
    response.clear();
    read_head(conn, response)
        .await?
        .ok_or_else(|| anyhow!("the backend closed the connection"))
}

/// Read until `buf` holds `total` bytes.
async fn read_to(conn: &mut TcpStream, buf: &mut Vec<u8>, total: usize) -> anyhow::Result<()> {
    while buf.len() < total {
        if conn.read_buf(buf).await? == 0 {
            return Err(anyhow!("the backend closed in the middle of a body"));
        }
    }
    Ok(())
}

/// Read until `buf` holds a blank line; the length of the head including it, or `None` when
/// the peer closed first.
async fn read_head(stream: &mut TcpStream, buf: &mut Vec<u8>) -> anyhow::Result<Option<usize>> {
    loop {
        if let Some(end) = memchr::memmem::find(buf, b"\r\n\r\n") {
            return Ok(Some(end + 4));
        }
        if stream.read_buf(buf).await? == 0 {
            return Ok(None);
        }
    }
}

/// The Content-Length of the backend's response head (the harness's backend writes one).
fn content_length(head: &[u8]) -> anyhow::Result<usize> {
    let start =
        memchr::memmem::find(head, b"ength:").ok_or_else(|| anyhow!("no Content-Length"))? + 6;
    let rest = &head[start..];
    let end = memchr::memmem::find(rest, b"\r\n").unwrap_or(rest.len());
    let digits = std::str::from_utf8(&rest[..end])?.trim();
    Ok(digits.parse()?)
}

/// What a field is to a proxy.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Field {
    Host,
    Connection,
    Date,
    ContentLength,
    /// Transfer-Encoding, Upgrade, Expect: not the simple kind of message.
    Other,
    /// Hop-by-hop fields other than Connection: never passed on.
    HopByHop,
    /// A client's forwarding fields: the proxy writes its own.
    Forwarding,
    EndToEnd,
}

fn classify(name: &[u8]) -> Field {
    let mut lower = [0u8; 24];
    let Some(lower) = lower.get_mut(..name.len()) else {
        return Field::EndToEnd;
    };
    lower.copy_from_slice(name);
    lower.make_ascii_lowercase();
    match &*lower {
        b"host" => Field::Host,
        b"connection" => Field::Connection,
        b"date" => Field::Date,
        b"content-length" => Field::ContentLength,
        b"transfer-encoding" | b"upgrade" | b"expect" => Field::Other,
        b"keep-alive"
        | b"proxy-connection"
        | b"te"
        | b"trailer"
        | b"proxy-authenticate"
        | b"proxy-authorization" => Field::HopByHop,
        b"forwarded" | b"x-forwarded-for" | b"x-forwarded-proto" | b"x-forwarded-host"
        | b"x-real-ip" => Field::Forwarding,
        _ => Field::EndToEnd,
    }
}

fn write_field(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    let start = out.len();
    out.extend_from_slice(name);
    out[start..].make_ascii_lowercase();
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// `host` without port or trailing dot, lower-cased.
fn normalize_host(host: &[u8]) -> Option<std::borrow::Cow<'_, str>> {
    let host = std::str::from_utf8(host).ok()?.trim();
    let host = match host.rfind(':') {
        Some(i) if host[i + 1..].bytes().all(|b| b.is_ascii_digit()) => &host[..i],
        _ => host,
    };
    let host = host.strip_suffix('.').unwrap_or(host);
    Some(if host.bytes().any(|b| b.is_ascii_uppercase()) {
        host.to_ascii_lowercase().into()
    } else {
        host.into()
    })
}

/// A request taken by the lean path: its app, and whether the client closes after it.
struct Taken {
    app: Arc<App>,
    close: bool,
}

/// Parse the request head `head` and write the backend's request into `out`; `None` when it
/// is not the simple kind (or not routed).
fn lean_request(head: &[u8], lean: &Lean, peer: &[u8], out: &mut Vec<u8>) -> Option<Taken> {
    let mut slots = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; 64];
    let mut request = httparse::Request::new(&mut []);
    match request.parse_with_uninit_headers(head, &mut slots) {
        Ok(httparse::Status::Complete(len)) if len == head.len() => {}
        _ => return None,
    }
    let (method, target) = (request.method?, request.path?);
    if !target.starts_with('/') {
        return None;
    }
    let mut close = request.version? == 0;
    let (mut host, mut hosts) = (&b""[..], 0);
    for field in request.headers.iter() {
        match classify(field.name.as_bytes()) {
            Field::Host => (host, hosts) = (field.value, hosts + 1),
            Field::Connection => {
                close |= field
                    .value
                    .split(|&b| b == b',')
                    .any(|token| token.trim_ascii().eq_ignore_ascii_case(b"close"));
            }
            Field::ContentLength | Field::Other => return None,
            _ => {}
        }
    }
    if hosts != 1 {
        return None;
    }
    let app = Arc::clone(lean.routes.load().get(normalize_host(host)?.as_ref())?);
    out.clear();
    out.extend_from_slice(method.as_bytes());
    out.push(b' ');
    out.extend_from_slice(target.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    for field in request.headers.iter() {
        if matches!(
            classify(field.name.as_bytes()),
            Field::Host | Field::EndToEnd | Field::Date
        ) {
            write_field(out, field.name.as_bytes(), field.value);
        }
    }
    write_field(out, b"x-forwarded-for", peer);
    out.extend_from_slice(b"forwarded: for=");
    out.extend_from_slice(peer);
    out.extend_from_slice(b";proto=http\r\n");
    write_field(out, b"x-forwarded-proto", b"http");
    write_field(out, b"x-forwarded-host", host);
    out.extend_from_slice(b"\r\n");
    Some(Taken { app, close })
}

/// Parse the response head `head` and write the client's head into `out`; the body length, or
/// `None` when it is not framed by Content-Length alone.
fn lean_response(head: &[u8], close: bool, out: &mut Vec<u8>) -> Option<(u16, usize)> {
    let mut slots = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; 100];
    let mut response = httparse::Response::new(&mut []);
    match httparse::ParserConfig::default().parse_response_with_uninit_headers(
        &mut response,
        head,
        &mut slots,
    ) {
        Ok(httparse::Status::Complete(len)) if len == head.len() => {}
        _ => return None,
    }
    let status = response.code?;
    out.clear();
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(itoa::Buffer::new().format(status).as_bytes());
    out.push(b' ');
    out.extend_from_slice(response.reason.unwrap_or("").as_bytes());
    out.extend_from_slice(b"\r\n");
    let (mut length, mut dated) = (None, false);
    for field in response.headers.iter() {
        match classify(field.name.as_bytes()) {
            Field::ContentLength => {
                length = Some(std::str::from_utf8(field.value).ok()?.trim().parse().ok()?)
            }
            Field::Other => return None,
            Field::HopByHop | Field::Connection => {}
            kind => {
                dated |= kind == Field::Date;
                write_field(out, field.name.as_bytes(), field.value);
            }
        }
    }
    let length: usize = length?;
    write_field(
        out,
        b"content-length",
        itoa::Buffer::new().format(length).as_bytes(),
    );
    if !dated {
        DATE.with_borrow_mut(|(at, text)| {
            let now = SystemTime::now();
            let secs = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
            if *at != secs {
                *text = httpdate::fmt_http_date(now);
                *at = secs;
            }
            write_field(out, b"date", text.as_bytes());
        });
    }
    if close {
        write_field(out, b"connection", b"close");
    }
    out.extend_from_slice(b"\r\n");
    Some((status, length))
}

thread_local! {
    static DATE: std::cell::RefCell<(u64, String)> = const { std::cell::RefCell::new((0, String::new())) };
}

impl App {
    fn record(&self, status: u16, bytes: usize, started: Instant) {
        let us = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
        let bucket = (64 - us.leading_zeros() as usize).min(15);
        self.requests.fetch_add(1, Relaxed);
        self.bytes.fetch_add(bytes as u64, Relaxed);
        self.status_class[usize::from(status / 100).min(5)].fetch_add(1, Relaxed);
        self.latency_log2_us[bucket].fetch_add(1, Relaxed);
        self.latency_sum_us.fetch_add(us, Relaxed);
    }
}

/// [`proxy`] with the lean mode's work per request.
async fn proxy_lean(
    mut client: TcpStream,
    lean: &Lean,
    peer: std::net::IpAddr,
) -> anyhow::Result<()> {
    client.set_nodelay(true)?;
    let peer = peer.to_string();
    let mut upstream: Option<TcpStream> = None;
    let mut request = Vec::with_capacity(4096);
    let mut out = Vec::with_capacity(4096);
    let mut response = Vec::with_capacity(4096);
    loop {
        let Some(end) = read_head(&mut client, &mut request).await? else {
            return Ok(());
        };
        let Some(taken) = lean_request(&request[..end], lean, peer.as_bytes(), &mut out) else {
            return Ok(());
        };
        request.drain(..end);
        let started = Instant::now();
        let backend =
            &taken.app.backends[taken.app.next.fetch_add(1, Relaxed) % taken.app.backends.len()];
        let conn = connected(&mut upstream, backend).await?;
        let head_end = send(conn, &out, &mut response).await?;
        let Some((status, length)) = lean_response(&response[..head_end], taken.close, &mut out)
        else {
            return Ok(());
        };
        read_to(conn, &mut response, head_end + length).await?;
        out.extend_from_slice(&response[head_end..head_end + length]);
        taken.app.record(status, length, started);
        client.write_all(&out).await?;
        if taken.close {
            return Ok(());
        }
    }
}
