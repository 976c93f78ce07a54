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
//! Owning is not enough on its own: the buffer's bytes must also stay where the kernel was
//! told they are while the `Op` moves — the contract of [`IoBuf`](crate::buf::IoBuf) — and
//! the entry must point nowhere else. An entry is a plain value with raw pointers in it, and
//! the `io-uring` crate builds one in safe code from any pointer; so [`Op::submit`], which
//! hands an entry to the kernel, is an `unsafe fn` whose contract says where its pointers
//! may point, and each request that moves bytes is a safe function that builds its entry
//! from the buffer once the `Op` owns it ([`TcpStream::write_all`], [`Reader`],
//! [`append`]). Safe code cannot hand the kernel a pointer — not even a good one, since the
//! compiler cannot tell it from `bytes_on_the_stack.as_ptr()`:
//!
//! ```compile_fail,E0133
//! # use lesson_completion::op::Op;
//! # use io_uring::{opcode, types::Fd};
//! async fn send(fd: i32) {
//!     let op = Op::submit("send", vec![b'x'; 16], |bytes| {
//!         opcode::Send::new(Fd(fd), bytes.as_ptr(), 16).build()
//!     });
//!     let (sent, _bytes) = op.await;
//! }
//! ```
//!
//! The same call compiles inside `unsafe`, where the caller vouches for the pointer:
//!
//! ```no_run
//! # use lesson_completion::op::Op;
//! # use io_uring::{opcode, types::Fd};
//! async fn send(fd: i32) {
//!     // Safety: the entry points into the `Vec`'s heap bytes, which the `Op` owns until the
//!     // request's last completion.
//!     let op = unsafe {
//!         Op::submit("send", vec![b'x'; 16], |bytes| {
//!             opcode::Send::new(Fd(fd), bytes.as_ptr(), 16).build()
//!         })
//!     };
//!     let (sent, _bytes) = op.await;
//! }
//! ```
//!
//! [`Driver::abandon`]: crate::ring::Driver::abandon
//! [`TcpStream::write_all`]: crate::net::TcpStream::write_all
//! [`Reader`]: crate::io::Reader
//! [`append`]: crate::io::append

use std::future::Future;
use std::io;
use std::marker::PhantomData;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};

use io_uring::squeue;

use crate::executor::{RuntimeId, runtime_id, with_runtime, with_runtime_of};
use crate::slots::{Completion, Token};

/// A submitted request and what it owns (its buffer, its timespec), until its last
/// completion.
///
/// Most requests complete once. Some complete more than once for one submission, and only
/// the last completion (the one without `IORING_CQE_F_MORE`) says the kernel is done with
/// the buffer: a zero-copy send (`IORING_OP_SEND_ZC`) posts its result first, then a
/// notification once the kernel no longer reads the bytes — which, for TCP, is when the
/// peer has acknowledged them. So the `Op` keeps the first completion's result and gives it
/// back, with the buffer, at the last.
///
/// Its request is in this thread's ring: an `Op` is not `Send`, whatever it owns.
///
/// ```compile_fail,E0277
/// # use lesson_completion::op::Op;
/// fn await_elsewhere(op: Op<Vec<u8>>) {
///     std::thread::spawn(move || drop(op)); // error: cannot be sent between threads
/// }
/// ```
pub struct Op<T: 'static> {
    /// The runtime whose ring has the request: tokens mean nothing in another one.
    runtime: RuntimeId,
    token: Option<Token>,
    owned: Option<T>,
    /// The request's first completion — its result — while more are to come.
    first: Option<Completion>,
    /// Why the request could not even be submitted (the ring itself failed).
    failed: Option<io::Error>,
    on_this_thread: PhantomData<Rc<()>>,
}

