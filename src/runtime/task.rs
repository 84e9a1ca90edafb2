//! Replica lifecycle on containerd: netns → (CNI ADD ∥ snapshot → container with labels and
//! OCI spec → task with the `binary://` log driver) → IP into /etc/hosts and labels → start;
//! stop (SIGTERM, SIGKILL after the timeout, delete task); remove (snapshot before container,
//! then CNI DEL and netns); listing by label. Every removal step treats NotFound as done, so
//! all of it is idempotent.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use containerd_client::services::v1::container::Runtime as ContainerRuntime;
use containerd_client::services::v1::snapshots::{PrepareSnapshotRequest, RemoveSnapshotRequest};
use containerd_client::services::v1::{
    Container, CreateContainerRequest, CreateRequest as CreateLeaseRequest, CreateTaskRequest,
    DeleteContainerRequest, DeleteRequest as DeleteLeaseRequest, DeleteTaskRequest,
    GetContainerRequest, GetRequest, KillRequest, ListContainersRequest, StartRequest,
    UpdateContainerRequest, WaitRequest,
};
use containerd_client::types::v1::{Process, Status};
use containerd_client::types::Mount;
use tonic::Code;

use super::log_driver::{driver_binary_beside, log_uri, LogDriverConfig};
use super::logs::{log_files, read_logs, remove_log_files};
use super::spec::{
    build_spec, hosts_file, nofile_limit, resolve_user, resolve_volumes, spec_any,
    user_needs_lookup, write_task_files, SpecInput,
};
use super::{
    labels as base_labels, Containerd, LogStream, ReplicaInfo, ReplicaSpec, Resources,
    RuntimeError, StartedReplica, TaskStatus, SNAPSHOTTER,
};
use crate::network::{Attachment, Network, NetworkError};

/// The shim every replica runs under.
pub const RUNC_RUNTIME: &str = "io.containerd.runc.v2";
/// containerd's identifier limit (identifiers.Validate).
const MAX_ID_LEN: usize = 76;
/// How long a task may take to disappear after SIGKILL.
const KILL_GRACE: Duration = Duration::from_secs(10);
/// Lifetime of the lease that protects a fresh snapshot until its container exists.
const START_LEASE_TTL: Duration = Duration::from_secs(3600);

/// pids.max of a replica unless the server config or the app says otherwise: far above what
/// a normal server process needs, far below what takes a host down.
pub const DEFAULT_PIDS_LIMIT: u64 = 4096;

/// Container labels beside the base ones in `runtime::labels`. Only `IP` is read back (by
/// recovery); the others are for people inspecting containerd.
pub mod labels {
    pub const HEALTH_PATH: &str = "dev.haloy.health-path";
    /// Comma-separated domain names.
    pub const DOMAINS: &str = "dev.haloy.domains";
    pub const IP: &str = "dev.haloy.ip";
    pub const NETNS: &str = "dev.haloy.netns";
    /// Whole seconds.
    pub const STOP_TIMEOUT: &str = "dev.haloy.stop-timeout";
}

/// Which replicas share one containerd-shim-runc-v2 process. A shim costs ~3 MiB PSS; it
/// serves each of its tasks separately (create, kill, delete, exit events, one log driver
/// per task), so sharing changes only what a shim crash takes down.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ShimGrouping {
    /// One shim per app: a crash of that shim stops the app's replicas together, and
    /// supervision restarts each of them like any other exit.
    #[default]
    PerApp,
    /// One shim per replica (containerd's default): a shim crash stops one replica only.
    PerReplica,
    /// One shim for every replica of this haloyd: the least memory, and a shim crash stops
    /// every app at once.
    PerHost,
}

impl ShimGrouping {
    /// The `SHIM_GROUP_ANNOTATION` value for a replica of `app`, None for a shim of its own.
    /// App names are unique per containerd namespace, and the shim's socket address hashes
    /// the namespace with this value.
    pub fn group_for(self, app: &str) -> Option<String> {
        match self {
            ShimGrouping::PerApp => Some(format!("haloy.app.{app}")),
            ShimGrouping::PerReplica => None,
            ShimGrouping::PerHost => Some("haloy.host".to_string()),
        }
    }
}

