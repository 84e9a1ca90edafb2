//! The simple request: the shape nearly all plain HTTP/1 traffic has, taken byte by byte.
//!
//! A request is simple when it is `GET` or `HEAD` with an origin-form target, exactly one
//! Host, no body and no field that changes framing or the connection beyond `keep-alive` or
//! `close`, from a peer whose forwarding fields are not trusted, and routed to an app (no
//! alias redirect, no HTTPS redirect, no ACME challenge). Its backend head is written here,
//! straight from the parsed head: no `http::Request`, no header map, no per-request
//! allocation.
//!
//! Everything else, including every request whose framing could be read two ways, goes the
//! general way (`http1::build_request`, `handler::route`), where the smuggling checks live.
//! What the backend gets from either way is the same request: the client's end-to-end fields
//! with lower-case names, then X-Forwarded-For, Forwarded, X-Forwarded-Proto and
//! X-Forwarded-Host (the differential fuzz test, integration-tests/proxy_fuzz.rs, holds both).

use std::sync::Arc;

use bytes::{BufMut, Bytes, BytesMut};
use http::{Method, Version};

use super::handler::{AccessLine, ACME_PREFIX};
use super::headers::{is_field_value, lowercase_field_kind, ClientInfo, FieldKind};
use super::routes::{normalize_host, HostMatch, RoutedApp};
use super::server::Shared;
use super::upstream::write_field;

/// The longest field name this path classifies from a stack copy; every name it treats
/// specially is shorter, so a longer one is end-to-end unless it has a `_`.
const SHORT_NAME: usize = 32;

/// A simple request, ready to be forwarded.
pub(crate) struct Simple {
    pub(crate) app: Arc<RoutedApp>,
    pub(crate) method: Method,
    pub(crate) version: Version,
    /// The client keeps the connection open after the response.
    pub(crate) keep_alive: bool,
    /// The request as the backend gets it.
    pub(crate) backend_head: Bytes,
    pub(crate) log: Option<Box<AccessLine>>,
}

/// `req`, parsed from exactly `head`, as a simple request for `client`, its backend head
/// written into `out` (left empty when the request is not simple).
pub(crate) fn take(
    req: &httparse::Request<'_, '_>,
    head: &Bytes,
    shared: &Shared,
    client: &ClientInfo,
    out: &mut BytesMut,
) -> Option<Simple> {
    let taken = write_backend_head(req, client, out).and_then(|written| {
        let app = route(shared, client, written.host)?;
        let log = AccessLine::begin_simple(
            shared.access_log.as_ref(),
            written.method.clone(),
            head.slice_ref(written.target),
            head.slice_ref(written.host),
        )
        .ok()?;
        Some(Simple {
            app,
            method: written.method,
            version: written.version,
            keep_alive: written.keep_alive,
            backend_head: out.split().freeze(),
            log,
        })
    });
    if taken.is_none() {
        out.clear();
    }
    taken
}

/// What writing the backend head found out about the request.
struct Written<'h> {
    method: Method,
    version: Version,
    keep_alive: bool,
    target: &'h [u8],
    host: &'h [u8],
}

/// The app `host` routes to; `None` when the proxy answers itself (no such host, an alias,
/// an HTTPS redirect).
fn route(shared: &Shared, client: &ClientInfo, host: &[u8]) -> Option<Arc<RoutedApp>> {
    // `HeaderValue::to_str`'s rule: visible ASCII (and tab) only.
    if !host
        .iter()
        .all(|&b| b == b'\t' || (b' '..=b'~').contains(&b))
    {
        return None;
    }
    let host = std::str::from_utf8(host).ok()?;
    let name = normalize_host(host);
    let table = shared.routes.snapshot();
    let Some(HostMatch::App(app)) = table.lookup_normalized(&name) else {
        return None;
    };
    // Only with TLS hooks can a host have a certificate to redirect to.
    let redirect = !client.https && shared.hooks.is_some() && shared.has_certificate(&name);
    (!redirect).then(|| Arc::clone(app))
}

