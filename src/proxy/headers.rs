//! Header hygiene in both directions: hop-by-hop and Connection-named headers stripped,
//! X-Forwarded-* set from what the proxy saw, X-Real-IP removed, HTTP/2 requests turned into
//! valid HTTP/1.1 (Host from :authority, cookies joined, origin-form URI), and the framing
//! checks that keep request smuggling out.

use std::net::IpAddr;
use std::sync::Arc;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode, Uri, Version};

/// Hop-by-hop headers (RFC 9110 §7.6.1 plus the legacy ones proxies still see), as parsed
/// names so removing them needs no parsing per request.
static HOP_BY_HOP: [HeaderName; 9] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
];

static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");

/// Why a request is refused before anything is forwarded.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub(crate) enum FramingError {
    #[error("request has both Content-Length and Transfer-Encoding")]
    LengthAndChunked,
    #[error("Transfer-Encoding must be exactly `chunked`")]
    BadTransferEncoding,
    #[error("Content-Length is not a single valid number")]
    BadContentLength,
    #[error("Content-Length is larger than {MAX_CONTENT_LENGTH}, the most a backend accepts")]
    ContentLengthTooLarge,
    #[error("HTTP/1.1 request without Host header")]
    MissingHost,
    #[error("request has more than one Host header")]
    DuplicateHost,
    #[error("the Host header differs from the host in the request target")]
    HostMismatch,
}

/// The largest request body length passed on: what a signed 64-bit length holds (nginx's
/// `off_t`, Go's `ParseInt`). hyper accepts up to 2^64 - 3; a backend would refuse more, or read
/// it differently.
pub(crate) const MAX_CONTENT_LENGTH: u64 = i64::MAX as u64;

/// Reject requests whose framing or host could be read two ways by the proxy and the backend.
/// (hyper already rejects obs-fold, differing duplicate Content-Length and TE on HTTP/1.0;
/// `guard` turns what hyper would smooth over, such as Content-Length beside
/// Transfer-Encoding, into heads hyper refuses.)
pub(crate) fn check_framing<B>(req: &Request<B>) -> Result<(), FramingError> {
    let headers = req.headers();
    let mut te = headers.get_all(header::TRANSFER_ENCODING).iter();
    if let Some(first) = te.next() {
        if headers.contains_key(header::CONTENT_LENGTH) {
            return Err(FramingError::LengthAndChunked);
        }
        let single_chunked = te.next().is_none()
            && first
                .as_bytes()
                .trim_ascii()
                .eq_ignore_ascii_case(b"chunked");
        if !single_chunked {
            return Err(FramingError::BadTransferEncoding);
        }
    }
    let mut cl = headers.get_all(header::CONTENT_LENGTH).iter();
    if let Some(first) = cl.next() {
        let valid = cl.next().is_none()
            && !first.is_empty()
            && first.as_bytes().iter().all(u8::is_ascii_digit);
        if !valid {
            return Err(FramingError::BadContentLength);
        }
        if parse_decimal(first.as_bytes()).is_none_or(|len| len > MAX_CONTENT_LENGTH) {
            return Err(FramingError::ContentLengthTooLarge);
        }
    }
    check_host(req)
}

/// `digits` as a number: ASCII digits only (no sign, no space), at most `u64::MAX`.
pub(crate) fn parse_decimal(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() {
        return None;
    }
    // By hand: `str::parse` would first check UTF-8 and signs it never needs here.
    digits.iter().try_fold(0u64, |n, &b| {
        let digit = b.checked_sub(b'0').filter(|d| *d <= 9)?;
        n.checked_mul(10)?.checked_add(u64::from(digit))
    })
}

