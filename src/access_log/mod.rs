//! The proxy's access log: one line per request (time, app, host, method, path without query,
//! status, duration, upstream, bytes), formatted on the request's thread into a reused buffer
//! and appended to a shared batch; a background thread writes the batch every 100 ms (or once
//! it is large) to the sink — a size-rotated file or stderr (the journal under systemd) — and
//! hands it to `haloy server logs --access-logs` followers. With no sink and no follower the
//! request path pays one relaxed atomic load. Lines are `key=value` text, or one JSON object
//! each when the server config says `logs.format: json` (for log shippers).

mod sink;

use std::cell::RefCell;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_util::Stream;
use tokio::sync::broadcast;

use sink::Sink;
pub use sink::SinkError;

pub use crate::config::server::LogFormat;

/// How often pending lines are written.
const FLUSH_INTERVAL: Duration = Duration::from_millis(100);
/// A batch this large wakes the writer before the interval ends.
const FLUSH_BYTES: usize = 64 * 1024;
/// Batches a follower may fall behind before it misses some.
const FOLLOWER_BATCHES: usize = 256;

/// Where access log lines go (server config `access_log.to`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum AccessLogTarget {
    /// Not written (followers still get lines while they follow).
    #[default]
    Off,
    /// haloyd's stderr: the journal under systemd.
    Stderr,
    /// A file rotated at `max_size` into `path.1` … `path.<max_files>`.
    File {
        path: PathBuf,
        max_size: u64,
        max_files: u32,
    },
}

/// One request as the access log records it.
#[derive(Debug, Clone, Copy)]
pub struct Entry<'a> {
    pub app: Option<&'a str>,
    pub host: Option<&'a str>,
    pub method: &'a str,
    /// The request target's path; a query never reaches the log.
    pub path: &'a str,
    pub status: u16,
    /// From the request's arrival until its response ended (the body sent, or the client gone).
    pub duration: Duration,
    pub upstream: Option<SocketAddr>,
    /// Response body bytes sent to the client (`None` when unknown).
    pub bytes: Option<u64>,
}

/// The access log shared by the proxy (writers) and the API (followers).
#[derive(Debug)]
pub struct AccessLog {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    writes: bool,
    format: LogFormat,
    followers: AtomicUsize,
    pending: Mutex<Vec<u8>>,
    batches: broadcast::Sender<Arc<str>>,
    closed: AtomicBool,
    writer: OnceLock<std::thread::Thread>,
    handle: Mutex<Option<std::thread::JoinHandle<()>>>,
}

thread_local! {
    /// The line being formatted and the last second's formatted `YYYY-MM-DDTHH:MM:SS`.
    static SCRATCH: RefCell<(String, u64, String)> = RefCell::new((String::with_capacity(256), u64::MAX, String::new()));
}

impl AccessLog {
    /// Starts the writer thread for `target`, lines in `format`. A file that cannot be opened
    /// is an error here, so a wrong path fails at start-up rather than silently dropping lines.
    pub fn start(target: AccessLogTarget, format: LogFormat) -> Result<Arc<Self>, SinkError> {
        let writes = target != AccessLogTarget::Off;
        let sink = Sink::open(target)?;
        let (batches, _) = broadcast::channel(FOLLOWER_BATCHES);
        let inner = Arc::new(Inner {
            writes,
            format,
            followers: AtomicUsize::new(0),
            pending: Mutex::new(Vec::with_capacity(FLUSH_BYTES)),
            batches,
            closed: AtomicBool::new(false),
            writer: OnceLock::new(),
            handle: Mutex::new(None),
        });
        let worker = Arc::clone(&inner);
        let handle = std::thread::Builder::new()
            .name("access-log".into())
            .spawn(move || write_loop(&worker, sink))
            .map_err(SinkError::Thread)?;
        let _ = inner.writer.set(handle.thread().clone());
        *lock(&inner.handle) = Some(handle);
        Ok(Arc::new(AccessLog { inner }))
    }

    /// True when a line would go anywhere (a sink, or someone following).
    #[inline]
    pub fn enabled(&self) -> bool {
        self.inner.writes || self.inner.followers.load(Ordering::Relaxed) > 0
    }

    /// Formats `entry` and queues it for the writer.
    pub fn record(&self, entry: &Entry<'_>) {
        SCRATCH.with(|scratch| {
            let mut scratch = scratch.borrow_mut();
            let (line, second, stamp) = &mut *scratch;
            line.clear();
            format_line(
                line,
                second,
                stamp,
                SystemTime::now(),
                entry,
                self.inner.format,
            );
            let mut pending = lock(&self.inner.pending);
            pending.extend_from_slice(line.as_bytes());
            if pending.len() >= FLUSH_BYTES {
                drop(pending);
                self.wake_writer();
            }
        });
    }

