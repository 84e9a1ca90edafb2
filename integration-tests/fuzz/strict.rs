//! A strict HTTP/1.1 request parser (RFC 9112), used twice by the proxy fuzz test: as the
//! reference model of what a client sent, and as the recording backend's parser of what the
//! proxy forwarded. It accepts only the unambiguous subset: CRLF line ends, no obs-fold, no
//! bare CR/LF/NUL, token methods and names, one Host, and framing by exactly one
//! Content-Length of digits or by `Transfer-Encoding: chunked` alone.
//!
//! As the client's reference it also allows what a server may accept when it has one reading
//! only: a bare LF ending a head line and empty lines before a request (RFC 9112 §2.2),
//! repeated identical Content-Length values (§6.3), whitespace around a chunk size (§7.1.1
//! BWS), any chunk extension (the proxy drops them), and an absolute-form target without Host.
//! A request whose framing is clear but that a server must not act on (Host missing, repeated
//! or invalid; a bad target form) is parsed with `reject` set, and the stream goes on after it.

/// One request read strictly.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Req {
    pub method: Vec<u8>,
    /// As on the wire.
    pub target: Vec<u8>,
    /// 0 for HTTP/1.0, 1 for HTTP/1.1.
    pub minor: u8,
    /// Names lowercased, values without surrounding whitespace, in order.
    pub fields: Vec<(Vec<u8>, Vec<u8>)>,
    pub body: Vec<u8>,
    pub chunked: bool,
    /// The connection stays open for another request after this one.
    pub keep_alive: bool,
    /// Why a proxy must answer this request itself instead of forwarding it.
    pub reject: Option<String>,
}

impl Req {
    pub fn values(&self, name: &str) -> Vec<&[u8]> {
        self.fields
            .iter()
            .filter(|(n, _)| n == name.as_bytes())
            .map(|(_, v)| v.as_slice())
            .collect()
    }

    fn has_token(&self, field: &str, token: &str) -> bool {
        self.values(field).iter().any(|v| {
            v.split(|&b| b == b',')
                .any(|t| t.trim_ascii().eq_ignore_ascii_case(token.as_bytes()))
        })
    }

    /// The host the request is for: the authority of an absolute-form target, else Host.
    pub fn effective_host(&self) -> Vec<u8> {
        match absolute_parts(&self.target) {
            Some((authority, _)) => authority.to_vec(),
            None => self
                .values("host")
                .first()
                .map(|h| h.to_vec())
                .unwrap_or_default(),
        }
    }

    /// The target as an origin-form request to a backend carries it. A fragment is no part
    /// of a request target (RFC 9112 §3.2); like nginx, the proxy drops it.
    pub fn origin_target(&self) -> Vec<u8> {
        let target = match absolute_parts(&self.target) {
            Some((_, path)) if path.is_empty() || path.starts_with(b"#") => b"/".to_vec(),
            Some((_, path)) => path.to_vec(),
            None => self.target.clone(),
        };
        match target.iter().position(|&b| b == b'#') {
            Some(hash) => target[..hash].to_vec(),
            None => target,
        }
    }

    pub fn is_head(&self) -> bool {
        self.method == b"HEAD"
    }

    pub fn summary(&self) -> String {
        format!(
            "{} {} host={} body={}",
            String::from_utf8_lossy(&self.method),
            String::from_utf8_lossy(&self.target),
            String::from_utf8_lossy(&self.effective_host()),
            self.body.len()
        )
    }
}

/// `(authority, path-and-query)` of an absolute-form target.
fn absolute_parts(target: &[u8]) -> Option<(&[u8], &[u8])> {
    let sep = target.windows(3).position(|w| w == b"://")?;
    let rest = &target[sep + 3..];
    let end = rest
        .iter()
        .position(|&b| b == b'/' || b == b'?')
        .unwrap_or(rest.len());
    Some((&rest[..end], &rest[end..]))
}

/// The result of parsing one request at the front of a buffer.
#[derive(Debug)]
pub enum Parse {
    /// The request and how many bytes it took.
    Done(Req, usize),
    Incomplete,
    Invalid(String),
}

/// How a byte stream ended after its complete requests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Tail {
    /// Nothing after the last request.
    Empty,
    /// A request that is not complete yet.
    Incomplete,
    /// The first invalid request, and why.
    Invalid(String),
    /// Bytes after a request that closes the connection (never read by a server).
    AfterClose,
}

/// Who reads: a client's stream may start with empty lines (RFC 9112 §2.2), a backend's may not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Client,
    Backend,
}

