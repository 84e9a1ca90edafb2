//! Hand-over to a new binary (SIGUSR2 / `haloyd upgrade`), like nginx's binary upgrade. The
//! running daemon starts the binary at its own path again (re-read from disk, so an upgraded
//! file is what runs) with its listening sockets as fds 3.. in the systemd way (`LISTEN_FDS`,
//! `LISTEN_FDNAMES`; the child sets `LISTEN_PID` to itself after checking its parent), and a
//! pipe on which the child writes `READY` once it serves. A child that exits or stays silent
//! past the timeout is killed and the old daemon keeps serving.

use std::ffi::OsString;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::path::PathBuf;
use std::time::Duration;

use tokio::io::AsyncReadExt;

use super::listeners::{ListenerError, Passed};

/// Set by the old daemon: its pid. The child only trusts the fds when its parent has it.
pub const PARENT_ENV: &str = "HALOYD_HANDOVER_PARENT";
/// Set by the old daemon: the fd of the readiness pipe's write end.
pub const READY_FD_ENV: &str = "HALOYD_READY_FD";
/// Written on the readiness pipe.
const READY: &[u8] = b"READY\n";
/// Listening sockets a successor can receive (haloyd passes three).
const MAX_FDS: usize = 7;

#[derive(Debug, thiserror::Error)]
pub enum HandoverError {
    #[error("cannot find haloyd's own binary: {0}")]
    OwnPath(#[source] std::io::Error),
    #[error("cannot create the readiness pipe: {0}")]
    Pipe(#[source] nix::Error),
    #[error("cannot start the new binary {path}: {source}")]
    Spawn {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the new binary {path} exited before it was ready ({status})")]
    Exited { path: PathBuf, status: String },
    #[error("the new binary {path} was not ready within {timeout:?}; it was stopped")]
    NotReady { path: PathBuf, timeout: Duration },
    #[error("too many sockets to pass ({0})")]
    TooManyFds(usize),
    #[error("{PARENT_ENV}/{READY_FD_ENV}: {0}")]
    Environment(String),
    #[error(transparent)]
    Listeners(#[from] ListenerError),
}

/// What a daemon needs to start its successor: its binary's path and arguments, taken at
/// start (later `/proc/self/exe` names the old, possibly deleted, file).
#[derive(Debug, Clone)]
pub struct Handover {
    path: PathBuf,
    args: Vec<OsString>,
}

impl Handover {
    pub fn capture() -> Result<Handover, HandoverError> {
        let path = own_path(std::env::args_os().next().map(PathBuf::from))?;
        Ok(Handover {
            path,
            args: std::env::args_os().skip(1).collect(),
        })
    }

    /// A successor running `path` with `args` (tests point it at other programs).
    pub fn new(path: PathBuf, args: Vec<OsString>) -> Handover {
        Handover { path, args }
    }

    pub fn path(&self) -> &PathBuf {
        &self.path
    }

    /// Starts the successor with `fds` (fd, name) and waits up to `timeout` for its READY.
    /// Returns its pid. On failure the child, if still running, is killed and reaped.
    pub async fn start_successor(
        &self,
        fds: &[(RawFd, &str)],
        timeout: Duration,
    ) -> Result<u32, HandoverError> {
        if fds.len() > MAX_FDS {
            return Err(HandoverError::TooManyFds(fds.len()));
        }
        let (read_end, write_end) =
            nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(HandoverError::Pipe)?;
        let mut sources = [-1; MAX_FDS + 1];
        for (slot, (fd, _)) in sources.iter_mut().zip(fds) {
            *slot = *fd;
        }
        sources[fds.len()] = write_end.as_raw_fd();
        let count = fds.len() + 1;
        let names: Vec<&str> = fds.iter().map(|(_, n)| *n).collect();
        // The hand-over starts the new haloyd binary (see clippy.toml).
        #[allow(clippy::disallowed_methods)]
        let mut command = tokio::process::Command::new(&self.path);
        command
            .args(&self.args)
            .env("LISTEN_FDS", fds.len().to_string())
            .env("LISTEN_FDNAMES", names.join(":"))
            .env(PARENT_ENV, std::process::id().to_string())
            .env(READY_FD_ENV, (3 + fds.len()).to_string())
            .env_remove("LISTEN_PID")
            // The watchdog is the successor's from now on (systemd follows MAINPID).
            .env_remove("WATCHDOG_PID")
            .stdin(std::process::Stdio::null());
        crate::sys::pass_fds(&mut command, sources, count);
        let mut child = command.spawn().map_err(|source| HandoverError::Spawn {
            path: self.path.clone(),
            source,
        })?;
        drop(write_end);
        let pid = child.id().unwrap_or(0);
        tracing::info!(pid, path = %self.path.display(), "started the new haloyd; waiting for it to be ready");
        let outcome = tokio::time::timeout(timeout, async {
            let ready = read_ready(read_end);
            tokio::pin!(ready);
            let early = tokio::select! {
                ready = &mut ready => if ready { return Ok(()) } else { None },
                status = child.wait() => Some(status),
            };
            let status = match early {
                // A child may say READY and exit at once: what it wrote before exiting is
                // still in the pipe, so look there before calling it an early exit.
                Some(status) => {
                    if let Ok(true) = tokio::time::timeout(READY_AFTER_EXIT, &mut ready).await {
                        return Ok(());
                    }
                    status
                }
                // The pipe closed without READY: the child is exiting.
                None => child.wait().await,
            };
            Err(status
                .map(|s| s.to_string())
                .unwrap_or_else(|e| e.to_string()))
        })
        .await;
        match outcome {
            Ok(Ok(())) => Ok(pid),
            Ok(Err(status)) => Err(HandoverError::Exited {
                path: self.path.clone(),
                status,
            }),
            Err(_) => {
                let _ = child.start_kill();
                let _ = child.wait().await;
                Err(HandoverError::NotReady {
                    path: self.path.clone(),
                    timeout,
                })
            }
        }
    }
}

/// The path haloyd was started as (argv[0] when it names a file, so a symlink switched to a
/// new release is followed), else the running executable.
fn own_path(arg0: Option<PathBuf>) -> Result<PathBuf, HandoverError> {
    match arg0 {
        Some(p) if p.is_absolute() => Ok(p),
        Some(p) if p.components().count() > 1 => std::env::current_dir()
            .map(|cwd| cwd.join(p))
            .map_err(HandoverError::OwnPath),
        _ => std::env::current_exe().map_err(HandoverError::OwnPath),
    }
}

/// How long a READY already written by a child that has exited may take to be read.
const READY_AFTER_EXIT: Duration = Duration::from_millis(200);

async fn read_ready(read_end: OwnedFd) -> bool {
    let Ok(mut pipe) = tokio::net::unix::pipe::Receiver::from_owned_fd(read_end) else {
        return false;
    };
    let mut got = Vec::new();
    let mut buf = [0u8; 16];
    loop {
        match pipe.read(&mut buf).await {
            Ok(0) | Err(_) => return false,
            Ok(n) => {
                got.extend_from_slice(&buf[..n]);
                if got.starts_with(READY) {
                    return true;
                }
                if got.len() >= READY.len() {
                    return false;
                }
            }
        }
    }
}

/// What a starting daemon received: sockets (from systemd or a predecessor) and, from a
/// predecessor, the pipe to say READY on.
#[derive(Debug, Default)]
pub struct Inherited {
    pub passed: Passed,
    ready: Option<OwnedFd>,
}

impl Inherited {
    /// Reads and clears `LISTEN_*` and the hand-over variables.
    ///
    /// Changes the environment, so it is refused once a second thread exists: call it first.
    pub fn take() -> Result<Inherited, HandoverError> {
        let parent = std::env::var(PARENT_ENV).ok();
        let ready = std::env::var(READY_FD_ENV).ok();
        crate::sys::remove_env(PARENT_ENV).map_err(env_error)?;
        crate::sys::remove_env(READY_FD_ENV).map_err(env_error)?;
        let from_parent = match parent {
            Some(p) => {
                let expected: i32 = p
                    .parse()
                    .map_err(|_| HandoverError::Environment(format!("`{p}` is not a pid")))?;
                let actual = nix::unistd::getppid().as_raw();
                if actual != expected {
                    return Err(HandoverError::Environment(format!(
                        "started for a hand-over from pid {expected}, but the parent is {actual}"
                    )));
                }
                crate::sys::set_env("LISTEN_PID", std::process::id().to_string())
                    .map_err(env_error)?;
                true
            }
            None => false,
        };
        let ready = match ready.filter(|_| from_parent) {
            Some(fd) => Some(ready_fd(&fd)?),
            None => None,
        };
        let passed = Passed::take_from_env()?;
        Ok(Inherited { passed, ready })
    }

    /// True when a predecessor started this daemon and waits for its READY.
    pub fn from_predecessor(&self) -> bool {
        self.ready.is_some()
    }

    /// Tells the predecessor that this daemon serves; it then stops accepting and drains.
    pub fn signal_ready(&mut self) {
        let Some(fd) = self.ready.take() else {
            return;
        };
        let mut pipe = std::fs::File::from(fd);
        if let Err(e) = std::io::Write::write_all(&mut pipe, READY) {
            tracing::warn!(error = %e, "cannot tell the previous haloyd that this one is ready");
        }
    }
}

fn env_error(e: crate::sys::NotSingleThreaded) -> HandoverError {
    HandoverError::Environment(e.to_string())
}

fn ready_fd(text: &str) -> Result<OwnedFd, HandoverError> {
    let fd: RawFd = text
        .parse()
        .map_err(|_| HandoverError::Environment(format!("`{text}` is not an fd")))?;
    // The predecessor passed this fd to us alone.
    let owned = (fd >= 3)
        .then(|| crate::sys::take_inherited_fd(fd))
        .flatten()
        .ok_or_else(|| HandoverError::Environment(format!("fd {fd} is not open")))?;
    // Not for our own children (CNI plugins).
    let _ = nix::fcntl::fcntl(
        &owned,
        nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
    );
    Ok(owned)
}

#[cfg(test)]
#[path = "tests/handover.rs"]
mod tests;
