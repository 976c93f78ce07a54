//! The executor: `block_on`, `spawn`, and the loop that runs everything.
//!
//! ```text
//! loop {
//!     run every task that was woken          (poll its future once)
//!     poll the reactor                       (sleep until I/O, or the nearest timer,
//!                                             or not at all if a task is ready)
//!     fire the timers that are due           (wake their tasks)
//! }
//! ```
//!
//! A task is a boxed future plus its waker. A waker is an `Arc<TaskWaker>`: waking it puts
//! the task's id on the ready queue. Wakers may be woken from any thread (the blocking pool
//! does so); if the loop is asleep in `epoll_wait` at that moment, the waker also pokes a
//! `mio::Waker`, which makes `epoll_wait` return.
//!
//! Like asyncio's "running loop", the runtime a future runs on is found through a
//! thread-local set by `block_on`: that is how `spawn`, `sleep` and the I/O types reach it.
//!
//! `--timeline` sees the loop through a few calls, each one branch when it is off: each poll
//! runs inside its task's [`TaskTag::poll`], each wake calls [`TaskTag::woken`], and the
//! reactor times its `epoll_wait`.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::fmt::Display;
use std::future::{Future, poll_fn};
use std::io;
use std::pin::{Pin, pin};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, Wake, Waker};
use std::time::Instant;

use fdio::Trace;
use fdio::timeline::TaskTag;

use crate::blocking::BlockingPool;
use crate::budget::Budget;
use crate::net::BufferPool;
use crate::reactor::{Reactor, WAKE_TOKEN};
use crate::task::{JoinHandle, JoinState, Spawned};
use crate::time::Timers;

/// The id of the future given to `block_on`; spawned tasks count from 0.
const MAIN: usize = usize::MAX;

/// Which runtime a handle belongs to. Task ids and I/O tokens are slab indexes that each
/// runtime hands out again, so another `block_on` on the same thread has the same ones;
/// this id, never reused in the process, tells the runtimes apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RuntimeId(u64);

/// Everything one running loop owns.
pub(crate) struct Runtime {
    id: RuntimeId,
    pub(crate) reactor: RefCell<Reactor>,
    pub(crate) timers: RefCell<Timers>,
    pub(crate) blocking: BlockingPool,
    /// The buffers `TcpStream::read_chunk` lends.
    pub(crate) buffers: BufferPool,
    /// What the task being polled may still do before it must let the others run.
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
/// Outside `block_on`: a future that needs the runtime was polled without one.
pub(crate) fn with_runtime<R>(f: impl FnOnce(&Runtime) -> R) -> R {
    try_with_runtime(f).expect("no async runtime here: run this inside block_on")
}

/// Like [`with_runtime`], but `None` outside `block_on` (for destructors).
pub(crate) fn try_with_runtime<R>(f: impl FnOnce(&Runtime) -> R) -> Option<R> {
    let runtime = CURRENT.with(|current| current.borrow().clone())?;
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
/// tasks or sources, which reuse its ids.
pub(crate) fn with_runtime_of<R>(id: RuntimeId, f: impl FnOnce(&Runtime) -> R) -> Option<R> {
    try_with_runtime(|runtime| (runtime.id == id).then(|| f(runtime))).flatten()
}

/// Runs `future` to completion on a new runtime in this thread, with every task it spawns.
/// Returns its output, or the I/O error that stopped the loop itself (epoll failing).
/// The tasks still pending at the end are dropped (cancelled) — also when a panic in
/// `future` unwinds out of `block_on`, after which the thread can run another one.
pub fn block_on<F: Future>(trace: Trace, future: F) -> io::Result<F::Output> {
    let reactor = Reactor::new(trace)?;
    let poll_waker = mio::Waker::new(reactor.registry(), WAKE_TOKEN)?;
    let ready = Arc::new(ReadyQueue {
        ids: Mutex::new(VecDeque::new()),
        sleeping: AtomicBool::new(false),
        poll_waker,
    });
    static RUNTIMES_STARTED: AtomicU64 = AtomicU64::new(0);
    let runtime = Rc::new(Runtime {
        id: RuntimeId(RUNTIMES_STARTED.fetch_add(1, Ordering::Relaxed)),
        reactor: RefCell::new(reactor),
        timers: RefCell::new(Timers::default()),
        blocking: BlockingPool::new(4)?,
        buffers: BufferPool::default(),
        budget: Budget::new(trace),
        tasks: RefCell::new(Tasks::default()),
        ready: Arc::clone(&ready),
        trace,
    });
    // Two guards, so the cleanup happens however `run` ends: returning, or unwinding from a
    // panic in the main future. Dropped in the reverse order: first the tasks still pending,
    // while the runtime is still reachable from their destructors (an I/O type deregisters
    // itself when dropped); then the thread-local is given back, even if one of those
    // destructors panicked. Without them a panic would leave this runtime in the
    // thread-local, to be dropped at thread exit, when its tasks' destructors can no longer
    // reach a thread-local: the process would abort.
    let _current = Current::enter(Rc::clone(&runtime));
    let _leftover = DropTasksLeft(&runtime);
    run(&runtime, future)
}

/// Makes a runtime the thread's current one; gives back the previous one when dropped.
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
        // 1. Run the tasks that are ready now. Those woken meanwhile wait for the next turn,
        //    so a task that keeps waking itself cannot starve the reactor.
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
        // 2. Wait for I/O — not at all if some task is ready, else until the nearest timer.
        let now = Instant::now();
        let nearest = runtime.timers.borrow().next_deadline();
        runtime.ready.sleeping.store(true, Ordering::SeqCst);
        let timeout = if runtime.ready.is_empty() {
            nearest.map(|deadline| deadline.saturating_duration_since(now))
        } else {
            Some(std::time::Duration::ZERO)
        };
        let waited = runtime.reactor.borrow_mut().wait(timeout);
        runtime.ready.sleeping.store(false, Ordering::SeqCst);
        waited?;
        runtime.reactor.borrow_mut().wake_ready();
        // 3. Fire the timers that are due.
        let fired = runtime.timers.borrow_mut().fire_due(Instant::now());
        if fired > 0 {
            runtime.trace.say(|| format!("timers: {fired} due → woken"));
        }
    }
}

