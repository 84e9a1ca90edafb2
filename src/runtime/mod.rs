//! Everything that talks to containerd over gRPC: connection (namespace metadata, reconnect),
//! client-side image pull/import into the content store and overlayfs snapshots, containers with OCI
//! runtime specs, tasks, stop/kill, the exit-event subscription, per-task logs. The `Runtime` trait
//! is the seam the deploy logic uses; `ContainerdRuntime` is the real implementation.

pub mod apparmor;
pub mod client;
pub mod events;
pub mod exec;
#[cfg(any(test, feature = "fake-runtime"))]
pub mod fake;
pub mod image;
pub mod log_driver;
pub mod logs;
pub mod seccomp;
pub mod spec;
pub mod task;

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use futures_util::Stream;
use tokio::sync::{broadcast, watch};

pub use client::{Containerd, DEFAULT_NAMESPACE};
pub use image::{ImageStore, PullReport};

/// Snapshotter every image is unpacked into and every container's rootfs comes from.
pub const SNAPSHOTTER: &str = "overlayfs";

/// Label keys on containers: which replicas exist. Recovery joins them with the history in
/// `state` for each replica's config; `IMAGE` is for people and never read back (as are the
/// labels in `task::labels` but `IP`).
pub mod labels {
    pub const APP: &str = "dev.haloy.app";
    pub const DEPLOYMENT_ID: &str = "dev.haloy.deployment-id";
    pub const REPLICA: &str = "dev.haloy.replica";
    pub const PORT: &str = "dev.haloy.port";
    pub const IMAGE: &str = "dev.haloy.image";
    /// Prefix of the image-record labels `dev.haloy.app/<app>` naming the apps that use it.
    pub const IMAGE_APP_PREFIX: &str = "dev.haloy.app/";
    /// `static` when the app's `naming_strategy` is static: the container is named after the
    /// app (set in `ReplicaSpec::labels` by the deployer, read by `task::replica_container_id`).
    pub const NAMING: &str = "dev.haloy.naming";
    /// The app's `network` when it is not the default one: the network CNI attaches the
    /// replica to (set in `ReplicaSpec::labels` by the deployer, read by `task::Tasks::start`).
    pub const NETWORK: &str = "dev.haloy.network";
}

/// Errors of the runtime module; each names what a user needs to act on.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("containerd socket {path} does not exist: is containerd running and is `containerd.address` in the haloyd server config right?")]
    SocketMissing { path: PathBuf },
    #[error("containerd at {path} is not answering: {reason}")]
    NotAnswering { path: PathBuf, reason: String },
    #[error("lost the connection to containerd at {path} during {operation}: {reason}")]
    Unavailable {
        path: PathBuf,
        operation: &'static str,
        reason: String,
    },
    #[error("containerd namespace `{namespace}` is not a valid name")]
    InvalidNamespace { namespace: String },
    #[error("containerd {operation} failed ({code:?}): {message}")]
    Rpc {
        operation: &'static str,
        code: tonic::Code,
        message: String,
    },
    #[error("invalid image reference `{reference}`: {reason}")]
    InvalidReference { reference: String, reason: String },
    #[error("image `{reference}` not found in registry {registry}: {reason}")]
    ImageNotFound {
        reference: String,
        registry: String,
        reason: String,
    },
    #[error("registry {registry} refused the credentials for `{reference}`: {reason}")]
    Unauthorized {
        reference: String,
        registry: String,
        reason: String,
    },
    #[error("pulling `{reference}` from {registry} failed: {reason}")]
    Registry {
        reference: String,
        registry: String,
        reason: String,
    },
    #[error("image `{reference}` has no linux/{arch} variant (available: {available}); build or push one for this server's architecture")]
    NoMatchingPlatform {
        reference: String,
        arch: String,
        available: String,
    },
    #[error("image `{reference}` is not present locally and pull_policy is `never`")]
    ImageNotPresent { reference: String },
    #[error("image `{reference}` is malformed: {reason}")]
    InvalidImage { reference: String, reason: String },
    #[error("image archive {path}: {reason}")]
    Archive { path: PathBuf, reason: String },
    #[error("container {container_id} not found")]
    ContainerNotFound { container_id: String },
    #[error("container {container_id}: {reason}")]
    Container {
        container_id: String,
        reason: String,
    },
    #[error("network setup for container {container_id} failed: {reason}")]
    Network {
        container_id: String,
        reason: String,
    },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("network settings: {0}")]
    NetworkSettings(crate::network::NetworkError),
    #[error("not implemented yet: {0}")]
    NotImplemented(&'static str),
}

