//! Client-side HTTP/1.1 behaviour of the proxy on plain connections, pinned with raw-TCP
//! clients and scripted backends on 127.0.0.1: pipelining, keep-alive and close rules, heads
//! arriving in pieces, bodies of every size and framing, requests that hyper takes over in the
//! middle of a connection, and shutdown. Only bytes on the wire are asserted, so the tests hold
//! whichever server code answers.

// Tests start real containerd, registries, Pebble and tools (see clippy.toml).
#![allow(clippy::disallowed_methods)]

#[path = "harness/wire.rs"]
mod wire;

use std::time::Duration;

use tokio::time::timeout;

use wire::*;

/// A keep-alive backend answering each request with its own path as the body.
async fn path_echo_backend() -> ScriptedBackend {
    scripted_backend(|mut conn| async move {
        while let Some(seen) = conn.next_request().await {
            let path = seen.head.start_line.split(' ').nth(1).unwrap_or("?");
            let resp = format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{path}",
                path.len()
            );
            conn.send(resp.as_bytes()).await;
        }
    })
    .await
}

fn request(method: &str, path: &str, extra: &str) -> Vec<u8> {
    format!("{method} {path} HTTP/1.1\r\nHost: {HOST}\r\n{extra}\r\n").into_bytes()
}

async fn read_response(wire: &mut Wire, to_head_request: bool) -> RawResponse {
    timeout(NO_HANG, wire.read_response(to_head_request))
        .await
        .expect("proxy did not answer in time")
        .unwrap()
}

