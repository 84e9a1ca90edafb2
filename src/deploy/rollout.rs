//! The two rollout strategies and the replica lifecycle steps they share (start → ready →
//! rotation; rotation → drain → stop → remove). Rolling keeps at least N-1 replicas serving
//! and, when a new replica fails, puts the old version back before removing the new one, so a
//! failed deploy leaves the app as it found it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::future::join_all;
use futures_util::StreamExt;

use super::progress::Reporter;
use super::replica::{LiveReplica, Phase};
use super::{AppEntry, Deployer};
use crate::config::{DeploymentStrategy, ResolvedApp};
use crate::health::{self, Monitor, ReadinessPolicy};
use crate::proxy::Backend;
use crate::runtime::{ImageInfo, ReplicaSpec, RuntimeError};
use crate::state::DeployStatus;

/// How many of a failing replica's last log lines go into the deploy's failure report.
const FAILURE_LOG_LINES: usize = 50;

/// Why a rollout stopped, with what the operator needs to see.
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

/// Runs a rollout to its end and records it in the history; returns (succeeded, message) for
/// the job's `finished` event.
pub(crate) async fn run(
    deployer: &Arc<Deployer>,
    entry: &Arc<AppEntry>,
    app: ResolvedApp,
    reporter: &Reporter,
) -> (bool, String) {
    let started = Instant::now();
    let outcome = execute(deployer, entry, &app, reporter).await;
    let id = reporter.deployment_id.clone();
    match outcome {
        Ok(image) => {
            {
                let mut live = entry.live_lock();
                live.deployment_id = Some(id.clone());
                live.image = Some(image.name.clone());
                live.digest = Some(image.digest.clone());
                live.stopped = false;
            }
            let recorded = deployer
                .state
                .finish(
                    &app.name,
                    &id,
                    DeployStatus::Succeeded,
                    Some((image.name.clone(), image.digest.clone())),
                    None,
                )
                .and_then(|()| deployer.state.set_stopped(&app.name, false));
            if let Err(e) = recorded {
                tracing::error!(app = %app.name, error = %e, "deploy succeeded but its history could not be saved");
            }
            deployer.notify_changed();
            collect_old_images(deployer, &app).await;
            (
                true,
                format!(
                    "{} replica(s) of {} serving ({:.1}s)",
                    app.replicas,
                    image.name,
                    started.elapsed().as_secs_f64()
                ),
            )
        }
        Err(failure) => {
            for line in &failure.logs {
                reporter.log(None, line.clone());
            }
            if let Err(e) = deployer.state.finish(
                &app.name,
                &id,
                DeployStatus::Failed,
                None,
                Some(failure.message.clone()),
            ) {
                tracing::error!(app = %app.name, error = %e, "cannot record the failed deploy");
            }
            (false, failure.message)
        }
    }
}

async fn execute(
    deployer: &Arc<Deployer>,
    entry: &Arc<AppEntry>,
    app: &ResolvedApp,
    reporter: &Reporter,
) -> Result<ImageInfo, Failure> {
    let reserved = reserved_memory(entry);
    super::preflight::check_resources(app, reserved).map_err(|message| Failure {
        message,
        logs: Vec::new(),
    })?;
    let reference = app.image_reference();
    reporter.step(None, "pulling", format!("pulling {reference}"));
    let image = deployer.runtime.ensure_image(&app.image_request()).await?;
    reporter.step(None, "pulled", format!("{} ({})", image.name, image.digest));
    let specs: Vec<ReplicaSpec> = (0..app.replicas)
        .map(|i| app.replica_spec(&reporter.deployment_id, i, &image))
        .collect();
    match app.deployment_strategy {
        DeploymentStrategy::Rolling => rolling(deployer, entry, app, specs, reporter).await?,
        DeploymentStrategy::Replace => replace(deployer, entry, app, specs, reporter).await?,
    }
    routes_published(deployer, app)?;
    Ok(image)
}

/// A deploy whose hosts do not route to it has not succeeded, whatever its replicas do.
/// Domain claims make this unreachable; it keeps a refused route from passing as success.
fn routes_published(deployer: &Deployer, app: &ResolvedApp) -> Result<(), Failure> {
    let table = deployer.routes.load();
    let unpublished: Vec<String> = app
        .domains
        .iter()
        .flat_map(|d| std::iter::once(&d.domain).chain(&d.aliases))
        .filter(|host| table.owner(host) != Some(app.name.as_str()))
        .map(|host| match table.owner(host) {
            Some(owner) => format!("`{host}` routes to app `{owner}`"),
            None => format!("`{host}` is not routed"),
        })
        .collect();
    if unpublished.is_empty() {
        return Ok(());
    }
    Err(Failure {
        message: format!("the route was not published: {}", unpublished.join(", ")),
        logs: Vec::new(),
    })
}

