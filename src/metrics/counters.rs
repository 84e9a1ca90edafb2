//! The counters the proxy's request path and accept loop bump: plain atomics, resolved once per
//! replica (stored in its `proxy::Backend`) so a request does no map lookup, no allocation and
//! takes no lock. The exporter reads them at scrape time.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds of the latency buckets, in microseconds (`+Inf` is implied after the last).
pub(crate) const LATENCY_BOUNDS_US: [u64; 13] = [
    1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000, 1_000_000, 2_500_000,
    5_000_000, 10_000_000,
];

/// A latency histogram of fixed buckets: one relaxed `fetch_add` per bucket and one for the sum.
#[derive(Debug, Default)]
pub struct LatencyHistogram {
    /// Non-cumulative counts; the last slot is `+Inf`.
    buckets: [AtomicU64; LATENCY_BOUNDS_US.len() + 1],
    sum_us: AtomicU64,
}

impl LatencyHistogram {
    /// Count one observation.
    pub fn observe(&self, elapsed: Duration) {
        let us = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
        let slot = LATENCY_BOUNDS_US
            .iter()
            .position(|&bound| us <= bound)
            .unwrap_or(LATENCY_BOUNDS_US.len());
        self.buckets[slot].fetch_add(1, Ordering::Relaxed);
        self.sum_us.fetch_add(us, Ordering::Relaxed);
    }

    /// (sum in seconds, count, cumulative `(upper bound in seconds, count)` per bucket).
    pub(crate) fn snapshot(&self) -> (f64, u64, Vec<(f64, u64)>) {
        let mut cumulative = 0;
        let mut buckets = Vec::with_capacity(self.buckets.len());
        for (slot, count) in self.buckets.iter().enumerate() {
            cumulative += count.load(Ordering::Relaxed);
            let bound = LATENCY_BOUNDS_US
                .get(slot)
                .map_or(f64::INFINITY, |&us| us as f64 / 1e6);
            buckets.push((bound, cumulative));
        }
        let sum = self.sum_us.load(Ordering::Relaxed) as f64 / 1e6;
        (sum, cumulative, buckets)
    }
}

/// Status classes counted per replica: 1xx … 5xx (index = class - 1).
pub(crate) const STATUS_CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

/// One replica's request counters, shared by every backend that serves as this app's replica
/// index (a new deployment's replica 2 continues the old one's series, so counters never
/// go backwards on a deploy).
#[derive(Debug, Default)]
pub struct ReplicaMetrics {
    responses: [AtomicU64; 5],
    in_flight: AtomicI64,
    bytes_in: AtomicU64,
    bytes_out: AtomicU64,
    connect_errors: AtomicU64,
    retries: AtomicU64,
    restarts: AtomicU64,
    first_byte: LatencyHistogram,
    total: LatencyHistogram,
}

/// A snapshot of one replica's counters for the exporter.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct ReplicaCounts {
    pub responses: [u64; 5],
    pub in_flight: i64,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub connect_errors: u64,
    pub retries: u64,
    pub restarts: u64,
}

impl ReplicaMetrics {
    /// A response with `status` went to a client (the app's, or the proxy's 502/504 for it).
    pub fn record_status(&self, status: u16) {
        let class = usize::from(status / 100).clamp(1, 5) - 1;
        self.responses[class].fetch_add(1, Ordering::Relaxed);
    }

    /// The response head arrived `elapsed` after the request was sent.
    pub fn record_first_byte(&self, elapsed: Duration) {
        self.first_byte.observe(elapsed);
    }

    /// The response body ended: `elapsed` since the request was sent, `bytes` of body sent.
    pub fn record_done(&self, elapsed: Duration, bytes: u64) {
        self.total.observe(elapsed);
        self.bytes_out.fetch_add(bytes, Ordering::Relaxed);
    }

    /// Request body bytes forwarded to the replica.
    pub fn add_bytes_in(&self, bytes: u64) {
        if bytes > 0 {
            self.bytes_in.fetch_add(bytes, Ordering::Relaxed);
        }
    }

    pub fn request_started(&self) {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
    }

    pub fn request_ended(&self) {
        self.in_flight.fetch_sub(1, Ordering::Relaxed);
    }

    /// Opening a connection to the replica failed.
    pub fn record_connect_error(&self) {
        self.connect_errors.fetch_add(1, Ordering::Relaxed);
    }

    /// A request was sent once more (fresh connection or another replica) after this one failed.
    pub fn record_retry(&self) {
        self.retries.fetch_add(1, Ordering::Relaxed);
    }

    /// The replica's task crashed and was started again.
    pub fn record_restart(&self) {
        self.restarts.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn counts(&self) -> ReplicaCounts {
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        ReplicaCounts {
            responses: std::array::from_fn(|i| load(&self.responses[i])),
            in_flight: self.in_flight.load(Ordering::Relaxed).max(0),
            bytes_in: load(&self.bytes_in),
            bytes_out: load(&self.bytes_out),
            connect_errors: load(&self.connect_errors),
            retries: load(&self.retries),
            restarts: load(&self.restarts),
        }
    }

    pub(crate) fn first_byte(&self) -> &LatencyHistogram {
        &self.first_byte
    }

    pub(crate) fn total(&self) -> &LatencyHistogram {
        &self.total
    }
}

/// The proxy's connection counters (all listeners together).
#[derive(Debug, Default)]
pub struct ProxyMetrics {
    accepted: AtomicU64,
    open: AtomicI64,
    /// Accepts that found `max_connections` used up and waited in the backlog for a slot.
    limited: AtomicU64,
    accept_errors: AtomicU64,
    tls_ok: AtomicU64,
    tls_failed: AtomicU64,
}

/// A snapshot of the proxy's counters for the exporter.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct ProxyCounts {
    pub accepted: u64,
    pub open: i64,
    pub limited: u64,
    pub accept_errors: u64,
    pub tls_ok: u64,
    pub tls_failed: u64,
}

impl ProxyMetrics {
    /// A client connection was accepted; it counts as open until [`ProxyMetrics::closed`].
    pub fn accepted(&self) {
        self.accepted.fetch_add(1, Ordering::Relaxed);
        self.open.fetch_add(1, Ordering::Relaxed);
    }

    pub fn closed(&self) {
        self.open.fetch_sub(1, Ordering::Relaxed);
    }

    /// The connection limit was reached: the next client waits in the listen backlog.
    pub fn limited(&self) {
        self.limited.fetch_add(1, Ordering::Relaxed);
    }

    /// `accept(2)` failed (e.g. out of file descriptors): the kernel dropped or kept the client.
    pub fn accept_error(&self) {
        self.accept_errors.fetch_add(1, Ordering::Relaxed);
    }

    /// A TLS handshake ended, completed or not (failed includes timed out).
    pub fn tls_handshake(&self, ok: bool) {
        let counter = if ok { &self.tls_ok } else { &self.tls_failed };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn counts(&self) -> ProxyCounts {
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        ProxyCounts {
            accepted: load(&self.accepted),
            open: self.open.load(Ordering::Relaxed).max(0),
            limited: load(&self.limited),
            accept_errors: load(&self.accept_errors),
            tls_ok: load(&self.tls_ok),
            tls_failed: load(&self.tls_failed),
        }
    }
}
