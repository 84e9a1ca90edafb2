//! The HTTP client the CLI uses to talk to haloyd: plain HTTP or HTTPS (rustls with the webpki
//! roots, plus `HALOY_CA_BUNDLE` if set), bearer token, JSON bodies and server-sent-event
//! streams. Every error names the server URL that was tried and why it failed.

use super::types::*;
use crate::config::{ResolvedApp, SecretString};
use bytes::Bytes;
use http::{header, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

/// A request body: a buffered JSON document or a streamed upload.
pub(crate) type RequestBody = http_body_util::combinators::UnsyncBoxBody<Bytes, std::io::Error>;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(120);
/// Extra CA certificates (PEM file) to trust, e.g. for a private or test CA.
pub const CA_BUNDLE_ENV: &str = "HALOY_CA_BUNDLE";

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("invalid server URL `{url}`: {reason}")]
    InvalidUrl { url: String, reason: String },
    #[error("cannot reach haloyd at {url}: {reason}")]
    Unreachable { url: String, reason: String },
    #[error("haloyd at {url} answered {status}: {message}{}", problem_lines(.problems))]
    Api {
        url: String,
        status: u16,
        message: String,
        problems: Vec<String>,
    },
    #[error("unexpected answer from haloyd at {url}{path}: {reason}")]
    Protocol {
        url: String,
        path: String,
        reason: String,
    },
}

fn problem_lines(problems: &[String]) -> String {
    problems.iter().map(|p| format!("\n  {p}")).collect()
}

impl ClientError {
    /// HTTP status of an API error, if the server answered at all.
    pub fn status(&self) -> Option<u16> {
        match self {
            ClientError::Api { status, .. } => Some(*status),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scheme {
    Http,
    Https,
}

/// A parsed `http(s)://host[:port][/prefix]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerUrl {
    scheme: Scheme,
    host: String,
    port: u16,
    prefix: String,
}

impl ServerUrl {
    pub fn parse(url: &str) -> Result<ServerUrl, ClientError> {
        let bad = |reason: &str| ClientError::InvalidUrl {
            url: url.to_string(),
            reason: reason.to_string(),
        };
        let (scheme, rest) = if let Some(r) = url.strip_prefix("http://") {
            (Scheme::Http, r)
        } else if let Some(r) = url.strip_prefix("https://") {
            (Scheme::Https, r)
        } else {
            return Err(bad("must start with http:// or https://"));
        };
        let (authority, prefix) = match rest.find('/') {
            Some(i) => (&rest[..i], rest[i..].trim_end_matches('/')),
            None => (rest, ""),
        };
        let default_port = if scheme == Scheme::Http { 80 } else { 443 };
        let (host, port) = split_authority(authority, default_port).map_err(|r| bad(&r))?;
        if host.is_empty() {
            return Err(bad("missing host"));
        }
        Ok(ServerUrl {
            scheme,
            host,
            port,
            prefix: prefix.to_string(),
        })
    }

    fn host_header(&self) -> String {
        let default = matches!(
            (self.scheme, self.port),
            (Scheme::Http, 80) | (Scheme::Https, 443)
        );
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        if default {
            host
        } else {
            format!("{host}:{}", self.port)
        }
    }
}

impl std::fmt::Display for ServerUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let scheme = if self.scheme == Scheme::Http {
            "http"
        } else {
            "https"
        };
        write!(f, "{scheme}://{}{}", self.host_header(), self.prefix)
    }
}

fn split_authority(authority: &str, default_port: u16) -> Result<(String, u16), String> {
    if let Some(rest) = authority.strip_prefix('[') {
        let (host, after) = rest
            .split_once(']')
            .ok_or_else(|| "unclosed `[` in IPv6 address".to_string())?;
        let port = match after.strip_prefix(':') {
            Some(p) => p.parse().map_err(|_| format!("invalid port `{p}`"))?,
            None => default_port,
        };
        return Ok((host.to_string(), port));
    }
    match authority.rsplit_once(':') {
        Some((host, p)) => {
            let port = p.parse().map_err(|_| format!("invalid port `{p}`"))?;
            Ok((host.to_string(), port))
        }
        None => Ok((authority.to_string(), default_port)),
    }
}

/// A client for one haloyd.
#[derive(Clone)]
pub struct ApiClient {
    url: ServerUrl,
    token: Option<SecretString>,
    tls: Option<Arc<rustls::ClientConfig>>,
}

