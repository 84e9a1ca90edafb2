//! Listeners and client connections: accept loop with the connection limit, TLS handshake,
//! plain HTTP/1 through the proxy's own server (`http1`) with hyper behind it for what that
//! does not take, hyper's auto (HTTP/1.1 + HTTP/2) connection for HTTPS with header timeout
//! and size limit, the idle keep-alive watchdog and graceful shutdown.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use hyper::body::Incoming;
use hyper::server::conn::http1 as hyper_http1;
use hyper::service::service_fn;
use hyper::Request;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{oneshot, Notify, OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;

use super::deadline;
use super::gate;
use super::guard::HeadGuard;
use super::headers::ClientInfo;
use super::http1;
use super::linger::{self, Reclaim, Socket};
use super::routes::Routes;
use super::tls_hooks::TlsHooks;
use super::ProxyConfig;
use crate::access_log::AccessLog;
use crate::metrics::ProxyMetrics;

/// hyper refuses read buffers smaller than this.
const MIN_HEADER_BUFFER: usize = 8192;

/// The reverse proxy. Cheap to clone; every listener shares routes, limits and hooks.
#[derive(Clone)]
pub struct Proxy {
    pub(crate) shared: Arc<Shared>,
}

pub(crate) struct Shared {
    pub(crate) config: ProxyConfig,
    pub(crate) routes: Routes,
    pub(crate) hooks: Option<Arc<dyn TlsHooks>>,
    /// HTTPS: HTTP/1.1 or HTTP/2 as negotiated by ALPN.
    builder: auto::Builder<TokioExecutor>,
    /// Plain HTTP (:80) is HTTP/1 only: no protocol sniffing in front of every read.
    http1: hyper_http1::Builder,
    connections: Arc<Semaphore>,
    metrics: Arc<ProxyMetrics>,
    pub(crate) access_log: Option<Arc<AccessLog>>,
}

impl std::fmt::Debug for Proxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Proxy")
            .field("config", &self.shared.config)
            .finish_non_exhaustive()
    }
}

impl Proxy {
    /// A proxy serving `routes`. `hooks` (from the tls module) answers ACME challenges and tells
    /// which hosts have a certificate so port 80 redirects them to HTTPS; `None` serves plain HTTP.
    pub fn new(config: ProxyConfig, routes: Routes, hooks: Option<Arc<dyn TlsHooks>>) -> Self {
        Self::new_observed(config, routes, hooks, Arc::default(), None)
    }

    /// [`Proxy::new`] counting connections and TLS handshakes into `metrics`, and writing
    /// one line per request to `access_log` while it is enabled.
    pub fn new_observed(
        config: ProxyConfig,
        routes: Routes,
        hooks: Option<Arc<dyn TlsHooks>>,
        metrics: Arc<ProxyMetrics>,
        access_log: Option<Arc<AccessLog>>,
    ) -> Self {
        let builder = connection_builder(&config);
        let http1 = http1_builder(&config);
        let connections = Arc::new(Semaphore::new(config.max_connections.max(1)));
        Proxy {
            shared: Arc::new(Shared {
                config,
                routes,
                hooks,
                builder,
                http1,
                connections,
                metrics,
                access_log,
            }),
        }
    }

    /// The route table this proxy reads.
    pub fn routes(&self) -> &Routes {
        &self.shared.routes
    }

    /// Serve plain HTTP (port 80: ACME challenges, HTTPS redirects, proxying) on `listener`
    /// until `shutdown` resolves; then stop accepting and give open connections up to
    /// `drain_timeout` to finish. Accept errors (e.g. out of file descriptors) are logged and
    /// retried, never fatal.
    pub async fn serve_http(
        &self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send,
    ) {
        self.accept_loop(listener, None, shutdown).await;
    }

    /// Serve HTTPS on `listener` with `acceptor` (built by the tls module: SNI resolver, ALPN
    /// `h2` + `http/1.1`). HTTP/2 clients are proxied to the HTTP/1.1 backends. Shutdown as
    /// [`Proxy::serve_http`]. A TLS handshake must finish within `header_read_timeout`.
    pub async fn serve_https(
        &self,
        listener: TcpListener,
        acceptor: tokio_rustls::TlsAcceptor,
        shutdown: impl Future<Output = ()> + Send,
    ) {
        self.accept_loop(listener, Some(acceptor), shutdown).await;
    }

