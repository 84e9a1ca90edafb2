//! Rollouts: rolling and replace strategies, per-app deploy lock, rollback, stop, crash
//! restarts with backoff, and the reconciliation that rebuilds routes from containerd after a
//! haloyd restart. This is the only module that moves replicas in and out of the proxy's
//! rotation; it talks to containerd only through the `Runtime` trait.

pub mod access;
mod claims;
mod hostpaths;
mod jobs;
mod lifecycle;
mod names;
mod plan;
mod preflight;
mod progress;
mod recovery;
mod replica;
mod rollout;
mod spans;
mod supervisor;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::{Stream, StreamExt};
use tracing::Instrument;

pub use hostpaths::HostPathPolicy;
pub use progress::{ProgressHub, Reporter};
pub use replica::{LiveReplica, Phase};

use crate::api::types::{
    AppStatus, DeployEvent, DeploymentSummary, LogLine, LogsQuery, ReplicaState, ReplicaStatus,
};
use crate::config::{DeploymentStrategy, HistoryStrategy, ResolvedApp};
use crate::health::MonitorSettings;
use crate::metrics::Metrics;
use crate::proxy::{AppRoute, DomainRoute, Routes};
use crate::runtime::{Runtime, RuntimeError};
use crate::state::{
    DeployStatus, DeploymentRecord, OperationKind, OperationRecord, StateError, StateStore,
};

