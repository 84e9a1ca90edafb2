//! haloyd's own log lines for `haloy server logs`: a `tracing-subscriber` writer that writes
//! each formatted event to stderr (the journal under systemd) and, only while someone follows,
//! also hands it to the followers.

use std::io::Write;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use futures_util::Stream;
use tokio::sync::broadcast;
use tracing_subscriber::fmt::MakeWriter;

/// Events a follower may fall behind before it misses some.
const FOLLOWER_LINES: usize = 1024;

/// The tee behind haloyd's log. Cheap to clone.
#[derive(Debug, Clone)]
pub struct DaemonLog {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    followers: AtomicUsize,
    lines: broadcast::Sender<Arc<str>>,
}

impl Default for DaemonLog {
    fn default() -> Self {
        let (lines, _) = broadcast::channel(FOLLOWER_LINES);
        DaemonLog {
            inner: Arc::new(Inner {
                followers: AtomicUsize::new(0),
                lines,
            }),
        }
    }
}

impl DaemonLog {
    /// Log lines from now on until the stream is dropped.
    pub fn follow(&self) -> impl Stream<Item = String> + Send + 'static {
        self.inner.followers.fetch_add(1, Ordering::Relaxed);
        let state = (
            self.inner.lines.subscribe(),
            Follower(Arc::clone(&self.inner)),
        );
        futures_util::stream::unfold(state, |(mut rx, guard)| async move {
            let line = match rx.recv().await {
                Ok(line) => line.trim_end().to_string(),
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    format!("({n} log lines skipped: this follower was too slow)")
                }
                Err(broadcast::error::RecvError::Closed) => return None,
            };
            Some((line, (rx, guard)))
        })
    }
}

/// Counts a follower while its stream lives.
#[derive(Debug)]
struct Follower(Arc<Inner>);

impl Drop for Follower {
    fn drop(&mut self) {
        self.0.followers.fetch_sub(1, Ordering::Relaxed);
    }
}

/// One event's writer: the fmt layer writes a whole formatted event in one `write`.
pub struct TeeWriter<'a> {
    inner: &'a Inner,
}

impl Write for TeeWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        std::io::stderr().lock().write_all(buf)?;
        if self.inner.followers.load(Ordering::Relaxed) > 0 {
            let _ = self
                .inner
                .lines
                .send(Arc::from(String::from_utf8_lossy(buf).as_ref()));
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

impl<'a> MakeWriter<'a> for DaemonLog {
    type Writer = TeeWriter<'a>;

    fn make_writer(&'a self) -> Self::Writer {
        TeeWriter { inner: &self.inner }
    }
}
