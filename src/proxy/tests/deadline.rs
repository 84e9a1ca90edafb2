//! Unit tests of `proxy::deadline`.

use std::future::{pending, ready};
use std::task::Waker;

use super::*;

fn poll_once<F: Future>(fut: Pin<&mut F>) -> Poll<F::Output> {
    fut.poll(&mut Context::from_waker(Waker::noop()))
}

#[test]
fn polled_deadline_fires_on_the_next_poll_after_it_passed() {
    let past = Instant::now() - Duration::from_secs(1);
    let mut fut = std::pin::pin!(polled(past, pending::<()>()));
    // The first poll never reads the clock.
    assert!(poll_once(fut.as_mut()).is_pending());
    assert_eq!(poll_once(fut.as_mut()), Poll::Ready(Err(TimedOut)));
}

#[test]
fn polled_deadline_in_the_future_stays_pending_and_ready_output_wins() {
    let later = Instant::now() + Duration::from_secs(60);
    let mut waiting = std::pin::pin!(polled(later, pending::<()>()));
    assert!(poll_once(waiting.as_mut()).is_pending());
    assert!(poll_once(waiting.as_mut()).is_pending());
    let past = Instant::now() - Duration::from_secs(1);
    let mut done = std::pin::pin!(polled(past, ready(7)));
    assert_eq!(poll_once(done.as_mut()), Poll::Ready(Ok(7)));
}

#[tokio::test]
async fn timed_deadline_fires_by_tokio_timer() {
    let started = Instant::now();
    let out = timed(Duration::from_millis(30), pending::<()>()).await;
    assert_eq!(out, Err(TimedOut));
    assert!(started.elapsed() >= Duration::from_millis(30));
    assert_eq!(timed(Duration::from_secs(5), ready(1)).await, Ok(1));
}
