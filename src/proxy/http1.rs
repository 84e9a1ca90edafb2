//! The proxy's own HTTP/1.1 server for plain client connections (port 80), for the requests
//! that make up nearly all traffic: well-formed heads without a body, upgrade or `Expect`.
//! The head is parsed in place, the request runs through the handler inside the connection's
//! task, and the response head and body go out in as few writes as the body allows. A simple
//! request (`proxy::simple`) skips the `http::Request` and goes out as its parsed bytes
//! rewritten; the plain response head it gets keeps the backend's fields as they are.
//!
//! Everything else (a request with a body, an upgrade, a malformed or oversized head) is handed
//! to hyper together with the bytes already read, and hyper serves the rest of that
//! connection: framing edge cases, `100 Continue` and 4xx answers stay with the server that is
//! tested against them, and this path stays small.
//!
//! HTTPS connections that negotiated HTTP/1.1 (or no ALPN) take this path too, over the TLS
//! stream; HTTP/2 stays with hyper.
//!
//! Why not hyper for all of it: this path took about a tenth off the proxy's CPU time per
//! request (fewer polls and copies, one write per small response), which is what put it ahead
//! of nginx in integration-tests/bench/proxy.sh.

use std::future::poll_fn;
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, StatusCode, Uri, Version};
use hyper::body::Body;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;

use super::body::ProxyBody;
use super::handler::{Begun, Forward};
use super::headers::ClientInfo;
use super::server::{ActiveRequest, ConnActivity, Shared};
use super::simple::{self, Simple};
use super::upstream::{self, UpstreamError, Verbatim};

/// Header fields a head may have on this path; more go to hyper (which allows 100).
const MAX_FIELDS: usize = 64;
/// Read buffer of a fresh connection: most request heads fit in well under 1 KiB.
const READ_BUFFER: usize = 4096;
/// Body data at least this large is written from its own buffer instead of being copied.
const COPY_LIMIT: usize = 8192;
/// Buffered response bytes that go out even while more body is ready.
const FLUSH_LIMIT: usize = 32 * 1024;

/// How a connection served by this path ended.
pub(crate) enum Ended<S> {
    /// Closed, or to be closed: the client or the proxy is done with it.
    Closed,
    /// The proxy closes it while the client may still be sending: close with lingering.
    Linger(S),
    /// A request this path does not take: hyper serves the rest of the connection, starting
    /// with the bytes read so far.
    Handoff(Rewind<S>),
}

