//! The upgraded API streams of `haloy exec` and `haloy tunnel`: their request parameters and
//! the small framed protocol an exec session speaks after `101 Switching Protocols`.
//!
//! A frame is one kind byte, a big-endian u32 payload length and the payload:
//!
//! | kind | name | direction | payload |
//! |---|---|---|---|
//! | 0 | stdin | client → haloyd | bytes for the process's stdin |
//! | 1 | stdout | haloyd → client | bytes (the TTY's output with a TTY) |
//! | 2 | stderr | haloyd → client | bytes |
//! | 3 | resize | client → haloyd | u16 columns, u16 rows (big-endian) |
//! | 4 | stdin-eof | client → haloyd | empty: the process's stdin ends |
//! | 5 | exit | haloyd → client | u32 exit status; the last frame of a session |
//! | 6 | error | haloyd → client | UTF-8 message (e.g. the timeout); an exit follows |
//!
//! A tunnel stream carries raw TCP bytes, no frames.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use serde::{Deserialize, Serialize};
use tokio_util::codec::{Decoder, Encoder};

/// `Upgrade:` protocol token of an exec session.
pub const EXEC_PROTOCOL: &str = "haloy-exec.v1";
/// `Upgrade:` protocol token of a tunnel connection.
pub const TUNNEL_PROTOCOL: &str = "haloy-tunnel.v1";
/// Request header carrying [`ExecParams`] as base64url (no padding) JSON.
pub const EXEC_PARAMS_HEADER: &str = "haloy-exec";
/// Exit status reported when the command ran past its timeout and was killed (as `timeout(1)`).
pub const TIMEOUT_EXIT_STATUS: u32 = 124;

/// Frame payloads above this are refused (the sender splits its data).
pub const MAX_PAYLOAD: usize = 1024 * 1024;
const HEADER_LEN: usize = 5;

/// What `GET /v1/apps/{app}/exec` runs.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecParams {
    /// Replica index; the first running replica when None.
    #[serde(default)]
    pub replica: Option<u32>,
    pub command: Vec<String>,
    #[serde(default)]
    pub tty: bool,
    #[serde(default)]
    pub stdin: bool,
    /// Seconds; the process is killed after this and the exit status is 124.
    #[serde(default)]
    pub timeout_secs: Option<u64>,
    /// Initial TTY size.
    #[serde(default)]
    pub cols: u16,
    #[serde(default)]
    pub rows: u16,
}

impl ExecParams {
    /// The header value: base64url JSON, so any command bytes fit in a header.
    pub fn to_header(&self) -> String {
        use base64::Engine;
        let json = serde_json::to_vec(self).unwrap_or_default();
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(json)
    }

    pub fn from_header(value: &str) -> Result<ExecParams, String> {
        use base64::Engine;
        let json = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(value.trim())
            .map_err(|e| format!("`{EXEC_PARAMS_HEADER}` header is not base64url: {e}"))?;
        serde_json::from_slice(&json)
            .map_err(|e| format!("`{EXEC_PARAMS_HEADER}` header is not valid exec JSON: {e}"))
    }
}

/// One message of an exec session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    Stdin(Bytes),
    Stdout(Bytes),
    Stderr(Bytes),
    Resize { cols: u16, rows: u16 },
    StdinEof,
    Exit(u32),
    Error(String),
}

