//! Inputs of the proxy fuzz test: the seed corpus of known request-smuggling and desync
//! vectors, the checked-in regression inputs, and the mutations the generator applies to them.

use std::path::PathBuf;

/// The host the test proxy routes to the recording backend.
pub const H: &str = "up.test";

/// One input: a name and the bytes the client sends, in pieces split at `splits`.
#[derive(Debug, Clone)]
pub struct Input {
    pub name: String,
    pub bytes: Vec<u8>,
    pub splits: Vec<usize>,
}

fn get(path: &str, fields: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: {H}\r\n{fields}\r\n")
}

fn post(fields: &str, body: &str) -> String {
    format!("POST /p HTTP/1.1\r\nHost: {H}\r\n{fields}\r\n{body}")
}

/// The seed corpus: every vector runs on every test run.
pub fn seeds() -> Vec<Input> {
    let smuggled = get("/smuggled", "");
    let follow = get("/next", "");
    let s = |name: &str, text: String| (name.to_string(), text.into_bytes());
    let mut v = vec![
        s("plain-get", get("/", "")),
        s("pipelined-gets", format!("{}{}{}", get("/1", ""), get("/2", ""), get("/3", ""))),
        s("head", format!("HEAD /h HTTP/1.1\r\nHost: {H}\r\n\r\n{follow}")),
        s("post-length", format!("{}{follow}", post("Content-Length: 5\r\n", "hello"))),
        s("post-chunked", format!("{}{follow}", post("Transfer-Encoding: chunked\r\n", "5\r\nhello\r\n0\r\n\r\n"))),
        s("post-chunked-trailer", format!("{}{follow}", post("Transfer-Encoding: chunked\r\n", "5\r\nhello\r\n0\r\nX-T: 1\r\n\r\n"))),
        s("content-length-zero-get", format!("{}{follow}", get("/z", "Content-Length: 0\r\n"))),
        // CL.TE and TE.CL
        s("cl-te", format!("{}{smuggled}", post("Content-Length: 4\r\nTransfer-Encoding: chunked\r\n", "0\r\n\r\n"))),
        s("te-cl", format!("{}{smuggled}", post("Transfer-Encoding: chunked\r\nContent-Length: 3\r\n", "0\r\n\r\n"))),
        s("te-cl-body", post("Content-Length: 4\r\nTransfer-Encoding: chunked\r\n", &format!("5c\r\n{smuggled}\r\n0\r\n\r\n"))),
        // TE.TE obfuscations
        s("te-xchunked", format!("{}{smuggled}", post("Transfer-Encoding: xchunked\r\n", "0\r\n\r\n"))),
        s("te-space-chunked", format!("{}{smuggled}", post("Transfer-Encoding:  chunked\r\n", "0\r\n\r\n"))),
        s("te-chunked-identity", format!("{}{smuggled}", post("Transfer-Encoding: chunked, identity\r\n", "0\r\n\r\n"))),
        s("te-identity-chunked", format!("{}{smuggled}", post("Transfer-Encoding: identity, chunked\r\n", "0\r\n\r\n"))),
        s("te-tab", format!("{}{smuggled}", post("Transfer-Encoding:\tchunked\r\n", "0\r\n\r\n"))),
        s("te-space-before-colon", format!("{}{smuggled}", post("Transfer-Encoding : chunked\r\n", "0\r\n\r\n"))),
        s("te-duplicated", format!("{}{smuggled}", post("Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n", "0\r\n\r\n"))),
        s("te-duplicated-identity", format!("{}{smuggled}", post("Transfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\n", "0\r\n\r\n"))),
        s("te-uppercase", format!("{}{follow}", post("Transfer-Encoding: CHUNKED\r\n", "0\r\n\r\n"))),
        s("te-http10", format!("POST /p HTTP/1.0\r\nHost: {H}\r\nConnection: keep-alive\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n{smuggled}")),
        s("te-cl-http10", format!("POST /p HTTP/1.0\r\nHost: {H}\r\nConnection: keep-alive\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n{smuggled}")),
        s("te-quoted", format!("{}{smuggled}", post("Transfer-Encoding: \"chunked\"\r\n", "0\r\n\r\n"))),
        // Content-Length tricks
        s("cl-duplicate-same", format!("{}{follow}", post("Content-Length: 5\r\nContent-Length: 5\r\n", "hello"))),
        s("cl-duplicate-differ", format!("{}{follow}", post("Content-Length: 5\r\nContent-Length: 6\r\n", "hello!"))),
        s("cl-comma-list", format!("{}{follow}", post("Content-Length: 5, 5\r\n", "hello"))),
        s("cl-plus", format!("{}{follow}", post("Content-Length: +5\r\n", "hello"))),
        s("cl-leading-zero", format!("{}{follow}", post("Content-Length: 05\r\n", "hello"))),
        s("cl-negative", format!("{}{follow}", post("Content-Length: -5\r\n", "hello"))),
        s("cl-huge", post("Content-Length: 99999999999999999999999\r\n", "hello")),
        s("cl-u64-max", post("Content-Length: 18446744073709551615\r\n", "hello")),
        // hyper takes lengths up to 2^64 - 3; backends read them as signed 64-bit numbers.
        s("cl-i64-max-plus-one", post("Content-Length: 9223372036854775808\r\n", "hello")),
        s("cl-below-u64-max", format!("{}{follow}", post("Content-Length: 18446744063709551615\r\n", "hellohello"))),
        s("cl-hex", format!("{}{follow}", post("Content-Length: 0x5\r\n", "hello"))),
        s("cl-space-inside", format!("{}{follow}", post("Content-Length: 5 5\r\n", "hello"))),
        s("cl-get-with-body", format!("{}hello{follow}", get("/g", "Content-Length: 5\r\n"))),
        // Connection naming framing and forwarding fields
        s("connection-content-length", format!("{}{follow}", post("Content-Length: 33\r\nConnection: content-length\r\n", &smuggled))),
        s("connection-content-length-keepalive", format!("{}{follow}", post("Connection: keep-alive, Content-Length\r\nContent-Length: 33\r\n", &smuggled))),
        s("connection-transfer-encoding", format!("{}{follow}", post("Transfer-Encoding: chunked\r\nConnection: transfer-encoding\r\n", &format!("21\r\n{smuggled}\r\n0\r\n\r\n")))),
        s("connection-host", format!("{}{follow}", get("/ch", "Connection: host\r\n"))),
        s("connection-x-forwarded-for", format!("{}{follow}", get("/cx", "X-Forwarded-For: 10.0.0.1\r\nConnection: x-forwarded-for\r\n"))),
        s("connection-close-pipelined", format!("{}{follow}", get("/c", "Connection: close\r\n"))),
        // obs-fold, bare CR/LF, NUL
        s("obs-fold-te", format!("{}{smuggled}", post("X-A: b\r\nTransfer-Encoding: identity\r\n chunked\r\n", "0\r\n\r\n"))),
        s("obs-fold-other", format!("{}{follow}", get("/f", "X-A: b\r\n c\r\n"))),
        s("obs-fold-cl", format!("{}{follow}", post("Content-Length:\r\n 5\r\n", "hello"))),
        s("bare-lf-head", format!("GET /lf HTTP/1.1\nHost: {H}\n\n{follow}")),
        s("bare-lf-field", format!("{}{follow}", get("/lf", "X-A: b\nTransfer-Encoding: chunked\r\n"))),
        s("bare-cr-field", format!("{}{follow}", get("/cr", "X-A: b\rTransfer-Encoding: chunked\r\n"))),
        s("bare-cr-target", format!("GET /a\rb HTTP/1.1\r\nHost: {H}\r\n\r\n{follow}")),
        s("nul-in-name", format!("{}{follow}", get("/n", "X-A\0: b\r\n"))),
        s("nul-in-value", format!("{}{follow}", get("/n", "X-A: b\0c\r\n"))),
        s("nul-in-target", format!("GET /a\0b HTTP/1.1\r\nHost: {H}\r\n\r\n{follow}")),
        s("leading-crlf", format!("\r\n{}", get("/lead", ""))),
        // chunk tricks
        s("chunk-0x", format!("{}{follow}", post("Transfer-Encoding: chunked\r\n", "0x5\r\nhello\r\n0\r\n\r\n"))),
        s("chunk-leading-space", format!("{}{follow}", post("Transfer-Encoding: chunked\r\n", " 5\r\nhello\r\n0\r\n\r\n"))),
        s("chunk-trailing-space", format!("{}{follow}", post("Transfer-Encoding: chunked\r\n", "5 \r\nhello\r\n0\r\n\r\n"))),
        s("chunk-ext", format!("{}{follow}", post("Transfer-Encoding: chunked\r\n", "5;ext=val\r\nhello\r\n0\r\n\r\n"))),
        s("chunk-ext-quoted", format!("{}{follow}", post("Transfer-Encoding: chunked\r\n", "5;ext=\"a b\"\r\nhello\r\n0\r\n\r\n"))),
        s("chunk-ext-overlong", format!("{}{follow}", post("Transfer-Encoding: chunked\r\n", &format!("5;{}\r\nhello\r\n0\r\n\r\n", "x".repeat(9000))))),
        s("chunk-huge", format!("{}{follow}", post("Transfer-Encoding: chunked\r\n", "ffffffffffffffffff\r\nhello\r\n0\r\n\r\n"))),
        s("chunk-missing-crlf", format!("{}{smuggled}", post("Transfer-Encoding: chunked\r\n", "5\r\nhello0\r\n\r\n"))),
        s("chunk-short-data", format!("{}{smuggled}", post("Transfer-Encoding: chunked\r\n", "3\r\nhello\r\n0\r\n\r\n"))),
        s("chunk-lf-only", format!("{}{smuggled}", post("Transfer-Encoding: chunked\r\n", "5\nhello\n0\n\n"))),
        s("chunk-trailer-bare-lf-hides-request", post("Transfer-Encoding: chunked\r\n", &format!("5\r\nhello\r\n0\r\n\n{smuggled}"))),
        s("chunk-trailer-line-bare-lf", format!("{}{follow}", post("Transfer-Encoding: chunked\r\n", "5\r\nhello\r\n0\r\nX-T: 1\nX-U: 2\r\n\r\n"))),
        s("chunk-negative", format!("{}{follow}", post("Transfer-Encoding: chunked\r\n", "-5\r\nhello\r\n0\r\n\r\n"))),
        // Host and targets
        s("absolute-form-other-host", format!("GET http://{H}/abs HTTP/1.1\r\nHost: other.test\r\n\r\n{follow}")),
        s("absolute-form-routes-elsewhere", format!("GET http://other.test/abs HTTP/1.1\r\nHost: {H}\r\n\r\n{follow}")),
        s("absolute-form-no-host", format!("GET http://{H}/abs HTTP/1.1\r\n\r\n{follow}")),
        s("absolute-form-same-host", format!("GET http://{H}/abs?q=1 HTTP/1.1\r\nHost: {H}\r\n\r\n{follow}")),
        s("two-hosts", format!("GET /hh HTTP/1.1\r\nHost: {H}\r\nHost: other.test\r\n\r\n{follow}")),
        s("two-hosts-same", format!("GET /hh HTTP/1.1\r\nHost: {H}\r\nHost: {H}\r\n\r\n{follow}")),
        s("host-missing", format!("GET /nohost HTTP/1.1\r\n\r\n{follow}")),
        s("host-comma", format!("GET /hc HTTP/1.1\r\nHost: {H}, other.test\r\n\r\n{follow}")),
        s("asterisk-options", format!("OPTIONS * HTTP/1.1\r\nHost: {H}\r\n\r\n{follow}")),
        s("asterisk-get", format!("GET * HTTP/1.1\r\nHost: {H}\r\n\r\n{follow}")),
        s("authority-form-get", format!("GET {H}:80 HTTP/1.1\r\nHost: {H}\r\n\r\n{follow}")),
        s("authority-form-get-no-host", format!("GET {H}:80 HTTP/1.1\r\n\r\n{follow}")),
        s("authority-form-get-same-host", format!("GET {H}:80 HTTP/1.1\r\nHost: {H}:80\r\n\r\n{follow}")),
        s("target-query-only", format!("GET ?a=1 HTTP/1.1\r\nHost: {H}\r\n\r\n{follow}")),
        s("target-fragment", format!("GET /a#frag HTTP/1.1\r\nHost: {H}\r\n\r\n{follow}")),
        s("target-scheme-relative", format!("GET //other.test/x HTTP/1.1\r\nHost: {H}\r\n\r\n{follow}")),
        s("connect", format!("CONNECT {H}:80 HTTP/1.1\r\nHost: {H}\r\n\r\n{follow}")),
        // HTTP/1.0, Expect, Upgrade
        s("http10-keepalive", format!("GET /10 HTTP/1.0\r\nHost: {H}\r\nConnection: keep-alive\r\n\r\nGET /10b HTTP/1.0\r\nHost: {H}\r\n\r\n")),
        s("http10-no-host", "GET /10 HTTP/1.0\r\n\r\n".to_string()),
        s("http10-body-keepalive", format!("POST /10 HTTP/1.0\r\nHost: {H}\r\nConnection: keep-alive\r\nContent-Length: 5\r\n\r\nhello{follow}")),
        s("expect-continue", format!("{}{follow}", post("Expect: 100-continue\r\nContent-Length: 5\r\n", "hello"))),
        s("expect-continue-no-body", format!("{}{follow}", get("/e", "Expect: 100-continue\r\n"))),
        s("expect-other", format!("{}{follow}", post("Expect: something\r\nContent-Length: 5\r\n", "hello"))),
        s("upgrade-with-connection", format!("{}{follow}", get("/ws", "Upgrade: websocket\r\nConnection: upgrade\r\n"))),
        s("upgrade-without-connection", format!("{}{follow}", get("/ws", "Upgrade: websocket\r\n"))),
        s("upgrade-with-body", format!("{}{follow}", post("Upgrade: websocket\r\nConnection: upgrade\r\nContent-Length: 5\r\n", "hello"))),
        // The body of a request with Upgrade is read like any other (found by the generator).
        s("upgrade-chunked-trailer-bare-lf-hides-request", post("Upgrade: websocket\r\nTransfer-Encoding: chunked\r\n", &format!("5;ext=val\r\nhello\r\n0\r\n\n{smuggled}"))),
        s("upgrade-chunked-trailer-line-bare-lf", format!("{}{follow}", post("Upgrade: websocket\r\nTransfer-Encoding: chunked\r\n", "5\r\nhello\r\n0\r\nX-T: 1\nX-U: 2\r\n\r\n"))),
        s("upgrade-h2c", format!("{}{follow}", get("/h2c", "Upgrade: h2c\r\nConnection: upgrade, http2-settings\r\nHTTP2-Settings: AAMAAABkAAQAoAAAAAIAAAAA\r\n"))),
        // forwarding fields
        s("x-forwarded-underscore", format!("{}{follow}", get("/u", "X_Forwarded_For: 10.9.9.9\r\n"))),
        s("x-forwarded-spoof", format!("{}{follow}", get("/xf", "X-Forwarded-For: 10.9.9.9\r\nX-Forwarded-Host: evil.test\r\nX-Forwarded-Proto: https\r\nX-Real-IP: 10.9.9.9\r\nForwarded: for=10.9.9.9\r\n"))),
        // bad request lines
        s("method-not-token", format!("G(T / HTTP/1.1\r\nHost: {H}\r\n\r\n{follow}")),
        s("double-space", format!("GET  / HTTP/1.1\r\nHost: {H}\r\n\r\n{follow}")),
        s("http09", "GET /\r\n\r\n".to_string()),
        s("http2-version", format!("GET / HTTP/2.0\r\nHost: {H}\r\n\r\n")),
        s("space-before-colon", format!("{}{follow}", get("/s", "X-A : b\r\n"))),
        s("empty-name", format!("{}{follow}", get("/s", ": b\r\n"))),
    ];
    // The same vectors once hyper has taken the connection over (a body came first).
    let handoff = post("Content-Length: 5\r\n", "hello");
    for (name, text) in [
        (
            "after-handoff-cl-te",
            post(
                "Content-Length: 4\r\nTransfer-Encoding: chunked\r\n",
                "0\r\n\r\n",
            ),
        ),
        (
            "after-handoff-te-cl",
            post(
                "Transfer-Encoding: chunked\r\nContent-Length: 3\r\n",
                "0\r\n\r\n",
            ),
        ),
        (
            "after-handoff-connection-content-length",
            post(
                "Content-Length: 33\r\nConnection: content-length\r\n",
                &smuggled,
            ),
        ),
        (
            "after-handoff-two-hosts",
            format!("GET /hh HTTP/1.1\r\nHost: {H}\r\nHost: other.test\r\n\r\n"),
        ),
        (
            "after-handoff-te-duplicated",
            post(
                "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n",
                "0\r\n\r\n",
            ),
        ),
    ] {
        v.push(s(name, format!("{handoff}{text}{smuggled}")));
    }
    // A head with Upgrade that gets no 101: hyper reads on, the framing guard did not.
    let cl_te = post(
        "Content-Length: 4\r\nTransfer-Encoding: chunked\r\n",
        "0\r\n\r\n",
    );
    for (name, first) in [
        ("refused-upgrade-then-cl-te", get("/ws", "Upgrade: websocket\r\nConnection: upgrade\r\n")),
        ("upgrade-without-connection-then-cl-te", get("/ws", "Upgrade: websocket\r\n")),
        ("h2c-upgrade-then-cl-te", get("/h2c", "Upgrade: h2c\r\nConnection: upgrade, http2-settings\r\nHTTP2-Settings: AAMAAABkAAQAoAAAAAIAAAAA\r\n")),
        ("upgrade-to-unknown-host-then-cl-te", "GET /ws HTTP/1.1\r\nHost: other.test\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n".to_string()),
        ("upgrade-with-body-then-cl-te", post("Upgrade: websocket\r\nConnection: upgrade\r\nContent-Length: 5\r\n", "hello")),
    ] {
        v.push(s(name, format!("{first}{cl_te}{smuggled}")));
    }
    // Bare-LF head ends go to hyper before the proxy's own checks see them.
    v.push(s("bare-lf-end-cl-te", format!("{}\n0\r\n\r\n{smuggled}", "POST /p HTTP/1.1\r\nHost: up.test\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n")));
    v.push(s("bare-lf-end-connection-content-length", format!("POST /p HTTP/1.1\r\nHost: {H}\r\nContent-Length: 33\r\nConnection: content-length\r\n\n{smuggled}{follow}")));
    // A body that looks like a request: a desync would show it to the backend as one.
    v.push(s(
        "body-is-a-request",
        format!(
            "{}{follow}",
            post(
                &format!("Content-Length: {}\r\n", smuggled.len()),
                &smuggled
            )
        ),
    ));
    let whole = v.into_iter().map(|(name, bytes)| Input {
        name,
        bytes,
        splits: Vec::new(),
    });
    // Each vector again in pieces: cut inside the head, at its end, and inside the body.
    whole
        .flat_map(|input| {
            let head_end = wire_find(&input.bytes, b"\r\n\r\n").map_or(0, |i| i + 4);
            let len = input.bytes.len();
            let pieces = Input {
                name: format!("{} (in pieces)", input.name),
                bytes: input.bytes.clone(),
                splits: vec![len / 3, head_end, head_end + 2, 2 * len / 3],
            };
            [input, pieces]
        })
        .collect()
}

