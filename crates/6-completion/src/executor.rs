//! The executor: lesson 5's, with the reactor swapped for the ring.
//!
//! ```text
//! loop {
//!     run every task that was woken     (poll its future once)
//!     one io_uring_enter                (submit what the tasks asked for; sleep until
//!                                        something completes — not at all if a task is ready)
//!     file each completion by its token (wake the task that waits for it)
//! }
//! ```
//!
//! Lesson 5's reactor said "fd 7 is readable" and the woken task then made the `read`
//! itself. Here the task has already asked for the read, the kernel has done it, and the
//! completion carries the result: the task wakes up to bytes, not to a chance to get them.
//! Everything else — tasks, wakers, the ready queue, the budget, a panic that ends only its
//! own task — is lesson 5's shape (only `JoinHandle` is left out: see [`spawn`]). A
//! waker may be fired from any thread (lesson 5's rule): while the loop sleeps in
//! `io_uring_enter`, such a wake also rings the [`Doorbell`],
//! whose read completes and ends the sleep.
//!
//! As in lesson 5, the runtime a future runs on is found through a thread-local set by
//! `block_on`; a handle (a stream, a request) remembers which runtime it belongs to, and
//! leaves any other alone.
//!
//! `--timeline` sees the loop through three calls: each poll runs inside its task's
//! [`TaskTag::poll`], each wake calls [`TaskTag::woken`], and the ring times its
//! `io_uring_enter` ([`Driver::enter`]). Off, each is one branch.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::fmt::Display;
use std::future::Future;
use std::io;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::{Pin, pin};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, Wake, Waker};

use fdio::Trace;
use fdio::timeline::TaskTag;

use crate::budget::Budget;
use crate::doorbell::Doorbell;
use crate::ring::Driver;

/// The id of the future given to `block_on`; spawned tasks count from 0.
const MAIN: usize = usize::MAX;

/// How many provided buffers, and how large: 1024 × 32 KiB = 32 MiB of address space, of
/// which only the pages the kernel has written into take memory. 1024, so that 1,000
/// connections can each have a message in flight without running the ring dry; 32 KiB, so
/// that a bulk stream moves a lot per request (16 KiB cost about a quarter more CPU per
/// byte in the benchmark; 64 KiB, with 512 buffers, no less).
pub const BUFFERS: Buffers = Buffers {
    count: 1024,
    size: 32 * 1024,
};

/// The provided-buffer ring's shape (tests use a tiny one to run it dry).
#[derive(Debug, Clone, Copy)]
pub struct Buffers {
    pub count: u16,
    pub size: u32,
}

/// Which runtime a handle belongs to. Request tokens and task ids are slab indexes that each
/// runtime hands out again, so another `block_on` on the same thread has the same ones; this
/// id, never reused in the process, tells the runtimes apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RuntimeId(u64);

/// Everything one running loop owns.
pub(crate) struct Runtime {
    pub(crate) id: RuntimeId,
    pub(crate) driver: RefCell<Driver>,
    pub(crate) budget: Budget,
    tasks: RefCell<Tasks>,
    ready: Arc<ReadyQueue>,
    trace: Trace,
}

thread_local! {
    static CURRENT: RefCell<Option<Rc<Runtime>>> = const { RefCell::new(None) };
}

/// Runs `f` with the runtime of the current `block_on`.
///
/// # Panics
/// Outside `block_on`: a future that needs the ring was polled without one.
pub(crate) fn with_runtime<R>(f: impl FnOnce(&Runtime) -> R) -> R {
    try_with_runtime(f).expect("no async runtime here: run this inside block_on")
}

/// Like [`with_runtime`], but `None` outside `block_on` (for destructors).
///
/// `try_with`, not `with`: a handle that outlives its runtime in another thread-local is
/// dropped when its thread exits, maybe after `CURRENT` was destroyed; `with` would panic
/// there, and a panic in a thread-local's destructor aborts the process.
pub(crate) fn try_with_runtime<R>(f: impl FnOnce(&Runtime) -> R) -> Option<R> {
    let runtime = CURRENT
        .try_with(|current| current.borrow().clone())
        .ok()
        .flatten()?;
    Some(f(&runtime))
}

/// The id of the current runtime, for a handle to remember where it belongs.
///
/// # Panics
/// Outside `block_on`.
pub(crate) fn runtime_id() -> RuntimeId {
    with_runtime(|runtime| runtime.id)
}

