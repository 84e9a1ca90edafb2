//! One request/response exchange on an upstream connection: the request head and body go out
//! while the response head is awaited (a backend may answer before it read the whole body),
//! 1xx interim responses are skipped, and the response body framing is decided.

use std::future::Future;

use bytes::{Buf, Bytes};
use http::request::Parts;
use http::{header, Method, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Body as _;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{ReadHalf, WriteHalf};

use super::codec::{self, RequestFraming, ResponseHead};
use super::{ResponseBody, UpstreamConn, UpstreamError, READ_BUFFER};
use crate::proxy::body::{BodyError, UpstreamBody};
use crate::proxy::headers::{self, Forwarding};

/// A backend's answer.
#[derive(Debug)]
pub(crate) enum Exchanged {
    /// A response whose body streams from the connection.
    Response(Response<ResponseBody>),
    /// `101 Switching Protocols`: the connection now belongs to the tunnel.
    Switched(Response<()>, UpstreamConn),
}

/// A failed exchange; the connection is gone.
#[derive(Debug)]
pub(crate) struct SendFailure {
    pub(crate) error: UpstreamError,
    /// The backend cannot have acted on the request: its head never got out, or the
    /// connection died without a response byte for an idempotent request without body.
    pub(crate) retry_safe: bool,
}

/// A request on its way to a backend.
#[derive(Debug)]
pub(crate) enum Outgoing {
    /// Built from `http` types. Boxed: the request's future carries it, and the simple
    /// requests (nearly all) then move a few hundred bytes less with it.
    Parts(Box<PartsRequest>),
    /// A bodiless request whose backend head `proxy::simple` already wrote, sent as it is.
    Encoded { method: Method, head: Bytes },
}

/// A request built from `http` types: its head is encoded on each send, its body streams
/// from the client.
#[derive(Debug)]
pub(crate) struct PartsRequest {
    pub(crate) parts: Parts,
    pub(crate) forwarding: Forwarding,
    pub(crate) body: UpstreamBody,
}

impl Outgoing {
    /// Body bytes read from the client so far.
    pub(crate) fn body_seen(&self) -> u64 {
        match self {
            Outgoing::Parts(request) => request.body.seen(),
            Outgoing::Encoded { .. } => 0,
        }
    }
}

/// Why streaming the request body stopped.
enum BodyStop {
    Client(BodyError),
    Write(std::io::Error),
}

/// Send `request` on `conn` and read the response head.
///
/// A plain fn returning an `async move` block: an `async fn` would keep a second copy of
/// `conn` in its state, which is copied with it on every move.
#[allow(clippy::manual_async_fn)]
pub(crate) fn send(
    mut conn: UpstreamConn,
    request: &mut Outgoing,
) -> impl Future<Output = Result<Exchanged, SendFailure>> + Send + '_ {
    async move {
        let UpstreamConn {
            stream,
            read_buf,
            write_buf,
            ..
        } = &mut conn;
        // Only the proxy's own HTTP/1 server sends encoded requests, and it writes verbatim
        // fields into the client's response head.
        let verbatim = matches!(request, Outgoing::Encoded { .. });
        let (method, head, body) = match request {
            Outgoing::Parts(request) => {
                let PartsRequest {
                    parts,
                    forwarding,
                    body,
                } = &mut **request;
                let framing = request_framing(parts, body);
                let target = parts.uri.path_and_query().map_or("/", |p| p.as_str());
                let fields = headers::backend_fields(&parts.headers, forwarding);
                codec::encode_request_head(&parts.method, target, fields, framing, write_buf);
                let body = framing.has_body().then_some((body, framing));
                (&parts.method, &write_buf[..], body)
            }
            Outgoing::Encoded { method, head } => (&*method, &head[..], None),
        };
        let (mut reader, mut writer) = stream.split();
        if let Err(e) = writer.write_all(head).await {
            return Err(SendFailure {
                error: UpstreamError::Write(e),
                retry_safe: true,
            });
        }
        let mut received_any = false;
        let has_body = body.is_some();
        let mut body_done = !has_body;
        let head = match body {
            None => read_head(&mut reader, read_buf, &mut received_any, verbatim).await,
            Some((body, framing)) => {
                // Boxed: requests without a body, nearly all of them, keep a small future.
                let chunked = framing == RequestFraming::Chunked;
                let mut io = BodyIo {
                    reader: &mut reader,
                    writer: &mut writer,
                    read_buf,
                    write_buf,
                    received_any: &mut received_any,
                    body_done: &mut body_done,
                };
                Box::pin(io.send_body_while_reading_head(body, chunked)).await?
            }
        };
        let retry_safe = !received_any && !has_body && method.is_idempotent();
        let mut head = head.map_err(|error| SendFailure { error, retry_safe })?;
        if head.status == StatusCode::SWITCHING_PROTOCOLS {
            return Ok(Exchanged::Switched(into_response(head, ()), conn));
        }
        let mut framing = match &head.verbatim {
            Some(plain) => codec::plain_framing(method, plain),
            None => codec::response_framing(method, &mut head).map_err(|error| SendFailure {
                error,
                retry_safe: false,
            })?,
        };
        // Unread request body bytes would be taken for the next request.
        framing.keep_alive &= body_done;
        let verbatim = head.verbatim.take();
        let body = ResponseBody::new(conn, framing, verbatim);
        Ok(Exchanged::Response(into_response(head, body)))
    }
}

