//! Wire types of haloyd's HTTP API, shared by the server (src/api) and the CLI client.
//!
//! All bodies are JSON; every `/v1/*` request carries `Authorization: Bearer <token>`.
//!
//! | method | path | request | success |
//! |---|---|---|---|
//! | GET | `/health` (no auth) | – | 200 [`HealthResponse`] |
//! | GET | `/v1/version` | – | 200 [`VersionResponse`] |
//! | POST | `/v1/deploy` | [`DeployRequest`] | 202 [`DeployAccepted`] |
//! | GET | `/v1/deployments/{id}/events` | – | 200 `text/event-stream`, each `data:` line a [`DeployEvent`] |
//! | GET | `/v1/jobs/{id}/events` | – | the same, for any job id (deploy, rollback, stop, remove) |
//! | GET | `/v1/server/logs?access=bool&app=NAME` | – | 200 `text/event-stream`, each `data:` a JSON string: haloyd's log line, or with `access=true` an access log line (of app NAME), from now on |
//! | GET | `/v1/apps` | – | 200 `[AppStatus]` |
//! | GET | `/v1/apps/{name}` | – | 200 [`AppStatus`] |
//! | GET | `/v1/apps/{name}/logs?tail=N&follow=bool&all=bool&container=ID` ([`LogsQuery`]) | – | 200 `text/event-stream` of [`LogLine`] |
//! | POST | `/v1/apps/{name}/stop` | [`StopRequest`] | 202 [`JobAccepted`] |
//! | GET | `/v1/apps/{name}/rollback-targets` | – | 200 `[DeploymentSummary]` |
//! | POST | `/v1/apps/{name}/rollback` | [`RollbackRequest`] | 202 [`DeployAccepted`] |
//! | POST | `/v1/images/layers/check`, `/v1/images/layers`, `/v1/images/layers/assemble` | see `api::images` | image upload |
//!
//! Jobs: deploy, rollback and stop (with `remove_containers`: remove) only start a job on
//! haloyd and answer at once with its id; the job runs to its end whether or not anyone
//! watches, its events stream is the same as a deploy's (for deploys and rollbacks the job id
//! is the deployment id), and [`AppStatus::last_operation`] keeps its outcome. A second job on
//! an app while one runs is refused with 409.
//!
//! Every failure (4xx/5xx) has an [`ApiError`] body. Deployment ids are ULID strings; times are
//! RFC 3339 strings in UTC.
//!
//! Streams: the events stream first replays every event of the deployment so far (the CLI
//! subscribes only after the 202), then follows, and closes after the `finished` event. The logs
//! stream sends the last `tail` lines per replica, then follows if `follow=true`, otherwise
//! closes. Lines starting with `:` are keep-alive comments and are ignored by the client; an
//! error during a stream may be sent as a `data:` line holding an [`ApiError`].

use crate::config::ResolvedApp;
use serde::{Deserialize, Serialize};

/// `GET /health`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HealthResponse {
    /// Always "ok".
    pub status: String,
    pub version: String,
}

/// `GET /v1/version`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VersionResponse {
    pub version: String,
}

/// Body of every error response.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ApiError {
    /// One-line summary, e.g. "invalid app config" or "unauthorized".
    pub error: String,
    /// Individual problems (config validation lines), possibly empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub problems: Vec<String>,
}

/// `POST /v1/deploy`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeployRequest {
    pub app: ResolvedApp,
}

/// 202 answer of deploy and rollback.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeployAccepted {
    /// ULID of the new deployment; follow it at `/v1/deployments/{id}/events`.
    pub deployment_id: String,
}

/// 202 answer of stop (and remove).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobAccepted {
    /// ULID of the job; follow it at `/v1/jobs/{id}/events`.
    pub job_id: String,
}

/// The last deploy, rollback, stop or remove job of an app.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OperationSummary {
    pub job_id: String,
    /// "deploy", "rollback", "stop" or "remove".
    pub kind: String,
    /// "running", "succeeded" or "failed".
    pub state: String,
    /// RFC 3339.
    pub started_at: String,
    #[serde(default)]
    pub finished_at: Option<String>,
    /// The job's final message (what it did, or why it failed).
    #[serde(default)]
    pub message: Option<String>,
}

/// Kind of a [`DeployEvent`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// A replica moved to a new step (`step` is set).
    Step,
    /// A free-form progress or log line.
    Log,
    /// The deployment ended; `ok` says how. Always the last event of a stream.
    Finished,
}

