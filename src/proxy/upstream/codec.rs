//! HTTP/1.1 wire format towards backends: request heads written into a reused buffer, response
//! heads parsed with httparse into `http` types, the response body framing of RFC 9112 §6.3,
//! and the chunked decoder. Head splitting, field writing and the keep-alive rule are shared
//! with the client side (`proxy::http1`). Pure functions over buffers: no I/O here.

use std::mem::MaybeUninit;

use bytes::{BufMut, Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, StatusCode, Version};

use super::UpstreamError;
use crate::proxy::headers::{is_field_value, is_hop_by_hop, parse_decimal};

/// Most header fields accepted in a backend's response head (hyper's default too).
const MAX_RESPONSE_HEADERS: usize = 100;
/// Largest response head accepted from a backend.
pub(crate) const MAX_RESPONSE_HEAD_BYTES: usize = 64 * 1024;
/// Longest chunk-size line (size, extensions) accepted in a chunked body.
const MAX_CHUNK_LINE: usize = 4096;
/// Most trailer bytes accepted after the last chunk.
const MAX_TRAILER_BYTES: usize = 64 * 1024;

/// How the request body goes on the wire. Always decided by the proxy from the length it
/// parsed and written by [`encode_request_head`]: a client's framing fields are never copied,
/// so nothing a client writes can make the backend frame the body differently.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RequestFraming {
    /// No body bytes follow the head, and no framing field is written.
    Empty,
    /// Exactly this many body bytes follow (`Content-Length`; 0 for an empty body that is
    /// declared, as POST/PUT/PATCH bodies are, since some servers answer 411 without it).
    Length(u64),
    /// The proxy chunk-encodes the body (length unknown up front).
    Chunked,
}

impl RequestFraming {
    /// True when body bytes follow the head.
    pub(crate) fn has_body(self) -> bool {
        !matches!(self, RequestFraming::Empty | RequestFraming::Length(0))
    }
}

