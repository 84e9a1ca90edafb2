//! One client request: framing checks, ACME challenge, host routing (404 / alias 301 / HTTPS
//! redirect / 503), backend choice with one connect retry, forwarding with the response
//! timeout, upgrade tunnels, and the access log line.
//!
//! Request phases: `respond` routes synchronously and answers the proxy's own pages at once;
//! only a request bound for a backend becomes a future (`forward`), a single flat state
//! machine: cold paths (new connections, resends) are boxed so the hot one stays small,
//! since every byte of it is copied when hyper stores it.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use futures_util::future::Either;
use http::{header, HeaderValue, Method, Request, Response, StatusCode, Uri, Version};
use hyper::body::Body as _;
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio::io::AsyncWriteExt;

use super::backend::{Backend, InFlight};
use super::body::{BodyError, ClientBody, ProxyBody};
use super::deadline::{self, TimedOut};
use super::headers::{self, ClientInfo};
use super::pages;
use super::routes::{normalize_host, HostMatch, RoutedApp};
use super::server::{ActiveRequest, Shared};
use super::upstream::{
    self, ConnectError, Exchanged, Outgoing, PartsRequest, SendFailure, UpstreamConn, UpstreamError,
};
use crate::access_log::{AccessLog, Entry};

pub(crate) const ACME_PREFIX: &str = "/.well-known/acme-challenge/";
/// Other replicas a request the failed replica cannot have acted on is sent to, in turn.
const OTHER_REPLICA_TRIES: usize = 2;

/// What routing decided for a request.
#[allow(clippy::large_enum_variant)] // unpacked at once; a Box would cost an allocation
enum Routed {
    /// The proxy answers itself (error page, redirect, ACME challenge).
    Local(Response<ProxyBody>),
    /// The request goes to one of the app's backends.
    Forward(Forward),
}

/// A request bound for a backend, already rewritten for it.
pub(crate) struct Forward {
    app: Arc<RoutedApp>,
    /// HTTP/2 streams run in tasks of their own, which no connection watch wakes.
    own_task: bool,
    request: Outgoing,
    client_upgrade: Option<ClientUpgrade>,
    /// The connection closes after the answer unless it switches protocols (see `begin`).
    unwatched: bool,
}

impl Forward {
    /// A bodiless HTTP/1 request whose backend head is already written (`proxy::simple`).
    pub(crate) fn encoded(app: Arc<RoutedApp>, method: Method, head: Bytes) -> Self {
        Self {
            app,
            own_task: false,
            request: Outgoing::Encoded { method, head },
            client_upgrade: None,
            unwatched: false,
        }
    }
}

/// The client's side of a protocol switch: its connection, once the response is sent.
struct ClientUpgrade {
    connection: OnUpgrade,
    /// RFC 8441 (WebSocket over an HTTP/2 stream): the switch is answered 200, not 101.
    over_http2: bool,
}

/// The backend chosen for a request.
enum Picked {
    /// With an idle pooled connection.
    Pooled(Acquired),
    /// Without one: a connection must be opened.
    Connect(Arc<Backend>),
    /// No backend of the app is ready.
    NoReplica,
}

/// An upstream connection ready for the request, counted in flight on its backend.
struct Acquired {
    in_flight: InFlight,
    conn: UpstreamConn,
    pooled: bool,
}

/// The outcome of sending a request: response head, failure, or response timeout.
type Attempt = Result<Result<Exchanged, SendFailure>, TimedOut>;

/// The fields of the access log line, captured only while the access log is enabled. A
/// backend's response carries it in its body and writes it when the body ended (or the
/// client went away), with the bytes actually sent and the total time.
pub(crate) struct AccessLine {
    log: Arc<AccessLog>,
    started: Instant,
    method: Method,
    uri: Uri,
    host: Option<HeaderValue>,
    status: u16,
    app: Option<Arc<RoutedApp>>,
    upstream: Option<std::net::SocketAddr>,
}

impl std::fmt::Debug for AccessLine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccessLine")
            .field("status", &self.status)
            .finish_non_exhaustive()
    }
}

