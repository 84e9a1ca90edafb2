//! The backend response timeout without a timer per request. On an HTTP/1 connection the
//! request's future runs inside the connection's task, and that task is woken at least every
//! `Watch::tick` by the connection's watch (see `server::ConnActivity::watch`), which polls the
//! in-flight request; the request then compares the clock with its deadline. Registering a
//! tokio timer per request instead cost about a fifth of the proxy's CPU time per request
//! (measured with integration-tests/bench/proxy.sh). HTTP/2 streams run in tasks of their own
//! and keep tokio's timer.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

/// The deadline passed before the future finished.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TimedOut;

/// How often a connection's watch wakes its task while a request waits for its backend:
/// a quarter of the response timeout, so a timeout fires at most 25 % late.
pub(crate) fn tick_for(response_timeout: Duration) -> Duration {
    response_timeout / 4
}

/// `future`, or `TimedOut` once `deadline` passed, checked whenever the task polls it again.
pub(crate) fn polled_timeout<F: Future>(deadline: Instant, future: F) -> PolledTimeout<F> {
    PolledTimeout {
        future,
        deadline,
        polled: false,
    }
}

pin_project_lite::pin_project! {
    /// See [`polled_timeout`].
    pub(crate) struct PolledTimeout<F> {
        #[pin]
        future: F,
        deadline: Instant,
        polled: bool,
    }
}

impl<F: Future> Future for PolledTimeout<F> {
    type Output = Result<F::Output, TimedOut>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        if let Poll::Ready(out) = this.future.poll(cx) {
            return Poll::Ready(Ok(out));
        }
        // The first poll comes right after the deadline was set: no clock read for it.
        let first = !std::mem::replace(this.polled, true);
        if !first && Instant::now() >= *this.deadline {
            return Poll::Ready(Err(TimedOut));
        }
        Poll::Pending
    }
}

/// `future` under tokio's timer (for futures no connection watch polls).
pub(crate) async fn timer_timeout<F: Future>(
    timeout: Duration,
    future: F,
) -> Result<F::Output, TimedOut> {
    tokio::time::timeout(timeout, future)
        .await
        .map_err(|_| TimedOut)
}