/// Why a connection ended early.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ConnError {
    #[error("reading from the client failed: {0}")]
    Read(#[source] io::Error),
    #[error("writing to the client failed: {0}")]
    Write(#[source] io::Error),
    #[error("the backend's response body broke off: {0}")]
    Body(#[source] UpstreamError),
    #[error("the client closed the connection in the middle of a request head")]
    PartialHead,
}

/// Serve requests on `stream` until the client or the proxy closes it, or a request needs
/// hyper. `activity` carries the connection's request count (for the quiet watch) and the
/// closing flag the watch and shutdown set.
pub(crate) async fn serve<S>(
    shared: Arc<Shared>,
    client: ClientInfo,
    activity: Arc<ConnActivity>,
    mut stream: S,
) -> Result<Ended<S>, ConnError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut read_buf = BytesMut::with_capacity(READ_BUFFER);
    let mut write_buf = Vec::with_capacity(READ_BUFFER);
    // Backend heads of simple requests, split off one by one: the allocation is reused once
    // the previous request's head was dropped.
    let mut backend_heads = BytesMut::new();
    loop {
        let mut taking = Taking {
            shared: &shared,
            client: &client,
            backend_heads: &mut backend_heads,
        };
        let head = match next_head(&mut stream, &mut read_buf, &activity, &mut taking).await? {
            NextHead::Request(head) => head,
            NextHead::Closed => return Ok(Ended::Closed),
            // A request may be crossing the close (shutdown or idle timeout): closing with it
            // unread would reset the connection; lingering gives the client a clean end.
            NextHead::Closing => return Ok(Ended::Linger(stream)),
            NextHead::Handoff => return Ok(Ended::Handoff(Rewind::new(stream, read_buf))),
        };
        let active = ActiveRequest::start(&activity);
        let (is_head, version, client_goes_on, resp) = match head {
            Head::Simple(simple) => {
                let is_head = simple.method == Method::HEAD;
                let (version, goes_on) = (simple.version, simple.keep_alive);
                let fwd = Forward::encoded(simple.app, simple.method, simple.backend_head);
                let forwarded = Arc::clone(&shared).forward(fwd, active, simple.log);
                let Ok(resp) = forwarded.await;
                (is_head, version, goes_on, resp)
            }
            Head::General {
                request,
                keep_alive,
            } => {
                let is_head = request.method() == Method::HEAD;
                let version = request.version();
                let resp = match shared.begin(request, &client) {
                    Begun::Answered(resp) => resp,
                    Begun::Forward(fwd, log) => {
                        let Ok(resp) = Arc::clone(&shared).forward(fwd, active, log).await;
                        resp
                    }
                };
                (is_head, version, keep_alive, resp)
            }
        };
        let mut keep_alive = client_goes_on;
        keep_alive &= !activity.is_closing();
        let (parts, mut body) = resp.into_parts();
        write_buf.clear();
        let length = body.size_hint().exact();
        let response = ClientHead {
            parts: &parts,
            verbatim: body.verbatim(),
            length,
        };
        let framing = encode_head(&response, version, is_head, &mut keep_alive, &mut write_buf);
        drop(parts);
        write_body(&mut stream, &mut write_buf, &mut body, framing).await?;
        drop(body);
        if !keep_alive {
            if client_goes_on || !read_buf.is_empty() {
                return Ok(Ended::Linger(stream));
            }
            let _ = stream.shutdown().await;
            return Ok(Ended::Closed);
        }
    }
}

/// A request head read and accepted by this path.
enum Head {
    /// Taken byte by byte (`proxy::simple`): its backend head is written.
    Simple(Simple),
    /// Goes through the handler's checks and routing.
    General {
        request: Request<()>,
        keep_alive: bool,
    },
}

/// What taking a head needs besides the head: the simple way routes it and writes its backend
/// head.
struct Taking<'a> {
    shared: &'a Shared,
    client: &'a ClientInfo,
    backend_heads: &'a mut BytesMut,
}

#[allow(clippy::large_enum_variant)] // unpacked at once; a Box would cost an allocation
enum NextHead {
    Request(Head),
    Closed,
    /// The proxy closes the connection between requests.
    Closing,
    Handoff,
}

/// Read until the buffer holds a complete request head, then take it.
async fn next_head<S: AsyncRead + Unpin>(
    stream: &mut S,
    buf: &mut BytesMut,
    activity: &ConnActivity,
    taking: &mut Taking<'_>,
) -> Result<NextHead, ConnError> {
    let limit = taking.shared.config.max_header_bytes;
    loop {
        if !buf.is_empty() {
            match parse_head(buf, limit, taking) {
                Parsed::Complete(head) => return Ok(NextHead::Request(head)),
                Parsed::Other => return Ok(NextHead::Handoff),
                Parsed::Partial => {}
            }
        }
        if buf.capacity() - buf.len() < 1024 {
            buf.reserve(READ_BUFFER);
        }
        // Checked on every poll: shutdown and the quiet watch set the flag, then poll again.
        let read = poll_fn(|cx| {
            if activity.is_closing() {
                return Poll::Ready(Ok(None));
            }
            tokio_util::io::poll_read_buf(Pin::new(&mut *stream), cx, buf).map_ok(Some)
        })
        .await
        .map_err(ConnError::Read)?;
        match read {
            None => return Ok(NextHead::Closing),
            Some(0) if buf.is_empty() => return Ok(NextHead::Closed),
            Some(0) => return Err(ConnError::PartialHead),
            Some(_) => {}
        }
    }
}

#[allow(clippy::large_enum_variant)] // unpacked at once; a Box would cost an allocation
enum Parsed {
    Complete(Head),
    Partial,
    /// Valid or not, not for this path: hyper takes the connection from here.
    Other,
}

