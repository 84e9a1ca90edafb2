//! Owns the framing check of the HTTP/1 connections hyper serves (plain ones after a hand-off,
//! HTTPS ones not on HTTP/2): it sits between the socket and hyper, follows the byte stream
//! message by message as hyper will read it, and holds each request head back until it has
//! seen it whole.
//!
//! Why: hyper smooths over framing a backend or a proxy in front may read another way. It
//! drops a Content-Length sent beside Transfer-Encoding and merges equal Content-Lengths, so
//! `headers::check_framing` never sees them. Such a head is made one hyper refuses (its first
//! byte becomes NUL, not a method token): hyper answers 400 and closes, and nothing reaches a
//! backend, as on the proxy's own HTTP/1 server.
//!
//! The walk mirrors hyper's readers exactly (httparse for heads, hyper's chunked decoder state
//! for bodies). Where the stream stops being HTTP/1 messages this guard can follow (what follows
//! an upgrade request and its body, HTTP/2, anything hyper itself refuses, the end of input)
//! bytes pass unwatched: hyper closes the connection in each of those cases (the handler closes
//! it after an upgrade request that no 101 answers) or it is no longer HTTP/1. The body of an
//! upgrade request is still followed: hyper reads it as any other body, and forwards it.

use std::io;
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Most header fields in a request head (hyper's default limit too).
const MAX_FIELDS: usize = 100;
/// Read size while a head is held back.
const READ_CHUNK: usize = 8 * 1024;

/// What comes next on the stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// A request head, held back until it is complete.
    Head,
    /// This many bytes of a length-delimited body.
    Body(u64),
    /// A chunked body.
    Chunked(Chunk),
    /// Not followed any more: bytes pass as they come.
    Opaque,
}

/// Where a chunked body is, one state per step of hyper's `ChunkedState`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Chunk {
    Start,
    Size(u64),
    SizeLws(u64),
    Extension(u64),
    SizeLf(u64),
    Data(u64),
    DataCr,
    DataLf,
    EndCr,
    EndLf,
    Trailer,
    TrailerLf,
}

/// One step of a chunked body on `byte` (not in `Data`): the next state, `None` at the end of
/// the body, `Err` where hyper's decoder fails.
fn chunk_step(chunk: Chunk, byte: u8) -> Result<Option<Chunk>, ()> {
    let hex = |b: u8| char::from(b).to_digit(16).map(u64::from);
    let grow = |size: u64, digit: u64| size.checked_mul(16).and_then(|s| s.checked_add(digit));
    let after_size = |size: u64, b: u8| match b {
        b'\t' | b' ' => Ok(Some(Chunk::SizeLws(size))),
        b';' => Ok(Some(Chunk::Extension(size))),
        b'\r' => Ok(Some(Chunk::SizeLf(size))),
        _ => Err(()),
    };
    match chunk {
        Chunk::Start => hex(byte).map(|d| Some(Chunk::Size(d))).ok_or(()),
        Chunk::Size(size) => match hex(byte) {
            Some(d) => grow(size, d).map(|s| Some(Chunk::Size(s))).ok_or(()),
            None => after_size(size, byte),
        },
        Chunk::SizeLws(size) => after_size(size, byte),
        Chunk::Extension(size) => match byte {
            b'\r' => Ok(Some(Chunk::SizeLf(size))),
            b'\n' => Err(()),
            _ => Ok(Some(Chunk::Extension(size))),
        },
        Chunk::SizeLf(size) => match (byte, size) {
            (b'\n', 0) => Ok(Some(Chunk::EndCr)),
            (b'\n', size) => Ok(Some(Chunk::Data(size))),
            _ => Err(()),
        },
        Chunk::Data(_) => Err(()),
        Chunk::DataCr => (byte == b'\r').then_some(Some(Chunk::DataLf)).ok_or(()),
        Chunk::DataLf => (byte == b'\n').then_some(Some(Chunk::Start)).ok_or(()),
        Chunk::EndCr => Ok(Some(if byte == b'\r' {
            Chunk::EndLf
        } else {
            Chunk::Trailer
        })),
        Chunk::Trailer => Ok(Some(if byte == b'\r' {
            Chunk::TrailerLf
        } else {
            Chunk::Trailer
        })),
        Chunk::TrailerLf => (byte == b'\n').then_some(Some(Chunk::EndCr)).ok_or(()),
        Chunk::EndLf => (byte == b'\n').then_some(None).ok_or(()),
    }
}

