//! Upstream HTTP/1.1 to backends, driven inside the client connection's own task: connect with
//! a timeout, the pooled keep-alive connection, one exchange (request out, response head in),
//! and the streamed response body that hands its connection back once fully read.
//!
//! Why not hyper's client: its connection runs in a task of its own, so every request costs
//! two extra task wake-ups and channel hops. Here the task that serves the client writes the
//! request and reads the response itself, as nginx and HAProxy do.

mod codec;
mod exchange;
mod response;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use tokio::net::TcpStream;

pub(crate) use codec::{
    chunk_header, connection_keep_alive, put_back, split_crlf_head, write_field, Verbatim,
    LAST_CHUNK,
};
pub(crate) use exchange::{send, Exchanged, Outgoing, PartsRequest, SendFailure};
pub(crate) use response::ResponseBody;

/// Read buffer capacity of a fresh connection; grown on demand for large heads.
const READ_BUFFER: usize = 16 * 1024;

/// One keep-alive TCP connection to a backend with the bytes read but not yet consumed.
#[derive(Debug)]
pub(crate) struct UpstreamConn {
    stream: TcpStream,
    read_buf: BytesMut,
    write_buf: Vec<u8>,
}

impl UpstreamConn {
    /// The socket and any bytes the backend sent past the response head (an upgraded tunnel
    /// must deliver those first).
    pub(crate) fn into_parts(self) -> (TcpStream, BytesMut) {
        (self.stream, self.read_buf)
    }

    /// False when the backend closed the idle connection or sent bytes nobody asked for.
    fn is_idle_and_open(&self) -> bool {
        if !self.read_buf.is_empty() {
            return false;
        }
        let mut probe = [0u8; 1];
        matches!(self.stream.try_read(&mut probe), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
    }
}

/// An idle keep-alive connection in a backend's pool.
#[derive(Debug)]
pub(crate) struct PooledConn {
    conn: UpstreamConn,
    idle_since: Instant,
}

impl PooledConn {
    /// `conn`, idle since `idle_since` (the caller's last clock read, to spare one).
    pub(crate) fn new(conn: UpstreamConn, idle_since: Instant) -> Self {
        Self { conn, idle_since }
    }

    /// The connection, when it is still usable and was idle for less than `max_idle` at `now`.
    pub(crate) fn reuse(self, max_idle: Duration, now: Instant) -> Option<UpstreamConn> {
        let fresh = now.saturating_duration_since(self.idle_since) < max_idle;
        (fresh && self.conn.is_idle_and_open()).then_some(self.conn)
    }
}

/// Why no connection to a backend could be made. Nothing was sent in any of these cases.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ConnectError {
    #[error("connecting to backend {addr} failed: {source}")]
    Io {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("connecting to backend {addr} timed out after {timeout:?}")]
    Timeout { addr: SocketAddr, timeout: Duration },
}

impl ConnectError {
    /// True when the backend actively refused: nothing listens there any more.
    pub(crate) fn is_refused(&self) -> bool {
        matches!(self, ConnectError::Io { source, .. } if source.kind() == std::io::ErrorKind::ConnectionRefused)
    }
}

/// What went wrong talking HTTP/1.1 to a backend, or reading the client's body for it.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// Writing the request to the backend failed.
    #[error("sending the request to the backend failed: {0}")]
    Write(#[source] std::io::Error),
    /// Reading from the backend failed.
    #[error("reading the backend's response failed: {0}")]
    Read(#[source] std::io::Error),
    /// The backend closed the connection before a complete response.
    #[error("the backend closed the connection before the response was complete")]
    Closed,
    /// The backend's response head or body is not valid HTTP/1.1.
    #[error("the backend sent an invalid response: {0}")]
    BadResponse(String),
    /// The backend's response head is larger than the proxy accepts.
    #[error(
        "the backend's response head exceeds {} bytes",
        codec::MAX_RESPONSE_HEAD_BYTES
    )]
    HeadTooLarge,
    /// The client's request body could not be passed on.
    #[error(transparent)]
    ClientBody(#[from] super::body::BodyError),
}

/// Open a fresh connection to `addr`.
pub(crate) async fn connect(
    addr: SocketAddr,
    timeout: Duration,
) -> Result<UpstreamConn, ConnectError> {
    let stream = match tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
        Ok(Ok(s)) => s,
        Ok(Err(source)) => return Err(ConnectError::Io { addr, source }),
        Err(_) => return Err(ConnectError::Timeout { addr, timeout }),
    };
    // Small request/response pairs must not wait for Nagle.
    let _ = stream.set_nodelay(true);
    Ok(UpstreamConn {
        stream,
        read_buf: BytesMut::with_capacity(READ_BUFFER),
        write_buf: Vec::with_capacity(1024),
    })
}
