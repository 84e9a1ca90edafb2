//! The task log driver: the small `haloy-logd` binary (or, where it is not installed beside
//! haloyd, haloyd itself) started by the containerd shim through a
//! `binary://` log URI (containerd runtime/v2/logging protocol, as nerdctl does). It reads the
//! task's stdout (fd 3) and stderr (fd 4), closes the ready pipe (fd 5) once its log file is
//! open, and appends one JSON object per line `{time, stream, line}` to `<dir>/<id>.log` with
//! size-based rotation. It is a process of its own, so logs keep flowing while haloyd is down.
//! What an app logs may be secret: log files are 0600 in a 0700 directory (`LOG_FILE_MODE`,
//! `LOG_DIR_MODE`), and files left with wider modes by older versions are tightened.
//!
//! The shim turns the URI's query into arguments (`?k=v` → `k v`, in map order), so the whole
//! configuration travels in a single query value: `?_HALOY_LOG_DRIVER=<percent-encoded JSON>`.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd, RawFd};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use serde::{Deserialize, Serialize};

/// First argument haloyd gets when the shim starts it as log driver.
pub const DRIVER_ARG: &str = "_HALOY_LOG_DRIVER";
/// The dedicated driver binary haloyd looks for in its own directory. One driver runs per
/// replica: haloyd re-executed costs ~5 MiB PSS each (relocated data, allocator segments),
/// this one well under 1 MiB (`integration-tests/bench/footprint.sh`).
pub const DRIVER_BINARY: &str = "haloy-logd";
/// Longer lines are split, like Docker does at 16 KiB.
pub const MAX_LINE_BYTES: usize = 16 * 1024;
const STDOUT_FD: RawFd = 3;
const STDERR_FD: RawFd = 4;
const READY_FD: RawFd = 5;
/// Only root (haloyd and the shim's log driver) reads task logs.
pub const LOG_FILE_MODE: u32 = 0o600;
pub const LOG_DIR_MODE: u32 = 0o700;
/// After SIGTERM the shim has closed our pipes; give the readers this long to drain them.
const TERM_GRACE: Duration = Duration::from_secs(2);

/// Where and how much to keep; sent to the driver inside the log URI.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogDriverConfig {
    pub dir: PathBuf,
    /// Rotate when the current file would grow beyond this many bytes.
    pub max_size: u64,
    /// Files kept per task including the current one (`<id>.log`, `.1`, ... `.{max_files-1}`).
    pub max_files: u32,
}

/// One line as stored on disk.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogRecord {
    /// RFC 3339 with nanoseconds, UTC.
    pub time: String,
    /// `stdout` or `stderr`.
    pub stream: String,
    pub line: String,
}