/// When to contact the registry for an image (Haloy's `image.pull_policy`). The one
/// definition: `ResolvedApp` carries it (serialized in snake_case) and `ImageRequest` uses it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PullPolicy {
    /// Resolve the tag every time; download only when the manifest digest changed. Haloy's
    /// default (presets imply `if_missing`).
    #[default]
    Always,
    /// Use the local image when present; pull otherwise.
    IfMissing,
    /// Never contact a registry; the image must have been pulled or imported before.
    Never,
}

/// Registry credentials from the app config's `image.registry`. Debug never shows the password.
#[derive(Clone, PartialEq, Eq)]
pub struct RegistryCredentials {
    pub username: String,
    pub password: String,
}

impl std::fmt::Debug for RegistryCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistryCredentials")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// What the deploy logic asks for: an image reference and how to get it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageRequest {
    pub reference: String,
    pub pull_policy: PullPolicy,
    pub credentials: Option<RegistryCredentials>,
    /// The app that uses the image: recorded on the image so `remove_unused_images` can tell
    /// which images belong to which app.
    pub app: Option<String>,
}

impl ImageRequest {
    /// A request for `reference` with the given policy, no credentials, no app.
    pub fn new(reference: impl Into<String>, pull_policy: PullPolicy) -> ImageRequest {
        ImageRequest {
            reference: reference.into(),
            pull_policy,
            credentials: None,
            app: None,
        }
    }
}

/// The parts of the image config a container spec is built from.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImageConfig {
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
    /// `KEY=VALUE` entries, as in the image config.
    pub env: Vec<String>,
    pub working_dir: Option<String>,
    pub user: Option<String>,
    /// `8080/tcp` style entries.
    pub exposed_ports: Vec<String>,
}

/// A local image, unpacked and ready to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageInfo {
    /// Normalized name, e.g. `docker.io/library/nginx:latest`.
    pub name: String,
    /// Digest of the platform manifest (not of an index).
    pub digest: String,
    pub config: ImageConfig,
    /// Chain ID of the top layer: the committed snapshot a container's rootfs is prepared from.
    pub chain_id: String,
}

/// Memory/CPU/process limits of one replica (`resources` in haloy.yaml). The one definition:
/// `ResolvedApp` carries it and `ReplicaSpec` uses it.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Resources {
    /// Memory limit in bytes (`"512Mi"`, `"1G"` and plain numbers are accepted in the file).
    pub memory_bytes: Option<u64>,
    /// CPU limit in cores, e.g. 0.5.
    pub cpus: Option<f64>,
    /// Most processes/threads a replica may have; haloyd's `security.pids_limit` when unset.
    pub pids: Option<u64>,
}

/// The seccomp filter of a replica (`security.seccomp` in haloy.yaml). The one definition:
/// `ResolvedApp` carries it (`default`/`unconfined`) and `ReplicaSpec` uses it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SeccompMode {
    /// containerd's/Docker's default profile (`seccomp::default_profile`).
    #[default]
    Default,
    /// No filter at all.
    Unconfined,
}

/// Where a volume's data lives on the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VolumeSource {
    /// An absolute host path, bind-mounted.
    Bind(PathBuf),
    /// A named volume that haloyd keeps under its data dir.
    Named(String),
}

/// One `volumes:` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeMount {
    pub source: VolumeSource,
    pub target: String,
    pub read_only: bool,
}

/// Everything needed to create and start one replica.
#[derive(Debug, Clone)]
pub struct ReplicaSpec {
    pub app: String,
    pub deployment_id: String,
    pub replica: u32,
    pub image: ImageInfo,
    pub env: Vec<(String, String)>,
    pub port: u16,
    pub health_check_path: String,
    pub domains: Vec<String>,
    /// Extra labels beside the `dev.haloy.*` ones.
    pub labels: BTreeMap<String, String>,
    pub volumes: Vec<VolumeMount>,
    pub resources: Resources,
    pub seccomp: SeccompMode,
    pub stop_timeout: Duration,
    /// Run a tiny init (tini) as PID 1 in front of the app.
    pub init: bool,
}

/// Debian's statically linked tini (package `tini`): it runs in any image.
pub const DEFAULT_INIT_BINARY: &str = "/usr/bin/tini-static";

/// Task state as containerd reports it (the API's `ReplicaState` is the replica's phase in
/// haloy's lifecycle, a different thing).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TaskStatus {
    Running,
    Created,
    Stopped,
    Paused,
    Unknown,
}

