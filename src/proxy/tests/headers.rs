//! Unit tests of `proxy::headers`.

use super::*;

fn client(trusted: bool) -> ClientInfo {
    ClientInfo::new("10.0.0.9".parse().unwrap(), trusted, false)
}

/// The header fields the backend gets for `req`.
fn sent_to_backend(mut req: Request<()>, client: &ClientInfo, upgrade: bool) -> HeaderMap {
    let host = HeaderValue::from_static("a.com");
    let forwarding = prepare_request(&mut req, client, &host, upgrade);
    let mut sent = HeaderMap::new();
    for (name, value) in backend_fields(req.headers(), &forwarding) {
        sent.append(
            HeaderName::from_bytes(name.as_bytes()).unwrap(),
            value.clone(),
        );
    }
    sent
}

#[test]
fn strips_hop_by_hop_and_connection_named() {
    let req = Request::builder()
        .uri("/x")
        .header("connection", "keep-alive, x-secret, host")
        .header("x-secret", "1")
        .header("keep-alive", "timeout=5")
        .header("te", "trailers")
        .header("host", "a.com")
        .header("x-real-ip", "1.2.3.4")
        .header("x-forwarded-proto", "https")
        .header("x-kept", "yes")
        .body(())
        .unwrap();
    let h = &sent_to_backend(req, &client(false), false);
    assert_eq!(h["x-kept"], "yes");
    for gone in ["connection", "x-secret", "keep-alive", "te", "x-real-ip"] {
        assert!(!h.contains_key(gone), "{gone} kept");
    }
    assert_eq!(h["host"], "a.com");
    assert_eq!(h["x-forwarded-for"], "10.0.0.9");
    assert_eq!(h["x-forwarded-proto"], "http");
    assert_eq!(h["x-forwarded-host"], "a.com");
}

#[test]
fn connection_naming_only_hop_by_hop_fields_keeps_every_other_field() {
    let req = Request::builder()
        .header("connection", "Keep-Alive, TE")
        .header("te", "trailers")
        .header("x-a", "1")
        .header("cookie", "c=1")
        .body(())
        .unwrap();
    let h = &sent_to_backend(req, &client(false), false);
    assert_eq!(
        (h["x-a"].as_bytes(), h["cookie"].as_bytes()),
        (&b"1"[..], &b"c=1"[..])
    );
    assert!(!h.contains_key("te") && !h.contains_key("connection"));
    let names_other = |v: &'static str| {
        let mut map = HeaderMap::new();
        map.insert(header::CONNECTION, HeaderValue::from_static(v));
        connection_names_end_to_end_fields(&map)
    };
    assert!(!names_other("keep-alive, upgrade, , TE"));
    assert!(names_other("keep-alive, x-secret"));
    assert!(names_other("close"));
}