/// Take the head at the front of `buf` when it is complete and for this path; a head over
/// `limit` bytes, or still incomplete at `limit`, is not.
///
/// The head's end is found first, so it can be split off and frozen before it is parsed:
/// names and values then become shared slices of it, with no copy and no table of offsets.
fn parse_head(buf: &mut BytesMut, limit: usize, taking: &mut Taking<'_>) -> Parsed {
    let Some(head) = upstream::split_crlf_head(buf) else {
        // A head ending in bare LFs is complete too, but rare: hyper decides about it.
        let lenient_end = memchr::memmem::find(buf, b"\n\n").is_some()
            || memchr::memmem::find(buf, b"\n\r\n").is_some();
        return if lenient_end || buf.len() >= limit {
            Parsed::Other
        } else {
            Parsed::Partial
        };
    };
    // Over the limit hyper answers 431.
    let taken = (head.len() <= limit)
        .then(|| build_request(&head, taking))
        .flatten();
    match taken {
        Some(head) => Parsed::Complete(head),
        None => {
            // Back in front for hyper: once per connection at most.
            upstream::put_back(&head, buf);
            Parsed::Other
        }
    }
}

/// The request in `head` (exactly one complete head); `None` when this path does not take it:
/// a body, `Transfer-Encoding`, an upgrade, `Expect`, CONNECT, or anything that is not valid.
/// A head whose framing is ambiguous (Content-Length twice, or beside Transfer-Encoding) is
/// taken with all its fields, so `headers::check_framing` refuses it here: handed to hyper,
/// it would be smoothed over (hyper drops the Content-Length beside Transfer-Encoding).
/// A simple request (`proxy::simple`) is taken byte by byte.
fn build_request(head: &Bytes, taking: &mut Taking<'_>) -> Option<Head> {
    let mut slots = [const { std::mem::MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_FIELDS];
    let mut req = httparse::Request::new(&mut []);
    match req.parse_with_uninit_headers(head, &mut slots) {
        Ok(httparse::Status::Complete(len)) if len == head.len() => {}
        _ => return None,
    }
    let Taking {
        shared,
        client,
        backend_heads,
    } = taking;
    if let Some(simple) = simple::take(&req, head, shared, client, backend_heads) {
        return Some(Head::Simple(simple));
    }
    let version = match req.version? {
        0 => Version::HTTP_10,
        1 => Version::HTTP_11,
        _ => return None,
    };
    let method = Method::from_bytes(req.method?.as_bytes()).ok()?;
    if method == Method::CONNECT {
        return None;
    }
    let uri = Uri::from_maybe_shared(head.slice_ref(req.path?.as_bytes())).ok()?;
    let mut framing = FramingFields::default();
    let mut headers = HeaderMap::with_capacity(req.headers.len());
    for field in req.headers.iter() {
        let name = HeaderName::from_bytes(field.name.as_bytes()).ok()?;
        framing.see(&name, field.value);
        let value = HeaderValue::from_maybe_shared(head.slice_ref(field.value)).ok()?;
        headers.append(name, value);
    }
    if !framing.for_this_path() {
        return None;
    }
    let mut request = Request::new(());
    *request.method_mut() = method;
    *request.uri_mut() = uri;
    *request.version_mut() = version;
    *request.headers_mut() = headers;
    let keep_alive = upstream::connection_keep_alive(version, request.headers());
    Some(Head::General {
        request,
        keep_alive,
    })
}

/// The fields of a head that decide whether this path takes it.
#[derive(Default)]
struct FramingFields {
    content_lengths: u8,
    nonzero_length: bool,
    transfer_encoding: bool,
    upgrade_or_expect: bool,
}

impl FramingFields {
    fn see(&mut self, name: &HeaderName, value: &[u8]) {
        if name == header::CONTENT_LENGTH {
            self.content_lengths = self.content_lengths.saturating_add(1);
            self.nonzero_length |= value.trim_ascii() != b"0";
        } else if name == header::TRANSFER_ENCODING {
            self.transfer_encoding = true;
        } else if name == header::UPGRADE || name == header::EXPECT {
            self.upgrade_or_expect = true;
        }
    }

    /// Taken here: no body (at most one `Content-Length: 0`), no upgrade, no `Expect`; or
    /// ambiguous framing, which the handler refuses with 400.
    fn for_this_path(&self) -> bool {
        let ambiguous =
            self.content_lengths > 1 || (self.content_lengths > 0 && self.transfer_encoding);
        let plain = !self.nonzero_length && !self.transfer_encoding && !self.upgrade_or_expect;
        ambiguous || plain
    }
}

/// How the response body goes out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    /// No body bytes (HEAD, 204, 304).
    None,
    Length,
    Chunked,
    /// An HTTP/1.0 client of a body of unknown length: the end of the body closes.
    UntilClose,
}

