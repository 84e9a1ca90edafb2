//! Unit tests of `proxy::upstream::codec`: request heads, response heads, framing, chunked.

use super::*;

fn head_of(raw: &str) -> (ResponseHead, BytesMut) {
    let mut buf = BytesMut::from(raw.as_bytes());
    let head = parse_response_head(&mut buf, false)
        .unwrap()
        .expect("complete head");
    (head, buf)
}

fn framing_of(method: Method, raw: &str) -> Result<ResponseFraming, UpstreamError> {
    let (mut head, _) = head_of(raw);
    response_framing(&method, &mut head)
}

#[test]
fn request_head_with_and_without_chunked_framing() {
    let host = HeaderValue::from_static("a.test");
    let headers = || [("host", &host)].into_iter();
    let mut out = Vec::new();
    encode_request_head(
        &Method::GET,
        "/p?q=1",
        headers(),
        RequestFraming::Empty,
        &mut out,
    );
    assert_eq!(out, b"GET /p?q=1 HTTP/1.1\r\nhost: a.test\r\n\r\n");
    encode_request_head(
        &Method::POST,
        "/",
        headers(),
        RequestFraming::Chunked,
        &mut out,
    );
    assert_eq!(
        out,
        b"POST / HTTP/1.1\r\nhost: a.test\r\ntransfer-encoding: chunked\r\n\r\n"
    );
    out.clear();
    chunk_header(300, &mut out);
    chunk_header(1, &mut out);
    assert_eq!(out, b"12c\r\n1\r\n");
}

#[test]
fn response_head_parsed_and_removed_from_buffer() {
    let (head, rest) =
        head_of("HTTP/1.1 201 Created\r\nX-A: 1\r\nx-a: 2\r\nContent-Length: 3\r\n\r\nabc");
    assert_eq!(head.status, StatusCode::CREATED);
    assert_eq!(head.version, Version::HTTP_11);
    let values: Vec<_> = head.headers.get_all("x-a").iter().collect();
    assert_eq!(values, ["1", "2"]);
    assert_eq!(&rest[..], b"abc");
}

#[test]
fn heads_with_bare_lf_line_ends_or_leading_blank_lines_are_found_by_the_parser() {
    // The body holds a CRLF CRLF that is not the end of the head.
    let (head, rest) = head_of("HTTP/1.1 200 OK\nContent-Length: 6\n\nab\r\n\r\n");
    assert_eq!(head.headers["content-length"], "6");
    assert_eq!(&rest[..], b"ab\r\n\r\n");
    let (head, rest) = head_of("\r\n\r\nHTTP/1.1 204 No Content\r\nX: y\r\n\r\nnext");
    assert_eq!(head.status, StatusCode::NO_CONTENT);
    assert_eq!(head.headers["x"], "y");
    assert_eq!(&rest[..], b"next");
}

#[test]
fn partial_head_needs_more_and_oversized_or_invalid_heads_fail() {
    let mut partial = BytesMut::from(&b"HTTP/1.1 200 OK\r\nContent-Le"[..]);
    assert!(parse_response_head(&mut partial, false).unwrap().is_none());
    assert_eq!(partial.len(), 27, "nothing consumed");
    let mut huge = BytesMut::from(&b"HTTP/1.1 200 OK\r\nX: "[..]);
    huge.extend_from_slice(&vec![b'a'; MAX_RESPONSE_HEAD_BYTES]);
    assert!(matches!(
        parse_response_head(&mut huge, false),
        Err(UpstreamError::HeadTooLarge)
    ));
    let mut folded = BytesMut::from(&b"HTTP/1.1 200 OK\r\nX: a\r\n b\r\n\r\n"[..]);
    assert!(matches!(
        parse_response_head(&mut folded, false),
        Err(UpstreamError::BadResponse(_))
    ));
}

#[test]
fn framing_follows_rfc_9112() {
    let len = framing_of(Method::GET, "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n").unwrap();
    assert_eq!(
        len,
        ResponseFraming {
            body: BodyFraming::Length(5),
            keep_alive: true
        }
    );
    let head = framing_of(Method::HEAD, "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n").unwrap();
    assert_eq!(head.body, BodyFraming::Empty);
    for status in ["204 No Content", "304 Not Modified"] {
        let raw = format!("HTTP/1.1 {status}\r\nContent-Length: 5\r\n\r\n");
        assert_eq!(
            framing_of(Method::GET, &raw).unwrap().body,
            BodyFraming::Empty
        );
    }
    let chunked = framing_of(
        Method::GET,
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
    )
    .unwrap();
    assert_eq!(
        chunked,
        ResponseFraming {
            body: BodyFraming::Chunked,
            keep_alive: true
        }
    );
    let close = framing_of(Method::GET, "HTTP/1.1 200 OK\r\n\r\n").unwrap();
    assert_eq!(
        close,
        ResponseFraming {
            body: BodyFraming::UntilClose,
            keep_alive: false
        }
    );
    let http10 = framing_of(Method::GET, "HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\n").unwrap();
    assert!(!http10.keep_alive);
    let http10_ka = framing_of(
        Method::GET,
        "HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 1\r\n\r\n",
    )
    .unwrap();
    assert!(http10_ka.keep_alive);
    let closing = framing_of(
        Method::GET,
        "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 1\r\n\r\n",
    )
    .unwrap();
    assert!(!closing.keep_alive);
}