impl AccessLine {
    /// Boxed: the request's future carries it, and a pointer keeps that small.
    fn begin<B>(log: Option<&Arc<AccessLog>>, req: &Request<B>) -> Option<Box<Self>> {
        let log = log.filter(|log| log.enabled())?;
        Some(Box::new(Self {
            log: Arc::clone(log),
            started: Instant::now(),
            method: req.method().clone(),
            uri: req.uri().clone(),
            host: headers::request_host_value(req),
            status: 0,
            app: None,
            upstream: None,
        }))
    }

    /// The line of a request `proxy::simple` took: its target and Host as the client sent
    /// them. `None` when the log is off, or when they are not a valid URI and header value
    /// (the request then takes the general path, which logs it).
    pub(crate) fn begin_simple(
        log: Option<&Arc<AccessLog>>,
        method: Method,
        target: Bytes,
        host: Bytes,
    ) -> Result<Option<Box<Self>>, ()> {
        let Some(log) = log.filter(|log| log.enabled()) else {
            return Ok(None);
        };
        let uri = Uri::from_maybe_shared(target).map_err(drop)?;
        let host = HeaderValue::from_maybe_shared(host).map_err(drop)?;
        Ok(Some(Box::new(Self {
            log: Arc::clone(log),
            started: Instant::now(),
            method,
            uri,
            host: Some(host),
            status: 0,
            app: None,
            upstream: None,
        })))
    }

    /// Writes the line: `bytes` of body sent, the time since the request arrived.
    pub(crate) fn write(self, bytes: Option<u64>) {
        self.log.record(&Entry {
            app: self.app.as_deref().map(RoutedApp::name),
            host: self.host.as_ref().and_then(|h| h.to_str().ok()),
            method: self.method.as_str(),
            path: self.uri.path(),
            status: self.status,
            duration: self.started.elapsed(),
            upstream: self.upstream,
            bytes,
        });
    }
}

/// A request after routing: answered by the proxy itself, or to be forwarded (by
/// [`Shared::forward`]).
#[allow(clippy::large_enum_variant)] // unpacked at once; a Box would cost an allocation
pub(crate) enum Begun {
    Answered(Response<ProxyBody>),
    Forward(Forward, Option<Box<AccessLine>>),
}

