//! haloyd's HTTP API server: bearer-token auth (constant-time compare), JSON bodies, and
//! Server-Sent Events for deploy progress and logs. It only translates HTTP to calls on the
//! `deploy::Deployer`; no rollout logic lives here. Its listener has the proxy's limits: a
//! connection cap (excess waits in the backlog), a header-read timeout and an idle timeout,
//! watched as the proxy does (`proxy::server::ConnActivity`); a response body, an SSE stream
//! included, counts as a request in progress until it ends, so streams are never cut.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::{combinators::UnsyncBoxBody, BodyExt, Full, Limited, StreamBody};
use hyper::body::Frame;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use serde::Serialize;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};
use tracing::{debug, info, warn};

use super::types::{
    ApiError, DeployAccepted, DeployRequest, HealthResponse, JobAccepted, RollbackRequest,
    StopRequest, VersionResponse,
};
use super::types::{
    AppStatus, CertificateInfo, LogsQuery, PruneImagesRequest, RegistryEntry, RegistryLoginRequest,
    RegistryLogoutRequest,
};
use crate::access_log::AccessLog;
use crate::daemon_log::DaemonLog;
use crate::deploy::{DeployError, Deployer};
use crate::proxy::server::{ActiveRequest, ConnActivity};
use crate::timefmt::rfc3339;
use crate::tls::CertificateManager;

/// Deploy bodies carry a resolved config; anything this large is not one.
const MAX_BODY_BYTES: usize = 4 * 1024 * 1024;
const SSE_KEEPALIVE: Duration = Duration::from_secs(15);

pub(super) type Body = UnsyncBoxBody<Bytes, std::io::Error>;

#[derive(Debug, thiserror::Error)]
pub enum ApiServerError {
    #[error("cannot listen for the API on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// Limits of the API listener (server config `api.*`).
#[derive(Debug, Clone)]
pub struct ApiLimits {
    pub header_read_timeout: Duration,
    pub idle_timeout: Duration,
    pub max_connections: usize,
}

impl Default for ApiLimits {
    fn default() -> Self {
        ApiLimits {
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            max_connections: 256,
        }
    }
}

/// The watch samples this often per quiet limit (as the proxy's).
const QUIET_SAMPLES: u32 = 4;

pub struct ApiServer {
    deployer: Arc<Deployer>,
    tokens: super::tokens::Tokens,
    tls: Option<Arc<CertificateManager>>,
    limits: ApiLimits,
    /// containerd's image store, for uploaded images (`api::images`); unset in tests
    /// without containerd.
    images: std::sync::OnceLock<crate::runtime::ImageStore>,
    logs: ServerLogs,
}

/// haloyd's own log and the proxy's access log, for `GET /v1/server/logs`.
#[derive(Debug, Clone, Default)]
pub struct ServerLogs {
    pub daemon: Option<DaemonLog>,
    pub access: Option<Arc<AccessLog>>,
}

impl ApiServer {
    pub fn new(
        deployer: Arc<Deployer>,
        tokens: super::tokens::Tokens,
        tls: Option<Arc<CertificateManager>>,
        limits: ApiLimits,
        logs: ServerLogs,
    ) -> Arc<Self> {
        Arc::new(Self {
            deployer,
            tokens,
            tls,
            limits,
            images: std::sync::OnceLock::new(),
            logs,
        })
    }

    /// Accepts image uploads into this image store (the routes of `api::images`).
    pub fn enable_image_uploads(&self, images: crate::runtime::ImageStore) {
        let _ = self.images.set(images);
    }

    /// Status of one app or all, with the certificate state of their domains.
    fn status(&self, app: Option<&str>) -> Vec<AppStatus> {
        let mut statuses = self.deployer.status(app);
        if let Some(tls) = &self.tls {
            for status in &mut statuses {
                status.certificates = status
                    .domains
                    .iter()
                    .filter_map(|domain| tls.status(domain))
                    .map(|c| CertificateInfo {
                        domain: c.domain,
                        expires: c.expires.map(rfc3339),
                        last_error: c.last_error,
                        next_retry: c.next_retry.map(rfc3339),
                    })
                    .collect();
            }
        }
        statuses
    }

