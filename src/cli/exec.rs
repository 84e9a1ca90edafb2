//! `haloy exec`: runs a command in a replica over an upgraded API connection (frames of
//! `api::stream`), with the local terminal in raw mode and its size followed for `-t`, stdin
//! forwarded for `-i`, and the command's exit status as this process's exit code. Also the
//! argv rewrite that lets `-t` mean "TTY" after `exec` although it means `--targets` elsewhere.

use std::ffi::OsString;
use std::io::{IsTerminal, Read, Write};
use std::process::ExitCode;
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use tokio::sync::mpsc;
use tokio_util::codec::FramedRead;

use super::remote::connect_one;
use super::{CliError, CommonArgs};
use crate::api::client::{ApiClient, ClientError};
use crate::api::stream::{
    write_frame, ExecParams, Frame, FrameCodec, EXEC_PARAMS_HEADER, EXEC_PROTOCOL,
};
use crate::api::types::{percent_encode, ReplicaState};

/// What `haloy exec` was asked to do.
#[derive(Debug, Clone, Default)]
pub struct ExecOptions {
    pub replica: Option<u32>,
    pub all_containers: bool,
    pub interactive: bool,
    pub tty: bool,
    pub timeout: Option<Duration>,
    pub command: Vec<String>,
}

/// After the `exec` subcommand and before `--`, `-t` means `--tty` and `-it`/`-ti` mean
/// `-i --tty` (as with `docker exec`); elsewhere `-t` stays `--targets`.
pub fn rewrite_tty_flag(args: impl IntoIterator<Item = OsString>) -> Vec<OsString> {
    let mut out = Vec::new();
    let mut in_exec = false;
    let mut after_value_flag = false;
    for arg in args {
        let text = arg.to_str().unwrap_or("");
        if in_exec {
            if text == "--" {
                in_exec = false;
                out.push(arg);
                continue;
            }
            if let Some(cluster) = text.strip_prefix('-') {
                let only_i_t = !cluster.is_empty() && cluster.chars().all(|c| c == 'i' || c == 't');
                if only_i_t && cluster.contains('t') {
                    if cluster.contains('i') {
                        out.push("-i".into());
                    }
                    out.push("--tty".into());
                    continue;
                }
            }
            out.push(arg);
            continue;
        }
        // The first `exec` that is a subcommand, not a flag's value (`-c exec`).
        if text == "exec" && !after_value_flag && !out.is_empty() {
            in_exec = true;
        }
        after_value_flag = matches!(text, "-c" | "--config" | "-t" | "--targets");
        out.push(arg);
    }
    out
}

fn exit_code(status: u32) -> ExitCode {
    ExitCode::from(u8::try_from(status).unwrap_or(u8::MAX))
}

pub async fn exec(common: &CommonArgs, options: ExecOptions) -> Result<ExitCode, CliError> {
    if options.command.is_empty() {
        return Err(CliError::Usage(
            "no command given: haloy exec [-i] [-t] -- CMD [ARGS...]".into(),
        ));
    }
    if options.all_containers && (options.interactive || options.tty) {
        return Err(CliError::Usage(
            "--all-containers runs the command in each replica in turn; it cannot take -i or -t"
                .into(),
        ));
    }
    let (app, client) = connect_one(common, "exec")?;
    if !options.all_containers {
        let status = run_once(&client, &app.name, &options, options.replica).await?;
        return Ok(exit_code(status));
    }
    let replicas = running_replicas(&client, &app.name).await?;
    if replicas.is_empty() {
        return Err(CliError::Usage(format!(
            "app `{}` has no running replica (see `haloy status`)",
            app.name
        )));
    }
    let mut worst = 0;
    for replica in replicas {
        eprintln!("=== replica {replica} ===");
        let status = run_once(&client, &app.name, &options, Some(replica)).await?;
        worst = worst.max(status);
    }
    Ok(exit_code(worst))
}

async fn running_replicas(client: &ApiClient, app: &str) -> Result<Vec<u32>, CliError> {
    let status = client.app(app).await?;
    let mut indices: Vec<u32> = status
        .replicas
        .iter()
        .filter(|r| {
            matches!(
                r.state,
                ReplicaState::Ready
                    | ReplicaState::Starting
                    | ReplicaState::WaitingMinReady
                    | ReplicaState::Unhealthy
            )
        })
        .map(|r| r.replica)
        .collect();
    indices.sort_unstable();
    indices.dedup();
    Ok(indices)
}

/// Puts the local terminal into raw mode until dropped, so keys reach the remote TTY as typed.
struct RawMode {
    saved: nix::sys::termios::Termios,
}

