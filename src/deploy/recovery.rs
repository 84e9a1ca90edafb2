//! Rebuilding live state after haloyd starts: containerd's labels say which replicas exist,
//! the history says which config they belong to. Running replicas go straight back into
//! rotation (they were serving a moment ago; the health monitor removes any that are not),
//! replicas whose task died while haloyd was away are restarted, stopped apps stay stopped.
//! Containers of any other deployment (a rollout haloyd was killed in the middle of) keep
//! serving only until the current deployment has all its replicas again; then they retire.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::lifecycle;
use super::replica::{LiveReplica, Phase};
use super::supervisor::restart;
use super::{spans, AppEntry, DeployError, Deployer};
use crate::runtime::{ImageInfo, ImageRequest, PullPolicy, ReplicaInfo, TaskStatus};
use crate::state::DeploymentRecord;
use tracing::Instrument;

pub(crate) async fn recover(deployer: &Arc<Deployer>) -> Result<(), DeployError> {
    let found = deployer.runtime.list_replicas(None).await?;
    let mut by_app: BTreeMap<String, Vec<ReplicaInfo>> = BTreeMap::new();
    for info in found {
        by_app.entry(info.app.clone()).or_default().push(info);
    }
    for app in deployer.state.apps()? {
        by_app.entry(app).or_default();
    }
    for (app, replicas) in by_app {
        recover_app(deployer, &app, replicas).await?;
    }
    Ok(())
}

async fn recover_app(
    deployer: &Arc<Deployer>,
    app: &str,
    replicas: Vec<ReplicaInfo>,
) -> Result<(), DeployError> {
    let Some(current) = deployer.state.current(app)? else {
        if !replicas.is_empty() {
            tracing::warn!(
                app,
                count = replicas.len(),
                "containers without a deploy history are left alone"
            );
        }
        return Ok(());
    };
    let stopped = deployer.state.is_stopped(app)?;
    let last_operation = deployer.state.last_operation(app)?;
    let entry = deployer.entry(app);
    {
        let mut live = entry.live_lock();
        live.config = Some(current.config.clone());
        live.deployment_id = Some(current.id.clone());
        live.image = Some(current.image.clone());
        live.digest = current.digest.clone();
        live.stopped = stopped;
        live.last_operation = last_operation;
    }
    let mut restarted = 0;
    let mut strays = Vec::new();
    for info in replicas {
        let stray = info.deployment_id != current.id;
        if stray && info.state != TaskStatus::Running {
            remove_stray(deployer, &info.container_id).await;
            continue;
        }
        let record = deployer
            .state
            .get(app, &info.deployment_id)
            .unwrap_or_else(|_| current.clone());
        let Some(replica) = live_replica(deployer, &record, &info).await else {
            continue;
        };
        entry.live_lock().replicas.push(replica.clone());
        if stray {
            strays.push(replica.clone());
        }
        if info.state == TaskStatus::Running {
            // Routes are published once, after all of the app's replicas.
            lifecycle::rotate_in(deployer, &replica);
            replica.set_phase(Phase::Ready);
        } else if stopped {
            replica.expect_exit();
            replica.set_phase(Phase::Stopped);
        } else {
            replica.mark_exited();
            replica.set_phase(Phase::Exited);
            restarted += 1;
            tokio::spawn(restart(deployer.clone(), entry.clone(), replica));
        }
    }
    deployer.publish_routes(&entry);
    if !strays.is_empty() && !stopped {
        let span = spans::job(&entry.name, &current.id);
        tokio::spawn(
            settle_interrupted(deployer.clone(), entry.clone(), current, strays).instrument(span),
        );
    }
    let serving = entry
        .live_lock()
        .replicas
        .iter()
        .filter(|r| r.in_rotation())
        .count();
    tracing::info!(
        app,
        serving,
        restarted,
        stopped,
        "app recovered from containerd"
    );
    Ok(())
}

/// After a rollout was cut short by a haloyd restart: starts the current deployment's missing
/// replicas, then retires the other deployment's ones, holding the app's deploy lock so no
/// new deploy interleaves.
async fn settle_interrupted(
    deployer: Arc<Deployer>,
    entry: Arc<AppEntry>,
    current: DeploymentRecord,
    strays: Vec<Arc<LiveReplica>>,
) {
    let _guard = entry.lock.lock().await;
    let reporter = deployer.progress.detached(&entry.name);
    let present: Vec<u32> = entry
        .live_lock()
        .replicas
        .iter()
        .filter(|r| r.spec.deployment_id == current.id)
        .map(|r| r.replica)
        .collect();
    let image = local_image(&deployer, &current).await;
    for index in (0..current.config.replicas).filter(|i| !present.contains(i)) {
        let spec = current.config.replica_spec(&current.id, index, &image);
        match lifecycle::start_ready(
            &deployer,
            &entry,
            spec,
            current.config.min_ready_seconds,
            &reporter,
        )
        .await
        {
            Ok(replica) => lifecycle::enter_rotation(&deployer, &entry, &replica, &reporter),
            Err(failure) => {
                // Keep the interrupted deployment's replicas serving rather than shrink.
                tracing::error!(replica = index, "cannot restore a replica of the current deployment after an interrupted rollout: {}", failure.message);
                return;
            }
        }
    }
    for stray in strays {
        lifecycle::retire(&deployer, &entry, &stray, &reporter).await;
    }
    tracing::info!("interrupted rollout settled");
}

/// Deletes a stopped container of a deployment that is not the current one.
async fn remove_stray(deployer: &Deployer, container_id: &str) {
    if let Err(e) = deployer.runtime.remove_replica(container_id).await {
        tracing::warn!(task_id = %container_id, error = %e, "cannot remove a container of an interrupted rollout");
    }
}

async fn live_replica(
    deployer: &Deployer,
    record: &DeploymentRecord,
    info: &ReplicaInfo,
) -> Option<Arc<LiveReplica>> {
    let Some(ip) = info.ip else {
        tracing::warn!(app = %info.app, task_id = %info.container_id, "replica without an IP label; left alone");
        return None;
    };
    let image = local_image(deployer, record).await;
    let spec = record
        .config
        .replica_spec(&info.deployment_id, info.replica, &image);
    let addr = std::net::SocketAddr::new(ip, info.port);
    let min_ready = std::time::Duration::from_secs(u64::from(record.config.min_ready_seconds));
    Some(lifecycle::live_replica(
        &deployer.metrics,
        &info.container_id,
        spec,
        addr,
        min_ready,
        0,
    ))
}

/// The image is normally still in containerd; restarts need its config and chain id.
async fn local_image(deployer: &Deployer, record: &DeploymentRecord) -> ImageInfo {
    let mut request: ImageRequest = record.config.image_request();
    request.pull_policy = PullPolicy::Never;
    match deployer.runtime.ensure_image(&request).await {
        Ok(image) => image,
        Err(e) => {
            tracing::warn!(app = %record.app, error = %e, "image of a running replica is missing; crash restarts will pull it");
            ImageInfo {
                name: record.image.clone(),
                digest: record.digest.clone().unwrap_or_default(),
                config: Default::default(),
                chain_id: String::new(),
            }
        }
    }
}