/// Where task files and logs live and how the task process is wrapped.
#[derive(Debug, Clone)]
pub struct TaskSettings {
    /// Per-task /etc files under `tasks/<id>/`, named volumes under `volumes/<app>/<name>/`.
    pub state_dir: PathBuf,
    /// `<id>.log` (+ rotated `.1`, `.2`, ...) per task.
    pub log_dir: PathBuf,
    pub log_max_size: u64,
    pub log_max_files: u32,
    /// The binary the shim runs as log driver; when None `haloy-logd` beside the running
    /// executable, or that executable itself (`log_driver::driver_binary_beside`).
    pub log_driver_binary: Option<PathBuf>,
    /// cgroupfs parent of every task's cgroup.
    pub cgroup_parent: String,
    /// pids.max of a replica whose app sets no `resources.pids`.
    pub pids_limit: u64,
    /// AppArmor profile every task runs under (`apparmor::decide`); None = none.
    pub apparmor_profile: Option<String>,
    /// The static init mounted into replicas with `init: true`.
    pub init_binary: PathBuf,
    /// haloyd's DNS server (the bridge gateway) as the replicas' resolver; the host's
    /// resolvers when None.
    pub nameserver: Option<std::net::IpAddr>,
    /// Which replicas share a shim process.
    pub shim_grouping: ShimGrouping,
}

impl Default for TaskSettings {
    fn default() -> Self {
        TaskSettings {
            state_dir: PathBuf::from("/var/lib/haloy"),
            log_dir: PathBuf::from("/var/log/haloy/tasks"),
            log_max_size: 10 * 1024 * 1024,
            log_max_files: 3,
            log_driver_binary: None,
            cgroup_parent: "/haloy".into(),
            pids_limit: DEFAULT_PIDS_LIMIT,
            apparmor_profile: None,
            init_binary: PathBuf::from(super::DEFAULT_INIT_BINARY),
            nameserver: None,
            shim_grouping: ShimGrouping::default(),
        }
    }
}

/// Keeps `[A-Za-z0-9]` runs joined by single separators, as containerd identifiers require.
fn sanitize(part: &str) -> String {
    let mut out = String::new();
    for c in part.chars() {
        if c.is_ascii_alphanumeric() {
            out.push(c.to_ascii_lowercase());
        } else if !out.is_empty() && !out.ends_with('-') {
            out.push('-');
        }
    }
    out.trim_end_matches('-').to_string()
}

/// The containerd id of a replica: the app's own name under `naming_strategy: static` (Haloy
/// names its single container after the app, haloydev/haloy internal/docker/container.go;
/// app names are valid ids), else `container_id`.
pub fn replica_container_id(spec: &ReplicaSpec) -> String {
    if spec.labels.get(base_labels::NAMING).map(String::as_str) == Some("static") {
        return spec.app.clone();
    }
    container_id(&spec.app, &spec.deployment_id, spec.replica)
}

/// `<app>-<deployment>-<replica>`: unique per replica of a deployment and a valid containerd
/// identifier, CNI container id and file name. The app part is shortened to fit.
pub fn container_id(app: &str, deployment_id: &str, replica: u32) -> String {
    let deployment = sanitize(deployment_id);
    let deployment = deployment[deployment.len().saturating_sub(26)..].trim_start_matches('-');
    let suffix = if deployment.is_empty() {
        replica.to_string()
    } else {
        format!("{deployment}-{replica}")
    };
    let room = MAX_ID_LEN.saturating_sub(suffix.len() + 1);
    let app = sanitize(app);
    let app = app[..app.len().min(room)].trim_end_matches('-');
    let app = if app.is_empty() { "app" } else { app };
    format!("{app}-{suffix}")
}

/// Hostname inside the task: `<app>-<replica>`, at most 63 characters.
pub fn hostname_for(app: &str, replica: u32) -> String {
    let suffix = format!("-{replica}");
    let app = sanitize(app);
    let app = &app[..app.len().min(63 - suffix.len())];
    format!("{}{suffix}", app.trim_end_matches('-'))
}