/// A replica container as found in containerd.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicaInfo {
    pub container_id: String,
    pub app: String,
    pub deployment_id: String,
    pub replica: u32,
    pub ip: Option<IpAddr>,
    pub port: u16,
    pub labels: BTreeMap<String, String>,
    pub state: TaskStatus,
    pub pid: Option<u32>,
    pub exit_code: Option<u32>,
}

/// A replica whose task was just started. CNI ADD succeeded before the task started, so it
/// always has an address (unlike [`ReplicaInfo`], read back from labels).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StartedReplica {
    pub container_id: String,
    pub replica: u32,
    pub ip: IpAddr,
    pub pid: u32,
}

/// A task exit as delivered by containerd's event stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskExit {
    pub container_id: String,
    pub exit_status: u32,
    pub exited_at: SystemTime,
}

/// Which output stream a log line came from. The one definition: the API's `LogLine` carries
/// it as `stdout`/`stderr`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogStreamKind {
    Stdout,
    Stderr,
}

/// One line of task output as the log files hold it (the API's `LogLine` adds the replica
/// and the container and writes the time as RFC 3339).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskLogLine {
    pub time: SystemTime,
    pub stream: LogStreamKind,
    pub line: String,
}

/// Log lines of one task, oldest first; ends unless `follow` was asked for.
pub type LogStream = Pin<Box<dyn Stream<Item = Result<TaskLogLine, RuntimeError>> + Send>>;

/// What the deploy logic needs from a container runtime. Object safe, so tests can put a fake
/// behind `Arc<dyn Runtime>`.
#[async_trait]
pub trait Runtime: Send + Sync {
    /// Makes the image present and unpacked according to the pull policy.
    async fn ensure_image(&self, req: &ImageRequest) -> Result<ImageInfo, RuntimeError>;
    /// Network namespace + CNI, snapshot, container, started task.
    async fn start_replica(&self, spec: &ReplicaSpec) -> Result<StartedReplica, RuntimeError>;
    /// SIGTERM, SIGKILL after `timeout`, then delete the task.
    async fn stop_replica(&self, container_id: &str, timeout: Duration)
        -> Result<(), RuntimeError>;
    /// Snapshot, container, CNI DEL, netns. Idempotent.
    async fn remove_replica(&self, container_id: &str) -> Result<(), RuntimeError>;
    /// Replicas found by `dev.haloy.*` labels, optionally of one app, with their task state.
    async fn list_replicas(&self, app: Option<&str>) -> Result<Vec<ReplicaInfo>, RuntimeError>;
    /// Task exits of this runtime's containers, as they happen.
    fn subscribe_exits(&self) -> broadcast::Receiver<TaskExit>;
    /// Changes each time exits may have been missed (the exit stream was made again after a
    /// break): the caller compares its replicas with `list_replicas` then.
    fn subscribe_resyncs(&self) -> watch::Receiver<u64>;
    /// Output of a task: the last `tail` lines (all when `None`), then new ones if `follow`.
    async fn logs(
        &self,
        container_id: &str,
        tail: Option<usize>,
        follow: bool,
    ) -> Result<LogStream, RuntimeError>;
    /// Deletes the app's images that are not in `keep` (image names as in `ImageInfo::name`).
    async fn remove_unused_images(&self, app: &str, keep: &[String]) -> Result<(), RuntimeError>;
    /// Starts a command in the running task of `container_id` (`haloy exec`).
    async fn exec(
        &self,
        container_id: &str,
        spec: &exec::ExecSpec,
    ) -> Result<exec::ExecProcess, RuntimeError> {
        let _ = (container_id, spec);
        Err(RuntimeError::NotImplemented("exec in this runtime"))
    }
}

/// Settings of the real runtime (from haloyd's server config).
#[derive(Debug, Clone)]
pub struct RuntimeConfig {
    pub socket: PathBuf,
    pub namespace: String,
    /// Registries (`host[:port]`) that may be reached over plain HTTP. Loopback always may.
    pub insecure_registries: Vec<String>,
    /// CNI plugins, bridge, subnet and state dirs of the task network.
    pub network: crate::network::CniSettings,
    /// Named networks (pool, registry, nft table); None: every app on `network`.
    pub named_networks: Option<crate::network::NamedSettings>,
    /// Where gateways of named networks are announced (haloyd's DNS server listens there).
    pub network_gateways: Option<tokio::sync::mpsc::UnboundedSender<std::net::IpAddr>>,
    /// State dir, log dir/rotation and log driver binary of the replicas.
    pub tasks: task::TaskSettings,
}