impl Shared {
    /// Answer one client request: the proxy's own pages at once, everything else from a backend.
    pub(crate) fn respond<B: ClientBody>(
        self: &Arc<Self>,
        req: Request<B>,
        client: &ClientInfo,
        active: ActiveRequest,
    ) -> impl Future<Output = Result<Response<ProxyBody>, Infallible>> + Send + 'static {
        match self.begin(req, client) {
            Begun::Answered(resp) => Either::Left(std::future::ready(Ok(resp))),
            Begun::Forward(fwd, log) => Either::Right(Arc::clone(self).forward(fwd, active, log)),
        }
    }

    /// The synchronous half of [`Shared::respond`], for a server that awaits the forward in
    /// its own task (`http1`): the forward's future is then moved once, into that task,
    /// rather than through the wrappers `respond` returns (a few hundred bytes each time).
    pub(crate) fn begin<B: ClientBody>(&self, req: Request<B>, client: &ClientInfo) -> Begun {
        let log = AccessLine::begin(self.access_log.as_ref(), &req);
        // `guard` stops following an HTTP/1 stream at a head with Upgrade, but hyper goes on
        // reading requests when no 101 answers it: such a connection closes after the answer.
        let unwatched =
            req.version() < Version::HTTP_2 && req.headers().contains_key(header::UPGRADE);
        match self.route(req, client) {
            Routed::Local(mut resp) => {
                log_response(log, &mut resp, None, None);
                close_if_unwatched(&mut resp, unwatched);
                Begun::Answered(resp)
            }
            Routed::Forward(mut fwd) => {
                fwd.unwatched = unwatched;
                Begun::Forward(fwd, log)
            }
        }
    }

    fn route<B: ClientBody>(&self, mut req: Request<B>, client: &ClientInfo) -> Routed {
        if let Err(e) = headers::check_framing(&req) {
            let page = pages::error_page(StatusCode::BAD_REQUEST, &e.to_string());
            return Routed::Local(close_after(page));
        }
        let websocket_over_http2 = headers::websocket_over_http2(&req);
        if req.method() == Method::CONNECT && !websocket_over_http2 {
            // A reverse proxy is no forward proxy: never open arbitrary tunnels.
            let page =
                pages::error_page(StatusCode::METHOD_NOT_ALLOWED, "CONNECT is not supported.");
            return Routed::Local(close_after(page));
        }
        if req.uri() == "*" && req.method() != Method::OPTIONS {
            // RFC 9112 §3.2.4: `*` is OPTIONS' target only; a backend would not know the rest.
            let page = pages::error_page(StatusCode::BAD_REQUEST, "Only OPTIONS may target `*`.");
            return Routed::Local(page);
        }
        if req.uri().scheme().is_none() && req.uri().authority().is_some() {
            // Authority form (RFC 9112 §3.2.3) is CONNECT's only; it would reach the app as `/`.
            let page =
                pages::error_page(StatusCode::BAD_REQUEST, "The request target has no path.");
            return Routed::Local(page);
        }
        if !client.https {
            if let Some(token) = req.uri().path().strip_prefix(ACME_PREFIX) {
                return Routed::Local(self.acme_challenge(token));
            }
        }
        let Some(host) = headers::request_host_value(&req) else {
            let page = pages::error_page(StatusCode::NOT_FOUND, "The request names no host.");
            return Routed::Local(page);
        };
        let Ok(host_str) = host.to_str() else {
            let page = pages::error_page(StatusCode::BAD_REQUEST, "The Host header is not valid.");
            return Routed::Local(page);
        };
        let name = normalize_host(host_str);
        let app = match self.routes.snapshot().lookup_normalized(&name) {
            None => {
                let msg = format!("No app is served on {name}.");
                return Routed::Local(pages::error_page(StatusCode::NOT_FOUND, &msg));
            }
            Some(HostMatch::Alias(canonical)) => {
                let https = client.https || self.has_certificate(canonical);
                return Routed::Local(pages::redirect(&self.location(https, canonical, &req)));
            }
            Some(HostMatch::App(app)) => Arc::clone(app),
        };
        // Only with TLS hooks can a host have a certificate to redirect to.
        if !client.https && self.hooks.is_some() && self.has_certificate(&name) {
            return Routed::Local(pages::redirect(&self.location(true, &name, &req)));
        }
        if let Some(limit) = self.config.max_body_bytes {
            if declared_length(&req).is_some_and(|len| len > limit) {
                let msg = format!("The request body is larger than {limit} bytes.");
                let page = pages::error_page(StatusCode::PAYLOAD_TOO_LARGE, &msg);
                return Routed::Local(close_after(page));
            }
        }
        let own_task = req.version() == Version::HTTP_2;
        if websocket_over_http2 {
            headers::websocket_as_http11_handshake(&mut req);
        }
        let upgrade = websocket_over_http2 || headers::upgrade_requested(&req);
        let client_upgrade = upgrade.then(|| ClientUpgrade {
            connection: hyper::upgrade::on(&mut req),
            over_http2: websocket_over_http2,
        });
        let forwarding = headers::prepare_request(&mut req, client, &host, upgrade);
        let (parts, body) = req.into_parts();
        let request = Outgoing::Parts(Box::new(PartsRequest {
            parts,
            forwarding,
            body: body.into_upstream(self.config.max_body_bytes),
        }));
        Routed::Forward(Forward {
            app,
            own_task,
            request,
            client_upgrade,
            unwatched: false,
        })
    }

    fn acme_challenge(&self, token: &str) -> Response<ProxyBody> {
        let answer = self
            .hooks
            .as_ref()
            .and_then(|h| h.challenge_response(token));
        match answer {
            Some(key_auth) => pages::challenge(key_auth),
            None => pages::error_page(StatusCode::NOT_FOUND, "No such ACME challenge."),
        }
    }

    pub(crate) fn has_certificate(&self, host: &str) -> bool {
        self.hooks.as_ref().is_some_and(|h| h.has_certificate(host))
    }

    fn location<B>(&self, https: bool, host: &str, req: &Request<B>) -> String {
        let path = req.uri().path_and_query().map_or("/", |p| p.as_str());
        match (https, self.config.https_port) {
            (true, 443) => format!("https://{host}{path}"),
            (true, port) => format!("https://{host}:{port}{path}"),
            (false, _) => format!("http://{host}{path}"),
        }
    }

    /// Send the request to the app's next ready backend (when connecting fails, once more to
    /// the next one) and turn its answer into the client's response.
    ///
    /// A plain fn returning an `async move` block: an `async fn` would keep a second copy of
    /// every argument in its state.
    #[allow(clippy::manual_async_fn)]
    pub(crate) fn forward(
        self: Arc<Self>,
        mut fwd: Forward,
        active: ActiveRequest,
        log: Option<Box<AccessLine>>,
    ) -> impl Future<Output = Result<Response<ProxyBody>, Infallible>> + Send + 'static {
        async move {
            // One clock read serves the pool's idle check, the latency and the deadline.
            let now = Instant::now();
            // Every outcome leaves through the one exit below, which logs it and closes an
            // unwatched connection.
            let (mut resp, backend) = 'answered: {
                let acquired = match self.pick(&fwd.app, now) {
                    Picked::Pooled(acquired) => acquired,
                    Picked::Connect(backend) => {
                        match Box::pin(self.connect_any(&fwd.app, backend)).await {
                            Ok(acquired) => acquired,
                            Err((page, backend)) => {
                                if let Some(backend) = &backend {
                                    backend.metrics().record_status(page.status().as_u16());
                                }
                                break 'answered (page, backend);
                            }
                        }
                    }
                    Picked::NoReplica => break 'answered (no_replica_page(&fwd.app), None),
                };
                let timeout = self.config.backend_response_timeout;
                let send = upstream::send(acquired.conn, &mut fwd.request);
                let mut attempt = if fwd.own_task {
                    deadline::timed(timeout, send).await
                } else {
                    deadline::polled(now + timeout, send).await
                };
                let mut in_flight = acquired.in_flight;
                if retry_safe(&attempt) {
                    let retried = self.retry(&mut fwd, acquired.pooled, in_flight, attempt);
                    (in_flight, attempt) = Box::pin(retried).await;
                }
                in_flight
                    .backend()
                    .metrics()
                    .add_bytes_in(fwd.request.body_seen());
                let backend = log.is_some().then(|| Arc::clone(in_flight.backend()));
                let client_upgrade = fwd.client_upgrade.take();
                let resp = self.answer(attempt, in_flight, now, client_upgrade, active);
                (resp, backend)
            };
            // In place: a response is a few hundred bytes, and every pass by value copies it.
            log_response(log, &mut resp, Some(&fwd.app), backend.as_deref());
            close_if_unwatched(&mut resp, fwd.unwatched);
            Ok(resp)
        }
    }

    /// A request the backend cannot have acted on (no response byte arrived, idempotent, no
    /// body: `SendFailure::retry_safe`) goes out once more: on a fresh connection to the same
    /// backend when a pooled one failed (the backend closed it while idle), then, if that
    /// fails too or the connection was fresh (the replica died: reset, refused, closed before
    /// the head), on another ready replica. A request with a body, or one that got any
    /// response byte, is never sent twice (nginx's `proxy_next_upstream error` default).
    async fn retry(
        &self,
        fwd: &mut Forward,
        pooled: bool,
        mut in_flight: InFlight,
        mut attempt: Attempt,
    ) -> (InFlight, Attempt) {
        let mut failed = Arc::clone(in_flight.backend());
        if pooled {
            failed.metrics().record_retry();
            attempt = self.resend_fresh(&failed, fwd).await;
            if !retry_safe(&attempt) {
                return (in_flight, attempt);
            }
        }
        // The table may have changed since the request arrived (a restarted replica back in
        // rotation, a dead one out): choose from the current one. A rare path, so one load.
        if let Some(current) = self.routes.load().routed_app(fwd.app.name()) {
            fwd.app = Arc::clone(current);
        }
        // Each further replica once at most, as nginx's proxy_next_upstream tries every server.
        for _ in 0..OTHER_REPLICA_TRIES {
            let Some(next) = fwd.app.pick(Some(&failed)).cloned() else {
                tracing::warn!(
                    app = fwd.app.name(),
                    task_id = failed.id(),
                    "replica failed before answering and no other replica is ready"
                );
                break;
            };
            failed.record_error();
            failed.metrics().record_retry();
            tracing::warn!(
                app = fwd.app.name(),
                task_id = failed.id(),
                replica = failed.replica(),
                next_task_id = next.id(),
                "replica failed before answering; retrying on another one"
            );
            in_flight = next.start_request();
            attempt = match self.checkout(&next, Instant::now()) {
                Some(conn) => self.send_timed(conn, fwd).await,
                None => self.resend_fresh(&next, fwd).await,
            };
            if !retry_safe(&attempt) {
                break;
            }
            failed = next;
        }
        (in_flight, attempt)
    }

    /// Sends the request on `conn` under the response timeout (tokio's timer: a rare path,
    /// whichever task it runs in).
    async fn send_timed(&self, conn: UpstreamConn, fwd: &mut Forward) -> Attempt {
        let send = upstream::send(conn, &mut fwd.request);
        deadline::timed(self.config.backend_response_timeout, send).await
    }

    /// The next ready backend, with a pooled connection when it has one.
    fn pick(&self, app: &RoutedApp, now: Instant) -> Picked {
        let Some(backend) = app.pick(None) else {
            return Picked::NoReplica;
        };
        let Some(conn) = self.checkout(backend, now) else {
            return Picked::Connect(Arc::clone(backend));
        };
        // Counted in flight from the pick on, so a drain starting now waits for this request.
        Picked::Pooled(Acquired {
            in_flight: backend.start_request(),
            conn,
            pooled: true,
        })
    }

    fn checkout(&self, backend: &Backend, now: Instant) -> Option<UpstreamConn> {
        while let Some(idle) = backend.checkout() {
            if let Some(conn) = idle.reuse(self.config.upstream_idle_timeout, now) {
                return Some(conn);
            }
        }
        None
    }

    /// Open a connection to `first`; when that fails, to the app's next ready backend.
    async fn connect_any(
        &self,
        app: &RoutedApp,
        first: Arc<Backend>,
    ) -> Result<Acquired, (Response<ProxyBody>, Option<Arc<Backend>>)> {
        let first_flight = first.start_request();
        if let Some(acquired) = self.open(app, &first, first_flight).await {
            return Ok(acquired);
        }
        let Some(second) = app.pick(Some(&first)).cloned() else {
            let page = pages::error_page(
                StatusCode::BAD_GATEWAY,
                "The app's replica could not be reached.",
            );
            return Err((page, Some(first)));
        };
        first.metrics().record_retry();
        let in_flight = second.start_request();
        if let Some(conn) = self.checkout(&second, Instant::now()) {
            return Ok(Acquired {
                in_flight,
                conn,
                pooled: true,
            });
        }
        match self.open(app, &second, in_flight).await {
            Some(acquired) => Ok(acquired),
            None => {
                let page = pages::error_page(
                    StatusCode::BAD_GATEWAY,
                    "The app's replicas could not be reached.",
                );
                Err((page, Some(second)))
            }
        }
    }

    /// A fresh connection to `backend` for the request counted by `in_flight`; `None` (the
    /// failure recorded, the count dropped) when connecting fails.
    async fn open(
        &self,
        app: &RoutedApp,
        backend: &Arc<Backend>,
        in_flight: InFlight,
    ) -> Option<Acquired> {
        match upstream::connect(backend.addr(), self.config.connect_timeout).await {
            Ok(conn) => Some(Acquired {
                in_flight,
                conn,
                pooled: false,
            }),
            Err(e) => {
                drop(in_flight);
                self.connect_failed(app, backend, &e);
                None
            }
        }
    }

    fn connect_failed(&self, app: &RoutedApp, backend: &Arc<Backend>, e: &ConnectError) {
        backend.record_error();
        backend.metrics().record_connect_error();
        tracing::warn!(app = app.name(), task_id = backend.id(), replica = backend.replica(), error = %e, "backend connect failed");
        if e.is_refused() {
            backend.mark_down();
        }
    }

    /// The request once more, on a fresh connection to `backend`.
    async fn resend_fresh(&self, backend: &Backend, fwd: &mut Forward) -> Attempt {
        tracing::debug!(
            task_id = backend.id(),
            "resending on a fresh upstream connection"
        );
        match upstream::connect(backend.addr(), self.config.connect_timeout).await {
            Ok(conn) => self.send_timed(conn, fwd).await,
            Err(e) => {
                backend.metrics().record_connect_error();
                tracing::warn!(task_id = backend.id(), error = %e, "backend reconnect failed");
                if e.is_refused() {
                    backend.mark_down();
                }
                // Nothing went out: still safe to send elsewhere.
                let failure = SendFailure {
                    error: UpstreamError::Closed,
                    retry_safe: true,
                };
                Ok(Err(failure))
            }
        }
    }

    /// The client's response for a backend's answer (or failure).
    fn answer(
        &self,
        attempt: Attempt,
        in_flight: InFlight,
        sent_at: Instant,
        client_upgrade: Option<ClientUpgrade>,
        active: ActiveRequest,
    ) -> Response<ProxyBody> {
        let backend = in_flight.backend();
        let exchanged = match attempt {
            Ok(Ok(exchanged)) => exchanged,
            Ok(Err(failure)) => {
                let status = status_for_failure(&failure.error);
                backend.metrics().record_status(status.as_u16());
                if status == StatusCode::BAD_GATEWAY {
                    backend.record_error();
                    tracing::warn!(task_id = backend.id(), replica = backend.replica(), error = %failure.error, retry_safe = failure.retry_safe, "backend request failed");
                }
                return close_after(pages::error_page(status, failure_detail(status)));
            }
            Err(_) => {
                backend.record_error();
                backend
                    .metrics()
                    .record_status(StatusCode::GATEWAY_TIMEOUT.as_u16());
                tracing::warn!(
                    task_id = backend.id(),
                    replica = backend.replica(),
                    timeout = ?self.config.backend_response_timeout,
                    "backend response timed out"
                );
                return pages::error_page(
                    StatusCode::GATEWAY_TIMEOUT,
                    "The app did not answer in time.",
                );
            }
        };
        let responded = Instant::now();
        backend.record_response(responded.saturating_duration_since(sent_at));
        match exchanged {
            Exchanged::Response(mut resp) => {
                backend.metrics().record_status(resp.status().as_u16());
                headers::prepare_response(resp.headers_mut(), false);
                resp.map(|body| ProxyBody::upstream(body, in_flight, active, responded, sent_at))
            }
            Exchanged::Switched(mut resp, conn) => {
                let Some(client_upgrade) = client_upgrade else {
                    backend.record_error();
                    backend
                        .metrics()
                        .record_status(StatusCode::BAD_GATEWAY.as_u16());
                    return pages::error_page(
                        StatusCode::BAD_GATEWAY,
                        "The app switched protocols unasked.",
                    );
                };
                backend.metrics().record_status(resp.status().as_u16());
                spawn_tunnel(Arc::clone(backend), client_upgrade.connection, conn, active);
                if client_upgrade.over_http2 {
                    headers::prepare_switch_over_http2(&mut resp);
                } else {
                    headers::prepare_response(resp.headers_mut(), true);
                }
                resp.map(|()| ProxyBody::local(Bytes::new()))
            }
        }
    }
}