impl Frame {
    fn kind(&self) -> u8 {
        match self {
            Frame::Stdin(_) => 0,
            Frame::Stdout(_) => 1,
            Frame::Stderr(_) => 2,
            Frame::Resize { .. } => 3,
            Frame::StdinEof => 4,
            Frame::Exit(_) => 5,
            Frame::Error(_) => 6,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("exec stream: unknown frame kind {0}")]
    UnknownKind(u8),
    #[error("exec stream: frame of {0} bytes is above the {MAX_PAYLOAD}-byte limit")]
    TooLarge(usize),
    #[error("exec stream: {kind} frame has a {len}-byte payload, expected {expected}")]
    BadLength {
        kind: &'static str,
        len: usize,
        expected: usize,
    },
    #[error("exec stream: {0}")]
    Io(#[from] std::io::Error),
}

/// Encodes and decodes [`Frame`]s (tokio-util codec).
#[derive(Debug, Default, Clone, Copy)]
pub struct FrameCodec;

fn fixed<const N: usize>(kind: &'static str, payload: &[u8]) -> Result<[u8; N], FrameError> {
    payload.try_into().map_err(|_| FrameError::BadLength {
        kind,
        len: payload.len(),
        expected: N,
    })
}

impl Decoder for FrameCodec {
    type Item = Frame;
    type Error = FrameError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Frame>, FrameError> {
        if src.len() < HEADER_LEN {
            return Ok(None);
        }
        let kind = src[0];
        let len = u32::from_be_bytes([src[1], src[2], src[3], src[4]]) as usize;
        if len > MAX_PAYLOAD {
            return Err(FrameError::TooLarge(len));
        }
        if src.len() < HEADER_LEN + len {
            src.reserve(HEADER_LEN + len - src.len());
            return Ok(None);
        }
        src.advance(HEADER_LEN);
        let payload = src.split_to(len).freeze();
        let frame = match kind {
            0 => Frame::Stdin(payload),
            1 => Frame::Stdout(payload),
            2 => Frame::Stderr(payload),
            3 => {
                let b: [u8; 4] = fixed("resize", &payload)?;
                Frame::Resize {
                    cols: u16::from_be_bytes([b[0], b[1]]),
                    rows: u16::from_be_bytes([b[2], b[3]]),
                }
            }
            4 => Frame::StdinEof,
            5 => Frame::Exit(u32::from_be_bytes(fixed("exit", &payload)?)),
            6 => Frame::Error(String::from_utf8_lossy(&payload).into_owned()),
            other => return Err(FrameError::UnknownKind(other)),
        };
        Ok(Some(frame))
    }
}

impl Encoder<Frame> for FrameCodec {
    type Error = FrameError;

    fn encode(&mut self, frame: Frame, dst: &mut BytesMut) -> Result<(), FrameError> {
        let kind = frame.kind();
        let payload: Bytes = match frame {
            Frame::Stdin(b) | Frame::Stdout(b) | Frame::Stderr(b) => b,
            Frame::Resize { cols, rows } => {
                let mut b = BytesMut::with_capacity(4);
                b.put_u16(cols);
                b.put_u16(rows);
                b.freeze()
            }
            Frame::StdinEof => Bytes::new(),
            Frame::Exit(status) => Bytes::copy_from_slice(&status.to_be_bytes()),
            Frame::Error(message) => Bytes::from(message),
        };
        if payload.len() > MAX_PAYLOAD {
            return Err(FrameError::TooLarge(payload.len()));
        }
        dst.reserve(HEADER_LEN + payload.len());
        dst.put_u8(kind);
        dst.put_u32(payload.len() as u32);
        dst.put_slice(&payload);
        Ok(())
    }
}

/// Writes one frame and flushes it (the sessions send few, small frames).
pub async fn write_frame<W>(writer: &mut W, frame: Frame) -> Result<(), FrameError>
where
    W: tokio::io::AsyncWrite + Unpin,
{
    use tokio::io::AsyncWriteExt;
    let mut buf = BytesMut::new();
    FrameCodec.encode(frame, &mut buf)?;
    writer.write_all(&buf).await?;
    writer.flush().await?;
    Ok(())
}

/// Parses the tunnel query `port=P[&replica=N]`.
pub fn parse_tunnel_query(query: &str) -> Result<(u16, Option<u32>), String> {
    let mut port = None;
    let mut replica = None;
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        match key {
            "port" => {
                port = Some(
                    value
                        .parse::<u16>()
                        .ok()
                        .filter(|p| *p > 0)
                        .ok_or_else(|| format!("`port={value}` is not a TCP port (1-65535)"))?,
                )
            }
            "replica" => {
                replica = Some(
                    value
                        .parse::<u32>()
                        .map_err(|_| format!("`replica={value}` is not a replica index"))?,
                )
            }
            other => return Err(format!("unknown tunnel parameter `{other}`")),
        }
    }
    let port = port.ok_or_else(|| "the tunnel needs `port=P`".to_string())?;
    Ok((port, replica))
}

#[cfg(test)]
#[path = "tests/stream.rs"]
mod tests;
