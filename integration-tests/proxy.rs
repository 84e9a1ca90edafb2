//! End-to-end tests of the reverse proxy with real sockets on 127.0.0.1: hyper backends, raw
//! TCP backends that record exactly what they received, raw and hyper clients.

// Tests start real containerd, registries, Pebble and tools (see clippy.toml).
#![allow(clippy::disallowed_methods)]

#[path = "harness/wire.rs"]
mod wire;

use std::collections::HashSet;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Empty, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{oneshot, Notify};
use tokio_tungstenite::tungstenite::{self, Message};

use haloy::health::{self, Monitor, MonitorSettings, ReadinessPolicy};
use haloy::proxy::{
    AppRoute, Backend, DomainRoute, DrainOutcome, Proxy, ProxyConfig, Routes, TlsHooks,
};

type TestBody = BoxBody<Bytes, Infallible>;

// ---------------------------------------------------------------- hyper test backend

struct TestBackend {
    addr: SocketAddr,
    healthy: Arc<AtomicBool>,
    hits: Arc<AtomicUsize>,
    sse_next: Arc<Notify>,
    _stop: oneshot::Sender<()>,
}

#[derive(Clone)]
struct BackendState {
    name: Arc<str>,
    healthy: Arc<AtomicBool>,
    hits: Arc<AtomicUsize>,
    sse_next: Arc<Notify>,
}

async fn test_backend(name: &str) -> TestBackend {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let state = BackendState {
        name: name.into(),
        healthy: Arc::new(AtomicBool::new(true)),
        hits: Arc::new(AtomicUsize::new(0)),
        sse_next: Arc::new(Notify::new()),
    };
    let (stop, mut stopped) = oneshot::channel::<()>();
    let st = state.clone();
    tokio::spawn(async move {
        loop {
            let (stream, _) = tokio::select! {
                _ = &mut stopped => return,
                a = listener.accept() => a.unwrap(),
            };
            let st = st.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req| backend_handler(st.clone(), req));
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .with_upgrades()
                    .await;
            });
        }
    });
    TestBackend {
        addr,
        healthy: state.healthy,
        hits: state.hits,
        sse_next: state.sse_next,
        _stop: stop,
    }
}

fn full(s: impl Into<Bytes>) -> TestBody {
    Full::new(s.into()).boxed()
}

async fn backend_handler(
    st: BackendState,
    req: Request<Incoming>,
) -> Result<Response<TestBody>, Infallible> {
    let path = req.uri().path().to_string();
    if path == "/health" {
        let ok = st.healthy.load(Ordering::SeqCst);
        let status = if ok {
            StatusCode::OK
        } else {
            StatusCode::INTERNAL_SERVER_ERROR
        };
        return Ok(Response::builder()
            .status(status)
            .body(full("health"))
            .unwrap());
    }
    st.hits.fetch_add(1, Ordering::SeqCst);
    let resp = Response::builder().header("x-backend", &*st.name);
    if path == "/echo" {
        // Reads the whole body before answering, as an app accepting uploads does.
        let body = match req.into_body().collect().await {
            Ok(b) => b.to_bytes(),
            Err(_) => Bytes::new(),
        };
        return Ok(resp.body(full(body)).unwrap());
    }
    let resp = if let Some(ms) = path.strip_prefix("/sleep/") {
        tokio::time::sleep(Duration::from_millis(ms.parse().unwrap())).await;
        resp.body(full(format!("slept {}", st.name)))
    } else if path == "/chunked" {
        let frames = futures_util::stream::iter(vec![
            Ok::<_, Infallible>(Frame::data(Bytes::from_static(b"hello "))),
            Ok(Frame::data(Bytes::from_static(b"world"))),
        ]);
        resp.body(BodyExt::boxed(StreamBody::new(frames)))
    } else if path == "/length" {
        resp.body(full("0123456789"))
    } else if let Some(code) = path.strip_prefix("/status/") {
        resp.status(code.parse::<u16>().unwrap())
            .body(Empty::new().boxed())
    } else if path == "/sse" {
        let next = Arc::clone(&st.sse_next);
        let events = futures_util::stream::unfold(0u32, move |i| {
            let next = Arc::clone(&next);
            async move {
                if i == 3 {
                    return None;
                }
                if i > 0 {
                    next.notified().await;
                }
                Some((
                    Ok::<_, Infallible>(Frame::data(Bytes::from(format!("data: {i}\n\n")))),
                    i + 1,
                ))
            }
        });
        resp.header("content-type", "text/event-stream")
            .body(BodyExt::boxed(StreamBody::new(events)))
    } else if path == "/ws" {
        return Ok(websocket_echo(req));
    } else {
        resp.body(full(st.name.to_string()))
    };
    Ok(resp.unwrap())
}

fn websocket_echo(mut req: Request<Incoming>) -> Response<TestBody> {
    let key = req.headers()["sec-websocket-key"].as_bytes().to_vec();
    let accept = tungstenite::handshake::derive_accept_key(&key);
    let upgrade = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        let upgraded = upgrade.await.unwrap();
        let mut ws = tokio_tungstenite::WebSocketStream::from_raw_socket(
            TokioIo::new(upgraded),
            tungstenite::protocol::Role::Server,
            None,
        )
        .await;
        while let Some(Ok(msg)) = ws.next().await {
            if msg.is_text() || msg.is_binary() {
                ws.send(msg).await.unwrap();
            }
        }
    });
    Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header("upgrade", "websocket")
        .header("connection", "Upgrade")
        .header("sec-websocket-accept", accept)
        .body(Empty::new().boxed())
        .unwrap()
}

// ---------------------------------------------------------------- raw recording backend

/// A TCP backend that records every byte it receives and answers with canned bytes.
struct RawBackend {
    addr: SocketAddr,
    received: Arc<Mutex<Vec<Vec<u8>>>>,
    _stop: oneshot::Sender<()>,
}

impl RawBackend {
    fn requests(&self) -> Vec<String> {
        self.received
            .lock()
            .unwrap()
            .iter()
            .map(|r| String::from_utf8_lossy(r).into_owned())
            .collect()
    }
}