fn wire_find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Where failing inputs are kept: `NNN-name.bin`, raw bytes, sent in one write.
pub fn regression_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("integration-tests/corpus/http1")
}

/// The checked-in regression inputs, in name order.
pub fn regressions() -> Vec<Input> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(regression_dir())
        .map(|d| d.filter_map(|e| e.ok()).map(|e| e.path()).collect())
        .unwrap_or_default();
    files.sort();
    files
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "bin"))
        .map(|p| Input {
            name: format!(
                "corpus/{}",
                p.file_name().unwrap_or_default().to_string_lossy()
            ),
            bytes: std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display())),
            splits: Vec::new(),
        })
        .collect()
}

/// One edit of a seed.
#[derive(Debug, Clone)]
pub enum Mutation {
    /// Flip the bits of `mask` in the byte at `at`.
    Flip {
        at: usize,
        mask: u8,
    },
    /// Insert one of CR, LF, SP, HTAB, NUL, `,`, `:` at `at`.
    Insert {
        at: usize,
        which: u8,
    },
    Delete {
        at: usize,
    },
    /// Duplicate the line that contains `at`.
    DuplicateLine {
        at: usize,
    },
    /// Append another seed (pipelining).
    Append {
        seed: usize,
    },
    /// Insert one of `FIELDS` after the line that contains `at`.
    InsertField {
        at: usize,
        field: usize,
    },
}