impl std::fmt::Debug for ApiClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiClient")
            .field("url", &self.url.to_string())
            .finish()
    }
}

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

impl ApiClient {
    /// `url` is `http(s)://host[:port]`; `token` is sent as a bearer token on `/v1` calls.
    pub fn new(url: &str, token: Option<SecretString>) -> Result<ApiClient, ClientError> {
        let url = ServerUrl::parse(url)?;
        let tls = match url.scheme {
            Scheme::Https => Some(tls_config(&url)?),
            Scheme::Http => None,
        };
        Ok(ApiClient { url, token, tls })
    }

    /// The server URL, for messages.
    pub fn url(&self) -> String {
        self.url.to_string()
    }

    fn unreachable(&self, reason: impl Into<String>) -> ClientError {
        ClientError::Unreachable {
            url: self.url(),
            reason: reason.into(),
        }
    }

    fn protocol(&self, path: &str, reason: impl Into<String>) -> ClientError {
        ClientError::Protocol {
            url: self.url(),
            path: path.to_string(),
            reason: reason.into(),
        }
    }

    async fn connect(&self) -> Result<Box<dyn Io>, ClientError> {
        let addr = (self.url.host.as_str(), self.url.port);
        let tcp = match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr)).await {
            Err(_) => return Err(self.unreachable("connection timed out")),
            Ok(Err(e)) => return Err(self.unreachable(describe_io(&e))),
            Ok(Ok(s)) => s,
        };
        let _ = tcp.set_nodelay(true);
        let Some(tls) = &self.tls else {
            return Ok(Box::new(tcp));
        };
        let name = rustls_pki_types::ServerName::try_from(self.url.host.clone())
            .map_err(|e| self.unreachable(format!("invalid TLS server name: {e}")))?;
        let stream = tokio_rustls::TlsConnector::from(tls.clone())
            .connect(name, tcp)
            .await
            .map_err(|e| self.unreachable(format!("TLS handshake failed: {e}")))?;
        Ok(Box::new(stream))
    }

    async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
        auth: bool,
    ) -> Result<hyper::Response<Incoming>, ClientError> {
        let mut headers = Vec::new();
        if body.is_some() {
            headers.push((
                header::CONTENT_TYPE.as_str(),
                "application/json".to_string(),
            ));
        }
        let body = Full::new(Bytes::from(body.unwrap_or_default()))
            .map_err(|never| match never {})
            .boxed_unsync();
        self.send_body(method, path, headers, body, auth, REQUEST_TIMEOUT)
            .await
    }

    /// Sends a request with any body (uploads stream theirs) and extra headers; `timeout`
    /// bounds the wait for the response head, which for an upload comes after the body.
    pub(crate) async fn send_body(
        &self,
        method: Method,
        path: &str,
        headers: Vec<(&str, String)>,
        body: RequestBody,
        auth: bool,
        timeout: Duration,
    ) -> Result<hyper::Response<Incoming>, ClientError> {
        let io = self.connect().await?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
            .await
            .map_err(|e| self.unreachable(format!("HTTP handshake failed: {e}")))?;
        tokio::spawn(async move {
            // The connection ends with the response; its errors surface through the request.
            let _ = conn.await;
        });
        let mut req = Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.url.prefix))
            .header(header::HOST, self.url.host_header())
            .header(
                header::USER_AGENT,
                concat!("haloy/", env!("CARGO_PKG_VERSION")),
            )
            .header(header::ACCEPT, "application/json, text/event-stream");
        if auth {
            if let Some(token) = &self.token {
                req = req.header(header::AUTHORIZATION, format!("Bearer {}", token.expose()));
            }
        }
        for (name, value) in headers {
            req = req.header(name, value);
        }
        let req = req
            .body(body)
            .map_err(|e| self.protocol(path, format!("cannot build request: {e}")))?;
        let resp = tokio::time::timeout(timeout, sender.send_request(req))
            .await
            .map_err(|_| self.unreachable(format!("no answer to {path} within {timeout:?}")))?
            .map_err(|e| self.unreachable(describe_hyper(&e)))?;
        if resp.status().is_success() {
            return Ok(resp);
        }
        Err(self.error_from(path, resp).await)
    }

    /// Reads a JSON answer of a request sent with `send_body`.
    pub(crate) async fn read_json<T: DeserializeOwned>(
        &self,
        path: &str,
        resp: hyper::Response<Incoming>,
    ) -> Result<T, ClientError> {
        let bytes = tokio::time::timeout(REQUEST_TIMEOUT, resp.into_body().collect())
            .await
            .map_err(|_| self.unreachable(format!("response to {path} timed out")))?
            .map_err(|e| self.unreachable(describe_hyper(&e)))?
            .to_bytes();
        serde_json::from_slice(&bytes)
            .map_err(|e| self.protocol(path, format!("invalid JSON: {e}")))
    }

    /// `GET path` asking to switch the connection to `protocol` (`haloy exec`/`haloy
    /// tunnel`); `headers` go along. Returns the raw stream after `101 Switching Protocols`.
    pub async fn open_stream(
        &self,
        path: &str,
        protocol: &str,
        headers: &[(&str, String)],
    ) -> Result<TokioIo<hyper::upgrade::Upgraded>, ClientError> {
        let io = self.connect().await?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
            .await
            .map_err(|e| self.unreachable(format!("HTTP handshake failed: {e}")))?;
        tokio::spawn(async move {
            let _ = conn.with_upgrades().await;
        });
        let mut req = Request::builder()
            .method(Method::GET)
            .uri(format!("{}{path}", self.url.prefix))
            .header(header::HOST, self.url.host_header())
            .header(
                header::USER_AGENT,
                concat!("haloy/", env!("CARGO_PKG_VERSION")),
            )
            .header(header::CONNECTION, "upgrade")
            .header(header::UPGRADE, protocol);
        if let Some(token) = &self.token {
            req = req.header(header::AUTHORIZATION, format!("Bearer {}", token.expose()));
        }
        for (name, value) in headers {
            req = req.header(*name, value);
        }
        let req = req
            .body(Full::new(Bytes::new()))
            .map_err(|e| self.protocol(path, format!("cannot build request: {e}")))?;
        let resp = tokio::time::timeout(REQUEST_TIMEOUT, sender.send_request(req))
            .await
            .map_err(|_| {
                self.unreachable(format!("no answer to {path} within {REQUEST_TIMEOUT:?}"))
            })?
            .map_err(|e| self.unreachable(describe_hyper(&e)))?;
        if resp.status() != StatusCode::SWITCHING_PROTOCOLS {
            if resp.status().is_success() {
                return Err(self.protocol(
                    path,
                    format!("expected 101 Switching Protocols, got {}", resp.status()),
                ));
            }
            return Err(self.error_from(path, resp).await);
        }
        let upgraded = hyper::upgrade::on(resp)
            .await
            .map_err(|e| self.protocol(path, format!("the connection was not upgraded: {e}")))?;
        Ok(TokioIo::new(upgraded))
    }

    async fn error_from(&self, path: &str, resp: hyper::Response<Incoming>) -> ClientError {
        let status = resp.status();
        let body = match tokio::time::timeout(REQUEST_TIMEOUT, resp.into_body().collect()).await {
            Ok(Ok(b)) => b.to_bytes(),
            _ => Bytes::new(),
        };
        let (message, problems) = match serde_json::from_slice::<ApiError>(&body) {
            Ok(e) => (e.error, e.problems),
            Err(_) => {
                let text = String::from_utf8_lossy(&body).trim().to_string();
                let text = if text.is_empty() {
                    status.canonical_reason().unwrap_or("error").to_string()
                } else {
                    text.chars().take(300).collect()
                };
                (format!("{text} ({path})"), Vec::new())
            }
        };
        let message = if status == StatusCode::UNAUTHORIZED {
            format!("{message} (check the API token: api_token in haloy.yaml, HALOY_API_TOKEN or `haloy server add`)")
        } else {
            message
        };
        ClientError::Api {
            url: self.url(),
            status: status.as_u16(),
            message,
            problems,
        }
    }

    async fn json<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&impl Serialize>,
        auth: bool,
    ) -> Result<T, ClientError> {
        let body = match body {
            Some(b) => Some(
                serde_json::to_vec(b)
                    .map_err(|e| self.protocol(path, format!("cannot encode request: {e}")))?,
            ),
            None => None,
        };
        let resp = self.send(method, path, body, auth).await?;
        self.read_json(path, resp).await
    }

    async fn stream(&self, path: &str) -> Result<SseStream, ClientError> {
        let resp = self.send(Method::GET, path, None, true).await?;
        Ok(SseStream {
            body: resp.into_body(),
            buf: Vec::new(),
            url: self.url(),
            path: path.to_string(),
        })
    }

    /// `GET /health` (no token needed).
    pub async fn health(&self) -> Result<HealthResponse, ClientError> {
        self.json(Method::GET, "/health", None::<&()>, false).await
    }

    /// `GET /v1/version`.
    pub async fn version(&self) -> Result<VersionResponse, ClientError> {
        self.json(Method::GET, "/v1/version", None::<&()>, true)
            .await
    }

    /// `GET /v1/server/logs`: haloyd's own log, or the access log (of one app), from now on;
    /// read with `next::<String>()`.
    pub async fn server_logs(
        &self,
        access: bool,
        app: Option<&str>,
    ) -> Result<SseStream, ClientError> {
        let mut path = format!("/v1/server/logs?access={access}");
        if let Some(app) = app {
            path.push_str("&app=");
            path.push_str(&percent_encode(app));
        }
        self.stream(&path).await
    }

    /// `POST /v1/deploy`.
    pub async fn deploy(&self, app: &ResolvedApp) -> Result<DeployAccepted, ClientError> {
        let body = DeployRequest { app: app.clone() };
        self.json(Method::POST, "/v1/deploy", Some(&body), true)
            .await
    }

    /// `GET /v1/deployments/{id}/events`: read with `next::<DeployEvent>()`.
    pub async fn deploy_events(&self, deployment_id: &str) -> Result<SseStream, ClientError> {
        let path = format!("/v1/deployments/{}/events", percent_encode(deployment_id));
        self.stream(&path).await
    }

    /// `GET /v1/jobs/{id}/events`: the progress of any job.
    pub async fn job_events(&self, job_id: &str) -> Result<SseStream, ClientError> {
        let path = format!("/v1/jobs/{}/events", percent_encode(job_id));
        self.stream(&path).await
    }

    /// `GET /v1/apps`.
    pub async fn apps(&self) -> Result<Vec<AppStatus>, ClientError> {
        self.json(Method::GET, "/v1/apps", None::<&()>, true).await
    }

    /// `GET /v1/apps/{name}`.
    pub async fn app(&self, name: &str) -> Result<AppStatus, ClientError> {
        let path = format!("/v1/apps/{}", percent_encode(name));
        self.json(Method::GET, &path, None::<&()>, true).await
    }

    /// `GET /v1/apps/{name}/logs`: read with `next::<LogLine>()`.
    pub async fn logs(&self, name: &str, query: &LogsQuery) -> Result<SseStream, ClientError> {
        let path = format!(
            "/v1/apps/{}/logs?{}",
            percent_encode(name),
            query.to_query_string()
        );
        self.stream(&path).await
    }

    /// `POST /v1/apps/{name}/stop`.
    /// `POST /v1/apps/{name}/stop`: starts the stop job; follow it with `job_events`.
    pub async fn stop(&self, name: &str, req: &StopRequest) -> Result<JobAccepted, ClientError> {
        let path = format!("/v1/apps/{}/stop", percent_encode(name));
        self.json(Method::POST, &path, Some(req), true).await
    }

    /// `GET /v1/apps/{name}/rollback-targets`.
    pub async fn rollback_targets(
        &self,
        name: &str,
    ) -> Result<Vec<DeploymentSummary>, ClientError> {
        let path = format!("/v1/apps/{}/rollback-targets", percent_encode(name));
        self.json(Method::GET, &path, None::<&()>, true).await
    }

    /// `GET /v1/registries`.
    pub async fn registries(&self) -> Result<Vec<RegistryEntry>, ClientError> {
        self.json(Method::GET, "/v1/registries", None::<&()>, true)
            .await
    }

    /// `POST /v1/registries/login`.
    pub async fn registry_login(
        &self,
        request: &RegistryLoginRequest,
    ) -> Result<RegistryEntry, ClientError> {
        self.json(Method::POST, "/v1/registries/login", Some(request), true)
            .await
    }

    /// `POST /v1/registries/logout`.
    pub async fn registry_logout(
        &self,
        server: &str,
    ) -> Result<RegistryLogoutRequest, ClientError> {
        let body = RegistryLogoutRequest {
            server: server.to_string(),
        };
        self.json(Method::POST, "/v1/registries/logout", Some(&body), true)
            .await
    }

    /// `POST /v1/apps/{name}/prune-images`.
    pub async fn prune_images(
        &self,
        name: &str,
        request: &PruneImagesRequest,
    ) -> Result<PruneImagesResponse, ClientError> {
        let path = format!("/v1/apps/{}/prune-images", percent_encode(name));
        self.json(Method::POST, &path, Some(request), true).await
    }

    /// `POST /v1/apps/{name}/rollback`.
    pub async fn rollback(
        &self,
        name: &str,
        deployment_id: &str,
    ) -> Result<DeployAccepted, ClientError> {
        let path = format!("/v1/apps/{}/rollback", percent_encode(name));
        let body = RollbackRequest {
            deployment_id: deployment_id.to_string(),
        };
        self.json(Method::POST, &path, Some(&body), true).await
    }
}