/// Like [`try_with_runtime`], but `None` unless the current runtime is runtime `id`: a handle
/// used inside another `block_on` (or after its own ended) must not touch that runtime's
/// requests, whose tokens it may share.
pub(crate) fn with_runtime_of<R>(id: RuntimeId, f: impl FnOnce(&Runtime) -> R) -> Option<R> {
    try_with_runtime(|runtime| (runtime.id == id).then(|| f(runtime))).flatten()
}

/// Runs `f` with the ring of runtime `id`, if that is the current one.
pub(crate) fn with_driver_of<R>(id: RuntimeId, f: impl FnOnce(&mut Driver) -> R) -> Option<R> {
    with_runtime_of(id, |runtime| f(&mut runtime.driver.borrow_mut()))
}

/// Runs `future` to completion on a new ring in this thread, with every task it spawns.
///
/// # Panics
/// Inside another `block_on` (in one of its tasks): see [`block_on_with`].
pub fn block_on<F: Future>(trace: Trace, future: F) -> io::Result<F::Output> {
    block_on_with(trace, BUFFERS, future)
}

/// [`block_on`] with a buffer ring of a chosen shape.
///
/// # Panics
/// Inside another `block_on` (in one of its tasks). The outer loop would stand still
/// meanwhile, and its ring would be out of reach: a handle of the outer runtime dropped in
/// here could not close its fd through that ring, after the entries that name it (see
/// [`crate::fd`]).
pub fn block_on_with<F: Future>(
    trace: Trace,
    buffers: Buffers,
    future: F,
) -> io::Result<F::Output> {
    static RUNTIMES_STARTED: AtomicU64 = AtomicU64::new(0);
    assert!(
        try_with_runtime(|_| ()).is_none(),
        "block_on inside block_on: await the future instead"
    );
    let driver = Driver::new(trace, buffers)?;
    let ready = Arc::new(ReadyQueue {
        ids: Mutex::new(VecDeque::new()),
        sleeping: AtomicBool::new(false),
        doorbell: driver.doorbell(),
    });
    let runtime = Rc::new(Runtime {
        id: RuntimeId(RUNTIMES_STARTED.fetch_add(1, Ordering::Relaxed)),
        driver: RefCell::new(driver),
        budget: Budget::new(trace),
        tasks: RefCell::new(Tasks::default()),
        ready,
        trace,
    });
    // As in lesson 5: the tasks left are dropped while the runtime is still reachable (their
    // requests are cancelled, their buffers parked in the ring's slots); then the thread-local
    // is given back; then, when the last `Rc` goes, the driver waits for the kernel to be
    // done with every request before it frees anything (`Driver`'s `Drop`).
    let _current = Current::enter(Rc::clone(&runtime));
    let _leftover = DropTasksLeft(&runtime);
    run(&runtime, future)
}

struct Current {
    previous: Option<Rc<Runtime>>,
}

impl Current {
    fn enter(runtime: Rc<Runtime>) -> Current {
        let previous = CURRENT.with(|current| current.replace(Some(runtime)));
        Current { previous }
    }
}

impl Drop for Current {
    fn drop(&mut self) {
        let previous = self.previous.take();
        CURRENT.with(|current| current.replace(previous));
    }
}

/// Drops the tasks a runtime still holds when dropped.
struct DropTasksLeft<'a>(&'a Runtime);

impl Drop for DropTasksLeft<'_> {
    fn drop(&mut self) {
        // Taken out first: no borrow is held while their destructors run.
        let leftover = std::mem::take(&mut *self.0.tasks.borrow_mut());
        drop(leftover);
    }
}