    pub async fn bind(addr: SocketAddr) -> Result<TcpListener, ApiServerError> {
        TcpListener::bind(addr)
            .await
            .map_err(|source| ApiServerError::Bind { addr, source })
    }

    /// Serves until `shutdown` turns true; open SSE streams end with the process. At most
    /// `max_connections` are open: the next is accepted only when one closes.
    pub async fn serve(
        self: Arc<Self>,
        listener: TcpListener,
        mut shutdown: watch::Receiver<bool>,
    ) {
        let connections = Arc::new(Semaphore::new(self.limits.max_connections.max(1)));
        loop {
            let permit = tokio::select! {
                permit = connections.clone().acquire_owned() => match permit {
                    Ok(p) => p,
                    Err(_) => return,
                },
                _ = shutdown.changed() => return,
            };
            let accepted = tokio::select! {
                accepted = listener.accept() => accepted,
                _ = shutdown.changed() => return,
            };
            let (stream, peer) = match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    warn!(error = %e, "api accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            tokio::spawn(self.clone().serve_connection(stream, peer, permit));
        }
    }

    /// One client connection, closed once it had no request in progress for the shorter of
    /// the header-read and idle timeouts (a half-sent head is no request in progress).
    async fn serve_connection(
        self: Arc<Self>,
        stream: TcpStream,
        peer: SocketAddr,
        permit: OwnedSemaphorePermit,
    ) {
        // Shared with exec/tunnel sessions: an upgraded stream outlives this function and
        // keeps holding its slot of `max_connections` until it ends.
        let slot = super::exec::ConnectionSlot(Arc::new(permit));
        let activity = Arc::new(ConnActivity::default());
        let service = {
            let activity = activity.clone();
            let server = self.clone();
            service_fn(move |mut req: Request<hyper::body::Incoming>| {
                req.extensions_mut().insert(super::exec::Peer(peer));
                req.extensions_mut().insert(slot.clone());
                let active = ActiveRequest::start(&activity);
                let server = server.clone();
                async move { Ok::<_, Infallible>(hold_until_sent(server.handle(req).await, active)) }
            })
        };
        let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
        builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(self.limits.header_read_timeout);
        // Upgrades carry `haloy exec` and `haloy tunnel` streams (api::exec).
        let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
        tokio::pin!(conn);
        let quiet_limit = self
            .limits
            .header_read_timeout
            .min(self.limits.idle_timeout)
            .max(Duration::from_millis(1));
        let quiet = activity.watch(quiet_limit, quiet_limit / QUIET_SAMPLES);
        let result = tokio::select! {
            r = conn.as_mut() => r,
            _ = quiet => {
                debug!(%peer, ?quiet_limit, "closing api connection without a request in progress");
                conn.as_mut().graceful_shutdown();
                match tokio::time::timeout(quiet_limit, conn).await {
                    Ok(r) => r,
                    Err(_) => return,
                }
            }
        };
        if let Err(e) = result {
            debug!(%peer, error = %e, "api connection ended");
        }
    }

    /// Entry point usable by the proxy too, when the API is served on `api.domain`.
    pub async fn handle<B>(&self, req: Request<B>) -> Response<Body>
    where
        B: hyper::body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>> + std::fmt::Display,
    {
        let path = req.uri().path().to_string();
        let method = req.method().clone();
        if method == Method::GET && path == "/health" {
            return json(
                StatusCode::OK,
                &HealthResponse {
                    status: "ok".into(),
                    version: env!("CARGO_PKG_VERSION").into(),
                },
            );
        }
        if !self.authorized(&req) {
            return error(
                StatusCode::UNAUTHORIZED,
                "missing or invalid API token",
                vec![],
            );
        }
        let response = self.route(req, &method, &path).await;
        info!(%method, %path, status = response.status().as_u16(), "api request");
        response
    }

    fn authorized<B>(&self, req: &Request<B>) -> bool {
        let Some(value) = req.headers().get(header::AUTHORIZATION) else {
            return false;
        };
        let Some(presented) = value.to_str().ok().and_then(|v| v.strip_prefix("Bearer ")) else {
            return false;
        };
        self.tokens.check(presented)
    }

    async fn route<B>(&self, req: Request<B>, method: &Method, path: &str) -> Response<Body>
    where
        B: hyper::body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>> + std::fmt::Display,
    {
        if path.starts_with("/v1/images/") {
            let handled = super::images::route(self.images.get(), req, method, path).await;
            return handled.unwrap_or_else(|| {
                error(
                    StatusCode::NOT_FOUND,
                    &format!("no API endpoint {method} {path}"),
                    vec![],
                )
            });
        }
        let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
        let query = req.uri().query().unwrap_or("").to_string();
        match (method, segments.as_slice()) {
            (&Method::GET, ["v1", "version"]) => json(
                StatusCode::OK,
                &VersionResponse {
                    version: env!("CARGO_PKG_VERSION").into(),
                },
            ),
            (&Method::POST, ["v1", "deploy"]) => match read_json::<DeployRequest, B>(req).await {
                Ok(body) => self.deploy(body).await,
                Err(resp) => resp,
            },
            (&Method::GET, ["v1", "deployments" | "jobs", id, "events"]) => self.deploy_events(id),
            (&Method::GET, ["v1", "server", "logs"]) => self.server_logs(&query),
            (&Method::GET, ["v1", "apps"]) => json(StatusCode::OK, &self.status(None)),
            (&Method::GET, ["v1", "apps", app]) => match self.status(Some(app)).pop() {
                Some(status) => json(StatusCode::OK, &status),
                None => error(
                    StatusCode::NOT_FOUND,
                    &format!("app `{app}` is not deployed on this server"),
                    vec![],
                ),
            },
            (&Method::GET, ["v1", "apps", app, "logs"]) => self.logs(app, &query).await,
            (&Method::GET, ["v1", "apps", app, "exec"]) => {
                let app = app.to_string();
                super::exec::exec(&self.deployer, req, &app).await
            }
            (&Method::GET, ["v1", "apps", app, "tunnel"]) => {
                let app = app.to_string();
                super::exec::tunnel(&self.deployer, req, &app, &query).await
            }
            (&Method::POST, ["v1", "apps", app, "stop"]) => {
                let app = app.to_string();
                match read_json::<StopRequest, B>(req).await {
                    Ok(body) => self.stop(&app, body).await,
                    Err(resp) => resp,
                }
            }
            (&Method::GET, ["v1", "registries"]) => self.registries(),
            (&Method::POST, ["v1", "registries", "login"]) => {
                match read_json::<RegistryLoginRequest, B>(req).await {
                    Ok(body) => self.registry_login(body),
                    Err(resp) => resp,
                }
            }
            (&Method::POST, ["v1", "registries", "logout"]) => {
                match read_json::<RegistryLogoutRequest, B>(req).await {
                    Ok(body) => self.registry_logout(&body.server),
                    Err(resp) => resp,
                }
            }
            (&Method::POST, ["v1", "apps", app, "prune-images"]) => {
                let app = app.to_string();
                match read_json::<PruneImagesRequest, B>(req).await {
                    Ok(body) => match self
                        .deployer
                        .prune_images(&app, body.keep, body.apply)
                        .await
                    {
                        Ok(plan) => json(StatusCode::OK, &plan),
                        Err(e) => deploy_error(e),
                    },
                    Err(resp) => resp,
                }
            }
            (&Method::GET, ["v1", "apps", app, "rollback-targets"]) => {
                match self.deployer.rollback_targets(app).await {
                    Ok(targets) => json(StatusCode::OK, &targets),
                    Err(e) => deploy_error(e),
                }
            }
            (&Method::POST, ["v1", "apps", app, "rollback"]) => {
                let app = app.to_string();
                match read_json::<RollbackRequest, B>(req).await {
                    Ok(body) => match self.deployer.rollback(&app, &body.deployment_id).await {
                        Ok(id) => json(StatusCode::ACCEPTED, &DeployAccepted { deployment_id: id }),
                        Err(e) => deploy_error(e),
                    },
                    Err(resp) => resp,
                }
            }
            _ => error(
                StatusCode::NOT_FOUND,
                &format!("no API endpoint {method} {path}"),
                vec![],
            ),
        }
    }

    fn registries(&self) -> Response<Body> {
        match self.deployer.state.registry_logins().all() {
            Ok(all) => {
                let list: Vec<RegistryEntry> = all
                    .into_iter()
                    .map(|(server, login)| RegistryEntry {
                        server,
                        username: login.username,
                    })
                    .collect();
                json(StatusCode::OK, &list)
            }
            Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string(), vec![]),
        }
    }