#[derive(Debug, thiserror::Error)]
pub enum DeployError {
    #[error("invalid app config: {}", problems.join("; "))]
    InvalidConfig { problems: Vec<String> },
    /// Hosts another app serves or is deploying right now.
    #[error("{}", problems.join("; "))]
    DomainTaken { problems: Vec<String> },
    #[error("{}; wait for it to finish", busy_message(.app, .deployment_id))]
    Busy { app: String, deployment_id: String },
    #[error("app `{0}` is not deployed on this server")]
    UnknownApp(String),
    #[error("app `{app}` has no deployment `{id}` (see `haloy rollback-targets`)")]
    UnknownDeployment { app: String, id: String },
    #[error("deployment `{id}` of `{app}` cannot be rolled back to: {reason}")]
    NotRollbackable {
        app: String,
        id: String,
        reason: String,
    },
    #[error("haloyd is handing over to a new binary; try again in a few seconds")]
    HandingOver,
    #[error("cannot hand over: `{app}` is being deployed or stopped and did not finish within {waited:?}")]
    HandoverBusy { app: String, waited: Duration },
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    #[error(transparent)]
    State(#[from] StateError),
}

/// Names the job holding a busy app (its id is the deployment id for deploys and rollbacks);
/// only a lock taken outside any job has no id.
fn busy_message(app: &str, deployment_id: &str) -> String {
    if deployment_id.is_empty() {
        format!("`{app}` is being stopped or deployed right now")
    } else {
        format!(
            "another operation on `{app}` is already in progress (deployment {deployment_id}); `haloy attach {deployment_id}` follows it"
        )
    }
}

/// Settings from haloyd's server config that shape every rollout.
#[derive(Debug, Clone)]
pub struct DeploySettings {
    /// A new replica that is not ready within this time fails the deploy.
    pub deploy_timeout: Duration,
    /// One health-check request may take this long.
    pub health_attempt_timeout: Duration,
    pub monitor: MonitorSettings,
    /// In-flight requests of a replica leaving rotation get this long to finish.
    pub drain_timeout: Duration,
    /// Root of named volumes: `<volumes_dir>/<app>/<name>`.
    pub volumes_dir: PathBuf,
    /// Host paths apps may not bind-mount.
    pub host_paths: HostPathPolicy,
    /// The init binary `init: true` needs (checked before a deploy starts).
    pub init_binary: PathBuf,
}

/// Live state of one app. Its `lock` serialises deploys, rollbacks and stops of the app.
pub(crate) struct AppEntry {
    pub name: String,
    pub lock: Arc<tokio::sync::Mutex<()>>,
    pub live: Mutex<LiveApp>,
}

#[derive(Default)]
pub(crate) struct LiveApp {
    pub config: Option<ResolvedApp>,
    pub deployment_id: Option<String>,
    pub image: Option<String>,
    pub digest: Option<String>,
    pub replicas: Vec<Arc<LiveReplica>>,
    pub in_progress: Option<String>,
    pub stopped: bool,
    /// The last deploy, rollback, stop or remove job (also in the history file).
    pub last_operation: Option<OperationRecord>,
}

pub struct Deployer {
    pub(crate) runtime: Arc<dyn Runtime>,
    pub(crate) routes: Routes,
    pub(crate) state: StateStore,
    pub(crate) progress: Arc<ProgressHub>,
    pub(crate) settings: DeploySettings,
    apps: Mutex<HashMap<String, Arc<AppEntry>>>,
    domain_claims: Arc<claims::DomainClaims>,
    /// Bumped whenever the set of deployed domains may have changed (TLS follows it).
    changes: tokio::sync::watch::Sender<u64>,
    /// Set while a successor haloyd takes over: no deploy, stop or crash restart starts here,
    /// so two daemons sharing containerd never act on the same replicas.
    pub(crate) paused: AtomicBool,
    /// Crash restarts skipped while paused; started if the hand-over fails.
    pub(crate) skipped_restarts: Mutex<Vec<(Arc<AppEntry>, Arc<LiveReplica>)>>,
    /// Per-replica counters handed to each new backend, and deploy outcomes.
    pub(crate) metrics: Arc<Metrics>,
}

/// Holds every app's deploy lock while a successor starts (see [`Deployer::pause_for_handover`]).
pub struct HandoverPause {
    deployer: Arc<Deployer>,
    _locks: Vec<tokio::sync::OwnedMutexGuard<()>>,
}

impl HandoverPause {
    /// The hand-over failed: this daemon goes on, and restarts what crashed meanwhile.
    pub fn resume(self) {
        self.deployer.paused.store(false, Ordering::SeqCst);
        let skipped = std::mem::take(
            &mut *self
                .deployer
                .skipped_restarts
                .lock()
                .unwrap_or_else(|p| p.into_inner()),
        );
        for (entry, replica) in skipped {
            tokio::spawn(supervisor::restart(self.deployer.clone(), entry, replica));
        }
        let deployer = self.deployer.clone();
        tokio::spawn(async move { supervisor::reconcile_exited(&deployer).await });
        tracing::info!("deploys and crash restarts resumed");
    }
}

impl Deployer {
    pub fn new(
        runtime: Arc<dyn Runtime>,
        routes: Routes,
        state: StateStore,
        settings: DeploySettings,
    ) -> Arc<Self> {
        Arc::new(Self {
            runtime,
            routes,
            state,
            progress: Arc::new(ProgressHub::default()),
            settings,
            apps: Mutex::new(HashMap::new()),
            domain_claims: Arc::default(),
            changes: tokio::sync::watch::Sender::new(0),
            paused: AtomicBool::new(false),
            skipped_restarts: Mutex::new(Vec::new()),
            metrics: Metrics::new(),
        })
    }

    /// The metric handles this deployer counts into (for the exporter and the proxy).
    pub fn metrics(&self) -> Arc<Metrics> {
        Arc::clone(&self.metrics)
    }

    /// Fires after deploys, stops and recovery; read `domain_sets` then.
    pub fn subscribe_changes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.changes.subscribe()
    }

    pub(crate) fn notify_changed(&self) {
        self.changes.send_modify(|generation| *generation += 1);
    }

    /// Every deployed app's domains as (canonical, aliases, the app's `acme_email`).
    pub fn domain_sets(&self) -> Vec<(String, Vec<String>, Option<String>)> {
        self.entries()
            .iter()
            .filter_map(|e| e.live_lock().config.clone())
            .flat_map(|c| {
                let email = c.acme_email.clone();
                c.domains
                    .into_iter()
                    .map(move |d| (d.domain, d.aliases, email.clone()))
            })
            .collect()
    }

    /// Rebuilds live state from containerd and the history, then watches task exits.
    pub async fn start(self: &Arc<Self>) -> Result<(), DeployError> {
        self.state.fail_interrupted()?;
        recovery::recover(self).await?;
        supervisor::spawn(self.clone());
        self.notify_changed();
        Ok(())
    }

