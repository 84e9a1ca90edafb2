//! One client request: framing checks, ACME challenge, host routing (404 / alias 301 / HTTPS
//! redirect / 503), backend choice with one connect retry, forwarding with the response
//! timeout, upgrade tunnels, and the access log line.

use std::error::Error as _;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use hyper::body::{Body as _, Incoming};
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;

use super::backend::{Backend, InFlight};
use super::body::{BodyError, ProxyBody, UpstreamBody};
use super::headers::{self, ClientInfo};
use super::pages;
use super::routes::{normalize_host, AppEntry, HostMatch};
use super::server::{ActiveRequest, Shared};
use super::upstream::{self, ConnectError, Sender};

const ACME_PREFIX: &str = "/.well-known/acme-challenge/";

/// The response plus the backend that produced it (for the access log).
type Outcome = (Response<ProxyBody>, Option<Arc<Backend>>);

impl Shared {
    /// Answer one client request and write its access log line.
    pub(crate) async fn handle(
        &self,
        req: Request<Incoming>,
        client: ClientInfo,
        active: ActiveRequest,
    ) -> Response<ProxyBody> {
        let started = Instant::now();
        let method = req.method().clone();
        let uri = req.uri().clone();
        let host = headers::request_host_value(&req);
        let (resp, backend) = self.route(req, client, host.clone(), active).await;
        tracing::info!(
            target: "haloy::access",
            host = host.as_ref().and_then(|h| h.to_str().ok()).unwrap_or("-"),
            method = %method,
            path = uri.path(),
            status = resp.status().as_u16(),
            backend = %backend.as_ref().map_or_else(|| "-".to_string(), |b| b.addr().to_string()),
            duration_ms = started.elapsed().as_secs_f64() * 1000.0,
            "request"
        );
        resp
    }

    async fn route(
        &self,
        mut req: Request<Incoming>,
        client: ClientInfo,
        host: Option<HeaderValue>,
        active: ActiveRequest,
    ) -> Outcome {
        if let Err(e) = headers::check_framing(&req) {
            return (
                close_after(pages::error_page(StatusCode::BAD_REQUEST, &e.to_string())),
                None,
            );
        }
        if req.method() == Method::CONNECT {
            // A reverse proxy is no forward proxy: never open arbitrary tunnels.
            let page =
                pages::error_page(StatusCode::METHOD_NOT_ALLOWED, "CONNECT is not supported.");
            return (close_after(page), None);
        }
        if !client.https {
            if let Some(token) = req.uri().path().strip_prefix(ACME_PREFIX) {
                let answer = self
                    .hooks
                    .as_ref()
                    .and_then(|h| h.challenge_response(token));
                return match answer {
                    Some(key_auth) => (pages::challenge(key_auth), None),
                    None => (
                        pages::error_page(StatusCode::NOT_FOUND, "No such ACME challenge."),
                        None,
                    ),
                };
            }
        }
        let Some(host) = host else {
            return (
                pages::error_page(StatusCode::NOT_FOUND, "The request names no host."),
                None,
            );
        };
        let Ok(host_str) = host.to_str() else {
            return (
                pages::error_page(StatusCode::BAD_REQUEST, "The Host header is not valid."),
                None,
            );
        };
        let table = self.routes.load();
        match table.lookup(host_str) {
            None => {
                let msg = format!("No app is served on {}.", normalize_host(host_str));
                (pages::error_page(StatusCode::NOT_FOUND, &msg), None)
            }
            Some(HostMatch::Alias(canonical)) => {
                let https = client.https || self.has_certificate(canonical);
                (
                    pages::redirect(&self.location(https, canonical, &req)),
                    None,
                )
            }
            Some(HostMatch::App(app)) => {
                if !client.https {
                    let name = normalize_host(host_str);
                    if self.has_certificate(&name) {
                        return (pages::redirect(&self.location(true, &name, &req)), None);
                    }
                }
                if let Some(limit) = self.config.max_body_bytes {
                    if declared_length(&req).is_some_and(|len| len > limit) {
                        let msg = format!("The request body is larger than {limit} bytes.");
                        return (
                            close_after(pages::error_page(StatusCode::PAYLOAD_TOO_LARGE, &msg)),
                            None,
                        );
                    }
                }
                let upgrade = headers::upgrade_requested(&req);
                let client_upgrade = upgrade.then(|| hyper::upgrade::on(&mut req));
                headers::prepare_request(&mut req, &client, &host, upgrade);
                let req = req.map(|body| UpstreamBody::new(body, self.config.max_body_bytes));
                self.forward(app, req, client_upgrade, active).await
            }
        }
    }