/// Requests of `buf` in order, up to the first one that is not complete and valid.
pub fn parse_stream(buf: &[u8], side: Side) -> (Vec<Req>, Tail) {
    let mut reqs = Vec::new();
    let mut at = 0;
    loop {
        if at == buf.len() {
            return (reqs, Tail::Empty);
        }
        match parse_one(&buf[at..], side) {
            Parse::Done(req, used) => {
                at += used;
                let keep_alive = req.keep_alive;
                reqs.push(req);
                if !keep_alive {
                    let tail = if at == buf.len() {
                        Tail::Empty
                    } else {
                        Tail::AfterClose
                    };
                    return (reqs, tail);
                }
            }
            Parse::Incomplete => return (reqs, Tail::Incomplete),
            Parse::Invalid(why) => return (reqs, Tail::Invalid(why)),
        }
    }
}

fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

fn is_field_vchar(b: u8) -> bool {
    (0x21..=0x7e).contains(&b) || b >= 0x80 || b == b' ' || b == b'\t'
}

/// The next CRLF-terminated line at `buf[at..]`: `Ok(Some((line, next)))`, `Ok(None)` when
/// incomplete, `Err` on a bare CR, bare LF or NUL.
fn line(buf: &[u8], at: usize, bare_lf: bool) -> Result<Option<(&[u8], usize)>, String> {
    let rest = &buf[at..];
    for (i, &b) in rest.iter().enumerate() {
        match b {
            0 => return Err(format!("NUL byte at offset {}", at + i)),
            b'\n' if bare_lf => return Ok(Some((&rest[..i], at + i + 1))),
            b'\n' => return Err(format!("bare LF at offset {}", at + i)),
            b'\r' => {
                return match rest.get(i + 1) {
                    None => Ok(None),
                    Some(b'\n') => Ok(Some((&rest[..i], at + i + 2))),
                    Some(_) => Err(format!("bare CR at offset {}", at + i)),
                }
            }
            _ => {}
        }
    }
    Ok(None)
}

macro_rules! next_line {
    ($buf:expr, $at:expr, $side:expr) => {
        match line($buf, $at, $side == Side::Client) {
            Err(e) => return Parse::Invalid(e),
            Ok(None) => return Parse::Incomplete,
            Ok(Some(l)) => l,
        }
    };
}

/// Parse one request at the front of `buf`.
pub fn parse_one(buf: &[u8], side: Side) -> Parse {
    let mut at = 0;
    let (mut request_line, mut next) = next_line!(buf, at, side);
    if side == Side::Client {
        while request_line.is_empty() {
            at = next;
            (request_line, next) = next_line!(buf, at, side);
        }
    }
    at = next;
    let (method, target, minor) = match parse_request_line(request_line) {
        Ok(parts) => parts,
        Err(e) => return Parse::Invalid(e),
    };
    let mut fields = Vec::new();
    loop {
        let (field, next) = next_line!(buf, at, side);
        at = next;
        if field.is_empty() {
            break;
        }
        match parse_field(field) {
            Ok(f) => fields.push(f),
            Err(e) => return Parse::Invalid(e),
        }
        if fields.len() > 100 {
            return Parse::Invalid("more than 100 header fields".into());
        }
    }
    let mut req = Req {
        method,
        target,
        minor,
        fields,
        body: Vec::new(),
        chunked: false,
        keep_alive: false,
        reject: None,
    };
    if let Err(e) = check_framing(&req, side) {
        return Parse::Invalid(e);
    }
    if let Err(e) = check_semantics(&req, side) {
        match side {
            Side::Client => req.reject = Some(e),
            Side::Backend => return Parse::Invalid(e),
        }
    }
    req.keep_alive = if req.minor == 1 {
        !req.has_token("connection", "close")
    } else {
        req.has_token("connection", "keep-alive")
    };
    let te = req.values("transfer-encoding").len();
    let body_end = if te > 0 {
        req.chunked = true;
        match parse_chunked(buf, at, side) {
            Ok(Some((body, end))) => {
                req.body = body;
                end
            }
            Ok(None) => return Parse::Incomplete,
            Err(e) => return Parse::Invalid(e),
        }
    } else {
        // check_framing made sure every value is the same 1..=19 digits
        let len = match req.values("content-length").first() {
            Some(v) => std::str::from_utf8(v)
                .ok()
                .and_then(|s| s.split(',').next()?.trim().parse::<u64>().ok())
                .unwrap_or(0),
            None => 0,
        };
        match usize::try_from(len)
            .ok()
            .filter(|len| buf.len() - at >= *len)
        {
            Some(len) => {
                req.body = buf[at..at + len].to_vec();
                at + len
            }
            None => return Parse::Incomplete,
        }
    };
    Parse::Done(req, body_end)
}

