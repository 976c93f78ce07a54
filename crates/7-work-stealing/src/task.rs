//! A task: one allocation holding the future, its atomic `State`, and the slot its result
//! goes to; its waker; and the `JoinHandle` that awaits it.
//!
//! ## Why `spawn` needs `F: Future + Send + 'static`
//! A task may be polled by any worker — a thief moves it to another thread between two
//! polls — so its future, with every local variable it keeps across an `.await`, must be
//! `Send`. An `Rc` kept across an `.await` could then be cloned on two threads at once: its
//! counter is not atomic, so the compiler refuses the spawn:
//!
//! ```compile_fail,E0277
//! use std::rc::Rc;
//! let runtime = lesson_work_stealing::Runtime::new(2).unwrap();
//! runtime.block_on(async {
//!     lesson_work_stealing::spawn(async {
//!         let shared = Rc::new(5);
//!         lesson_work_stealing::yield_now().await; // `shared` lives across this .await…
//!         println!("{shared}"); // …so the future is not `Send`: error[E0277]
//!     });
//! });
//! ```
//!
//! (Dropped before the `.await`, the `Rc` is fine: it is no longer part of the state.)
//! `'static`, because the task outlives the call to `spawn`: it cannot borrow the caller's
//! locals. And the waker is `Send + Sync` — `std::task::Waker` always is — because the
//! reactor thread, a timer, or another task on another worker wakes it: waking goes through
//! the atomic state, which is what makes that safe.

use std::any::Any;
use std::fmt;
use std::future::Future;
use std::marker::PhantomData;
use std::mem::ManuallyDrop;
use std::ops::Deref;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::Pin;
use std::sync::{Arc, PoisonError};
use std::task::{Context, Poll, Wake, Waker};

use fdio::timeline::TaskTag;

use crate::budget;
use crate::runtime::Shared;
use crate::state::{AfterCancel, AfterPoll, AfterWake, Start, State};
use crate::sync::{Mutex, MutexGuard, UnsafeCell};

/// A task as the queues hold it: something a worker can run.
pub(crate) type TaskRef = Arc<dyn Runnable>;

/// What a worker does with a task it popped.
pub(crate) trait Runnable: Send + Sync {
    /// Polls the task once (or drops it, if it was aborted).
    fn run(self: Arc<Self>) -> Ran;
    /// Marks it aborted; the next `run` drops its future. (Used at shutdown.)
    fn cancel(&self);
}

/// What the worker that ran a task must do with it next.
#[must_use = "a task woken during its own poll is never polled again unless it is queued"]
pub(crate) enum Ran {
    /// Nothing: it finished, or it waits for a wake, which will queue it.
    Done,
    /// It was woken during its own poll — `yield_now`, a spent budget, or a waker on another
    /// thread meanwhile — so no waker queued it: the worker puts it at the back of its own
    /// queue. (The worker has it in hand: no need to look up which worker this thread is.)
    Again(TaskRef),
}

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

/// Where the result waits for the `JoinHandle`. A mutex, not atomics: it is touched twice
/// per task (once to store, once to take), never on the scheduling path. (`crate::sync`'s
/// mutex: loom checks that the result and the handle's waker never miss each other.)
struct JoinSlot<T>(Mutex<Joined<T>>);

struct Joined<T> {
    result: Option<Result<T, JoinError>>,
    finished: bool,
    waiter: Option<Waker>,
    /// The handle was dropped: nobody will take the result.
    detached: bool,
}

impl<T> JoinSlot<T> {
    fn new() -> JoinSlot<T> {
        JoinSlot(Mutex::new(Joined {
            result: None,
            finished: false,
            waiter: None,
            detached: false,
        }))
    }

    fn lock(&self) -> MutexGuard<'_, Joined<T>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The task finished: leaves `result` for the handle, then marks `state` COMPLETE, then
    /// wakes the handle if it waits. In that order: `is_finished` reads the state, so once it
    /// says `true` the result is in place and the handle's next poll is `Ready` (loom's
    /// `loom_a_finished_task_has_its_result_in_place` failed with COMPLETE first).
    ///
    /// If the handle is gone, the result is dropped here instead, quietly ([`drop_quietly`]).
    fn finish(&self, state: &State, result: Result<T, JoinError>) {
        let (waiter, unwanted) = {
            let mut joined = self.lock();
            joined.finished = true;
            if joined.detached {
                (None, Some(result))
            } else {
                joined.result = Some(result);
                (joined.waiter.take(), None)
            }
        };
        state.complete();
        if let Some(waiter) = waiter {
            waiter.wake();
        }
        drop_quietly(unwanted);
    }