/// The directories a rootfs mount list reads from, top layer first.
fn rootfs_layer_dirs(mounts: &[Mount]) -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    for mount in mounts {
        match mount.r#type.as_str() {
            "bind" => dirs.push(PathBuf::from(&mount.source)),
            "overlay" => {
                let option = |key: &str| {
                    mount
                        .options
                        .iter()
                        .find_map(|o| o.strip_prefix(key).map(String::from))
                };
                if let Some(upper) = option("upperdir=") {
                    dirs.push(PathBuf::from(upper));
                }
                if let Some(lower) = option("lowerdir=") {
                    dirs.extend(lower.split(':').map(PathBuf::from));
                }
            }
            _ => {}
        }
    }
    dirs
}

/// Reads `relative` from the layered rootfs without mounting it: the topmost layer that has
/// it wins; an overlay whiteout (char device) there means deleted.
fn read_rootfs_file(mounts: &[Mount], relative: &str) -> Option<String> {
    use std::os::unix::fs::FileTypeExt;
    for dir in rootfs_layer_dirs(mounts) {
        let path = dir.join(relative);
        match std::fs::symlink_metadata(&path) {
            Ok(meta) if meta.file_type().is_char_device() => return None,
            Ok(_) => return std::fs::read_to_string(&path).ok(),
            Err(_) => continue,
        }
    }
    None
}

fn is_not_found(status: &tonic::Status) -> bool {
    status.code() == Code::NotFound
}

fn container_error(container_id: &str, reason: impl std::fmt::Display) -> RuntimeError {
    RuntimeError::Container {
        container_id: container_id.to_string(),
        reason: reason.to_string(),
    }
}

