//! A command run inside a replica's task (`haloy exec`): containerd's Tasks.Exec with FIFOs
//! under `<state_dir>/exec/<exec-id>/` that the shim opens for the process's stdin, stdout and
//! stderr (or one TTY), then Start, Wait, ResizePty, Kill and DeleteProcess. The process spec
//! is the container's own `process` (user, env, capabilities, AppArmor, no_new_privileges;
//! the container's seccomp filter applies to it too) with the command and terminal replaced.
//! The runtime-neutral handle ([`ExecProcess`]) is what the API streams to the client.

use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;

use async_trait::async_trait;
use containerd_client::services::v1::{
    CloseIoRequest, DeleteProcessRequest, ExecProcessRequest, GetContainerRequest, KillRequest,
    ResizePtyRequest, StartRequest, WaitRequest,
};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::unix::pipe;
use tonic::Code;

use super::{Containerd, RuntimeError};

/// containerd's type URL of an OCI runtime `Process` (what `ctr task exec` sends).
const PROCESS_TYPE_URL: &str = "types.containerd.io/opencontainers/runtime-spec/1/Process";

/// What to run in a replica.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExecSpec {
    /// The command and its arguments; the first is looked up in the container's PATH.
    pub args: Vec<String>,
    /// One pseudo-terminal for stdin and output (stderr joins stdout).
    pub tty: bool,
    /// Whether the process gets a stdin (otherwise it reads /dev/null).
    pub stdin: bool,
    /// Initial terminal size as (columns, rows), with `tty`.
    pub console_size: Option<(u16, u16)>,
}

/// Controls of a started exec process.
#[async_trait]
pub trait ExecControl: Send + Sync {
    /// Waits for the exit and returns its status (128 + signal for a signalled process).
    async fn wait(&self) -> Result<u32, RuntimeError>;
    /// New terminal size (columns, rows); ignored without a TTY.
    async fn resize(&self, cols: u16, rows: u16) -> Result<(), RuntimeError>;
    /// End of input: after the last byte was written and the writer dropped, the shim closes
    /// its own end of the stdin FIFO (it holds one, as for CloseIO), so the process reads EOF.
    async fn close_stdin(&self) -> Result<(), RuntimeError>;
    /// SIGKILL to the process.
    async fn kill(&self) -> Result<(), RuntimeError>;
    /// Forgets the process in containerd (the shim then closes its ends of the streams) and
    /// removes its FIFOs. Idempotent.
    async fn remove(&self) -> Result<(), RuntimeError>;
}

pub type ExecReader = Pin<Box<dyn AsyncRead + Send>>;
pub type ExecWriter = Pin<Box<dyn AsyncWrite + Send>>;

/// A started process inside a replica: its streams and its controls.
pub struct ExecProcess {
    pub exec_id: String,
    /// Dropping it is end of input for the process.
    pub stdin: Option<ExecWriter>,
    /// The TTY's output with `tty`.
    pub stdout: ExecReader,
    /// None with `tty`.
    pub stderr: Option<ExecReader>,
    pub control: Arc<dyn ExecControl>,
}

impl std::fmt::Debug for ExecProcess {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExecProcess")
            .field("exec_id", &self.exec_id)
            .finish_non_exhaustive()
    }
}

fn exec_error(container_id: &str, reason: impl std::fmt::Display) -> RuntimeError {
    RuntimeError::Container {
        container_id: container_id.to_string(),
        reason: format!("exec: {reason}"),
    }
}