    /// The handle was dropped: nobody will take the result. Drops it if it is there already
    /// (quietly: [`drop_quietly`]); `finish` will drop it if it comes later.
    fn detach(&self) {
        let (result, waiter) = {
            let mut joined = self.lock();
            joined.detached = true;
            (joined.result.take(), joined.waiter.take())
        };
        drop(waiter);
        drop_quietly(result);
    }

    /// The handle's poll: the result, or `Pending` with `cx`'s waker left.
    fn poll(&self, cx: &mut Context<'_>) -> Poll<Result<T, JoinError>> {
        // The result and the waiter share one lock: `finish` either finds our waker or
        // has left the result before we look. No wake can fall between the two.
        let mut joined = self.lock();
        if let Some(result) = joined.result.take() {
            return Poll::Ready(result);
        }
        if joined.finished {
            panic!("a JoinHandle polled after it returned its result");
        }
        match &joined.waiter {
            Some(waiter) if waiter.will_wake(cx.waker()) => {}
            _ => joined.waiter = Some(cx.waker().clone()),
        }
        Poll::Pending
    }
}

/// One spawned future and everything about it.
pub(crate) struct Task<F: Future> {
    state: State,
    runtime: Arc<Shared>,
    /// `Some` until it completes. Only the worker that moved the state to RUNNING touches it.
    future: UnsafeCell<Option<F>>,
    join: JoinSlot<F::Output>,
    /// Its name and its last wake, for `--timeline`.
    tag: TaskTag,
}

// Safety: the future is reached only by the one thread holding the RUNNING state (or by
// whoever drops the last reference, when no other thread can hold one); so the task may be
// shared between threads as long as the future and its output may move between them.
unsafe impl<F: Future + Send> Sync for Task<F> where F::Output: Send {}
// Safety: as for `Sync` just above.
unsafe impl<F: Future + Send> Send for Task<F> where F::Output: Send {}

impl<F> Task<F>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    /// A new task, already SCHEDULED: the caller queues it.
    pub(crate) fn new(future: F, runtime: Arc<Shared>, tag: TaskTag) -> Arc<Task<F>> {
        Arc::new(Task {
            state: State::new_scheduled(),
            runtime,
            future: UnsafeCell::new(Some(future)),
            join: JoinSlot::new(),
            tag,
        })
    }

    /// Drops the future where it is (it was pinned there) and leaves `result` for the
    /// handle. A destructor that panics is the task's panic, as a panic in `poll` is: its
    /// handle gets `Err(Panicked)`, and the worker goes on (tokio's `cancel_task` does the
    /// same). Left to unwind, it would reach the worker's loop and end the process.
    fn finish(&self, result: Result<F::Output, JoinError>) {
        // Dropped in place: it is pinned. If its destructor panics, the assignment is still
        // made while unwinding (that is how Rust assigns over a value: drop, then write), so
        // the slot holds `None` either way and the future is never dropped twice.
        // AssertUnwindSafe: after this the future is gone, and the task is never polled again.
        let dropped = catch_unwind(AssertUnwindSafe(|| {
            // Safety: we hold RUNNING: no other thread touches the future.
            self.future.with_mut(|future| unsafe { *future = None });
        }));
        let result = match (result, dropped) {
            (result, Ok(())) | (result @ Err(JoinError::Panicked(_)), Err(_)) => result,
            (_, Err(payload)) => Err(JoinError::Panicked(panic_message(&*payload))),
        };
        self.join.finish(&self.state, result);
    }
}

impl<F: Future> Drop for Task<F> {
    /// A task freed before it finished — the last reference to it was a waker dropped
    /// without a wake (a channel held by a task that is itself being dropped, say) — still
    /// has its future: it is dropped here, in place, and a panic in its destructor stays
    /// here too, as `finish`'s does. Unwinding out of this `drop` would end in whatever
    /// dropped that waker: another task's poll, a worker, or the reactor's thread, whose
    /// panic ends the process.
    fn drop(&mut self) {
        let _ = catch_unwind(AssertUnwindSafe(|| {
            // Safety: `&mut self`: no other reference to the task, or its future, is left.
            self.future.with_mut(|future| unsafe { *future = None });
        }));
    }
}