/// What a complete request head means for the stream.
#[derive(Debug, PartialEq, Eq)]
enum Verdict {
    /// Framing hyper would smooth over: refuse it.
    Ambiguous,
    /// Framing as hyper reads it: what follows the head, and what follows its body.
    Then { next: State, after_body: State },
}

/// The verdict on a parsed head, by hyper's rules (`proto::h1::role::Server::parse`).
fn verdict(req: &httparse::Request<'_, '_>) -> Verdict {
    let mut lengths = 0usize;
    let mut length = None;
    let mut transfer_encoding = None;
    let mut upgrade = req.method == Some("CONNECT");
    for field in req.headers.iter() {
        if field.name.eq_ignore_ascii_case("content-length") {
            lengths += 1;
            length = super::headers::parse_decimal(field.value);
        } else if field.name.eq_ignore_ascii_case("transfer-encoding") {
            // The last field decides, as in hyper; `chunked` must be the final coding.
            transfer_encoding = Some(last_coding_is_chunked(field.value));
        } else if field.name.eq_ignore_ascii_case("upgrade") {
            upgrade = true;
        }
    }
    if lengths > 1 || (lengths > 0 && transfer_encoding.is_some()) {
        return Verdict::Ambiguous;
    }
    // Past an upgrade request's body the stream is a tunnel once a 101 answers it: not followed.
    let after_body = if upgrade { State::Opaque } else { State::Head };
    let next = match (transfer_encoding, length) {
        // What hyper refuses (bad length, TE not chunked, TE on HTTP/1.0): the stream is not
        // followed past it.
        _ if req.version != Some(1) && transfer_encoding.is_some() => State::Opaque,
        (Some(true), _) => State::Chunked(Chunk::Start),
        (Some(false), _) => State::Opaque,
        (None, Some(0)) => after_body,
        (None, Some(len)) => State::Body(len),
        (None, None) if lengths > 0 => State::Opaque,
        (None, None) => after_body,
    };
    Verdict::Then { next, after_body }
}

fn last_coding_is_chunked(value: &[u8]) -> bool {
    value
        .rsplit(|&b| b == b',')
        .next()
        .is_some_and(|last| last.trim_ascii().eq_ignore_ascii_case(b"chunked"))
}

/// A connection's I/O as hyper reads it, with request heads checked first (see the module
/// docs). Writes pass straight through.
pub(crate) struct HeadGuard<I> {
    io: I,
    /// Bytes read from `io` that hyper has not had yet.
    buf: BytesMut,
    /// How many bytes at the front of `buf` are checked and may go to hyper.
    ready: usize,
    state: State,
    /// What follows the body being walked: the next head, or (after an upgrade request)
    /// bytes that are no longer followed.
    after_body: State,
    /// A head still incomplete at this size is hyper's to refuse (431).
    max_head: usize,
}

impl<I> HeadGuard<I> {
    /// `io` watched from its first byte; `watch` false passes everything (HTTP/2).
    pub(crate) fn new(io: I, max_head: usize, watch: bool) -> Self {
        Self {
            io,
            buf: BytesMut::new(),
            ready: 0,
            state: if watch { State::Head } else { State::Opaque },
            after_body: State::Head,
            max_head,
        }
    }

    /// Moves `ready` over every buffered byte the state allows.
    fn advance(&mut self) {
        loop {
            let pending = self.buf.len() - self.ready;
            if pending == 0 {
                return;
            }
            match self.state {
                State::Opaque => {
                    self.ready = self.buf.len();
                    return;
                }
                State::Head => {
                    if !self.check_head() {
                        return;
                    }
                }
                State::Body(left) => {
                    let take = left.min(pending as u64);
                    self.ready += take as usize;
                    self.state = if take == left {
                        self.after_body
                    } else {
                        State::Body(left - take)
                    };
                }
                State::Chunked(chunk) => self.walk_chunked(chunk),
            }
        }
    }

