use std::future::Future;
use std::pin::pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};

use super::gated;

/// Counts the task's wake-ups.
#[derive(Default)]
struct Counter(AtomicUsize);

impl Wake for Counter {
    fn wake(self: Arc<Self>) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

/// A future that counts its polls and is ready once `ready` is set; its waker is kept so
/// the test can fire it.
#[derive(Default)]
struct Probe {
    polls: AtomicUsize,
    ready: std::sync::atomic::AtomicBool,
    waker: std::sync::Mutex<Option<Waker>>,
}

impl Probe {
    fn fire(&self) {
        if let Some(w) = self.waker.lock().unwrap().take() {
            w.wake();
        }
    }
}

struct Polled<'a>(&'a Probe);

impl Future for Polled<'_> {
    type Output = ();
    fn poll(self: std::pin::Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        self.0.polls.fetch_add(1, Ordering::SeqCst);
        *self.0.waker.lock().unwrap() = Some(cx.waker().clone());
        if self.0.ready.load(Ordering::SeqCst) {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }
}

#[test]
fn the_inner_future_is_polled_first_and_then_only_after_its_waker_fired() {
    let probe = Probe::default();
    let task = Arc::new(Counter::default());
    let waker = Waker::from(Arc::clone(&task));
    let mut cx = Context::from_waker(&waker);
    let mut fut = pin!(gated(Polled(&probe)));

    assert!(fut.as_mut().poll(&mut cx).is_pending());
    assert_eq!(probe.polls.load(Ordering::SeqCst), 1);
    // Wake-ups of the task for other reasons skip the inner future.
    for _ in 0..5 {
        assert!(fut.as_mut().poll(&mut cx).is_pending());
    }
    assert_eq!(probe.polls.load(Ordering::SeqCst), 1);

    // Its waker firing wakes the task and lets the next poll through, every time.
    for round in 2..5 {
        probe.fire();
        assert_eq!(task.0.load(Ordering::SeqCst), round - 1, "task not woken");
        assert!(fut.as_mut().poll(&mut cx).is_pending());
        assert_eq!(probe.polls.load(Ordering::SeqCst), round);
    }

    probe.ready.store(true, Ordering::SeqCst);
    probe.fire();
    assert!(fut.as_mut().poll(&mut cx).is_ready());
}

#[test]
fn a_new_task_waker_is_the_one_woken() {
    let probe = Probe::default();
    let first = Arc::new(Counter::default());
    let second = Arc::new(Counter::default());
    let mut fut = pin!(gated(Polled(&probe)));
    let w1 = Waker::from(Arc::clone(&first));
    assert!(fut
        .as_mut()
        .poll(&mut Context::from_waker(&w1))
        .is_pending());
    let w2 = Waker::from(Arc::clone(&second));
    assert!(fut
        .as_mut()
        .poll(&mut Context::from_waker(&w2))
        .is_pending());
    probe.fire();
    assert_eq!(first.0.load(Ordering::SeqCst), 0);
    assert_eq!(second.0.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_gated_timer_and_token_still_fire_in_a_runtime() {
    let token = tokio_util::sync::CancellationToken::new();
    let sleep = gated(tokio::time::sleep(std::time::Duration::from_millis(5)));
    sleep.await;
    let cancelled = gated(token.cancelled());
    let cancel = token.clone();
    tokio::spawn(async move {
        tokio::task::yield_now().await;
        cancel.cancel();
    });
    cancelled.await;
}