fn retry_safe(attempt: &Attempt) -> bool {
    matches!(attempt, Ok(Err(failure)) if failure.retry_safe)
}

fn no_replica_page(app: &RoutedApp) -> Response<ProxyBody> {
    let msg = format!(
        "App {} has no ready replica right now; try again shortly.",
        app.name()
    );
    pages::error_page(StatusCode::SERVICE_UNAVAILABLE, &msg)
}

/// Completes the access log line of `resp` when the access log is on.
fn log_response(
    log: Option<Box<AccessLine>>,
    resp: &mut Response<ProxyBody>,
    app: Option<&Arc<RoutedApp>>,
    backend: Option<&Backend>,
) {
    let Some(mut line) = log else {
        return;
    };
    line.status = resp.status().as_u16();
    line.app = app.cloned();
    line.upstream = backend.map(Backend::addr);
    let known_size = resp.body().size_hint().exact();
    match resp.body_mut() {
        // Written when the body ended (or the client left), with what was sent.
        ProxyBody::Upstream(up) => up.attach_access_line(line),
        ProxyBody::Local(_) => line.write(known_size),
    }
}

/// Content-Length of the request, when declared.
fn declared_length<B>(req: &Request<B>) -> Option<u64> {
    req.headers()
        .get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .parse()
        .ok()
}