/// True when the proxy closes the connection (EOF, or a reset) within `within`.
async fn closed_within(wire: &mut Wire, within: Duration) -> bool {
    match timeout(within, wire.fill()).await {
        Ok(Ok(0)) | Ok(Err(_)) => true,
        Ok(Ok(_)) => panic!("unexpected bytes: {:?}", String::from_utf8_lossy(&wire.buf)),
        Err(_) => false,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_requests_are_answered_in_order() {
    let backend = path_echo_backend().await;
    let proxy = proxy_to(backend.addr).await;
    let mut wire = Wire::connect(proxy.addr).await;
    let mut burst = Vec::new();
    for path in ["/one", "/two", "/three"] {
        burst.extend(request("GET", path, ""));
    }
    wire.write(&burst).await;
    for path in ["/one", "/two", "/three"] {
        assert_response(&read_response(&mut wire, false).await, 200, path);
    }
    let last = exchange(&mut wire, &get_request("/four"), false).await;
    assert_response(&last, 200, "/four");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_with_bodies_mid_connection_are_served_and_the_connection_goes_on() {
    let backend = path_echo_backend().await;
    let proxy = proxy_to(backend.addr).await;
    let mut wire = Wire::connect(proxy.addr).await;
    assert_response(
        &exchange(&mut wire, &get_request("/before"), false).await,
        200,
        "/before",
    );
    let mut post = request("POST", "/length", "Content-Length: 5\r\n");
    post.extend(b"hello");
    assert_response(&exchange(&mut wire, &post, false).await, 200, "/length");
    let mut chunked = request("POST", "/chunked", "Transfer-Encoding: chunked\r\n");
    chunked.extend(b"3\r\nabc\r\n0\r\n\r\n");
    assert_response(&exchange(&mut wire, &chunked, false).await, 200, "/chunked");
    assert_response(
        &exchange(&mut wire, &get_request("/after"), false).await,
        200,
        "/after",
    );
    let bodies: Vec<(String, Vec<u8>)> = backend
        .requests()
        .into_iter()
        .map(|s| (s.head.start_line, s.body))
        .collect();
    assert_eq!(
        bodies,
        vec![
            ("GET /before HTTP/1.1".to_string(), Vec::new()),
            ("POST /length HTTP/1.1".to_string(), b"hello".to_vec()),
            ("POST /chunked HTTP/1.1".to_string(), b"abc".to_vec()),
            ("GET /after HTTP/1.1".to_string(), Vec::new()),
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expect_100_continue_gets_the_interim_response_before_the_body_is_sent() {
    let backend = path_echo_backend().await;
    let proxy = proxy_to(backend.addr).await;
    let mut wire = Wire::connect(proxy.addr).await;
    wire.write(&request(
        "PUT",
        "/upload",
        "Content-Length: 4\r\nExpect: 100-continue\r\n",
    ))
    .await;
    let interim = timeout(NO_HANG, wire.read_head())
        .await
        .expect("no 100 Continue")
        .unwrap()
        .unwrap();
    assert_eq!(interim.status(), 100, "{interim:?}");
    wire.write(b"data").await;
    assert_response(&read_response(&mut wire, false).await, 200, "/upload");
    assert_eq!(backend.requests()[0].body, b"data");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keep_alive_and_close_follow_the_client_version_and_connection_header() {
    let backend = path_echo_backend().await;
    let proxy = proxy_to(backend.addr).await;

    // HTTP/1.0 with keep-alive: said so in the answer, and the connection stays usable.
    let mut old_kept = Wire::connect(proxy.addr).await;
    let ka = format!("GET /a HTTP/1.0\r\nHost: {HOST}\r\nConnection: keep-alive\r\n\r\n");
    let first = exchange(&mut old_kept, ka.as_bytes(), false).await;
    assert_response(&first, 200, "/a");
    assert_eq!(
        first.head.get("connection"),
        Some("keep-alive"),
        "{first:?}"
    );
    let again = exchange(&mut old_kept, ka.as_bytes(), false).await;
    assert_response(&again, 200, "/a");

    // Plain HTTP/1.0: one response, then the proxy closes.
    let mut old = Wire::connect(proxy.addr).await;
    let plain = format!("GET /b HTTP/1.0\r\nHost: {HOST}\r\n\r\n");
    let resp = exchange(&mut old, plain.as_bytes(), false).await;
    assert_response(&resp, 200, "/b");
    assert!(closed_within(&mut old, NO_HANG).await, "HTTP/1.0 left open");

    // HTTP/1.1 with Connection: close.
    let mut closing = Wire::connect(proxy.addr).await;
    let resp = exchange(
        &mut closing,
        &request("GET", "/c", "Connection: close\r\n"),
        false,
    )
    .await;
    assert_response(&resp, 200, "/c");
    assert_eq!(resp.head.get("connection"), Some("close"), "{resp:?}");
    assert!(closed_within(&mut closing, NO_HANG).await, "close ignored");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn head_arriving_in_small_pieces_and_heads_with_many_fields_are_served() {
    let backend = path_echo_backend().await;
    let proxy = proxy_to(backend.addr).await;

    let mut slow = Wire::connect(proxy.addr).await;
    for piece in request("GET", "/pieces", "X-One: 1\r\n").chunks(3) {
        slow.write(piece).await;
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    assert_response(&read_response(&mut slow, false).await, 200, "/pieces");

    // 90 fields (hyper's limit is 100) and a head of about 12 KiB (the limit is 16 KiB).
    let fields: String = (0..90).map(|i| format!("X-Field-{i}: {i}\r\n")).collect();
    let big_value = format!("X-Big: {}\r\n", "v".repeat(11 * 1024));
    let mut wire = Wire::connect(proxy.addr).await;
    let many = exchange(&mut wire, &request("GET", "/many", &fields), false).await;
    assert_response(&many, 200, "/many");
    let big = exchange(&mut wire, &request("GET", "/big", &big_value), false).await;
    assert_response(&big, 200, "/big");
    let seen = backend.requests();
    let many_seen = seen
        .iter()
        .find(|s| s.head.start_line.contains("/many"))
        .unwrap();
    assert_eq!(many_seen.head.get("x-field-89"), Some("89"));
    let big_seen = seen
        .iter()
        .find(|s| s.head.start_line.contains("/big"))
        .unwrap();
    assert_eq!(big_seen.head.get("x-big").map(str::len), Some(11 * 1024));
}

/// 1 MiB of a repeating pattern, so a lost or repeated piece shows.
fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i % 251) as u8).collect()
}

fn uneven_pieces(body: &[u8]) -> Vec<&[u8]> {
    let mut pieces = Vec::new();
    let mut rest = body;
    for size in [100, 10_007, 3_000, 70_001].into_iter().cycle() {
        if rest.is_empty() {
            break;
        }
        let (piece, tail) = rest.split_at(size.min(rest.len()));
        pieces.push(piece);
        rest = tail;
    }
    pieces
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_bodies_arrive_byte_exact_with_length_chunked_and_close_framing() {
    let body = pattern(1 << 20);
    let sent = body.clone();
    let backend = scripted_backend(move |mut conn| {
        let body = sent.clone();
        async move {
            while let Some(seen) = conn.next_request().await {
                if seen.head.start_line.contains("/length") {
                    let head = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", body.len());
                    conn.send(head.as_bytes()).await;
                    conn.send(&body).await;
                } else {
                    conn.send(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
                        .await;
                    // Uneven chunks, some large enough to skip the proxy's copy.
                    for piece in uneven_pieces(&body) {
                        conn.send(format!("{:x}\r\n", piece.len()).as_bytes()).await;
                        conn.send(piece).await;
                        conn.send(b"\r\n").await;
                    }
                    conn.send(b"0\r\n\r\n").await;
                }
            }
        }
    })
    .await;
    let proxy = proxy_to(backend.addr).await;
    let mut wire = Wire::connect(proxy.addr).await;
    let length = exchange(&mut wire, &get_request("/length"), false).await;
    assert_eq!(length.status(), 200);
    assert_eq!(length.head.content_length(), Some(body.len()));
    assert!(length.body == body, "Content-Length body differs");
    let chunked = exchange(&mut wire, &get_request("/chunked"), false).await;
    assert!(chunked.head.is_chunked(), "{:?}", chunked.head);
    assert!(chunked.body == body, "chunked body differs");

    // An HTTP/1.0 client cannot read chunked: the body ends with the connection.
    let mut old = Wire::connect(proxy.addr).await;
    let req = format!("GET /chunked HTTP/1.0\r\nHost: {HOST}\r\n\r\n");
    let resp = exchange(&mut old, req.as_bytes(), false).await;
    assert!(!resp.head.is_chunked() && resp.head.content_length().is_none());
    assert!(resp.body == body, "close-delimited body differs");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_pages_carry_length_date_and_keep_the_connection() {
    let backend = path_echo_backend().await;
    let proxy = proxy_to(backend.addr).await;
    let mut wire = Wire::connect(proxy.addr).await;
    let unknown = b"GET / HTTP/1.1\r\nHost: nobody.test\r\n\r\n";
    let page = exchange(&mut wire, unknown, false).await;
    assert_eq!(page.status(), 404);
    assert_eq!(page.head.content_length(), Some(page.body.len()));
    assert!(page.head.get("date").is_some(), "{:?}", page.head);
    let head = exchange(
        &mut wire,
        b"HEAD / HTTP/1.1\r\nHost: nobody.test\r\n\r\n",
        true,
    )
    .await;
    assert_eq!(head.status(), 404);
    assert_response(
        &exchange(&mut wire, &get_request("/still"), false).await,
        200,
        "/still",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_closes_idle_connections_at_once_and_lets_a_request_in_flight_finish() {
    let backend = scripted_backend(|mut conn| async move {
        while let Some(seen) = conn.next_request().await {
            if seen.head.start_line.contains("/slow") {
                tokio::time::sleep(Duration::from_millis(800)).await;
            }
            conn.send(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                .await;
        }
    })
    .await;
    let proxy = proxy_to(backend.addr).await;
    let mut idle = Wire::connect(proxy.addr).await;
    assert_response(
        &exchange(&mut idle, &get_request("/"), false).await,
        200,
        "ok",
    );
    let mut busy = Wire::connect(proxy.addr).await;
    busy.write(&get_request("/slow")).await;
    tokio::time::sleep(Duration::from_millis(200)).await;

    drop(proxy.stop);
    assert!(
        closed_within(&mut idle, Duration::from_secs(2)).await,
        "idle keep-alive connection still open after shutdown"
    );
    let resp = read_response(&mut busy, false).await;
    assert_response(&resp, 200, "ok");
    assert_eq!(resp.head.get("connection"), Some("close"), "{resp:?}");
    assert!(closed_within(&mut busy, NO_HANG).await);
}

/// Shutdown closes an idle keep-alive connection; a client whose next request crosses that
/// close (a hand-over or restart under load) must get a clean end, not a reset: the proxy
/// half-closes and reads and discards what still arrives, so the client's writes succeed and
/// its read ends with a FIN, and it sends the request again on a new connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_crossing_the_shutdown_of_an_idle_connection_sees_a_clean_close() {
    let backend = path_echo_backend().await;
    let proxy = proxy_to(backend.addr).await;
    let mut wire = Wire::connect(proxy.addr).await;
    assert_response(
        &exchange(&mut wire, &get_request("/first"), false).await,
        200,
        "/first",
    );
    drop(proxy.stop);
    tokio::time::sleep(Duration::from_millis(200)).await;
    use tokio::io::AsyncWriteExt;
    let first = wire.stream.write_all(&get_request("/late")).await;
    // A closed socket answers that request with a reset, and the next write fails.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let second = wire.stream.write_all(&get_request("/later")).await;
    assert!(
        first.is_ok() && second.is_ok(),
        "the proxy reset the connection: {first:?} {second:?}"
    );
    let end = timeout(NO_HANG, wire.fill()).await.expect("no close");
    assert_eq!(end, Ok(0), "no clean close after shutdown");
}

/// The proxy answers 413 as soon as it sees the declared length; the client keeps sending the
/// body. Closing then must not reset the connection (which could destroy the 413 on its way):
/// the proxy reads and discards the rest, and the client's upload and read both end cleanly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_still_uploading_after_a_413_gets_the_answer_and_a_clean_close() {
    let backend = path_echo_backend().await;
    let config = haloy::proxy::ProxyConfig {
        max_body_bytes: Some(1 << 20),
        ..haloy::proxy::ProxyConfig::default()
    };
    let proxy = proxy_with(backend.addr, config).await;
    let wire = Wire::connect(proxy.addr).await;
    let ended = upload_reading_the_answer(wire.stream, HOST, 16 << 20).await;
    ended.assert_clean(413);
}

/// Shutdown while a request is in flight: the client sends its next request before the answer
/// to the first arrives. The proxy answers the first with `Connection: close` and closes
/// without reading the second. A close with unread input resets the connection, which throws
/// away the part of the answer still in the proxy's send buffer: the large answer must arrive
/// whole, followed by a clean close.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closing_with_an_unread_request_still_delivers_the_whole_answer() {
    const BIG: usize = 32 << 20;
    let backend = scripted_backend(|mut conn| async move {
        while conn.next_request().await.is_some() {
            tokio::time::sleep(Duration::from_millis(800)).await;
            let mut resp = format!("HTTP/1.1 200 OK\r\nContent-Length: {BIG}\r\n\r\n").into_bytes();
            resp.extend(pattern(BIG));
            conn.send(&resp).await;
        }
    })
    .await;
    let proxy = proxy_to(backend.addr).await;
    let mut wire = Wire::connect(proxy.addr).await;
    wire.write(&get_request("/slow")).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    drop(proxy.stop);
    tokio::time::sleep(Duration::from_millis(100)).await;
    wire.write(&get_request("/next")).await;

    let resp = read_response(&mut wire, false).await;
    assert_eq!(
        resp.head.get("connection"),
        Some("close"),
        "{:?}",
        resp.head
    );
    assert_eq!(resp.body.len(), BIG, "the answer was cut short");
    assert!(resp.body == pattern(BIG), "the answer arrived changed");
    let end = timeout(NO_HANG, wire.fill()).await.expect("no close");
    assert_eq!(
        end,
        Ok(0),
        "the proxy reset the connection instead of closing it"
    );
}