    /// Before a successor starts: refuse new deploys and stops, skip crash restarts, and wait
    /// up to `wait` for running deploys and stops to finish (their locks are then held, so
    /// the successor never finds one half done). Dropping the pause without `resume` (after
    /// a successful hand-over) keeps everything paused until this process exits.
    pub async fn pause_for_handover(
        self: &Arc<Self>,
        wait: Duration,
    ) -> Result<HandoverPause, DeployError> {
        self.paused.store(true, Ordering::SeqCst);
        let deadline = tokio::time::Instant::now() + wait;
        let mut locks = Vec::new();
        for entry in self.entries() {
            match tokio::time::timeout_at(deadline, entry.lock.clone().lock_owned()).await {
                Ok(guard) => locks.push(guard),
                Err(_) => {
                    drop(locks);
                    self.paused.store(false, Ordering::SeqCst);
                    return Err(DeployError::HandoverBusy {
                        app: entry.name.clone(),
                        waited: wait,
                    });
                }
            }
        }
        tracing::info!(
            apps = locks.len(),
            "deploys, stops and crash restarts paused for the hand-over"
        );
        Ok(HandoverPause {
            deployer: self.clone(),
            _locks: locks,
        })
    }

    pub(crate) fn is_paused(&self) -> bool {
        self.paused.load(Ordering::SeqCst)
    }

    pub(crate) fn entry(&self, app: &str) -> Arc<AppEntry> {
        let mut apps = self.apps.lock().unwrap_or_else(|p| p.into_inner());
        apps.entry(app.to_string())
            .or_insert_with(|| {
                Arc::new(AppEntry {
                    name: app.to_string(),
                    lock: Arc::new(tokio::sync::Mutex::new(())),
                    live: Mutex::new(LiveApp::default()),
                })
            })
            .clone()
    }

    fn existing_entry(&self, app: &str) -> Option<Arc<AppEntry>> {
        self.apps
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(app)
            .cloned()
    }

    pub(crate) fn entries(&self) -> Vec<Arc<AppEntry>> {
        let apps = self.apps.lock().unwrap_or_else(|p| p.into_inner());
        let mut entries: Vec<_> = apps.values().cloned().collect();
        entries.sort_by(|a, b| a.name.cmp(&b.name));
        entries
    }

    /// Validates, records and starts a rollout; returns its id at once. The rollout runs in
    /// its own task and reports through `events`.
    pub async fn deploy(
        self: &Arc<Self>,
        app: ResolvedApp,
        rollback_of: Option<String>,
    ) -> Result<String, DeployError> {
        let mut problems = app.validate_for_deploy();
        problems.extend(self.settings.host_paths.problems(&app.volumes));
        if !problems.is_empty() {
            return Err(DeployError::InvalidConfig { problems });
        }
        self.check_init(&app)?;
        let deployment_id = ulid::Ulid::new().to_string();
        let hosts: Vec<String> = app
            .domains
            .iter()
            .flat_map(|d| std::iter::once(&d.domain).chain(&d.aliases))
            .cloned()
            .collect();
        let domains = self
            .domain_claims
            .claim(&app.name, &deployment_id, &hosts, &self.routes.load())
            .map_err(|problems| DeployError::DomainTaken { problems })?;
        let entry = self.entry(&app.name);
        let guard = entry.claim_for_deploy(&deployment_id)?;
        // Checked with the lock held: a pause that started earlier is waiting for it.
        if self.is_paused() {
            entry.release_deploy(guard);
            return Err(DeployError::HandingOver);
        }
        let kind = if rollback_of.is_some() {
            OperationKind::Rollback
        } else {
            OperationKind::Deploy
        };
        let image = app.image_reference();
        let recorded = self.state.insert(DeploymentRecord {
            id: deployment_id.clone(),
            app: app.name.clone(),
            created_at: crate::timefmt::now_rfc3339(),
            config: app.clone(),
            image: image.clone(),
            digest: None,
            status: DeployStatus::InProgress,
            message: None,
            rollback_of,
        });
        if let Err(e) = recorded {
            entry.release_deploy(guard);
            return Err(e.into());
        }
        self.job_started(&entry, &deployment_id, kind);
        let reporter = self.progress.start(&deployment_id, &app.name);
        let deployer = self.clone();
        let span = spans::job(&app.name, &deployment_id);
        // The rollout belongs to this task, not to the API request: a client that goes away
        // leaves it running to the end.
        tokio::spawn(
            async move {
                let (ok, message) = rollout::run(&deployer, &entry, app, &reporter).await;
                deployer.job_finished(&entry, guard, &reporter, ok, message);
                drop(domains);
            }
            .instrument(span),
        );
        Ok(deployment_id)
    }