/// Well-known values of [`DeployEvent::step`]; haloyd may send others.
pub mod steps {
    pub const PULLING: &str = "pulling";
    pub const STARTING: &str = "starting";
    pub const WAITING_HEALTH: &str = "waiting_health";
    pub const WAITING_MIN_READY: &str = "waiting_min_ready";
    pub const IN_ROTATION: &str = "in_rotation";
    pub const DRAINING: &str = "draining";
    pub const STOPPED: &str = "stopped";
    pub const REMOVED: &str = "removed";
    pub const FAILED: &str = "failed";
}

/// One server-sent event of a job's progress (deploys, rollbacks, stops).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeployEvent {
    /// The job id (for deploys and rollbacks, the deployment id).
    pub deployment_id: String,
    /// App name.
    pub app: String,
    /// RFC 3339.
    pub time: String,
    pub kind: EventKind,
    /// Replica index the event is about, if any (0-based, as in HALOY_REPLICA_ID and the
    /// container id suffix).
    #[serde(default)]
    pub replica: Option<u32>,
    /// See [`steps`]; set for `kind: step`.
    #[serde(default)]
    pub step: Option<String>,
    pub message: String,
    /// Set on `kind: finished` only: true when the deployment succeeded.
    #[serde(default)]
    pub ok: Option<bool>,
}

/// State of one replica in [`ReplicaStatus`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReplicaState {
    Starting,
    WaitingMinReady,
    Ready,
    Unhealthy,
    Draining,
    Exited,
    CrashLooping,
    Stopped,
}

impl ReplicaState {
    /// Human wording for tables ("waiting min_ready", "crash-looping").
    pub fn label(self) -> &'static str {
        match self {
            ReplicaState::Starting => "starting",
            ReplicaState::WaitingMinReady => "waiting min_ready",
            ReplicaState::Ready => "ready",
            ReplicaState::Unhealthy => "unhealthy",
            ReplicaState::Draining => "draining",
            ReplicaState::Exited => "exited",
            ReplicaState::CrashLooping => "crash-looping",
            ReplicaState::Stopped => "stopped",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReplicaStatus {
    /// Replica index (0-based, as in HALOY_REPLICA_ID and the container id suffix).
    pub replica: u32,
    pub container_id: String,
    pub state: ReplicaState,
    pub ip: Option<String>,
    pub uptime_seconds: u64,
    pub restarts: u32,
    /// Last health check result, e.g. "200 OK in 3ms" or "connection refused".
    pub last_health: Option<String>,
    /// Requests served through the proxy.
    pub requests: u64,
    /// Requests that ended in a proxy error (502/504...).
    pub errors: u64,
    pub in_flight: u64,
}

/// `GET /v1/apps/{name}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AppStatus {
    pub name: String,
    /// Current deployment (ULID).
    pub deployment_id: String,
    /// `repository:tag`.
    pub image: String,
    /// `sha256:...` of the image manifest, when known.
    pub digest: Option<String>,
    /// "rolling" or "replace".
    pub strategy: String,
    pub domains: Vec<String>,
    pub replicas: Vec<ReplicaStatus>,
    /// HTTPS certificate per canonical domain (empty when TLS is not managed).
    #[serde(default)]
    pub certificates: Vec<CertificateInfo>,
    /// The last deploy, rollback, stop or remove job and how it ended.
    #[serde(default)]
    pub last_operation: Option<OperationSummary>,
}

/// The certificate state of one domain, as `haloy status` shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CertificateInfo {
    pub domain: String,
    /// RFC 3339; `None` while no certificate has been obtained.
    pub expires: Option<String>,
    /// The last ACME (or certificate file) error; the old certificate keeps serving meanwhile.
    pub last_error: Option<String>,
    /// RFC 3339 time of the next attempt after a failure.
    pub next_retry: Option<String>,
}

/// Query of `GET /v1/apps/{name}/logs`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LogsQuery {
    /// Lines of history per replica before following (default 100).
    pub tail: u32,
    /// Keep the stream open for new lines.
    pub follow: bool,
    /// All replicas merged; otherwise the first replica (or `container`).
    pub all: bool,
    /// One container id.
    pub container: Option<String>,
}

impl LogsQuery {
    /// What haloyd serves for an empty query string.
    pub const DEFAULT_TAIL: u32 = 100;