impl RuntimeConfig {
    pub fn new(socket: impl Into<PathBuf>) -> RuntimeConfig {
        RuntimeConfig {
            socket: socket.into(),
            namespace: DEFAULT_NAMESPACE.to_string(),
            insecure_registries: Vec::new(),
            network: Default::default(),
            named_networks: None,
            network_gateways: None,
            tasks: Default::default(),
        }
    }
}

/// The real runtime: containerd over gRPC (and CNI for networking).
pub struct ContainerdRuntime {
    pub(crate) client: Containerd,
    pub(crate) images: ImageStore,
    pub(crate) exits: broadcast::Sender<TaskExit>,
    pub(crate) resyncs: watch::Sender<u64>,
    pub(crate) config: Arc<RuntimeConfig>,
    pub(crate) tasks: task::Tasks,
    /// Keeps the exit-event subscription alive as long as the runtime.
    pub(crate) _exit_watcher: events::ExitWatcher,
}

impl ContainerdRuntime {
    /// Connects to containerd and creates the namespace.
    pub async fn connect(config: RuntimeConfig) -> Result<ContainerdRuntime, RuntimeError> {
        let network: Arc<dyn crate::network::Network> = match &config.named_networks {
            Some(named) => Arc::new(
                crate::network::NetworkSet::open(
                    config.network.clone(),
                    named.clone(),
                    config.network_gateways.clone(),
                )
                .await
                .map_err(RuntimeError::NetworkSettings)?,
            ),
            None => Arc::new(
                crate::network::CniNetwork::new(config.network.clone())
                    .map_err(RuntimeError::NetworkSettings)?,
            ),
        };
        Self::connect_with_network(config, network).await
    }

    /// Like `connect`, with another `Network` implementation for the replicas.
    pub async fn connect_with_network(
        config: RuntimeConfig,
        network: Arc<dyn crate::network::Network>,
    ) -> Result<ContainerdRuntime, RuntimeError> {
        let client = Containerd::connect(&config.socket, &config.namespace).await?;
        let images = ImageStore::new(client.clone(), config.insecure_registries.clone());
        let (exits, _) = broadcast::channel(1024);
        let tasks = task::Tasks::new(client.clone(), network, config.tasks.clone());
        let resyncs = watch::Sender::new(0);
        let exit_watcher =
            events::ExitWatcher::spawn(client.clone(), exits.clone(), resyncs.clone());
        Ok(ContainerdRuntime {
            client,
            images,
            exits,
            resyncs,
            config: Arc::new(config),
            tasks,
            _exit_watcher: exit_watcher,
        })
    }

    pub fn config(&self) -> &RuntimeConfig {
        &self.config
    }

    pub fn client(&self) -> &Containerd {
        &self.client
    }

    /// Image pulls/imports with transfer reports (used by tests and benchmarks).
    pub fn images(&self) -> &ImageStore {
        &self.images
    }
}

#[async_trait]
impl Runtime for ContainerdRuntime {
    async fn ensure_image(&self, req: &ImageRequest) -> Result<ImageInfo, RuntimeError> {
        self.images.ensure(req).await.map(|(info, _report)| info)
    }

    // The replica methods live in task.rs.
    async fn start_replica(&self, spec: &ReplicaSpec) -> Result<StartedReplica, RuntimeError> {
        self.tasks.start(spec).await
    }

    async fn stop_replica(
        &self,
        container_id: &str,
        timeout: Duration,
    ) -> Result<(), RuntimeError> {
        self.tasks.stop(container_id, timeout).await
    }

    async fn remove_replica(&self, container_id: &str) -> Result<(), RuntimeError> {
        self.tasks.remove(container_id).await
    }

    async fn list_replicas(&self, app: Option<&str>) -> Result<Vec<ReplicaInfo>, RuntimeError> {
        self.tasks.list(app).await
    }

    fn subscribe_exits(&self) -> broadcast::Receiver<TaskExit> {
        self.exits.subscribe()
    }

    fn subscribe_resyncs(&self) -> watch::Receiver<u64> {
        self.resyncs.subscribe()
    }

    async fn logs(
        &self,
        container_id: &str,
        tail: Option<usize>,
        follow: bool,
    ) -> Result<LogStream, RuntimeError> {
        self.tasks.logs(container_id, tail, follow).await
    }

    async fn remove_unused_images(&self, app: &str, keep: &[String]) -> Result<(), RuntimeError> {
        self.images.remove_unused(app, keep).await
    }

    async fn exec(
        &self,
        container_id: &str,
        spec: &exec::ExecSpec,
    ) -> Result<exec::ExecProcess, RuntimeError> {
        let fifo_root = self.config.tasks.state_dir.join("exec");
        exec::start(&self.client, &fifo_root, container_id, spec).await
    }
}
