//! One replica as the proxy sees it: its address, readiness flag, counters, the idle upstream
//! connection pool and the drain/tunnel-close machinery used when it leaves rotation.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::upstream::PooledConn;
use crate::metrics::ReplicaMetrics;

/// Upper bounds (in microseconds) of the latency histogram buckets; the last bucket is open.
const LATENCY_BUCKETS_US: [u64; 14] = [
    500,
    1_000,
    2_000,
    5_000,
    10_000,
    25_000,
    50_000,
    100_000,
    250_000,
    500_000,
    1_000_000,
    2_500_000,
    10_000_000,
    u64::MAX,
];

/// Most idle keep-alive connections kept per backend; more are closed after use.
const MAX_IDLE_CONNECTIONS: usize = 128;

/// A replica the proxy can route to. Shared as `Arc<Backend>` between the route table, the
/// health monitor and the deploy logic; every method is cheap and lock-free on the hot path.
#[derive(Debug)]
pub struct Backend {
    id: String,
    replica: u32,
    addr: SocketAddr,
    ready: AtomicBool,
    draining: AtomicBool,
    counters: Counters,
    drained: Notify,
    tunnels_closed: CancellationToken,
    idle: Mutex<Vec<PooledConn>>,
    /// The exported counters of this app's replica index, resolved once at creation.
    metrics: Arc<ReplicaMetrics>,
}

#[derive(Debug, Default)]
struct Counters {
    requests: AtomicU64,
    errors: AtomicU64,
    in_flight: AtomicU64,
    tunnels: AtomicU64,
    latency_sum_us: AtomicU64,
    latency_buckets: [AtomicU64; LATENCY_BUCKETS_US.len()],
}

/// A point-in-time copy of a backend's counters, for `haloy status`.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct BackendStats {
    /// Container (task) id this backend belongs to.
    pub id: String,
    /// Replica index within the app.
    pub replica: u32,
    /// Task address the proxy connects to.
    pub addr: SocketAddr,
    /// Whether the backend currently receives new requests.
    pub ready: bool,
    /// Whether the backend is being drained out of rotation.
    pub draining: bool,
    /// Requests that got a response head from this backend (any status).
    pub requests: u64,
    /// Requests that failed at this backend (connect error, timeout, reset, 5xx from proxy).
    pub errors: u64,
    /// Requests currently being served (until the response body is done).
    pub in_flight: u64,
    /// Open upgraded tunnels (WebSocket).
    pub tunnels: u64,
    /// Mean time to response head, in milliseconds (0 when no request yet).
    pub latency_mean_ms: f64,
    /// Approximate median time to response head (histogram bucket upper bound), in ms.
    pub latency_p50_ms: f64,
    /// Approximate 99th percentile time to response head (histogram bucket upper bound), in ms.
    pub latency_p99_ms: f64,
}

/// How a [`Backend::drain`] ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DrainOutcome {
    /// Every in-flight request finished before the timeout.
    Drained,
    /// The timeout hit with this many requests still in flight; they are left to finish or fail.
    TimedOut {
        /// Requests still running when the timeout hit.
        in_flight: u64,
    },
}

impl DrainOutcome {
    /// Requests still running when the drain ended (0 when drained).
    pub fn in_flight_left(&self) -> u64 {
        match self {
            DrainOutcome::Drained => 0,
            DrainOutcome::TimedOut { in_flight } => *in_flight,
        }
    }
}

impl Backend {
    /// A backend for replica `replica` of container `id`, reachable at `addr`. It starts
    /// not ready: the deploy logic calls [`Backend::set_ready`] once readiness passed.
    pub fn new(id: String, replica: u32, addr: SocketAddr) -> Arc<Self> {
        Self::new_metered(id, replica, addr, Arc::default())
    }