/// The replica half of `ContainerdRuntime`.
pub struct Tasks {
    client: Containerd,
    network: Arc<dyn Network>,
    settings: TaskSettings,
    /// One Tasks.Create at a time per shim group: the runc shim's start-up binds the group's
    /// socket, and a second start racing it can replace that socket and leave a shim serving
    /// nothing (seen as 4 shims for 3 apps). Keyed by group; one entry per app ever started.
    shim_starts: std::sync::Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

impl std::fmt::Debug for Tasks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tasks")
            .field("namespace", &self.client.namespace())
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl Tasks {
    pub fn new(client: Containerd, network: Arc<dyn Network>, settings: TaskSettings) -> Tasks {
        Tasks {
            client,
            network,
            settings,
            shim_starts: Default::default(),
        }
    }

    fn shim_start_lock(&self, group: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self.shim_starts.lock().unwrap_or_else(|p| p.into_inner());
        locks.entry(group.to_string()).or_default().clone()
    }

    pub fn settings(&self) -> &TaskSettings {
        &self.settings
    }

    fn task_dir(&self, id: &str) -> PathBuf {
        self.settings.state_dir.join("tasks").join(id)
    }

    fn log_driver_uri(&self, id: &str) -> Result<String, RuntimeError> {
        let binary = match &self.settings.log_driver_binary {
            Some(path) => path.clone(),
            None => std::env::current_exe()
                .map(|exe| driver_binary_beside(&exe))
                .map_err(|source| RuntimeError::Io {
                    path: PathBuf::from("/proc/self/exe"),
                    source,
                })?,
        };
        // The shim runs the driver from its own working directory: relative paths break there.
        let absolute = |path: &Path| {
            std::path::absolute(path).map_err(|source| RuntimeError::Io {
                path: path.to_path_buf(),
                source,
            })
        };
        let binary = absolute(&binary)?;
        let config = LogDriverConfig {
            dir: absolute(&self.settings.log_dir)?,
            max_size: self.settings.log_max_size,
            max_files: self.settings.log_max_files,
        };
        log_uri(&binary, &config).map_err(|e| container_error(id, e))
    }

    /// Network, snapshot, container, task; on failure everything made so far is removed.
    /// CNI ADD runs while the container and its task are created (it only needs the
    /// namespace to exist); the task starts once both are done.
    pub async fn start(&self, spec: &ReplicaSpec) -> Result<StartedReplica, RuntimeError> {
        let id = replica_container_id(spec);
        let network = spec.labels.get(base_labels::NETWORK).map(String::as_str);
        let gateway = self
            .network
            .prepare(network)
            .await
            .map_err(|e| naming_container(self.network_error(&id, e), &id))?;
        // haloyd's DNS server answers on every network's gateway; the default network's
        // address stays what the settings say.
        let nameserver = match network {
            Some(_) => self.settings.nameserver.and(gateway),
            None => self.settings.nameserver,
        };
        let netns = self.create_namespace(&id).await?;
        let (connected, created) = tokio::join!(
            self.network.connect_to(&id, network),
            self.create_container_and_task(spec, &id, &netns, nameserver)
        );
        let started = match (connected, created) {
            (Ok(attachment), Ok(())) => self.start_task(spec, &id, &attachment).await,
            (Err(e), _) => Err(self.network_error(&id, e)),
            (Ok(_), Err(e)) => Err(e),
        };
        match started {
            Ok(info) => {
                tracing::info!(app = %spec.app, replica = spec.replica, task_id = %id, ip = %info.ip, "replica started");
                Ok(info)
            }
            Err(err) => {
                if let Err(cleanup) = self.remove(&id).await {
                    tracing::warn!(task_id = %id, error = %cleanup, "cleanup after failed start failed");
                }
                Err(naming_container(err, &id))
            }
        }
    }

    fn network_error(&self, id: &str, e: NetworkError) -> RuntimeError {
        RuntimeError::Network {
            container_id: id.to_string(),
            reason: e.to_string(),
        }
    }

    /// The task's empty namespace; one left by an interrupted earlier start of the same id
    /// (no container exists for it) is torn down first.
    async fn create_namespace(&self, id: &str) -> Result<PathBuf, RuntimeError> {
        match self.network.create_namespace(id).await {
            Err(NetworkError::AlreadyAttached { .. })
                if self.get_container(id).await?.is_none() =>
            {
                tracing::warn!(
                    task_id = id,
                    "removing the network left by an interrupted start"
                );
                self.network
                    .detach(id)
                    .await
                    .map_err(|e| self.network_error(id, e))?;
                self.network
                    .create_namespace(id)
                    .await
                    .map_err(|e| self.network_error(id, e))
            }
            result => result.map_err(|e| self.network_error(id, e)),
        }
    }

    /// Snapshot, container record and created (not yet started) task.
    async fn create_container_and_task(
        &self,
        spec: &ReplicaSpec,
        id: &str,
        netns: &Path,
        nameserver: Option<std::net::IpAddr>,
    ) -> Result<(), RuntimeError> {
        // The lease keeps the new snapshot from GC until the container references it.
        let lease = self.create_lease(id).await?;
        let created = self
            .create_container(spec, id, netns, &lease, nameserver)
            .await;
        self.delete_lease(&lease).await;
        let rootfs = created?;
        let uri = self.log_driver_uri(id)?;
        let create = CreateTaskRequest {
            container_id: id.to_string(),
            rootfs,
            stdout: uri.clone(),
            stderr: uri,
            ..Default::default()
        };
        let group_lock = self
            .settings
            .shim_grouping
            .group_for(&spec.app)
            .map(|group| self.shim_start_lock(&group));
        let _serial = match &group_lock {
            Some(lock) => Some(lock.lock().await),
            None => None,
        };
        self.client
            .tasks()
            .create(self.client.request(create))
            .await
            .map_err(|s| self.client.rpc_error("Tasks.Create", s))?;
        Ok(())
    }

    /// Once the address is known: /etc/hosts and the IP label get it, then the task starts.
    async fn start_task(
        &self,
        spec: &ReplicaSpec,
        id: &str,
        attachment: &Attachment,
    ) -> Result<StartedReplica, RuntimeError> {
        let hosts = self.task_dir(id).join("hosts");
        let hostname = hostname_for(&spec.app, spec.replica);
        // Rewritten in place: the container bind-mounts this very inode.
        std::fs::write(&hosts, hosts_file(&hostname, Some(attachment.ip))).map_err(|source| {
            RuntimeError::Io {
                path: hosts.clone(),
                source,
            }
        })?;
        self.set_ip_label(id, attachment.ip).await?;
        let start = StartRequest {
            container_id: id.to_string(),
            exec_id: String::new(),
        };
        let pid = self
            .client
            .tasks()
            .start(self.client.request(start))
            .await
            .map_err(|s| self.client.rpc_error("Tasks.Start", s))?
            .into_inner()
            .pid;
        Ok(StartedReplica {
            container_id: id.to_string(),
            replica: spec.replica,
            ip: attachment.ip,
            pid,
        })
    }

    async fn set_ip_label(&self, id: &str, ip: IpAddr) -> Result<(), RuntimeError> {
        let container = Container {
            id: id.to_string(),
            labels: HashMap::from([(labels::IP.to_string(), ip.to_string())]),
            ..Default::default()
        };
        let request = UpdateContainerRequest {
            container: Some(container),
            update_mask: Some(prost_types::FieldMask {
                paths: vec![format!("labels.{}", labels::IP)],
            }),
        };
        self.client
            .containers()
            .update(self.client.request(request))
            .await
            .map_err(|s| self.client.rpc_error("Containers.Update", s))?;
        Ok(())
    }

    async fn create_lease(&self, id: &str) -> Result<String, RuntimeError> {
        let lease_id = format!("haloy-start-{id}");
        let expire = crate::timefmt::rfc3339(SystemTime::now() + START_LEASE_TTL);
        let request = CreateLeaseRequest {
            id: lease_id.clone(),
            labels: HashMap::from([("containerd.io/gc.expire".to_string(), expire)]),
        };
        match self
            .client
            .leases()
            .create(self.client.request(request))
            .await
        {
            Ok(_) => Ok(lease_id),
            Err(s) if s.code() == Code::AlreadyExists => Ok(lease_id),
            Err(s) => Err(self.client.rpc_error("Leases.Create", s)),
        }
    }

    async fn delete_lease(&self, lease_id: &str) {
        let request = DeleteLeaseRequest {
            id: lease_id.to_string(),
            sync: false,
        };
        if let Err(s) = self
            .client
            .leases()
            .delete(self.client.request(request))
            .await
        {
            if !is_not_found(&s) {
                // It expires by its gc.expire label anyway.
                tracing::warn!(lease = lease_id, error = %s.message(), "deleting start lease failed");
            }
        }
    }

    /// The IP joins later (`set_ip_label`): CNI runs while the container is created.
    fn container_labels(&self, spec: &ReplicaSpec, netns: &Path) -> HashMap<String, String> {
        let mut labels: HashMap<String, String> = spec.labels.clone().into_iter().collect();
        let ours = [
            (base_labels::APP, spec.app.clone()),
            (base_labels::DEPLOYMENT_ID, spec.deployment_id.clone()),
            (base_labels::REPLICA, spec.replica.to_string()),
            (base_labels::PORT, spec.port.to_string()),
            (base_labels::IMAGE, spec.image.name.clone()),
            (labels::HEALTH_PATH, spec.health_check_path.clone()),
            (labels::DOMAINS, spec.domains.join(",")),
            (labels::NETNS, netns.to_string_lossy().into_owned()),
            (
                labels::STOP_TIMEOUT,
                spec.stop_timeout.as_secs().to_string(),
            ),
        ];
        for (key, value) in ours {
            labels.insert(key.to_string(), value);
        }
        labels
    }

    /// Snapshot + container record; returns the rootfs mounts for the task.
    async fn create_container(
        &self,
        spec: &ReplicaSpec,
        id: &str,
        netns: &Path,
        lease: &str,
        nameserver: Option<std::net::IpAddr>,
    ) -> Result<Vec<Mount>, RuntimeError> {
        let prepare = PrepareSnapshotRequest {
            snapshotter: SNAPSHOTTER.to_string(),
            key: id.to_string(),
            parent: spec.image.chain_id.clone(),
            labels: HashMap::new(),
        };
        let mounts = self
            .client
            .snapshots()
            .prepare(self.client.request_with_lease(prepare, lease))
            .await
            .map_err(|s| self.client.rpc_error("Snapshots.Prepare", s))?
            .into_inner()
            .mounts;

        let oci = self.build_oci_spec(spec, id, netns, &mounts, nameserver)?;
        let container = Container {
            id: id.to_string(),
            labels: self.container_labels(spec, netns),
            image: spec.image.name.clone(),
            runtime: Some(ContainerRuntime {
                name: RUNC_RUNTIME.to_string(),
                options: None,
            }),
            spec: Some(oci),
            snapshotter: SNAPSHOTTER.to_string(),
            snapshot_key: id.to_string(),
            ..Default::default()
        };
        let request = CreateContainerRequest {
            container: Some(container),
        };
        self.client
            .containers()
            .create(self.client.request_with_lease(request, lease))
            .await
            .map_err(|s| self.client.rpc_error("Containers.Create", s))?;
        Ok(mounts)
    }

    fn build_oci_spec(
        &self,
        spec: &ReplicaSpec,
        id: &str,
        netns: &Path,
        rootfs: &[Mount],
        nameserver: Option<std::net::IpAddr>,
    ) -> Result<prost_types::Any, RuntimeError> {
        let spec_err = |e: super::spec::SpecError| container_error(id, e);
        let image_user = spec.image.config.user.as_deref();
        let user = if user_needs_lookup(image_user) {
            let passwd = read_rootfs_file(rootfs, "etc/passwd");
            let group = read_rootfs_file(rootfs, "etc/group");
            resolve_user(image_user, passwd.as_deref(), group.as_deref())
        } else {
            resolve_user(image_user, None, None)
        }
        .map_err(spec_err)?;
        let hostname = hostname_for(&spec.app, spec.replica);
        let files =
            write_task_files(&self.task_dir(id), &hostname, None, nameserver).map_err(spec_err)?;
        let volumes_root = self.settings.state_dir.join("volumes");
        let volumes = resolve_volumes(&spec.volumes, &spec.app, &volumes_root).map_err(spec_err)?;
        let cgroups_path = format!("{}/{id}", self.settings.cgroup_parent.trim_end_matches('/'));
        let replica_id = spec.replica.to_string();
        let shim_group = self.settings.shim_grouping.group_for(&spec.app);
        let input = SpecInput {
            hostname: &hostname,
            image: &spec.image.config,
            app_env: &spec.env,
            replica_id: &replica_id,
            user,
            netns_path: netns,
            cgroups_path: &cgroups_path,
            resources: Resources {
                pids: spec.resources.pids.or(Some(self.settings.pids_limit)),
                ..spec.resources
            },
            files: &files,
            volumes: &volumes,
            nofile: nofile_limit(),
            seccomp: spec.seccomp,
            apparmor_profile: self.settings.apparmor_profile.as_deref(),
            init: spec.init.then_some(self.settings.init_binary.as_path()),
            shim_group: shim_group.as_deref(),
        };
        let oci = build_spec(&input).map_err(spec_err)?;
        spec_any(&oci).map_err(spec_err)
    }

    async fn get_task(&self, id: &str) -> Result<Option<Process>, RuntimeError> {
        let request = GetRequest {
            container_id: id.to_string(),
            exec_id: String::new(),
        };
        match self.client.tasks().get(self.client.request(request)).await {
            Ok(response) => Ok(response.into_inner().process),
            Err(s) if is_not_found(&s) => Ok(None),
            Err(s) => Err(self.client.rpc_error("Tasks.Get", s)),
        }
    }

    /// Sends `signal`; false when there is no task (or no running process) to signal.
    async fn kill(&self, id: &str, signal: u32, all: bool) -> Result<bool, RuntimeError> {
        let request = KillRequest {
            container_id: id.to_string(),
            exec_id: String::new(),
            signal,
            all,
        };
        match self.client.tasks().kill(self.client.request(request)).await {
            Ok(_) => Ok(true),
            Err(s) if is_not_found(&s) || s.code() == Code::FailedPrecondition => Ok(false),
            Err(s) => Err(self.client.rpc_error("Tasks.Kill", s)),
        }
    }

    /// Waits for the task's exit up to `limit`; Ok(false) on timeout. Returns at once for a
    /// task that already exited (containerd keeps its status until Delete).
    async fn wait_exit(&self, id: &str, limit: Duration) -> Result<bool, RuntimeError> {
        let request = WaitRequest {
            container_id: id.to_string(),
            exec_id: String::new(),
        };
        let mut tasks = self.client.tasks();
        let call = tasks.wait(self.client.request(request));
        match tokio::time::timeout(limit, call).await {
            Err(_) => Ok(false),
            Ok(Ok(_)) => Ok(true),
            Ok(Err(s)) if is_not_found(&s) => Ok(true),
            Ok(Err(s)) => Err(self.client.rpc_error("Tasks.Wait", s)),
        }
    }

    async fn delete_task(&self, id: &str) -> Result<(), RuntimeError> {
        let request = DeleteTaskRequest {
            container_id: id.to_string(),
        };
        match self
            .client
            .tasks()
            .delete(self.client.request(request))
            .await
        {
            Ok(_) => Ok(()),
            Err(s) if is_not_found(&s) => Ok(()),
            Err(s) => Err(self.client.rpc_error("Tasks.Delete", s)),
        }
    }

    /// SIGKILL to every process of the task, then wait for the exit.
    async fn force_kill(&self, id: &str) -> Result<(), RuntimeError> {
        if self.kill(id, libc::SIGKILL as u32, true).await?
            && !self.wait_exit(id, KILL_GRACE).await?
        {
            return Err(container_error(
                id,
                format!("task did not exit within {KILL_GRACE:?} after SIGKILL"),
            ));
        }
        Ok(())
    }

    /// SIGTERM, SIGKILL after `timeout`, then delete the task. The container stays; its
    /// network goes (CNI DEL, namespace removed), as Docker releases a stopped container's
    /// endpoint: a stopped replica holds no address, and a named network whose last replica
    /// stopped is removed. Replicas are never started again in place (a restart or deploy
    /// makes a new container), and `remove` detaches idempotently.
    pub async fn stop(&self, id: &str, timeout: Duration) -> Result<(), RuntimeError> {
        let Some(process) = self.get_task(id).await? else {
            return self.detach_network(id).await;
        };
        if process.status != Status::Stopped as i32 {
            let signalled = self.kill(id, libc::SIGTERM as u32, false).await?;
            if signalled && !self.wait_exit(id, timeout).await? {
                tracing::info!(
                    task_id = id,
                    ?timeout,
                    "task ignored SIGTERM; sending SIGKILL"
                );
                self.force_kill(id).await?;
            }
        }
        self.delete_task(id).await?;
        self.detach_network(id).await?;
        tracing::info!(task_id = id, "replica stopped");
        Ok(())
    }

    async fn detach_network(&self, id: &str) -> Result<(), RuntimeError> {
        self.network
            .detach(id)
            .await
            .map_err(|e| self.network_error(id, e))
    }

    async fn get_container(&self, id: &str) -> Result<Option<Container>, RuntimeError> {
        let request = GetContainerRequest { id: id.to_string() };
        match self
            .client
            .containers()
            .get(self.client.request(request))
            .await
        {
            Ok(response) => Ok(response.into_inner().container),
            Err(s) if is_not_found(&s) => Ok(None),
            Err(s) => Err(self.client.rpc_error("Containers.Get", s)),
        }
    }

    /// Task (if any), snapshot, container, network, task files and logs. Idempotent.
    pub async fn remove(&self, id: &str) -> Result<(), RuntimeError> {
        if self.get_task(id).await?.is_some() {
            self.force_kill(id).await?;
        }
        // Also when Get finds no process: a Delete cut short (haloyd killed mid-call) leaves
        // the shim registered, and only another Delete frees the id for Tasks.Create.
        self.delete_task(id).await?;
        let container = self.get_container(id).await?;
        let (snapshotter, key) = match &container {
            Some(c) if !c.snapshot_key.is_empty() => {
                (c.snapshotter.clone(), c.snapshot_key.clone())
            }
            _ => (SNAPSHOTTER.to_string(), id.to_string()),
        };
        // Snapshot before container: once the container is gone, GC could race us to it.
        let remove = RemoveSnapshotRequest { snapshotter, key };
        match self
            .client
            .snapshots()
            .remove(self.client.request(remove))
            .await
        {
            Ok(_) => {}
            Err(s) if is_not_found(&s) => {}
            Err(s) => return Err(self.client.rpc_error("Snapshots.Remove", s)),
        }
        if container.is_some() {
            let delete = DeleteContainerRequest { id: id.to_string() };
            match self
                .client
                .containers()
                .delete(self.client.request(delete))
                .await
            {
                Ok(_) => {}
                Err(s) if is_not_found(&s) => {}
                Err(s) => return Err(self.client.rpc_error("Containers.Delete", s)),
            }
        }
        self.network
            .detach(id)
            .await
            .map_err(|e| RuntimeError::Network {
                container_id: id.to_string(),
                reason: e.to_string(),
            })?;
        remove_dir_if_exists(&self.task_dir(id))?;
        remove_log_files(&self.settings.log_dir, id).map_err(|source| RuntimeError::Io {
            path: self.settings.log_dir.clone(),
            source,
        })?;
        tracing::info!(task_id = id, "replica removed");
        Ok(())
    }

    /// Containers carrying `dev.haloy.app` (of `app` when given), with their task state.
    pub async fn list(&self, app: Option<&str>) -> Result<Vec<ReplicaInfo>, RuntimeError> {
        let filter = match app {
            Some(app) => format!("labels.\"{}\"==\"{app}\"", base_labels::APP),
            None => format!("labels.\"{}\"", base_labels::APP),
        };
        let request = ListContainersRequest {
            filters: vec![filter],
        };
        let containers = self
            .client
            .containers()
            .list(self.client.request(request))
            .await
            .map_err(|s| self.client.rpc_error("Containers.List", s))?
            .into_inner()
            .containers;
        let mut replicas = Vec::with_capacity(containers.len());
        for container in containers {
            let process = self.get_task(&container.id).await?;
            replicas.push(replica_info(container, process));
        }
        replicas.sort_by(|a, b| (&a.app, a.replica).cmp(&(&b.app, b.replica)));
        Ok(replicas)
    }

    /// The task's output; ContainerNotFound when neither logs nor the container exist.
    pub async fn logs(
        &self,
        id: &str,
        tail: Option<usize>,
        follow: bool,
    ) -> Result<LogStream, RuntimeError> {
        if log_files(&self.settings.log_dir, id).is_empty()
            && self.get_container(id).await?.is_none()
        {
            return Err(RuntimeError::ContainerNotFound {
                container_id: id.to_string(),
            });
        }
        Ok(read_logs(&self.settings.log_dir, id, tail, follow))
    }
}

/// containerd's own failures (e.g. runc refusing the spec) get the container id in front.
fn naming_container(err: RuntimeError, id: &str) -> RuntimeError {
    match err {
        RuntimeError::Rpc { .. } => container_error(id, err),
        other => other,
    }
}

fn remove_dir_if_exists(dir: &Path) -> Result<(), RuntimeError> {
    match std::fs::remove_dir_all(dir) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(RuntimeError::Io {
            path: dir.to_path_buf(),
            source: e,
        }),
        _ => Ok(()),
    }
}