async fn raw_backend(response: &'static [u8]) -> RawBackend {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let received = Arc::new(Mutex::new(Vec::new()));
    let rec = Arc::clone(&received);
    let (stop, mut stopped) = oneshot::channel::<()>();
    tokio::spawn(async move {
        loop {
            let (mut stream, _) = tokio::select! {
                _ = &mut stopped => return,
                a = listener.accept() => a.unwrap(),
            };
            let rec = Arc::clone(&rec);
            tokio::spawn(async move {
                let idx = {
                    let mut r = rec.lock().unwrap();
                    r.push(Vec::new());
                    r.len() - 1
                };
                let mut buf = vec![0u8; 65536];
                loop {
                    match tokio::time::timeout(Duration::from_millis(300), stream.read(&mut buf))
                        .await
                    {
                        Ok(Ok(0)) | Ok(Err(_)) => return,
                        Ok(Ok(n)) => {
                            let mut r = rec.lock().unwrap();
                            r[idx].extend_from_slice(&buf[..n]);
                            if request_complete(&r[idx]) {
                                break;
                            }
                        }
                        // Silence: answer what we have (never for an empty connection).
                        Err(_) => {
                            if rec.lock().unwrap()[idx].is_empty() {
                                continue;
                            }
                            break;
                        }
                    }
                }
                let _ = stream.write_all(response).await;
                let _ = stream.shutdown().await;
            });
        }
    });
    RawBackend {
        addr,
        received,
        _stop: stop,
    }
}

fn request_complete(bytes: &[u8]) -> bool {
    let text = String::from_utf8_lossy(bytes).to_ascii_lowercase();
    let Some(end) = text.find("\r\n\r\n") else {
        return false;
    };
    let head = &text[..end];
    let body = &text[end + 4..];
    if head.contains("transfer-encoding: chunked") {
        return body.ends_with("0\r\n\r\n");
    }
    let cl = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .map_or(0, |v| v.trim().parse::<usize>().unwrap_or(0));
    body.len() >= cl
}

// ---------------------------------------------------------------- proxy + clients

struct TestProxy {
    addr: SocketAddr,
    routes: Routes,
    _stop: oneshot::Sender<()>,
}

async fn start_proxy(config: ProxyConfig, hooks: Option<Arc<dyn TlsHooks>>) -> TestProxy {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let routes = Routes::new();
    let proxy = Proxy::new(config, routes.clone(), hooks);
    let stop = wire::serve_until_stopped(proxy, listener);
    TestProxy {
        addr,
        routes,
        _stop: stop,
    }
}

fn ready_backend(i: u32, addr: SocketAddr) -> Arc<Backend> {
    let b = Backend::new(format!("task{i}"), i, addr);
    b.set_ready(true);
    b
}

fn route(routes: &Routes, app: &str, host: &str, aliases: &[&str], backends: Vec<Arc<Backend>>) {
    routes
        .set_app(AppRoute {
            app: app.into(),
            domains: vec![DomainRoute {
                canonical: host.into(),
                aliases: aliases.iter().map(|s| s.to_string()).collect(),
            }],
            backends,
        })
        .unwrap();
}

async fn send(addr: SocketAddr, req: Request<Full<Bytes>>) -> Response<Bytes> {
    let stream = TcpStream::connect(addr).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    let resp = sender.send_request(req).await.unwrap();
    let (parts, body) = resp.into_parts();
    Response::from_parts(parts, body.collect().await.unwrap().to_bytes())
}

async fn get(addr: SocketAddr, host: &str, path: &str) -> Response<Bytes> {
    send(
        addr,
        Request::get(path)
            .header("host", host)
            .body(Full::default())
            .unwrap(),
    )
    .await
}

fn backend_of(resp: &Response<Bytes>) -> String {
    resp.headers()
        .get("x-backend")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default()
}