/// Closes the connection after `resp` when the request asked for an upgrade that this
/// response does not make (see `Shared::begin`).
fn close_if_unwatched(resp: &mut Response<ProxyBody>, unwatched: bool) {
    if unwatched && resp.status() != StatusCode::SWITCHING_PROTOCOLS {
        ask_close(resp);
    }
}

/// Ask hyper to close the client connection after this response (framing can't be trusted).
fn close_after(mut resp: Response<ProxyBody>) -> Response<ProxyBody> {
    ask_close(&mut resp);
    resp
}

/// [`close_after`] in place.
fn ask_close(resp: &mut Response<ProxyBody>) {
    resp.headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
}

fn status_for_failure(e: &UpstreamError) -> StatusCode {
    match e {
        UpstreamError::ClientBody(BodyError::TooLarge { .. }) => StatusCode::PAYLOAD_TOO_LARGE,
        UpstreamError::ClientBody(BodyError::Client(_)) => StatusCode::BAD_REQUEST,
        _ => StatusCode::BAD_GATEWAY,
    }
}

fn failure_detail(status: StatusCode) -> &'static str {
    match status {
        StatusCode::PAYLOAD_TOO_LARGE => "The request body is too large.",
        StatusCode::BAD_REQUEST => "The request body could not be read.",
        _ => "The app closed the connection without a valid response.",
    }
}

