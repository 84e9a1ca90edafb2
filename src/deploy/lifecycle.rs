//! One replica's lifecycle, in one place: start → wait ready (`start_ready`), enter rotation
//! (`enter_rotation`, `rotate_in`), and out again: drain → stop → remove (`retire`), stop
//! (`stop`), or remove a replica that never served (`discard`). Rollout, supervisor and
//! recovery decide *when*; this module is *how*, and it imports none of them.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use tracing::Instrument;

use super::progress::Reporter;
use super::replica::{LiveReplica, Phase};
use super::{spans, AppEntry, Deployer};
use crate::health::{self, Monitor, ReadinessPolicy};
use crate::metrics::Metrics;
use crate::proxy::Backend;
use crate::runtime::{ReplicaSpec, RuntimeError};

/// How many of a failing replica's last log lines go into the deploy's failure report.
const FAILURE_LOG_LINES: usize = 50;

/// Why a replica (and so a rollout) failed, with what the operator needs to see.
pub(crate) struct Failure {
    pub message: String,
    pub logs: Vec<String>,
}

impl From<RuntimeError> for Failure {
    fn from(e: RuntimeError) -> Self {
        Failure {
            message: e.to_string(),
            logs: Vec::new(),
        }
    }
}

/// The live view of a container at `addr`: its proxy backend (not ready yet) and replica.
pub(crate) fn live_replica(
    metrics: &Metrics,
    container_id: &str,
    spec: ReplicaSpec,
    addr: SocketAddr,
    min_ready: Duration,
    restarts: u32,
) -> Arc<LiveReplica> {
    let counters = metrics.replica(&spec.app, spec.replica);
    let backend = Backend::new_metered(container_id.to_string(), spec.replica, addr, counters);
    LiveReplica::new(container_id.to_string(), spec, min_ready, backend, restarts)
}

/// Starts a task for `spec` and returns its live view, not yet tracked by the app.
pub(crate) async fn start(
    deployer: &Deployer,
    spec: ReplicaSpec,
    min_ready: Duration,
    restarts: u32,
) -> Result<Arc<LiveReplica>, RuntimeError> {
    let started = deployer.runtime.start_replica(&spec).await?;
    let addr = SocketAddr::new(started.ip, spec.port);
    Ok(live_replica(
        &deployer.metrics,
        &started.container_id,
        spec,
        addr,
        min_ready,
        restarts,
    ))
}

/// Starts one replica and waits until it may take traffic. On failure it is removed again
/// and its last log lines are returned.
pub(crate) async fn start_ready(
    deployer: &Arc<Deployer>,
    entry: &Arc<AppEntry>,
    spec: ReplicaSpec,
    min_ready_seconds: u32,
    reporter: &Reporter,
) -> Result<Arc<LiveReplica>, Failure> {
    let span = spans::replica(spec.replica);
    start_ready_in_span(deployer, entry, spec, min_ready_seconds, reporter)
        .instrument(span)
        .await
}

async fn start_ready_in_span(
    deployer: &Arc<Deployer>,
    entry: &Arc<AppEntry>,
    spec: ReplicaSpec,
    min_ready_seconds: u32,
    reporter: &Reporter,
) -> Result<Arc<LiveReplica>, Failure> {
    let number = spec.replica;
    reporter.step(
        Some(number),
        "starting",
        format!("starting replica {number}"),
    );
    let min_ready = Duration::from_secs(u64::from(min_ready_seconds));
    let replica = start(deployer, spec, min_ready, 0).await?;
    replica.set_phase(Phase::WaitingHealth);
    entry.live_lock().replicas.push(replica.clone());
    match wait_ready(deployer, &replica, reporter).await {
        Ok(()) => Ok(replica),
        Err(failure) => {
            discard(deployer, entry, &replica).await;
            Err(failure)
        }
    }
}