    fn registry_login(&self, body: RegistryLoginRequest) -> Response<Body> {
        let server = body.server.trim().to_ascii_lowercase();
        if server.is_empty() || server.contains('/') || body.username.trim().is_empty() {
            return error(
                StatusCode::BAD_REQUEST,
                "give the registry host (e.g. ghcr.io or 127.0.0.1:5000, no path) and a username",
                vec![],
            );
        }
        let login = crate::state::registries::RegistryLogin {
            username: body.username.clone(),
            password: body.password.expose().to_string(),
        };
        match self.deployer.state.registry_logins().login(&server, login) {
            Ok(()) => {
                tracing::info!(registry = %server, username = %body.username, "registry login stored");
                json(
                    StatusCode::OK,
                    &RegistryEntry {
                        server,
                        username: body.username,
                    },
                )
            }
            Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string(), vec![]),
        }
    }

    fn registry_logout(&self, server: &str) -> Response<Body> {
        let server = server.trim().to_ascii_lowercase();
        match self.deployer.state.registry_logins().logout(&server) {
            Ok(true) => {
                tracing::info!(registry = %server, "registry login removed");
                json(StatusCode::OK, &RegistryLogoutRequest { server })
            }
            Ok(false) => error(
                StatusCode::NOT_FOUND,
                &format!(
                    "no login stored for registry {server} (see `haloy server registry list`)"
                ),
                vec![],
            ),
            Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string(), vec![]),
        }
    }

    async fn deploy(&self, body: DeployRequest) -> Response<Body> {
        match self.deployer.deploy(body.app, None).await {
            Ok(id) => json(StatusCode::ACCEPTED, &DeployAccepted { deployment_id: id }),
            Err(e) => deploy_error(e),
        }
    }

    fn deploy_events(&self, id: &str) -> Response<Body> {
        match self.deployer.events(id) {
            Some(events) => sse(events),
            None => error(
                StatusCode::NOT_FOUND,
                &format!(
                    "no job `{id}` on this server (progress is kept until haloyd restarts; `haloy status` shows the last operation)"
                ),
                vec![],
            ),
        }
    }

    async fn logs(&self, app: &str, query: &str) -> Response<Body> {
        let query = match LogsQuery::parse(query) {
            Ok(q) => q,
            Err(msg) => return error(StatusCode::BAD_REQUEST, &msg, vec![]),
        };
        match self.deployer.logs(app, query).await {
            Ok(lines) => sse(lines),
            Err(e) => deploy_error(e),
        }
    }

    /// Follows haloyd's own log, or with `access=true` the access log (`app=NAME`: one app's
    /// lines only), from now on.
    fn server_logs(&self, query: &str) -> Response<Body> {
        let mut access = false;
        let mut app = None;
        for (key, value) in query
            .split('&')
            .filter(|p| !p.is_empty())
            .map(|p| p.split_once('=').unwrap_or((p, "")))
        {
            match key {
                "access" => access = value == "true" || value == "1",
                "app" => app = Some(value.to_string()),
                _ => {
                    let msg = format!("unknown query parameter `{key}` (known: access, app)");
                    return error(StatusCode::BAD_REQUEST, &msg, vec![]);
                }
            }
        }
        match (access, &self.logs.access, &self.logs.daemon) {
            (true, Some(log), _) => sse(log.follow(app)),
            (false, _, Some(log)) if app.is_none() => sse(log.follow()),
            (false, _, Some(_)) => error(
                StatusCode::BAD_REQUEST,
                "`app` filters the access log only; add access=true",
                vec![],
            ),
            _ => error(
                StatusCode::NOT_FOUND,
                "this server streams no such log",
                vec![],
            ),
        }
    }

    /// Starts the stop job and answers at once; the job does not depend on this request.
    async fn stop(&self, app: &str, body: StopRequest) -> Response<Body> {
        match self
            .deployer
            .stop(app, body.remove_containers, body.remove_volumes)
        {
            Ok(job_id) => json(StatusCode::ACCEPTED, &JobAccepted { job_id }),
            Err(e) => deploy_error(e),
        }
    }
}