    async fn accept_loop(
        &self,
        listener: TcpListener,
        tls: Option<tokio_rustls::TlsAcceptor>,
        shutdown: impl Future<Output = ()> + Send,
    ) {
        let local = listener.local_addr().ok();
        let stop = CancellationToken::new();
        let open = Arc::new(OpenConnections::default());
        tokio::pin!(shutdown);
        tracing::info!(
            addr = local.map(tracing::field::display),
            https = tls.is_some(),
            "proxy listening"
        );
        loop {
            if self.shared.connections.available_permits() == 0 {
                self.shared.metrics.limited();
            }
            let permit = tokio::select! {
                _ = &mut shutdown => break,
                p = Arc::clone(&self.shared.connections).acquire_owned() => match p {
                    Ok(p) => p,
                    Err(_) => break,
                },
            };
            let (stream, peer) = tokio::select! {
                _ = &mut shutdown => break,
                accepted = listener.accept() => match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        self.shared.metrics.accept_error();
                        tracing::warn!(addr = local.map(tracing::field::display), error = %e, "accept failed; retrying");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
            };
            let conn = ClientConn {
                _counted: Counted::new(&self.shared.metrics),
                shared: Arc::clone(&self.shared),
                peer,
                // A child token of its own: waiting on a shared one locks the shared token's
                // mutex on every wake of every connection, which contends across threads.
                stop: stop.child_token(),
                _permit: permit,
                _open: open.enter(),
            };
            let tls = tls.clone();
            tokio::spawn(async move {
                match tls {
                    None => conn.serve_plain(stream).await,
                    Some(acceptor) => conn.serve_tls(stream, acceptor).await,
                }
            });
        }
        drop(listener);
        stop.cancel();
        let drained = open.wait_zero(self.shared.config.drain_timeout).await;
        tracing::info!(
            addr = local.map(tracing::field::display),
            drained,
            "proxy listener stopped"
        );
    }
}

/// No hyper timer on plain HTTP/1: `ClientConn::drive`'s quiet watch enforces the header
/// timeout, saving a timer re-arm per request.
fn http1_builder(config: &ProxyConfig) -> hyper_http1::Builder {
    let mut builder = hyper_http1::Builder::new();
    builder
        .max_buf_size(config.max_header_bytes.max(MIN_HEADER_BUFFER))
        .keep_alive(true);
    builder
}

fn connection_builder(config: &ProxyConfig) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(config.header_read_timeout)
        .max_buf_size(config.max_header_bytes.max(MIN_HEADER_BUFFER))
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(config.max_header_bytes).unwrap_or(u32::MAX))
        // WebSocket over HTTP/2 (RFC 8441), so browsers need no extra HTTP/1.1 connection.
        .enable_connect_protocol()
        .keep_alive_interval(Some(Duration::from_secs(30)))
        .keep_alive_timeout(Duration::from_secs(20));
    builder
}

/// One accepted client connection.
struct ClientConn {
    shared: Arc<Shared>,
    peer: SocketAddr,
    stop: CancellationToken,
    _permit: OwnedSemaphorePermit,
    _open: OpenGuard,
    _counted: Counted,
}

/// Counts a client connection as open in the metrics while it lives.
struct Counted(Arc<ProxyMetrics>);

impl Counted {
    fn new(metrics: &Arc<ProxyMetrics>) -> Self {
        metrics.accepted();
        Counted(Arc::clone(metrics))
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.0.closed();
    }
}

impl ClientConn {
    /// Plain HTTP/1: the proxy's own server (`http1`) until a request needs hyper, which then
    /// serves the rest of the connection.
    async fn serve_plain(self, stream: TcpStream) {
        let _ = stream.set_nodelay(true);
        let config = &self.shared.config;
        let quiet_limit = config.header_read_timeout.min(config.idle_timeout);
        let activity = Arc::new(ConnActivity::default());
        let Some(io) = self.serve_own_http1(stream, false, &activity).await else {
            return;
        };
        let watched = HeadGuard::new(
            io,
            self.shared.config.max_header_bytes.max(MIN_HEADER_BUFFER),
            true,
        );
        let (io, back) = Reclaim::new(watched);
        let service = self.service(false, &activity);
        let conn = self
            .shared
            .http1
            .serve_connection(TokioIo::new(io), service)
            .with_upgrades();
        self.drive(conn, &activity, quiet_limit, |c| c.graceful_shutdown())
            .await;
        close_reclaimed(back).await;
    }

