//! The response future of middleware that can answer at once.
//!
//! A rate limiter's local rejection and a response cache's in-process hit are
//! known in the middleware's `call`: they need no boxed state machine, no clone of the
//! inner service and no trip through the executor. [`MaybeReady`] holds either that
//! answer or the boxed future of the slow path.
//!
//! ```
//! use larder_core::future::{BoxedOrReady, MaybeReady};
//!
//! # let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
//! # rt.block_on(async {
//! let now: BoxedOrReady<u32> = MaybeReady::ready(7);
//! let later: BoxedOrReady<u32> = MaybeReady::Running(Box::pin(async { 8 }));
//! assert_eq!(now.await + later.await, 15);
//! # });
//! ```

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

/// An answer already made, or a running (boxed, hence `Unpin`) future.
pub enum MaybeReady<F, T> {
    /// Waiting for the slow path.
    Running(F),
    /// Answered already; `None` once taken.
    Ready(Option<T>),
}

/// A boxed `Send` future or an answer made at once (Tower services).
pub type BoxedOrReady<T> = MaybeReady<Pin<Box<dyn Future<Output = T> + Send>>, T>;

/// A boxed local future or an answer made at once (Actix-web services, which run on
/// one thread).
pub type LocalBoxedOrReady<T> = MaybeReady<Pin<Box<dyn Future<Output = T>>>, T>;

impl<F, T> MaybeReady<F, T> {
    /// An answer made at once.
    pub fn ready(value: T) -> Self {
        Self::Ready(Some(value))
    }
}

impl<F, T> std::fmt::Debug for MaybeReady<F, T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Running(_) => "MaybeReady::Running",
            Self::Ready(_) => "MaybeReady::Ready",
        })
    }
}

// Sound: nothing inside is ever pinned in place (the running future is `Unpin`, and
// the ready value is only moved out).
impl<F: Unpin, T> Unpin for MaybeReady<F, T> {}

impl<F: Future<Output = T> + Unpin, T> Future for MaybeReady<F, T> {
    type Output = T;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<T> {
        match self.get_mut() {
            Self::Running(future) => Pin::new(future).poll(cx),
            Self::Ready(value) => {
                Poll::Ready(value.take().expect("MaybeReady polled after completion"))
            }
        }
    }
}
