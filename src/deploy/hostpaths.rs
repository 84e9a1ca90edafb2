//! Which host paths an app may bind-mount. A bind of the host's root, its system directories,
//! haloyd's own state/run dirs or the containerd socket hands the app the host, so such a
//! volume (the path, anything under it, or any directory containing it) is refused at deploy,
//! before anything changes, unless the server config lists it in
//! `security.allowed_host_paths`. Paths are compared as written and after resolving symlinks.

use std::path::{Component, Path, PathBuf};

use crate::config::VolumeSpec;

/// Host paths no app gets without the operator's say-so, and why.
const SYSTEM_PATHS: &[(&str, &str)] = &[
    ("/", "the host's root file system"),
    ("/etc", "the host's configuration"),
    ("/proc", "the host's processes"),
    ("/sys", "the host's kernel settings"),
    ("/dev", "the host's devices"),
    ("/boot", "the host's kernel and boot loader"),
    // Root-equivalent even when haloyd talks to another containerd.
    (
        "/run/containerd/containerd.sock",
        "the host's default containerd socket",
    ),
];

#[derive(Debug, Clone, PartialEq, Eq)]
struct Protected {
    path: PathBuf,
    what: String,
}

/// The refused paths and the operator's exceptions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPathPolicy {
    protected: Vec<Protected>,
    allowed: Vec<PathBuf>,
}

impl Default for HostPathPolicy {
    /// The policy of a haloyd with the default server config.
    fn default() -> Self {
        HostPathPolicy::new(
            &[
                (PathBuf::from("/var/lib/haloy"), "haloyd's state dir"),
                (PathBuf::from("/run/haloy"), "haloyd's run dir"),
                (
                    PathBuf::from("/run/containerd/containerd.sock"),
                    "the containerd socket",
                ),
            ],
            Vec::new(),
        )
    }
}

/// `..` and `.` removed without touching the file system.
fn lexical(path: &Path) -> PathBuf {
    let mut out = PathBuf::from("/");
    for component in path.components() {
        match component {
            Component::Normal(part) => out.push(part),
            Component::ParentDir => {
                out.pop();
            }
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
        }
    }
    out
}

/// The path as written and, when it exists, with symlinks resolved.
fn spellings(path: &Path) -> Vec<PathBuf> {
    let written = lexical(path);
    let mut all = vec![written.clone()];
    if let Ok(real) = std::fs::canonicalize(&written) {
        if real != written {
            all.push(real);
        }
    }
    all
}

impl HostPathPolicy {
    /// The system paths plus haloyd's own (`(path, what it is)`), with the operator's
    /// `allowed` exceptions.
    pub fn new(haloyd_paths: &[(PathBuf, &str)], allowed: Vec<PathBuf>) -> HostPathPolicy {
        let named = SYSTEM_PATHS
            .iter()
            .map(|(p, what)| (PathBuf::from(p), what.to_string()))
            .chain(haloyd_paths.iter().map(|(p, w)| (p.clone(), w.to_string())));
        let protected = named
            .flat_map(|(path, what)| {
                spellings(&path).into_iter().map(move |path| Protected {
                    path,
                    what: what.clone(),
                })
            })
            .collect();
        let allowed = allowed.iter().flat_map(|p| spellings(p)).collect();
        HostPathPolicy { protected, allowed }
    }

    /// The protected path `host` would expose, if any: equal, below, or above it. `/` only
    /// counts when bound itself (every path is below it).
    fn exposes(&self, host: &Path) -> Option<&Protected> {
        self.protected.iter().find(|p| {
            if p.path == Path::new("/") {
                host == p.path
            } else {
                host.starts_with(&p.path) || p.path.starts_with(host)
            }
        })
    }

    fn is_allowed(&self, spellings: &[PathBuf]) -> bool {
        spellings
            .iter()
            .all(|s| self.allowed.iter().any(|a| s.starts_with(a)))
    }

    /// One `volumes[i]: ...` line per refused bind mount; empty when all are fine.
    pub fn problems(&self, volumes: &[VolumeSpec]) -> Vec<String> {
        volumes
            .iter()
            .enumerate()
            .filter_map(|(i, volume)| match volume {
                VolumeSpec::Bind { host, .. } => self.problem(i, host),
                VolumeSpec::Named { .. } => None,
            })
            .collect()
    }

    fn problem(&self, index: usize, host: &str) -> Option<String> {
        let spellings = spellings(Path::new(host));
        if self.is_allowed(&spellings) {
            return None;
        }
        let hit = spellings.iter().find_map(|s| self.exposes(s))?;
        Some(format!(
            "volumes[{index}]: binding host path `{host}` is refused because it exposes {} ({}); \
             if this app must have it, add the path to `security.allowed_host_paths` in \
             haloyd's server config",
            hit.what,
            hit.path.display()
        ))
    }
}

#[cfg(test)]
#[path = "tests/hostpaths.rs"]
mod tests;