impl<F> Runnable for Task<F>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    fn run(self: Arc<Self>) -> Ran {
        if self.state.start() == Start::Cancel {
            self.finish(Err(JoinError::Cancelled));
            return Ran::Done;
        }
        // The plain form is `Waker::from(Arc::clone(&self))`; see `waker_ref` for what this
        // one saves.
        let waker = waker_ref(&self);
        let mut cx = Context::from_waker(&waker);
        budget::reset();
        // AssertUnwindSafe: after a panic the future is never polled again, only dropped.
        let polled = self.tag.poll(|| {
            catch_unwind(AssertUnwindSafe(|| {
                self.future.with_mut(|future| {
                    // Safety: we hold RUNNING, so this is the only reference to the future.
                    let future =
                        unsafe { (*future).as_mut() }.expect("a RUNNING task has a future");
                    // Safety: it lives inside the `Arc` allocation and is never moved until it
                    // is dropped in place by `finish`: it may be pinned.
                    unsafe { Pin::new_unchecked(future) }.poll(&mut cx)
                })
            }))
        });
        match polled {
            Ok(Poll::Ready(output)) => self.finish(Ok(output)),
            Err(payload) => self.finish(Err(JoinError::Panicked(panic_message(&*payload)))),
            Ok(Poll::Pending) => match self.state.after_pending() {
                AfterPoll::Idle => {}
                AfterPoll::Reschedule => return Ran::Again(self),
                AfterPoll::Cancel => self.finish(Err(JoinError::Cancelled)),
            },
        }
        Ran::Done
    }

    fn cancel(&self) {
        // At shutdown the caller runs the task next, whatever it was: nothing to queue.
        let _ = self.state.cancel();
    }
}

impl<F> Wake for Task<F>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    fn wake(self: Arc<Self>) {
        self.tag.woken();
        if self.state.wake() == AfterWake::Queue {
            let runtime = Arc::clone(&self.runtime);
            runtime.schedule(self);
        }
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.tag.woken();
        if self.state.wake() == AfterWake::Queue {
            self.runtime.schedule(Arc::clone(self) as TaskRef);
        }
    }
}

/// What a `JoinHandle` needs from its task, whatever the future's type.
trait Joinable<T>: Send + Sync {
    fn poll_join(&self, cx: &mut Context<'_>) -> Poll<Result<T, JoinError>>;
    fn is_finished(&self) -> bool;
    fn abort(self: Arc<Self>);
    /// The handle is being dropped.
    fn detach(&self);
}

impl<F> Joinable<F::Output> for Task<F>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    fn poll_join(&self, cx: &mut Context<'_>) -> Poll<Result<F::Output, JoinError>> {
        self.join.poll(cx)
    }

    fn is_finished(&self) -> bool {
        self.state.is_complete()
    }

    fn abort(self: Arc<Self>) {
        if self.state.cancel() == AfterCancel::Queue {
            let runtime = Arc::clone(&self.runtime);
            runtime.schedule(self);
        }
    }

    fn detach(&self) {
        self.join.detach();
    }
}

/// The handle `spawn` returns: await it for the task's output. Dropping it detaches the
/// task, which runs on.
pub struct JoinHandle<T> {
    task: Arc<dyn Joinable<T>>,
}

impl<T: Send + 'static> JoinHandle<T> {
    pub(crate) fn new<F>(task: Arc<Task<F>>) -> JoinHandle<T>
    where
        F: Future<Output = T> + Send + 'static,
    {
        JoinHandle { task }
    }

    /// The task has finished: returned, panicked, or been dropped after `abort`.
    pub fn is_finished(&self) -> bool {
        self.task.is_finished()
    }

    /// Cancels the task: a worker drops its future where it is suspended (at once if it is
    /// idle, at the end of its current poll if it is running), and awaiting this handle
    /// gives `Err(JoinError::Cancelled)`. Nothing happens if it already finished.
    pub fn abort(&self) {
        Arc::clone(&self.task).abort();
    }
}

impl<T> Drop for JoinHandle<T> {
    /// Detaches the task: it runs on, and its result, nobody's now, is dropped as soon as
    /// there is one.
    fn drop(&mut self) {
        self.task.detach();
    }
}

impl<T> Future for JoinHandle<T> {
    type Output = Result<T, JoinError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.task.poll_join(cx)
    }
}

/// Drops a value nobody will ever see — a detached task's result — and catches a panic in
/// its destructor: the panic hook has printed the message, and there is nobody to give it
/// to. Left to unwind, it would end the process from a worker's loop (`or_exit`). tokio
/// drops an unwanted output inside `catch_unwind` too.
fn drop_quietly<T>(value: T) {
    let _ = catch_unwind(AssertUnwindSafe(|| drop(value)));
}

