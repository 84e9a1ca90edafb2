//! Closing client connections the way RFC 9112 §9.6 asks: half-close, then read and discard
//! what the client still sends until it closes or a short timeout passes ("lingering close",
//! as nginx does it). Closing a socket that holds unread input makes the kernel send a reset,
//! which throws away the end of a response still in the send buffer, and on many client
//! stacks a response already received but not yet read.
//!
//! Also owns [`Reclaim`], which gets the socket back from hyper when hyper is done with a
//! connection, so hyper-served connections close the same way.

use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio::time::Instant;

/// Longest wait for the client's next bytes or its close.
const READ_TIMEOUT: Duration = Duration::from_secs(2);
/// Longest a closing connection is kept reading, however much the client still sends.
const MAX_LINGER: Duration = Duration::from_secs(5);
/// Reads per wake-up, so a client sending at full speed cannot hold the worker thread.
const READS_PER_WAKE: usize = 16;

/// Half-closes `stream` (after the response) and discards input until the client closes,
/// sends nothing for `READ_TIMEOUT`, or `MAX_LINGER` has passed.
pub(crate) async fn close(stream: TcpStream) {
    close_within(stream, READ_TIMEOUT, MAX_LINGER).await;
}

async fn close_within(mut stream: TcpStream, read_timeout: Duration, max_linger: Duration) {
    let _ = stream.shutdown().await;
    let until = Instant::now() + max_linger;
    loop {
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return;
        }
        match tokio::time::timeout(read_timeout.min(left), stream.readable()).await {
            Ok(Ok(())) if discard_ready_input(&stream) => {}
            _ => return,
        }
    }
}

/// Discards what can be read now; false once the client closed or the socket failed.
fn discard_ready_input(stream: &TcpStream) -> bool {
    // On the stack and never held across an await: it costs the connection's task nothing.
    let mut scratch = [0u8; 4096];
    for _ in 0..READS_PER_WAKE {
        match stream.try_read(&mut scratch) {
            Ok(0) => return false,
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return true,
            Err(_) => return false,
        }
    }
    true
}

/// A connection's I/O lent to hyper. When hyper drops it, it goes back through `home` to the
/// connection task, which closes it with [`close`]. An upgraded connection moves it into the
/// upgrade instead; the connection task then finds nothing to close.
pub(crate) struct Reclaim<I> {
    io: Option<I>,
    home: Option<oneshot::Sender<I>>,
}

impl<I> Reclaim<I> {
    /// `io` wrapped, and where it comes back once hyper has dropped it.
    pub(crate) fn new(io: I) -> (Self, oneshot::Receiver<I>) {
        let (home, back) = oneshot::channel();
        let lent = Self {
            io: Some(io),
            home: Some(home),
        };
        (lent, back)
    }

    fn io(&mut self) -> io::Result<Pin<&mut I>>
    where
        I: Unpin,
    {
        // Only `drop` takes it out.
        self.io
            .as_mut()
            .map(Pin::new)
            .ok_or_else(|| io::ErrorKind::NotConnected.into())
    }
}

impl<I> Drop for Reclaim<I> {
    fn drop(&mut self) {
        if let (Some(io), Some(home)) = (self.io.take(), self.home.take()) {
            // The connection task is gone when this fails; the socket then just closes.
            let _ = home.send(io);
        }
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for Reclaim<I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.io() {
            Ok(io) => io.poll_read(cx, buf),
            Err(e) => Poll::Ready(Err(e)),
        }
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for Reclaim<I> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.io() {
            Ok(io) => io.poll_write(cx, buf),
            Err(e) => Poll::Ready(Err(e)),
        }
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.io() {
            Ok(io) => io.poll_write_vectored(cx, bufs),
            Err(e) => Poll::Ready(Err(e)),
        }
    }

    fn is_write_vectored(&self) -> bool {
        self.io.as_ref().is_some_and(I::is_write_vectored)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.io() {
            Ok(io) => io.poll_flush(cx),
            Err(e) => Poll::Ready(Err(e)),
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.io() {
            Ok(io) => io.poll_shutdown(cx),
            Err(e) => Poll::Ready(Err(e)),
        }
    }
}

/// The TCP socket under a connection's I/O, which the lingering close reads from directly.
pub(crate) trait Socket {
    fn into_tcp(self) -> TcpStream;
}

impl Socket for TcpStream {
    fn into_tcp(self) -> TcpStream {
        self
    }
}

/// TLS is done with by then: hyper's shutdown (or `http1`'s caller) sent the close_notify.
impl Socket for tokio_rustls::server::TlsStream<TcpStream> {
    fn into_tcp(self) -> TcpStream {
        self.into_inner().0
    }
}

#[cfg(test)]
#[path = "tests/linger.rs"]
mod tests;