#[derive(Debug, thiserror::Error)]
pub enum LogDriverError {
    #[error("log driver arguments: expected `{DRIVER_ARG} <config JSON>`: {reason}")]
    Arguments { reason: String },
    #[error("CONTAINER_ID {id:?} is missing or not a safe file name")]
    ContainerId { id: String },
    #[error("file descriptor {fd} ({name}) was not passed by the shim")]
    MissingFd { fd: RawFd, name: &'static str },
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
}

/// The current log file of a container.
pub fn log_path(dir: &Path, container_id: &str) -> PathBuf {
    dir.join(format!("{container_id}.log"))
}

/// Rotated file number `n` (1 = newest rotated).
pub fn rotated_path(dir: &Path, container_id: &str, n: u32) -> PathBuf {
    dir.join(format!("{container_id}.log.{n}"))
}

fn percent_encode(input: &str) -> String {
    input
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Path part of the URI: keep '/', encode the rest that is not unreserved.
fn percent_encode_path(path: &Path) -> String {
    path.to_string_lossy()
        .split('/')
        .map(percent_encode)
        .collect::<Vec<_>>()
        .join("/")
}

/// `binary:///path/to/haloyd?_HALOY_LOG_DRIVER=...` for Tasks.Create stdout and stderr.
pub fn log_uri(binary: &Path, config: &LogDriverConfig) -> Result<String, serde_json::Error> {
    let json = serde_json::to_string(config)?;
    Ok(format!(
        "binary://{}?{DRIVER_ARG}={}",
        percent_encode_path(binary),
        percent_encode(&json)
    ))
}

/// The driver for tasks of the haloyd at `haloyd`: `haloy-logd` beside it when installed, else
/// haloyd itself (its hidden driver mode), so an install without the new binary keeps logging.
pub fn driver_binary_beside(haloyd: &Path) -> PathBuf {
    haloyd
        .parent()
        .map(|dir| dir.join(DRIVER_BINARY))
        .filter(|candidate| candidate.is_file())
        .unwrap_or_else(|| haloyd.to_path_buf())
}

/// True when haloyd was started by the shim as log driver.
pub fn is_invocation(args: &[String]) -> bool {
    args.get(1).map(String::as_str) == Some(DRIVER_ARG)
}

fn parse_args(args: &[String]) -> Result<LogDriverConfig, LogDriverError> {
    let json = args.get(2).ok_or_else(|| LogDriverError::Arguments {
        reason: "the config argument is missing".into(),
    })?;
    serde_json::from_str(json).map_err(|e| LogDriverError::Arguments {
        reason: e.to_string(),
    })
}

fn safe_file_name(id: &str) -> bool {
    !id.is_empty()
        && !id.starts_with('.')
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// Takes ownership of an inherited descriptor after checking that it is open.
fn inherited_fd(fd: RawFd, name: &'static str) -> Result<OwnedFd, LogDriverError> {
    // The shim passed this descriptor to us and nothing else in this process owns it.
    crate::sys::take_inherited_fd(fd).ok_or(LogDriverError::MissingFd { fd, name })
}

/// Appends records to `<id>.log`, rotating by size.
pub struct RotatingWriter {
    dir: PathBuf,
    container_id: String,
    max_size: u64,
    max_files: u32,
    file: File,
    size: u64,
}

impl RotatingWriter {
    pub fn open(config: &LogDriverConfig, container_id: &str) -> Result<Self, LogDriverError> {
        let io_err = |path: &Path| {
            let path = path.to_path_buf();
            move |source| LogDriverError::Io { path, source }
        };
        secure_dir(&config.dir).map_err(io_err(&config.dir))?;
        let path = log_path(&config.dir, container_id);
        let file = open_append(&path).map_err(io_err(&path))?;
        for n in 1..config.max_files.max(1) {
            let rotated = rotated_path(&config.dir, container_id, n);
            restrict_file(&rotated).map_err(io_err(&rotated))?;
        }
        let size = file.metadata().map(|m| m.len()).unwrap_or(0);
        Ok(RotatingWriter {
            dir: config.dir.clone(),
            container_id: container_id.to_string(),
            max_size: config.max_size.max(1),
            max_files: config.max_files.max(1),
            file,
            size,
        })
    }

    pub fn write(&mut self, record: &LogRecord) -> io::Result<()> {
        let mut bytes = serde_json::to_vec(record)?;
        bytes.push(b'\n');
        if self.size > 0 && self.size + bytes.len() as u64 > self.max_size {
            self.rotate()?;
        }
        self.file.write_all(&bytes)?;
        self.size += bytes.len() as u64;
        Ok(())
    }

    fn rotate(&mut self) -> io::Result<()> {
        let current = log_path(&self.dir, &self.container_id);
        if self.max_files > 1 {
            let oldest = rotated_path(&self.dir, &self.container_id, self.max_files - 1);
            remove_if_exists(&oldest)?;
            for n in (1..self.max_files - 1).rev() {
                let from = rotated_path(&self.dir, &self.container_id, n);
                if from.exists() {
                    fs::rename(&from, rotated_path(&self.dir, &self.container_id, n + 1))?;
                }
            }
            fs::rename(&current, rotated_path(&self.dir, &self.container_id, 1))?;
        } else {
            remove_if_exists(&current)?;
        }
        self.file = open_append(&current)?;
        self.size = 0;
        Ok(())
    }
}

/// Creates `dir` if needed and makes it 0700.
fn secure_dir(dir: &Path) -> io::Result<()> {
    fs::create_dir_all(dir)?;
    fs::set_permissions(dir, fs::Permissions::from_mode(LOG_DIR_MODE))
}

/// Makes an existing file 0600; a missing one is fine.
fn restrict_file(path: &Path) -> io::Result<()> {
    match fs::set_permissions(path, fs::Permissions::from_mode(LOG_FILE_MODE)) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

/// Tightens a log directory and every file in it (for logs written before modes were
/// restricted); haloyd runs it at start-up.
pub fn restrict_log_dir(dir: &Path) -> io::Result<()> {
    secure_dir(dir)?;
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        if entry.file_type()?.is_file() {
            restrict_file(&entry.path())?;
        }
    }
    Ok(())
}

/// Opens for appending, created 0600; an existing file is made 0600 too.
fn open_append(path: &Path) -> io::Result<File> {
    let file = OpenOptions::new()
        .create(true)
        .append(true)
        .mode(LOG_FILE_MODE)
        .open(path)?;
    file.set_permissions(fs::Permissions::from_mode(LOG_FILE_MODE))?;
    Ok(file)
}

fn remove_if_exists(path: &Path) -> io::Result<()> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

use crate::timefmt::now_rfc3339;

/// Cuts a byte stream into lines (without the newline), splitting lines at `MAX_LINE_BYTES`.
#[derive(Debug, Default)]
pub struct LineSplitter {
    pending: Vec<u8>,
}

impl LineSplitter {
    pub fn push(&mut self, data: &[u8], emit: &mut impl FnMut(String)) {
        self.pending.extend_from_slice(data);
        while let Some(pos) = self.pending.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = self.pending.drain(..=pos).collect();
            emit_split(&line[..line.len() - 1], emit);
        }
        while self.pending.len() >= MAX_LINE_BYTES {
            let line: Vec<u8> = self.pending.drain(..MAX_LINE_BYTES).collect();
            emit(String::from_utf8_lossy(&line).into_owned());
        }
    }

    /// At EOF: a last line without newline still counts.
    pub fn finish(&mut self, emit: &mut impl FnMut(String)) {
        if !self.pending.is_empty() {
            let rest = std::mem::take(&mut self.pending);
            emit_split(&rest, emit);
        }
    }
}

/// Splits a whole byte stream into lines (see `LineSplitter`).
pub fn read_lines(mut input: impl Read, mut emit: impl FnMut(String)) -> io::Result<()> {
    let mut splitter = LineSplitter::default();
    let mut chunk = [0u8; 8192];
    loop {
        match input.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => splitter.push(&chunk[..n], &mut emit),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
    splitter.finish(&mut emit);
    Ok(())
}

fn emit_split(line: &[u8], emit: &mut impl FnMut(String)) {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    if line.is_empty() {
        emit(String::new());
        return;
    }
    for part in line.chunks(MAX_LINE_BYTES) {
        emit(String::from_utf8_lossy(part).into_owned());
    }
}

/// One task output pipe being read.
struct Source {
    file: File,
    stream: &'static str,
    splitter: LineSplitter,
    open: bool,
}

impl Source {
    /// Writes out what is left of a partial line and stops reading this pipe.
    fn close(&mut self, write: &mut impl FnMut(LogRecord)) {
        let stream = self.stream;
        self.splitter
            .finish(&mut |line| write(record(stream, line)));
        self.open = false;
    }
}

/// `line` of `stream`, stamped now.
fn record(stream: &'static str, line: String) -> LogRecord {
    LogRecord {
        time: now_rfc3339(),
        stream: stream.to_string(),
        line,
    }
}

/// Waits until at least one open source or `stop` is readable (or hung up), or `timeout`
/// runs out; returns which sources are ready and whether `stop` is.
fn poll_readable(
    sources: &[Source; 2],
    stop: Option<BorrowedFd<'_>>,
    timeout: Option<Duration>,
) -> io::Result<([bool; 2], bool)> {
    use std::os::fd::AsRawFd;
    let entry = |fd: RawFd| libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    let fd_of = |s: &Source| if s.open { s.file.as_raw_fd() } else { -1 };
    let mut fds = [
        entry(fd_of(&sources[0])),
        entry(fd_of(&sources[1])),
        entry(stop.map_or(-1, |fd| fd.as_raw_fd())),
    ];
    crate::sys::poll(&mut fds, timeout)?;
    Ok((
        [fds[0].revents != 0, fds[1].revents != 0],
        fds[2].revents != 0,
    ))
}

/// Reads stdout and stderr in one thread: when both are readable stdout goes first, so lines
/// a task writes to stdout and then stderr keep that order (two reader threads would race).
/// Ends when both pipes are closed, or `grace` after `stop` (the SIGTERM signalfd) becomes
/// readable: the shim has closed its ends by then, so the rest is only what is still buffered.
fn pump(
    stdout: OwnedFd,
    stderr: OwnedFd,
    stop: Option<BorrowedFd<'_>>,
    grace: Duration,
    mut write: impl FnMut(LogRecord),
) -> io::Result<()> {
    let mut sources = [
        Source {
            file: File::from(stdout),
            stream: "stdout",
            splitter: LineSplitter::default(),
            open: true,
        },
        Source {
            file: File::from(stderr),
            stream: "stderr",
            splitter: LineSplitter::default(),
            open: true,
        },
    ];
    // One line's worth: glibc's calloc clears (and so makes resident) all of a buffer carved
    // from its heap, and this one is in every replica's driver for the replica's lifetime; a
    // full 64 KiB pipe takes four reads instead of one.
    let mut chunk = vec![0u8; MAX_LINE_BYTES];
    let mut deadline: Option<Instant> = None;
    while sources.iter().any(|s| s.open) {
        let remaining = deadline.map(|d| d.saturating_duration_since(Instant::now()));
        if remaining.is_some_and(|r| r.is_zero()) {
            break;
        }
        let watched = if deadline.is_none() { stop } else { None };
        let (ready, stopping) = poll_readable(&sources, watched, remaining)?;
        if stopping {
            deadline = Some(Instant::now() + grace);
        }
        for (source, ready) in sources.iter_mut().zip(ready) {
            if !ready || !source.open {
                continue;
            }
            match source.file.read(&mut chunk) {
                Ok(0) => source.close(&mut write),
                Ok(n) => {
                    let stream = source.stream;
                    let mut emit = |line| write(record(stream, line));
                    source.splitter.push(&chunk[..n], &mut emit);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => source.close(&mut write),
            }
        }
    }
    // Out of time with a pipe still open: keep the partial lines read so far.
    for source in sources.iter_mut().filter(|s| s.open) {
        source.close(&mut write);
    }
    Ok(())
}

/// Entry point for `haloy-logd|haloyd _HALOY_LOG_DRIVER <config>`; returns the exit code.
pub fn run(args: &[String]) -> i32 {
    match drive(args) {
        Ok(()) => 0,
        Err(err) => {
            // The shim discards our stderr; this is for a human running it by hand.
            eprintln!("haloyd log driver: {err}");
            1
        }
    }
}

fn drive(args: &[String]) -> Result<(), LogDriverError> {
    let config = parse_args(args)?;
    let container_id = std::env::var("CONTAINER_ID").unwrap_or_default();
    if !safe_file_name(&container_id) {
        return Err(LogDriverError::ContainerId { id: container_id });
    }
    // SIGTERM (the shim stopping the task) arrives through a signalfd in the pump's poll, not
    // as a handler or a watcher thread: a second thread would cost every replica's driver a
    // stack and an allocator arena. Blocked first, so it is queued for the signalfd instead
    // of killing the process.
    let mut mask = SigSet::empty();
    mask.add(Signal::SIGTERM);
    let flags = SfdFlags::SFD_CLOEXEC | SfdFlags::SFD_NONBLOCK;
    let term = match mask
        .thread_block()
        .and_then(|()| SignalFd::with_flags(&mask, flags))
    {
        Ok(term) => Some(term),
        Err(err) => {
            // SIGTERM's default action then ends the driver.
            let _ = mask.thread_unblock();
            eprintln!("haloyd log driver: no SIGTERM signalfd: {err}");
            None
        }
    };

    let stdout = inherited_fd(STDOUT_FD, "CONTAINER_STDOUT")?;
    let stderr = inherited_fd(STDERR_FD, "CONTAINER_STDERR")?;
    let ready = inherited_fd(READY_FD, "CONTAINER_WAIT")?;
    // Without a log file the pipes are still drained: a task must never block on (or die
    // from) output nobody reads.
    let mut writer = RotatingWriter::open(&config, &container_id)
        .inspect_err(|err| eprintln!("haloyd log driver: {err}; discarding output"))
        .ok();
    // Closing the wait pipe tells the shim we are ready; it blocks Tasks.Create until then.
    drop(ready);

    let written = pump(
        stdout,
        stderr,
        term.as_ref().map(|t| t.as_fd()),
        TERM_GRACE,
        |record| {
            if let Some(Err(err)) = writer.as_mut().map(|w| w.write(&record)) {
                eprintln!("haloyd log driver: writing {container_id}: {err}");
            }
        },
    );
    written.map_err(|source| LogDriverError::Io {
        path: PathBuf::from("/proc/self/fd"),
        source,
    })?;
    Ok(())
}

#[cfg(test)]
#[path = "tests/log_driver.rs"]
mod tests;
