//! Tasks seen from outside: `JoinHandle`, `JoinError`, and how a panic becomes an error.
//!
//! asyncio's `Task` can be asked `done()`, `result()` (which re-raises the task's exception),
//! and `cancel()`. Here: `is_finished()`, `.await` (which gives `Err(JoinError::Panicked)`
//! if the task panicked) and `abort()`.
//!
//! A panic belongs to the task whose code panicked — in a poll, or in a destructor when its
//! future is dropped (aborted, or left over when the runtime ends) — never to whoever made
//! that happen: the task that called `abort`, or the loop. Both are caught here (tokio's
//! harness and its `cancel_task` do the same).

use std::any::Any;
use std::cell::{Cell, RefCell};
use std::fmt;
use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind as catch_panic};
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

use crate::runtime::{RuntimeId, with_runtime_of};

/// Why a task has no result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JoinError {
    /// The task panicked, with this message. The runtime and the other tasks go on.
    Panicked(String),
    /// The task was aborted before it finished.
    Cancelled,
}

impl fmt::Display for JoinError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            JoinError::Panicked(message) => write!(f, "task panicked: {message}"),
            JoinError::Cancelled => f.write_str("task was cancelled"),
        }
    }
}

impl std::error::Error for JoinError {}

/// Where a task leaves its result, and who waits for it.
pub(crate) struct JoinState<T> {
    result: RefCell<Option<Result<T, JoinError>>>,
    finished: Cell<bool>,
    waiter: RefCell<Option<Waker>>,
}

impl<T> JoinState<T> {
    pub(crate) fn new() -> JoinState<T> {
        JoinState {
            result: RefCell::new(None),
            finished: Cell::new(false),
            waiter: RefCell::new(None),
        }
    }

    /// Stores the result (the first one only) and wakes whoever awaits the handle.
    pub(crate) fn complete(&self, result: Result<T, JoinError>) {
        if self.finished.replace(true) {
            return;
        }
        *self.result.borrow_mut() = Some(result);
        if let Some(waker) = self.waiter.borrow_mut().take() {
            waker.wake();
        }
    }
}

/// The handle `spawn` returns. Awaiting it gives the task's output; dropping it lets the
/// task run on, detached.
pub struct JoinHandle<T> {
    /// The runtime the task runs on: `id` is an index into its tasks only.
    runtime: RuntimeId,
    id: usize,
    state: Rc<JoinState<T>>,
}

impl<T> JoinHandle<T> {
    pub(crate) fn new(runtime: RuntimeId, id: usize, state: Rc<JoinState<T>>) -> JoinHandle<T> {
        JoinHandle { runtime, id, state }
    }

    /// The task has finished: returned, panicked, or been aborted (`task.done()`).
    pub fn is_finished(&self) -> bool {
        self.state.finished.get()
    }

    /// Cancels the task: its future is dropped where it is suspended, and awaiting this
    /// handle gives `Err(JoinError::Cancelled)` — or `Err(JoinError::Panicked)` if a
    /// destructor panicked as it was dropped. Nothing happens if it already finished.
    ///
    /// A task cannot be dropped while it is being polled (it aborts itself), nor from another
    /// `block_on` than its own: then its future is dropped when that poll returns, or at its
    /// next turn on its own runtime (or was dropped already if that runtime has ended), and
    /// the handle says `Cancelled` at once.
    pub fn abort(&self) {
        if self.is_finished() {
            return; // its id may already belong to another task
        }
        // Dropped first: a destructor that panics leaves `Panicked`, and the first result
        // stored is the one kept.
        with_runtime_of(self.runtime, |runtime| runtime.cancel(self.id));
        self.state.complete(Err(JoinError::Cancelled));
    }
}

impl<T> Future for JoinHandle<T> {
    type Output = Result<T, JoinError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        if let Some(result) = self.state.result.borrow_mut().take() {
            return Poll::Ready(result);
        }
        *self.state.waiter.borrow_mut() = Some(cx.waker().clone());
        Poll::Pending
    }
}

/// A spawned future, as the executor runs it: it polls the user's future, turns a panic
/// into `Err(JoinError::Panicked)`, and leaves the result in the join state — and when it is
/// dropped, it drops the user's future under the same guard.
///
/// A plain struct rather than an `async` block around the future: an `async` wrapper may
/// store its argument twice, doubling the memory of every task.
pub(crate) struct Spawned<F: Future> {
    /// Taken only by `drop`, to drop it inside the panic guard.
    future: Option<Pin<Box<F>>>,
    state: Rc<JoinState<F::Output>>,
}

impl<F: Future> Spawned<F> {
    pub(crate) fn new(future: F, state: Rc<JoinState<F::Output>>) -> Spawned<F> {
        Spawned {
            future: Some(Box::pin(future)),
            state,
        }
    }
}

impl<F: Future> Future for Spawned<F> {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.state.finished.get() {
            return Poll::Ready(()); // aborted from another runtime's `block_on`
        }
        let future = self.future.as_mut().expect("only `drop` takes the future");
        // AssertUnwindSafe: after a panic the future is never polled again, only dropped.
        let result = match catch_panic(AssertUnwindSafe(|| future.as_mut().poll(cx))) {
            Ok(Poll::Pending) => return Poll::Pending,
            Ok(Poll::Ready(output)) => Ok(output),
            Err(payload) => Err(JoinError::Panicked(panic_message(payload.as_ref()))),
        };
        self.state.complete(result);
        Poll::Ready(())
    }
}

impl<F: Future> Drop for Spawned<F> {
    /// Drops the user's future — finished, aborted, or left when the runtime ends — catching
    /// a panic in its destructors: the task's result if it had none yet (`abort` drops it
    /// before it stores `Cancelled`). Uncaught, it would unwind into whoever dropped the task:
    /// the task calling `abort`, or the loop.
    fn drop(&mut self) {
        let future = self.future.take();
        // AssertUnwindSafe: the future is gone either way; after a panic only the join
        // state is used, which the drop did not touch.
        if let Err(payload) = catch_panic(AssertUnwindSafe(|| drop(future))) {
            let message = panic_message(payload.as_ref());
            self.state.complete(Err(JoinError::Panicked(message)));
        }
    }
}

/// The message of a panic payload: `panic!("…")` gives a `&str` or a `String`.
pub(crate) fn panic_message(payload: &(dyn Any + Send)) -> String {
    if let Some(message) = payload.downcast_ref::<&str>() {
        message.to_string()
    } else if let Some(message) = payload.downcast_ref::<String>() {
        message.clone()
    } else {
        "a panic without a message".to_string()
    }
}
