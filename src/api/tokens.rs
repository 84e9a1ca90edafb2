//! The API token and its rotation without downtime. `haloyd generate-token` writes a new token
//! to `api.token_file` and the old one, with a deadline, to `<token_file>.previous`; the
//! running haloyd notices the new file on the next API call (by its modification time) and
//! accepts both until the new token is first used or the deadline passes, so clients can be
//! switched over one by one without a refused call.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use subtle::ConstantTimeEq;

/// Why a token file cannot be read or written; each names the file.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("cannot {action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0} is empty; run `haloyd init --new-token`")]
    Empty(PathBuf),
}

/// The tokens haloyd accepts right now.
#[derive(Debug)]
pub struct Tokens {
    /// `None` when the token came from HALOY_API_TOKEN: nothing to reload or rotate.
    file: Option<PathBuf>,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    current: String,
    previous: Option<Previous>,
    loaded_at: Option<SystemTime>,
}

#[derive(Debug, Clone)]
struct Previous {
    token: String,
    until: SystemTime,
}

/// Where the token replaced by a rotation waits for its deadline.
pub fn previous_path(token_file: &Path) -> PathBuf {
    let mut name = token_file.as_os_str().to_owned();
    name.push(".previous");
    PathBuf::from(name)
}

impl Tokens {
    /// A fixed token (from the environment): never reloaded.
    pub fn fixed(token: String) -> Tokens {
        Tokens {
            file: None,
            state: Mutex::new(State {
                current: token,
                ..State::default()
            }),
        }
    }

    /// The token in `file` (and a rotated-out one beside it, while its deadline lasts).
    pub fn from_file(file: &Path) -> Result<Tokens, TokenError> {
        let tokens = Tokens {
            file: Some(file.to_path_buf()),
            state: Mutex::new(State::default()),
        };
        {
            let mut state = tokens.lock();
            *state = load(file)?;
        }
        Ok(tokens)
    }

    /// Whether `presented` is an accepted token (constant-time comparisons). Using the new
    /// token ends the old one's grace.
    pub fn check(&self, presented: &str) -> bool {
        self.reload_if_changed();
        let mut state = self.lock();
        if matches(&state.current, presented) {
            if state.previous.take().is_some() {
                self.forget_previous();
            }
            return true;
        }
        let Some(previous) = state.previous.clone() else {
            return false;
        };
        if SystemTime::now() >= previous.until {
            state.previous = None;
            self.forget_previous();
            return false;
        }
        matches(&previous.token, presented)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A rotation replaced the file: read both again. A file that cannot be read keeps the
    /// tokens already loaded (and is logged), so a half-written edit locks nobody out.
    fn reload_if_changed(&self) {
        let Some(file) = &self.file else { return };
        let modified = std::fs::metadata(file).and_then(|m| m.modified()).ok();
        if modified.is_none() || modified == self.lock().loaded_at {
            return;
        }
        match load(file) {
            Ok(fresh) => {
                tracing::info!(file = %file.display(), "API token file changed; reloaded");
                *self.lock() = fresh;
            }
            Err(e) => tracing::warn!(error = %e, "keeping the API tokens already loaded"),
        }
    }

    fn forget_previous(&self) {
        if let Some(file) = &self.file {
            let _ = std::fs::remove_file(previous_path(file));
        }
    }
}

fn matches(token: &str, presented: &str) -> bool {
    !token.is_empty() && bool::from(presented.as_bytes().ct_eq(token.as_bytes()))
}

fn read(path: &Path) -> Result<String, TokenError> {
    std::fs::read_to_string(path).map_err(|source| TokenError::Io {
        action: "read",
        path: path.to_path_buf(),
        source,
    })
}

fn load(file: &Path) -> Result<State, TokenError> {
    let loaded_at = std::fs::metadata(file).and_then(|m| m.modified()).ok();
    let current = read(file)?.trim().to_string();
    if current.is_empty() {
        return Err(TokenError::Empty(file.to_path_buf()));
    }
    let previous = read(&previous_path(file))
        .ok()
        .and_then(|text| parse_previous(&text));
    Ok(State {
        current,
        previous,
        loaded_at,
    })
}

/// `TOKEN\nUNTIL_UNIX_SECONDS\n`.
fn parse_previous(text: &str) -> Option<Previous> {
    let mut lines = text.lines();
    let token = lines.next()?.trim().to_string();
    let secs: u64 = lines.next()?.trim().parse().ok()?;
    (!token.is_empty()).then(|| Previous {
        token,
        until: UNIX_EPOCH + Duration::from_secs(secs),
    })
}

/// Replaces the token in `file` with `new`, keeping the old one valid for `grace` (or until
/// `new` is first used). Both files are written atomically with mode 0600.
pub fn rotate(file: &Path, new: &str, grace: Duration) -> Result<(), TokenError> {
    let old = read(file)?.trim().to_string();
    let write = |path: &Path, text: String| {
        crate::files::write_atomic(path, text.as_bytes(), 0o600).map_err(|source| TokenError::Io {
            action: "write",
            path: path.to_path_buf(),
            source,
        })
    };
    if !old.is_empty() && !grace.is_zero() {
        let until = SystemTime::now() + grace;
        let secs = until.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        write(&previous_path(file), format!("{old}\n{secs}\n"))?;
    }
    write(file, format!("{new}\n"))
}

#[cfg(test)]
#[path = "tests/tokens.rs"]
mod tests;