/// The message of a panic payload: `panic!("…")` gives a `&str` or a `String`.
fn panic_message(payload: &(dyn Any + Send)) -> String {
    if let Some(message) = payload.downcast_ref::<&str>() {
        message.to_string()
    } else if let Some(message) = payload.downcast_ref::<String>() {
        message.clone()
    } else {
        "a panic without a message".to_string()
    }
}

/// A `Waker` that borrows the task's reference instead of taking one of its own (the
/// `futures` crate's `waker_ref`). The plain form, `Waker::from(Arc::clone(&task))`, adds a
/// reference before each poll and removes it after: two atomic operations on every poll.
/// This saves them: tokio's `yield_many` on one worker (200 tasks × 1,000 yields) took
/// 5.6 ms with it and 6.4 ms with the plain form (the fastest of 15 runs each). A micro-
/// optimisation, so it lives here, off the path `run` reads.
struct WakerRef<'a> {
    waker: ManuallyDrop<Waker>,
    /// The waker must not outlive the `Arc` it borrows from.
    borrowed: PhantomData<&'a ()>,
}

fn waker_ref<W: Wake + Send + Sync + 'static>(task: &Arc<W>) -> WakerRef<'_> {
    // Safety: `from_raw` makes a second `Arc` out of `task`'s pointer without adding to the
    // count. It goes into a waker that is never dropped (`ManuallyDrop`), so the count is
    // never decremented for it; and `task` stays borrowed while the `WakerRef` lives, so
    // the task outlives the waker. A clone of it (`cx.waker().clone()`) takes a reference
    // of its own, as any waker clone does.
    let borrowed = unsafe { Arc::from_raw(Arc::as_ptr(task)) };
    WakerRef {
        waker: ManuallyDrop::new(Waker::from(borrowed)),
        borrowed: PhantomData,
    }
}