fn run<F: Future>(runtime: &Runtime, future: F) -> io::Result<F::Output> {
    let mut future = pin!(future);
    let main_waker = Arc::new(TaskWaker {
        id: MAIN,
        scheduled: AtomicBool::new(false),
        ready: Arc::clone(&runtime.ready),
        tag: TaskTag::named("main"),
    });
    main_waker.wake_by_ref();
    let main_task_waker = Arc::clone(&main_waker);
    let main_waker = Waker::from(main_waker);
    let mut batch = VecDeque::new();
    loop {
        // 1. Run the tasks that are ready now; those woken meanwhile wait for the next turn.
        runtime.ready.take_all(&mut batch);
        for id in batch.drain(..) {
            if id == MAIN {
                main_task_waker.scheduled.store(false, Ordering::SeqCst);
                runtime
                    .trace
                    .say(|| "executor: polling the main future".to_string());
                runtime.budget.reset();
                let poll = main_task_waker
                    .tag
                    .poll(|| future.as_mut().poll(&mut Context::from_waker(&main_waker)));
                if let Poll::Ready(output) = poll {
                    return Ok(output);
                }
            } else {
                runtime.poll_task(id);
            }
        }
        // 2. One io_uring_enter: submit, and sleep until a completion unless a task is ready.
        //    `sleeping` is set first, then the queue looked at: a wake from another thread
        //    after that look rings the doorbell (see `ReadyQueue::push`).
        runtime.ready.sleeping.store(true, Ordering::SeqCst);
        let wait = runtime.ready.is_empty();
        let entered = runtime.driver.borrow_mut().enter(wait);
        runtime.ready.sleeping.store(false, Ordering::SeqCst);
        entered?;
        // 3. File each completion by its token, waking the task that waits for it. What the
        //    kernel is done with is dropped after the driver's borrow has ended: its `Drop`
        //    may use the runtime.
        let freed = runtime.driver.borrow_mut().complete(wait);
        drop(freed);
    }
}

/// Starts `future` as a new task that runs concurrently with the caller.
///
/// Unlike lesson 5's, it returns no `JoinHandle`: nobody here awaits a task's result or
/// aborts it (the echo server's connections report through shared counters). A task that
/// panics ends there, as in lesson 5 — the panic hook prints where — and the others go on.
///
/// # Panics
/// Outside `block_on`.
pub fn spawn<F: Future<Output = ()> + 'static>(future: F) {
    with_runtime(|runtime| runtime.insert(Box::pin(future), None));
}

/// [`spawn`], with a name for `--timeline` to show (`conn 127.0.0.1:40212`); the name is
/// formatted only while a timeline is being recorded.
///
/// # Panics
/// Outside `block_on`.
pub fn spawn_named<F: Future<Output = ()> + 'static>(name: impl Display, future: F) {
    with_runtime(|runtime| runtime.insert(Box::pin(future), Some(&name)));
}

/// One of two outputs: which future of a [`race`] finished first.
#[derive(Debug, PartialEq, Eq)]
pub enum Either<A, B> {
    Left(A),
    Right(B),
}

/// Polls both futures and returns the output of the first to finish; the other is dropped.
/// Biased: `a` is polled first. Dropping a future that has a request in flight cancels the
/// request (see [`crate::op`]) — so the I/O types here keep their requests in themselves,
/// not in the futures, and a lost race costs nothing.
pub fn race<A: Future, B: Future>(a: A, b: B) -> Race<A, B> {
    Race { a, b }
}

/// The future of [`race`]: a plain struct rather than an `async fn`, as in lesson 5. An
/// `async fn` keeps what it is given twice — the argument, and the local its body moves it
/// into (here, to pin it) — and the echo server races each connection's whole echo against
/// the give-up.
#[must_use = "futures do nothing unless you `.await` or poll them"]
pub struct Race<A, B> {
    a: A,
    b: B,
}

impl<A: Future, B: Future> Future for Race<A, B> {
    type Output = Either<A::Output, B::Output>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        // Safety: `a` and `b` are pinned with the `Race` that holds them: nothing moves
        // them out of it (no method takes them, and `Race` has no `Drop`), and the compiler
        // makes `Race` `Unpin` only when both are.
        let (a, b) = unsafe {
            let this = self.get_unchecked_mut();
            (
                Pin::new_unchecked(&mut this.a),
                Pin::new_unchecked(&mut this.b),
            )
        };
        if let Poll::Ready(output) = a.poll(cx) {
            return Poll::Ready(Either::Left(output));
        }
        if let Poll::Ready(output) = b.poll(cx) {
            return Poll::Ready(Either::Right(output));
        }
        Poll::Pending
    }
}

type BoxedTask = Pin<Box<dyn Future<Output = ()>>>;

/// One spawned task. `future` is `None` while the task is being polled.
struct Task {
    future: Option<BoxedTask>,
    waker: Arc<TaskWaker>,
}

/// The tasks, in a slab: a task's id is its index; freed ids are reused.
#[derive(Default)]
struct Tasks {
    slots: Vec<Option<Task>>,
    free: Vec<usize>,
}