fn io_error(path: &Path, source: std::io::Error) -> RuntimeError {
    RuntimeError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// A fresh containerd-valid exec id.
fn new_exec_id() -> String {
    format!("exec-{:016x}", rand::random::<u64>())
}

/// The container's `process` with `spec`'s command and terminal: the exec runs as the app
/// does (user, env, working dir, capabilities, rlimits, AppArmor profile).
pub fn exec_process_json(
    container_spec: &[u8],
    spec: &ExecSpec,
) -> Result<serde_json::Value, String> {
    let root: serde_json::Value = serde_json::from_slice(container_spec)
        .map_err(|e| format!("the container's OCI spec is not JSON: {e}"))?;
    let mut process = root
        .get("process")
        .cloned()
        .ok_or_else(|| "the container's OCI spec has no `process`".to_string())?;
    let object = process
        .as_object_mut()
        .ok_or_else(|| "the container's `process` is not an object".to_string())?;
    object.insert("args".into(), serde_json::json!(spec.args));
    object.insert("terminal".into(), serde_json::json!(spec.tty));
    match (spec.tty, spec.console_size) {
        (true, Some((cols, rows))) if cols > 0 && rows > 0 => {
            object.insert(
                "consoleSize".into(),
                serde_json::json!({"height": rows, "width": cols}),
            );
        }
        _ => {
            object.remove("consoleSize");
        }
    }
    Ok(process)
}

/// The FIFOs of one exec process, removed with its folder.
struct Fifos {
    dir: PathBuf,
}

impl Fifos {
    fn create(root: &Path, exec_id: &str, spec: &ExecSpec) -> Result<Fifos, RuntimeError> {
        use std::os::unix::fs::DirBuilderExt;
        let dir = root.join(exec_id);
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)
            .map_err(|e| io_error(&dir, e))?;
        let fifos = Fifos { dir };
        let mut names = vec!["stdout"];
        if spec.stdin {
            names.push("stdin");
        }
        if !spec.tty {
            names.push("stderr");
        }
        for name in names {
            let path = fifos.path(name);
            nix::unistd::mkfifo(
                &path,
                nix::sys::stat::Mode::S_IRUSR | nix::sys::stat::Mode::S_IWUSR,
            )
            .map_err(|e| io_error(&path, e.into()))?;
        }
        Ok(fifos)
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// Opened before Exec so the shim never waits for a peer. The read ends are read only
    /// after Start, when the shim holds the write ends: their EOF is the shim closing them.
    fn open_reader(&self, name: &str) -> Result<ExecReader, RuntimeError> {
        let path = self.path(name);
        let receiver = pipe::OpenOptions::new()
            .open_receiver(&path)
            .map_err(|e| io_error(&path, e))?;
        Ok(Box::pin(receiver))
    }

    /// Read-write, so the open never fails for want of a reader (Linux FIFO semantics).
    fn open_writer(&self, name: &str) -> Result<ExecWriter, RuntimeError> {
        let path = self.path(name);
        let sender = pipe::OpenOptions::new()
            .read_write(true)
            .open_sender(&path)
            .map_err(|e| io_error(&path, e))?;
        Ok(Box::pin(sender))
    }

    fn path_string(&self, name: &str, wanted: bool) -> String {
        if wanted {
            self.path(name).to_string_lossy().into_owned()
        } else {
            String::new()
        }
    }

    fn remove(dir: &Path) -> Result<(), RuntimeError> {
        match std::fs::remove_dir_all(dir) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io_error(dir, e)),
            _ => Ok(()),
        }
    }
}

/// Starts `spec` in the running task of `container_id`; FIFOs go under `fifo_root`.
pub async fn start(
    client: &Containerd,
    fifo_root: &Path,
    container_id: &str,
    spec: &ExecSpec,
) -> Result<ExecProcess, RuntimeError> {
    if spec.args.is_empty() {
        return Err(exec_error(container_id, "no command given"));
    }
    let container = client
        .containers()
        .get(client.request(GetContainerRequest {
            id: container_id.to_string(),
        }))
        .await
        .map_err(|s| match s.code() {
            Code::NotFound => RuntimeError::ContainerNotFound {
                container_id: container_id.to_string(),
            },
            _ => client.rpc_error("Containers.Get", s),
        })?
        .into_inner()
        .container
        .ok_or_else(|| RuntimeError::ContainerNotFound {
            container_id: container_id.to_string(),
        })?;
    let container_spec = container
        .spec
        .ok_or_else(|| exec_error(container_id, "the container has no OCI spec"))?;
    let process = exec_process_json(&container_spec.value, spec)
        .map_err(|reason| exec_error(container_id, reason))?;
    let exec_id = new_exec_id();
    let fifos = Fifos::create(fifo_root, &exec_id, spec)?;
    let control = Arc::new(ContainerdExec {
        client: client.clone(),
        container_id: container_id.to_string(),
        exec_id: exec_id.clone(),
        dir: fifos.dir.clone(),
    });
    match start_in(client, &fifos, &control, spec, process).await {
        Ok(process) => Ok(process),
        Err(e) => {
            if let Err(cleanup) = control.remove().await {
                tracing::warn!(task_id = container_id, exec_id = %exec_id, error = %cleanup, "cleanup after a failed exec failed");
            }
            Err(e)
        }
    }
}