/// Write `method target HTTP/1.1`, the header `fields` and the framing field into `out`.
pub(crate) fn encode_request_head<'a>(
    method: &Method,
    target: &str,
    fields: impl Iterator<Item = (&'a str, &'a HeaderValue)>,
    framing: RequestFraming,
    out: &mut Vec<u8>,
) {
    out.clear();
    out.extend_from_slice(method.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(target.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    for (name, value) in fields {
        write_field(out, name.as_bytes(), value.as_bytes());
    }
    match framing {
        RequestFraming::Empty => {}
        RequestFraming::Length(len) => {
            let mut digits = itoa::Buffer::new();
            write_field(out, b"content-length", digits.format(len).as_bytes());
        }
        RequestFraming::Chunked => out.extend_from_slice(b"transfer-encoding: chunked\r\n"),
    }
    out.extend_from_slice(b"\r\n");
}

/// Append the header field line `name: value` to `out`.
pub(crate) fn write_field(out: &mut impl BufMut, name: &[u8], value: &[u8]) {
    out.put_slice(name);
    out.put_slice(b": ");
    out.put_slice(value);
    out.put_slice(b"\r\n");
}

/// Append the chunk header for `len` data bytes (`len` > 0) to `out`.
pub(crate) fn chunk_header(len: usize, out: &mut Vec<u8>) {
    use std::io::Write as _;
    // Writing into a Vec cannot fail.
    let _ = write!(out, "{len:x}\r\n");
}

/// The bytes that end a chunked request body (last chunk, no trailers).
pub(crate) const LAST_CHUNK: &[u8] = b"0\r\n\r\n";

/// A parsed response head.
#[derive(Debug)]
pub(crate) struct ResponseHead {
    pub(crate) status: StatusCode,
    pub(crate) version: Version,
    /// Empty when the fields pass on `verbatim`.
    pub(crate) headers: HeaderMap,
    pub(crate) verbatim: Option<Verbatim>,
}

/// The fields of a plain response head, which pass to the client as the backend wrote them:
/// HTTP/1.1, a status with a body (not 1xx, 204 or 304), exactly one valid Content-Length,
/// CRLF line ends only, and no hop-by-hop field, so there is nothing to take out or rewrite.
/// Only the proxy's own HTTP/1 server writes such a head (see `Outgoing::Encoded`).
#[derive(Debug, Clone)]
pub(crate) struct Verbatim {
    /// The whole head; the fields start at `fields_at`. Kept whole rather than sliced: a
    /// slice would count one more reference to the read buffer per response.
    head: Bytes,
    fields_at: usize,
    /// The Content-Length.
    pub(crate) length: u64,
    /// A Date field is among them.
    pub(crate) has_date: bool,
}

/// The head at the start of `buf` split off at its first CRLF CRLF and frozen, so names and
/// values parsed from it can be shared slices of it; `None` while `buf` holds no CRLF CRLF.
pub(crate) fn split_crlf_head(buf: &mut BytesMut) -> Option<Bytes> {
    // Built once: `memmem::find` would build a searcher on every call, twice per request.
    static HEAD_END: std::sync::LazyLock<memchr::memmem::Finder<'static>> =
        std::sync::LazyLock::new(|| memchr::memmem::Finder::new(b"\r\n\r\n"));
    let end = HEAD_END.find(buf)?;
    Some(buf.split_to(end + 4).freeze())
}

/// Put `head`, split off by [`split_crlf_head`], back in front of `buf` (rare: a head that is
/// not taken as split).
pub(crate) fn put_back(head: &Bytes, buf: &mut BytesMut) {
    let mut whole = BytesMut::with_capacity(head.len() + buf.len());
    whole.extend_from_slice(head);
    whole.extend_from_slice(buf);
    *buf = whole;
}

/// Parse a complete response head at the start of `buf` and remove it from `buf`. `Ok(None)`:
/// more bytes are needed. Header values share the received bytes (no copy). With `verbatim`,
/// a plain head keeps its fields as they are (see [`Verbatim`]).
pub(crate) fn parse_response_head(
    buf: &mut BytesMut,
    verbatim: bool,
) -> Result<Option<ResponseHead>, UpstreamError> {
    // Nearly always the head ends at the first CRLF CRLF: split it off and parse it once.
    if let Some(head) = split_crlf_head(buf) {
        if let Some(parsed) = decode_response_head(&head, verbatim)? {
            return Ok(Some(parsed));
        }
        put_back(&head, buf);
    }
    // Bare-LF line ends or blank lines before the status line: httparse finds the end.
    let Some(len) = response_head_len(buf)? else {
        return Ok(None);
    };
    let head = buf.split_to(len).freeze();
    // Not CRLF-only, so never verbatim.
    decode_response_head(&head, false)?
        .map(Some)
        .ok_or_else(|| UpstreamError::BadResponse("the response head could not be parsed".into()))
}

/// Where the response head at the start of `buf` ends; `None` while it is incomplete.
fn response_head_len(buf: &[u8]) -> Result<Option<usize>, UpstreamError> {
    let mut slots = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_RESPONSE_HEADERS];
    let mut parsed = httparse::Response::new(&mut []);
    match httparse::ParserConfig::default().parse_response_with_uninit_headers(
        &mut parsed,
        buf,
        &mut slots,
    ) {
        Ok(httparse::Status::Complete(len)) => Ok(Some(len)),
        Ok(httparse::Status::Partial) if buf.len() >= MAX_RESPONSE_HEAD_BYTES => {
            Err(UpstreamError::HeadTooLarge)
        }
        Ok(httparse::Status::Partial) => Ok(None),
        Err(e) => Err(UpstreamError::BadResponse(e.to_string())),
    }
}

/// The response head that is exactly `head`; `None` when `head` holds more or less than one.
/// With `verbatim`, a plain head keeps its fields as they are instead of parsing them into a
/// header map.
fn decode_response_head(
    head: &Bytes,
    verbatim: bool,
) -> Result<Option<ResponseHead>, UpstreamError> {
    let mut slots = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_RESPONSE_HEADERS];
    let mut parsed = httparse::Response::new(&mut []);
    match httparse::ParserConfig::default().parse_response_with_uninit_headers(
        &mut parsed,
        head,
        &mut slots,
    ) {
        Ok(httparse::Status::Complete(len)) if len == head.len() => {}
        Ok(_) => return Ok(None),
        Err(e) => return Err(UpstreamError::BadResponse(e.to_string())),
    }
    let status = parsed
        .code
        .and_then(|c| StatusCode::from_u16(c).ok())
        .ok_or_else(|| UpstreamError::BadResponse("invalid status code".into()))?;
    let version = if parsed.version == Some(0) {
        Version::HTTP_10
    } else {
        Version::HTTP_11
    };
    if verbatim {
        if let Some(plain) = plain_fields(head, &parsed, status) {
            return Ok(Some(ResponseHead {
                status,
                version,
                headers: HeaderMap::new(),
                verbatim: Some(plain),
            }));
        }
    }
    let mut headers = HeaderMap::with_capacity(parsed.headers.len());
    for field in parsed.headers.iter() {
        let name = HeaderName::from_bytes(field.name.as_bytes())
            .map_err(|_| UpstreamError::BadResponse("invalid header name".into()))?;
        let value = HeaderValue::from_maybe_shared(head.slice_ref(field.value))
            .map_err(|_| UpstreamError::BadResponse(format!("invalid value for header {name}")))?;
        headers.append(name, value);
    }
    Ok(Some(ResponseHead {
        status,
        version,
        headers,
        verbatim: None,
    }))
}

