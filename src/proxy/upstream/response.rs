//! A backend's response body read straight from its connection: Content-Length, chunked or
//! close-delimited. Once the body is complete the connection can go back to the pool.

use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::Bytes;
use hyper::body::SizeHint;

use super::codec::{BodyFraming, Chunked, Decoded, ResponseFraming, Verbatim};
use super::{UpstreamConn, UpstreamError, READ_BUFFER};

#[derive(Debug)]
enum State {
    Length(u64),
    Chunked(Chunked),
    UntilClose,
    Done,
}

/// The body of one backend response; owns the connection until the body ended.
#[derive(Debug)]
pub(crate) struct ResponseBody {
    conn: Option<UpstreamConn>,
    state: State,
    keep_alive: bool,
    /// The head's fields, when they pass to the client as they are.
    verbatim: Option<Verbatim>,
}

impl ResponseBody {
    pub(crate) fn new(
        conn: UpstreamConn,
        framing: ResponseFraming,
        verbatim: Option<Verbatim>,
    ) -> Self {
        let state = match framing.body {
            BodyFraming::Empty | BodyFraming::Length(0) => State::Done,
            BodyFraming::Length(n) => State::Length(n),
            BodyFraming::Chunked => State::Chunked(Chunked::Size),
            BodyFraming::UntilClose => State::UntilClose,
        };
        Self {
            conn: Some(conn),
            state,
            keep_alive: framing.keep_alive,
            verbatim,
        }
    }

    /// The head's fields as the backend wrote them, when they pass on so.
    pub(crate) fn verbatim(&self) -> Option<&Verbatim> {
        self.verbatim.as_ref()
    }

    /// The next piece of body data; `None` once the body ended.
    pub(crate) fn poll_data(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Bytes, UpstreamError>>> {
        match self.poll_step(cx) {
            Poll::Ready(Some(Err(e))) => {
                // A broken body leaves the connection in an unknown state.
                self.conn = None;
                self.state = State::Done;
                Poll::Ready(Some(Err(e)))
            }
            other => other,
        }
    }

    fn poll_step(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Bytes, UpstreamError>>> {
        loop {
            let Some(conn) = self.conn.as_mut() else {
                return Poll::Ready(None);
            };
            let buf = &mut conn.read_buf;
            match &mut self.state {
                State::Done => return Poll::Ready(None),
                State::Length(remaining) if !buf.is_empty() => {
                    let n = usize::try_from(*remaining).map_or(buf.len(), |r| r.min(buf.len()));
                    *remaining -= n as u64;
                    if *remaining == 0 {
                        self.state = State::Done;
                    }
                    return Poll::Ready(Some(Ok(buf.split_to(n).freeze())));
                }
                State::UntilClose if !buf.is_empty() => {
                    return Poll::Ready(Some(Ok(buf.split().freeze())));
                }
                State::Chunked(decoder) => match decoder.decode(buf) {
                    Ok(Decoded::Data(data)) => return Poll::Ready(Some(Ok(data))),
                    Ok(Decoded::End) => {
                        self.state = State::Done;
                        return Poll::Ready(None);
                    }
                    Ok(Decoded::NeedMore) => {}
                    Err(e) => return Poll::Ready(Some(Err(e))),
                },
                State::Length(_) | State::UntilClose => {}
            }
            let read = ready!(poll_fill(conn, cx));
            match read {
                Ok(0) if matches!(self.state, State::UntilClose) => {
                    self.state = State::Done;
                    self.keep_alive = false;
                    return Poll::Ready(None);
                }
                Ok(0) => return Poll::Ready(Some(Err(UpstreamError::Closed))),
                Ok(_) => {}
                Err(e) => return Poll::Ready(Some(Err(UpstreamError::Read(e)))),
            }
        }
    }

    /// True when the rest of the body is already in the read buffer (or there is none).
    pub(crate) fn is_buffered(&self) -> bool {
        let buffered = self.conn.as_ref().map_or(0, |c| c.read_buf.len() as u64);
        match self.state {
            State::Done => true,
            State::Length(n) => buffered >= n,
            State::Chunked(_) | State::UntilClose => false,
        }
    }

    /// True once every body byte was delivered.
    pub(crate) fn is_end_stream(&self) -> bool {
        matches!(self.state, State::Done)
    }

    pub(crate) fn size_hint(&self) -> SizeHint {
        match self.state {
            State::Done => SizeHint::with_exact(0),
            State::Length(n) => SizeHint::with_exact(n),
            State::Chunked(_) | State::UntilClose => SizeHint::default(),
        }
    }

    /// The connection, once the body ended and the backend keeps the connection open for
    /// another request.
    pub(crate) fn take_reusable(&mut self) -> Option<UpstreamConn> {
        let clean = self.is_end_stream()
            && self.keep_alive
            && self.conn.as_ref().is_some_and(|c| c.read_buf.is_empty());
        if clean {
            self.conn.take()
        } else {
            None
        }
    }
}

fn poll_fill(conn: &mut UpstreamConn, cx: &mut Context<'_>) -> Poll<std::io::Result<usize>> {
    if conn.read_buf.capacity() - conn.read_buf.len() < 4096 {
        conn.read_buf.reserve(READ_BUFFER);
    }
    tokio_util::io::poll_read_buf(Pin::new(&mut conn.stream), cx, &mut conn.read_buf)
}
