use bytes::{BufMut, Bytes, BytesMut};
use tokio_util::codec::{Decoder, Encoder};

use super::*;

fn encoded(frame: Frame) -> BytesMut {
    let mut buf = BytesMut::new();
    FrameCodec.encode(frame, &mut buf).unwrap();
    buf
}

#[test]
fn every_frame_kind_survives_a_round_trip() {
    let frames = [
        Frame::Stdin(Bytes::from_static(b"input")),
        Frame::Stdout(Bytes::from_static(b"out\n")),
        Frame::Stderr(Bytes::from_static(b"")),
        Frame::Resize {
            cols: 101,
            rows: 37,
        },
        Frame::StdinEof,
        Frame::Exit(3),
        Frame::Error("timed out".into()),
    ];
    let mut stream = BytesMut::new();
    for frame in &frames {
        stream.extend_from_slice(&encoded(frame.clone()));
    }
    let mut decoded = Vec::new();
    while let Some(frame) = FrameCodec.decode(&mut stream).unwrap() {
        decoded.push(frame);
    }
    assert_eq!(decoded, frames);
    assert!(stream.is_empty());
}

#[test]
fn a_frame_split_anywhere_waits_for_the_rest() {
    let whole = encoded(Frame::Stdout(Bytes::from_static(b"hello world")));
    for cut in 0..whole.len() {
        let mut part = BytesMut::from(&whole[..cut]);
        assert_eq!(FrameCodec.decode(&mut part).unwrap(), None, "cut at {cut}");
        part.extend_from_slice(&whole[cut..]);
        assert_eq!(
            FrameCodec.decode(&mut part).unwrap(),
            Some(Frame::Stdout(Bytes::from_static(b"hello world")))
        );
    }
}

#[test]
fn oversized_unknown_and_malformed_frames_are_refused() {
    let mut big = BytesMut::new();
    big.put_u8(1);
    big.put_u32((MAX_PAYLOAD + 1) as u32);
    assert!(matches!(
        FrameCodec.decode(&mut big),
        Err(FrameError::TooLarge(_))
    ));
    let mut unknown = BytesMut::from(&[9u8, 0, 0, 0, 0][..]);
    assert!(matches!(
        FrameCodec.decode(&mut unknown),
        Err(FrameError::UnknownKind(9))
    ));
    let mut short_exit = BytesMut::from(&[5u8, 0, 0, 0, 2, 0, 1][..]);
    let err = FrameCodec.decode(&mut short_exit).unwrap_err();
    assert!(
        err.to_string().contains("exit frame has a 2-byte payload"),
        "{err}"
    );
}

#[test]
fn exec_params_travel_in_a_header_with_any_bytes() {
    let params = ExecParams {
        replica: Some(2),
        command: vec!["sh".into(), "-c".into(), "echo \"a b\" é\n; exit 3".into()],
        tty: true,
        stdin: true,
        timeout_secs: Some(30),
        cols: 80,
        rows: 24,
    };
    let header = params.to_header();
    assert!(http::HeaderValue::from_str(&header).is_ok());
    assert_eq!(ExecParams::from_header(&header).unwrap(), params);
    let err = ExecParams::from_header("not base64!").unwrap_err();
    assert!(err.contains("haloy-exec"), "{err}");
}

#[test]
fn tunnel_queries_need_a_valid_port() {
    assert_eq!(parse_tunnel_query("port=5432").unwrap(), (5432, None));
    assert_eq!(
        parse_tunnel_query("replica=1&port=80").unwrap(),
        (80, Some(1))
    );
    assert!(parse_tunnel_query("").unwrap_err().contains("port=P"));
    assert!(parse_tunnel_query("port=0")
        .unwrap_err()
        .contains("1-65535"));
    assert!(parse_tunnel_query("port=80&host=10.0.0.1")
        .unwrap_err()
        .contains("unknown tunnel parameter `host`"));
}