    /// Progress of a job (deploy, rollback, stop, remove) by its id.
    pub fn events(
        &self,
        deployment_id: &str,
    ) -> Option<impl Stream<Item = DeployEvent> + Send + 'static> {
        self.progress.subscribe(deployment_id)
    }

    /// Earlier successful deployments whose image is still on this server (or in the registry,
    /// for history strategy `registry`), newest first.
    pub async fn rollback_targets(&self, app: &str) -> Result<Vec<DeploymentSummary>, DeployError> {
        let history = self.state.history(app)?;
        if history.is_empty() {
            return Err(DeployError::UnknownApp(app.to_string()));
        }
        let current = self.state.current(app)?.map(|r| r.id);
        let mut targets = Vec::new();
        for record in history
            .iter()
            .rev()
            .filter(|r| matches!(r.status, DeployStatus::Succeeded | DeployStatus::Superseded))
        {
            // Haloy (internal/deploy/rollback.go isImageAvailable): under history strategy
            // `registry` only the current image stays here and the registry keeps the rest,
            // so a rollback pulls the old tag again.
            let in_registry = record.config.image.history.strategy == HistoryStrategy::Registry;
            if !in_registry && !self.image_present(app, &record.image).await {
                continue;
            }
            targets.push(DeploymentSummary {
                deployment_id: record.id.clone(),
                created_at: record.created_at.clone(),
                image: record.image.clone(),
                digest: record.digest.clone(),
                replicas: record.config.replicas,
                current: Some(&record.id) == current.as_ref(),
            });
        }
        Ok(targets)
    }

    /// Haloy's `prune-images`: the images of the app's successful deployments on this server,
    /// the newest `keep` (at least the running one) kept and the rest removed when `apply`.
    /// Refused while a job holds the app (it may be pulling or starting an image).
    pub async fn prune_images(
        &self,
        app: &str,
        keep: u32,
        apply: bool,
    ) -> Result<crate::api::types::PruneImagesResponse, DeployError> {
        use crate::api::types::{PruneImagesResponse, PrunedImage};
        let entry = self
            .existing_entry(app)
            .ok_or_else(|| DeployError::UnknownApp(app.to_string()))?;
        let guard = entry.claim_for_deploy(&format!("prune-images-{}", ulid::Ulid::new()))?;
        let history = self.state.history(app);
        let history = match history {
            Ok(history) => history,
            Err(e) => {
                entry.release_deploy(guard);
                return Err(e.into());
            }
        };
        let mut images: Vec<PrunedImage> = Vec::new();
        for record in history
            .iter()
            .rev()
            .filter(|r| matches!(r.status, DeployStatus::Succeeded | DeployStatus::Superseded))
        {
            match images.iter_mut().find(|i| i.image == record.image) {
                Some(seen) => seen.deployment_ids.push(record.id.clone()),
                None => images.push(PrunedImage {
                    image: record.image.clone(),
                    deployment_ids: vec![record.id.clone()],
                    action: String::new(),
                }),
            }
        }
        let keep_count = (keep as usize).max(1);
        let mut present = Vec::new();
        for (i, image) in images.into_iter().enumerate() {
            if !self.image_present(app, &image.image).await {
                continue;
            }
            let action = if i < keep_count { "keep" } else { "remove" };
            present.push(PrunedImage {
                action: action.to_string(),
                ..image
            });
        }
        let result = if apply {
            let kept: Vec<String> = present
                .iter()
                .filter(|i| i.action == "keep")
                .map(|i| i.image.clone())
                .collect();
            self.runtime.remove_unused_images(app, &kept).await
        } else {
            Ok(())
        };
        entry.release_deploy(guard);
        result?;
        tracing::info!(app, keep, apply, "prune-images");
        Ok(PruneImagesResponse {
            keep: keep_count as u32,
            applied: apply,
            images: present,
        })
    }

    /// The app's image request; without `image.registry` credentials, the login stored with
    /// `haloy server registry login` for the image's registry (Haloy's server-side logins).
    pub(crate) fn image_request_with_login(
        &self,
        app: &ResolvedApp,
    ) -> crate::runtime::ImageRequest {
        let mut request = app.image_request();
        if request.credentials.is_some() {
            return request;
        }
        let Ok(reference) = crate::runtime::image::reference::ImageRef::parse(&request.reference)
        else {
            return request;
        };
        match self.state.registry_logins().get(&reference.registry) {
            Ok(Some(login)) => {
                tracing::info!(app = %app.name, registry = %reference.registry, "pulling with the stored registry login");
                request.credentials = Some(crate::runtime::RegistryCredentials {
                    username: login.username,
                    password: login.password,
                });
            }
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(app = %app.name, error = %e, "stored registry logins unreadable; pulling without")
            }
        }
        request
    }

    async fn image_present(&self, app: &str, image: &str) -> bool {
        let mut request =
            crate::runtime::ImageRequest::new(image, crate::runtime::PullPolicy::Never);
        request.app = Some(app.to_string());
        self.runtime.ensure_image(&request).await.is_ok()
    }

    /// Redeploys an earlier deployment's config with the image kept on this server.
    pub async fn rollback(self: &Arc<Self>, app: &str, id: &str) -> Result<String, DeployError> {
        let record = self.state.get(app, id).map_err(|e| match e {
            StateError::UnknownDeployment { app, id } => DeployError::UnknownDeployment { app, id },
            other => DeployError::State(other),
        })?;
        if !matches!(
            record.status,
            DeployStatus::Succeeded | DeployStatus::Superseded
        ) {
            return Err(DeployError::NotRollbackable {
                app: app.to_string(),
                id: id.to_string(),
                reason: "it never finished successfully".into(),
            });
        }
        let mut config = record.config.clone();
        // The image was kept on the server for exactly this; never wait on a registry (under
        // history strategy `registry` it is gone, and `if_missing` pulls it again).
        config.image.pull_policy = crate::config::PullPolicy::IfMissing;
        self.deploy(config, Some(id.to_string())).await
    }

    /// Starts a stop job and returns its id at once: every replica leaves rotation (the app
    /// then answers 503) and all are stopped together, so the whole stop takes one
    /// `stop_timeout` at most, not one per replica; containers (and named volumes) are removed
    /// when asked. A second operation on the app while this runs is refused (`Busy`).
    pub fn stop(
        self: &Arc<Self>,
        app: &str,
        remove_containers: bool,
        remove_volumes: bool,
    ) -> Result<String, DeployError> {
        let entry = self
            .existing_entry(app)
            .ok_or_else(|| DeployError::UnknownApp(app.to_string()))?;
        if self.is_paused() {
            return Err(DeployError::HandingOver);
        }
        let job_id = ulid::Ulid::new().to_string();
        let guard = entry.claim_for_deploy(&job_id)?;
        // Checked with the lock held: a pause that started earlier is waiting for it.
        if self.is_paused() {
            entry.release_deploy(guard);
            return Err(DeployError::HandingOver);
        }
        let kind = if remove_containers {
            OperationKind::Remove
        } else {
            OperationKind::Stop
        };
        self.job_started(&entry, &job_id, kind);
        let reporter = self.progress.start(&job_id, app);
        let deployer = self.clone();
        let span = spans::job(app, &job_id);
        tokio::spawn(
            async move {
                let outcome = deployer
                    .stop_all(&entry, remove_containers, remove_volumes, &reporter)
                    .await;
                let (ok, message) = match outcome {
                    Ok(stopped) => (
                        true,
                        format!(
                            "{stopped} replica(s) stopped{}",
                            if remove_containers {
                                ", containers removed"
                            } else {
                                ""
                            }
                        ),
                    ),
                    Err(e) => (false, e.to_string()),
                };
                deployer.job_finished(&entry, guard, &reporter, ok, message);
            }
            .instrument(span),
        );
        Ok(job_id)
    }

    async fn stop_all(
        &self,
        entry: &AppEntry,
        remove_containers: bool,
        remove_volumes: bool,
        reporter: &Reporter,
    ) -> Result<usize, DeployError> {
        let app = entry.name.as_str();
        let replicas = {
            let mut live = entry.live_lock();
            live.stopped = true;
            live.replicas.clone()
        };
        for replica in &replicas {
            replica.set_in_rotation(false);
        }
        self.publish_routes(entry);
        // All at once: replicas that ignore SIGTERM are waited for side by side.
        let results = futures_util::future::join_all(replicas.iter().map(|replica| async move {
            let result = lifecycle::stop(self, replica, remove_containers).await;
            match &result {
                Ok(()) => reporter.step(
                    Some(replica.replica),
                    if remove_containers {
                        "removed"
                    } else {
                        "stopped"
                    },
                    replica.container_id.clone(),
                ),
                Err(e) => reporter.step(
                    Some(replica.replica),
                    "stop_failed",
                    format!("{}: {e}", replica.container_id),
                ),
            }
            result
        }))
        .await;
        let stopped = results.iter().filter(|r| r.is_ok()).count();
        if remove_containers {
            let kept: Vec<String> = replicas
                .iter()
                .zip(&results)
                .filter(|(_, r)| r.is_err())
                .map(|(replica, _)| replica.container_id.clone())
                .collect();
            entry
                .live_lock()
                .replicas
                .retain(|r| kept.contains(&r.container_id));
        }
        self.state.set_stopped(app, true)?;
        if let Some(error) = results.into_iter().find_map(Result::err) {
            return Err(error.into());
        }
        if remove_volumes {
            self.remove_named_volumes(app);
        }
        self.publish_routes(entry);
        tracing::info!(
            app,
            stopped,
            remove_containers,
            remove_volumes,
            "app stopped"
        );
        Ok(stopped)
    }

    fn remove_named_volumes(&self, app: &str) {
        let dir = self.settings.volumes_dir.join(app);
        match std::fs::remove_dir_all(&dir) {
            Ok(()) => tracing::info!(app, path = %dir.display(), "named volumes removed"),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                tracing::warn!(app, path = %dir.display(), error = %e, "cannot remove named volumes")
            }
        }
    }

    pub fn status(&self, app: Option<&str>) -> Vec<AppStatus> {
        self.entries()
            .into_iter()
            .filter(|e| app.is_none_or(|a| a == e.name))
            .filter_map(|e| self.app_status(&e))
            .collect()
    }

    fn app_status(&self, entry: &AppEntry) -> Option<AppStatus> {
        let live = entry.live_lock();
        let config = live.config.as_ref()?;
        let mut replicas: Vec<ReplicaStatus> = live
            .replicas
            .iter()
            .map(|r| replica_status(r, live.stopped))
            .collect();
        replicas.sort_by_key(|r| r.replica);
        Some(AppStatus {
            name: entry.name.clone(),
            deployment_id: live.deployment_id.clone().unwrap_or_default(),
            image: live.image.clone().unwrap_or_default(),
            digest: live.digest.clone(),
            strategy: match config.deployment_strategy {
                DeploymentStrategy::Rolling => "rolling".into(),
                DeploymentStrategy::Replace => "replace".into(),
            },
            domains: config.domains.iter().map(|d| d.domain.clone()).collect(),
            replicas,
            certificates: Vec::new(),
            last_operation: live.last_operation.as_ref().map(jobs::summary),
        })
    }

    /// Log lines of one replica (the first by default), of a given container, or of all
    /// replicas merged as they arrive.
    pub async fn logs(
        &self,
        app: &str,
        query: LogsQuery,
    ) -> Result<impl Stream<Item = LogLine> + Send + 'static, DeployError> {
        let entry = self
            .existing_entry(app)
            .ok_or_else(|| DeployError::UnknownApp(app.to_string()))?;
        let mut replicas = entry.live_lock().replicas.clone();
        replicas.sort_by_key(|r| r.replica);
        let chosen: Vec<_> = match (&query.container, query.all) {
            (Some(id), _) => replicas
                .into_iter()
                .filter(|r| &r.container_id == id || r.container_id.starts_with(id.as_str()))
                .collect(),
            (None, true) => replicas,
            (None, false) => replicas.into_iter().take(1).collect(),
        };
        if chosen.is_empty() {
            return Err(DeployError::UnknownApp(format!(
                "{app} (no replica matches; see `haloy status`)"
            )));
        }
        let mut streams = Vec::new();
        for replica in chosen {
            let lines = self
                .runtime
                .logs(
                    &replica.container_id,
                    usize::try_from(query.tail).ok(),
                    query.follow,
                )
                .await?;
            let number = replica.replica;
            let container_id = replica.container_id.clone();
            streams.push(Box::pin(lines.filter_map(move |line| {
                let container_id = container_id.clone();
                async move {
                    let line = line.ok()?;
                    Some(LogLine {
                        replica: number,
                        container_id,
                        stream: line.stream,
                        time: crate::timefmt::rfc3339(line.time),
                        line: line.line,
                    })
                }
            })));
        }
        Ok(futures_util::stream::select_all(streams))
    }

    /// Publishes the app's current rotation to the proxy as one atomic swap.
    pub(crate) fn publish_routes(&self, entry: &AppEntry) {
        let live = entry.live_lock();
        let Some(config) = live.config.as_ref() else {
            return;
        };
        let backends = live
            .replicas
            .iter()
            .filter(|r| r.in_rotation())
            .map(|r| r.backend.clone())
            .collect();
        let published = self.routes.set_app(AppRoute {
            app: entry.name.clone(),
            domains: config
                .domains
                .iter()
                .map(|d| DomainRoute {
                    canonical: d.domain.clone(),
                    aliases: d.aliases.clone(),
                })
                .collect(),
            backends,
        });
        if let Err(e) = published {
            tracing::error!(app = %entry.name, error = %e, "route not published");
        }
    }

    pub(crate) fn find_replica(
        &self,
        container_id: &str,
    ) -> Option<(Arc<AppEntry>, Arc<LiveReplica>)> {
        self.entries().into_iter().find_map(|entry| {
            let replica = entry
                .live_lock()
                .replicas
                .iter()
                .find(|r| r.container_id == container_id)
                .cloned()?;
            Some((entry, replica))
        })
    }
}