    /// [`Backend::new`] counting into `metrics` (from `Metrics::replica`) for the exporter.
    pub fn new_metered(
        id: String,
        replica: u32,
        addr: SocketAddr,
        metrics: Arc<ReplicaMetrics>,
    ) -> Arc<Self> {
        Arc::new(Self {
            id,
            replica,
            addr,
            ready: AtomicBool::new(false),
            draining: AtomicBool::new(false),
            counters: Counters::default(),
            drained: Notify::new(),
            tunnels_closed: CancellationToken::new(),
            idle: Mutex::new(Vec::new()),
            metrics,
        })
    }

    /// The exported counters of this replica.
    pub fn metrics(&self) -> &ReplicaMetrics {
        &self.metrics
    }

    /// Container (task) id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Replica index within the app.
    pub fn replica(&self) -> u32 {
        self.replica
    }

    /// Task address (IP:port) the proxy connects to.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Put the backend in or out of rotation. Ignored (stays out) once draining started.
    pub fn set_ready(&self, ready: bool) {
        let ready = ready && !self.is_draining();
        let was = self.ready.swap(ready, Ordering::AcqRel);
        if was != ready {
            tracing::info!(backend = %self.addr, task_id = %self.id, replica = self.replica, ready, "backend readiness changed");
        }
    }