/// Starts `future` as a new task: `asyncio.create_task`. It runs concurrently with the
/// caller; the returned handle awaits its result, tells whether it finished, or aborts it.
///
/// # Panics
/// Outside `block_on`.
pub fn spawn<F>(future: F) -> JoinHandle<F::Output>
where
    F: Future + 'static,
    F::Output: 'static,
{
    spawn_with(None, future)
}

/// [`spawn`], with a name for `--timeline` to show (`conn 127.0.0.1:40212`); the name is
/// formatted only while a timeline is being recorded.
///
/// # Panics
/// Outside `block_on`.
pub fn spawn_named<F>(name: impl Display, future: F) -> JoinHandle<F::Output>
where
    F: Future + 'static,
    F::Output: 'static,
{
    spawn_with(Some(&name), future)
}

fn spawn_with<F>(name: Option<&dyn Display>, future: F) -> JoinHandle<F::Output>
where
    F: Future + 'static,
    F::Output: 'static,
{
    let state = Rc::new(JoinState::new());
    let task = Spawned {
        future: Box::pin(future),
        state: Rc::clone(&state),
    };
    let id = with_runtime(|runtime| runtime.insert(Box::pin(task), name));
    JoinHandle::new(runtime_id(), id, state)
}

/// Lets other ready tasks run before continuing: `await asyncio.sleep(0)`.
pub async fn yield_now() {
    let mut yielded = false;
    poll_fn(|cx| {
        if yielded {
            return Poll::Ready(());
        }
        yielded = true;
        cx.waker().wake_by_ref();
        Poll::Pending
    })
    .await
}

/// One of two outputs: which future of a [`race`] finished first.
#[derive(Debug, PartialEq, Eq)]
pub enum Either<A, B> {
    Left(A),
    Right(B),
}

/// Polls both futures and returns the output of the first to finish; the other is dropped,
/// which cancels it: tokio's `select!` for two. (asyncio's `wait(…, FIRST_COMPLETED)` is not
/// the same: the loser keeps running until you cancel it.) `race` is biased: it polls `a`
/// first, so when both are ready `a` wins (tokio's `select!` starts at a random branch unless
/// told `biased;`).
pub async fn race<A: Future, B: Future>(a: A, b: B) -> Either<A::Output, B::Output> {
    let mut a = pin!(a);
    let mut b = pin!(b);
    poll_fn(|cx| {
        if let Poll::Ready(output) = a.as_mut().poll(cx) {
            return Poll::Ready(Either::Left(output));
        }
        if let Poll::Ready(output) = b.as_mut().poll(cx) {
            return Poll::Ready(Either::Right(output));
        }
        Poll::Pending
    })
    .await
}

