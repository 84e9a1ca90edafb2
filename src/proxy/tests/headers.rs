//! Unit tests of `proxy::headers`.

use super::*;

fn client(trusted: bool) -> ClientInfo {
    ClientInfo::new("10.0.0.9".parse().unwrap(), trusted, false)
}

#[test]
fn strips_hop_by_hop_and_connection_named() {
    let mut req = Request::builder()
        .uri("/x")
        .header("connection", "keep-alive, x-secret, host")
        .header("x-secret", "1")
        .header("keep-alive", "timeout=5")
        .header("te", "trailers")
        .header("host", "a.com")
        .header("x-real-ip", "1.2.3.4")
        .body(())
        .unwrap();
    let host = HeaderValue::from_static("a.com");
    prepare_request(&mut req, &client(false), &host, false);
    let h = req.headers();
    for gone in ["connection", "x-secret", "keep-alive", "te", "x-real-ip"] {
        assert!(!h.contains_key(gone), "{gone} kept");
    }
    assert_eq!(h["host"], "a.com");
    assert_eq!(h["x-forwarded-for"], "10.0.0.9");
    assert_eq!(h["x-forwarded-proto"], "http");
    assert_eq!(h["x-forwarded-host"], "a.com");
}

#[test]
fn forwarded_for_trust() {
    let build = || {
        Request::builder()
            .header("x-forwarded-for", "6.6.6.6")
            .body(())
            .unwrap()
    };
    let host = HeaderValue::from_static("a.com");
    let mut untrusted = build();
    prepare_request(&mut untrusted, &client(false), &host, false);
    assert_eq!(untrusted.headers()["x-forwarded-for"], "10.0.0.9");
    let mut trusted = build();
    prepare_request(&mut trusted, &client(true), &host, false);
    assert_eq!(trusted.headers()["x-forwarded-for"], "6.6.6.6, 10.0.0.9");
}

#[test]
fn framing_checks() {
    let ok = Request::builder()
        .header("host", "a")
        .header("content-length", "3")
        .body(())
        .unwrap();
    assert_eq!(check_framing(&ok), Ok(()));
    let both = Request::builder()
        .header("host", "a")
        .header("content-length", "3")
        .header("transfer-encoding", "chunked")
        .body(())
        .unwrap();
    assert_eq!(check_framing(&both), Err(FramingError::LengthAndChunked));
    let twice = Request::builder()
        .header("host", "a")
        .header("transfer-encoding", "chunked, chunked")
        .body(())
        .unwrap();
    assert_eq!(
        check_framing(&twice),
        Err(FramingError::BadTransferEncoding)
    );
    let no_host = Request::builder().body(()).unwrap();
    assert_eq!(check_framing(&no_host), Err(FramingError::MissingHost));
}

#[test]
fn h2c_upgrade_not_forwarded() {
    let req = |proto: &str| {
        Request::builder()
            .header("connection", "Upgrade, HTTP2-Settings")
            .header("upgrade", proto)
            .body(())
            .unwrap()
    };
    assert!(!upgrade_requested(&req("h2c")));
    assert!(upgrade_requested(&req("websocket")));
}

#[test]
fn absolute_form_host_wins() {
    let mut req = Request::builder()
        .uri("http://a.com/x")
        .header("host", "b.com")
        .body(())
        .unwrap();
    let host = HeaderValue::from_static("a.com");
    prepare_request(&mut req, &client(false), &host, false);
    assert_eq!(req.uri(), "/x");
    assert_eq!(req.headers()["host"], "a.com");
}

#[test]
fn http2_request_becomes_http11() {
    let mut req = Request::builder()
        .version(Version::HTTP_2)
        .uri("https://a.com/p?q=1")
        .header("cookie", "a=1")
        .header("cookie", "b=2")
        .body(())
        .unwrap();
    let host = HeaderValue::from_static("a.com");
    prepare_request(&mut req, &client(false), &host, false);
    assert_eq!(req.version(), Version::HTTP_11);
    assert_eq!(req.uri(), "/p?q=1");
    assert_eq!(req.headers()["host"], "a.com");
    assert_eq!(req.headers()["cookie"], "a=1; b=2");
}