/// Field lines that change framing, routing or the connection.
const FIELDS: &[&str] = &[
    "Transfer-Encoding: chunked\r\n",
    "Transfer-Encoding: identity\r\n",
    "Content-Length: 0\r\n",
    "Content-Length: 5\r\n",
    "Content-Length: 33\r\n",
    "Connection: close\r\n",
    "Connection: keep-alive\r\n",
    "Connection: content-length\r\n",
    "Connection: transfer-encoding\r\n",
    "Connection: upgrade\r\n",
    "Upgrade: websocket\r\n",
    "Expect: 100-continue\r\n",
    "Host: other.test\r\n",
    "Host: up.test\r\n",
    "Trailer: Content-Length\r\n",
    "TE: trailers\r\n",
    "Keep-Alive: timeout=5\r\n",
    "Proxy-Connection: keep-alive\r\n",
];

const INSERTABLE: &[u8] = b"\r\n \t\0,:";

pub fn apply(seed: &[u8], mutations: &[Mutation], seeds: &[Input]) -> Vec<u8> {
    let mut b = seed.to_vec();
    for m in mutations {
        let pos = |at: usize, len: usize| at % (len + 1);
        match *m {
            Mutation::Flip { at, mask } if !b.is_empty() => {
                let i = at % b.len();
                b[i] ^= mask.max(1);
            }
            Mutation::Flip { .. } => {}
            Mutation::Insert { at, which } => {
                let i = pos(at, b.len());
                b.insert(i, INSERTABLE[which as usize % INSERTABLE.len()]);
            }
            Mutation::Delete { at } if !b.is_empty() => {
                let i = at % b.len();
                b.remove(i);
            }
            Mutation::Delete { .. } => {}
            Mutation::DuplicateLine { at } if !b.is_empty() => {
                let i = at % b.len();
                let start = b[..i]
                    .iter()
                    .rposition(|&c| c == b'\n')
                    .map_or(0, |p| p + 1);
                let end = b[i..]
                    .iter()
                    .position(|&c| c == b'\n')
                    .map_or(b.len(), |p| i + p + 1);
                let line = b[start..end].to_vec();
                b.splice(end..end, line);
            }
            Mutation::DuplicateLine { .. } => {}
            Mutation::InsertField { at, field } if !b.is_empty() => {
                let i = at % b.len();
                let end = b[i..]
                    .iter()
                    .position(|&c| c == b'\n')
                    .map_or(b.len(), |p| i + p + 1);
                let line = FIELDS[field % FIELDS.len()].as_bytes();
                b.splice(end..end, line.iter().copied());
            }
            Mutation::InsertField { .. } => {}
            Mutation::Append { seed } => {
                b.extend_from_slice(&seeds[seed % seeds.len()].bytes);
            }
        }
    }
    b
}