/// Runs every future concurrently and returns all their outputs, in the order given (not
/// the order they finished): asyncio's `gather`, tokio's `join_all`.
///
/// The futures share the task that awaits `join_all`: when any of them wakes it, every one
/// not yet finished is polled again. That is one poll too many for most of them, but a
/// spurious poll is harmless (a future that cannot go on returns `Pending` again); a
/// production `join_all` gives each future a waker of its own to poll only the one woken.
pub async fn join_all<F: Future>(futures: impl IntoIterator<Item = F>) -> Vec<F::Output> {
    // Boxed, so each is pinned where it is however the vector moves.
    let mut running: Vec<Pin<Box<F>>> = futures.into_iter().map(Box::pin).collect();
    let mut outputs: Vec<Option<F::Output>> = running.iter().map(|_| None).collect();
    poll_fn(|cx| {
        let mut all_done = true;
        for (future, output) in running.iter_mut().zip(&mut outputs) {
            if output.is_some() {
                continue; // finished: a future must not be polled after `Ready`
            }
            match future.as_mut().poll(cx) {
                Poll::Ready(value) => *output = Some(value),
                Poll::Pending => all_done = false,
            }
        }
        if all_done {
            Poll::Ready(outputs.iter_mut().filter_map(Option::take).collect())
        } else {
            Poll::Pending
        }
    })
    .await
}

type BoxedTask = Pin<Box<dyn Future<Output = ()>>>;

/// One spawned task. `future` is `None` while the task is being polled.
struct Task {
    future: Option<BoxedTask>,
    waker: Arc<TaskWaker>,
    /// Aborted while it was being polled: drop it when the poll returns.
    cancelled: bool,
}

/// The tasks, in a slab: a task's id is its index; freed ids are reused.
#[derive(Default)]
struct Tasks {
    slots: Vec<Option<Task>>,
    free: Vec<usize>,
}

impl Runtime {
    fn insert(&self, future: BoxedTask, name: Option<&dyn Display>) -> usize {
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
            cancelled: false,
        };
        match tasks.slots.get_mut(id) {
            Some(slot) => *slot = Some(task),
            None => tasks.slots.push(Some(task)),
        }
        self.trace.say(|| format!("executor: spawned task {id}"));
        id
    }

    /// Polls task `id` once, unless it finished or was cancelled since it was woken.
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
        // No borrow is held here: the task may spawn, sleep, do I/O, abort others.
        self.budget.reset();
        let poll = task_waker
            .tag
            .poll(|| future.as_mut().poll(&mut Context::from_waker(&waker)));
        let mut tasks = self.tasks.borrow_mut();
        let Some(task) = tasks.slots[id].as_mut() else {
            return;
        };
        if poll.is_pending() && !task.cancelled {
            task.future = Some(future);
            return;
        }
        tasks.slots[id] = None;
        tasks.free.push(id);
        drop(tasks);
        // Dropped with no borrow held: its destructors may reach the runtime.
        drop(future);
    }

    /// Drops task `id`'s future (cancelling it at its current `.await`).
    pub(crate) fn cancel(&self, id: usize) {
        let mut tasks = self.tasks.borrow_mut();
        let Some(Some(task)) = tasks.slots.get_mut(id) else {
            return;
        };
        let Some(future) = task.future.take() else {
            task.cancelled = true; // it is running: dropped when its poll returns
            return;
        };
        tasks.slots[id] = None;
        tasks.free.push(id);
        drop(tasks);
        self.trace.say(|| format!("executor: task {id} aborted"));
        drop(future);
    }
}

/// Ids of tasks ready to be polled, shared with every waker (and so with other threads).
struct ReadyQueue {
    ids: Mutex<VecDeque<usize>>,
    /// The loop is (about to be) asleep in `epoll_wait`: a wake must interrupt it.
    sleeping: AtomicBool,
    poll_waker: mio::Waker,
}

impl ReadyQueue {
    fn push(&self, id: usize) {
        self.ids
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push_back(id);
        if self.sleeping.swap(false, Ordering::SeqCst) {
            // Woken from another thread while the loop sleeps: interrupt `epoll_wait`.
            // If this fails the loop wakes at its next event or timer; nothing is lost.
            let _ = self.poll_waker.wake();
        }
    }

    /// Moves every queued id into `batch` (which must be empty). Swapping the two queues
    /// keeps both allocations: no turn of the loop allocates.
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