    /// Takes the head at `ready` when it is complete; false while more bytes are needed.
    fn check_head(&mut self) -> bool {
        let start = self.ready;
        let mut slots = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_FIELDS];
        let mut req = httparse::Request::new(&mut []);
        let parsed = httparse::ParserConfig::default().parse_request_with_uninit_headers(
            &mut req,
            &self.buf[start..],
            &mut slots,
        );
        match parsed {
            Ok(httparse::Status::Complete(len)) => {
                let verdict = verdict(&req);
                self.ready += len;
                match verdict {
                    Verdict::Then { next, after_body } => {
                        self.state = next;
                        self.after_body = after_body;
                    }
                    Verdict::Ambiguous => {
                        tracing::debug!("request with ambiguous framing refused");
                        self.buf[start] = 0;
                        self.state = State::Opaque;
                    }
                }
                true
            }
            Ok(httparse::Status::Partial) if self.buf.len() - start < self.max_head => false,
            // Too large or not a head hyper accepts: hyper answers it and closes.
            Ok(httparse::Status::Partial) | Err(_) => {
                self.state = State::Opaque;
                true
            }
        }
    }

    fn walk_chunked(&mut self, mut chunk: Chunk) {
        while self.ready < self.buf.len() {
            if let Chunk::Data(left) = chunk {
                let take = left.min((self.buf.len() - self.ready) as u64);
                self.ready += take as usize;
                chunk = if take == left {
                    Chunk::DataCr
                } else {
                    Chunk::Data(left - take)
                };
                continue;
            }
            let byte = self.buf[self.ready];
            if byte == b'\n' && matches!(chunk, Chunk::EndCr | Chunk::Trailer) {
                // A bare LF in the trailer section: hyper reads on to the next CRLF, a reader
                // taking LF as a line end (RFC 9112 §2.2) ends the body here. As NUL it makes
                // hyper's trailer parse fail: hyper fails the body and closes.
                self.buf[self.ready] = 0;
            }
            self.ready += 1;
            match chunk_step(chunk, byte) {
                Ok(Some(next)) => chunk = next,
                Ok(None) => {
                    self.state = self.after_body;
                    return;
                }
                Err(()) => {
                    // hyper fails the body here and closes the connection.
                    self.state = State::Opaque;
                    return;
                }
            }
        }
        self.state = State::Chunked(chunk);
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for HeadGuard<I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        loop {
            if this.ready > 0 {
                let n = this.ready.min(out.remaining());
                out.put_slice(&this.buf[..n]);
                this.buf.advance(n);
                this.ready -= n;
                return Poll::Ready(Ok(()));
            }
            if this.buf.is_empty() {
                // Nothing to hold back: read straight into hyper's buffer (no copy) when no
                // byte of a following head can land there.
                let direct = match this.state {
                    State::Opaque => true,
                    State::Body(left) => left >= out.remaining() as u64,
                    _ => false,
                };
                if direct {
                    let before = out.filled().len();
                    let polled = Pin::new(&mut this.io).poll_read(cx, out);
                    if let (Poll::Ready(Ok(())), State::Body(left)) = (&polled, this.state) {
                        let read = (out.filled().len() - before) as u64;
                        this.state = if read == left {
                            this.after_body
                        } else {
                            State::Body(left - read)
                        };
                    }
                    return polled;
                }
            }
            this.advance();
            if this.ready > 0 {
                continue;
            }
            this.buf.reserve(READ_CHUNK);
            match tokio_util::io::poll_read_buf(Pin::new(&mut this.io), cx, &mut this.buf) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Ready(Ok(0)) => {
                    // End of input: hyper gets what is left and sees the end itself.
                    this.state = State::Opaque;
                    this.ready = this.buf.len();
                    if this.ready == 0 {
                        return Poll::Ready(Ok(()));
                    }
                }
                Poll::Ready(Ok(_)) => {}
            }
        }
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for HeadGuard<I> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

impl<I: super::linger::Socket> super::linger::Socket for HeadGuard<I> {
    fn into_tcp(self) -> tokio::net::TcpStream {
        self.io.into_tcp()
    }
}

#[cfg(test)]
#[path = "tests/guard.rs"]
mod tests;
