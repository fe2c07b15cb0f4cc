//! Latency classes that follow async tasks.
//!
//! An async task runs on whichever executor thread polls it, and can move
//! between threads at every `.await`, so a thread's class cannot be scoped
//! across an await with [`latency_class_scope`](crate::latency_class_scope)
//! (its guard is not `Send`, on purpose). Instead, [`HintExt::with_latency_class`]
//! wraps a future: each time it is polled, the polling thread takes the class
//! and gets its own class back when the poll returns. That costs a load and
//! two stores per poll, no syscall. The wrapped future is `Send` when the
//! inner one is, so it can be spawned on any executor.
//!
//! ```
//! use scx_hints::{latency_class, HintExt, LatencyClass};
//!
//! let work = async { latency_class() }.with_latency_class(LatencyClass::Background);
//! // A minimal executor: the future is ready at its first poll.
//! let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
//! let mut work = std::pin::pin!(work);
//! assert_eq!(
//!     work.as_mut().poll(&mut cx),
//!     std::task::Poll::Ready(LatencyClass::Background)
//! );
//! assert_eq!(latency_class(), LatencyClass::Normal); // the thread's own class
//! # use std::future::Future;
//! ```
//!
//! Executor threads and thread pools get a class for all their work with
//! their thread-start hooks (tokio's `on_thread_start`, rayon's
//! `start_handler`); tests/recipes.rs shows and tests each recipe.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use crate::{latency_class_scope, LatencyClass};

/// A future that runs in a latency class (see [`HintExt::with_latency_class`]).
#[must_use = "futures do nothing unless polled"]
#[derive(Debug)]
pub struct WithLatencyClass<F> {
    inner: F,
    class: LatencyClass,
}

impl<F: Future> Future for WithLatencyClass<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let class = self.class;
        // SAFETY: `inner` is structurally pinned: it is never moved out of
        // `self`, and no other method hands out `&mut F`.
        let inner = unsafe { self.map_unchecked_mut(|s| &mut s.inner) };
        // Restores the thread's class when the poll returns or unwinds.
        let _class = latency_class_scope(class);
        inner.poll(cx)
    }
}

/// Scheduler hints for futures.
pub trait HintExt: Future + Sized {
    /// Runs this future in `class`: whichever thread polls it takes the class
    /// for the duration of each poll.
    fn with_latency_class(self, class: LatencyClass) -> WithLatencyClass<Self> {
        WithLatencyClass { inner: self, class }
    }
}

impl<F: Future> HintExt for F {}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{latency_class, set_latency_class};
    use std::task::Waker;

    /// Pending at its first poll, ready at the second, recording the
    /// polling thread's class each time.
    struct TwoPolls(Vec<LatencyClass>);

    impl Future for TwoPolls {
        type Output = Vec<LatencyClass>;
        fn poll(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Self::Output> {
            self.0.push(latency_class());
            if self.0.len() < 2 {
                Poll::Pending
            } else {
                Poll::Ready(std::mem::take(&mut self.0))
            }
        }
    }

    fn assert_send<T: Send>(_: &T) {}

    #[test]
    fn class_holds_while_polled_and_is_restored_between_polls() {
        std::thread::spawn(|| {
            set_latency_class(LatencyClass::Interactive);
            let fut = TwoPolls(Vec::new()).with_latency_class(LatencyClass::Background);
            assert_send(&fut);
            let mut fut = std::pin::pin!(fut);
            let mut cx = Context::from_waker(Waker::noop());
            assert!(fut.as_mut().poll(&mut cx).is_pending());
            assert_eq!(latency_class(), LatencyClass::Interactive);
            let Poll::Ready(seen) = fut.as_mut().poll(&mut cx) else {
                panic!("ready at the second poll");
            };
            assert_eq!(seen, [LatencyClass::Background; 2]);
            assert_eq!(latency_class(), LatencyClass::Interactive);
        })
        .join()
        .unwrap();
    }

    #[test]
    fn a_panicking_poll_restores_the_class() {
        std::thread::spawn(|| {
            set_latency_class(LatencyClass::Batch);
            let fut = async { panic!("inside") }.with_latency_class(LatencyClass::Critical);
            let mut fut = std::pin::pin!(fut);
            let mut cx = Context::from_waker(Waker::noop());
            let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                let _ = fut.as_mut().poll(&mut cx);
            }));
            assert!(r.is_err());
            assert_eq!(latency_class(), LatencyClass::Batch);
        })
        .join()
        .unwrap();
    }
}
