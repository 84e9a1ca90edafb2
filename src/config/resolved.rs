//! The resolved, validated per-target app config (`ResolvedApp`) that the CLI sends to haloyd as
//! JSON inside `POST /v1/deploy`. Every default is already applied and every value source is
//! resolved, so haloyd never re-reads haloy.yaml.

use serde::{Deserialize, Serialize};
use std::fmt;

// Defined by the runtime that acts on them; `ResolvedApp` carries them as they are.
pub use crate::runtime::{PullPolicy, Resources, SeccompMode};

/// A string that must never show up in logs or debug output (API tokens, registry passwords).
/// It serializes as the plain string because haloyd needs e.g. the registry password.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(transparent)]
pub struct SecretString(String);

impl SecretString {
    pub fn new(s: impl Into<String>) -> Self {
        SecretString(s.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for SecretString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("\"***\"")
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum DeploymentStrategy {
    /// Replace replicas one at a time, keeping N-1 serving.
    #[default]
    Rolling,
    /// Stop all old replicas, then start all new ones.
    Replace,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum NamingStrategy {
    /// Containers are named `<app>-<deployment id>-<replica>`.
    #[default]
    Dynamic,
    /// One container named after the app (requires `replace` and one replica).
    Static,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum HistoryStrategy {
    /// Keep the last `count` images on the server for rollback.
    #[default]
    Local,
    /// Rely on immutable registry tags for rollback.
    Registry,
    /// No rollback.
    None,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Preset {
    Database,
    Service,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ImageHistory {
    pub strategy: HistoryStrategy,
    /// How many deployments to keep for rollback.
    pub count: u32,
    pub pattern: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RegistryAuth {
    /// Registry host (explicit, or taken from the repository, `docker.io` by default).
    pub server: String,
    pub username: String,
    pub password: SecretString,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BuildConfig {
    pub context: Option<String>,
    pub dockerfile: Option<String>,
    pub platform: Option<String>,
    pub args: Vec<EnvVar>,
    pub push: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResolvedImage {
    /// e.g. `127.0.0.1:5000/haloy-fixtures/web` (no tag).
    pub repository: String,
    /// Defaults to `latest`.
    pub tag: String,
    /// `sha256:…` when the image is pinned by digest (pulled by digest; the tag is a label).
    /// Absent in records and requests from before digests were accepted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
    pub pull_policy: PullPolicy,
    pub registry: Option<RegistryAuth>,
    pub history: ImageHistory,
    /// True when the image is to be built locally (image omitted, `build: true` or
    /// `build_config`); building is not implemented yet.
    pub build: bool,
    pub build_config: Option<BuildConfig>,
}

impl ResolvedImage {
    /// Haloy's push strategy of a built image: `build_config.push`, else `registry` when
    /// `image.registry` is set, else `server` (uploaded by the CLI).
    pub fn pushes_to_server(&self) -> bool {
        match self.build_config.as_ref().and_then(|b| b.push.as_deref()) {
            Some(push) => push == "server",
            None => self.registry.is_none(),
        }
    }

    /// `repository:tag`, or `repository:tag@digest` when pinned.
    pub fn reference(&self) -> String {
        match &self.digest {
            Some(d) => format!("{}:{}@{d}", self.repository, self.tag),
            None => format!("{}:{}", self.repository, self.tag),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DomainSpec {
    /// Canonical host name, lowercase.
    pub domain: String,
    /// Hosts that redirect to / also serve the canonical domain, lowercase.
    pub aliases: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnvVar {
    pub name: String,
    pub value: String,
}

/// A parsed `volumes:` entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum VolumeSpec {
    /// `/abs/host/path:/container/path[:ro]`
    Bind {
        host: String,
        container: String,
        read_only: bool,
    },
    /// `name:/container/path[:ro]`, a volume haloyd manages under its state dir.
    Named {
        name: String,
        container: String,
        read_only: bool,
    },
}

/// The kernel's PID_MAX_LIMIT: no pids limit can be above it.
pub const MAX_PIDS: u64 = 4_194_304;

/// `security:` of an app.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct AppSecurity {
    #[serde(default)]
    pub seccomp: SeccompMode,
}

/// One deployable app for one target, fully resolved.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResolvedApp {
    /// The key under `targets:`, `None` for a file without targets.
    pub target: Option<String>,
    pub name: String,
    /// As written in the file (host, host:port or URL); the CLI turns it into an API URL.
    pub server: Option<String>,
    /// Resolved `api_token`; used by the CLI only and never serialized.
    #[serde(skip)]
    pub api_token: Option<SecretString>,
    pub image: ResolvedImage,
    pub replicas: u32,
    pub port: u16,
    pub health_check_path: String,
    pub min_ready_seconds: u32,
    pub deployment_strategy: DeploymentStrategy,
    pub naming_strategy: NamingStrategy,
    pub domains: Vec<DomainSpec>,
    pub env: Vec<EnvVar>,
    pub volumes: Vec<VolumeSpec>,
    pub network: Option<String>,
    /// Shell commands the CLI runs on the deploying machine (`cli::hooks`); haloyd ignores them.
    pub pre_deploy: Vec<String>,
    pub post_deploy: Vec<String>,
    pub global_pre_deploy: Vec<String>,
    pub global_post_deploy: Vec<String>,
    /// Left out of `deploy --all` unless `--include-protected`.
    pub protected: bool,
    pub preset: Option<Preset>,
    pub acme_email: Option<String>,
    pub resources: Option<Resources>,
    /// Missing in configs from older clients: the defaults.
    #[serde(default)]
    pub security: AppSecurity,
    /// Seconds between SIGTERM and SIGKILL when a replica is stopped.
    pub stop_timeout: u32,
    /// Run a tiny init (tini) as PID 1 that forwards signals and reaps zombies. Added after
    /// format 1 of the history: absent in older records and deploy requests.
    #[serde(default)]
    pub init: bool,
    /// Values resolved from `secret_providers` (CLI side only, never serialized): printed
    /// configs show `<hidden>` in their place.
    #[serde(skip)]
    pub secret_values: Vec<SecretString>,
}

impl ResolvedApp {
    /// A short label for progress output: the target key, or the app name.
    pub fn label(&self) -> &str {
        self.target.as_deref().unwrap_or(&self.name)
    }
}

impl ResolvedApp {
    /// The numeric keys against the same table the decoder uses (`config::limits`).
    fn limit_problems(&self, out: &mut Vec<String>) {
        use super::limits;
        let checks = [
            limits::REPLICAS.check(self.replicas),
            limits::PORT.check(self.port),
            limits::MIN_READY_SECONDS.check(self.min_ready_seconds),
            limits::STOP_TIMEOUT.check(self.stop_timeout),
            limits::HISTORY_COUNT.check(self.image.history.count),
        ];
        out.extend(checks.into_iter().filter_map(Result::err));
        if let Some(pids) = self.resources.and_then(|r| r.pids) {
            out.extend(limits::PIDS.check(pids).err());
        }
    }

    /// Re-checks the invariants of a resolved app, for haloyd to validate what it receives
    /// (`POST /v1/deploy`) with the same wording as the CLI. One `key: what is wrong` line per
    /// problem; empty when valid.
    pub fn problems(&self) -> Vec<String> {
        use super::values;
        let mut out = Vec::new();
        if let Err(e) = values::check_app_name(&self.name) {
            out.push(format!("name: {e}"));
        }
        if self.image.repository.trim().is_empty() {
            out.push("image.repository: must not be empty".into());
        }
        if self.image.tag.trim().is_empty() || self.image.tag.chars().any(char::is_whitespace) {
            out.push(format!(
                "image.tag: `{}` is not a valid tag",
                self.image.tag
            ));
        }
        if let Some(d) = &self.image.digest {
            if let Err(e) = values::check_digest(&self.image.repository, d) {
                out.push(format!("image.digest: {e}"));
            }
        }
        self.limit_problems(&mut out);
        if !self.health_check_path.starts_with('/') {
            out.push(format!(
                "health_check_path: `{}` must start with `/`",
                self.health_check_path
            ));
        }
        for (i, e) in self.env.iter().enumerate() {
            if let Err(m) = values::check_env_name(&e.name) {
                out.push(format!("env[{i}].name: {m}"));
            }
        }
        self.domain_problems(&mut out);
        self.volume_problems(&mut out);
        if self.naming_strategy == NamingStrategy::Static
            && (self.replicas > 1 || self.deployment_strategy == DeploymentStrategy::Rolling)
        {
            out.push(
                "naming_strategy: `static` needs `deployment_strategy: replace` and one replica"
                    .into(),
            );
        }
        out
    }

    fn domain_problems(&self, out: &mut Vec<String>) {
        let mut seen: Vec<&str> = Vec::new();
        for (i, d) in self.domains.iter().enumerate() {
            let hosts = std::iter::once((format!("domains[{i}].domain"), &d.domain)).chain(
                d.aliases
                    .iter()
                    .enumerate()
                    .map(move |(j, a)| (format!("domains[{i}].aliases[{j}]"), a)),
            );
            for (path, host) in hosts {
                match super::values::normalize_domain(host) {
                    Err(e) => out.push(format!("{path}: {e}")),
                    Ok(h) if h != *host => out.push(format!("{path}: `{host}` must be lowercase")),
                    Ok(_) if seen.contains(&host.as_str()) => {
                        out.push(format!("{path}: `{host}` is listed more than once"))
                    }
                    Ok(_) => seen.push(host),
                }
            }
        }
    }

    fn volume_problems(&self, out: &mut Vec<String>) {
        for (i, v) in self.volumes.iter().enumerate() {
            let (source, container, ro) = match v {
                VolumeSpec::Bind {
                    host,
                    container,
                    read_only,
                } => (host, container, *read_only),
                VolumeSpec::Named {
                    name,
                    container,
                    read_only,
                } => (name, container, *read_only),
            };
            let spec = format!("{source}:{container}{}", if ro { ":ro" } else { "" });
            match super::values::parse_volume(&spec) {
                Ok(parsed) if parsed == *v => {}
                Ok(_) => out.push(format!(
                    "volumes[{i}]: `{source}` is a {} but is marked as the other kind",
                    if source.starts_with('/') {
                        "host path"
                    } else {
                        "volume name"
                    }
                )),
                Err(e) => out.push(format!("volumes[{i}]: {e}")),
            }
        }
    }
}