/// The readiness gate (health check, then `min_ready`); sets the phase as it goes.
pub(crate) async fn wait_ready(
    deployer: &Arc<Deployer>,
    replica: &Arc<LiveReplica>,
    reporter: &Reporter,
) -> Result<(), Failure> {
    let number = replica.replica;
    let path = replica.spec.health_check_path.clone();
    let addr = replica.backend.addr();
    let min_ready = replica.min_ready;
    reporter.step(
        Some(number),
        "waiting_health",
        format!("waiting for GET {path} on {addr} to answer 2xx/3xx"),
    );
    let policy = ReadinessPolicy {
        attempt_timeout: deployer.settings.health_attempt_timeout,
        deadline: deployer.settings.deploy_timeout,
        min_ready,
        started_at: replica.started_instant(),
    };
    let watched = replica.clone();
    let alive = move || !watched.has_exited();
    let phased = replica.clone();
    let on_healthy = move || {
        if !min_ready.is_zero() {
            phased.set_phase(Phase::WaitingMinReady);
        }
    };
    match health::wait_ready_observed(addr, &path, policy, &alive, &on_healthy).await {
        Ok(()) => {
            replica.set_phase(Phase::Ready);
            Ok(())
        }
        Err(e) => {
            let logs = last_logs(deployer, &replica.container_id).await;
            let message = format!(
                "replica {number} ({}) did not become ready: {e}",
                replica.container_id
            );
            reporter.step(Some(number), "failed", message.clone());
            Err(Failure { message, logs })
        }
    }
}

/// Marks the replica as serving and watches its health, without publishing routes: the
/// caller publishes once (recovery does so after all replicas of an app).
pub(crate) fn rotate_in(deployer: &Deployer, replica: &LiveReplica) {
    replica.backend.set_ready(true);
    replica.set_in_rotation(true);
    replica.set_monitor(Monitor::spawn(
        replica.backend.clone(),
        replica.spec.health_check_path.clone(),
        deployer.settings.monitor,
    ));
}

/// A ready replica takes traffic: in rotation, routes published, progress reported.
pub(crate) fn enter_rotation(
    deployer: &Arc<Deployer>,
    entry: &Arc<AppEntry>,
    replica: &Arc<LiveReplica>,
    reporter: &Reporter,
) {
    rotate_in(deployer, replica);
    deployer.publish_routes(entry);
    reporter.step(
        Some(replica.replica),
        "in_rotation",
        format!(
            "replica {} ({}) is in rotation",
            replica.replica,
            replica.backend.addr()
        ),
    );
}

/// Out of rotation, drained, stopped, removed.
pub(crate) async fn retire(
    deployer: &Arc<Deployer>,
    entry: &Arc<AppEntry>,
    replica: &Arc<LiveReplica>,
    reporter: &Reporter,
) {
    let number = replica.replica;
    replica.set_in_rotation(false);
    replica.set_phase(Phase::Draining);
    deployer.publish_routes(entry);
    reporter.step(
        Some(number),
        "draining",
        format!("draining {}", replica.container_id),
    );
    replica.backend.drain(deployer.settings.drain_timeout).await;
    if let Err(e) = stop(deployer, replica, true).await {
        reporter.step(
            Some(number),
            "stop_failed",
            format!("{}: {e}", replica.container_id),
        );
    } else {
        reporter.step(
            Some(number),
            "removed",
            format!("{} stopped and removed", replica.container_id),
        );
    }
    untrack(entry, replica);
}

/// Stops the task (SIGTERM, then SIGKILL after the app's stop_timeout) and optionally
/// removes container, snapshot and network.
pub(crate) async fn stop(
    deployer: &Deployer,
    replica: &LiveReplica,
    remove: bool,
) -> Result<(), RuntimeError> {
    replica.expect_exit();
    replica.stop_monitor();
    replica.backend.mark_down();
    if !replica.has_exited() {
        deployer
            .runtime
            .stop_replica(&replica.container_id, replica.spec.stop_timeout)
            .await?;
    }
    replica.set_phase(Phase::Stopped);
    if remove {
        deployer
            .runtime
            .remove_replica(&replica.container_id)
            .await?;
    }
    Ok(())
}

/// Removes a replica that never entered rotation.
pub(crate) async fn discard(deployer: &Deployer, entry: &AppEntry, replica: &Arc<LiveReplica>) {
    if let Err(e) = stop(deployer, replica, true).await {
        tracing::warn!(task_id = %replica.container_id, error = %e, "cannot remove failed replica");
    }
    untrack(entry, replica);
}

fn untrack(entry: &AppEntry, replica: &LiveReplica) {
    entry
        .live_lock()
        .replicas
        .retain(|r| r.container_id != replica.container_id);
}

async fn last_logs(deployer: &Deployer, container_id: &str) -> Vec<String> {
    let Ok(stream) = deployer
        .runtime
        .logs(container_id, Some(FAILURE_LOG_LINES), false)
        .await
    else {
        return Vec::new();
    };
    stream
        .filter_map(|line| async move { line.ok() })
        .map(|line| line.line)
        .collect()
        .await
}