fn replica_state(process: Option<&Process>) -> TaskStatus {
    match process.map(|p| Status::try_from(p.status)) {
        None => TaskStatus::Stopped,
        Some(Ok(Status::Running)) => TaskStatus::Running,
        Some(Ok(Status::Created)) => TaskStatus::Created,
        Some(Ok(Status::Stopped)) => TaskStatus::Stopped,
        Some(Ok(Status::Paused | Status::Pausing)) => TaskStatus::Paused,
        Some(_) => TaskStatus::Unknown,
    }
}

/// Rebuilds what haloyd knows about a replica from its container record alone.
fn replica_info(container: Container, process: Option<Process>) -> ReplicaInfo {
    let labels: BTreeMap<String, String> = container.labels.into_iter().collect();
    let label = |key: &str| labels.get(key).cloned().unwrap_or_default();
    let state = replica_state(process.as_ref());
    let (pid, exit_code) = match &process {
        Some(p) if state == TaskStatus::Stopped => (None, Some(p.exit_status)),
        Some(p) if p.pid > 0 => (Some(p.pid), None),
        _ => (None, None),
    };
    ReplicaInfo {
        container_id: container.id,
        app: label(base_labels::APP),
        deployment_id: label(base_labels::DEPLOYMENT_ID),
        replica: label(base_labels::REPLICA).parse().unwrap_or(0),
        ip: label(labels::IP).parse().ok(),
        port: label(base_labels::PORT).parse().unwrap_or(0),
        labels,
        state,
        pid,
        exit_code,
    }
}

#[cfg(test)]
#[path = "tests/task.rs"]
mod tests;
