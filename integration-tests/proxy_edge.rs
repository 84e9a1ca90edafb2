//! The proxy at the internet edge: request smuggling against a keep-alive backend (the class of
//! hole where the proxy and the backend read a request's framing differently), Host
//! ambiguities, and the forwarding fields a client must never be able to forge. Each test runs
//! the real proxy on 127.0.0.1 between a raw-TCP client and a scripted raw-TCP backend that
//! keeps its connections alive (as Node, Go, Puma and gunicorn do), and asserts bytes on both
//! wires.

// Tests start real containerd, registries, Pebble and tools (see clippy.toml).
#![allow(clippy::disallowed_methods)]

#[path = "harness/wire.rs"]
mod wire;

use std::time::Duration;

use haloy::proxy::ProxyConfig;
use wire::*;

const OK: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";

/// Sends `request` on a fresh client connection and reads everything the proxy answers until
/// it closes or goes quiet.
async fn send_raw(proxy: &TestProxy, request: &[u8]) -> String {
    let mut client = Wire::connect(proxy.addr).await;
    client.write(request).await;
    let mut got = Vec::new();
    loop {
        match tokio::time::timeout(Duration::from_millis(800), client.fill()).await {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => break,
            Ok(Ok(_)) => {
                got.extend_from_slice(&client.buf);
                client.buf.clear();
            }
        }
    }
    String::from_utf8_lossy(&got).into_owned()
}

/// Gives the backend time to record whatever reached it.
async fn settle() {
    tokio::time::sleep(Duration::from_millis(300)).await;
}

fn statuses(answer: &str) -> Vec<&str> {
    answer
        .match_indices("HTTP/1.1 ")
        .map(|(i, _)| &answer[i + 9..i + 12])
        .collect()
}

// ---------------------------------------------------------------- smuggling

/// `Connection: content-length` used to make the proxy drop the Content-Length field while it
/// still sent the body length-framed: the keep-alive backend read the body as a second request
/// (any Host, forged X-Forwarded-For). The backend must see exactly one request, whose body is
/// the bytes the client sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_naming_content_length_smuggles_nothing() {
    let backend = keepalive_backend(OK).await;
    let proxy = proxy_to(backend.addr).await;
    let smuggled = "GET /admin HTTP/1.1\r\nHost: internal\r\nX-Forwarded-For: 10.0.0.1\r\n\r\n";
    let request = format!(
        "POST /form HTTP/1.1\r\nHost: {HOST}\r\nConnection: content-length\r\nContent-Length: {}\r\n\r\n{smuggled}",
        smuggled.len()
    );

    let answer = send_raw(&proxy, request.as_bytes()).await;
    settle().await;

    let seen = backend.requests();
    assert_eq!(seen.len(), 1, "the backend saw {seen:#?}");
    assert_eq!(seen[0].head.start_line, "POST /form HTTP/1.1");
    assert_eq!(seen[0].body, smuggled.as_bytes());
    assert_eq!(
        seen[0].head.values("content-length"),
        [smuggled.len().to_string()]
    );
    assert_eq!(statuses(&answer), ["200"], "{answer}");
}

/// The same with a chunked body: the proxy's own framing reaches the backend whatever the
/// Connection field names.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_naming_transfer_encoding_smuggles_nothing() {
    let backend = keepalive_backend(OK).await;
    let proxy = proxy_to(backend.addr).await;
    let request = format!(
        "POST /form HTTP/1.1\r\nHost: {HOST}\r\nConnection: transfer-encoding, host\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"
    );

    let answer = send_raw(&proxy, request.as_bytes()).await;
    settle().await;

    let seen = backend.requests();
    assert_eq!(seen.len(), 1, "the backend saw {seen:#?}");
    assert_eq!(seen[0].body, b"hello");
    assert_eq!(seen[0].head.get("host"), Some(HOST));
    assert_eq!(statuses(&answer), ["200"], "{answer}");
}