/// A response head on its way to the client.
struct ClientHead<'a> {
    parts: &'a http::response::Parts,
    /// The backend's fields, to write as they are (then `parts` has no fields).
    verbatim: Option<&'a Verbatim>,
    /// The body's length, when known.
    length: Option<u64>,
}

/// Write the status line and fields of `head` into `out`; decide body framing and whether the
/// connection stays open.
fn encode_head(
    head: &ClientHead<'_>,
    client_version: Version,
    is_head: bool,
    keep_alive: &mut bool,
    out: &mut Vec<u8>,
) -> Framing {
    let ClientHead {
        parts,
        verbatim,
        length,
    } = *head;
    let status = parts.status;
    let no_body = is_head || status == StatusCode::NO_CONTENT || status == StatusCode::NOT_MODIFIED;
    let framing = if no_body {
        Framing::None
    } else if length.is_some() {
        Framing::Length
    } else if client_version == Version::HTTP_11 {
        Framing::Chunked
    } else {
        Framing::UntilClose
    };
    if framing == Framing::UntilClose {
        *keep_alive = false;
    }
    // The proxy's own pages ask to close when the request's framing can't be trusted.
    if parts.headers.contains_key(header::CONNECTION) {
        *keep_alive = false;
    }
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes());
    out.extend_from_slice(b"\r\n");
    if let Some(verbatim) = verbatim {
        // Content-Length is among them, and it is the body's length (or, for HEAD, the
        // length of the body it describes).
        out.extend_from_slice(verbatim.fields());
        finish_head(client_version, verbatim.has_date, *keep_alive, out);
        return framing;
    }
    for (name, value) in &parts.headers {
        let framing_field = name == header::CONTENT_LENGTH || name == header::TRANSFER_ENCODING;
        // HEAD and 304 keep the length of the body they describe but do not carry.
        let keep_length =
            name == header::CONTENT_LENGTH && (is_head || status == StatusCode::NOT_MODIFIED);
        if (framing_field && !keep_length) || name == header::CONNECTION {
            continue;
        }
        upstream::write_field(out, name.as_str().as_bytes(), value.as_bytes());
    }
    match framing {
        Framing::Length => {
            let mut digits = itoa::Buffer::new();
            upstream::write_field(
                out,
                b"content-length",
                digits.format(length.unwrap_or(0)).as_bytes(),
            );
        }
        Framing::Chunked => upstream::write_field(out, b"transfer-encoding", b"chunked"),
        Framing::None | Framing::UntilClose => {}
    }
    let has_date = parts.headers.contains_key(header::DATE);
    finish_head(client_version, has_date, *keep_alive, out);
    framing
}

/// The fields every response head ends with: Date when the response has none, Connection
/// when the client needs to be told, and the blank line.
fn finish_head(client_version: Version, has_date: bool, keep_alive: bool, out: &mut Vec<u8>) {
    if !has_date {
        date::with_now(|now| upstream::write_field(out, b"date", now));
    }
    if !keep_alive {
        upstream::write_field(out, b"connection", b"close");
    } else if client_version == Version::HTTP_10 {
        upstream::write_field(out, b"connection", b"keep-alive");
    }
    out.extend_from_slice(b"\r\n");
}

