//! Watches task exits from the runtime. An exit takes the replica out of rotation at once
//! (before any health check notices); an exit haloyd did not ask for is a crash, answered
//! with a fresh replica after an exponential backoff. Repeated crashes show as crash_looping.
//! Exits missed while containerd was away are found by comparing with its task list, as soon
//! as the runtime's exit stream is back (a resync) and, as a safety net, every few minutes.

use std::sync::Arc;

use futures_util::future::BoxFuture;
use tracing::Instrument;

use tokio::sync::broadcast::error::RecvError;

use super::lifecycle;
use super::replica::{LiveReplica, Phase};
use super::{spans, AppEntry, Deployer};
use crate::runtime::TaskStatus;

/// Exits missed while containerd restarts are caught by the resync that follows the new
/// subscription; this slow comparison is for an exit a shim could not publish at all. Not
/// faster: each comparison lists every container and task, and keeps containerd's heap in
/// use on an idle host.
const RECONCILE_INTERVAL: std::time::Duration = std::time::Duration::from_secs(300);

pub(crate) fn spawn(deployer: Arc<Deployer>) {
    tokio::spawn(reconcile_periodically(deployer.clone()));
    tokio::spawn(reconcile_on_resync(deployer.clone()));
    let mut exits = deployer.runtime.subscribe_exits();
    tokio::spawn(async move {
        loop {
            match exits.recv().await {
                Ok(exit) => {
                    let Some((entry, replica)) = deployer.find_replica(&exit.container_id) else {
                        continue;
                    };
                    replica.mark_exited();
                    if replica.exit_expected() {
                        continue;
                    }
                    tracing::warn!(
                        app = %entry.name,
                        replica = replica.replica,
                        task_id = %replica.container_id,
                        exit_status = exit.exit_status,
                        "replica exited unexpectedly; taken out of rotation"
                    );
                    replica.set_phase(Phase::Exited);
                    tokio::spawn(restart(deployer.clone(), entry, replica));
                }
                Err(RecvError::Lagged(missed)) => {
                    tracing::warn!(missed, "missed task exit events; reconciling");
                    reconcile_exited(&deployer).await;
                }
                Err(RecvError::Closed) => return,
            }
        }
    });
}

async fn reconcile_periodically(deployer: Arc<Deployer>) {
    let mut ticker = tokio::time::interval(RECONCILE_INTERVAL);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticker.tick().await;
    loop {
        ticker.tick().await;
        reconcile_exited(&deployer).await;
    }
}

async fn reconcile_on_resync(deployer: Arc<Deployer>) {
    let mut resyncs = deployer.runtime.subscribe_resyncs();
    // Err: the runtime is gone, and with it every exit there is to hear.
    while resyncs.changed().await.is_ok() {
        tracing::debug!("runtime's exit stream made again; reconciling");
        reconcile_exited(&deployer).await;
    }
}

/// Replaces a crashed replica with a new container of the same spec, after a backoff.
/// Boxed because a restart that fails its readiness gate schedules the next one.
pub(crate) fn restart(
    deployer: Arc<Deployer>,
    entry: Arc<AppEntry>,
    crashed: Arc<LiveReplica>,
) -> BoxFuture<'static, ()> {
    let span = spans::restart(&entry.name, &crashed.spec.deployment_id, crashed.replica);
    Box::pin(restart_after_backoff(deployer, entry, crashed).instrument(span))
}