/// Send raw bytes, read until the proxy closes (or 3 s pass).
async fn raw(addr: SocketAddr, bytes: &[u8]) -> String {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(bytes).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(3), s.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

fn status_of(resp: &str) -> u16 {
    resp.split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

async fn wait_until(what: &str, timeout: Duration, cond: impl Fn() -> bool) {
    let end = Instant::now() + timeout;
    while !cond() {
        assert!(Instant::now() < end, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

// ---------------------------------------------------------------- routing

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_robin_spreads_300_requests_evenly() {
    let bs = [
        test_backend("b0").await,
        test_backend("b1").await,
        test_backend("b2").await,
    ];
    let proxy = start_proxy(ProxyConfig::default(), None).await;
    let backends = bs
        .iter()
        .enumerate()
        .map(|(i, b)| ready_backend(i as u32, b.addr))
        .collect();
    route(&proxy.routes, "web", "rr.test", &[], backends);
    for _ in 0..300 {
        assert_eq!(get(proxy.addr, "rr.test", "/").await.status(), 200);
    }
    for b in &bs {
        let hits = b.hits.load(Ordering::SeqCst);
        assert!((99..=101).contains(&hits), "uneven round-robin: {hits}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unhealthy_backend_skipped_then_readmitted_after_rise() {
    let bs = [
        test_backend("b0").await,
        test_backend("b1").await,
        test_backend("b2").await,
    ];
    let proxy = start_proxy(ProxyConfig::default(), None).await;
    let backends: Vec<_> = bs
        .iter()
        .enumerate()
        .map(|(i, b)| ready_backend(i as u32, b.addr))
        .collect();
    route(&proxy.routes, "web", "mon.test", &[], backends.clone());
    let settings = MonitorSettings {
        interval: Duration::from_millis(100),
        timeout: Duration::from_millis(500),
        fall: 2,
        rise: 3,
    };
    let monitors: Vec<_> = backends
        .iter()
        .map(|b| Monitor::spawn(Arc::clone(b), "/health", settings))
        .collect();

    bs[1].healthy.store(false, Ordering::SeqCst);
    wait_until("b1 out of rotation", Duration::from_secs(5), || {
        !backends[1].is_ready()
    })
    .await;
    let before = bs[1].hits.load(Ordering::SeqCst);
    for _ in 0..30 {
        let resp = get(proxy.addr, "mon.test", "/").await;
        assert_ne!(backend_of(&resp), "b1");
    }
    assert_eq!(bs[1].hits.load(Ordering::SeqCst), before);

    bs[1].healthy.store(true, Ordering::SeqCst);
    wait_until("b1 back in rotation", Duration::from_secs(5), || {
        backends[1].is_ready()
    })
    .await;
    let last = monitors[1].last_result().unwrap();
    assert!(
        last.ok && last.successes >= 3,
        "re-admitted before rise: {last:?}"
    );
    let mut to_b1 = 0;
    for _ in 0..30 {
        if backend_of(&get(proxy.addr, "mon.test", "/").await) == "b1" {
            to_b1 += 1;
        }
    }
    assert_eq!(to_b1, 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replica_younger_than_min_ready_gets_no_traffic() {
    let (old, young) = (test_backend("old").await, test_backend("young").await);
    let proxy = start_proxy(ProxyConfig::default(), None).await;
    let old_b = ready_backend(0, old.addr);
    let young_b = Backend::new("task1".into(), 1, young.addr);
    route(
        &proxy.routes,
        "web",
        "minready.test",
        &[],
        vec![old_b, Arc::clone(&young_b)],
    );
    let started = Instant::now();
    let policy = ReadinessPolicy {
        attempt_timeout: Duration::from_secs(1),
        deadline: Duration::from_secs(10),
        min_ready: Duration::from_millis(1500),
        started_at: started,
    };
    let gate_backend = Arc::clone(&young_b);
    let gate = tokio::spawn(async move {
        health::wait_ready(gate_backend.addr(), "/health", policy, &|| true)
            .await
            .unwrap();
        gate_backend.set_ready(true);
    });
    while !gate.is_finished() {
        let resp = get(proxy.addr, "minready.test", "/").await;
        assert_eq!(backend_of(&resp), "old", "young replica got traffic");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    gate.await.unwrap();
    assert!(started.elapsed() >= Duration::from_millis(1500));
    assert_eq!(young.hits.load(Ordering::SeqCst), 0);
    let mut seen_young = false;
    for _ in 0..4 {
        seen_young |= backend_of(&get(proxy.addr, "minready.test", "/").await) == "young";
    }
    assert!(seen_young);
}

struct FakeTls {
    certs: HashSet<String>,
}

impl TlsHooks for FakeTls {
    fn challenge_response(&self, token: &str) -> Option<String> {
        (token == "tok123").then(|| "tok123.keyauth".to_string())
    }
    fn has_certificate(&self, host: &str) -> bool {
        self.certs.contains(host)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_host_404_no_replica_503_alias_301_https_redirect_acme() {
    let b = test_backend("b0").await;
    let hooks: Arc<dyn TlsHooks> = Arc::new(FakeTls {
        certs: ["secure.test".to_string()].into(),
    });
    let proxy = start_proxy(ProxyConfig::default(), Some(hooks)).await;
    route(
        &proxy.routes,
        "web",
        "plain.test",
        &["www.plain.test"],
        vec![ready_backend(0, b.addr)],
    );
    route(
        &proxy.routes,
        "down",
        "down.test",
        &[],
        vec![Backend::new("t".into(), 0, b.addr)],
    );
    route(
        &proxy.routes,
        "sec",
        "secure.test",
        &["www.secure.test"],
        vec![ready_backend(0, b.addr)],
    );

    let r = get(proxy.addr, "nobody.test", "/").await;
    assert_eq!(r.status(), 404);
    assert!(String::from_utf8_lossy(r.body()).contains("nobody.test"));
    assert_eq!(get(proxy.addr, "down.test", "/").await.status(), 503);

    let r = get(proxy.addr, "WWW.Plain.Test.:80", "/a/b?x=1&y=2").await;
    assert_eq!(r.status(), 301);
    assert_eq!(r.headers()["location"], "http://plain.test/a/b?x=1&y=2");
    let r = get(proxy.addr, "PLAIN.test.", "/").await;
    assert_eq!(
        (r.status().as_u16(), backend_of(&r)),
        (200, "b0".to_string())
    );

    let r = get(proxy.addr, "secure.test", "/p?q=1").await;
    assert_eq!(r.status(), 301);
    assert_eq!(r.headers()["location"], "https://secure.test/p?q=1");
    let r = get(proxy.addr, "www.secure.test", "/p").await;
    assert_eq!(r.headers()["location"], "https://secure.test/p");

    let r = get(
        proxy.addr,
        "secure.test",
        "/.well-known/acme-challenge/tok123",
    )
    .await;
    assert_eq!(
        (r.status().as_u16(), r.body().as_ref()),
        (200, &b"tok123.keyauth"[..])
    );
    let r = get(
        proxy.addr,
        "secure.test",
        "/.well-known/acme-challenge/other",
    )
    .await;
    assert_eq!(r.status(), 404);

    let connect = raw(
        proxy.addr,
        b"CONNECT plain.test:443 HTTP/1.1\r\nHost: plain.test:443\r\n\r\n",
    )
    .await;
    assert_eq!(status_of(&connect), 405, "{connect}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_backend_marked_down_and_request_retried_on_next() {
    let live = test_backend("live").await;
    let dead_addr = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let proxy = start_proxy(ProxyConfig::default(), None).await;
    let dead = ready_backend(0, dead_addr);
    route(
        &proxy.routes,
        "web",
        "retry.test",
        &[],
        vec![Arc::clone(&dead), ready_backend(1, live.addr)],
    );
    for _ in 0..6 {
        let r = get(proxy.addr, "retry.test", "/").await;
        assert_eq!(
            (r.status().as_u16(), backend_of(&r)),
            (200, "live".to_string())
        );
    }
    assert!(!dead.is_ready());
    assert_eq!(dead.stats().errors, 1);
}

// ---------------------------------------------------------------- limits

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backend_timeout_504_big_headers_431_big_body_413() {
    let b = test_backend("b0").await;
    let config = ProxyConfig {
        backend_response_timeout: Duration::from_millis(300),
        max_header_bytes: 8192,
        max_body_bytes: Some(10),
        ..ProxyConfig::default()
    };
    let proxy = start_proxy(config, None).await;
    route(
        &proxy.routes,
        "web",
        "limits.test",
        &[],
        vec![ready_backend(0, b.addr)],
    );
    assert_eq!(
        get(proxy.addr, "limits.test", "/sleep/2000").await.status(),
        504
    );

    let big = format!(
        "GET / HTTP/1.1\r\nHost: limits.test\r\nX-Big: {}\r\n\r\n",
        "a".repeat(20_000)
    );
    assert_eq!(status_of(&raw(proxy.addr, big.as_bytes()).await), 431);

    let post = Request::post("/")
        .header("host", "limits.test")
        .body(Full::new(Bytes::from("x".repeat(11))))
        .unwrap();
    assert_eq!(send(proxy.addr, post).await.status(), 413);
    // A chunked body has no declared size: the limit is enforced while it streams. (A backend
    // that answers before reading the body gets its answer passed on instead; see the early
    // response test in proxy_upstream.rs.)
    let chunked = b"POST /echo HTTP/1.1\r\nHost: limits.test\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n\
        8\r\n01234567\r\n8\r\n01234567\r\n0\r\n\r\n";
    assert_eq!(status_of(&raw(proxy.addr, chunked).await), 413);
    let small = Request::post("/")
        .header("host", "limits.test")
        .body(Full::new(Bytes::from("x".repeat(10))))
        .unwrap();
    assert_eq!(send(proxy.addr, small).await.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowloris_connections_closed_at_header_timeout_while_normal_requests_succeed() {
    let b = test_backend("b0").await;
    let config = ProxyConfig {
        header_read_timeout: Duration::from_secs(1),
        ..ProxyConfig::default()
    };
    let proxy = start_proxy(config, None).await;
    route(
        &proxy.routes,
        "web",
        "slow.test",
        &[],
        vec![ready_backend(0, b.addr)],
    );
    let started = Instant::now();
    let mut tricklers = Vec::new();
    for i in 0..200 {
        let addr = proxy.addr;
        tricklers.push(tokio::spawn(async move {
            let stream = TcpStream::connect(addr).await.unwrap();
            let (mut rd, mut wr) = stream.into_split();
            // Every fourth connection sends nothing at all.
            let silent = i % 4 == 0;
            let trickle = async move {
                if !silent {
                    let _ = wr
                        .write_all(b"GET / HTTP/1.1\r\nHost: slow.test\r\nX-Slow: ")
                        .await;
                    loop {
                        tokio::time::sleep(Duration::from_millis(200)).await;
                        if wr.write_all(b"a").await.is_err() {
                            break;
                        }
                    }
                }
                std::future::pending::<()>().await
            };
            let mut buf = [0u8; 1024];
            let closed = async {
                loop {
                    match rd.read(&mut buf).await {
                        Ok(0) | Err(_) => return Instant::now(),
                        Ok(_) => {}
                    }
                }
            };
            tokio::select! {
                at = closed => at,
                _ = trickle => unreachable!(),
            }
        }));
    }
    for _ in 0..20 {
        assert_eq!(get(proxy.addr, "slow.test", "/").await.status(), 200);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for t in tricklers {
        let closed_at = tokio::time::timeout(Duration::from_secs(10), t)
            .await
            .expect("slow connection never closed")
            .unwrap();
        let lived = closed_at - started;
        assert!(
            lived >= Duration::from_millis(900),
            "closed before the header timeout: {lived:?}"
        );
    }
}

// ---------------------------------------------------------------- transparency

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hop_by_hop_headers_stripped_both_ways_forwarded_headers_set() {
    let rb = raw_backend(
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close, X-Internal\r\nX-Internal: secret\r\n\
          Keep-Alive: timeout=5\r\nProxy-Authenticate: Basic\r\nX-App: kept\r\n\r\nok",
    )
    .await;
    let proxy = start_proxy(ProxyConfig::default(), None).await;
    route(
        &proxy.routes,
        "web",
        "hop.test",
        &[],
        vec![ready_backend(0, rb.addr)],
    );
    let resp = raw(
        proxy.addr,
        b"GET /h?x=1 HTTP/1.1\r\nHost: Hop.test\r\nConnection: close, X-Drop-Me\r\nX-Drop-Me: 1\r\n\
          Keep-Alive: timeout=9\r\nTE: trailers\r\nProxy-Authorization: Basic eA==\r\nX-Real-IP: 6.6.6.6\r\n\
          X-Forwarded-For: 6.6.6.6\r\nX-Forwarded-Proto: https\r\nX-Forwarded-Host: evil.test\r\nX-Custom: yes\r\n\r\n",
    )
    .await;
    assert_eq!(status_of(&resp), 200);
    let resp_l = resp.to_ascii_lowercase();
    for gone in ["x-internal", "keep-alive", "proxy-authenticate"] {
        assert!(!resp_l.contains(gone), "{gone} leaked to client: {resp}");
    }
    assert!(resp_l.contains("x-app: kept"));

    let got = rb.requests().join("").to_ascii_lowercase();
    assert!(got.starts_with("get /h?x=1 http/1.1\r\n"), "{got}");
    for gone in [
        "x-drop-me",
        "keep-alive",
        "te:",
        "proxy-authorization",
        "x-real-ip",
        "6.6.6.6",
        "evil.test",
    ] {
        assert!(!got.contains(gone), "{gone} reached the backend: {got}");
    }
    for kept in [
        "host: hop.test",
        "x-forwarded-for: 127.0.0.1",
        "x-forwarded-proto: http",
        "x-forwarded-host: hop.test",
        "x-custom: yes",
    ] {
        assert!(got.contains(kept), "{kept} missing at the backend: {got}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trusted_proxy_keeps_forwarded_for_chain() {
    let rb = raw_backend(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n").await;
    let config = ProxyConfig {
        trusted_proxies: vec!["127.0.0.0/8".parse().unwrap()],
        ..ProxyConfig::default()
    };
    let proxy = start_proxy(config, None).await;
    route(
        &proxy.routes,
        "web",
        "trust.test",
        &[],
        vec![ready_backend(0, rb.addr)],
    );
    let resp = raw(proxy.addr, b"GET / HTTP/1.1\r\nHost: trust.test\r\nX-Forwarded-For: 203.0.113.7\r\nConnection: close\r\n\r\n").await;
    assert_eq!(status_of(&resp), 200);
    let got = rb.requests().join("").to_ascii_lowercase();
    assert!(
        got.contains("x-forwarded-for: 203.0.113.7, 127.0.0.1"),
        "{got}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunked_and_content_length_responses_keep_their_framing() {
    let b = test_backend("b0").await;
    let proxy = start_proxy(ProxyConfig::default(), None).await;
    route(
        &proxy.routes,
        "web",
        "frame.test",
        &[],
        vec![ready_backend(0, b.addr)],
    );
    let chunked = raw(
        proxy.addr,
        b"GET /chunked HTTP/1.1\r\nHost: frame.test\r\nConnection: close\r\n\r\n",
    )
    .await
    .to_ascii_lowercase();
    assert!(
        chunked.contains("transfer-encoding: chunked") && !chunked.contains("content-length"),
        "{chunked}"
    );
    assert!(chunked.contains("hello ") && chunked.contains("world"));
    let length = raw(
        proxy.addr,
        b"GET /length HTTP/1.1\r\nHost: frame.test\r\nConnection: close\r\n\r\n",
    )
    .await
    .to_ascii_lowercase();
    assert!(
        length.contains("content-length: 10") && !length.contains("transfer-encoding"),
        "{length}"
    );
    assert!(length.ends_with("\r\n\r\n0123456789"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn head_204_304_have_no_body_and_keep_alive_still_works() {
    let b = test_backend("b0").await;
    let proxy = start_proxy(ProxyConfig::default(), None).await;
    route(
        &proxy.routes,
        "web",
        "nobody.test",
        &[],
        vec![ready_backend(0, b.addr)],
    );
    // Pipelined on one connection: a body leaking into any of these would corrupt the next.
    let resp = raw(
        proxy.addr,
        b"HEAD /length HTTP/1.1\r\nHost: nobody.test\r\n\r\n\
          GET /status/204 HTTP/1.1\r\nHost: nobody.test\r\n\r\n\
          GET /status/304 HTTP/1.1\r\nHost: nobody.test\r\n\r\n\
          GET /length HTTP/1.1\r\nHost: nobody.test\r\nConnection: close\r\n\r\n",
    )
    .await;
    let statuses: Vec<&str> = resp
        .match_indices("HTTP/1.1 ")
        .map(|(i, _)| &resp[i + 9..i + 12])
        .collect();
    assert_eq!(statuses, ["200", "204", "304", "200"], "{resp}");
    let head_part = &resp[..resp.find("HTTP/1.1 204").unwrap()];
    assert!(head_part
        .to_ascii_lowercase()
        .contains("content-length: 10"));
    assert!(
        head_part.ends_with("\r\n\r\n"),
        "HEAD response carried a body: {head_part:?}"
    );
    assert!(resp.ends_with("\r\n\r\n0123456789"));
    assert_eq!(resp.matches("0123456789").count(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http10_with_and_without_host() {
    let b = test_backend("b0").await;
    let proxy = start_proxy(ProxyConfig::default(), None).await;
    route(
        &proxy.routes,
        "web",
        "old.test",
        &[],
        vec![ready_backend(0, b.addr)],
    );
    let with_host = raw(
        proxy.addr,
        b"GET /chunked HTTP/1.0\r\nHost: old.test\r\n\r\n",
    )
    .await;
    assert_eq!(status_of(&with_host), 200, "{with_host}");
    assert!(with_host.starts_with("HTTP/1.0 200") || with_host.starts_with("HTTP/1.1 200"));
    assert!(
        !with_host.to_ascii_lowercase().contains("transfer-encoding"),
        "chunked sent to HTTP/1.0: {with_host}"
    );
    assert!(with_host.ends_with("hello world"), "{with_host}");
    let without = raw(proxy.addr, b"GET / HTTP/1.0\r\n\r\n").await;
    assert_eq!(status_of(&without), 404, "{without}");
    let no_host_11 = raw(proxy.addr, b"GET / HTTP/1.1\r\n\r\n").await;
    assert_eq!(status_of(&no_host_11), 400, "{no_host_11}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_echo_through_proxy() {
    let b = test_backend("b0").await;
    let proxy = start_proxy(ProxyConfig::default(), None).await;
    route(
        &proxy.routes,
        "web",
        "ws.test",
        &[],
        vec![ready_backend(0, b.addr)],
    );
    let stream = TcpStream::connect(proxy.addr).await.unwrap();
    let (mut ws, resp) = tokio_tungstenite::client_async("ws://ws.test/ws", stream)
        .await
        .unwrap();
    assert_eq!(resp.status(), 101);
    for i in 0..5 {
        ws.send(Message::text(format!("ping {i}"))).await.unwrap();
        assert_eq!(
            ws.next().await.unwrap().unwrap(),
            Message::text(format!("ping {i}"))
        );
    }
    ws.send(Message::binary(vec![0u8, 1, 2, 255]))
        .await
        .unwrap();
    assert_eq!(
        ws.next().await.unwrap().unwrap(),
        Message::binary(vec![0u8, 1, 2, 255])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sse_events_arrive_one_by_one() {
    let b = test_backend("b0").await;
    let proxy = start_proxy(ProxyConfig::default(), None).await;
    route(
        &proxy.routes,
        "web",
        "sse.test",
        &[],
        vec![ready_backend(0, b.addr)],
    );
    let stream = TcpStream::connect(proxy.addr).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    let resp = sender
        .send_request(
            Request::get("/sse")
                .header("host", "sse.test")
                .body(Empty::<Bytes>::new())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    let mut body = resp.into_body();
    for i in 0..3 {
        // The backend sends event i+1 only after we got event i: any buffering hangs here.
        let frame = tokio::time::timeout(Duration::from_secs(5), body.frame())
            .await
            .expect("event not flushed through the proxy")
            .unwrap()
            .unwrap();
        assert_eq!(
            frame.into_data().unwrap(),
            Bytes::from(format!("data: {i}\n\n"))
        );
        b.sse_next.notify_one();
    }
}

// ---------------------------------------------------------------- smuggling

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_smuggling_attempts_rejected_never_forwarded_ambiguously() {
    let rb =
        raw_backend(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok").await;
    let proxy = start_proxy(ProxyConfig::default(), None).await;
    route(
        &proxy.routes,
        "web",
        "smug.test",
        &[],
        vec![ready_backend(0, rb.addr)],
    );
    let rejected: [(&str, &[u8]); 4] = [
        (
            "TE chunked, chunked",
            b"POST / HTTP/1.1\r\nHost: smug.test\r\nTransfer-Encoding: chunked, chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        ),
        (
            "TE twice",
            b"POST / HTTP/1.1\r\nHost: smug.test\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        ),
        (
            "differing CL",
            b"POST / HTTP/1.1\r\nHost: smug.test\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
        ),
        (
            "obs-fold",
            b"GET / HTTP/1.1\r\nHost: smug.test\r\nX-Folded: a\r\n b\r\nTransfer-Encoding:\r\n chunked\r\n\r\n",
        ),
    ];
    for (name, bytes) in rejected {
        let resp = raw(proxy.addr, bytes).await;
        assert_eq!(status_of(&resp), 400, "{name}: {resp}");
    }
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(
        rb.requests().iter().all(String::is_empty),
        "a rejected request reached the backend: {:?}",
        rb.requests()
    );

    // CL+TE: refused with 400 and a close (hyper alone would drop Content-Length and forward
    // the body as chunked), so the smuggled request behind it is never parsed.
    let resp = raw(
        proxy.addr,
        b"POST / HTTP/1.1\r\nHost: smug.test\r\nContent-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /admin HTTP/1.1\r\nHost: smug.test\r\n\r\n",
    )
    .await;
    assert_eq!(
        resp.matches("HTTP/1.1 ").count(),
        1,
        "smuggled request answered: {resp}"
    );
    tokio::time::sleep(Duration::from_millis(400)).await;
    let got = rb.requests().join("").to_ascii_lowercase();
    assert!(
        !got.contains("/admin"),
        "smuggled request reached the backend: {got}"
    );
    assert_eq!(status_of(&resp), 400, "{resp}");
    assert_eq!(got.matches("post / http/1.1").count(), 0, "{got}");
    assert!(
        !(got.contains("content-length: 6") && got.contains("transfer-encoding")),
        "ambiguous framing forwarded: {got}"
    );
    rb.received.lock().unwrap().clear();

    let resp = raw(proxy.addr, b"POST / HTTP/1.1\r\nHost: smug.test\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n").await;
    let status = status_of(&resp);
    assert!(
        status == 400 || resp.is_empty(),
        "invalid chunk size answered {status}: {resp}"
    );
    tokio::time::sleep(Duration::from_millis(400)).await;
    for got in rb.requests() {
        assert!(
            !got.contains("hello") && !got.ends_with("0\r\n\r\n"),
            "bad chunked body forwarded: {got:?}"
        );
    }

    // A valid chunked request reaches the backend with exactly one framing.
    let before = rb.requests().len();
    let resp = raw(
        proxy.addr,
        b"POST /ok HTTP/1.1\r\nHost: smug.test\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    )
    .await;
    assert_eq!(status_of(&resp), 200, "{resp}");
    let got = rb.requests()[before..].join("").to_ascii_lowercase();
    let te = got.contains("transfer-encoding: chunked");
    let cl = got.contains("content-length:");
    assert!(te ^ cl, "ambiguous framing forwarded: {got}");
    assert!(got.contains("hello"));
}

// ---------------------------------------------------------------- drain

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_lets_in_flight_request_finish_while_new_requests_go_elsewhere() {
    let (old, new) = (test_backend("old").await, test_backend("new").await);
    let proxy = start_proxy(ProxyConfig::default(), None).await;
    let old_b = ready_backend(0, old.addr);
    let new_b = Backend::new("task1".into(), 1, new.addr);
    route(
        &proxy.routes,
        "web",
        "drain.test",
        &[],
        vec![Arc::clone(&old_b), Arc::clone(&new_b)],
    );
    let addr = proxy.addr;
    let slow = tokio::spawn(async move { get(addr, "drain.test", "/sleep/3000").await });
    wait_until("slow request in flight", Duration::from_secs(5), || {
        old_b.stats().in_flight == 1
    })
    .await;

    new_b.set_ready(true);
    proxy
        .routes
        .set_backends("web", vec![Arc::clone(&new_b)])
        .unwrap();
    let drain = tokio::spawn(old_b.drain(Duration::from_secs(30)));
    for _ in 0..10 {
        let r = get(proxy.addr, "drain.test", "/").await;
        assert_eq!(
            (r.status().as_u16(), backend_of(&r)),
            (200, "new".to_string())
        );
    }
    assert!(
        !drain.is_finished(),
        "drain ended while a request was in flight"
    );
    let r = slow.await.unwrap();
    assert_eq!(
        (r.status().as_u16(), r.body().as_ref()),
        (200, &b"slept old"[..])
    );
    assert_eq!(drain.await.unwrap(), DrainOutcome::Drained);
    assert_eq!(old_b.stats().in_flight, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_tunnel_closed_when_drain_ends() {
    let b = test_backend("b0").await;
    let proxy = start_proxy(ProxyConfig::default(), None).await;
    let backend = ready_backend(0, b.addr);
    route(
        &proxy.routes,
        "web",
        "wsdrain.test",
        &[],
        vec![Arc::clone(&backend)],
    );
    let stream = TcpStream::connect(proxy.addr).await.unwrap();
    let (mut ws, _) = tokio_tungstenite::client_async("ws://wsdrain.test/ws", stream)
        .await
        .unwrap();
    ws.send(Message::text("hi")).await.unwrap();
    assert_eq!(ws.next().await.unwrap().unwrap(), Message::text("hi"));
    assert_eq!(backend.stats().tunnels, 1);
    proxy.routes.set_backends("web", vec![]).unwrap();
    assert_eq!(
        backend.drain(Duration::from_secs(5)).await,
        DrainOutcome::Drained
    );
    let next = tokio::time::timeout(Duration::from_secs(5), ws.next())
        .await
        .expect("tunnel left open after drain");
    assert!(!matches!(next, Some(Ok(Message::Text(_)))), "{next:?}");
}

// ---------------------------------------------------------------- HTTPS + HTTP/2

/// A server and a client TLS config for `host`; the client offers only `client_alpn`.
fn tls_pair(
    host: &str,
    client_alpn: &[u8],
) -> (tokio_rustls::TlsAcceptor, tokio_rustls::TlsConnector) {
    use rustls_pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let ck = rcgen::generate_simple_self_signed(vec![host.to_string()]).unwrap();
    let cert = ck.cert.der().clone();
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(ck.signing_key.serialize_der()));
    let mut server = rustls::ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert.clone()], key)
        .unwrap();
    server.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert).unwrap();
    let mut client = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    if !client_alpn.is_empty() {
        client.alpn_protocols = vec![client_alpn.to_vec()];
    }
    (
        tokio_rustls::TlsAcceptor::from(Arc::new(server)),
        tokio_rustls::TlsConnector::from(Arc::new(client)),
    )
}

/// haloy's proxy serving HTTPS on 127.0.0.1 with a self-signed certificate.
struct HttpsProxy {
    addr: SocketAddr,
    connector: tokio_rustls::TlsConnector,
    _stop: oneshot::Sender<()>,
}

/// `routes` served over HTTPS for `host`; clients of the proxy offer only `client_alpn`.
async fn start_https_proxy(
    config: ProxyConfig,
    routes: Routes,
    host: &str,
    client_alpn: &[u8],
) -> HttpsProxy {
    let (acceptor, connector) = tls_pair(host, client_alpn);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let proxy = Proxy::new(config, routes, None);
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(async move {
        proxy
            .serve_https(listener, acceptor, async {
                let _ = stopped.await;
            })
            .await
    });
    HttpsProxy {
        addr,
        connector,
        _stop: stop,
    }
}

impl HttpsProxy {
    async fn connect(&self, host: &str) -> tokio_rustls::client::TlsStream<TcpStream> {
        let tcp = TcpStream::connect(self.addr).await.unwrap();
        let name = rustls_pki_types::ServerName::try_from(host.to_string()).unwrap();
        self.connector.connect(name, tcp).await.unwrap()
    }

    /// An HTTP/2 connection to the proxy.
    async fn http2(&self, host: &str) -> hyper::client::conn::http2::SendRequest<Empty<Bytes>> {
        let tls = self.connect(host).await;
        assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
        let (sender, conn) = hyper::client::conn::http2::handshake(
            hyper_util::rt::TokioExecutor::new(),
            TokioIo::new(tls),
        )
        .await
        .unwrap();
        tokio::spawn(conn);
        sender
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_over_tls_is_proxied_to_http11_backend() {
    let rb = raw_backend(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello")
        .await;
    let routes = Routes::new();
    route(
        &routes,
        "web",
        "tls.test",
        &["www.tls.test"],
        vec![ready_backend(0, rb.addr)],
    );
    let proxy = start_https_proxy(ProxyConfig::default(), routes, "tls.test", b"h2").await;
    let mut sender = proxy.http2("tls.test").await;
    let req = Request::get("https://tls.test/p?q=1")
        .header("cookie", "a=1")
        .header("cookie", "b=2")
        .body(Empty::<Bytes>::new())
        .unwrap();
    let resp = sender.send_request(req).await.unwrap();
    assert_eq!(
        (resp.version(), resp.status()),
        (hyper::Version::HTTP_2, StatusCode::OK)
    );
    assert_eq!(
        resp.into_body().collect().await.unwrap().to_bytes(),
        "hello"
    );
    let got = rb.requests().join("").to_ascii_lowercase();
    assert!(got.starts_with("get /p?q=1 http/1.1\r\n"), "{got}");
    for want in [
        "host: tls.test",
        "x-forwarded-proto: https",
        "cookie: a=1; b=2",
    ] {
        assert!(got.contains(want), "{want} missing: {got}");
    }

    let alias = Request::get("https://www.tls.test/x")
        .body(Empty::<Bytes>::new())
        .unwrap();
    let resp = sender.send_request(alias).await.unwrap();
    assert_eq!(resp.status(), 301);
    assert_eq!(resp.headers()["location"], "https://tls.test/x");
}

/// HTTPS with HTTP/1.1: the proxy answers 413 from the declared length while the client is
/// still uploading. The close must let the upload finish (the proxy reads and discards it)
/// instead of resetting the connection under the answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_client_still_uploading_after_a_413_gets_the_answer_and_a_clean_close() {
    let b = test_backend("b0").await;
    let routes = Routes::new();
    route(
        &routes,
        "web",
        "tls.test",
        &[],
        vec![ready_backend(0, b.addr)],
    );
    let config = ProxyConfig {
        max_body_bytes: Some(1 << 20),
        ..ProxyConfig::default()
    };
    let proxy = start_https_proxy(config, routes, "tls.test", b"http/1.1").await;
    let tls = proxy.connect("tls.test").await;
    // The proxy's close_notify ends the read; a reset would fail it.
    let ended = wire::upload_reading_the_answer(tls, "tls.test", 16 << 20).await;
    ended.assert_clean(413);
}

/// WebSocket over HTTP/2 (RFC 8441): the proxy advertises extended CONNECT, turns the
/// request into the backend's HTTP/1.1 handshake, answers the stream with 200 and tunnels it.
/// The tunnel keeps its connection from counting as idle. A CONNECT without `:protocol` is
/// still refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_over_http2_is_tunnelled_to_an_http11_backend() {
    let b = test_backend("b0").await;
    let routes = Routes::new();
    route(
        &routes,
        "web",
        "ws.test",
        &[],
        vec![ready_backend(0, b.addr)],
    );
    let idle_timeout = Duration::from_millis(300);
    let config = ProxyConfig {
        idle_timeout,
        ..ProxyConfig::default()
    };
    let proxy = start_https_proxy(config, routes, "ws.test", b"h2").await;
    let mut sender = proxy.http2("ws.test").await;
    // One exchange first: the proxy's SETTINGS (with extended CONNECT) have arrived after it.
    let plain = Request::get("https://ws.test/").body(Empty::new()).unwrap();
    assert_eq!(sender.send_request(plain).await.unwrap().status(), 200);

    let mut open = Request::connect("https://ws.test/ws")
        .header("sec-websocket-version", "13")
        .body(Empty::new())
        .unwrap();
    open.extensions_mut()
        .insert(hyper::ext::Protocol::from_static("websocket"));
    let resp = sender.send_request(open).await.unwrap();
    assert_eq!(resp.status(), 200, "{resp:?}");
    assert!(
        !resp.headers().contains_key("sec-websocket-accept"),
        "{resp:?}"
    );
    let stream = TokioIo::new(hyper::upgrade::on(resp).await.unwrap());
    let mut ws = tokio_tungstenite::WebSocketStream::from_raw_socket(
        stream,
        tungstenite::protocol::Role::Client,
        None,
    )
    .await;
    for i in 0..5 {
        if i == 4 {
            // Longer than the idle timeout: the tunnel is not an idle connection.
            tokio::time::sleep(idle_timeout * 4).await;
        }
        ws.send(Message::text(format!("ping {i}"))).await.unwrap();
        assert_eq!(
            ws.next().await.unwrap().unwrap(),
            Message::text(format!("ping {i}"))
        );
    }

    let tunnel = Request::connect("ws.test:443").body(Empty::new()).unwrap();
    assert_eq!(sender.send_request(tunnel).await.unwrap().status(), 405);
}

// ---------------------------------------------------------------- upstream keep-alive race

/// A keep-alive backend that answers the first request on each connection and silently drops
/// the connection when a second one arrives (an app server closing an idle connection just as
/// the proxy reuses it).
async fn one_shot_keepalive_backend() -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let conns = Arc::new(AtomicUsize::new(0));
    let c = Arc::clone(&conns);
    tokio::spawn(async move {
        loop {
            let (mut stream, _) = listener.accept().await.unwrap();
            c.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let mut buf = vec![0u8; 8192];
                let mut got = Vec::new();
                while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => got.extend_from_slice(&buf[..n]),
                    }
                }
                stream
                    .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                    .await
                    .unwrap();
                let _ = stream.read(&mut buf).await;
                // Dropped without answering the second request.
            });
        }
    });
    (addr, conns)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotent_request_on_stale_pooled_connection_is_resent() {
    let (addr, conns) = one_shot_keepalive_backend().await;
    let config = ProxyConfig {
        upstream_idle_timeout: Duration::from_secs(30),
        ..ProxyConfig::default()
    };
    let proxy = start_proxy(config, None).await;
    route(
        &proxy.routes,
        "web",
        "stale.test",
        &[],
        vec![ready_backend(0, addr)],
    );
    assert_eq!(get(proxy.addr, "stale.test", "/").await.status(), 200);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let r = get(proxy.addr, "stale.test", "/again").await;
    assert_eq!((r.status().as_u16(), r.body().as_ref()), (200, &b"ok"[..]));
    assert_eq!(conns.load(Ordering::SeqCst), 2);
}

/// HTTPS on HTTP/1.1 is served by hyper throughout: a head with Content-Length beside
/// Transfer-Encoding is still refused (400, closed), never forwarded as hyper alone would.
/// HTTPS HTTP/1.1 (ALPN http/1.1, or no ALPN at all) starts on the proxy's own HTTP/1 server:
/// keep-alive requests with length and chunked answers, then a request with a body hands the
/// connection to hyper, which serves the rest of it; X-Forwarded-Proto says https throughout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_http11_keep_alive_then_hand_off_with_and_without_alpn() {
    for alpn in [&b"http/1.1"[..], &b""[..]] {
        let b = test_backend("b0").await;
        let routes = Routes::new();
        route(
            &routes,
            "web",
            "tls.test",
            &[],
            vec![ready_backend(0, b.addr)],
        );
        let proxy = start_https_proxy(ProxyConfig::default(), routes, "tls.test", alpn).await;
        let mut tls = proxy.connect("tls.test").await;
        assert_eq!(
            tls.get_ref().1.alpn_protocol(),
            (!alpn.is_empty()).then_some(alpn)
        );
        tls.write_all(
            b"GET /length HTTP/1.1\r\nHost: tls.test\r\n\r\n\
              GET /chunked HTTP/1.1\r\nHost: tls.test\r\n\r\n\
              POST /echo HTTP/1.1\r\nHost: tls.test\r\nContent-Length: 5\r\n\r\nhello\
              GET /length HTTP/1.1\r\nHost: tls.test\r\nConnection: close\r\n\r\n",
        )
        .await
        .unwrap();
        let mut answer = Vec::new();
        tokio::time::timeout(Duration::from_secs(10), tls.read_to_end(&mut answer))
            .await
            .expect("the proxy closes after the last request")
            .expect("a clean TLS close");
        let answer = String::from_utf8_lossy(&answer);
        let statuses: Vec<&str> = answer
            .match_indices("HTTP/1.1 ")
            .map(|(i, _)| &answer[i + 9..i + 12])
            .collect();
        assert_eq!(statuses, ["200", "200", "200", "200"], "{answer}");
        let first = answer.find("0123456789").expect("length body");
        let chunked = answer.find("6\r\nhello \r\n").expect("chunked body");
        let echoed = answer[chunked..]
            .find("\r\n\r\nhello")
            .expect("echoed body");
        let last = answer.rfind("0123456789").expect("last length body");
        assert!(first < chunked && chunked + echoed < last, "{answer}");
        assert_eq!(b.hits.load(Ordering::SeqCst), 4);

        let rb = raw_backend(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok").await;
        let routes = Routes::new();
        route(
            &routes,
            "web",
            "tls.test",
            &[],
            vec![ready_backend(0, rb.addr)],
        );
        let proxy = start_https_proxy(ProxyConfig::default(), routes, "tls.test", alpn).await;
        let mut tls = proxy.connect("tls.test").await;
        tls.write_all(b"GET /p HTTP/1.1\r\nHost: tls.test\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut answer = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(5), tls.read_to_end(&mut answer)).await;
        assert!(answer.starts_with(b"HTTP/1.1 200"), "{answer:?}");
        let got = rb.requests().join("").to_ascii_lowercase();
        assert!(got.contains("x-forwarded-proto: https"), "{got}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_length_and_chunked_together_are_refused() {
    let b = test_backend("b0").await;
    let routes = Routes::new();
    route(
        &routes,
        "web",
        "tls.test",
        &[],
        vec![ready_backend(0, b.addr)],
    );
    let proxy = start_https_proxy(ProxyConfig::default(), routes, "tls.test", b"http/1.1").await;
    let mut tls = proxy.connect("tls.test").await;
    tls.write_all(
        b"GET /ok HTTP/1.1\r\nHost: tls.test\r\n\r\n\
          POST /x HTTP/1.1\r\nHost: tls.test\r\nContent-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    )
    .await
    .unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), tls.read_to_end(&mut answer)).await;
    let answer = String::from_utf8_lossy(&answer);
    let statuses: Vec<&str> = answer
        .match_indices("HTTP/1.1 ")
        .map(|(i, _)| &answer[i + 9..i + 12])
        .collect();
    assert_eq!(statuses, ["200", "400"], "{answer}");
    assert_eq!(b.hits.load(Ordering::SeqCst), 1);
}
