//! haloyd's Prometheus/OpenMetrics metrics: the per-replica and proxy counters the request path
//! bumps (`counters`), per-app deploy outcomes, and the exporter that reads them together with
//! the route table (readiness), the certificates and the process (`process`) at scrape time and
//! renders them with `prometheus-client` (`exporter`), served on a loopback listener (`server`).
//!
//! Labels are bounded: `app`, `replica` (an index), `domain`, `outcome`, `class` — never a
//! path, a host header or a client address.

pub mod counters;
mod exporter;
mod process;
pub mod server;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

pub use counters::{LatencyHistogram, ProxyMetrics, ReplicaMetrics};
pub use exporter::{CertificateGauge, CertificateSource, Exporter};

/// Upper bounds of the deploy duration buckets, in seconds (`+Inf` is implied after the last).
const DEPLOY_BOUNDS_S: [f64; 10] = [1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0, 600.0];

/// Errors of the metrics listener.
#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    /// `metrics.listen` could not be bound.
    #[error("cannot listen for metrics on {addr} (server config `metrics.listen`): {source}")]
    Bind {
        addr: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// How a deploy ended, as counted in `haloy_deploys_total{outcome}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeployOutcome {
    Succeeded,
    Failed,
}

/// Deploy counts and durations of one app (the deploy path only: a mutex is fine here).
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct DeployStats {
    pub succeeded: u64,
    pub failed: u64,
    /// Non-cumulative counts per `DEPLOY_BOUNDS_S` bucket, then `+Inf`.
    pub buckets: [u64; DEPLOY_BOUNDS_S.len() + 1],
    pub sum_seconds: f64,
}

/// The process-wide registry of metric handles. Per-replica handles are created once per
/// (app, replica index) and shared by every backend of that replica, so the request path only
/// touches the atomics it holds.
#[derive(Debug, Default)]
pub struct Metrics {
    replicas: Mutex<BTreeMap<(String, u32), Arc<ReplicaMetrics>>>,
    deploys: Mutex<BTreeMap<String, DeployStats>>,
    proxy: Arc<ProxyMetrics>,
}

impl Metrics {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// The counters of `app`'s replica `replica` (created on first use).
    pub fn replica(&self, app: &str, replica: u32) -> Arc<ReplicaMetrics> {
        let mut replicas = lock(&self.replicas);
        Arc::clone(replicas.entry((app.to_string(), replica)).or_default())
    }

    /// Forget an app's series (it was removed from the server).
    pub fn forget_app(&self, app: &str) {
        lock(&self.replicas).retain(|(name, _), _| name != app);
        lock(&self.deploys).remove(app);
    }

    /// The proxy's connection counters (give them to `Proxy::new_metered`).
    pub fn proxy(&self) -> Arc<ProxyMetrics> {
        Arc::clone(&self.proxy)
    }

    /// A deploy of `app` ended with `outcome` after `took`.
    pub fn record_deploy(&self, app: &str, outcome: DeployOutcome, took: Duration) {
        let mut deploys = lock(&self.deploys);
        let stats = deploys.entry(app.to_string()).or_default();
        match outcome {
            DeployOutcome::Succeeded => stats.succeeded += 1,
            DeployOutcome::Failed => stats.failed += 1,
        }
        let seconds = took.as_secs_f64();
        let slot = DEPLOY_BOUNDS_S
            .iter()
            .position(|&bound| seconds <= bound)
            .unwrap_or(DEPLOY_BOUNDS_S.len());
        stats.buckets[slot] += 1;
        stats.sum_seconds += seconds;
    }

    pub(crate) fn replica_snapshot(&self) -> Vec<((String, u32), Arc<ReplicaMetrics>)> {
        lock(&self.replicas)
            .iter()
            .map(|(key, m)| (key.clone(), Arc::clone(m)))
            .collect()
    }

    pub(crate) fn deploy_snapshot(&self) -> Vec<(String, DeployStats)> {
        lock(&self.deploys)
            .iter()
            .map(|(app, stats)| (app.clone(), stats.clone()))
            .collect()
    }
}

/// Cumulative `(upper bound, count)` pairs of a deploy duration histogram.
pub(crate) fn deploy_buckets(stats: &DeployStats) -> Vec<(f64, u64)> {
    let mut cumulative = 0;
    stats
        .buckets
        .iter()
        .enumerate()
        .map(|(slot, count)| {
            cumulative += count;
            let bound = DEPLOY_BOUNDS_S.get(slot).copied().unwrap_or(f64::INFINITY);
            (bound, cumulative)
        })
        .collect()
}

/// A poisoned map only means a panic elsewhere mid-insert; the map itself is still valid.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
#[path = "tests/metrics.rs"]
mod tests;
