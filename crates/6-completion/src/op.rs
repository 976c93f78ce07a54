//! One request as a future, and why it must *own* its buffer.
//!
//! Lesson 5's `read(&mut buf)` borrowed the caller's buffer for as long as the future
//! lived, and only touched it inside `poll`, when epoll had said the fd was ready. Dropping
//! that future was harmless: the read had not happened, or had happened completely.
//!
//! With completions the kernel writes into the buffer *after* the submission, at a moment
//! no `poll` controls. Picture the same borrowed signature here:
//!
//! ```text
//! let mut buf = [0; 1024];
//! let read = stream.read(&mut buf);   // submits: "read fd 7 into buf"
//! race(read, sleep(1s)).await;        // the sleep wins: `read` is dropped…
//! drop(buf);                          // …the borrow ends, the stack frame is reused…
//!                                     // …and the kernel writes into it later. Unsound.
//! ```
//!
//! Nothing in Rust's type system stops this: dropping a future is safe code, and `Drop`
//! cannot wait. So a request's buffer is *moved into* the request and given back with the
//! result — `let (result, buf) = op.await` — and a future dropped before its completion
//! hands the buffer to the ring's slot ([`Driver::abandon`]), which asks the kernel to
//! cancel (`IORING_OP_ASYNC_CANCEL`) and frees the buffer only when the request's last
//! completion says the kernel is done with it. Cancelling is a request like any other: it
//! does not happen when we ask, and the original request may still complete with data.
//!
//! [`Driver::abandon`]: crate::ring::Driver::abandon

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use io_uring::squeue;

use crate::executor::{try_with_runtime, with_driver, with_runtime};
use crate::slots::{Completion, Token};

/// A submitted request and what it owns (its buffer, its timespec), until it completes.
pub struct Op<T: 'static> {
    token: Option<Token>,
    owned: Option<T>,
    /// Why the request could not even be submitted (the ring itself failed).
    failed: Option<io::Error>,
}

impl<T: 'static> Op<T> {
    /// Submits `entry`, whose pointers point into `owned`. Moving `owned` into the `Op`
    /// does not move what they point to: `owned` is a `Vec`, a `Box` or a provided buffer.
    pub fn submit(kind: &'static str, entry: squeue::Entry, owned: T) -> Op<T> {
        let (token, failed) = match with_driver(|driver| driver.submit(kind, entry)) {
            Ok(token) => (Some(token), None),
            Err(err) => (None, Some(err)),
        };
        Op {
            token,
            owned: Some(owned),
            failed,
        }
    }
}

impl<T: Unpin + 'static> Future for Op<T> {
    /// The result (a byte count, a new fd…) and the buffer, back in the caller's hands.
    type Output = (io::Result<u32>, T);

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        let Some(token) = this.token else {
            let err = this
                .failed
                .take()
                .unwrap_or_else(|| io::Error::other("the request was never submitted"));
            let owned = this
                .owned
                .take()
                .expect("an Op is polled after it finished");
            return Poll::Ready((Err(err), owned));
        };
        if !with_runtime(|runtime| runtime.budget.spend(cx)) {
            return Poll::Pending;
        }
        match with_driver(|driver| driver.poll_next(token, cx)) {
            Poll::Pending => {
                with_runtime(|runtime| runtime.budget.refund());
                Poll::Pending
            }
            Poll::Ready(completion) => {
                // A single-shot request has exactly one completion; take the slot's end too.
                with_driver(|driver| driver.abandon(token, Box::new(())));
                this.token = None;
                let result = completion.map_or_else(
                    || Err(io::Error::other("the request ended without a result")),
                    Completion::io_result,
                );
                let owned = this
                    .owned
                    .take()
                    .expect("an Op is polled after it finished");
                Poll::Ready((result, owned))
            }
        }
    }
}

impl<T: 'static> Drop for Op<T> {
    fn drop(&mut self) {
        let (Some(token), Some(owned)) = (self.token.take(), self.owned.take()) else {
            return;
        };
        // Dropped in flight: the ring keeps `owned` until the kernel is done with it. With
        // no runtime left (the process is ending), leaking it is the only sound choice.
        if try_with_runtime(|_| ()).is_none() {
            std::mem::forget(owned);
            return;
        }
        with_driver(|driver| driver.abandon(token, Box::new(owned)));
    }
}