fn parse_request_line(line: &[u8]) -> Result<(Vec<u8>, Vec<u8>, u8), String> {
    let text = String::from_utf8_lossy(line);
    let parts: Vec<&[u8]> = line.split(|&b| b == b' ').collect();
    let [method, target, version] = parts.as_slice() else {
        return Err(format!(
            "request line is not `method SP target SP version`: {text:?}"
        ));
    };
    if method.is_empty() || !method.iter().all(|&b| is_tchar(b)) {
        return Err(format!("method is not a token: {text:?}"));
    }
    if target.is_empty() || !target.iter().all(|b| (0x21..=0x7e).contains(b)) {
        return Err(format!("invalid request target: {text:?}"));
    }
    let minor = match *version {
        b"HTTP/1.1" => 1,
        b"HTTP/1.0" => 0,
        _ => return Err(format!("version is not HTTP/1.0 or HTTP/1.1: {text:?}")),
    };
    Ok((method.to_vec(), target.to_vec(), minor))
}

fn parse_field(line: &[u8]) -> Result<(Vec<u8>, Vec<u8>), String> {
    let text = String::from_utf8_lossy(line);
    if line[0] == b' ' || line[0] == b'\t' {
        return Err(format!("obs-fold continuation line: {text:?}"));
    }
    let colon = line
        .iter()
        .position(|&b| b == b':')
        .ok_or_else(|| format!("field line without colon: {text:?}"))?;
    let (name, value) = (&line[..colon], &line[colon + 1..]);
    if name.is_empty() || !name.iter().all(|&b| is_tchar(b)) {
        return Err(format!("field name is not a token: {text:?}"));
    }
    let value = value.trim_ascii();
    if !value.iter().all(|&b| is_field_vchar(b)) {
        return Err(format!("invalid byte in field value: {text:?}"));
    }
    Ok((name.to_ascii_lowercase(), value.to_vec()))
}

/// Host and target: with these wrong the framing is still clear.
fn check_semantics(req: &Req, side: Side) -> Result<(), String> {
    let hosts = req.values("host");
    match (hosts.len(), req.minor) {
        (1, _) | (0, 0) => {}
        // RFC 9112 §3.2 wants 400 here, but the proxy (by choice, see its headers tests)
        // takes the target's authority as the host: one reading only, so it is allowed.
        (0, _) if side == Side::Client && absolute_parts(&req.target).is_some() => {}
        (0, _) => return Err("HTTP/1.1 request without Host".into()),
        (n, _) => return Err(format!("{n} Host fields")),
    }
    if let Some(host) = hosts.first() {
        let valid = host
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || b"-._~%!$&'()*+,;=:[]".contains(&b));
        if !valid {
            return Err(format!("invalid Host {:?}", String::from_utf8_lossy(host)));
        }
    }
    let origin = req.target.starts_with(b"/");
    let absolute = absolute_parts(&req.target).is_some_and(|(a, _)| !a.is_empty());
    let asterisk = req.target == b"*" && req.method == b"OPTIONS";
    let target_ok = match side {
        Side::Client => origin || absolute || asterisk,
        Side::Backend => origin || asterisk,
    };
    if !target_ok {
        return Err(format!(
            "request target form not allowed: {:?}",
            String::from_utf8_lossy(&req.target)
        ));
    }
    Ok(())
}

/// Framing (RFC 9112 §6): with this wrong nothing after the head can be trusted.
fn check_framing(req: &Req, side: Side) -> Result<(), String> {
    let te = req.values("transfer-encoding");
    let cl = req.values("content-length");
    if !te.is_empty() {
        if req.minor == 0 {
            return Err("Transfer-Encoding in an HTTP/1.0 request".into());
        }
        if !cl.is_empty() {
            return Err("both Content-Length and Transfer-Encoding".into());
        }
        if te.len() != 1 || !te[0].eq_ignore_ascii_case(b"chunked") {
            return Err(format!(
                "Transfer-Encoding is not exactly `chunked`: {te:?}"
            ));
        }
    }
    let number = |v: &[u8]| !v.is_empty() && v.len() <= 19 && v.iter().all(u8::is_ascii_digit);
    match (cl.as_slice(), side) {
        ([], _) => {}
        ([v], _) if number(v) => {}
        (values, Side::Client) => {
            // §6.3: a list of identical valid values may be taken as that value.
            let all: Vec<&[u8]> = values
                .iter()
                .flat_map(|v| v.split(|&b| b == b','))
                .map(<[u8]>::trim_ascii)
                .collect();
            if !(all.iter().all(|v| number(v)) && all.windows(2).all(|w| w[0] == w[1])) {
                return Err(format!(
                    "Content-Length values differ or are no numbers: {cl:?}"
                ));
            }
        }
        _ => return Err(format!("Content-Length is not one number: {cl:?}")),
    }
    Ok(())
}

