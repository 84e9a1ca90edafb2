//! Unit tests of `proxy::simple`: which heads it takes, and that the backend gets from it the
//! head the general path writes.

use std::mem::MaybeUninit;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use http::header::{HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Uri, Version};

use super::take;
use crate::proxy::headers::{backend_fields, prepare_request, ClientInfo};
use crate::proxy::server::Shared;
use crate::proxy::{AppRoute, Backend, DomainRoute, Proxy, ProxyConfig, Routes, TlsHooks};

/// A proxy serving app `web` on `a.test` (alias `www.a.test`), with a certificate for
/// `secure.test` when `hooks`.
fn shared(hooks: bool) -> Arc<Shared> {
    let routes = Routes::new();
    let backend = Backend::new("t1".into(), 0, "127.0.0.1:9".parse().unwrap());
    backend.set_ready(true);
    let domains = ["a.test", "secure.test"].map(|canonical| DomainRoute {
        canonical: canonical.into(),
        aliases: if canonical == "a.test" {
            vec!["www.a.test".into()]
        } else {
            vec![]
        },
    });
    routes
        .set_app(AppRoute {
            app: "web".into(),
            domains: domains.into(),
            backends: vec![backend],
        })
        .unwrap();
    let hooks = hooks.then(|| Arc::new(Certificates) as Arc<dyn TlsHooks>);
    Proxy::new(ProxyConfig::default(), routes, hooks).shared
}

struct Certificates;

impl TlsHooks for Certificates {
    fn challenge_response(&self, _token: &str) -> Option<String> {
        None
    }

    fn has_certificate(&self, host: &str) -> bool {
        host == "secure.test"
    }
}

fn client(trusted: bool, https: bool) -> ClientInfo {
    ClientInfo::new("10.0.0.9".parse().unwrap(), trusted, https)
}

/// What `take` makes of `head`: the backend head and whether the client keeps the connection.
fn taken(shared: &Shared, client: &ClientInfo, head: &str) -> Option<(String, bool)> {
    let head = Bytes::copy_from_slice(head.as_bytes());
    let mut slots = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; 64];
    let mut req = httparse::Request::new(&mut []);
    let parsed = req.parse_with_uninit_headers(&head, &mut slots);
    assert!(matches!(parsed, Ok(httparse::Status::Complete(n)) if n == head.len()));
    let mut out = BytesMut::new();
    let simple = take(&req, &head, shared, client, &mut out);
    assert!(out.is_empty(), "bytes left in the buffer");
    simple.map(|s| {
        let text = String::from_utf8(s.backend_head.to_vec()).unwrap();
        (text, s.keep_alive)
    })
}

/// The backend head the general path writes for `head`: `http` types, `prepare_request`,
/// `backend_fields`, as `upstream::send` encodes them for a request without body.
fn general(client: &ClientInfo, head: &str) -> String {
    let mut slots = [httparse::EMPTY_HEADER; 64];
    let mut parsed = httparse::Request::new(&mut slots);
    parsed.parse(head.as_bytes()).unwrap();
    let mut headers = HeaderMap::new();
    for field in parsed.headers.iter() {
        headers.append(
            HeaderName::from_bytes(field.name.as_bytes()).unwrap(),
            HeaderValue::from_bytes(field.value).unwrap(),
        );
    }
    let host = headers["host"].clone();
    let mut req = Request::new(());
    *req.method_mut() = Method::from_bytes(parsed.method.unwrap().as_bytes()).unwrap();
    *req.uri_mut() = parsed.path.unwrap().parse::<Uri>().unwrap();
    *req.version_mut() = Version::HTTP_11;
    *req.headers_mut() = headers;
    let forwarding = prepare_request(&mut req, client, &host, false);
    let mut out = format!(
        "{} {} HTTP/1.1\r\n",
        req.method(),
        req.uri().path_and_query().unwrap()
    );
    for (name, value) in backend_fields(req.headers(), &forwarding) {
        out += &format!("{name}: {}\r\n", value.to_str().unwrap());
    }
    out + "\r\n"
}