/// Memory limits held by the app's current replicas; a deploy frees them.
fn reserved_memory(entry: &AppEntry) -> u64 {
    entry
        .live_lock()
        .replicas
        .iter()
        .filter_map(|r| r.spec.resources.memory_bytes)
        .sum()
}

/// Old replicas, ordered by replica number: the ones a rollout replaces.
fn current_replicas(entry: &AppEntry) -> Vec<Arc<LiveReplica>> {
    let mut old = entry.live_lock().replicas.clone();
    old.sort_by_key(|r| r.replica);
    old
}

async fn rolling(
    deployer: &Arc<Deployer>,
    entry: &Arc<AppEntry>,
    app: &ResolvedApp,
    specs: Vec<ReplicaSpec>,
    reporter: &Reporter,
) -> Result<(), Failure> {
    let previous_config = entry.live_lock().config.clone();
    let (serving, idle): (Vec<_>, Vec<_>) = current_replicas(entry)
        .into_iter()
        .partition(|r| r.in_rotation());
    // Replicas that serve nothing (stopped app, crashed) have no traffic to protect.
    for replica in &idle {
        retire(deployer, entry, replica, reporter).await;
    }
    let mut specs = specs;
    let extra = specs.split_off(serving.len().min(specs.len()));
    let mut added: Vec<Arc<LiveReplica>> = Vec::new();
    let mut retired: Vec<ReplicaSpec> = Vec::new();
    // New capacity first, all at once: no old replica has to keep serving for these slots.
    if !extra.is_empty() {
        // On failure start_all removed what it started; nothing was replaced yet.
        let ready = start_all(deployer, entry, app, extra, reporter).await?;
        entry.live_lock().config = Some(app.clone());
        for new in ready {
            enter_rotation(deployer, entry, &new, reporter);
            added.push(new);
        }
    }
    // Then replace the serving replicas one at a time: at least N-1 keep serving.
    for (previous, spec) in serving.iter().zip(specs) {
        let new = match start_ready(deployer, entry, spec, app.min_ready_seconds, reporter).await {
            Ok(new) => new,
            Err(failure) => {
                restore(deployer, entry, previous_config, &retired, &added, reporter).await;
                return Err(failure);
            }
        };
        entry.live_lock().config = Some(app.clone());
        enter_rotation(deployer, entry, &new, reporter);
        added.push(new);
        retire(deployer, entry, previous, reporter).await;
        retired.push(previous.spec.clone());
    }
    for surplus in serving.iter().skip(retired.len()) {
        retire(deployer, entry, surplus, reporter).await;
    }
    entry.live_lock().config = Some(app.clone());
    deployer.publish_routes(entry);
    Ok(())
}

/// After a failed rolling step: bring back the old version for the replicas already
/// replaced, then remove the new ones, so the app ends as it was before the deploy.
async fn restore(
    deployer: &Arc<Deployer>,
    entry: &Arc<AppEntry>,
    previous_config: Option<crate::config::ResolvedApp>,
    retired: &[ReplicaSpec],
    added: &[Arc<LiveReplica>],
    reporter: &Reporter,
) {
    let previous_min_ready = previous_config.as_ref().map_or(0, |c| c.min_ready_seconds);
    if !retired.is_empty() {
        reporter.step(
            None,
            "restoring",
            format!(
                "restoring {} replica(s) of the previous version",
                retired.len()
            ),
        );
    }
    for spec in retired {
        match start_ready(deployer, entry, spec.clone(), previous_min_ready, reporter).await {
            Ok(restored) => enter_rotation(deployer, entry, &restored, reporter),
            Err(failure) => reporter.step(
                Some(spec.replica),
                "restore_failed",
                format!(
                    "could not restore the previous version: {}",
                    failure.message
                ),
            ),
        }
    }
    if previous_config.is_some() {
        entry.live_lock().config = previous_config;
    }
    for new in added {
        retire(deployer, entry, new, reporter).await;
    }
    deployer.publish_routes(entry);
}

async fn replace(
    deployer: &Arc<Deployer>,
    entry: &Arc<AppEntry>,
    app: &ResolvedApp,
    specs: Vec<ReplicaSpec>,
    reporter: &Reporter,
) -> Result<(), Failure> {
    let old = current_replicas(entry);
    for replica in &old {
        replica.set_in_rotation(false);
    }
    deployer.publish_routes(entry);
    join_all(old.iter().map(|r| retire(deployer, entry, r, reporter))).await;
    entry.live_lock().config = Some(app.clone());
    let ready = start_all(deployer, entry, app, specs, reporter)
        .await
        .map_err(|failure| Failure {
            message: format!(
                "{} (strategy replace: the previous replicas were already stopped)",
                failure.message
            ),
            logs: failure.logs,
        })?;
    for replica in &ready {
        enter_rotation(deployer, entry, replica, reporter);
    }
    Ok(())
}

