use bytes::BytesMut;
use http::{header, HeaderValue, Response, StatusCode, Version};

use super::{encode_head, parse_head, ClientHead, Framing, Head, Parsed, Taking, Verbatim};
use crate::proxy::headers::ClientInfo;
use crate::proxy::{Proxy, ProxyConfig, Routes};

const LIMIT: usize = 1024;

/// What `parse_head` makes of `bytes` on a proxy without routes: no request is simple
/// (`proxy::simple`, tested on its own), so these are the general path's heads.
fn parsed(bytes: &str) -> (Parsed, BytesMut) {
    let proxy = Proxy::new(ProxyConfig::default(), Routes::new(), None);
    let client = ClientInfo::new("10.0.0.9".parse().unwrap(), false, false);
    let mut backend_heads = BytesMut::new();
    let mut taking = Taking {
        shared: &proxy.shared,
        client: &client,
        backend_heads: &mut backend_heads,
    };
    let mut buf = BytesMut::from(bytes);
    let parsed = parse_head(&mut buf, LIMIT, &mut taking);
    (parsed, buf)
}

/// A head the general path took.
struct General {
    request: http::Request<()>,
    keep_alive: bool,
}

fn general(head: Head) -> Option<General> {
    match head {
        Head::General {
            request,
            keep_alive,
        } => Some(General {
            request,
            keep_alive,
        }),
        Head::Simple(_) => None,
    }
}

fn taken(head: &str) -> General {
    match parsed(head) {
        (Parsed::Complete(taken), rest) if rest.is_empty() => {
            general(taken).unwrap_or_else(|| panic!("simple: {head:?}"))
        }
        _ => panic!("not taken: {head:?}"),
    }
}

#[test]
fn heads_without_body_are_taken_and_everything_else_goes_to_hyper_untouched() {
    let get = taken("GET /p?q HTTP/1.1\r\nHost: a\r\nX-A: 1\r\nX-A: 2\r\n\r\n");
    assert_eq!(get.request.uri(), "/p?q");
    assert_eq!(get.request.headers().get_all("x-a").iter().count(), 2);
    taken("DELETE /x HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n");
    for other in [
        "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello",
        "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\n\r\n",
        "CONNECT a:443 HTTP/1.1\r\nHost: a\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: a\r\n folded\r\n\r\n",
        "GET / HTTP/1.1\r\nBad Name: a\r\n\r\n",
        "GET / HTTP/1.1\nHost: a\n\n",
        "GET / HTTP/1.1\r\nHost: a\n\r\n",
        &format!(
            "GET / HTTP/1.1\r\nHost: a\r\nX: {}\r\n\r\n",
            "v".repeat(LIMIT)
        ),
        &format!("GET / HTTP/1.1\r\nHost: a\r\nX: {}", "v".repeat(LIMIT)),
    ] {
        let (parsed, rest) = parsed(other);
        assert!(matches!(parsed, Parsed::Other), "taken: {other:?}");
        assert_eq!(&rest[..], other.as_bytes(), "bytes for hyper changed");
    }
}

/// Ambiguous framing stays here, fields intact, for the handler's 400: hyper would drop the
/// Content-Length beside Transfer-Encoding, and merge equal Content-Lengths, and forward.
#[test]
fn heads_with_ambiguous_framing_are_taken_for_refusal() {
    for ambiguous in [
        "GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\nContent-Length: 0\r\n\r\n",
        "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n",
        "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
        "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 0\r\n\r\n",
    ] {
        let head = taken(ambiguous);
        let fields = head.request.headers();
        assert!(
            fields.get_all(header::CONTENT_LENGTH).iter().count()
                + fields.get_all(header::TRANSFER_ENCODING).iter().count()
                >= 2,
            "{ambiguous:?}"
        );
    }
}

#[test]
fn an_incomplete_head_waits_for_more() {
    let (partial, rest) = parsed("GET / HTTP/1.1\r\nHost: a\r\n");
    assert!(matches!(partial, Parsed::Partial));
    assert_eq!(rest.len(), "GET / HTTP/1.1\r\nHost: a\r\n".len());
}

#[test]
fn a_pipelined_request_stays_in_the_buffer() {
    let second = "GET /2 HTTP/1.1\r\nHost: a\r\n\r\n";
    let (first, rest) = parsed(&format!("GET /1 HTTP/1.1\r\nHost: a\r\n\r\n{second}"));
    let Parsed::Complete(first) = first else {
        panic!("not taken");
    };
    assert_eq!(general(first).unwrap().request.uri(), "/1");
    assert_eq!(&rest[..], second.as_bytes());
}

#[test]
fn keep_alive_follows_version_and_connection_tokens() {
    let keep = |head: &str| taken(head).keep_alive;
    assert!(keep("GET / HTTP/1.1\r\nHost: a\r\n\r\n"));
    assert!(!keep(
        "GET / HTTP/1.1\r\nHost: a\r\nConnection: foo, Close\r\n\r\n"
    ));
    assert!(!keep("GET / HTTP/1.0\r\n\r\n"));
    assert!(keep("GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n"));
}