impl RawMode {
    fn enter() -> Option<RawMode> {
        use nix::sys::termios::{cfmakeraw, tcgetattr, tcsetattr, SetArg};
        let stdin = std::io::stdin();
        let saved = tcgetattr(&stdin).ok()?;
        let mut raw = saved.clone();
        cfmakeraw(&mut raw);
        tcsetattr(&stdin, SetArg::TCSANOW, &raw).ok()?;
        Some(RawMode { saved })
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        use nix::sys::termios::{tcsetattr, SetArg};
        let _ = tcsetattr(std::io::stdin(), SetArg::TCSANOW, &self.saved);
    }
}

fn local_terminal_size() -> Option<(u16, u16)> {
    use std::os::fd::AsFd;
    let stdout = std::io::stdout();
    crate::sys::terminal_size(stdout.as_fd())
        .or_else(|| crate::sys::terminal_size(std::io::stdin().as_fd()))
}

/// Reads stdin on a plain thread (a blocked read must not keep the runtime from exiting) and
/// sends it as frames; end of input becomes a stdin-eof frame.
fn spawn_stdin_reader(frames: mpsc::Sender<Frame>) {
    std::thread::spawn(move || {
        let mut stdin = std::io::stdin().lock();
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            match stdin.read(&mut buf) {
                Ok(0) | Err(_) => {
                    let _ = frames.blocking_send(Frame::StdinEof);
                    return;
                }
                Ok(n) => {
                    if frames
                        .blocking_send(Frame::Stdin(Bytes::copy_from_slice(&buf[..n])))
                        .is_err()
                    {
                        return;
                    }
                }
            }
        }
    });
}

/// Sends the terminal's new size on every SIGWINCH.
fn spawn_resize_watch(frames: mpsc::Sender<Frame>) {
    use tokio::signal::unix::{signal, SignalKind};
    let Ok(mut changes) = signal(SignalKind::window_change()) else {
        return;
    };
    tokio::spawn(async move {
        while changes.recv().await.is_some() {
            if let Some((cols, rows)) = local_terminal_size() {
                if frames.send(Frame::Resize { cols, rows }).await.is_err() {
                    return;
                }
            }
        }
    });
}

fn write_out(out: &mut impl Write, data: &[u8]) {
    // A closed stdout (`| head`) ends this process through SIGPIPE, like other tools.
    let _ = out.write_all(data);
    let _ = out.flush();
}

/// One exec in one replica; returns its exit status.
async fn run_once(
    client: &ApiClient,
    app: &str,
    options: &ExecOptions,
    replica: Option<u32>,
) -> Result<u32, CliError> {
    let size = if options.tty {
        local_terminal_size()
    } else {
        None
    };
    let params = ExecParams {
        replica,
        command: options.command.clone(),
        tty: options.tty,
        stdin: options.interactive,
        timeout_secs: options.timeout.map(|t| t.as_secs().max(1)),
        cols: size.map(|s| s.0).unwrap_or(0),
        rows: size.map(|s| s.1).unwrap_or(0),
    };
    let path = format!("/v1/apps/{}/exec", percent_encode(app));
    let stream = client
        .open_stream(
            &path,
            EXEC_PROTOCOL,
            &[(EXEC_PARAMS_HEADER, params.to_header())],
        )
        .await?;
    let (read_half, write_half) = tokio::io::split(stream);
    let mut incoming = FramedRead::new(read_half, FrameCodec);
    let (frames, mut outgoing) = mpsc::channel::<Frame>(64);
    tokio::spawn(async move {
        let mut sink = write_half;
        while let Some(frame) = outgoing.recv().await {
            if write_frame(&mut sink, frame).await.is_err() {
                return;
            }
        }
    });
    // Raw mode only when the local side is a terminal too; restored when this returns.
    let _raw = (options.tty && std::io::stdin().is_terminal())
        .then(RawMode::enter)
        .flatten();
    if options.interactive {
        spawn_stdin_reader(frames.clone());
    }
    if options.tty && size.is_some() {
        spawn_resize_watch(frames.clone());
    }
    drop(frames);
    let lost = |reason: String| {
        CliError::Client(ClientError::Protocol {
            url: client.url(),
            path: path.clone(),
            reason,
        })
    };
    loop {
        match incoming.next().await {
            Some(Ok(Frame::Stdout(data))) => write_out(&mut std::io::stdout(), &data),
            Some(Ok(Frame::Stderr(data))) => write_out(&mut std::io::stderr(), &data),
            Some(Ok(Frame::Error(message))) => {
                let line = if options.tty { "\r\n" } else { "\n" };
                write_out(
                    &mut std::io::stderr(),
                    format!("error: {message}{line}").as_bytes(),
                );
            }
            Some(Ok(Frame::Exit(status))) => return Ok(status),
            Some(Ok(_)) => {}
            Some(Err(e)) => return Err(lost(e.to_string())),
            None => {
                return Err(lost(
                    "haloyd closed the exec stream before the command finished (see haloyd's log)"
                        .into(),
                ))
            }
        }
    }
}

#[cfg(test)]
#[path = "tests/exec.rs"]
mod tests;