/// A `text/event-stream` response; each `data:` line holds one JSON value.
pub struct SseStream {
    body: Incoming,
    buf: Vec<u8>,
    url: String,
    path: String,
}

impl SseStream {
    fn protocol(&self, reason: String) -> ClientError {
        ClientError::Protocol {
            url: self.url.clone(),
            path: self.path.clone(),
            reason,
        }
    }

    /// The next event, `None` when the server closed the stream. A `data:` line holding an
    /// [`ApiError`] instead of `T` becomes an error.
    pub async fn next<T: DeserializeOwned>(&mut self) -> Result<Option<T>, ClientError> {
        loop {
            while let Some(line) = self.take_line() {
                let Some(data) = line.strip_prefix("data:") else {
                    continue; // comments (keep-alives), `event:`, `id:` and blank separators
                };
                let data = data.trim();
                if data.is_empty() {
                    continue;
                }
                return match serde_json::from_str::<T>(data) {
                    Ok(v) => Ok(Some(v)),
                    Err(e) => match serde_json::from_str::<ApiError>(data) {
                        Ok(api) => Err(ClientError::Api {
                            url: self.url.clone(),
                            status: 200,
                            message: api.error,
                            problems: api.problems,
                        }),
                        Err(_) => Err(self.protocol(format!("invalid event `{data}`: {e}"))),
                    },
                };
            }
            match self.body.frame().await {
                None => return Ok(None),
                Some(Err(e)) => {
                    return Err(ClientError::Unreachable {
                        url: self.url.clone(),
                        reason: format!("stream {} broke: {}", self.path, describe_hyper(&e)),
                    })
                }
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        self.buf.extend_from_slice(&data);
                    }
                }
            }
        }
    }

    fn take_line(&mut self) -> Option<String> {
        let end = self.buf.iter().position(|&b| b == b'\n')?;
        let line: Vec<u8> = self.buf.drain(..=end).collect();
        let text = String::from_utf8_lossy(&line);
        Some(text.trim_end_matches(['\n', '\r']).to_string())
    }
}

