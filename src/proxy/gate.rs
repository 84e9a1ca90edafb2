//! Futures a connection's task polls on every wake-up although they rarely have anything to
//! do: the listener's stop signal and the quiet watch's timer. [`gated`] polls such a future
//! only after its own waker fired, so a busy keep-alive connection (two wake-ups per request)
//! does not lock the stop token's mutexes or touch the timer on each of them.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};

use futures_util::task::AtomicWaker;

pin_project_lite::pin_project! {
    /// `inner`, polled only when its waker fired since its last poll (and on the first poll).
    pub(crate) struct Gated<F> {
        #[pin]
        inner: F,
        signal: Arc<Signal>,
        inner_waker: Waker,
        // The task waker `signal` holds, so an unchanged one is not registered again.
        task: Option<Waker>,
    }
}

/// The waker `inner` is polled with: records that it fired and wakes the task.
struct Signal {
    fired: AtomicBool,
    task: AtomicWaker,
}

impl Wake for Signal {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.fired.store(true, Ordering::Release);
        self.task.wake();
    }
}

/// `inner` behind a gate; see [`Gated`]. One allocation, made when the future is created.
pub(crate) fn gated<F: Future>(inner: F) -> Gated<F> {
    let signal = Arc::new(Signal {
        fired: AtomicBool::new(true),
        task: AtomicWaker::new(),
    });
    Gated {
        inner,
        inner_waker: Waker::from(Arc::clone(&signal)),
        signal,
        task: None,
    }
}

impl<F: Future> Future for Gated<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.project();
        let fired = this.signal.fired.load(Ordering::Acquire)
            && this.signal.fired.swap(false, Ordering::AcqRel);
        let same_task = this.task.as_ref().is_some_and(|t| t.will_wake(cx.waker()));
        // A firing takes the task waker out of `signal`: it is registered again after each
        // one (after `fired` was cleared, so a firing from here on wakes the task).
        if fired || !same_task {
            this.signal.task.register(cx.waker());
            if !same_task {
                *this.task = Some(cx.waker().clone());
            }
        }
        if !fired {
            return Poll::Pending;
        }
        this.inner.poll(&mut Context::from_waker(this.inner_waker))
    }
}

#[cfg(test)]
#[path = "tests/gate.rs"]
mod tests;