    /// HTTP/1 on `stream` through the proxy's own server (`http1`) until the connection ends
    /// (closed here, with lingering when the client may still send) or a request needs hyper:
    /// then the stream with the bytes read so far in front.
    async fn serve_own_http1<S>(
        &self,
        stream: S,
        https: bool,
        activity: &Arc<ConnActivity>,
    ) -> Option<http1::Rewind<S>>
    where
        S: AsyncRead + AsyncWrite + Socket + Unpin,
    {
        // Without a request in progress an HTTP/1 connection is either idle or still sending
        // its head: both end at the header timeout (slowloris), and at the idle timeout.
        let config = &self.shared.config;
        let quiet_limit = config.header_read_timeout.min(config.idle_timeout);
        let own = http1::serve(
            Arc::clone(&self.shared),
            self.client_info(https),
            Arc::clone(activity),
            stream,
        );
        let ended = self
            .drive(own, activity, quiet_limit, |_| activity.close())
            .await;
        match ended {
            Some(http1::Ended::Handoff(io)) => Some(io),
            Some(http1::Ended::Linger(mut stream)) => {
                if https {
                    // close_notify before the TCP half-close, as hyper's shutdown does.
                    let _ = tokio::io::AsyncWriteExt::shutdown(&mut stream).await;
                }
                linger::close(stream.into_tcp()).await;
                None
            }
            Some(http1::Ended::Closed) | None => None,
        }
    }

    async fn serve_tls(self, stream: TcpStream, acceptor: tokio_rustls::TlsAcceptor) {
        let _ = stream.set_nodelay(true);
        let timeout = self.shared.config.header_read_timeout;
        let handshake = tokio::time::timeout(timeout, acceptor.accept(stream)).await;
        self.shared
            .metrics
            .tls_handshake(matches!(handshake, Ok(Ok(_))));
        match handshake {
            Ok(Ok(tls)) => {
                let limit = self.shared.config.max_header_bytes.max(MIN_HEADER_BUFFER);
                if tls.get_ref().1.alpn_protocol() == Some(b"h2") {
                    // HTTP/2 frames its own messages: no HTTP/1 framing check.
                    return self.serve(HeadGuard::new(tls, limit, false), true).await;
                }
                // HTTP/1.1 (or no ALPN) starts on the proxy's own server like plain HTTP; what
                // it hands off gets hyper's auto connection (which also recognises an HTTP/2
                // preface sent without ALPN) behind the same framing check as plain hand-offs.
                let activity = Arc::new(ConnActivity::default());
                let Some(io) = self.serve_own_http1(tls, true, &activity).await else {
                    return;
                };
                self.serve(HeadGuard::new(io, limit, true), true).await
            }
            Ok(Err(e)) => tracing::debug!(peer = %self.peer, error = %e, "TLS handshake failed"),
            Err(_) => tracing::debug!(peer = %self.peer, "TLS handshake timed out"),
        }
    }

    async fn serve<I>(self, io: I, https: bool)
    where
        I: AsyncRead + AsyncWrite + Socket + Unpin + Send + 'static,
    {
        let activity = Arc::new(ConnActivity::default());
        let service = self.service(https, &activity);
        let shared = Arc::clone(&self.shared);
        let (io, back) = Reclaim::new(io);
        let conn = shared
            .builder
            .serve_connection_with_upgrades(TokioIo::new(io), service);
        let quiet_limit = self.shared.config.idle_timeout;
        self.drive(conn, &activity, quiet_limit, |c| c.graceful_shutdown())
            .await;
        close_reclaimed(back).await;
    }

    fn client_info(&self, https: bool) -> ClientInfo {
        let peer_ip = self.peer.ip().to_canonical();
        ClientInfo::new(peer_ip, self.shared.config.is_trusted(peer_ip), https)
    }

    /// The per-connection hyper service: every request goes through `Shared::respond`. The
    /// type is spelled out (instead of boxing the future) to keep the request path
    /// allocation-free.
    #[allow(clippy::type_complexity)]
    fn service(
        &self,
        https: bool,
        activity: &Arc<ConnActivity>,
    ) -> impl hyper::service::Service<
        Request<Incoming>,
        Response = hyper::Response<super::body::ProxyBody>,
        Error = Infallible,
        Future = impl Future<Output = Result<hyper::Response<super::body::ProxyBody>, Infallible>>
                     + Send,
    > + Clone
           + Send
           + 'static {
        let client = self.client_info(https);
        let shared = Arc::clone(&self.shared);
        let activity = Arc::clone(activity);
        service_fn(move |req: Request<Incoming>| {
            let active = ActiveRequest::start(&activity);
            shared.respond(req, &client, active)
        })
    }

    /// Runs a client connection until it ends (giving its output), the listener stops, or it
    /// had no request in progress for `quiet_limit`; the last two shut it down gracefully.
    async fn drive<C, T, E>(
        &self,
        conn: C,
        activity: &ConnActivity,
        quiet_limit: Duration,
        shutdown: impl FnOnce(Pin<&mut C>),
    ) -> Option<T>
    where
        C: Future<Output = Result<T, E>>,
        E: std::fmt::Display,
    {
        tokio::pin!(conn);
        let tick = (quiet_limit / QUIET_SAMPLES).min(deadline::tick_for(
            self.shared.config.backend_response_timeout,
        ));
        // Gated: polled only when their own timer or token fired, not on every wake-up of
        // the connection (measured with bench/proxy.sh: see `gate`).
        let quiet = gate::gated(activity.watch(quiet_limit, tick));
        let stopped = gate::gated(self.stop.cancelled());
        tokio::pin!(quiet, stopped);
        let result = tokio::select! {
            biased;
            r = conn.as_mut() => r,
            _ = &mut stopped => {
                shutdown(conn.as_mut());
                conn.await
            }
            _ = &mut quiet => {
                tracing::debug!(peer = %self.peer, ?quiet_limit, "closing connection without a request in progress");
                // Graceful: a response still being flushed to a slow reader may finish.
                shutdown(conn.as_mut());
                match tokio::time::timeout(quiet_limit, conn).await {
                    Ok(r) => r,
                    Err(_) => return None,
                }
            }
        };
        match result {
            Ok(out) => Some(out),
            Err(e) => {
                tracing::debug!(peer = %self.peer, error = %e, "client connection ended with error");
                None
            }
        }
    }
}