/// A chunked body starting at `buf[at..]`: `(decoded body, end offset)`, `None` when incomplete.
fn parse_chunked(
    buf: &[u8],
    mut at: usize,
    side: Side,
) -> Result<Option<(Vec<u8>, usize)>, String> {
    let mut body = Vec::new();
    let longest = match side {
        Side::Client => 64 * 1024,
        Side::Backend => 1024,
    };
    loop {
        let Some((size_line, next)) = size_line(buf, at, side)? else {
            return Ok(None);
        };
        if size_line.len() > longest {
            return Err(format!("chunk size line over {longest} bytes"));
        }
        at = next;
        let size = chunk_size(size_line, side)?;
        if size == 0 {
            // Trailer fields, then the empty line.
            loop {
                let Some((field, next)) = line(buf, at, false)? else {
                    return Ok(None);
                };
                at = next;
                if field.is_empty() {
                    return Ok(Some((body, at)));
                }
                parse_field(field)?;
            }
        }
        if buf.len() < at + size {
            return Ok(None);
        }
        body.extend_from_slice(&buf[at..at + size]);
        at += size;
        match buf.get(at..at + 2) {
            None if buf.len() - at < 2 && buf[at..].iter().all(|&b| b == b'\r') => return Ok(None),
            Some(b"\r\n") => at += 2,
            _ => return Err("chunk data not followed by CRLF".into()),
        }
    }
}

/// The chunk size line at `buf[at..]`. A client's chunk extensions may hold any byte but CR
/// and LF: the proxy skips them up to CRLF and never passes them on, so they cannot change
/// the framing the backend sees.
fn size_line(buf: &[u8], at: usize, side: Side) -> Result<Option<(&[u8], usize)>, String> {
    let rest = &buf[at..];
    let ext = rest.iter().position(|&b| b == b';');
    let crlf_from = match (side, ext) {
        (Side::Client, Some(ext)) => {
            if rest[..ext]
                .iter()
                .any(|&b| b == b'\r' || b == b'\n' || b == 0)
            {
                return line(buf, at, false);
            }
            ext
        }
        _ => return line(buf, at, false),
    };
    match rest[crlf_from..]
        .iter()
        .position(|&b| b == b'\r' || b == b'\n')
    {
        None => Ok(None),
        Some(i) if rest[crlf_from + i] == b'\n' => Err("bare LF in chunk extension".into()),
        Some(i) => match rest.get(crlf_from + i + 1) {
            None => Ok(None),
            Some(b'\n') => Ok(Some((&rest[..crlf_from], at + crlf_from + i + 2))),
            Some(_) => Err("bare CR in chunk extension".into()),
        },
    }
}

/// `1*HEXDIG *( ";" token [ "=" ( token / quoted-string ) ] )`; the client may put whitespace
/// after the size and around `;` and `=` (BWS), the proxy may not.
fn chunk_size(line: &[u8], side: Side) -> Result<usize, String> {
    let text = String::from_utf8_lossy(line);
    let squeezed: Vec<u8>;
    let line = match side {
        Side::Backend => line,
        Side::Client => {
            if line.first().is_some_and(|&b| b == b' ' || b == b'\t') {
                return Err(format!("whitespace before chunk size {text:?}"));
            }
            squeezed = line
                .iter()
                .copied()
                .filter(|&b| b != b' ' && b != b'\t')
                .collect();
            &squeezed
        }
    };
    let digits = line.iter().take_while(|b| b.is_ascii_hexdigit()).count();
    if digits == 0 || digits > 15 {
        return Err(format!("invalid chunk size line {text:?}"));
    }
    let size = usize::from_str_radix(std::str::from_utf8(&line[..digits]).unwrap_or("x"), 16)
        .map_err(|_| format!("invalid chunk size line {text:?}"))?;
    let mut rest = &line[digits..];
    while !rest.is_empty() {
        let Some(after) = rest.strip_prefix(b";") else {
            return Err(format!("invalid chunk extension {text:?}"));
        };
        let name = after.iter().take_while(|&&b| is_tchar(b)).count();
        if name == 0 {
            return Err(format!("invalid chunk extension {text:?}"));
        }
        rest = &after[name..];
        if let Some(after) = rest.strip_prefix(b"=") {
            let value = if after.first() == Some(&b'"') {
                let close = after[1..]
                    .iter()
                    .position(|&b| b == b'"')
                    .ok_or_else(|| format!("unterminated quoted chunk extension {text:?}"))?;
                close + 2
            } else {
                after.iter().take_while(|&&b| is_tchar(b)).count()
            };
            if value == 0 {
                return Err(format!("invalid chunk extension {text:?}"));
            }
            rest = &after[value..];
        }
    }
    Ok(size)
}