/// One Host at most, and the same host as an absolute-form target or HTTP/2 `:authority`
/// names (RFC 9112 §3.2, RFC 9113 §8.3.1): otherwise the proxy could route by one host while
/// the backend reads the other.
fn check_host<B>(req: &Request<B>) -> Result<(), FramingError> {
    let mut hosts = req.headers().get_all(header::HOST).iter();
    let host = hosts.next();
    if hosts.next().is_some() {
        return Err(FramingError::DuplicateHost);
    }
    match (host, req.uri().authority()) {
        (None, None) if req.version() == Version::HTTP_11 => Err(FramingError::MissingHost),
        (Some(host), Some(authority))
            if !host
                .as_bytes()
                .trim_ascii()
                .eq_ignore_ascii_case(authority.as_str().as_bytes()) =>
        {
            Err(FramingError::HostMismatch)
        }
        _ => Ok(()),
    }
}

/// The requested host as a header value: a cheap clone of Host for HTTP/1.1 origin-form
/// requests, built from the URI authority for HTTP/2 and absolute-form requests.
pub(crate) fn request_host_value<B>(req: &Request<B>) -> Option<HeaderValue> {
    match req.uri().authority() {
        Some(a) => HeaderValue::from_str(a.as_str()).ok(),
        None => req.headers().get(header::HOST).cloned(),
    }
}

/// True when the client asks to switch protocols (HTTP/1.1 `Connection: upgrade`).
/// `Upgrade: h2c` is not passed on: the backends speak HTTP/1.1 and the proxy does HTTP/2.
pub(crate) fn upgrade_requested<B>(req: &Request<B>) -> bool {
    let protocol = req
        .headers()
        .get(header::UPGRADE)
        .map(HeaderValue::as_bytes);
    req.version() == Version::HTTP_11
        && protocol.is_some_and(|p| !p.trim_ascii().eq_ignore_ascii_case(b"h2c"))
        && connection_has_token(req.headers(), "upgrade")
}

/// True for a WebSocket opened over HTTP/2 (RFC 8441: extended CONNECT, `:protocol` websocket).
pub(crate) fn websocket_over_http2<B>(req: &Request<B>) -> bool {
    req.version() == Version::HTTP_2
        && req.method() == Method::CONNECT
        && req
            .extensions()
            .get::<hyper::ext::Protocol>()
            .is_some_and(|p| p.as_str().eq_ignore_ascii_case("websocket"))
}

/// Rewrites an RFC 8441 WebSocket request into the HTTP/1.1 handshake the backend expects
/// (RFC 8441 §5): GET with `Upgrade: websocket` and a fresh `Sec-WebSocket-Key`; the client's
/// `Sec-WebSocket-Version`, protocols and extensions pass on unchanged.
pub(crate) fn websocket_as_http11_handshake<B>(req: &mut Request<B>) {
    use base64::Engine as _;
    *req.method_mut() = Method::GET;
    let key = base64::engine::general_purpose::STANDARD.encode(rand::random::<[u8; 16]>());
    let headers = req.headers_mut();
    headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    if let Ok(key) = HeaderValue::from_str(&key) {
        headers.insert(header::SEC_WEBSOCKET_KEY, key);
    }
}

fn connection_has_token(headers: &HeaderMap, token: &str) -> bool {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

/// Remove hop-by-hop headers and every header the Connection header names.
pub(crate) fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // One pass over the few fields a message has is cheaper than nine hash lookups, and most
    // messages carry none of them.
    if !headers.keys().any(|name| HOP_BY_HOP.contains(name)) {
        return;
    }
    if headers.contains_key(header::CONNECTION) {
        let named: Vec<HeaderName> = headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|t| HeaderName::from_bytes(t.trim().as_bytes()).ok())
            .filter(|n| n != header::HOST)
            .collect();
        for name in named {
            headers.remove(name);
        }
    }
    for name in &HOP_BY_HOP {
        headers.remove(name);
    }
}

/// What the proxy knows about the client connection.
#[derive(Debug, Clone)]
pub(crate) struct ClientInfo {
    /// This hop's forwarding values, rendered once per connection and shared by its requests.
    pub(crate) hop: Arc<HopFields>,
    pub(crate) peer_trusted: bool,
    pub(crate) https: bool,
}