/// The body's framing towards the backend, from what the client's server parsed: the exact
/// length hyper decoded (from Content-Length, which `headers::check_framing` made sure is the
/// only framing field), else chunked.
fn request_framing(parts: &Parts, body: &UpstreamBody) -> RequestFraming {
    if body.is_end_stream() {
        let declared = parts.headers.contains_key(header::CONTENT_LENGTH)
            || matches!(parts.method, Method::POST | Method::PUT | Method::PATCH);
        return if declared {
            RequestFraming::Length(0)
        } else {
            RequestFraming::Empty
        };
    }
    match body.size_hint().exact() {
        Some(len) => RequestFraming::Length(len),
        None => RequestFraming::Chunked,
    }
}

/// Both directions of an upstream connection while a request body goes out.
struct BodyIo<'c, 'r> {
    reader: &'c mut ReadHalf<'r>,
    writer: &'c mut WriteHalf<'r>,
    read_buf: &'c mut bytes::BytesMut,
    write_buf: &'c mut Vec<u8>,
    received_any: &'c mut bool,
    body_done: &'c mut bool,
}

impl BodyIo<'_, '_> {
    /// Stream `body` while awaiting the response head: a backend may answer (e.g. 413) before
    /// it read the whole body, and then stop reading it.
    async fn send_body_while_reading_head(
        &mut self,
        body: &mut UpstreamBody,
        chunked: bool,
    ) -> Result<Result<ResponseHead, UpstreamError>, SendFailure> {
        let sending = send_body(self.writer, body, chunked, self.write_buf);
        let reading = read_head(self.reader, self.read_buf, self.received_any, false);
        tokio::pin!(sending, reading);
        let mut write_error = None;
        loop {
            tokio::select! {
                biased;
                sent = &mut sending, if !*self.body_done => {
                    *self.body_done = true;
                    match sent {
                        Ok(()) => {}
                        Err(BodyStop::Client(e)) => return Err(SendFailure { error: e.into(), retry_safe: false }),
                        // The backend may have answered early (e.g. 413) and stopped reading.
                        Err(BodyStop::Write(e)) => write_error = Some(e),
                    }
                }
                head = &mut reading => return Ok(head.map_err(|e| write_error.map_or(e, UpstreamError::Write))),
            }
        }
    }
}

async fn send_body(
    writer: &mut WriteHalf<'_>,
    body: &mut UpstreamBody,
    chunked: bool,
    scratch: &mut Vec<u8>,
) -> Result<(), BodyStop> {
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(BodyStop::Client)?;
        let Ok(data) = frame.into_data() else {
            continue; // trailers of an HTTP/2 request are not passed on
        };
        if data.is_empty() {
            continue;
        }
        if chunked {
            scratch.clear();
            codec::chunk_header(data.len(), scratch);
            // One vectored write per chunk: size line, data and CRLF together.
            let mut chunk = Buf::chain(Buf::chain(scratch.as_slice(), &data[..]), &b"\r\n"[..]);
            writer
                .write_all_buf(&mut chunk)
                .await
                .map_err(BodyStop::Write)?;
        } else {
            writer.write_all(&data).await.map_err(BodyStop::Write)?;
        }
    }
    if chunked {
        writer
            .write_all(codec::LAST_CHUNK)
            .await
            .map_err(BodyStop::Write)?;
    }
    Ok(())
}

/// Read until a final response head (or 101) is parsed; interim 1xx responses are dropped.
/// With `verbatim`, a plain head keeps its fields as they are (`codec::Verbatim`).
async fn read_head(
    reader: &mut ReadHalf<'_>,
    buf: &mut bytes::BytesMut,
    received_any: &mut bool,
    verbatim: bool,
) -> Result<ResponseHead, UpstreamError> {
    loop {
        if !buf.is_empty() {
            if let Some(head) = codec::parse_response_head(buf, verbatim)? {
                let interim = head.status.is_informational()
                    && head.status != StatusCode::SWITCHING_PROTOCOLS;
                if !interim {
                    return Ok(head);
                }
                continue;
            }
        }
        if buf.capacity() - buf.len() < 1024 {
            buf.reserve(READ_BUFFER);
        }
        let n = reader.read_buf(buf).await.map_err(UpstreamError::Read)?;
        if n == 0 {
            return Err(UpstreamError::Closed);
        }
        *received_any = true;
    }
}

fn into_response<B>(head: ResponseHead, body: B) -> Response<B> {
    let mut resp = Response::new(body);
    *resp.status_mut() = head.status;
    *resp.version_mut() = head.version;
    *resp.headers_mut() = head.headers;
    resp
}