/// A second smuggling attempt after the first: the next client's request must never become
/// the body of a request the attacker left incomplete.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_incomplete_smuggled_request_cannot_swallow_the_next_client() {
    let backend = keepalive_backend(OK).await;
    let proxy = proxy_to(backend.addr).await;
    let smuggled = "POST /steal HTTP/1.1\r\nHost: internal\r\nContent-Length: 400\r\n\r\nx=";
    let attack = format!(
        "POST / HTTP/1.1\r\nHost: {HOST}\r\nConnection: Content-Length\r\nContent-Length: {}\r\n\r\n{smuggled}",
        smuggled.len()
    );
    send_raw(&proxy, attack.as_bytes()).await;
    let victim = format!("GET /me HTTP/1.1\r\nHost: {HOST}\r\nCookie: session=secret\r\n\r\n");
    let answer = send_raw(&proxy, victim.as_bytes()).await;
    settle().await;

    assert_eq!(statuses(&answer), ["200"], "{answer}");
    let seen = backend.requests();
    let lines: Vec<&str> = seen.iter().map(|s| s.head.start_line.as_str()).collect();
    assert_eq!(lines, ["POST / HTTP/1.1", "GET /me HTTP/1.1"]);
}

/// Both Content-Length and Transfer-Encoding: 400 and close, nothing upstream — on the proxy's
/// own HTTP/1 server (first request of a connection) and after hyper took the connection over
/// (a request with a body hands it over).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn length_and_chunked_together_are_refused_on_both_paths() {
    let backend = keepalive_backend(OK).await;
    let proxy = proxy_to(backend.addr).await;
    let both = format!(
        "POST /x HTTP/1.1\r\nHost: {HOST}\r\nContent-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
    );
    let first = send_raw(&proxy, both.as_bytes()).await;
    assert_eq!(statuses(&first), ["400"], "{first}");

    let upload = format!("POST /a HTTP/1.1\r\nHost: {HOST}\r\nContent-Length: 2\r\n\r\nhi");
    let after_handoff = send_raw(&proxy, format!("{upload}{both}").as_bytes()).await;
    assert_eq!(statuses(&after_handoff), ["200", "400"], "{after_handoff}");
    let te_first = format!(
        "POST /x HTTP/1.1\r\nHost: {HOST}\r\nTransfer-Encoding: chunked\r\nContent-Length: 6\r\n\r\n0\r\n\r\n"
    );
    let after_handoff = send_raw(&proxy, format!("{upload}{te_first}").as_bytes()).await;
    assert_eq!(statuses(&after_handoff), ["200", "400"], "{after_handoff}");
    settle().await;

    let lines: Vec<String> = backend
        .requests()
        .iter()
        .map(|s| s.head.start_line.clone())
        .collect();
    assert_eq!(lines, ["POST /a HTTP/1.1", "POST /a HTTP/1.1"]);
}

/// Two Content-Length fields, equal or not, are refused (nginx refuses duplicates too).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_content_lengths_are_refused() {
    let backend = keepalive_backend(OK).await;
    let proxy = proxy_to(backend.addr).await;
    for lengths in [("2", "3"), ("2", "2")] {
        let req = format!(
            "POST /x HTTP/1.1\r\nHost: {HOST}\r\nContent-Length: {}\r\nContent-Length: {}\r\n\r\nhi!",
            lengths.0, lengths.1
        );
        let answer = send_raw(&proxy, req.as_bytes()).await;
        assert_eq!(statuses(&answer), ["400"], "{lengths:?}: {answer}");
    }
    settle().await;
    assert!(backend.requests().is_empty());
}