/// The values this hop adds to a forwarded request.
#[derive(Debug)]
pub(crate) struct HopFields {
    /// The peer's address, for X-Forwarded-For.
    pub(crate) peer: HeaderValue,
    /// This hop's `Forwarded` element (RFC 7239).
    pub(crate) forwarded: HeaderValue,
    /// X-Forwarded-Proto.
    pub(crate) proto: HeaderValue,
}

impl ClientInfo {
    pub(crate) fn new(peer: IpAddr, peer_trusted: bool, https: bool) -> Self {
        let peer = peer.to_canonical();
        let proto = if https { "https" } else { "http" };
        // IPv6 nodes are quoted and bracketed in Forwarded (RFC 7239 §6).
        let element = match peer {
            IpAddr::V4(v4) => format!("for={v4};proto={proto}"),
            IpAddr::V6(v6) => format!("for=\"[{v6}]\";proto={proto}"),
        };
        // An IP address always renders to a valid header value.
        let valid = |text: &str| {
            HeaderValue::from_str(text).unwrap_or_else(|_| HeaderValue::from_static("unknown"))
        };
        let hop = HopFields {
            peer: valid(&peer.to_string()),
            forwarded: valid(&element),
            proto: HeaderValue::from_static(proto),
        };
        Self {
            hop: Arc::new(hop),
            peer_trusted,
            https,
        }
    }
}

/// The fields the proxy sets on every request it forwards. The upstream encoder writes them
/// after the client's own fields, from which it leaves out the hop-by-hop ones, the framing
/// ones, those the Connection header names and the forwarding ones of untrusted peers (see
/// [`backend_fields`]): no header map is changed on the way.
#[derive(Debug)]
pub(crate) struct Forwarding {
    hop: Arc<HopFields>,
    /// A trusted peer's X-Forwarded-For and Forwarded with this hop appended; kept apart
    /// (boxed) so the common request carries a pointer, not two more values.
    chains: Option<Box<Chains>>,
    /// X-Forwarded-Host; `None` when a trusted peer sent its own.
    host: Option<HeaderValue>,
    /// X-Forwarded-Proto is written: no trusted peer sent its own.
    write_proto: bool,
    /// The client's forwarding fields pass on (a trusted peer's).
    keep_client_fields: bool,
    /// The `Upgrade` protocol passed on (with `Connection: upgrade`).
    upgrade: Option<HeaderValue>,
}

#[derive(Debug)]
struct Chains {
    forwarded_for: HeaderValue,
    forwarded: HeaderValue,
}

static UPGRADE_TOKEN: HeaderValue = HeaderValue::from_static("upgrade");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

/// Rewrite an HTTP/2 or absolute-form client request into a valid HTTP/1.1 one (Host from the
/// URI, cookies joined, origin-form) and say what the proxy adds for the backend.
pub(crate) fn prepare_request<B>(
    req: &mut Request<B>,
    client: &ClientInfo,
    host: &HeaderValue,
    upgrade: bool,
) -> Forwarding {
    let trusted = client.peer_trusted;
    let theirs = |name: &HeaderName| trusted && req.headers().contains_key(name);
    let chains = (theirs(&X_FORWARDED_FOR) || theirs(&header::FORWARDED)).then(|| {
        Box::new(Chains {
            forwarded_for: chained(req.headers(), &X_FORWARDED_FOR, &client.hop.peer),
            forwarded: chained(req.headers(), &header::FORWARDED, &client.hop.forwarded),
        })
    });
    let forwarding = Forwarding {
        hop: Arc::clone(&client.hop),
        chains,
        host: (!theirs(&X_FORWARDED_HOST)).then(|| host.clone()),
        write_proto: !theirs(&X_FORWARDED_PROTO),
        keep_client_fields: trusted,
        upgrade: upgrade
            .then(|| req.headers().get(header::UPGRADE).cloned())
            .flatten(),
    };
    let http2 = req.version() == Version::HTTP_2;
    // HTTP/2 and absolute-form requests name the host in the URI; the backend gets it as Host.
    if req.uri().authority().is_some() {
        req.headers_mut().insert(header::HOST, host.clone());
    }
    if http2 {
        join_cookies(req.headers_mut());
    }
    to_origin_form(req);
    *req.version_mut() = Version::HTTP_11;
    forwarding
}