/// The fields of `head`, parsed as `parsed`, kept [`Verbatim`] when the head is plain.
fn plain_fields(
    head: &Bytes,
    parsed: &httparse::Response<'_, '_>,
    status: StatusCode,
) -> Option<Verbatim> {
    let bodiless = status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED;
    if parsed.version != Some(1) || bodiless || !crlf_only(head) {
        return None;
    }
    let mut length = None;
    let mut has_date = false;
    for field in parsed.headers.iter() {
        let name = field.name.as_bytes();
        if !is_field_value(field.value) || is_hop_by_hop(name) {
            return None;
        }
        if name.eq_ignore_ascii_case(b"content-length") {
            if length.is_some() {
                return None;
            }
            length = Some(parse_decimal(field.value)?);
        }
        has_date |= name.eq_ignore_ascii_case(b"date");
    }
    Some(Verbatim {
        head: head.clone(),
        fields_at: memchr::memchr(b'\n', head)? + 1,
        length: length?,
        has_date,
    })
}

impl Verbatim {
    /// `head`'s field lines (each ending in CRLF, without the status line and the blank line)
    /// as a plain head: `fields` must be such lines, with one Content-Length of `length`.
    #[cfg(test)]
    pub(crate) fn new(fields: &[u8], length: u64, has_date: bool) -> Self {
        let mut head = b"HTTP/1.1 200 OK\r\n".to_vec();
        head.extend_from_slice(fields);
        head.extend_from_slice(b"\r\n");
        Self {
            head: Bytes::from(head),
            fields_at: 17,
            length,
            has_date,
        }
    }

    /// The field lines, each ending in CRLF, without the status line and the blank line.
    pub(crate) fn fields(&self) -> &[u8] {
        let end = self.head.len().saturating_sub(2);
        self.head.get(self.fields_at..end).unwrap_or_default()
    }
}

/// Every LF in `head` ends a CRLF: httparse also accepts bare LF line ends, which a client
/// could read differently.
fn crlf_only(head: &[u8]) -> bool {
    memchr::memchr_iter(b'\n', head).all(|at| at > 0 && head[at - 1] == b'\r')
}

/// How a response body is delimited (RFC 9112 §6.3), and whether the connection can carry
/// another request afterwards.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ResponseFraming {
    pub(crate) body: BodyFraming,
    pub(crate) keep_alive: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BodyFraming {
    Empty,
    Length(u64),
    Chunked,
    UntilClose,
}

/// Decide the framing of `head`, the answer to a request with `method`. Removes a
/// Content-Length that Transfer-Encoding overrides, so the client never sees both.
pub(crate) fn response_framing(
    method: &Method,
    head: &mut ResponseHead,
) -> Result<ResponseFraming, UpstreamError> {
    let mut keep_alive = connection_keep_alive(head.version, &head.headers);
    let status = head.status;
    let bodiless = *method == Method::HEAD
        || status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED;
    let body = if bodiless {
        BodyFraming::Empty
    } else if head.headers.contains_key(header::TRANSFER_ENCODING) {
        if head.headers.remove(header::CONTENT_LENGTH).is_some() {
            // Both framings given: chunked wins, and the connection can't be trusted after it.
            keep_alive = false;
        }
        if ends_with_chunked(&head.headers) {
            BodyFraming::Chunked
        } else {
            BodyFraming::UntilClose
        }
    } else if let Some(len) = content_length(&head.headers)? {
        BodyFraming::Length(len)
    } else {
        BodyFraming::UntilClose
    };
    if body == BodyFraming::UntilClose {
        keep_alive = false;
    }
    Ok(ResponseFraming { body, keep_alive })
}

/// The framing of a [`Verbatim`] head, the answer to a request with `method`: HTTP/1.1
/// without Connection, so the connection stays open.
pub(crate) fn plain_framing(method: &Method, plain: &Verbatim) -> ResponseFraming {
    let body = if *method == Method::HEAD {
        BodyFraming::Empty
    } else {
        BodyFraming::Length(plain.length)
    };
    ResponseFraming {
        body,
        keep_alive: true,
    }
}

/// Whether a message of `version` with these fields leaves the connection open: `close`
/// anywhere in Connection closes it; HTTP/1.0 stays open only with `keep-alive`.
pub(crate) fn connection_keep_alive(version: Version, headers: &HeaderMap) -> bool {
    let mut close = false;
    let mut keep_alive = false;
    for value in headers.get_all(header::CONNECTION) {
        for token in value.as_bytes().split(|&b| b == b',') {
            let token = token.trim_ascii();
            close |= token.eq_ignore_ascii_case(b"close");
            keep_alive |= token.eq_ignore_ascii_case(b"keep-alive");
        }
    }
    !close && (version == Version::HTTP_11 || keep_alive)
}

fn ends_with_chunked(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::TRANSFER_ENCODING)
        .iter()
        .next_back()
        .and_then(|v| v.as_bytes().split(|&b| b == b',').next_back())
        .is_some_and(|last| last.trim_ascii().eq_ignore_ascii_case(b"chunked"))
}