/// Closes a connection hyper has given back (on dropping it) with lingering. One that was
/// upgraded is not given back: the upgrade owns it and closes it.
async fn close_reclaimed<I: Socket>(mut back: oneshot::Receiver<I>) {
    if let Ok(io) = back.try_recv() {
        linger::close(io.into_tcp()).await;
    }
}

/// Per-connection request activity, watched by a coarse timer rather than a clock read and a
/// wake-up per request.
#[derive(Debug, Default)]
pub(crate) struct ConnActivity {
    active: AtomicUsize,
    started: AtomicU64,
    /// Set by shutdown and the quiet watch: the proxy's own HTTP/1 server finishes the
    /// request in progress, if any, and closes.
    closing: AtomicBool,
}

/// The watch samples at least this many times per quiet limit; a connection closes after one
/// more quiet sample, so between 1 and 1.25 times the limit after its last request ended.
const QUIET_SAMPLES: u32 = 4;

impl ConnActivity {
    pub(crate) fn is_closing(&self) -> bool {
        self.closing.load(Ordering::Acquire)
    }

    fn close(&self) {
        self.closing.store(true, Ordering::Release);
    }

    /// Wakes the connection's task every `tick` (which polls its in-flight HTTP/1 request, so
    /// `deadline::polled_timeout` fires) and resolves once no request was in progress or
    /// started for `limit` (up to `limit` + `tick`).
    pub(crate) async fn watch(&self, limit: Duration, tick: Duration) {
        let tick = tick.max(Duration::from_millis(1));
        let needed = u32::try_from(limit.as_nanos().div_ceil(tick.as_nanos())).unwrap_or(u32::MAX);
        let mut last_started = self.started.load(Ordering::Acquire);
        let mut quiet_samples: u32 = 0;
        loop {
            tokio::time::sleep(tick).await;
            let started = self.started.load(Ordering::Acquire);
            if self.active.load(Ordering::Acquire) == 0 && started == last_started {
                quiet_samples += 1;
                if quiet_samples > needed {
                    return;
                }
            } else {
                quiet_samples = 0;
            }
            last_started = started;
        }
    }
}

/// Marks a request as in progress on its client connection until dropped (after the body).
#[derive(Debug)]
pub(crate) struct ActiveRequest(Arc<ConnActivity>);

impl ActiveRequest {
    pub(crate) fn start(activity: &Arc<ConnActivity>) -> Self {
        activity.active.fetch_add(1, Ordering::AcqRel);
        activity.started.fetch_add(1, Ordering::AcqRel);
        ActiveRequest(Arc::clone(activity))
    }
}

impl Drop for ActiveRequest {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Counts a listener's open connections so shutdown can wait for them.
#[derive(Debug, Default)]
struct OpenConnections {
    count: AtomicUsize,
    zero: Notify,
}

impl OpenConnections {
    fn enter(self: &Arc<Self>) -> OpenGuard {
        self.count.fetch_add(1, Ordering::AcqRel);
        OpenGuard(Arc::clone(self))
    }

    /// True when every connection closed within `timeout`.
    async fn wait_zero(&self, timeout: Duration) -> bool {
        let wait = async {
            loop {
                let zero = self.zero.notified();
                if self.count.load(Ordering::Acquire) == 0 {
                    return;
                }
                zero.await;
            }
        };
        tokio::time::timeout(timeout, wait).await.is_ok()
    }
}

#[derive(Debug)]
struct OpenGuard(Arc<OpenConnections>);

impl Drop for OpenGuard {
    fn drop(&mut self) {
        if self.0.count.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.zero.notify_waiters();
        }
    }
}