async fn start_in(
    client: &Containerd,
    fifos: &Fifos,
    control: &Arc<ContainerdExec>,
    spec: &ExecSpec,
    process: serde_json::Value,
) -> Result<ExecProcess, RuntimeError> {
    let container_id = control.container_id.as_str();
    let stdin = if spec.stdin {
        Some(fifos.open_writer("stdin")?)
    } else {
        None
    };
    let stdout = fifos.open_reader("stdout")?;
    let stderr = if spec.tty {
        None
    } else {
        Some(fifos.open_reader("stderr")?)
    };
    let value = serde_json::to_vec(&process).map_err(|e| exec_error(container_id, e))?;
    let request = ExecProcessRequest {
        container_id: container_id.to_string(),
        stdin: fifos.path_string("stdin", spec.stdin),
        stdout: fifos.path_string("stdout", true),
        stderr: fifos.path_string("stderr", !spec.tty),
        terminal: spec.tty,
        spec: Some(prost_types::Any {
            type_url: PROCESS_TYPE_URL.to_string(),
            value,
        }),
        exec_id: control.exec_id.clone(),
    };
    client
        .tasks()
        .exec(client.request(request))
        .await
        .map_err(|s| match s.code() {
            Code::NotFound | Code::FailedPrecondition => exec_error(
                container_id,
                format!("the replica's task is not running ({})", s.message()),
            ),
            _ => client.rpc_error("Tasks.Exec", s),
        })?;
    let start = StartRequest {
        container_id: container_id.to_string(),
        exec_id: control.exec_id.clone(),
    };
    client
        .tasks()
        .start(client.request(start))
        .await
        .map_err(|s| match s.code() {
            // runc's message names the missing executable.
            Code::Unknown | Code::NotFound | Code::FailedPrecondition => {
                exec_error(container_id, s.message())
            }
            _ => client.rpc_error("Tasks.Start", s),
        })?;
    Ok(ExecProcess {
        exec_id: control.exec_id.clone(),
        stdin,
        stdout,
        stderr,
        control: control.clone(),
    })
}

/// An exec process known to containerd.
struct ContainerdExec {
    client: Containerd,
    container_id: String,
    exec_id: String,
    dir: PathBuf,
}

#[async_trait]
impl ExecControl for ContainerdExec {
    async fn wait(&self) -> Result<u32, RuntimeError> {
        let request = WaitRequest {
            container_id: self.container_id.clone(),
            exec_id: self.exec_id.clone(),
        };
        let response = self
            .client
            .tasks()
            .wait(self.client.request(request))
            .await
            .map_err(|s| self.client.rpc_error("Tasks.Wait", s))?;
        Ok(response.into_inner().exit_status)
    }

    async fn resize(&self, cols: u16, rows: u16) -> Result<(), RuntimeError> {
        let request = ResizePtyRequest {
            container_id: self.container_id.clone(),
            exec_id: self.exec_id.clone(),
            width: u32::from(cols),
            height: u32::from(rows),
        };
        match self
            .client
            .tasks()
            .resize_pty(self.client.request(request))
            .await
        {
            Ok(_) => Ok(()),
            // The process may have exited between the client's resize and ours.
            Err(s) if matches!(s.code(), Code::NotFound | Code::FailedPrecondition) => Ok(()),
            Err(s) => Err(self.client.rpc_error("Tasks.ResizePty", s)),
        }
    }

    async fn close_stdin(&self) -> Result<(), RuntimeError> {
        let request = CloseIoRequest {
            container_id: self.container_id.clone(),
            exec_id: self.exec_id.clone(),
            stdin: true,
        };
        match self
            .client
            .tasks()
            .close_io(self.client.request(request))
            .await
        {
            Ok(_) => Ok(()),
            Err(s) if matches!(s.code(), Code::NotFound | Code::FailedPrecondition) => Ok(()),
            Err(s) => Err(self.client.rpc_error("Tasks.CloseIO", s)),
        }
    }

    async fn kill(&self) -> Result<(), RuntimeError> {
        let request = KillRequest {
            container_id: self.container_id.clone(),
            exec_id: self.exec_id.clone(),
            signal: libc::SIGKILL as u32,
            all: false,
        };
        match self.client.tasks().kill(self.client.request(request)).await {
            Ok(_) => Ok(()),
            Err(s) if matches!(s.code(), Code::NotFound | Code::FailedPrecondition) => Ok(()),
            Err(s) => Err(self.client.rpc_error("Tasks.Kill", s)),
        }
    }

    async fn remove(&self) -> Result<(), RuntimeError> {
        let request = DeleteProcessRequest {
            container_id: self.container_id.clone(),
            exec_id: self.exec_id.clone(),
        };
        let deleted = self
            .client
            .tasks()
            .delete_process(self.client.request(request))
            .await;
        let removed = Fifos::remove(&self.dir);
        match deleted {
            Ok(_) => {}
            Err(s) if matches!(s.code(), Code::NotFound) => {}
            Err(s) => return Err(self.client.rpc_error("Tasks.DeleteProcess", s)),
        }
        removed
    }
}

#[cfg(test)]
#[path = "tests/exec.rs"]
mod tests;