/// The header fields the backend gets, in order: the client's own minus the hop-by-hop and
/// framing fields (the proxy writes the framing from what it parsed), those its Connection
/// header names, names with `_` and, from untrusted peers, every forwarding field; then the
/// proxy's own.
pub(crate) fn backend_fields<'a>(
    headers: &'a HeaderMap,
    forwarding: &'a Forwarding,
) -> impl Iterator<Item = (&'a str, &'a HeaderValue)> + 'a {
    let names_fields = connection_names_end_to_end_fields(headers);
    let keep_forwarding = forwarding.keep_client_fields;
    let own = headers
        .iter()
        .filter(move |(name, _)| passes_to_backend(name, headers, names_fields, keep_forwarding))
        .map(|(name, value)| (name.as_str(), value));
    let hop = &forwarding.hop;
    let (forwarded_for, forwarded) = match forwarding.chains.as_deref() {
        Some(chains) => (&chains.forwarded_for, &chains.forwarded),
        None => (&hop.peer, &hop.forwarded),
    };
    let set = [("x-forwarded-for", forwarded_for), ("forwarded", forwarded)];
    let proto = forwarding
        .write_proto
        .then_some(("x-forwarded-proto", &hop.proto));
    let host = forwarding.host.as_ref().map(|h| ("x-forwarded-host", h));
    let upgrade = forwarding
        .upgrade
        .iter()
        .flat_map(|protocol| [("upgrade", protocol), ("connection", &UPGRADE_TOKEN)]);
    own.chain(set).chain(proto).chain(host).chain(upgrade)
}

/// What becomes of a client's header field on the way to the backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FieldKind {
    /// Meant for this connection only (RFC 9110 §7.6.1 and the legacy ones proxies still see).
    HopByHop,
    /// Request framing: written by the proxy from the length it parsed, never copied.
    Framing,
    /// Says who the client is or what it asked for before a proxy: forgeable by any client,
    /// so only a trusted peer's pass on. X-Forwarded-For and Forwarded get this hop appended.
    Forwarding,
    /// A name with `_`: frameworks (Rack, CGI, PHP) read `X_Forwarded_For` as the real field
    /// (nginx's `underscores_in_headers off`).
    Underscore,
    EndToEnd,
}

/// The kind of `name`.
pub(crate) fn field_kind(name: &HeaderName) -> FieldKind {
    lowercase_field_kind(name.as_str().as_bytes())
}

/// The kind of the field named `name`, which is in lower case. A string match: the compiler
/// turns it into a length switch and a few compares, cheaper than looking the name up in a
/// table per field.
pub(crate) fn lowercase_field_kind(name: &[u8]) -> FieldKind {
    match name {
        b"connection"
        | b"keep-alive"
        | b"proxy-connection"
        | b"te"
        | b"trailer"
        | b"transfer-encoding"
        | b"upgrade"
        | b"proxy-authenticate"
        | b"proxy-authorization" => FieldKind::HopByHop,
        b"content-length" => FieldKind::Framing,
        b"forwarded"
        | b"x-forwarded-for"
        | b"x-forwarded-proto"
        | b"x-forwarded-host"
        | b"x-forwarded-port"
        | b"x-forwarded-prefix"
        | b"x-forwarded-server"
        | b"x-forwarded-ssl"
        | b"x-forwarded-scheme"
        | b"x-real-ip"
        | b"true-client-ip"
        | b"cf-connecting-ip"
        | b"x-client-ip"
        | b"x-cluster-client-ip"
        | b"x-original-url"
        | b"x-rewrite-url"
        | b"x-original-forwarded-for" => FieldKind::Forwarding,
        other if other.contains(&b'_') => FieldKind::Underscore,
        _ => FieldKind::EndToEnd,
    }
}