/// Send the head in `buf` and the body after it; frames that are ready join the buffer, which
/// goes out before waiting for more (so streamed responses are never held back).
async fn write_body<S: AsyncWrite + Unpin>(
    stream: &mut S,
    buf: &mut Vec<u8>,
    body: &mut ProxyBody,
    framing: Framing,
) -> Result<(), ConnError> {
    if framing == Framing::None {
        return flush(stream, buf).await;
    }
    // A Content-Length body a backend writes apart from its head (busybox httpd does) goes
    // out with the head: one write, and a client never holds a head whose body never began
    // because haloyd was killed in between (it re-sends a request that got no byte).
    let mut head_waits = framing == Framing::Length;
    loop {
        let ready = poll_fn(|cx| Poll::Ready(Pin::new(&mut *body).poll_frame(cx))).await;
        let frame = match ready {
            Poll::Ready(frame) => frame,
            Poll::Pending => {
                if !head_waits {
                    flush(stream, buf).await?;
                }
                poll_fn(|cx| Pin::new(&mut *body).poll_frame(cx)).await
            }
        };
        head_waits = false;
        let data = match frame {
            None => break,
            Some(Err(e)) => return Err(ConnError::Body(e)),
            Some(Ok(frame)) => match frame.into_data() {
                Ok(data) if !data.is_empty() => data,
                _ => continue,
            },
        };
        if framing == Framing::Chunked {
            upstream::chunk_header(data.len(), buf);
        }
        if data.len() >= COPY_LIMIT {
            write_both(stream, buf, &data).await?;
        } else {
            buf.extend_from_slice(&data);
        }
        if framing == Framing::Chunked {
            buf.extend_from_slice(b"\r\n");
        }
        if body.is_end_stream() {
            break;
        }
        // A backend that always has more ready must not fill memory ahead of a slow client.
        if buf.len() >= FLUSH_LIMIT {
            flush(stream, buf).await?;
        }
    }
    if framing == Framing::Chunked {
        buf.extend_from_slice(upstream::LAST_CHUNK);
    }
    flush(stream, buf).await
}

/// Writes `buf` and flushes: a TLS stream may keep records back until flushed (a no-op on
/// TCP).
async fn flush<S: AsyncWrite + Unpin>(stream: &mut S, buf: &mut Vec<u8>) -> Result<(), ConnError> {
    if !buf.is_empty() {
        stream.write_all(buf).await.map_err(ConnError::Write)?;
        buf.clear();
    }
    stream.flush().await.map_err(ConnError::Write)
}

/// Write `first` then `second` (vectored writes, no copy of `second`); clears `first`.
async fn write_both<S: AsyncWrite + Unpin>(
    stream: &mut S,
    first: &mut Vec<u8>,
    second: &[u8],
) -> Result<(), ConnError> {
    let mut both = first.as_slice().chain(second);
    stream
        .write_all_buf(&mut both)
        .await
        .map_err(ConnError::Write)?;
    first.clear();
    stream.flush().await.map_err(ConnError::Write)
}

/// The Date field of the proxy's own responses (and of backends that send none), formatted
/// once per second per thread.
mod date {
    use std::cell::RefCell;
    use std::time::{SystemTime, UNIX_EPOCH};

    thread_local! {
        static CACHE: RefCell<(u64, String)> = const { RefCell::new((0, String::new())) };
    }

    pub(super) fn with_now(f: impl FnOnce(&[u8])) {
        let now = SystemTime::now();
        let secs = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        CACHE.with_borrow_mut(|(at, text)| {
            if *at != secs || text.is_empty() {
                *text = httpdate::fmt_http_date(now);
                *at = secs;
            }
            f(text.as_bytes());
        });
    }
}

/// The client connection with the bytes already read from it in front, for hyper.
pub(crate) struct Rewind<S> {
    prefix: Bytes,
    stream: S,
}

impl<S> Rewind<S> {
    fn new(stream: S, read: BytesMut) -> Self {
        Self {
            prefix: read.freeze(),
            stream,
        }
    }
}

impl<S: super::linger::Socket> super::linger::Socket for Rewind<S> {
    fn into_tcp(self) -> TcpStream {
        self.stream.into_tcp()
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Rewind<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if !self.prefix.is_empty() {
            let n = self.prefix.len().min(buf.remaining());
            let taken = self.prefix.split_to(n);
            buf.put_slice(&taken);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Rewind<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

#[cfg(test)]
#[path = "tests/http1.rs"]
mod tests;