impl AppEntry {
    pub(crate) fn live_lock(&self) -> std::sync::MutexGuard<'_, LiveApp> {
        self.live.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Takes the app's deploy lock for `deployment_id`, or names who holds it. The lock and
    /// `in_progress` change together under `live`, so a refused deploy never sees the lock
    /// taken by a deploy whose id is not recorded yet (or no longer).
    fn claim_for_deploy(
        &self,
        deployment_id: &str,
    ) -> Result<tokio::sync::OwnedMutexGuard<()>, DeployError> {
        let mut live = self.live_lock();
        match self.lock.clone().try_lock_owned() {
            Ok(guard) => {
                live.in_progress = Some(deployment_id.to_string());
                Ok(guard)
            }
            Err(_) => Err(DeployError::Busy {
                app: self.name.clone(),
                deployment_id: live.in_progress.clone().unwrap_or_default(),
            }),
        }
    }

    /// Ends what `claim_for_deploy` started, again as one step under `live`.
    fn release_deploy(&self, guard: tokio::sync::OwnedMutexGuard<()>) {
        let mut live = self.live_lock();
        live.in_progress = None;
        drop(guard);
    }
}

fn replica_status(replica: &LiveReplica, app_stopped: bool) -> ReplicaStatus {
    let stats = replica.backend.stats();
    let phase = replica.phase();
    let state = if phase == Phase::Ready && !replica.backend.is_ready() {
        ReplicaState::Unhealthy
    } else if app_stopped && phase != Phase::CrashLooping {
        ReplicaState::Stopped
    } else {
        phase.wire_state()
    };
    ReplicaStatus {
        replica: replica.replica,
        container_id: replica.container_id.clone(),
        state,
        ip: Some(replica.backend.addr().ip().to_string()),
        uptime_seconds: replica.uptime().as_secs(),
        restarts: replica.restarts.load(std::sync::atomic::Ordering::Relaxed),
        last_health: replica.last_health(),
        requests: stats.requests,
        errors: stats.errors,
        in_flight: stats.in_flight,
    }
}

#[cfg(test)]
#[path = "tests/claim.rs"]
mod tests;

#[cfg(test)]
#[path = "tests/handover.rs"]
mod handover_tests;

#[cfg(test)]
#[path = "tests/lifecycle.rs"]
mod lifecycle_tests;