/// Keeps `active` until the response body is dropped (sent, or the client went away), so an
/// SSE stream counts as a request in progress for the idle watch.
fn hold_until_sent(response: Response<Body>, active: ActiveRequest) -> Response<Body> {
    response.map(|inner| {
        HeldBody {
            inner,
            _active: active,
        }
        .boxed_unsync()
    })
}

/// A response body with its request's activity guard. Unlike `map_frame` it keeps the size
/// hint, so JSON answers keep their Content-Length instead of turning chunked.
struct HeldBody {
    inner: Body,
    _active: ActiveRequest,
}

impl hyper::body::Body for HeldBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        std::pin::Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}

pub(super) async fn read_json<T, B>(req: Request<B>) -> Result<T, Response<Body>>
where
    T: serde::de::DeserializeOwned,
    B: hyper::body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>> + std::fmt::Display,
{
    let collected = Limited::new(req.into_body(), MAX_BODY_BYTES)
        .collect()
        .await
        .map_err(|e| {
            error(
                StatusCode::BAD_REQUEST,
                &format!("cannot read request body: {e}"),
                vec![],
            )
        })?;
    serde_json::from_slice(&collected.to_bytes()).map_err(|e| {
        error(
            StatusCode::BAD_REQUEST,
            &format!("invalid JSON body: {e}"),
            vec![],
        )
    })
}