impl Deref for WakerRef<'_> {
    type Target = Waker;

    fn deref(&self) -> &Waker {
        &self.waker
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use std::future::poll_fn;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;
    use crate::runtime::{Runtime, spawn};

    /// Counts how many times it is dropped.
    struct CountsDrops(Arc<AtomicUsize>);

    impl Drop for CountsDrops {
        fn drop(&mut self) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    /// A task polled through its borrowed waker, which it wakes by reference and clones (a
    /// clone takes its own reference) and wakes from another thread: it is polled again each
    /// time, returns its output to the handle, and its future is dropped once, in place.
    #[test]
    fn a_task_is_woken_by_its_waker_and_its_clones() {
        let runtime = Runtime::new(1).unwrap();
        let drops = Arc::new(AtomicUsize::new(0));
        let counted = CountsDrops(Arc::clone(&drops));
        let handle = runtime.spawn(async move {
            let _counted = counted;
            let mut polls = 0;
            poll_fn(|cx| {
                polls += 1;
                match polls {
                    1 => cx.waker().wake_by_ref(),
                    2 => {
                        let waker = cx.waker().clone();
                        std::thread::spawn(move || waker.wake());
                    }
                    _ => return Poll::Ready(polls),
                }
                Poll::Pending
            })
            .await
        });
        assert_eq!(runtime.block_on(handle), Ok(3));
        assert_eq!(drops.load(Ordering::SeqCst), 1);
    }

    /// Panics when dropped: a destructor that fails.
    struct PanicsOnDrop;

    impl Drop for PanicsOnDrop {
        fn drop(&mut self) {
            panic!("the destructor fails on purpose");
        }
    }

    /// Aborting a task whose future panics while it is dropped is that task's `JoinError`
    /// (`Panicked`, with the destructor's message), as a panic in `poll` is: the process and
    /// the other tasks go on, and the rest of the future is dropped once, not twice.
    #[test]
    fn a_destructor_that_panics_at_abort_is_the_tasks_error() {
        let runtime = Runtime::new(2).unwrap();
        let drops = Arc::new(AtomicUsize::new(0));
        let counted = CountsDrops(Arc::clone(&drops));
        let started = Arc::new(AtomicUsize::new(0));
        runtime.block_on(async {
            let waiting = {
                let started = Arc::clone(&started);
                spawn(async move {
                    let _counted = counted;
                    let _fails = PanicsOnDrop; // made at the first poll
                    started.store(1, Ordering::SeqCst);
                    std::future::pending::<()>().await;
                })
            };
            while started.load(Ordering::SeqCst) == 0 {
                crate::yield_now().await;
            }
            waiting.abort();
            assert_eq!(
                waiting.await,
                Err(JoinError::Panicked(
                    "the destructor fails on purpose".to_string()
                ))
            );
            let fine = spawn(async { 6 * 7 });
            assert_eq!(fine.await, Ok(42));
        });
        drop(runtime);
        assert_eq!(drops.load(Ordering::SeqCst), 1);
    }

    /// A task returns a value whose destructor panics; the value waits in the join slot and
    /// is dropped with the handle, never awaited. The panic stays there: whoever drops the
    /// handle goes on (the value is nobody's, as a detached task's result is).
    #[test]
    fn a_result_dropped_with_its_handle_does_not_unwind_into_the_dropper() {
        let runtime = Runtime::new(1).unwrap();
        let handle = runtime.spawn(async { PanicsOnDrop });
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while !handle.is_finished() {
            assert!(
                std::time::Instant::now() < deadline,
                "the task never finished"
            );
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        drop(handle);
        assert_eq!(
            runtime.block_on(async { spawn(async { 6 * 7 }).await }),
            Ok(42)
        );
    }

    /// `abort` on a task waiting for a wake that never comes: its future is dropped once,
    /// and its handle says `Cancelled`; a task that panics says `Panicked`.
    #[test]
    fn abort_and_panic_end_a_task_with_its_error() {
        let runtime = Runtime::new(1).unwrap();
        let drops = Arc::new(AtomicUsize::new(0));
        let counted = CountsDrops(Arc::clone(&drops));
        runtime.block_on(async {
            let waiting = spawn(async move {
                let _counted = counted;
                std::future::pending::<()>().await;
            });
            crate::yield_now().await;
            waiting.abort();
            assert_eq!(waiting.await, Err(JoinError::Cancelled));
            let panics = spawn(async { panic!("on purpose") });
            assert_eq!(
                panics.await,
                Err(JoinError::Panicked("on purpose".to_string()))
            );
        });
        assert_eq!(drops.load(Ordering::SeqCst), 1);
    }
}

#[cfg(all(test, loom))]
mod loom_tests {
    use super::*;
    use crate::sync::Ordering;
    use loom::sync::atomic::AtomicBool;

    /// A waker that raises a flag.
    #[derive(Default)]
    struct Flag(AtomicBool);

    impl Wake for Flag {
        fn wake(self: Arc<Self>) {
            self.0.store(true, Ordering::Release);
        }
    }

    /// The task finishes on a worker while its handle is polled on another thread: in every
    /// interleaving the handle gets the result at once, or its waker is woken and the next
    /// poll gets it.
    #[test]
    fn loom_a_result_racing_the_handles_poll_is_never_missed() {
        loom::model(|| {
            let slot = loom::sync::Arc::new(JoinSlot::new());
            let worker = {
                let slot = loom::sync::Arc::clone(&slot);
                loom::thread::spawn(move || slot.finish(&State::new_scheduled(), Ok(7)))
            };
            let flag = Arc::new(Flag::default());
            let waker = Waker::from(Arc::clone(&flag));
            let mut cx = Context::from_waker(&waker);
            let first = slot.poll(&mut cx);
            worker.join().unwrap();
            match first {
                Poll::Ready(result) => assert_eq!(result, Ok(7)),
                Poll::Pending => {
                    assert!(flag.0.load(Ordering::Acquire), "the handle was never woken");
                    assert_eq!(slot.poll(&mut cx), Poll::Ready(Ok(7)));
                }
            }
        });
    }

    /// `JoinHandle::is_finished` racing the end of the task on a worker: once it says the
    /// task finished, the result is there — the handle's next poll is `Ready`, never
    /// `Pending` (a joiner that checks `is_finished` before it polls must not wait). (The
    /// joiner is the spawned thread: loom 0.7 remembers only an atomic's last access, so a
    /// load made before the other thread's read-modify-write would never be reordered.)
    #[test]
    fn loom_a_finished_task_has_its_result_in_place() {
        loom::model(|| {
            let state = loom::sync::Arc::new(State::new_scheduled());
            let slot = loom::sync::Arc::new(JoinSlot::new());
            assert_eq!(state.start(), crate::state::Start::Poll);
            let joiner = {
                let (state, slot) = (
                    loom::sync::Arc::clone(&state),
                    loom::sync::Arc::clone(&slot),
                );
                loom::thread::spawn(move || {
                    if state.is_complete() {
                        let mut cx = Context::from_waker(Waker::noop());
                        assert_eq!(
                            slot.poll(&mut cx),
                            Poll::Ready(Ok(7)),
                            "finished, no result"
                        );
                    }
                })
            };
            slot.finish(&state, Ok(7));
            joiner.join().unwrap();
        });
    }
}