#[test]
fn both_framings_chunked_wins_length_removed_connection_not_reused() {
    let (mut head, _) =
        head_of("HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n");
    let framing = response_framing(&Method::GET, &mut head).unwrap();
    assert_eq!(
        framing,
        ResponseFraming {
            body: BodyFraming::Chunked,
            keep_alive: false
        }
    );
    assert!(!head.headers.contains_key(header::CONTENT_LENGTH));
}

#[test]
fn content_length_must_be_one_number() {
    for bad in [
        "Content-Length: 3\r\nContent-Length: 4",
        "Content-Length: 3, 4",
        "Content-Length: -1",
        "Content-Length: 0x10",
    ] {
        let raw = format!("HTTP/1.1 200 OK\r\n{bad}\r\n\r\n");
        assert!(framing_of(Method::GET, &raw).is_err(), "{bad} accepted");
    }
    let same = framing_of(
        Method::GET,
        "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\n",
    );
    assert_eq!(same.unwrap().body, BodyFraming::Length(3));
}

fn decode_all(chunks: &[&[u8]]) -> Result<Vec<u8>, UpstreamError> {
    let mut decoder = Chunked::Size;
    let mut buf = BytesMut::new();
    let mut body = Vec::new();
    for piece in chunks {
        buf.extend_from_slice(piece);
        loop {
            match decoder.decode(&mut buf)? {
                Decoded::Data(d) => body.extend_from_slice(&d),
                Decoded::NeedMore => break,
                Decoded::End => return Ok(body),
            }
        }
    }
    Err(UpstreamError::Closed)
}

#[test]
fn chunked_decoding_with_extensions_trailers_and_split_reads() {
    let wire: &[u8] = b"5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nX-Trailer: t\r\n\r\n";
    assert_eq!(decode_all(&[wire]).unwrap(), b"hello world");
    // The same bytes one at a time.
    let singles: Vec<&[u8]> = wire.chunks(1).collect();
    assert_eq!(decode_all(&singles).unwrap(), b"hello world");
}

#[test]
fn chunked_decoding_rejects_bad_sizes_and_missing_crlf() {
    for bad in [
        &b"zz\r\n"[..],
        b"5\r\nhelloXX",
        b"5\nhello\r\n",
        b"11111111111111111\r\n",
    ] {
        assert!(
            matches!(decode_all(&[bad]), Err(UpstreamError::BadResponse(_))),
            "{:?} accepted",
            String::from_utf8_lossy(bad)
        );
    }
}

/// Which heads keep their fields as they are: HTTP/1.1 with one valid Content-Length, a status
/// with a body, CRLF line ends, no hop-by-hop field. The rest parse into a header map.
#[test]
fn plain_heads_keep_their_fields_verbatim() {
    let plain =
        "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 3\r\nDate: d\r\n\r\nabc";
    let mut buf = BytesMut::from(plain.as_bytes());
    let head = parse_response_head(&mut buf, true).unwrap().unwrap();
    let verbatim = head.verbatim.expect("verbatim");
    assert_eq!(
        verbatim.fields(),
        b"Content-Type: text/plain\r\nContent-Length: 3\r\nDate: d\r\n"
    );
    assert_eq!((verbatim.length, verbatim.has_date), (3, true));
    assert!(head.headers.is_empty());
    assert_eq!(&buf[..], b"abc");
    assert_eq!(
        plain_framing(&Method::GET, &verbatim),
        ResponseFraming {
            body: BodyFraming::Length(3),
            keep_alive: true
        }
    );
    assert_eq!(
        plain_framing(&Method::HEAD, &verbatim).body,
        BodyFraming::Empty
    );

    for general in [
        "HTTP/1.0 200 OK\r\nContent-Length: 3\r\n\r\n",
        "HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n",
        "HTTP/1.1 304 Not Modified\r\nContent-Length: 3\r\n\r\n",
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
        "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
        "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nConnection: close\r\n\r\n",
        "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nKeep-Alive: timeout=5\r\n\r\n",
        "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\n",
        "HTTP/1.1 200 OK\r\nContent-Length: 3, 3\r\n\r\n",
        "HTTP/1.1 200 OK\r\nContent-Length: +3\r\n\r\n",
        "HTTP/1.1 200 OK\r\n\r\n",
        "HTTP/1.1 200 OK\r\nX: a\nContent-Length: 3\r\n\r\n",
    ] {
        let mut buf = BytesMut::from(general.as_bytes());
        let head = parse_response_head(&mut buf, true).unwrap();
        assert!(
            head.is_some_and(|h| h.verbatim.is_none()),
            "verbatim or unparsed: {general:?}"
        );
    }
    // Without `verbatim` (requests the general path sent) every head parses into fields.
    let mut buf = BytesMut::from(plain.as_bytes());
    let head = parse_response_head(&mut buf, false).unwrap().unwrap();
    assert!(head.verbatim.is_none() && head.headers.len() == 3);
}
