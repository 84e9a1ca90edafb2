//! Crash-safe persistence under `state_dir`: the deployment history of every app (the
//! resolved config and image digest of each deploy), which is what `rollback` and
//! `rollback-targets` read. The *running* truth is never stored here: it lives in containerd
//! labels, so a lost or stale history file can never make haloyd route to the wrong replicas.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use crate::config::ResolvedApp;

/// How many records per app are kept on disk, whatever the app's image history setting says;
/// bounds the file size for apps deployed many times a day.
const MAX_RECORDS_PER_APP: usize = 50;

/// Format of the history files this version writes. 1: files written before the field existed
/// (no `format_version`); 2: adds `format_version` and `last_operation`. A file of a newer
/// format is refused, never rewritten, so a downgrade cannot lose what a newer haloyd stored.
pub const HISTORY_FORMAT: u32 = 2;

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("cannot create state directory {path}: {source}")]
    CreateDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot read deployment history {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "deployment history {path} is corrupt ({source}); move it away to start a fresh history"
    )]
    Corrupt {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("cannot write deployment history {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("app `{app}` has no deployment `{id}`")]
    UnknownDeployment { app: String, id: String },
    #[error(
        "deployment history {path} has format_version {found}, newer than the {supported} this haloyd understands; it was written by a newer haloyd: upgrade haloyd (the file is left untouched)"
    )]
    TooNew {
        path: PathBuf,
        found: u32,
        supported: u32,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeployStatus {
    InProgress,
    Succeeded,
    Failed,
    /// A later deploy replaced it; it stays a rollback target while its image is kept.
    Superseded,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DeploymentRecord {
    pub id: String,
    pub app: String,
    /// RFC 3339, UTC.
    pub created_at: String,
    pub config: ResolvedApp,
    /// The image reference that was deployed (`repo:tag`).
    pub image: String,
    /// The manifest digest actually pulled; rollback pins it.
    pub digest: Option<String>,
    pub status: DeployStatus,
    pub message: Option<String>,
    /// Set when this deploy was a rollback to an earlier one.
    pub rollback_of: Option<String>,
}

/// What kind of server-side job an operation was.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OperationKind {
    Deploy,
    Rollback,
    Stop,
    /// A stop that also removes the containers (and maybe named volumes).
    Remove,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OperationState {
    Running,
    Succeeded,
    Failed,
}

/// The last mutating operation on an app, as `haloy status` shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OperationRecord {
    /// Job id (for deploys and rollbacks, the deployment id).
    pub id: String,
    pub kind: OperationKind,
    pub state: OperationState,
    /// RFC 3339, UTC.
    pub started_at: String,
    #[serde(default)]
    pub finished_at: Option<String>,
    #[serde(default)]
    pub message: Option<String>,
}

#[derive(Debug, Serialize, Deserialize)]
struct AppHistory {
    /// Missing in format 1 files.
    #[serde(default = "format_one")]
    format_version: u32,
    /// Oldest first.
    deployments: Vec<DeploymentRecord>,
    /// Set by `haloy stop`, cleared by the next successful deploy: a stopped app is not
    /// restarted when haloyd starts again.
    #[serde(default)]
    stopped: bool,
    /// Added in format 2.
    #[serde(default)]
    last_operation: Option<OperationRecord>,
}

impl Default for AppHistory {
    fn default() -> Self {
        AppHistory {
            format_version: HISTORY_FORMAT,
            deployments: Vec::new(),
            stopped: false,
            last_operation: None,
        }
    }
}

fn format_one() -> u32 {
    1
}

/// Deployment history, one JSON file per app, each write atomic and durable.
pub struct StateStore {
    dir: PathBuf,
    registry_logins: registries::RegistryLogins,
    /// Serialises read-modify-write cycles; never held across an await.
    write_lock: Mutex<()>,
}

impl StateStore {
    pub fn open(state_dir: &Path) -> Result<Self, StateError> {
        let dir = state_dir.join("deployments");
        fs::create_dir_all(&dir).map_err(|source| StateError::CreateDir {
            path: dir.clone(),
            source,
        })?;
        // Owner-only, so history files written by older versions are protected too.
        let _ = fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o700));
        Ok(Self {
            registry_logins: registries::RegistryLogins::new(state_dir),
            dir,
            write_lock: Mutex::new(()),
        })
    }

    /// Registry logins kept by this haloyd (`haloy server registry login`).
    pub fn registry_logins(&self) -> &registries::RegistryLogins {
        &self.registry_logins
    }

    /// All records of `app`, oldest first.
    pub fn history(&self, app: &str) -> Result<Vec<DeploymentRecord>, StateError> {
        Ok(self.load(app)?.deployments)
    }

    pub fn get(&self, app: &str, id: &str) -> Result<DeploymentRecord, StateError> {
        self.history(app)?
            .into_iter()
            .find(|r| r.id == id)
            .ok_or_else(|| StateError::UnknownDeployment {
                app: app.to_string(),
                id: id.to_string(),
            })
    }

    /// The newest successful deployment: what is (or should be) running.
    pub fn current(&self, app: &str) -> Result<Option<DeploymentRecord>, StateError> {
        Ok(self
            .history(app)?
            .into_iter()
            .rev()
            .find(|r| r.status == DeployStatus::Succeeded))
    }

    /// Names of every app with a history file.
    pub fn apps(&self) -> Result<Vec<String>, StateError> {
        let entries = fs::read_dir(&self.dir).map_err(|source| StateError::Read {
            path: self.dir.clone(),
            source,
        })?;
        let mut apps: Vec<String> = entries
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                let name = e.file_name().into_string().ok()?;
                name.strip_suffix(".json").map(str::to_string)
            })
            .collect();
        apps.sort();
        Ok(apps)
    }

    pub fn insert(&self, record: DeploymentRecord) -> Result<(), StateError> {
        let app = record.app.clone();
        self.modify(&app, |history| {
            history.deployments.push(record);
            let excess = history
                .deployments
                .len()
                .saturating_sub(MAX_RECORDS_PER_APP);
            history.deployments.drain(..excess);
            Ok(())
        })
    }

    /// Marks `id` finished; on success every earlier successful deploy becomes `Superseded`.
    /// `pulled` is the (normalized image name, manifest digest) the deploy ran.
    pub fn finish(
        &self,
        app: &str,
        id: &str,
        status: DeployStatus,
        pulled: Option<(String, String)>,
        message: Option<String>,
    ) -> Result<(), StateError> {
        self.modify(app, |history| {
            let index = history
                .deployments
                .iter()
                .position(|r| r.id == id)
                .ok_or_else(|| StateError::UnknownDeployment {
                    app: app.to_string(),
                    id: id.to_string(),
                })?;
            if status == DeployStatus::Succeeded {
                for earlier in history.deployments.iter_mut() {
                    if earlier.status == DeployStatus::Succeeded {
                        earlier.status = DeployStatus::Superseded;
                    }
                }
            }
            let record = &mut history.deployments[index];
            record.status = status;
            if let Some((image, digest)) = pulled {
                record.image = image;
                record.digest = Some(digest);
            }
            record.message = message;
            Ok(())
        })
    }

    pub fn is_stopped(&self, app: &str) -> Result<bool, StateError> {
        Ok(self.load(app)?.stopped)
    }

    pub fn set_stopped(&self, app: &str, stopped: bool) -> Result<(), StateError> {
        self.modify(app, |history| {
            history.stopped = stopped;
            Ok(())
        })
    }

    pub fn last_operation(&self, app: &str) -> Result<Option<OperationRecord>, StateError> {
        Ok(self.load(app)?.last_operation)
    }

    pub fn set_last_operation(&self, app: &str, op: OperationRecord) -> Result<(), StateError> {
        self.modify(app, |history| {
            history.last_operation = Some(op);
            Ok(())
        })
    }

    /// Deploys still marked in progress were cut short by a haloyd crash.
    pub fn fail_interrupted(&self) -> Result<(), StateError> {
        for app in self.apps()? {
            self.modify(&app, |history| {
                for record in history.deployments.iter_mut() {
                    if record.status == DeployStatus::InProgress {
                        record.status = DeployStatus::Failed;
                        record.message =
                            Some("interrupted: haloyd stopped during the deploy".into());
                    }
                }
                if let Some(op) = history.last_operation.as_mut() {
                    if op.state == OperationState::Running {
                        op.state = OperationState::Failed;
                        op.message = Some("interrupted: haloyd stopped during the job".into());
                    }
                }
                Ok(())
            })?;
        }
        Ok(())
    }

    fn path(&self, app: &str) -> PathBuf {
        self.dir.join(format!("{app}.json"))
    }

    fn load(&self, app: &str) -> Result<AppHistory, StateError> {
        let path = self.path(app);
        let bytes = match fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(AppHistory::default()),
            Err(source) => return Err(StateError::Read { path, source }),
        };
        // The version is read first, alone: a newer format may not parse as this one at all.
        #[derive(Deserialize)]
        struct Version {
            #[serde(default = "format_one")]
            format_version: u32,
        }
        let version: Version =
            serde_json::from_slice(&bytes).map_err(|source| StateError::Corrupt {
                path: path.clone(),
                source,
            })?;
        if version.format_version > HISTORY_FORMAT {
            return Err(StateError::TooNew {
                path,
                found: version.format_version,
                supported: HISTORY_FORMAT,
            });
        }
        let mut history: AppHistory = serde_json::from_slice(&bytes)
            .map_err(|source| StateError::Corrupt { path, source })?;
        // Format 1 → 2 only added fields with defaults; the next write stores format 2.
        history.format_version = HISTORY_FORMAT;
        Ok(history)
    }

    fn modify(
        &self,
        app: &str,
        change: impl FnOnce(&mut AppHistory) -> Result<(), StateError>,
    ) -> Result<(), StateError> {
        let _guard = self.write_lock.lock().unwrap_or_else(|p| p.into_inner());
        let mut history = self.load(app)?;
        change(&mut history)?;
        let json = serde_json::to_vec_pretty(&history).map_err(|source| StateError::Corrupt {
            path: self.path(app),
            source,
        })?;
        write_atomic(&self.path(app), &json)
    }
}

/// Replace `path` atomically (see [`crate::files::write_atomic`]). History holds resolved env
/// values and registry passwords: owner-only.
pub fn write_atomic(path: &Path, contents: &[u8]) -> Result<(), StateError> {
    crate::files::write_atomic(path, contents, 0o600).map_err(|source| StateError::Write {
        path: path.to_path_buf(),
        source,
    })
}

pub mod registries;

#[cfg(test)]
#[path = "tests/state.rs"]
mod tests;