/// Write the backend's head for `req` into `out` while checking that it is simple.
fn write_backend_head<'h>(
    req: &httparse::Request<'_, 'h>,
    client: &ClientInfo,
    out: &mut BytesMut,
) -> Option<Written<'h>> {
    let method = match req.method? {
        "GET" => Method::GET,
        "HEAD" => Method::HEAD,
        _ => return None,
    };
    let version = match req.version? {
        0 => Version::HTTP_10,
        1 => Version::HTTP_11,
        _ => return None,
    };
    let target = req.path?.as_bytes();
    if !is_plain_origin_form(target)
        || (!client.https && target.starts_with(ACME_PREFIX.as_bytes()))
    {
        return None;
    }
    out.reserve(512);
    out.put_slice(method.as_str().as_bytes());
    out.put_u8(b' ');
    out.put_slice(target);
    out.put_slice(b" HTTP/1.1\r\n");
    let mut host = None;
    let mut connection = ConnectionTokens::default();
    for field in req.headers.iter() {
        let value = field.value;
        if !is_field_value(value) {
            return None;
        }
        match classify(field.name.as_bytes()) {
            Class::Host => {
                if host.replace(value).is_some() {
                    return None;
                }
                write_field(out, b"host", value);
            }
            Class::Connection => connection.see(value)?,
            Class::General => return None,
            Class::Forwarding if client.peer_trusted => return None,
            Class::Forwarding | Class::Dropped => {}
            Class::Passed(lower) => write_field(out, lower.as_slice(), value),
            Class::PassedLong => {
                out.extend(field.name.bytes().map(|b| b.to_ascii_lowercase()));
                out.put_slice(b": ");
                out.put_slice(value);
                out.put_slice(b"\r\n");
            }
        }
    }
    let host = host?;
    let hop = &client.hop;
    write_field(out, b"x-forwarded-for", hop.peer.as_bytes());
    write_field(out, b"forwarded", hop.forwarded.as_bytes());
    write_field(out, b"x-forwarded-proto", hop.proto.as_bytes());
    write_field(out, b"x-forwarded-host", host);
    out.put_slice(b"\r\n");
    Some(Written {
        method,
        version,
        keep_alive: connection.keep_alive(version),
        target,
        host,
    })
}

/// The Connection tokens of a simple request: `keep-alive` and `close` only.
#[derive(Default)]
struct ConnectionTokens {
    close: bool,
    keep_alive: bool,
}

impl ConnectionTokens {
    /// `None` when a token names anything else (a field to drop, an upgrade): the general
    /// path handles that.
    fn see(&mut self, value: &[u8]) -> Option<()> {
        for token in value.split(|&b| b == b',') {
            let token = token.trim_ascii();
            if token.eq_ignore_ascii_case(b"close") {
                self.close = true;
            } else if token.eq_ignore_ascii_case(b"keep-alive") {
                self.keep_alive = true;
            } else if !token.is_empty() {
                return None;
            }
        }
        Some(())
    }

    /// `upstream::connection_keep_alive`'s rule.
    fn keep_alive(&self, version: Version) -> bool {
        !self.close && (version == Version::HTTP_11 || self.keep_alive)
    }
}

/// A field name, lower-cased, of at most [`SHORT_NAME`] bytes.
struct ShortName {
    bytes: [u8; SHORT_NAME],
    len: usize,
}

impl ShortName {
    fn as_slice(&self) -> &[u8] {
        &self.bytes[..self.len]
    }
}

/// What this path does with a field.
enum Class {
    Host,
    Connection,
    /// A field only the general path handles: framing, `Expect`, the other hop-by-hop ones.
    General,
    /// A forwarding field: dropped from untrusted peers; trusted ones take the general path.
    Forwarding,
    /// Left out (a name with `_`).
    Dropped,
    /// Passed on, with its lower-case name.
    Passed(ShortName),
    /// Passed on; the name is longer than [`SHORT_NAME`].
    PassedLong,
}

fn classify(name: &[u8]) -> Class {
    if name.len() > SHORT_NAME {
        return if name.contains(&b'_') {
            Class::Dropped
        } else {
            Class::PassedLong
        };
    }
    let mut lower = ShortName {
        bytes: [0; SHORT_NAME],
        len: name.len(),
    };
    for (to, from) in lower.bytes.iter_mut().zip(name) {
        *to = from.to_ascii_lowercase();
    }
    match lower.as_slice() {
        b"host" => return Class::Host,
        b"connection" => return Class::Connection,
        b"expect" => return Class::General,
        _ => {}
    }
    match lowercase_field_kind(lower.as_slice()) {
        FieldKind::HopByHop | FieldKind::Framing => Class::General,
        FieldKind::Forwarding => Class::Forwarding,
        FieldKind::Underscore => Class::Dropped,
        FieldKind::EndToEnd => Class::Passed(lower),
    }
}

/// An origin-form target (RFC 9112 §3.2.1) made of unreserved, sub-delim, `:@/?%` characters
/// only: what every HTTP/1.1 parser reads the same way. Anything else takes the general path.
fn is_plain_origin_form(target: &[u8]) -> bool {
    target.first() == Some(&b'/') && target.iter().all(|&b| PLAIN_TARGET[usize::from(b)])
}

static PLAIN_TARGET: [bool; 256] = {
    let mut table = [false; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        table[b] = c.is_ascii_alphanumeric()
            || matches!(
                c,
                b'-' | b'.'
                    | b'_'
                    | b'~'
                    | b'!'
                    | b'$'
                    | b'&'
                    | b'\''
                    | b'('
                    | b')'
                    | b'*'
                    | b'+'
                    | b','
                    | b';'
                    | b'='
                    | b':'
                    | b'@'
                    | b'/'
                    | b'?'
                    | b'%'
            );
        b += 1;
    }
    table
};

#[cfg(test)]
#[path = "tests/simple.rs"]
mod tests;
