//! The backend response timeout without a timer per request. On an HTTP/1 connection the
//! request's future runs inside the connection's task, and that task is woken at least every
//! quarter of the response timeout by the connection's watch (`server::ConnActivity::watch`),
//! which polls the in-flight request; the request then compares the clock with its deadline.
//! Registering a tokio timer per request instead cost about a fifth of the proxy's CPU time per
//! request (measured with integration-tests/bench/proxy.sh). HTTP/2 streams run in tasks of
//! their own and keep tokio's timer.

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
pub(crate) fn polled<F: Future>(deadline: Instant, future: F) -> Deadline<F> {
    Deadline {
        future,
        clock: Clock::Polled {
            deadline,
            first_poll: true,
        },
    }
}

/// `future`, or `TimedOut` after `timeout`, by tokio's timer (for futures no connection watch
/// polls). The timer is boxed so both kinds of deadline have the same small size.
pub(crate) fn timed<F: Future>(timeout: Duration, future: F) -> Deadline<F> {
    Deadline {
        future,
        clock: Clock::Timer(Box::pin(tokio::time::sleep(timeout))),
    }
}

enum Clock {
    Polled { deadline: Instant, first_poll: bool },
    Timer(Pin<Box<tokio::time::Sleep>>),
}

pin_project_lite::pin_project! {
    /// A future with a response deadline; see [`polled`] and [`timed`].
    pub(crate) struct Deadline<F> {
        #[pin]
        future: F,
        clock: Clock,
    }
}

impl<F: Future> Future for Deadline<F> {
    type Output = Result<F::Output, TimedOut>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        if let Poll::Ready(out) = this.future.poll(cx) {
            return Poll::Ready(Ok(out));
        }
        let passed = match this.clock {
            // The first poll comes right after the deadline was set: no clock read for it.
            Clock::Polled {
                first_poll: first @ true,
                ..
            } => {
                *first = false;
                false
            }
            Clock::Polled { deadline, .. } => Instant::now() >= *deadline,
            Clock::Timer(sleep) => sleep.as_mut().poll(cx).is_ready(),
        };
        if passed {
            Poll::Ready(Err(TimedOut))
        } else {
            Poll::Pending
        }
    }
}

#[cfg(test)]
#[path = "tests/deadline.rs"]
mod tests;