    /// Reads a query string as [`LogsQuery::to_query_string`] writes it; absent keys keep
    /// their defaults (tail 100, follow, first replica) and a bare key means `true`.
    pub fn parse(query: &str) -> Result<Self, String> {
        let mut q = LogsQuery {
            tail: Self::DEFAULT_TAIL,
            follow: true,
            all: false,
            container: None,
        };
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            match key {
                "tail" => q.tail = parse_tail(value)?,
                "follow" => q.follow = parse_bool(key, value)?,
                "all" => q.all = parse_bool(key, value)?,
                "container" => q.container = Some(value.to_string()),
                other => return Err(format!("unknown query parameter `{other}`")),
            }
        }
        Ok(q)
    }

    /// `tail=100&follow=true&all=false[&container=ID]`.
    pub fn to_query_string(&self) -> String {
        let mut q = format!("tail={}&follow={}&all={}", self.tail, self.follow, self.all);
        if let Some(c) = &self.container {
            q.push_str("&container=");
            q.push_str(&percent_encode(c));
        }
        q
    }
}

/// Any count is accepted; more lines than `u32::MAX` means all of them anyway.
fn parse_tail(value: &str) -> Result<u32, String> {
    value
        .parse::<u64>()
        .map(|n| u32::try_from(n).unwrap_or(u32::MAX))
        .map_err(|_| format!("query parameter `tail` must be a number, got `{value}`"))
}

fn parse_bool(key: &str, value: &str) -> Result<bool, String> {
    match value {
        "true" | "1" | "" => Ok(true),
        "false" | "0" => Ok(false),
        _ => Err(format!(
            "query parameter `{key}` must be true or false, got `{value}`"
        )),
    }
}

/// Percent-encodes everything but unreserved characters (for path segments and query values).
pub fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Which output stream a log line came from (`stdout`/`stderr` on the wire).
pub use crate::runtime::LogStreamKind;

/// One server-sent event of `GET /v1/apps/{name}/logs`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LogLine {
    pub replica: u32,
    pub container_id: String,
    pub stream: LogStreamKind,
    /// RFC 3339.
    pub time: String,
    /// Without the trailing newline.
    pub line: String,
}

/// `POST /v1/apps/{name}/stop`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct StopRequest {
    /// Also delete containers and snapshots.
    pub remove_containers: bool,
    /// Also delete named volumes (only with `remove_containers`).
    pub remove_volumes: bool,
}

/// One entry of `GET /v1/apps/{name}/rollback-targets`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeploymentSummary {
    pub deployment_id: String,
    /// RFC 3339.
    pub created_at: String,
    /// `repository:tag`.
    pub image: String,
    pub digest: Option<String>,
    pub replicas: u32,
    /// True for the deployment that is running now.
    pub current: bool,
}

/// `POST /v1/apps/{name}/rollback`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RollbackRequest {
    pub deployment_id: String,
}

#[cfg(test)]
#[path = "tests/types.rs"]
mod tests;

/// `POST /v1/apps/{name}/prune-images` (Haloy's `haloy prune-images`): a dry run unless
/// `apply`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PruneImagesRequest {
    /// Images of the newest successful deployments kept (the running one always is).
    pub keep: u32,
    pub apply: bool,
}

/// One image of the app's history in a prune plan.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PrunedImage {
    /// `repository:tag`.
    pub image: String,
    /// Deployments that used it, newest first.
    pub deployment_ids: Vec<String>,
    /// `keep` or `remove` (done when the request applied the plan).
    pub action: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PruneImagesResponse {
    pub keep: u32,
    pub applied: bool,
    pub images: Vec<PrunedImage>,
}

/// `POST /v1/registries/login`: haloyd keeps the login (0600) and pulls with it from
/// `server` when an app gives no `image.registry`.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
pub struct RegistryLoginRequest {
    /// Registry host as in image references: `ghcr.io`, `127.0.0.1:5000`, `docker.io`.
    pub server: String,
    pub username: String,
    pub password: crate::config::SecretString,
}

impl std::fmt::Debug for RegistryLoginRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistryLoginRequest")
            .field("server", &self.server)
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

/// `POST /v1/registries/logout`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RegistryLogoutRequest {
    pub server: String,
}

/// One entry of `GET /v1/registries` (never the password).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RegistryEntry {
    pub server: String,
    pub username: String,
}