fn encoded(
    resp: Response<()>,
    version: Version,
    is_head: bool,
    length: Option<u64>,
) -> (String, Framing, bool) {
    let (parts, ()) = resp.into_parts();
    let mut keep_alive = true;
    let mut out = Vec::new();
    let head = ClientHead {
        parts: &parts,
        verbatim: None,
        length,
    };
    let framing = encode_head(&head, version, is_head, &mut keep_alive, &mut out);
    (String::from_utf8(out).unwrap(), framing, keep_alive)
}

/// A backend's plain head passes as it is; the proxy adds Date when it is missing, and
/// Connection as the client needs it.
#[test]
fn verbatim_fields_pass_as_the_backend_wrote_them() {
    let (parts, ()) = Response::new(()).into_parts();
    let encode = |fields: &'static str, has_date: bool, version: Version, is_head: bool| {
        let verbatim = Verbatim::new(fields.as_bytes(), 3, has_date);
        let head = ClientHead {
            parts: &parts,
            verbatim: Some(&verbatim),
            length: (!is_head).then_some(3),
        };
        let (mut keep_alive, mut out) = (true, Vec::new());
        let framing = encode_head(&head, version, is_head, &mut keep_alive, &mut out);
        (String::from_utf8(out).unwrap(), framing)
    };
    let fields = "Content-Type: text/plain\r\nContent-Length: 3\r\nDate: d\r\n";
    assert_eq!(
        encode(fields, true, Version::HTTP_11, false),
        (format!("HTTP/1.1 200 OK\r\n{fields}\r\n"), Framing::Length)
    );
    assert_eq!(
        encode(fields, true, Version::HTTP_10, true),
        (
            format!("HTTP/1.1 200 OK\r\n{fields}connection: keep-alive\r\n\r\n"),
            Framing::None
        )
    );
    let (head, _) = encode("Content-Length: 3\r\n", false, Version::HTTP_11, false);
    assert!(
        head.starts_with("HTTP/1.1 200 OK\r\nContent-Length: 3\r\ndate: "),
        "{head}"
    );
}

fn response(status: StatusCode, fields: &[(header::HeaderName, &'static str)]) -> Response<()> {
    let mut resp = Response::new(());
    *resp.status_mut() = status;
    for (name, value) in fields {
        resp.headers_mut()
            .append(name.clone(), HeaderValue::from_static(value));
    }
    resp
}

#[test]
fn framing_is_set_from_the_body_not_copied_from_the_backend() {
    let resp = response(
        StatusCode::OK,
        &[(header::CONTENT_LENGTH, "99"), (header::DATE, "d")],
    );
    let (head, framing, keep) = encoded(resp, Version::HTTP_11, false, Some(3));
    assert_eq!(
        head,
        "HTTP/1.1 200 OK\r\ndate: d\r\ncontent-length: 3\r\n\r\n"
    );
    assert_eq!((framing, keep), (Framing::Length, true));

    let streamed = response(StatusCode::OK, &[(header::DATE, "d")]);
    let (head, framing, keep) = encoded(streamed, Version::HTTP_11, false, None);
    assert!(head.contains("transfer-encoding: chunked\r\n"), "{head}");
    assert_eq!((framing, keep), (Framing::Chunked, true));
}

#[test]
fn http10_clients_get_close_delimited_bodies_or_an_explicit_keep_alive() {
    let (head, framing, keep) =
        encoded(response(StatusCode::OK, &[]), Version::HTTP_10, false, None);
    assert_eq!((framing, keep), (Framing::UntilClose, false));
    assert!(head.contains("connection: close\r\n") && !head.contains("transfer-encoding"));
    let (head, _, keep) = encoded(
        response(StatusCode::OK, &[]),
        Version::HTTP_10,
        false,
        Some(1),
    );
    assert!(
        keep && head.contains("connection: keep-alive\r\n"),
        "{head}"
    );
}

#[test]
fn head_and_304_keep_the_described_length_204_and_head_carry_no_body() {
    let described = [(header::CONTENT_LENGTH, "1234")];
    let (head, framing, _) = encoded(
        response(StatusCode::OK, &described),
        Version::HTTP_11,
        true,
        Some(0),
    );
    assert!(head.contains("content-length: 1234\r\n"), "{head}");
    assert_eq!(framing, Framing::None);
    let (head, framing, _) = encoded(
        response(StatusCode::NOT_MODIFIED, &described),
        Version::HTTP_11,
        false,
        None,
    );
    assert!(head.contains("content-length: 1234\r\n") && !head.contains("chunked"));
    assert_eq!(framing, Framing::None);
    let (head, framing, _) = encoded(
        response(StatusCode::NO_CONTENT, &described),
        Version::HTTP_11,
        false,
        None,
    );
    assert!(
        !head.contains("content-length") && !head.contains("chunked"),
        "{head}"
    );
    assert_eq!(framing, Framing::None);
}

#[test]
fn a_page_asking_to_close_closes_and_says_so_once() {
    let page = response(StatusCode::BAD_REQUEST, &[(header::CONNECTION, "close")]);
    let (head, _, keep) = encoded(page, Version::HTTP_11, false, Some(0));
    assert!(!keep);
    assert_eq!(head.matches("connection: close").count(), 1, "{head}");
    assert!(head.contains("\r\ndate: "), "{head}");
}