/// Pipe bytes both ways between the upgraded client and backend connections until either side
/// closes or the backend's drain ends. The tunnel counts as a request in progress on its
/// client connection: an HTTP/2 connection carrying one is not idle.
fn spawn_tunnel(
    backend: Arc<Backend>,
    client: OnUpgrade,
    upstream: UpstreamConn,
    active: ActiveRequest,
) {
    tokio::spawn(async move {
        let _tunnel = backend.start_tunnel();
        let _active = active;
        let client = match client.await {
            Ok(c) => c,
            Err(e) => {
                tracing::debug!(task_id = backend.id(), error = %e, "upgrade failed");
                return;
            }
        };
        let mut client = TokioIo::new(client);
        let (mut upstream, early) = upstream.into_parts();
        tokio::select! {
            r = pipe(&mut client, &mut upstream, &early) => {
                if let Err(e) = r {
                    tracing::debug!(task_id = backend.id(), error = %e, "tunnel ended with error");
                }
            }
            _ = backend.tunnels_closed().cancelled() => {
                tracing::debug!(task_id = backend.id(), "closing tunnel: backend drained");
            }
        }
    });
}

/// Hand the client what the backend sent right after its 101, then copy both ways.
async fn pipe(
    client: &mut TokioIo<hyper::upgrade::Upgraded>,
    upstream: &mut tokio::net::TcpStream,
    early: &[u8],
) -> std::io::Result<()> {
    if !early.is_empty() {
        client.write_all(early).await?;
    }
    tokio::io::copy_bidirectional(client, upstream).await?;
    Ok(())
}