    /// True when the backend receives new requests.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    /// True once [`Backend::drain`] was called.
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
    }

    /// Take the backend out of rotation at once (task exited, connection refused). The health
    /// monitor re-admits it after `rise` consecutive successes.
    pub fn mark_down(&self) {
        if self.ready.swap(false, Ordering::AcqRel) {
            tracing::warn!(backend = %self.addr, task_id = %self.id, replica = self.replica, "backend marked down");
        }
        self.idle_pool().clear();
    }

    /// Stop sending new requests, wait until in-flight requests finished (or `timeout`), then
    /// close upgraded tunnels (WebSocket) to this backend and its idle pooled connections.
    /// Remove the backend from the route table before (or right after) calling this.
    pub fn drain(
        self: &Arc<Self>,
        timeout: Duration,
    ) -> impl std::future::Future<Output = DrainOutcome> + Send + 'static {
        let this = Arc::clone(self);
        this.draining.store(true, Ordering::Release);
        this.ready.store(false, Ordering::Release);
        async move {
            let outcome = match tokio::time::timeout(timeout, this.wait_no_in_flight()).await {
                Ok(()) => DrainOutcome::Drained,
                Err(_) => DrainOutcome::TimedOut {
                    in_flight: this.counters.in_flight.load(Ordering::Acquire),
                },
            };
            this.tunnels_closed.cancel();
            this.idle_pool().clear();
            tracing::info!(backend = %this.addr, task_id = %this.id, replica = this.replica, in_flight_left = outcome.in_flight_left(), "backend drained");
            outcome
        }
    }

    async fn wait_no_in_flight(&self) {
        loop {
            let notified = self.drained.notified();
            if self.counters.in_flight.load(Ordering::Acquire) == 0 {
                return;
            }
            notified.await;
        }
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> BackendStats {
        let c = &self.counters;
        let buckets: Vec<u64> = c
            .latency_buckets
            .iter()
            .map(|b| b.load(Ordering::Relaxed))
            .collect();
        let total: u64 = buckets.iter().sum();
        let sum_us = c.latency_sum_us.load(Ordering::Relaxed);
        BackendStats {
            id: self.id.clone(),
            replica: self.replica,
            addr: self.addr,
            ready: self.is_ready(),
            draining: self.is_draining(),
            requests: c.requests.load(Ordering::Relaxed),
            errors: c.errors.load(Ordering::Relaxed),
            in_flight: c.in_flight.load(Ordering::Relaxed),
            tunnels: c.tunnels.load(Ordering::Relaxed),
            latency_mean_ms: if total == 0 {
                0.0
            } else {
                sum_us as f64 / total as f64 / 1000.0
            },
            latency_p50_ms: percentile_ms(&buckets, total, 0.50),
            latency_p99_ms: percentile_ms(&buckets, total, 0.99),
        }
    }

    /// Count a request as started; the guard ends it when dropped (after the response body).
    pub(crate) fn start_request(self: &Arc<Self>) -> InFlight {
        self.counters.in_flight.fetch_add(1, Ordering::AcqRel);
        self.metrics.request_started();
        InFlight {
            backend: Arc::clone(self),
        }
    }

    /// Record a response head received after `elapsed`.
    pub(crate) fn record_response(&self, elapsed: Duration) {
        let us = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
        let c = &self.counters;
        c.requests.fetch_add(1, Ordering::Relaxed);
        c.latency_sum_us.fetch_add(us, Ordering::Relaxed);
        let idx = LATENCY_BUCKETS_US
            .iter()
            .position(|&b| us <= b)
            .unwrap_or(LATENCY_BUCKETS_US.len() - 1);
        c.latency_buckets[idx].fetch_add(1, Ordering::Relaxed);
        self.metrics.record_first_byte(elapsed);
    }

    /// Record a failed request (no usable response from this backend).
    pub(crate) fn record_error(&self) {
        self.counters.errors.fetch_add(1, Ordering::Relaxed);
    }

    /// Token cancelled when the drain finished: tunnels select on it and close.
    pub(crate) fn tunnels_closed(&self) -> &CancellationToken {
        &self.tunnels_closed
    }

    /// Count an upgraded tunnel while the guard lives.
    pub(crate) fn start_tunnel(self: &Arc<Self>) -> TunnelGuard {
        self.counters.tunnels.fetch_add(1, Ordering::Relaxed);
        TunnelGuard {
            backend: Arc::clone(self),
        }
    }

    /// Take an idle pooled connection, most recently used first.
    pub(crate) fn checkout(&self) -> Option<PooledConn> {
        self.idle_pool().pop()
    }

    /// Give a connection back for reuse after its response completed.
    pub(crate) fn checkin(&self, conn: PooledConn) {
        if self.is_draining() || !self.is_ready() {
            return;
        }
        let mut idle = self.idle_pool();
        if idle.len() < MAX_IDLE_CONNECTIONS {
            idle.push(conn);
        }
    }

    fn idle_pool(&self) -> std::sync::MutexGuard<'_, Vec<PooledConn>> {
        // A poisoned pool only means a panic elsewhere mid-push; the Vec is still valid.
        self.idle.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn percentile_ms(buckets: &[u64], total: u64, q: f64) -> f64 {
    if total == 0 {
        return 0.0;
    }
    let rank = ((total as f64) * q).ceil().max(1.0) as u64;
    let mut seen = 0;
    for (i, count) in buckets.iter().enumerate() {
        seen += count;
        if seen >= rank {
            let bound = LATENCY_BUCKETS_US[i];
            let bound = if bound == u64::MAX {
                LATENCY_BUCKETS_US[i - 1]
            } else {
                bound
            };
            return bound as f64 / 1000.0;
        }
    }
    0.0
}

/// Keeps a request counted as in flight on its backend; dropping it ends the request.
#[derive(Debug)]
pub(crate) struct InFlight {
    backend: Arc<Backend>,
}

impl InFlight {
    pub(crate) fn backend(&self) -> &Arc<Backend> {
        &self.backend
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.backend.metrics.request_ended();
        let before = self
            .backend
            .counters
            .in_flight
            .fetch_sub(1, Ordering::AcqRel);
        if before == 1 && self.backend.is_draining() {
            self.backend.drained.notify_waiters();
        }
    }
}

/// Counts an open tunnel on its backend.
#[derive(Debug)]
pub(crate) struct TunnelGuard {
    backend: Arc<Backend>,
}

impl Drop for TunnelGuard {
    fn drop(&mut self) {
        self.backend
            .counters
            .tunnels
            .fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
#[path = "tests/backend.rs"]
mod tests;
