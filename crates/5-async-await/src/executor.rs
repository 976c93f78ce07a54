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
//! Read in this order: [`block_on`] and the loop (`run`), [`spawn`], then the tasks' slab
//! and how one is polled, then the ready queue and the waker. What the loop owns
//! (`Runtime`) and how a future finds it (a thread-local) are in
//! [`crate::runtime`].
//!
//! `--timeline` sees the loop through a few calls, each one branch when it is off: each poll
//! runs inside its task's [`TaskTag::poll`], each wake calls [`TaskTag::woken`], and the
//! reactor times its `epoll_wait`.

use std::collections::VecDeque;
use std::fmt::Display;
use std::future::Future;
use std::io;
use std::pin::{Pin, pin};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, Wake, Waker};
use std::time::Instant;

use fdio::Trace;
use fdio::timeline::TaskTag;

use crate::runtime::{self, Runtime, runtime_id, with_runtime};
use crate::task::{JoinHandle, JoinState, Spawned};

/// The id of the future given to `block_on`; spawned tasks count from 0.
const MAIN: usize = usize::MAX;

/// Runs `future` to completion on a new runtime in this thread, with every task it spawns.
/// Returns its output, or the I/O error that stopped the loop itself (epoll failing).
/// The tasks still pending at the end are dropped (cancelled) — also when a panic in
/// `future` unwinds out of `block_on`, after which the thread can run another one.
pub fn block_on<F: Future>(trace: Trace, future: F) -> io::Result<F::Output> {
    let runtime = Runtime::new(trace)?;
    // The thread's current runtime until the guard is dropped, with the leftover tasks.
    let _entered = runtime::enter(&runtime);
    run(&runtime, future)
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
    let task = Spawned::new(future, Rc::clone(&state));
    let id = with_runtime(|runtime| runtime.insert(Box::pin(task), name));
    JoinHandle::new(runtime_id(), id, state)
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
pub(crate) struct Tasks {
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
pub(crate) struct ReadyQueue {
    ids: Mutex<VecDeque<usize>>,
    /// The loop is (about to be) asleep in `epoll_wait`: a wake must interrupt it.
    sleeping: AtomicBool,
    poll_waker: mio::Waker,
}

impl ReadyQueue {
    /// An empty queue; `poll_waker` interrupts the loop's `epoll_wait`.
    pub(crate) fn new(poll_waker: mio::Waker) -> ReadyQueue {
        ReadyQueue {
            ids: Mutex::new(VecDeque::new()),
            sleeping: AtomicBool::new(false),
            poll_waker,
        }
    }

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
