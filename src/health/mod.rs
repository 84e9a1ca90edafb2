//! Readiness (health check with backoff + min_ready_seconds + re-check) and the continuous
//! rise/fall monitor that flips a backend's readiness in the proxy.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use http::{header, Request, StatusCode};
use http_body_util::Empty;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::proxy::Backend;

/// First wait between failed readiness attempts; doubles up to [`MAX_BACKOFF`]. Short,
/// because a fresh task usually binds its port within milliseconds of starting and every
/// extra wait here is added to each replica of a rolling deploy.
pub const INITIAL_BACKOFF: Duration = Duration::from_millis(100);
/// Longest wait between failed readiness attempts.
pub const MAX_BACKOFF: Duration = Duration::from_secs(8);
/// How often a waiting readiness gate asks `is_alive`.
const ALIVE_POLL: Duration = Duration::from_millis(100);

/// How a new replica must prove itself before it enters rotation.
#[derive(Debug, Clone, Copy)]
pub struct ReadinessPolicy {
    /// Time one health request may take.
    pub attempt_timeout: Duration,
    /// Give up after this long (from the call), e.g. the deploy timeout.
    pub deadline: Duration,
    /// The replica must have been running this long (`min_ready_seconds`).
    pub min_ready: Duration,
    /// When the task started.
    pub started_at: Instant,
}

/// Why a replica did not become ready. Each variant says what the last check saw.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ReadinessError {
    /// No passing check before the deadline.
    #[error(
        "replica at {addr} was not healthy on GET {path} within {deadline:?}; last check: {last}"
    )]
    Deadline {
        /// Replica address.
        addr: SocketAddr,
        /// Health check path.
        path: String,
        /// The configured deadline.
        deadline: Duration,
        /// What the last attempt saw.
        last: String,
    },
    /// Healthy at first, but failing after the `min_ready` window.
    #[error("replica at {addr} passed GET {path} but failed the re-check after min_ready {min_ready:?}: {last}")]
    Flapped {
        /// Replica address.
        addr: SocketAddr,
        /// Health check path.
        path: String,
        /// The configured window.
        min_ready: Duration,
        /// What the re-check saw.
        last: String,
    },
    /// The task exited while waiting.
    #[error("replica at {addr} exited before becoming ready; last check: {last}")]
    Exited {
        /// Replica address.
        addr: SocketAddr,
        /// What the last attempt saw.
        last: String,
    },
}

/// Wait until the replica at `addr` is ready: GET `path` answers 2xx/3xx (redirects not
/// followed) with backoff between attempts ([`INITIAL_BACKOFF`], 100 ms, doubling to 8 s), it
/// has been up `policy.min_ready` since `policy.started_at`, and a second check after that
/// window passes too. `is_alive` is polled while waiting so a task exit fails fast.
pub async fn wait_ready(
    addr: SocketAddr,
    path: &str,
    policy: ReadinessPolicy,
    is_alive: &(dyn Fn() -> bool + Sync),
) -> Result<(), ReadinessError> {
    wait_ready_observed(addr, path, policy, is_alive, &|| {}).await
}