// ---------------------------------------------------------------- Host

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_host_fields_are_refused() {
    let backend = keepalive_backend(OK).await;
    let proxy = proxy_to(backend.addr).await;
    for req in [
        format!("GET / HTTP/1.1\r\nHost: {HOST}\r\nHost: evil.test\r\n\r\n"),
        format!("POST / HTTP/1.1\r\nHost: {HOST}\r\nHost: {HOST}\r\nContent-Length: 1\r\n\r\nx"),
    ] {
        let answer = send_raw(&proxy, req.as_bytes()).await;
        assert_eq!(statuses(&answer), ["400"], "{req:?}: {answer}");
    }
    settle().await;
    assert!(backend.requests().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn absolute_form_target_must_agree_with_host() {
    let backend = keepalive_backend(OK).await;
    let proxy = proxy_to(backend.addr).await;
    let mismatch = format!("GET http://{HOST}/a HTTP/1.1\r\nHost: evil.test\r\n\r\n");
    let answer = send_raw(&proxy, mismatch.as_bytes()).await;
    assert_eq!(statuses(&answer), ["400"], "{answer}");

    let agreeing = format!("GET http://{HOST}/b HTTP/1.1\r\nHost: {HOST}\r\n\r\n");
    let answer = send_raw(&proxy, agreeing.as_bytes()).await;
    assert_eq!(statuses(&answer), ["200"], "{answer}");
    settle().await;
    let lines: Vec<String> = backend
        .requests()
        .iter()
        .map(|s| s.head.start_line.clone())
        .collect();
    assert_eq!(lines, ["GET /b HTTP/1.1"]);
}

// ---------------------------------------------------------------- forwarding fields

const FORGED: &[(&str, &str)] = &[
    ("Forwarded", "for=10.0.0.1;proto=https"),
    ("X-Forwarded-For", "10.0.0.1"),
    ("X-Forwarded-Proto", "https"),
    ("X-Forwarded-Host", "admin.test"),
    ("X-Forwarded-Port", "443"),
    ("X-Forwarded-Prefix", "/admin"),
    ("X-Forwarded-Server", "internal"),
    ("X-Real-IP", "10.0.0.1"),
    ("True-Client-IP", "10.0.0.1"),
    ("CF-Connecting-IP", "10.0.0.1"),
    ("X-Original-URL", "/admin"),
    ("X-Rewrite-URL", "/admin"),
    ("X_Forwarded_For", "10.0.0.1"),
    ("X-Custom_Name", "1"),
];

fn forged_request(method: &str) -> String {
    let mut req = format!("{method} /f HTTP/1.1\r\nHost: {HOST}\r\nX-Kept: yes\r\n");
    for (name, value) in FORGED {
        req.push_str(&format!("{name}: {value}\r\n"));
    }
    if method == "POST" {
        req.push_str("Content-Length: 2\r\n\r\nhi");
    } else {
        req.push_str("\r\n");
    }
    req
}

/// No forwarding field a client sends reaches the backend from an untrusted peer, on either
/// HTTP/1 path (bodiless requests on the proxy's own server, bodies through hyper); the proxy
/// writes its own, `Forwarded` included.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_forwarding_fields_never_reach_the_backend() {
    let backend = keepalive_backend(OK).await;
    let proxy = proxy_to(backend.addr).await;
    for method in ["GET", "POST"] {
        let answer = send_raw(&proxy, forged_request(method).as_bytes()).await;
        assert_eq!(statuses(&answer), ["200"], "{answer}");
    }
    settle().await;
    let seen = backend.requests();
    assert_eq!(seen.len(), 2);
    for s in &seen {
        let h = &s.head;
        assert_eq!(h.values("x-kept"), ["yes"]);
        assert_eq!(h.values("x-forwarded-for"), ["127.0.0.1"], "{h:#?}");
        assert_eq!(h.values("x-forwarded-proto"), ["http"]);
        assert_eq!(h.values("x-forwarded-host"), [HOST]);
        assert_eq!(h.values("forwarded"), ["for=127.0.0.1;proto=http"]);
        for gone in [
            "x-forwarded-port",
            "x-forwarded-prefix",
            "x-forwarded-server",
            "x-real-ip",
            "true-client-ip",
            "cf-connecting-ip",
            "x-original-url",
            "x-rewrite-url",
            "x_forwarded_for",
            "x-custom_name",
        ] {
            assert!(
                h.values(gone).is_empty(),
                "{gone} reached the backend: {h:#?}"
            );
        }
    }
}

/// A trusted proxy in front keeps its forwarding fields; the chains get this hop appended.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trusted_proxies_keep_their_forwarding_fields() {
    let backend = keepalive_backend(OK).await;
    let config = ProxyConfig {
        trusted_proxies: vec!["127.0.0.0/8".parse().unwrap()],
        ..ProxyConfig::default()
    };
    let proxy = proxy_with(backend.addr, config).await;
    let answer = send_raw(&proxy, forged_request("GET").as_bytes()).await;
    assert_eq!(statuses(&answer), ["200"], "{answer}");
    settle().await;
    let seen = backend.requests();
    let h = &seen[0].head;
    assert_eq!(h.values("x-forwarded-for"), ["10.0.0.1, 127.0.0.1"]);
    assert_eq!(h.values("x-forwarded-proto"), ["https"]);
    assert_eq!(h.values("x-forwarded-host"), ["admin.test"]);
    assert_eq!(
        h.values("forwarded"),
        ["for=10.0.0.1;proto=https, for=127.0.0.1;proto=http"]
    );
    assert_eq!(h.values("x-real-ip"), ["10.0.0.1"]);
    assert_eq!(h.values("x-forwarded-prefix"), ["/admin"]);
    // Underscores are never passed on, trusted or not (nginx's underscores_in_headers off).
    assert!(h.values("x_forwarded_for").is_empty());
}