fn tls_config(url: &ServerUrl) -> Result<Arc<rustls::ClientConfig>, ClientError> {
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    if let Ok(bundle) = std::env::var(CA_BUNDLE_ENV) {
        use rustls_pki_types::pem::PemObject;
        let certs = rustls_pki_types::CertificateDer::pem_file_iter(&bundle).map_err(|e| {
            ClientError::InvalidUrl {
                url: url.to_string(),
                reason: format!("cannot read {CA_BUNDLE_ENV}={bundle}: {e}"),
            }
        })?;
        for cert in certs.flatten() {
            let _ = roots.add(cert);
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| ClientError::InvalidUrl {
            url: url.to_string(),
            reason: format!("TLS setup failed: {e}"),
        })?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

fn describe_io(e: &std::io::Error) -> String {
    use std::io::ErrorKind::*;
    match e.kind() {
        ConnectionRefused => "connection refused".into(),
        ConnectionReset => "connection reset".into(),
        TimedOut => "connection timed out".into(),
        AddrNotAvailable => "address not available".into(),
        _ => e.to_string(),
    }
}

fn describe_hyper(e: &hyper::Error) -> String {
    if e.is_incomplete_message() {
        return "the connection closed before a complete answer".into();
    }
    let mut msg = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        msg.push_str(": ");
        msg.push_str(&s.to_string());
        source = s.source();
    }
    msg
}

#[cfg(test)]
#[path = "tests/client.rs"]
mod tests;
