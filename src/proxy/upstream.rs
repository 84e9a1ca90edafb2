//! Upstream HTTP/1.1 connections to backends: connect with a timeout, handshake, and the pooled
//! keep-alive sender that goes back to its backend's idle pool once a response completed.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use super::body::UpstreamBody;

/// The sending half of an upstream connection.
pub(crate) type Sender = http1::SendRequest<UpstreamBody>;

/// An idle keep-alive connection in a backend's pool.
#[derive(Debug)]
pub(crate) struct PooledConn {
    sender: Sender,
    idle_since: Instant,
}

impl PooledConn {
    pub(crate) fn new(sender: Sender) -> Self {
        Self {
            sender,
            idle_since: Instant::now(),
        }
    }

    pub(crate) fn idle_since(&self) -> Instant {
        self.idle_since
    }

    pub(crate) fn into_sender(self) -> Sender {
        self.sender
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.sender.is_closed()
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
    #[error("HTTP/1.1 handshake with backend {addr} failed: {source}")]
    Handshake {
        addr: SocketAddr,
        source: hyper::Error,
    },
}

impl ConnectError {
    /// True when the backend actively refused: nothing listens there any more.
    pub(crate) fn is_refused(&self) -> bool {
        matches!(self, ConnectError::Io { source, .. } if source.kind() == std::io::ErrorKind::ConnectionRefused)
    }
}

/// Open a fresh HTTP/1.1 connection to `addr`; its driver task runs until the connection
/// closes (upgrades included, so 101 responses can become tunnels).
pub(crate) async fn connect(addr: SocketAddr, timeout: Duration) -> Result<Sender, ConnectError> {
    let stream = match tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
        Ok(Ok(s)) => s,
        Ok(Err(source)) => return Err(ConnectError::Io { addr, source }),
        Err(_) => return Err(ConnectError::Timeout { addr, timeout }),
    };
    // Small request/response pairs must not wait for Nagle.
    let _ = stream.set_nodelay(true);
    let (sender, conn) = http1::Builder::new()
        .handshake(TokioIo::new(stream))
        .await
        .map_err(|source| ConnectError::Handshake { addr, source })?;
    tokio::spawn(async move {
        if let Err(e) = conn.with_upgrades().await {
            tracing::debug!(backend = %addr, error = %e, "upstream connection ended with error");
        }
    });
    Ok(sender)
}
