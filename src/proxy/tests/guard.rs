//! Unit tests of `proxy::guard`: the stream walk against hyper's reading of the same bytes.

use tokio::io::AsyncReadExt;

use super::*;

/// What hyper would read through the guard from `input`, written in pieces of `piece` bytes.
async fn through_guard(input: &[u8], piece: usize) -> Vec<u8> {
    let (mut client, server) = tokio::io::duplex(1 << 20);
    let input = input.to_vec();
    let writer = tokio::spawn(async move {
        use tokio::io::AsyncWriteExt;
        for part in input.chunks(piece.max(1)) {
            client.write_all(part).await.unwrap();
            tokio::task::yield_now().await;
        }
    });
    let mut guard = HeadGuard::new(server, 8192, true);
    let mut out = Vec::new();
    let mut buf = [0u8; 37];
    loop {
        let n = guard.read(&mut buf).await.unwrap();
        if n == 0 {
            break;
        }
        out.extend_from_slice(&buf[..n]);
    }
    writer.await.unwrap();
    out
}

const SAFE: &[&str] = &[
    "GET / HTTP/1.1\r\nHost: a\r\n\r\nGET /2 HTTP/1.1\r\nHost: a\r\n\r\n",
    "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhelloGET / HTTP/1.1\r\nHost: a\r\n\r\n",
    "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5;x=y\r\nhello\r\n0\r\nT: 1\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n",
];

#[tokio::test]
async fn well_framed_streams_pass_unchanged_in_any_pieces() {
    for input in SAFE {
        for piece in [1, 3, 7, 64, 4096] {
            assert_eq!(
                through_guard(input.as_bytes(), piece).await,
                input.as_bytes(),
                "{input:?} in pieces of {piece}"
            );
        }
    }
}

/// Length beside chunked, or two lengths, anywhere on the connection: the head turns into one
/// hyper refuses (first byte NUL); what came before it is untouched.
#[tokio::test]
async fn ambiguous_heads_are_made_unparseable_where_they_start() {
    let first =
        "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n";
    for bad in [
        "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 6\r\n\r\n0\r\n\r\n",
        "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\nhi",
    ] {
        for piece in [1, 5, 4096] {
            let input = format!("{first}{bad}");
            let out = through_guard(input.as_bytes(), piece).await;
            assert_eq!(&out[..first.len()], first.as_bytes());
            assert_eq!(out[first.len()], 0, "{bad:?} in pieces of {piece}");
            assert_eq!(&out[first.len() + 1..], &bad.as_bytes()[1..]);
        }
    }
}

/// Where hyper would stop (an upgrade, a broken chunk), the rest passes untouched and unread
/// as heads: a smuggled-looking head inside it is not the guard's to judge.
#[tokio::test]
async fn after_an_upgrade_or_a_broken_body_bytes_pass_unwatched() {
    let ambiguous = "POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\nx";
    for prefix in [
        "GET / HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n",
        "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
    ] {
        let input = format!("{prefix}{ambiguous}");
        assert_eq!(through_guard(input.as_bytes(), 3).await, input.as_bytes());
    }
}

#[test]
fn chunk_walk_follows_hypers_decoder() {
    let walk = |body: &[u8]| -> Result<usize, ()> {
        let mut chunk = Chunk::Start;
        let mut i = 0;
        while i < body.len() {
            if let Chunk::Data(n) = chunk {
                i += n as usize;
                chunk = Chunk::DataCr;
                continue;
            }
            match chunk_step(chunk, body[i])? {
                Some(next) => chunk = next,
                None => return Ok(i + 1),
            }
            i += 1;
        }
        Err(())
    };
    assert_eq!(walk(b"5\r\nhello\r\n0\r\n\r\n"), Ok(15));
    assert_eq!(walk(b"A \t;ext\r\n0123456789\r\n0\r\nX: y\r\n\r\n"), Ok(32));
    for bad in [
        &b"\r\n"[..],
        b"0x5\r\n",
        b"5\nhello",
        b"5;a\nb\r\n",
        b"5\r\nhelloXX",
    ] {
        assert_eq!(walk(bad), Err(()), "{:?}", String::from_utf8_lossy(bad));
    }
    assert_eq!(walk(b"fffffffffffffffff\r\n"), Err(()), "overflow");
}

/// A bare LF in the trailer section (right after the last chunk, or inside a trailer line)
/// becomes NUL: hyper's trailer parse then fails instead of reading on to the next CRLF.
#[tokio::test]
async fn bare_lf_in_the_trailer_section_becomes_nul() {
    let head =
        "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n";
    for (trailer, want) in [
        ("\nX-T: 1\r\n\r\n", "\0X-T: 1\r\n\r\n"),
        ("X-T: 1\nX-U: 2\r\n\r\n", "X-T: 1\0X-U: 2\r\n\r\n"),
    ] {
        let input = format!("{head}{trailer}");
        for piece in [4096, 7, 1] {
            let out = through_guard(input.as_bytes(), piece).await;
            assert_eq!(
                out,
                format!("{head}{want}").as_bytes(),
                "{input:?} in pieces of {piece}"
            );
        }
    }
}

/// hyper reads the body of a request with Upgrade like any other body (and the proxy forwards
/// it), so that body is walked too; what follows it may be a tunnel and passes untouched.
#[tokio::test]
async fn the_body_of_an_upgrade_request_is_followed_and_nothing_after_it() {
    let upgrade = "POST / HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\n";
    let ambiguous = "POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\nx";
    let chunked = format!("{upgrade}Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n");
    let sized = format!("{upgrade}Content-Length: 5\r\n\r\nhello");
    for piece in [4096, 7, 1] {
        let bare_lf = format!("{chunked}\nGET /hidden HTTP/1.1\r\n\r\n");
        let want = format!("{chunked}\0GET /hidden HTTP/1.1\r\n\r\n");
        assert_eq!(
            through_guard(bare_lf.as_bytes(), piece).await,
            want.as_bytes(),
            "bare LF after the last chunk, in pieces of {piece}"
        );
        for body in [format!("{chunked}\r\n"), sized.clone()] {
            let input = format!("{body}{ambiguous}");
            assert_eq!(
                through_guard(input.as_bytes(), piece).await,
                input.as_bytes(),
                "{input:?} in pieces of {piece}"
            );
        }
    }
}
