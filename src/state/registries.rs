//! Registry logins kept by haloyd (`haloy server registry login/logout/list`, after Haloy's
//! internal/haloy/server_registry.go): `<state_dir>/registries.json`, 0600, written
//! atomically. A pull whose app gives no `image.registry` credentials uses the login stored
//! for the image's registry. Passwords never leave this file through the API.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

#[derive(Debug, thiserror::Error)]
pub enum RegistryLoginError {
    #[error("cannot read registry logins {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("registry logins {path} are corrupt ({source}); move the file away and log in again")]
    Corrupt {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("cannot write registry logins {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// One stored login.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegistryLogin {
    pub username: String,
    pub password: String,
}

/// Never prints the password (a `{:?}` in a log line must not leak it).
impl std::fmt::Debug for RegistryLogin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistryLogin")
            .field("username", &self.username)
            .field("password", &"<hidden>")
            .finish()
    }
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct LoginsFile {
    #[serde(default = "format_one")]
    format_version: u32,
    #[serde(default)]
    registries: BTreeMap<String, RegistryLogin>,
}

fn format_one() -> u32 {
    1
}

/// The registry logins file; every change is a read-modify-write under one lock.
#[derive(Debug)]
pub struct RegistryLogins {
    path: PathBuf,
    lock: Mutex<()>,
}

/// Haloy's `config.NormalizeRegistryServer` (internal/config/registries.go): lower case, no
/// scheme, no trailing `/` or `/v1`, Docker Hub's aliases as `docker.io`; so a login given as
/// `https://GHCR.io/` matches images from `ghcr.io/...`.
pub fn normalize_registry(server: &str) -> String {
    let lower = server.trim().to_ascii_lowercase();
    let no_scheme = lower
        .strip_prefix("https://")
        .or_else(|| lower.strip_prefix("http://"))
        .unwrap_or(&lower);
    let trimmed = no_scheme.trim_end_matches('/');
    let trimmed = trimmed.strip_suffix("/v1").unwrap_or(trimmed);
    match trimmed {
        "index.docker.io" | "registry-1.docker.io" => "docker.io".to_string(),
        other => other.to_string(),
    }
}

impl RegistryLogins {
    pub fn new(state_dir: &Path) -> RegistryLogins {
        RegistryLogins {
            path: state_dir.join("registries.json"),
            lock: Mutex::new(()),
        }
    }

    /// Registry host → login.
    pub fn all(&self) -> Result<BTreeMap<String, RegistryLogin>, RegistryLoginError> {
        let _guard = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        Ok(self.load()?.registries)
    }

    /// The login for `registry` (`ghcr.io`, `127.0.0.1:5000`, `docker.io`), in any spelling
    /// [`normalize_registry`] accepts.
    pub fn get(&self, registry: &str) -> Result<Option<RegistryLogin>, RegistryLoginError> {
        Ok(self.all()?.remove(&normalize_registry(registry)))
    }

    pub fn login(&self, registry: &str, login: RegistryLogin) -> Result<(), RegistryLoginError> {
        self.modify(|file| {
            file.registries.insert(normalize_registry(registry), login);
            true
        })
        .map(|_| ())
    }

    /// False when there was no login for `registry`.
    pub fn logout(&self, registry: &str) -> Result<bool, RegistryLoginError> {
        self.modify(|file| {
            file.registries
                .remove(&normalize_registry(registry))
                .is_some()
        })
    }

    fn modify(
        &self,
        change: impl FnOnce(&mut LoginsFile) -> bool,
    ) -> Result<bool, RegistryLoginError> {
        let _guard = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        let mut file = self.load()?;
        if !change(&mut file) {
            return Ok(false);
        }
        file.format_version = 1;
        let json =
            serde_json::to_vec_pretty(&file).map_err(|source| RegistryLoginError::Corrupt {
                path: self.path.clone(),
                source,
            })?;
        crate::files::write_atomic(&self.path, &json, 0o600).map_err(|source| {
            RegistryLoginError::Write {
                path: self.path.clone(),
                source,
            }
        })?;
        Ok(true)
    }

    fn load(&self) -> Result<LoginsFile, RegistryLoginError> {
        match std::fs::read(&self.path) {
            Ok(bytes) => {
                serde_json::from_slice(&bytes).map_err(|source| RegistryLoginError::Corrupt {
                    path: self.path.clone(),
                    source,
                })
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(LoginsFile::default()),
            Err(source) => Err(RegistryLoginError::Read {
                path: self.path.clone(),
                source,
            }),
        }
    }
}

#[cfg(test)]
#[path = "tests/registries.rs"]
mod tests;