async fn restart_after_backoff(
    deployer: Arc<Deployer>,
    entry: Arc<AppEntry>,
    crashed: Arc<LiveReplica>,
) {
    let (backoff, looping) = crashed.record_crash(&[]);
    if looping {
        crashed.set_phase(Phase::CrashLooping);
    }
    tokio::time::sleep(backoff).await;
    // A successor haloyd is taking over and restarts it itself (recovery); should the
    // hand-over fail, the pause's resume restarts it here.
    if deployer.is_paused() {
        tracing::info!("restart left to the new haloyd (hand-over in progress)");
        deployer
            .skipped_restarts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push((entry, crashed));
        return;
    }
    // The app may have been stopped, redeployed or this replica retired meanwhile.
    let still_wanted = {
        let live = entry.live_lock();
        !live.stopped && live.replicas.iter().any(|r| Arc::ptr_eq(r, &crashed))
    };
    if !still_wanted {
        return;
    }
    let _ = lifecycle::stop(&deployer, &crashed, true).await;
    let restarts = crashed.restarts.load(std::sync::atomic::Ordering::Relaxed) + 1;
    let started =
        lifecycle::start(&deployer, crashed.spec.clone(), crashed.min_ready, restarts).await;
    let fresh = match started {
        Ok(fresh) => fresh,
        Err(e) => {
            tracing::error!(error = %e, "restart failed; trying again after a longer backoff");
            retry_later(deployer, entry, crashed);
            return;
        }
    };
    fresh.backend.metrics().record_restart();
    fresh.inherit_crashes(&crashed.recent_crashes());
    if looping {
        fresh.set_phase(Phase::CrashLooping);
    }
    {
        let mut live = entry.live_lock();
        live.replicas.retain(|r| !Arc::ptr_eq(r, &crashed));
        live.replicas.push(fresh.clone());
    }
    tracing::info!(task_id = %fresh.container_id, restarts, "replica restarted");
    admit_restarted(&deployer, &entry, &fresh).await;
}

/// A failed restart counts as another crash: the replica is tried again (with the grown
/// backoff) instead of being left dead.
fn retry_later(deployer: Arc<Deployer>, entry: Arc<AppEntry>, crashed: Arc<LiveReplica>) {
    crashed.set_phase(Phase::CrashLooping);
    tokio::spawn(restart(deployer, entry, crashed));
}

/// A replica restarted after a crash re-enters rotation through the same readiness gate as
/// a deploy; if it fails again it is restarted again after a longer backoff.
async fn admit_restarted(
    deployer: &Arc<Deployer>,
    entry: &Arc<AppEntry>,
    replica: &Arc<LiveReplica>,
) {
    let reporter = deployer.progress.detached(&entry.name);
    let crash_looping = replica.phase() == Phase::CrashLooping;
    replica.set_phase(Phase::WaitingHealth);
    match lifecycle::wait_ready(deployer, replica, &reporter).await {
        Ok(()) => {
            lifecycle::enter_rotation(deployer, entry, replica, &reporter);
            if crash_looping {
                replica.set_phase(Phase::CrashLooping);
            }
        }
        Err(failure) => {
            tracing::warn!("restarted replica not ready: {}", failure.message);
            replica.set_phase(Phase::Exited);
            tokio::spawn(restart(deployer.clone(), entry.clone(), replica.clone()));
        }
    }
}

/// After exit events may have been missed: every live replica whose task is gone is handled
/// as a crash. Only replicas live before the listing are judged: one a deploy starts while
/// the list is on its way is missing from it without having exited.
pub(crate) async fn reconcile_exited(deployer: &Arc<Deployer>) {
    let candidates: Vec<(Arc<AppEntry>, Arc<LiveReplica>)> = deployer
        .entries()
        .into_iter()
        .flat_map(|entry| {
            let replicas = entry.live_lock().replicas.clone();
            replicas.into_iter().map(move |r| (entry.clone(), r))
        })
        .collect();
    if candidates.is_empty() {
        return;
    }
    let running: Vec<String> = match deployer.runtime.list_replicas(None).await {
        Ok(found) => found
            .into_iter()
            .filter(|r| r.state == TaskStatus::Running)
            .map(|r| r.container_id)
            .collect(),
        Err(e) => {
            tracing::warn!(error = %e, "cannot reconcile with containerd");
            return;
        }
    };
    for (entry, replica) in candidates {
        let gone = !running.contains(&replica.container_id);
        if gone && !replica.exit_expected() && !replica.has_exited() {
            tracing::warn!(
                app = %entry.name,
                replica = replica.replica,
                task_id = %replica.container_id,
                "replica's task is gone (its exit event was missed); taken out of rotation"
            );
            replica.mark_exited();
            replica.set_phase(Phase::Exited);
            tokio::spawn(restart(deployer.clone(), entry, replica));
        }
    }
}