/// [`wait_ready`], calling `on_healthy` once the first check passed (the replica is then only
/// waiting out `min_ready`), so status can tell the two waits apart.
pub async fn wait_ready_observed(
    addr: SocketAddr,
    path: &str,
    policy: ReadinessPolicy,
    is_alive: &(dyn Fn() -> bool + Sync),
    on_healthy: &(dyn Fn() + Sync),
) -> Result<(), ReadinessError> {
    let deadline_at = Instant::now() + policy.deadline;
    let mut backoff = INITIAL_BACKOFF;
    let mut last = String::from("no check ran yet");
    loop {
        if !is_alive() {
            return Err(ReadinessError::Exited { addr, last });
        }
        match probe(addr, path, policy.attempt_timeout).await {
            Ok(_) => break,
            Err(e) => last = e.to_string(),
        }
        let now = Instant::now();
        if now + backoff > deadline_at {
            return Err(ReadinessError::Deadline {
                addr,
                path: path.to_string(),
                deadline: policy.deadline,
                last,
            });
        }
        tracing::debug!(%addr, path, error = %last, ?backoff, "replica not healthy yet");
        if !sleep_while_alive(backoff, is_alive).await {
            return Err(ReadinessError::Exited { addr, last });
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
    on_healthy();
    let window_end = policy.started_at + policy.min_ready;
    let now = Instant::now();
    if window_end <= now {
        // The passing check itself happened after the window.
        return Ok(());
    }
    if window_end > deadline_at {
        let last = format!(
            "healthy, but min_ready {:?} ends after the deadline",
            policy.min_ready
        );
        return Err(ReadinessError::Deadline {
            addr,
            path: path.to_string(),
            deadline: policy.deadline,
            last,
        });
    }
    if !sleep_while_alive(window_end - now, is_alive).await {
        return Err(ReadinessError::Exited {
            addr,
            last: "healthy, then exited during min_ready".into(),
        });
    }
    probe(addr, path, policy.attempt_timeout)
        .await
        .map(|_| ())
        .map_err(|e| ReadinessError::Flapped {
            addr,
            path: path.to_string(),
            min_ready: policy.min_ready,
            last: e.to_string(),
        })
}

/// Sleep `dur`, returning false as soon as `is_alive` says the task is gone.
async fn sleep_while_alive(dur: Duration, is_alive: &(dyn Fn() -> bool + Sync)) -> bool {
    let until = Instant::now() + dur;
    loop {
        if !is_alive() {
            return false;
        }
        let now = Instant::now();
        if now >= until {
            return true;
        }
        tokio::time::sleep((until - now).min(ALIVE_POLL)).await;
    }
}

/// Why one health request failed.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum ProbeError {
    /// TCP connect failed.
    #[error("connect to {addr} failed: {reason}")]
    Connect {
        /// Target.
        addr: SocketAddr,
        /// OS error text.
        reason: String,
    },
    /// The whole request took longer than the timeout.
    #[error("no answer from {addr} within {timeout:?}")]
    Timeout {
        /// Target.
        addr: SocketAddr,
        /// The attempt timeout.
        timeout: Duration,
    },
    /// The HTTP exchange failed (bad response, connection closed).
    #[error("HTTP request to {addr} failed: {reason}")]
    Http {
        /// Target.
        addr: SocketAddr,
        /// hyper's error text.
        reason: String,
    },
    /// An answer outside 2xx/3xx.
    #[error("GET {path} on {addr} answered {status}")]
    Status {
        /// Target.
        addr: SocketAddr,
        /// Path asked.
        path: String,
        /// Status received.
        status: u16,
    },
}

/// One health request: GET `path` on a fresh connection; Ok(status) for 2xx/3xx.
pub async fn probe(
    addr: SocketAddr,
    path: &str,
    timeout: Duration,
) -> Result<StatusCode, ProbeError> {
    match tokio::time::timeout(timeout, probe_once(addr, path)).await {
        Ok(r) => r,
        Err(_) => Err(ProbeError::Timeout { addr, timeout }),
    }
}

async fn probe_once(addr: SocketAddr, path: &str) -> Result<StatusCode, ProbeError> {
    let http_err = |e: hyper::Error| ProbeError::Http {
        addr,
        reason: e.to_string(),
    };
    let stream = TcpStream::connect(addr)
        .await
        .map_err(|e| ProbeError::Connect {
            addr,
            reason: e.to_string(),
        })?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(http_err)?;
    let driver = tokio::spawn(conn);
    let req = Request::get(path)
        .header(header::HOST, addr.to_string())
        .header(header::USER_AGENT, "haloy-health/1")
        .header(header::CONNECTION, "close")
        .body(Empty::<Bytes>::new())
        .map_err(|e| ProbeError::Http {
            addr,
            reason: format!("invalid health check path {path:?}: {e}"),
        })?;
    let result = sender.send_request(req).await;
    driver.abort();
    let status = result.map_err(http_err)?.status();
    if status.is_success() || status.is_redirection() {
        Ok(status)
    } else {
        Err(ProbeError::Status {
            addr,
            path: path.to_string(),
            status: status.as_u16(),
        })
    }
}

/// Monitor cadence and thresholds (server config; defaults 5 s, 2 s, 3, 2).
#[derive(Debug, Clone, Copy)]
pub struct MonitorSettings {
    /// Time between checks.
    pub interval: Duration,
    /// Time one check may take.
    pub timeout: Duration,
    /// Consecutive failures that take a backend out of rotation.
    pub fall: u32,
    /// Consecutive successes that bring it back.
    pub rise: u32,
}

impl Default for MonitorSettings {
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(5),
            timeout: Duration::from_secs(2),
            fall: 3,
            rise: 2,
        }
    }
}