impl Runtime {
    fn insert(&self, future: BoxedTask, name: Option<&dyn Display>) {
        let mut tasks = self.tasks.borrow_mut();
        let id = tasks.free.pop().unwrap_or(tasks.slots.len());
        let waker = Arc::new(TaskWaker {
            id,
            scheduled: AtomicBool::new(false),
            ready: Arc::clone(&self.ready),
            tag: name.map_or_else(|| TaskTag::numbered(id as u64), TaskTag::named),
        });
        waker.wake_by_ref(); // a new task is ready to run
        let task = Task {
            future: Some(future),
            waker,
        };
        match tasks.slots.get_mut(id) {
            Some(slot) => *slot = Some(task),
            None => tasks.slots.push(Some(task)),
        }
        self.trace.say(|| format!("executor: spawned task {id}"));
    }

    /// Polls task `id` once, unless it finished since it was woken.
    fn poll_task(&self, id: usize) {
        let (mut future, task_waker) = {
            let mut tasks = self.tasks.borrow_mut();
            let Some(Some(task)) = tasks.slots.get_mut(id) else {
                return;
            };
            let Some(future) = task.future.take() else {
                return;
            };
            (future, Arc::clone(&task.waker))
        };
        // Cleared before polling: a wake during the poll schedules the task again.
        task_waker.scheduled.store(false, Ordering::SeqCst);
        let waker = Waker::from(Arc::clone(&task_waker));
        self.trace.say(|| format!("executor: polling task {id}"));
        self.budget.reset();
        // As in lesson 5, a panic ends this task only: the panic hook has said where on
        // stderr, and the task is over. (AssertUnwindSafe: a future that panicked is never
        // polled again, only dropped.)
        let poll = task_waker.tag.poll(|| {
            catch_unwind(AssertUnwindSafe(|| {
                future.as_mut().poll(&mut Context::from_waker(&waker))
            }))
            .unwrap_or(Poll::Ready(()))
        });
        let mut tasks = self.tasks.borrow_mut();
        if poll.is_pending() {
            if let Some(task) = tasks.slots[id].as_mut() {
                task.future = Some(future);
            }
            return;
        }
        tasks.slots[id] = None;
        tasks.free.push(id);
        drop(tasks);
        // Dropped with no borrow held: its destructors reach the ring.
        drop(future);
    }
}

/// Ids of tasks ready to be polled, shared with every waker, on any thread.
struct ReadyQueue {
    ids: Mutex<VecDeque<usize>>,
    /// The loop is (about to be) asleep in `io_uring_enter`: a wake must ring the doorbell.
    sleeping: AtomicBool,
    doorbell: Arc<Doorbell>,
}

impl ReadyQueue {
    /// Queues task `id`; rings the doorbell if the loop may be asleep.
    ///
    /// No wake is lost between the loop's "the queue is empty, I'll sleep" and its sleep:
    /// the loop stores `sleeping = true` *before* it looks at the queue (under the mutex),
    /// and a waker pushes (under the mutex) *before* it swaps `sleeping` (both SeqCst). If
    /// the swap sees `true`, it rings: the sleep, if it comes, ends at once. If it sees
    /// `false`, the loop's store is not yet visible to it, so the loop's look cannot have
    /// taken the mutex before the push did (that would make the store visible): the look
    /// comes after the push, finds the id, and the loop does not sleep. The loop's own wakes
    /// (while it polls tasks or files completions, `sleeping` false) make no system call.
    fn push(&self, id: usize) {
        self.ids
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push_back(id);
        if self.sleeping.swap(false, Ordering::SeqCst) {
            self.doorbell.ring();
        }
    }

    /// Moves every queued id into `batch` (which must be empty).
    fn take_all(&self, batch: &mut VecDeque<usize>) {
        std::mem::swap(
            &mut *self.ids.lock().unwrap_or_else(PoisonError::into_inner),
            batch,
        );
    }

    fn is_empty(&self) -> bool {
        self.ids
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .is_empty()
    }
}

/// What a `Waker` carries: which task to schedule, and where.
struct TaskWaker {
    id: usize,
    /// Already in the ready queue: waking again adds nothing.
    scheduled: AtomicBool,
    ready: Arc<ReadyQueue>,
    /// The task's name and its last wake, for `--timeline`.
    tag: TaskTag,
}

impl Wake for TaskWaker {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        if !self.scheduled.swap(true, Ordering::SeqCst) {
            self.tag.woken();
            self.ready.push(self.id);
        }
    }
}