    /// Lines as they are written, of one app or all, until the stream is dropped. A follower
    /// that falls far behind gets a line saying how many batches it missed.
    pub fn follow(&self, app: Option<String>) -> impl Stream<Item = String> + Send + 'static {
        let receiver = self.inner.batches.subscribe();
        let guard = Follower::new(Arc::clone(&self.inner));
        let needle = app.map(|a| app_needle(&a, self.inner.format));
        let state = (receiver, guard, needle, std::collections::VecDeque::new());
        futures_util::stream::unfold(state, |(mut rx, guard, needle, mut queue)| async move {
            loop {
                if let Some(line) = queue.pop_front() {
                    return Some((line, (rx, guard, needle, queue)));
                }
                match rx.recv().await {
                    Ok(batch) => queue.extend(
                        batch
                            .lines()
                            .filter(|l| needle.as_deref().is_none_or(|n| l.contains(n)))
                            .map(str::to_string),
                    ),
                    Err(broadcast::error::RecvError::Lagged(n)) => {
                        queue.push_back(format!(
                            "({n} batches of access log lines skipped: this follower was too slow)"
                        ));
                    }
                    Err(broadcast::error::RecvError::Closed) => return None,
                }
            }
        })
    }

    /// Writes what is pending and stops the writer (at shutdown).
    pub fn close(&self) {
        self.inner.closed.store(true, Ordering::Release);
        self.wake_writer();
        if let Some(handle) = lock(&self.inner.handle).take() {
            let _ = handle.join();
        }
    }

    fn wake_writer(&self) {
        if let Some(thread) = self.inner.writer.get() {
            thread.unpark();
        }
    }
}

/// Counts a follower while its stream lives.
#[derive(Debug)]
struct Follower(Arc<Inner>);

impl Follower {
    fn new(inner: Arc<Inner>) -> Self {
        inner.followers.fetch_add(1, Ordering::Relaxed);
        Follower(inner)
    }
}