fn passes_to_backend(
    name: &HeaderName,
    headers: &HeaderMap,
    names_fields: bool,
    keep_forwarding: bool,
) -> bool {
    match field_kind(name) {
        FieldKind::HopByHop | FieldKind::Framing | FieldKind::Underscore => false,
        // The proxy writes these two itself, with this hop appended.
        FieldKind::Forwarding => {
            keep_forwarding && name != X_FORWARDED_FOR && name != header::FORWARDED
        }
        // Connection may not remove Host: the proxy routed by it, the backend must see it.
        FieldKind::EndToEnd => {
            name == header::HOST || !(names_fields && connection_has_token(headers, name.as_str()))
        }
    }
}

/// True for a hop-by-hop field name, in any case.
pub(crate) fn is_hop_by_hop(name: &[u8]) -> bool {
    // `HOP_BY_HOP` as bytes: a `HeaderName`'s text is a table lookup per compare.
    const NAMES: [&[u8]; 9] = [
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
        b"proxy-authenticate",
        b"proxy-authorization",
    ];
    NAMES.iter().any(|h| h.eq_ignore_ascii_case(name))
}

/// `HeaderValue`'s rule for a field value: no control characters but tab, no DEL.
pub(crate) fn is_field_value(value: &[u8]) -> bool {
    // No early exit: the loop vectorizes, and values are short.
    value.iter().fold(true, |valid, &b| {
        valid & ((b == b'\t') | ((b >= b' ') & (b != 0x7f)))
    })
}

/// True when Connection names a field other than the hop-by-hop ones (which never pass
/// anyway): only then is every field checked against its tokens. Browsers send
/// `Connection: keep-alive`, which needs no per-field check.
fn connection_names_end_to_end_fields(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .flat_map(|v| v.as_bytes().split(|&b| b == b','))
        .map(<[u8]>::trim_ascii)
        .any(|token| !token.is_empty() && !is_hop_by_hop(token))
}

/// `ours` after the values of `name` the (trusted) peer sent: `a, b, ours`.
fn chained(headers: &HeaderMap, name: &HeaderName, ours: &HeaderValue) -> HeaderValue {
    let mut chain: Vec<&[u8]> = headers
        .get_all(name)
        .iter()
        .map(HeaderValue::as_bytes)
        .collect();
    chain.push(ours.as_bytes());
    HeaderValue::from_bytes(&chain.join(&b", "[..])).unwrap_or_else(|_| ours.clone())
}

/// HTTP/2 may split cookies over several fields; HTTP/1.1 wants one (RFC 9113 §8.2.3).
fn join_cookies(headers: &mut HeaderMap) {
    let mut cookies = headers.get_all(header::COOKIE).iter();
    if cookies.next().is_none() || cookies.next().is_none() {
        return;
    }
    let joined: Vec<&str> = headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    if let Ok(v) = HeaderValue::from_str(&joined.join("; ")) {
        headers.insert(header::COOKIE, v);
    }
}

fn to_origin_form<B>(req: &mut Request<B>) {
    if req.uri().scheme().is_none() && req.uri().authority().is_none() {
        return;
    }
    let path = req.uri().path_and_query().map_or("/", |p| p.as_str());
    if let Ok(uri) = path.parse::<Uri>() {
        *req.uri_mut() = uri;
    }
}

/// The backend's 101 as the answer to an RFC 8441 request: 200, and none of HTTP/1.1's
/// handshake fields (the HTTP/2 stream itself becomes the tunnel).
pub(crate) fn prepare_switch_over_http2<B>(resp: &mut Response<B>) {
    *resp.status_mut() = StatusCode::OK;
    strip_hop_by_hop(resp.headers_mut());
    resp.headers_mut().remove(header::SEC_WEBSOCKET_ACCEPT);
}

/// Clean a backend's response headers for the client.
pub(crate) fn prepare_response(headers: &mut HeaderMap, switching_protocols: bool) {
    let upgrade = if switching_protocols {
        headers.get(header::UPGRADE).cloned()
    } else {
        None
    };
    strip_hop_by_hop(headers);
    if let Some(protocol) = upgrade {
        headers.insert(header::UPGRADE, protocol);
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    }
}

#[cfg(test)]
#[path = "tests/headers.rs"]
mod tests;