/// Starts `specs` concurrently and waits until all may take traffic, without putting them in
/// rotation. If any fails, the ready ones are removed again and the first failure returned.
async fn start_all(
    deployer: &Arc<Deployer>,
    entry: &Arc<AppEntry>,
    app: &ResolvedApp,
    specs: Vec<ReplicaSpec>,
    reporter: &Reporter,
) -> Result<Vec<Arc<LiveReplica>>, Failure> {
    let results = join_all(
        specs
            .into_iter()
            .map(|spec| start_ready(deployer, entry, spec, app.min_ready_seconds, reporter)),
    )
    .await;
    let mut ready = Vec::new();
    let mut failure = None;
    for result in results {
        match result {
            Ok(replica) => ready.push(replica),
            Err(f) => failure = failure.or(Some(f)),
        }
    }
    let Some(failure) = failure else {
        return Ok(ready);
    };
    for replica in &ready {
        retire(deployer, entry, replica, reporter).await;
    }
    Err(failure)
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
    let number = spec.replica;
    reporter.step(
        Some(number),
        "starting",
        format!("starting replica {number}"),
    );
    let info = deployer.runtime.start_replica(&spec).await?;
    let Some(ip) = info.ip else {
        let _ = deployer
            .runtime
            .stop_replica(&info.container_id, Duration::from_secs(1))
            .await;
        let _ = deployer.runtime.remove_replica(&info.container_id).await;
        return Err(Failure {
            message: format!(
                "replica {number} ({}) got no IP address from CNI",
                info.container_id
            ),
            logs: Vec::new(),
        });
    };
    let addr = std::net::SocketAddr::new(ip, spec.port);
    let backend = Backend::new(info.container_id.clone(), number, addr);
    let min_ready = Duration::from_secs(u64::from(min_ready_seconds));
    let replica = LiveReplica::new(info.container_id.clone(), spec, min_ready, backend, 0);
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

/// A replica restarted after a crash re-enters rotation through the same readiness gate as
/// a deploy; if it fails again the supervisor tries again after a longer backoff.
pub(crate) async fn admit_restarted(
    deployer: &Arc<Deployer>,
    entry: &Arc<AppEntry>,
    replica: &Arc<LiveReplica>,
) {
    let reporter = deployer.progress.detached(&entry.name);
    let crash_looping = replica.phase() == Phase::CrashLooping;
    replica.set_phase(Phase::WaitingHealth);
    match wait_ready(deployer, replica, &reporter).await {
        Ok(()) => {
            enter_rotation(deployer, entry, replica, &reporter);
            if crash_looping {
                replica.set_phase(Phase::CrashLooping);
            }
        }
        Err(failure) => {
            tracing::warn!(app = %entry.name, replica = replica.replica, "restarted replica not ready: {}", failure.message);
            replica.set_phase(Phase::Exited);
            tokio::spawn(super::supervisor::restart(
                deployer.clone(),
                entry.clone(),
                replica.clone(),
            ));
        }
    }
}

async fn wait_ready(
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

pub(crate) fn enter_rotation(
    deployer: &Arc<Deployer>,
    entry: &Arc<AppEntry>,
    replica: &Arc<LiveReplica>,
    reporter: &Reporter,
) {
    replica.backend.set_ready(true);
    replica.set_in_rotation(true);
    replica.set_monitor(Monitor::spawn(
        replica.backend.clone(),
        replica.spec.health_check_path.clone(),
        deployer.settings.monitor,
    ));
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
    if let Err(e) = stop_replica(deployer, replica, true).await {
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
    entry
        .live_lock()
        .replicas
        .retain(|r| r.container_id != replica.container_id);
}

/// Stops the task (SIGTERM, then SIGKILL after the app's stop_timeout) and optionally
/// removes container, snapshot and network.
pub(crate) async fn stop_replica(
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
async fn discard(deployer: &Deployer, entry: &AppEntry, replica: &Arc<LiveReplica>) {
    if let Err(e) = stop_replica(deployer, replica, true).await {
        tracing::warn!(task_id = %replica.container_id, error = %e, "cannot remove failed replica");
    }
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

/// Keeps the images of the last `image.history.count` successful deploys; removes the rest.
async fn collect_old_images(deployer: &Deployer, app: &ResolvedApp) {
    let keep_count = app.image_history_count();
    let history = match deployer.state.history(&app.name) {
        Ok(history) => history,
        Err(e) => {
            tracing::warn!(app = %app.name, error = %e, "image cleanup not done: history unreadable");
            return;
        }
    };
    let keep: Vec<String> = history
        .iter()
        .rev()
        .filter(|r| matches!(r.status, DeployStatus::Succeeded | DeployStatus::Superseded))
        .take(keep_count.max(1))
        .map(|r| r.image.clone())
        .collect();
    if let Err(e) = deployer
        .runtime
        .remove_unused_images(&app.name, &keep)
        .await
    {
        tracing::warn!(app = %app.name, error = %e, "image cleanup failed");
    }
}