impl Drop for Follower {
    fn drop(&mut self) {
        self.0.followers.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The writer thread: swaps the pending batch out (the two buffers are reused, no allocation
/// in steady state), writes it, and passes it to followers.
fn write_loop(inner: &Inner, mut sink: Sink) {
    let mut batch = Vec::with_capacity(FLUSH_BYTES);
    loop {
        std::thread::park_timeout(FLUSH_INTERVAL);
        let closing = inner.closed.load(Ordering::Acquire);
        std::mem::swap(&mut *lock(&inner.pending), &mut batch);
        if !batch.is_empty() {
            sink.write(&batch);
            if inner.batches.receiver_count() > 0 {
                let _ = inner
                    .batches
                    .send(Arc::from(String::from_utf8_lossy(&batch).as_ref()));
            }
            batch.clear();
        }
        if closing {
            sink.flush();
            return;
        }
    }
}

/// One line for `entry` in `format` (see [`push_text`] and [`push_json`]), newline included.
/// `cached_second`/`stamp` keep the last second's formatted date, so most lines skip it.
pub(crate) fn format_line(
    line: &mut String,
    cached_second: &mut u64,
    stamp: &mut String,
    now: SystemTime,
    entry: &Entry<'_>,
    format: LogFormat,
) {
    let since_epoch = now.duration_since(UNIX_EPOCH).unwrap_or_default();
    let second = since_epoch.as_secs();
    if second != *cached_second {
        *cached_second = second;
        stamp.clear();
        stamp.push_str(&second_stamp(second));
    }
    let millis = since_epoch.subsec_millis();
    match format {
        LogFormat::Text => push_text(line, stamp, millis, entry),
        LogFormat::Json => push_json(line, stamp, millis, entry),
    }
    line.push('\n');
}

/// `2026-01-02T03:04:05.678Z app=web host=example.com method=GET path=/ status=200
/// duration_ms=1.234 upstream=10.89.0.5:8080 bytes=512`; `-` for what is unknown.
fn push_text(line: &mut String, stamp: &str, millis: u32, entry: &Entry<'_>) {
    push_time(line, stamp, millis);
    line.push_str(" app=");
    push_value(line, entry.app);
    line.push_str(" host=");
    push_value(line, entry.host);
    line.push_str(" method=");
    push_value(line, Some(entry.method));
    line.push_str(" path=");
    push_value(line, Some(entry.path));
    line.push_str(" status=");
    line.push_str(itoa::Buffer::new().format(entry.status));
    line.push_str(" duration_ms=");
    push_duration_ms(line, entry.duration);
    line.push_str(" upstream=");
    match entry.upstream {
        Some(addr) => push_addr(line, addr),
        None => line.push('-'),
    }
    line.push_str(" bytes=");
    match entry.bytes {
        Some(n) => line.push_str(itoa::Buffer::new().format(n)),
        None => line.push('-'),
    }
}

/// The same fields as one JSON object: `{"time":"2026-01-02T03:04:05.678Z","app":"web",
/// "host":"example.com","method":"GET","path":"/","status":200,"duration_ms":1.234,
/// "upstream":"10.89.0.5:8080","bytes":512}`; `null` for what is unknown. Written by hand
/// rather than through serde so a line costs about what a text line costs.
fn push_json(line: &mut String, stamp: &str, millis: u32, entry: &Entry<'_>) {
    line.push_str("{\"time\":\"");
    push_time(line, stamp, millis);
    line.push_str("\",\"app\":");
    push_json_string_or_null(line, entry.app);
    line.push_str(",\"host\":");
    push_json_string_or_null(line, entry.host);
    line.push_str(",\"method\":");
    push_json_string(line, entry.method);
    line.push_str(",\"path\":");
    push_json_string(line, entry.path);
    line.push_str(",\"status\":");
    line.push_str(itoa::Buffer::new().format(entry.status));
    line.push_str(",\"duration_ms\":");
    push_duration_ms(line, entry.duration);
    line.push_str(",\"upstream\":");
    match entry.upstream {
        // A socket address needs no escaping.
        Some(addr) => {
            line.push('"');
            push_addr(line, addr);
            line.push('"');
        }
        None => line.push_str("null"),
    }
    line.push_str(",\"bytes\":");
    match entry.bytes {
        Some(n) => line.push_str(itoa::Buffer::new().format(n)),
        None => line.push_str("null"),
    }
    line.push('}');
}

/// `YYYY-MM-DDTHH:MM:SS.mmmZ` from the cached second and the milliseconds.
fn push_time(line: &mut String, stamp: &str, millis: u32) {
    line.push_str(stamp);
    line.push('.');
    push_three_digits(line, millis);
    line.push('Z');
}

/// Milliseconds with three decimals (microsecond precision): `1.234`.
fn push_duration_ms(line: &mut String, duration: Duration) {
    let micros = duration.as_micros();
    line.push_str(itoa::Buffer::new().format(micros / 1000));
    line.push('.');
    push_three_digits(line, (micros % 1000) as u32);
}

/// What a follower of one app looks for in a line of `format`.
fn app_needle(app: &str, format: LogFormat) -> String {
    match format {
        LogFormat::Text => format!(" app={app} "),
        LogFormat::Json => {
            let mut needle = String::from("\"app\":");
            push_json_string(&mut needle, app);
            needle.push(',');
            needle
        }
    }
}

/// Empty counts as unknown, as in the text form.
fn push_json_string_or_null(line: &mut String, value: Option<&str>) {
    match value.filter(|v| !v.is_empty()) {
        Some(v) => push_json_string(line, v),
        None => line.push_str("null"),
    }
}

/// `value` as a JSON string: quotes, backslashes and control characters escaped (RFC 8259 §7),
/// everything else copied in runs.
fn push_json_string(line: &mut String, value: &str) {
    line.push('"');
    let mut run_start = 0;
    for (i, byte) in value.bytes().enumerate() {
        let escaped = match byte {
            b'"' => "\\\"",
            b'\\' => "\\\\",
            0..=0x1f => "",
            _ => continue,
        };
        // `i` is at an ASCII byte, so both slices end on character boundaries.
        line.push_str(&value[run_start..i]);
        if escaped.is_empty() {
            let _ = write!(line, "\\u{byte:04x}");
        } else {
            line.push_str(escaped);
        }
        run_start = i + 1;
    }
    line.push_str(&value[run_start..]);
    line.push('"');
}

/// `n` (below 1000) as three digits, zero-padded. The formatter's `{:03}` costs more than
/// the rest of the line (access_log_bench).
fn push_three_digits(line: &mut String, n: u32) {
    let n = n % 1000;
    for digit in [n / 100, n / 10 % 10, n % 10] {
        line.push(char::from(b'0' + digit as u8));
    }
}

/// `ip:port` as `SocketAddr`'s Display writes it; IPv4, nearly every upstream, without the
/// formatter.
fn push_addr(line: &mut String, addr: SocketAddr) {
    match addr {
        SocketAddr::V4(v4) => {
            for (i, octet) in v4.ip().octets().into_iter().enumerate() {
                if i > 0 {
                    line.push('.');
                }
                line.push_str(itoa::Buffer::new().format(octet));
            }
            line.push(':');
            line.push_str(itoa::Buffer::new().format(v4.port()));
        }
        SocketAddr::V6(_) => {
            let _ = write!(line, "{addr}");
        }
    }
}

/// A value without spaces, quotes or control characters (each becomes `_`), or `-` if empty.
fn push_value(line: &mut String, value: Option<&str>) {
    match value.filter(|v| !v.is_empty()) {
        None => line.push('-'),
        // Nearly every value: printable ASCII without a quote, copied whole.
        Some(v) if v.bytes().all(|b| b.is_ascii_graphic() && b != b'"') => line.push_str(v),
        Some(v) => line.extend(v.chars().map(|c| {
            if c.is_control() || c.is_whitespace() || c == '"' {
                '_'
            } else {
                c
            }
        })),
    }
}

/// `YYYY-MM-DDTHH:MM:SS` (UTC) of a Unix second.
fn second_stamp(second: u64) -> String {
    let at = time::OffsetDateTime::from_unix_timestamp(i64::try_from(second).unwrap_or(0))
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}",
        at.year(),
        u8::from(at.month()),
        at.day(),
        at.hour(),
        at.minute(),
        at.second()
    )
}

/// A poisoned buffer only means a panic elsewhere mid-append; the bytes are still valid.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
#[path = "tests/access_log.rs"]
mod tests;
