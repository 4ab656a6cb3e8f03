//! A future that is polled again only once it asked to be.
//!
//! A connection task wakes for every read and write, and `select!` polls every branch each
//! time. A future waiting on something all connections share (the lifecycle, the abort
//! token) locks that shared thing's mutex whenever it is polled, so under load the worker
//! threads contend for it and put each other to sleep. Wrapped in [`WhenWoken`], such a
//! future is polled only after its own waker fired: between lifecycle changes, it costs a
//! connection nothing.

use std::{
    future::Future,
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    task::{Context, Poll, Wake, Waker},
};

use futures_util::task::AtomicWaker;

pub(crate) struct WhenWoken<F> {
    inner: Pin<Box<F>>,
    woken: Arc<Woken>,
}

/// The waker handed to the inner future: remembers that it fired, then wakes the task.
struct Woken {
    fired: AtomicBool,
    task: AtomicWaker,
}

impl<F: Future> WhenWoken<F> {
    pub(crate) fn new(inner: F) -> Self {
        Self {
            inner: Box::pin(inner),
            // Fired, so that the first poll registers the inner future's interest.
            woken: Arc::new(Woken {
                fired: AtomicBool::new(true),
                task: AtomicWaker::new(),
            }),
        }
    }
}

impl<F: Future> Future for WhenWoken<F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        self.woken.task.register(cx.waker());
        if !self.woken.fired.swap(false, Ordering::AcqRel) {
            return Poll::Pending;
        }
        let waker = Waker::from(self.woken.clone());
        self.inner.as_mut().poll(&mut Context::from_waker(&waker))
    }
}

impl Wake for Woken {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.fired.store(true, Ordering::Release);
        self.task.wake();
    }
}

#[cfg(test)]
mod tests {
    use std::{future::poll_fn, sync::atomic::AtomicUsize, task::Poll};

    use tokio::sync::Notify;

    use super::*;

    #[tokio::test]
    async fn polls_the_inner_future_only_after_its_waker_fired() {
        let notify = Arc::new(Notify::new());
        let polls = Arc::new(AtomicUsize::new(0));
        let inner = {
            let (notify, polls) = (notify.clone(), polls.clone());
            async move {
                let mut notified = std::pin::pin!(notify.notified());
                poll_fn(|cx| {
                    polls.fetch_add(1, Ordering::Relaxed);
                    notified.as_mut().poll(cx)
                })
                .await
            }
        };
        let mut wrapped = std::pin::pin!(WhenWoken::new(inner));
        let poll_once = |wrapped: Pin<&mut WhenWoken<_>>| {
            let waker = Waker::noop();
            wrapped.poll(&mut Context::from_waker(waker))
        };

        assert!(poll_once(wrapped.as_mut()).is_pending());
        assert!(poll_once(wrapped.as_mut()).is_pending());
        assert!(poll_once(wrapped.as_mut()).is_pending());
        assert_eq!(polls.load(Ordering::Relaxed), 1, "woken once, polled once");

        notify.notify_one();
        assert_eq!(poll_once(wrapped.as_mut()), Poll::Ready(()));
        assert_eq!(polls.load(Ordering::Relaxed), 2);
    }
}