impl<T: 'static> Op<T> {
    /// Moves `owned` into a new `Op`, builds the request with `entry` from the `Op`'s own
    /// copy of it, and pushes the request into the current runtime's ring. The kernel sees
    /// it at the loop's next `io_uring_enter`.
    ///
    /// # Safety
    /// Every pointer in the entry must stay valid, and be used by nobody else, until the
    /// request's last completion: it must point into the bytes `owned` keeps stable while
    /// moved (see [`IoBuf`](crate::buf::IoBuf): heap memory it owns, not `owned` itself),
    /// reached through the reference `entry` is given — or into memory that outlives the
    /// runtime. `owned` is dropped only after the last completion (or leaked). An fd number
    /// in the entry must stay the caller's until the kernel has issued the request: a
    /// [`RingFd`](crate::fd::RingFd)'s, from
    /// [`number_for_request`](crate::fd::RingFd::number_for_request), is closed through
    /// this ring after it.
    ///
    /// # Panics
    /// Outside `block_on`.
    pub unsafe fn submit(
        kind: &'static str,
        owned: T,
        entry: impl FnOnce(&mut T) -> squeue::Entry,
    ) -> Op<T> {
        let mut op = Op {
            runtime: runtime_id(),
            token: None,
            owned: Some(owned),
            first: None,
            failed: None,
            on_this_thread: PhantomData,
        };
        let entry = entry(op.owned.as_mut().expect("just put there"));
        // Safety: our caller promises the entry's pointers stay valid until the last
        // completion; the `Op` (or, once dropped, the request's slot) keeps `owned` until then.
        match with_runtime(|runtime| unsafe { runtime.driver.borrow_mut().submit(kind, entry) }) {
            Ok(token) => op.token = Some(token),
            Err(err) => op.failed = Some(err),
        }
        op
    }
}

impl<T: Unpin + 'static> Future for Op<T> {
    /// The result (a byte count, a new fd…: the first completion's) and the buffer, back in
    /// the caller's hands once the last completion has come.
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
        // Take completions until the last: only then is the kernel done with the buffer.
        loop {
            // Polled by another runtime, the request is still in ours: the buffer cannot be
            // given back while the kernel may use it. A program error, said at once.
            let polled = next_result(this.runtime, token, cx)
                .expect("an Op is polled by the runtime it was submitted to");
            let Some(completion) = std::task::ready!(polled) else {
                break; // the request has ended
            };
            // The first completion is the result; those after it only say when the kernel
            // lets go of the buffer.
            this.first.get_or_insert(completion);
            if !completion.more_to_come() {
                break;
            }
        }
        // The last completion has come: the kernel is done, and the slot is freed.
        with_runtime_of(this.runtime, |runtime| {
            drop(runtime.driver.borrow_mut().abandon(token, Box::new(())));
        });
        this.token = None;
        let result = this.first.take().map_or_else(
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

/// Takes the next result of request `token` of runtime `runtime`, within the polling task's
/// budget: `Pending` when the task must wait (its waker is stored, or the budget is spent),
/// `Ready(None)` when the request has ended — or `None` outside that runtime.
pub(crate) fn next_result(
    runtime: RuntimeId,
    token: Token,
    cx: &Context<'_>,
) -> Option<Poll<Option<Completion>>> {
    with_runtime_of(runtime, |runtime| {
        if !runtime.budget.spend(cx) {
            return Poll::Pending;
        }
        let polled = runtime.driver.borrow_mut().poll_next(token, cx);
        if polled.is_pending() {
            runtime.budget.refund();
        }
        polled
    })
}

impl<T: 'static> Drop for Op<T> {
    fn drop(&mut self) {
        let (Some(token), Some(owned)) = (self.token.take(), self.owned.take()) else {
            return;
        };
        // Dropped in flight: the ring keeps `owned` until the kernel is done with it — or
        // hands it back at once if the kernel already is, to be dropped here, once the
        // driver's borrow has ended (its `Drop` may need the runtime).
        let mut owned = Some(owned);
        let done_with = with_runtime_of(self.runtime, |runtime| {
            let owned = owned.take().expect("taken once");
            runtime.driver.borrow_mut().abandon(token, Box::new(owned))
        });
        drop(done_with);
        // Not in its runtime (it ended; `block_on` does not nest): whether the
        // kernel is done cannot be known here, so the only sound choice is to leak it.
        if let Some(owned) = owned {
            std::mem::forget(owned);
        }
    }
}