    fn has_certificate(&self, host: &str) -> bool {
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

    /// Send `req` to the app's next ready backend; when connecting fails, once more to the next.
    async fn forward(
        &self,
        app: &AppEntry,
        req: Request<UpstreamBody>,
        client_upgrade: Option<OnUpgrade>,
        active: ActiveRequest,
    ) -> Outcome {
        let Some(first) = app.pick(None).cloned() else {
            let msg = format!(
                "App {} has no ready replica right now; try again shortly.",
                app.name()
            );
            return (
                pages::error_page(StatusCode::SERVICE_UNAVAILABLE, &msg),
                None,
            );
        };
        // Counted in flight from the pick on, so a drain starting now waits for this request.
        let first_flight = first.start_request();
        let (in_flight, sender) = match self.acquire(&first).await {
            Ok(conn) => (first_flight, conn),
            Err(e) => {
                drop(first_flight);
                self.connect_failed(app, &first, &e);
                let Some(second) = app.pick(Some(&first)).cloned() else {
                    let page = pages::error_page(
                        StatusCode::BAD_GATEWAY,
                        "The app's replica could not be reached.",
                    );
                    return (page, Some(first));
                };
                let second_flight = second.start_request();
                match self.acquire(&second).await {
                    Ok(conn) => (second_flight, conn),
                    Err(e) => {
                        drop(second_flight);
                        self.connect_failed(app, &second, &e);
                        let page = pages::error_page(
                            StatusCode::BAD_GATEWAY,
                            "The app's replicas could not be reached.",
                        );
                        return (page, Some(second));
                    }
                }
            }
        };
        let backend = Arc::clone(in_flight.backend());
        let resp = self
            .exchange(in_flight, sender, req, client_upgrade, active)
            .await;
        (resp, Some(backend))
    }

    fn connect_failed(&self, app: &AppEntry, backend: &Arc<Backend>, e: &ConnectError) {
        backend.record_error();
        tracing::warn!(app = app.name(), task_id = backend.id(), replica = backend.replica(), error = %e, "backend connect failed");
        if e.is_refused() {
            backend.mark_down();
        }
    }

    /// A ready upstream connection: a pooled one if any is still usable, else a new one.
    /// For a pooled one, also when it went idle.
    async fn acquire(
        &self,
        backend: &Arc<Backend>,
    ) -> Result<(Sender, Option<Instant>), ConnectError> {
        let cutoff = Instant::now().checked_sub(self.config.upstream_idle_timeout);
        while let Some(conn) = backend.checkout() {
            if conn.is_closed() || cutoff.is_some_and(|c| conn.idle_since() < c) {
                continue;
            }
            let idle_since = conn.idle_since();
            let mut sender = conn.into_sender();
            if sender.ready().await.is_ok() {
                return Ok((sender, Some(idle_since)));
            }
        }
        let sender = upstream::connect(backend.addr(), self.config.connect_timeout).await?;
        Ok((sender, None))
    }

    async fn exchange(
        &self,
        in_flight: InFlight,
        (mut sender, idle_since): (Sender, Option<Instant>),
        req: Request<UpstreamBody>,
        client_upgrade: Option<OnUpgrade>,
        active: ActiveRequest,
    ) -> Response<ProxyBody> {
        let backend = &Arc::clone(in_flight.backend());
        // A connection idle for a while may be closed by the backend just as we write to it;
        // a bodiless idempotent request can then be sent again on a fresh connection.
        let mut replay = idle_since
            .filter(|t| t.elapsed() >= STALE_AFTER)
            .and_then(|_| replayable_copy(&req));
        let sent_at = Instant::now();
        let timeout = self.config.backend_response_timeout;
        let mut attempt = tokio::time::timeout(timeout, sender.try_send_request(req)).await;
        if let Ok(Err(ref mut e)) = attempt {
            // A pooled connection that closed before we wrote hands the request back untouched.
            if let Some(req) = e.take_message().or_else(|| replay.take()) {
                tracing::debug!(task_id = backend.id(), error = %e.error(), "resending on a fresh upstream connection");
                match upstream::connect(backend.addr(), self.config.connect_timeout).await {
                    Ok(fresh) => {
                        sender = fresh;
                        attempt = tokio::time::timeout(timeout, sender.try_send_request(req)).await;
                    }
                    Err(e) => {
                        backend.record_error();
                        tracing::warn!(task_id = backend.id(), error = %e, "backend reconnect failed");
                        return pages::error_page(
                            StatusCode::BAD_GATEWAY,
                            "The app's replica could not be reached.",
                        );
                    }
                }
            }
        }
        let mut resp = match attempt {
            Ok(Ok(resp)) => resp,
            Ok(Err(e)) => {
                let e = e.into_error();
                let status = status_for_send_error(&e);
                if status == StatusCode::BAD_GATEWAY {
                    backend.record_error();
                    tracing::warn!(task_id = backend.id(), replica = backend.replica(), error = %e, "backend request failed");
                }
                return close_after(pages::error_page(status, send_error_detail(status)));
            }
            Err(_) => {
                backend.record_error();
                tracing::warn!(
                    task_id = backend.id(),
                    replica = backend.replica(),
                    ?timeout,
                    "backend response timed out"
                );
                return pages::error_page(
                    StatusCode::GATEWAY_TIMEOUT,
                    "The app did not answer in time.",
                );
            }
        };
        backend.record_response(sent_at.elapsed());
        let switching = resp.status() == StatusCode::SWITCHING_PROTOCOLS;
        if switching {
            let Some(client_upgrade) = client_upgrade else {
                backend.record_error();
                return pages::error_page(
                    StatusCode::BAD_GATEWAY,
                    "The app switched protocols unasked.",
                );
            };
            spawn_tunnel(
                Arc::clone(backend),
                client_upgrade,
                hyper::upgrade::on(&mut resp),
            );
        }
        headers::prepare_response(resp.headers_mut(), switching);
        let reusable = (!switching).then_some(sender);
        resp.map(|body| ProxyBody::upstream(body, reusable, in_flight, active))
    }
}

/// Pooled connections idle at least this long get a replay copy of bodiless idempotent requests.
const STALE_AFTER: Duration = Duration::from_secs(1);

/// A copy of `req` to resend when it is a GET/HEAD/OPTIONS without body.
fn replayable_copy(req: &Request<UpstreamBody>) -> Option<Request<UpstreamBody>> {
    let idempotent = matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS);
    if !idempotent || !req.body().is_end_stream() {
        return None;
    }
    let mut copy = Request::new(UpstreamBody::empty());
    *copy.method_mut() = req.method().clone();
    *copy.uri_mut() = req.uri().clone();
    *copy.version_mut() = req.version();
    *copy.headers_mut() = req.headers().clone();
    Some(copy)
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

/// Ask hyper to close the client connection after this response (framing can't be trusted).
fn close_after(mut resp: Response<ProxyBody>) -> Response<ProxyBody> {
    resp.headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    resp
}

fn status_for_send_error(e: &hyper::Error) -> StatusCode {
    let mut source = e.source();
    while let Some(err) = source {
        if let Some(body_err) = err.downcast_ref::<BodyError>() {
            return match body_err {
                BodyError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
                BodyError::Client(_) => StatusCode::BAD_REQUEST,
            };
        }
        source = err.source();
    }
    StatusCode::BAD_GATEWAY
}

fn send_error_detail(status: StatusCode) -> &'static str {
    match status {
        StatusCode::PAYLOAD_TOO_LARGE => "The request body is too large.",
        StatusCode::BAD_REQUEST => "The request body could not be read.",
        _ => "The app closed the connection without a valid response.",
    }
}

/// Pipe bytes both ways between the upgraded client and backend connections until either side
/// closes or the backend's drain ends.
fn spawn_tunnel(backend: Arc<Backend>, client: OnUpgrade, upstream: OnUpgrade) {
    tokio::spawn(async move {
        let _tunnel = backend.start_tunnel();
        let (client, upstream) = match tokio::join!(client, upstream) {
            (Ok(c), Ok(u)) => (c, u),
            (Err(e), _) | (_, Err(e)) => {
                tracing::debug!(task_id = backend.id(), error = %e, "upgrade failed");
                return;
            }
        };
        let (mut client, mut upstream) = (TokioIo::new(client), TokioIo::new(upstream));
        tokio::select! {
            r = tokio::io::copy_bidirectional(&mut client, &mut upstream) => {
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