/// The latest check of a monitored backend, for `haloy status`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct HealthResult {
    /// When the check finished.
    pub at: SystemTime,
    /// Whether it passed.
    pub ok: bool,
    /// Status code or error text.
    pub detail: String,
    /// Consecutive passing checks.
    pub successes: u32,
    /// Consecutive failing checks.
    pub failures: u32,
}

/// Continuous rise/fall health monitoring of one backend.
#[derive(Debug)]
pub struct Monitor;

impl Monitor {
    /// Start checking `backend` every `settings.interval`; it leaves rotation after `fall`
    /// consecutive failures and comes back after `rise` consecutive successes (also after a
    /// [`Backend::mark_down`]). Stops when the handle is dropped or the backend drains.
    pub fn spawn(
        backend: Arc<Backend>,
        path: impl Into<String>,
        settings: MonitorSettings,
    ) -> MonitorHandle {
        let last = Arc::new(Mutex::new(None));
        let task = tokio::spawn(run_monitor(
            backend,
            path.into(),
            settings,
            Arc::clone(&last),
        ));
        MonitorHandle { task, last }
    }
}

/// Owns a running monitor; dropping it stops the monitor.
#[derive(Debug)]
pub struct MonitorHandle {
    task: tokio::task::JoinHandle<()>,
    last: Arc<Mutex<Option<HealthResult>>>,
}

impl MonitorHandle {
    /// The latest check result (None before the first check).
    pub fn last_result(&self) -> Option<HealthResult> {
        self.last.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

impl Drop for MonitorHandle {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Consecutive-result bookkeeping, separate from I/O so it is unit-testable.
#[derive(Debug, Default)]
struct RiseFall {
    successes: u32,
    failures: u32,
    saw_ready: bool,
}

impl RiseFall {
    /// Record a check; returns the readiness to set, if it must change.
    fn record(&mut self, ok: bool, ready_now: bool, settings: &MonitorSettings) -> Option<bool> {
        if self.saw_ready && !ready_now {
            // Someone else (task exit, refused connection) took it out: earn `rise` again.
            self.successes = 0;
        }
        let decision = if ok {
            self.successes = self.successes.saturating_add(1);
            self.failures = 0;
            (!ready_now && self.successes >= settings.rise).then_some(true)
        } else {
            self.failures = self.failures.saturating_add(1);
            self.successes = 0;
            (ready_now && self.failures >= settings.fall).then_some(false)
        };
        self.saw_ready = decision.unwrap_or(ready_now);
        decision
    }
}

async fn run_monitor(
    backend: Arc<Backend>,
    path: String,
    settings: MonitorSettings,
    last: Arc<Mutex<Option<HealthResult>>>,
) {
    let mut state = RiseFall {
        saw_ready: backend.is_ready(),
        ..RiseFall::default()
    };
    let mut ticker = tokio::time::interval(settings.interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticker.tick().await;
    loop {
        ticker.tick().await;
        if backend.is_draining() {
            return;
        }
        let result = probe(backend.addr(), &path, settings.timeout).await;
        let ok = result.is_ok();
        let detail = match &result {
            Ok(status) => status.as_u16().to_string(),
            Err(e) => e.to_string(),
        };
        if let Some(ready) = state.record(ok, backend.is_ready(), &settings) {
            tracing::info!(task_id = backend.id(), replica = backend.replica(), ready, detail = %detail, "health monitor flips readiness");
            backend.set_ready(ready);
        }
        let snapshot = HealthResult {
            at: SystemTime::now(),
            ok,
            detail,
            successes: state.successes,
            failures: state.failures,
        };
        *last.lock().unwrap_or_else(|p| p.into_inner()) = Some(snapshot);
    }
}

#[cfg(test)]
#[path = "tests/health.rs"]
mod tests;
