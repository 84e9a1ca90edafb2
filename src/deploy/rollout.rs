//! The two rollout strategies, built from the replica steps in `lifecycle`. Rolling keeps at
//! least N-1 replicas serving and, when a new replica fails, puts the old version back before
//! removing the new one, so a failed deploy leaves the app as it found it.

use std::sync::Arc;
use std::time::Instant;

use futures_util::future::join_all;

use super::lifecycle::{enter_rotation, retire, start_ready, Failure};
use super::progress::Reporter;
use super::replica::LiveReplica;
use super::{AppEntry, Deployer};
use crate::config::{DeploymentStrategy, ResolvedApp};
use crate::metrics::DeployOutcome;
use crate::runtime::{ImageInfo, ReplicaSpec};
use crate::state::DeployStatus;

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
    let counted = if outcome.is_ok() {
        DeployOutcome::Succeeded
    } else {
        DeployOutcome::Failed
    };
    deployer
        .metrics
        .record_deploy(&app.name, counted, started.elapsed());
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
                tracing::error!(error = %e, "deploy succeeded but its history could not be saved");
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
                tracing::error!(error = %e, "cannot record the failed deploy");
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
    let image = deployer
        .runtime
        .ensure_image(&deployer.image_request_with_login(app))
        .await?;
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

/// Keeps the images of the last `image.history.count` successful deploys; removes the rest.
async fn collect_old_images(deployer: &Deployer, app: &ResolvedApp) {
    let keep_count = app.image_history_count();
    let history = match deployer.state.history(&app.name) {
        Ok(history) => history,
        Err(e) => {
            tracing::warn!(error = %e, "image cleanup not done: history unreadable");
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
        tracing::warn!(error = %e, "image cleanup failed");
    }
}