/// The Content-Length, when present; repeated fields must agree.
fn content_length(headers: &HeaderMap) -> Result<Option<u64>, UpstreamError> {
    let mut length = None;
    for value in headers.get_all(header::CONTENT_LENGTH) {
        for item in value.as_bytes().split(|&b| b == b',') {
            let parsed = parse_decimal(item.trim_ascii())
                .ok_or_else(|| UpstreamError::BadResponse("invalid Content-Length".into()))?;
            if length.is_some_and(|l| l != parsed) {
                return Err(UpstreamError::BadResponse(
                    "differing Content-Length values".into(),
                ));
            }
            length = Some(parsed);
        }
    }
    Ok(length)
}

/// Where the chunked decoder is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Chunked {
    /// Expecting a chunk-size line.
    Size,
    /// This many data bytes of the current chunk are still to come.
    Data(u64),
    /// The CRLF after a chunk's data.
    DataEnd,
    /// Trailer fields after the last chunk; `seen` bytes so far.
    Trailers { seen: usize },
    /// The body ended.
    Done,
}

/// One step of chunked decoding over `buf`.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Decoded {
    /// Body data, removed from `buf`.
    Data(Bytes),
    /// `buf` holds no complete next element: read more.
    NeedMore,
    /// The last chunk and the trailers were consumed.
    End,
}

impl Chunked {
    /// Advance over `buf` until data is available, more bytes are needed or the body ended.
    pub(crate) fn decode(&mut self, buf: &mut BytesMut) -> Result<Decoded, UpstreamError> {
        loop {
            match *self {
                Chunked::Size => {
                    let Some(line) = take_line(buf, MAX_CHUNK_LINE)? else {
                        return Ok(Decoded::NeedMore);
                    };
                    let size = parse_chunk_size(&line)?;
                    *self = if size == 0 {
                        Chunked::Trailers { seen: 0 }
                    } else {
                        Chunked::Data(size)
                    };
                }
                Chunked::Data(remaining) => {
                    if buf.is_empty() {
                        return Ok(Decoded::NeedMore);
                    }
                    let n = usize::try_from(remaining).map_or(buf.len(), |r| r.min(buf.len()));
                    let left = remaining - n as u64;
                    *self = if left == 0 {
                        Chunked::DataEnd
                    } else {
                        Chunked::Data(left)
                    };
                    return Ok(Decoded::Data(buf.split_to(n).freeze()));
                }
                Chunked::DataEnd => {
                    if buf.len() < 2 {
                        return Ok(Decoded::NeedMore);
                    }
                    if &buf[..2] != b"\r\n" {
                        return Err(UpstreamError::BadResponse(
                            "chunk data not followed by CRLF".into(),
                        ));
                    }
                    let _ = buf.split_to(2);
                    *self = Chunked::Size;
                }
                Chunked::Trailers { seen } => {
                    let Some(line) = take_line(buf, MAX_TRAILER_BYTES - seen)? else {
                        return Ok(Decoded::NeedMore);
                    };
                    if line.is_empty() {
                        *self = Chunked::Done;
                        return Ok(Decoded::End);
                    }
                    *self = Chunked::Trailers {
                        seen: seen + line.len() + 2,
                    };
                }
                Chunked::Done => return Ok(Decoded::End),
            }
        }
    }
}

/// Remove one CRLF-terminated line (without the CRLF) from `buf`.
fn take_line(buf: &mut BytesMut, limit: usize) -> Result<Option<BytesMut>, UpstreamError> {
    match buf.iter().position(|&b| b == b'\n') {
        Some(end) => {
            if end == 0 || buf[end - 1] != b'\r' {
                return Err(UpstreamError::BadResponse("line not ended by CRLF".into()));
            }
            let mut line = buf.split_to(end + 1);
            line.truncate(end - 1);
            Ok(Some(line))
        }
        None if buf.len() > limit => Err(UpstreamError::BadResponse(
            "chunk line or trailers too long".into(),
        )),
        None => Ok(None),
    }
}

fn parse_chunk_size(line: &[u8]) -> Result<u64, UpstreamError> {
    let digits = line
        .split(|&b| b == b';')
        .next()
        .unwrap_or_default()
        .trim_ascii();
    let valid =
        !digits.is_empty() && digits.len() <= 16 && digits.iter().all(u8::is_ascii_hexdigit);
    let size = valid
        .then(|| std::str::from_utf8(digits).ok())
        .flatten()
        .and_then(|s| u64::from_str_radix(s, 16).ok());
    size.ok_or_else(|| UpstreamError::BadResponse("invalid chunk size".into()))
}

#[cfg(test)]
#[path = "../tests/upstream_codec.rs"]
mod tests;