fn deploy_error(e: DeployError) -> Response<Body> {
    let status = match &e {
        DeployError::InvalidConfig { .. } => StatusCode::BAD_REQUEST,
        DeployError::UnknownApp(_) | DeployError::UnknownDeployment { .. } => StatusCode::NOT_FOUND,
        DeployError::Busy { .. } | DeployError::DomainTaken { .. } => StatusCode::CONFLICT,
        DeployError::HandingOver | DeployError::HandoverBusy { .. } => {
            StatusCode::SERVICE_UNAVAILABLE
        }
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    };
    let problems = match &e {
        DeployError::InvalidConfig { problems } | DeployError::DomainTaken { problems } => {
            problems.clone()
        }
        _ => vec![],
    };
    error(status, &e.to_string(), problems)
}

pub(super) fn error(status: StatusCode, message: &str, problems: Vec<String>) -> Response<Body> {
    json(
        status,
        &ApiError {
            error: message.to_string(),
            problems,
        },
    )
}

pub(super) fn json<T: Serialize>(status: StatusCode, value: &T) -> Response<Body> {
    let body = serde_json::to_vec(value).unwrap_or_else(|e| {
        format!("{{\"error\":\"cannot encode response: {e}\",\"problems\":[]}}").into_bytes()
    });
    let mut response = Response::new(
        Full::new(Bytes::from(body))
            .map_err(|e| match e {})
            .boxed_unsync(),
    );
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    response
}

/// Each item becomes one `data:` event; a comment line every few seconds keeps idle
/// connections (and proxies in between) from timing out.
fn sse<S, T>(items: S) -> Response<Body>
where
    S: Stream<Item = T> + Send + 'static,
    T: Serialize + Send + 'static,
{
    let events = items.map(|item| {
        let json = serde_json::to_string(&item).unwrap_or_else(|_| "{}".into());
        Ok::<_, std::io::Error>(Frame::data(Bytes::from(format!("data: {json}\n\n"))))
    });
    let keepalive =
        tokio_stream::wrappers::IntervalStream::new(tokio::time::interval(SSE_KEEPALIVE))
            .map(|_| Ok(Frame::data(Bytes::from_static(b": keep-alive\n\n"))));
    let merged = futures_util::stream::select(
        events
            .map(Some)
            .chain(futures_util::stream::once(async { None })),
        keepalive.map(Some),
    )
    .take_while(|item| std::future::ready(item.is_some()))
    .filter_map(std::future::ready);
    let mut response = Response::new(BodyExt::boxed_unsync(StreamBody::new(merged)));
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/event-stream"),
    );
    headers.insert(
        header::CACHE_CONTROL,
        header::HeaderValue::from_static("no-cache"),
    );
    response
}