#[test]
fn forwarded_for_trust() {
    let build = || {
        Request::builder()
            .header("x-forwarded-for", "6.6.6.6")
            .body(())
            .unwrap()
    };
    let untrusted = sent_to_backend(build(), &client(false), false);
    assert_eq!(untrusted["x-forwarded-for"], "10.0.0.9");
    assert_eq!(untrusted.get_all("x-forwarded-for").iter().count(), 1);
    let trusted = sent_to_backend(build(), &client(true), false);
    assert_eq!(trusted["x-forwarded-for"], "6.6.6.6, 10.0.0.9");
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

/// Backends read a length as a signed 64-bit number (nginx, Go): a larger one is refused here,
/// not forwarded for the backend to refuse or misread. Leading zeros do not count.
#[test]
fn content_length_beyond_i64_is_refused() {
    let with_length = |value: &str| {
        Request::builder()
            .header("host", "a")
            .header("content-length", value)
            .body(())
            .unwrap()
    };
    for fits in ["0", "9223372036854775807", "0009223372036854775807"] {
        assert_eq!(check_framing(&with_length(fits)), Ok(()), "{fits}");
    }
    for too_large in [
        "9223372036854775808",
        "18446744063709551615",
        "18446744073709551615",
        "99999999999999999999999",
    ] {
        assert_eq!(
            check_framing(&with_length(too_large)),
            Err(FramingError::ContentLengthTooLarge),
            "{too_large}"
        );
    }
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
    let sent = sent_to_backend(req("websocket"), &client(false), true);
    assert_eq!(sent["upgrade"], "websocket");
    assert_eq!(sent["connection"], "upgrade");
    assert!(!sent.contains_key("http2-settings"));
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

#[test]
fn websocket_over_http2_becomes_an_http11_handshake() {
    let mut req = Request::builder()
        .method(Method::CONNECT)
        .version(Version::HTTP_2)
        .uri("https://ws.test/chat?room=1")
        .header("sec-websocket-version", "13")
        .header("sec-websocket-protocol", "chat")
        .body(())
        .unwrap();
    assert!(!websocket_over_http2(&req), "no :protocol yet");
    req.extensions_mut()
        .insert(hyper::ext::Protocol::from_static("websocket"));
    assert!(websocket_over_http2(&req));

    websocket_as_http11_handshake(&mut req);
    assert_eq!(req.method(), Method::GET);
    assert_eq!(req.headers()["upgrade"], "websocket");
    assert_eq!(req.headers()["sec-websocket-protocol"], "chat");
    let key = req.headers()["sec-websocket-key"].to_str().unwrap();
    use base64::Engine as _;
    let raw = base64::engine::general_purpose::STANDARD
        .decode(key)
        .unwrap();
    assert_eq!(raw.len(), 16, "RFC 6455: a base64 16-byte nonce");
}

#[test]
fn the_backends_101_becomes_a_200_without_handshake_fields() {
    let mut resp = Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header("upgrade", "websocket")
        .header("connection", "Upgrade")
        .header("sec-websocket-accept", "abc")
        .header("sec-websocket-protocol", "chat")
        .body(())
        .unwrap();
    prepare_switch_over_http2(&mut resp);
    assert_eq!(resp.status(), StatusCode::OK);
    let names: Vec<&str> = resp.headers().keys().map(|n| n.as_str()).collect();
    assert_eq!(names, ["sec-websocket-protocol"]);
}

#[test]
fn host_must_be_single_and_agree_with_the_target() {
    let with = |uri: &str, hosts: &[&str]| {
        let mut req = Request::builder().uri(uri);
        for h in hosts {
            req = req.header("host", *h);
        }
        check_framing(&req.body(()).unwrap())
    };
    assert_eq!(with("/", &["a", "b"]), Err(FramingError::DuplicateHost));
    assert_eq!(with("/", &["a", "a"]), Err(FramingError::DuplicateHost));
    assert_eq!(
        with("http://a.com/x", &["b.com"]),
        Err(FramingError::HostMismatch)
    );
    assert_eq!(with("http://A.com/x", &["a.COM"]), Ok(()));
    assert_eq!(with("http://a.com/x", &[]), Ok(()));
    assert_eq!(with("/", &["a"]), Ok(()));
}

/// The client's framing fields never reach the backend: the encoder writes the framing from
/// the parsed length, so a Connection token cannot unsettle it.
#[test]
fn framing_and_forwarding_fields_are_the_proxys_own() {
    let req = Request::builder()
        .uri("/x")
        .header("host", "a.com")
        .header(
            "connection",
            "content-length, host, x-forwarded-for, forwarded",
        )
        .header("content-length", "5")
        .header("forwarded", "for=6.6.6.6")
        .header("x-original-url", "/admin")
        .header("x_forwarded_for", "6.6.6.6")
        .header("x-app", "1")
        .body(())
        .unwrap();
    let h = &sent_to_backend(req, &client(false), false);
    assert!(!h.contains_key("content-length"));
    assert!(!h.contains_key("x-original-url"));
    assert!(!h.contains_key("x_forwarded_for"));
    assert_eq!(h["host"], "a.com");
    assert_eq!(h["x-app"], "1");
    assert_eq!(h["forwarded"], "for=10.0.0.9;proto=http");
    assert_eq!(h["x-forwarded-for"], "10.0.0.9");
}

#[test]
fn forwarded_element_quotes_ipv6_and_names_the_scheme() {
    let v6 = ClientInfo::new("2001:db8::1".parse().unwrap(), false, true);
    assert_eq!(v6.hop.forwarded, "for=\"[2001:db8::1]\";proto=https");
    let mapped = ClientInfo::new("::ffff:192.0.2.1".parse().unwrap(), false, false);
    assert_eq!(mapped.hop.forwarded, "for=192.0.2.1;proto=http");
}

#[test]
fn field_kinds() {
    let kind = |n: &str| field_kind(&HeaderName::from_bytes(n.as_bytes()).unwrap());
    assert_eq!(kind("transfer-encoding"), FieldKind::HopByHop);
    assert_eq!(kind("content-length"), FieldKind::Framing);
    assert_eq!(kind("X-Forwarded-Prefix"), FieldKind::Forwarding);
    assert_eq!(kind("true-client-ip"), FieldKind::Forwarding);
    assert_eq!(kind("x_real_ip"), FieldKind::Underscore);
    assert_eq!(kind("cookie"), FieldKind::EndToEnd);
}

#[test]
fn hop_by_hop_names_match_in_any_case_and_agree_with_the_header_list() {
    for name in &HOP_BY_HOP {
        assert!(is_hop_by_hop(name.as_str().as_bytes()), "{name}");
        assert!(
            is_hop_by_hop(name.as_str().to_uppercase().as_bytes()),
            "{name}"
        );
        assert_eq!(field_kind(name), FieldKind::HopByHop, "{name}");
    }
    for other in [
        "content-length",
        "host",
        "x-connection",
        "upgrade-insecure-requests",
    ] {
        assert!(!is_hop_by_hop(other.as_bytes()), "{other}");
    }
}

#[test]
fn decimals_are_digits_only_and_fit_in_u64() {
    for (digits, want) in [
        ("0", Some(0)),
        ("007", Some(7)),
        ("1024", Some(1024)),
        ("18446744073709551615", Some(u64::MAX)),
        ("18446744073709551616", None),
        ("", None),
        ("+1", None),
        ("-0", None),
        ("1a", None),
        (" 1", None),
        ("1 ", None),
        ("\u{0661}", None),
    ] {
        assert_eq!(parse_decimal(digits.as_bytes()), want, "{digits:?}");
    }
}