#[test]
fn simple_requests_reach_the_backend_as_the_general_path_sends_them() {
    let shared = shared(false);
    for https in [false, true] {
        let client = client(false, https);
        for head in [
            "GET / HTTP/1.1\r\nHost: a.test\r\n\r\n",
            "HEAD /p?q=1&r=%20 HTTP/1.1\r\nHost: A.Test:80\r\nAccept: */*\r\n\r\n",
            "GET /x HTTP/1.1\r\nUser-Agent: wrk\r\nHost: a.test.\r\nConnection: keep-alive\r\nCookie: a=b; c=d\r\n\r\n",
            "GET /x HTTP/1.0\r\nHost: a.test\r\nConnection: Keep-Alive\r\n\r\n",
            "GET /x HTTP/1.1\r\nHost: a.test\r\nX_Forwarded_For: 1.2.3.4\r\nX-Real-IP: 1.2.3.4\r\nForwarded: for=1.2.3.4\r\nX-Forwarded-Host: evil\r\nX-Forwarded-For: 1.2.3.4\r\nX-Kept:  v  \r\n\r\n",
            "GET /x HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n",
            "GET /.well-known/acme HTTP/1.1\r\nHost: a.test\r\n\r\n",
            &format!(
                "GET /long HTTP/1.1\r\nHost: a.test\r\nX-{}: long\r\nX-{}_x: dropped\r\n\r\n",
                "N".repeat(40),
                "N".repeat(40)
            ),
        ] {
            let (backend_head, _) =
                taken(&shared, &client, head).unwrap_or_else(|| panic!("not simple: {head:?}"));
            assert_eq!(backend_head, general(&client, head), "for {head:?}");
        }
    }
}

#[test]
fn the_client_keeps_its_connection_by_the_general_rule() {
    let shared = shared(false);
    let client = client(false, false);
    for (head, keep_alive) in [
        ("GET / HTTP/1.1\r\nHost: a.test\r\n\r\n", true),
        (
            "GET / HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n",
            false,
        ),
        (
            "GET / HTTP/1.1\r\nHost: a.test\r\nConnection: keep-alive, close\r\n\r\n",
            false,
        ),
        ("GET / HTTP/1.0\r\nHost: a.test\r\n\r\n", false),
        (
            "GET / HTTP/1.0\r\nHost: a.test\r\nConnection: keep-alive\r\n\r\n",
            true,
        ),
    ] {
        let (_, kept) = taken(&shared, &client, head).unwrap();
        assert_eq!(kept, keep_alive, "for {head:?}");
    }
}

#[test]
fn everything_else_takes_the_general_path() {
    let shared = shared(true);
    let plain = client(false, false);
    for head in [
        "POST / HTTP/1.1\r\nHost: a.test\r\n\r\n",
        "DELETE / HTTP/1.1\r\nHost: a.test\r\n\r\n",
        "OPTIONS * HTTP/1.1\r\nHost: a.test\r\n\r\n",
        "get / HTTP/1.1\r\nHost: a.test\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: a.test\r\nContent-Length: 0\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: a.test\r\nTransfer-Encoding: chunked\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: a.test\r\nExpect: 100-continue\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: a.test\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: a.test\r\nConnection: x-secret\r\nX-Secret: 1\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: a.test\r\nKeep-Alive: timeout=5\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: a.test\r\nTE: trailers\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: a.test\r\nProxy-Authorization: x\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: a.test\r\nHost: a.test\r\n\r\n",
        "GET / HTTP/1.1\r\n\r\n",
        "GET / HTTP/1.0\r\n\r\n",
        "GET http://a.test/ HTTP/1.1\r\nHost: a.test\r\n\r\n",
        "GET a.test:80 HTTP/1.1\r\nHost: a.test\r\n\r\n",
        "GET /\"x\" HTTP/1.1\r\nHost: a.test\r\n\r\n",
        "GET /{x} HTTP/1.1\r\nHost: a.test\r\n\r\n",
        "GET /x#f HTTP/1.1\r\nHost: a.test\r\n\r\n",
        "GET /x HTTP/1.1\r\nHost: a.t\u{e9}st\r\n\r\n",
        "GET /x HTTP/1.1\r\nHost: other.test\r\n\r\n",
        "GET /x HTTP/1.1\r\nHost: www.a.test\r\n\r\n",
        "GET /x HTTP/1.1\r\nHost: secure.test\r\n\r\n",
        "GET /.well-known/acme-challenge/t HTTP/1.1\r\nHost: a.test\r\n\r\n",
    ] {
        assert!(taken(&shared, &plain, head).is_none(), "simple: {head:?}");
    }
    // A trusted peer's forwarding fields are chained: the general path does that.
    let trusted = client(true, false);
    let forwarded = "GET / HTTP/1.1\r\nHost: a.test\r\nX-Forwarded-For: 1.2.3.4\r\n\r\n";
    assert!(taken(&shared, &trusted, forwarded).is_none());
    assert!(taken(&shared, &trusted, "GET / HTTP/1.1\r\nHost: a.test\r\n\r\n").is_some());
    // Over HTTPS neither the redirect nor the challenge applies.
    let https = client(false, true);
    for head in [
        "GET /x HTTP/1.1\r\nHost: secure.test\r\n\r\n",
        "GET /.well-known/acme-challenge/t HTTP/1.1\r\nHost: a.test\r\n\r\n",
    ] {
        assert!(
            taken(&shared, &https, head).is_some(),
            "not simple: {head:?}"
        );
    }
}
