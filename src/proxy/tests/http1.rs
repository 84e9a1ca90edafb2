use http::{header, HeaderValue, Response, StatusCode, Version};

use super::{encode_head, scan, Framing};

fn layout(head: &str) -> Option<super::Layout> {
    scan(head.as_bytes())
}

fn taken(head: &str) -> bool {
    layout(head).is_some_and(|l| l.len == head.len())
}

#[test]
fn heads_without_body_are_taken_and_everything_else_goes_to_hyper() {
    assert!(taken("GET / HTTP/1.1\r\nHost: a\r\n\r\n"));
    assert!(taken(
        "DELETE /x HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n"
    ));
    for other in [
        "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\nContent-Length: 0\r\n\r\n",
        "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\n\r\n",
        "CONNECT a:443 HTTP/1.1\r\nHost: a\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: a\r\n folded\r\n\r\n",
        "GET / HTTP/1.1\r\nBad Name: a\r\n\r\n",
    ] {
        assert!(layout(other).is_none(), "taken: {other:?}");
    }
}

#[test]
fn an_incomplete_head_waits_for_more() {
    let partial = layout("GET / HTTP/1.1\r\nHost: a\r\n").unwrap();
    assert_eq!(partial.len, 0);
}

#[test]
fn keep_alive_follows_version_and_connection_tokens() {
    let keep = |head: &str| layout(head).unwrap().keep_alive;
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
    let framing = encode_head(&parts, version, is_head, length, &mut keep_alive, &mut out);
    (String::from_utf8(out).unwrap(), framing, keep_alive)
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
