//! The runtime: worker threads, their local queues, the injector, stealing and parking.
//!
//! ```text
//! each worker, forever:
//!     task = my queue            (every 61st turn: the injector first, so it cannot starve)
//!         or a batch from the injector
//!         or half of a random other worker's queue        (only while "searching")
//!     if found: run it           (poll its future once)
//!     else:     park             (sleep on a condvar until someone has work for us)
//! ```
//!
//! A task woken or spawned on a worker goes to that worker's queue — it is hot in that
//! core's cache; one woken elsewhere (the reactor thread, a timer, `block_on`'s thread) goes
//! to the injector. Either way the waker then calls [`Shared::notify_work`], which wakes one
//! parked worker — only if nobody is already searching: a searcher will find the task, and
//! waking every worker for one task would make them all fight over it (the "thundering
//! herd"). When the last searcher finds work it wakes the next one, so a burst of tasks
//! spreads over the workers one at a time.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::future::{Future, poll_fn};
use std::io;
use std::pin::pin;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering, fence};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::task::{Context, Poll, Wake, Waker};
use std::thread;

use fdio::Trace;

use crate::budget;
use crate::queue::{self, CAPACITY, Owner, Queue};
use crate::reactor::Reactor;
use crate::task::{JoinHandle, Task, TaskRef};

/// Every this many turns a worker looks at the injector before its own queue (tokio: 61,
/// a prime, so it does not fall in step with tasks that come in rounds).
const INJECTOR_INTERVAL: u32 = 61;

/// A multi-threaded, work-stealing runtime. Dropping it stops the workers.
pub struct Runtime {
    shared: Arc<Shared>,
    threads: Vec<thread::JoinHandle<()>>,
}

/// What the workers, the wakers and the reactor share.
pub(crate) struct Shared {
    /// The thieves' end of every worker's queue, by worker number.
    queues: Vec<Arc<Queue<TaskRef>>>,
    injector: Injector,
    idle: Idle,
    parkers: Vec<Parker>,
    pub(crate) reactor: Arc<Reactor>,
    shutdown: AtomicBool,
    next_id: AtomicU64,
    pub(crate) trace: Trace,
}

/// Where the current thread stands: a worker of some runtime, or a thread inside
/// `block_on`. That is how `spawn`, `sleep` and the I/O types find their runtime.
enum Current {
    Worker(Rc<Worker>),
    BlockOn(Arc<Shared>),
}

thread_local! {
    static CURRENT: RefCell<Option<Current>> = const { RefCell::new(None) };
}

/// Runs `f` with the runtime of this thread.
///
/// # Panics
/// Outside the runtime's workers and `block_on`.
pub(crate) fn with_shared<R>(f: impl FnOnce(&Arc<Shared>) -> R) -> R {
    CURRENT.with(|current| match &*current.borrow() {
        Some(Current::Worker(worker)) => f(&worker.shared),
        Some(Current::BlockOn(shared)) => f(shared),
        None => panic!("no runtime here: call this inside Runtime::block_on or a task"),
    })
}

/// "worker 3" or "main" (the thread in `block_on`), for the trace.
fn whoami() -> String {
    CURRENT.with(|current| match &*current.borrow() {
        Some(Current::Worker(worker)) => format!("worker {}", worker.index),
        _ => "main".to_string(),
    })
}

impl Runtime {
    /// Starts `workers` worker threads (at least one) and the reactor's thread.
    pub fn new(workers: usize) -> io::Result<Runtime> {
        Runtime::with_trace(workers, Trace::new(false))
    }

    /// Like [`new`](Self::new), narrating spawns, steals, parks and wakes on stderr.
    pub fn with_trace(workers: usize, trace: Trace) -> io::Result<Runtime> {
        let workers = workers.max(1);
        let (reactor, reactor_thread) = Reactor::start(trace)?;
        let (owners, queues): (Vec<_>, Vec<_>) = (0..workers).map(|_| queue::new()).unzip();
        let shared = Arc::new(Shared {
            queues,
            injector: Injector::default(),
            idle: Idle::default(),
            parkers: (0..workers).map(|_| Parker::default()).collect(),
            reactor,
            shutdown: AtomicBool::new(false),
            next_id: AtomicU64::new(0),
            trace,
        });
        let mut threads = vec![reactor_thread];
        for (index, local) in owners.into_iter().enumerate() {
            let shared = Arc::clone(&shared);
            let thread = thread::Builder::new()
                .name(format!("worker-{index}"))
                .spawn(move || run_worker(index, local, shared))?;
            threads.push(thread);
        }
        Ok(Runtime { shared, threads })
    }

    /// The number of CPUs this process may use: the default number of workers.
    pub fn default_workers() -> usize {
        thread::available_parallelism().map_or(1, |n| n.get())
    }

    /// Runs `future` on the calling thread until it completes, while the workers run the
    /// tasks it spawns. The thread sleeps (`thread::park`) whenever the future is `Pending`.
    ///
    /// # Panics
    /// On a worker thread: blocking a worker would stall every task queued behind it.
    pub fn block_on<F: Future>(&self, future: F) -> F::Output {
        let _current = CurrentGuard::enter(Current::BlockOn(Arc::clone(&self.shared)));
        let woken = Arc::new(ThreadWaker {
            thread: thread::current(),
            woken: AtomicBool::new(true),
        });
        let waker = Waker::from(Arc::clone(&woken));
        let mut cx = Context::from_waker(&waker);
        let mut future = pin!(future);
        loop {
            if woken.woken.swap(false, Ordering::AcqRel) {
                budget::reset();
                if let Poll::Ready(output) = future.as_mut().poll(&mut cx) {
                    return output;
                }
            } else {
                thread::park();
            }
        }
    }

    /// Spawns `future` from outside the runtime (it goes to the injector).
    pub fn spawn<F>(&self, future: F) -> JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.shared.spawn(future)
    }
}

impl Drop for Runtime {
    /// Stops the workers and the reactor, then drops the tasks still queued. Tasks that wait
    /// on the reactor or a timer are dropped with it; one waiting only on another task's
    /// waker (a channel held by a task nobody will poll) is leaked: the runtime keeps no list
    /// of every task, as tokio's `OwnedTasks` does, to keep `spawn` to one allocation.
    fn drop(&mut self) {
        self.shared.shutdown.store(true, Ordering::SeqCst);
        for parker in &self.shared.parkers {
            parker.unpark();
        }
        self.shared.reactor.shut_down();
        for thread in self.threads.drain(..) {
            // A worker that panicked outside a task has nothing more to clean up.
            let _ = thread.join();
        }
        let leftover = std::mem::take(
            &mut *self
                .shared
                .injector
                .tasks
                .lock()
                .unwrap_or_else(PoisonError::into_inner),
        );
        for task in leftover {
            task.cancel();
            task.run();
        }
    }
}

/// Makes `current` this thread's runtime context; puts back the previous one when dropped.
struct CurrentGuard(Option<Current>);

impl CurrentGuard {
    fn enter(current: Current) -> CurrentGuard {
        let on_a_worker = CURRENT.with(|c| matches!(&*c.borrow(), Some(Current::Worker(_))));
        assert!(
            !on_a_worker,
            "block_on on a worker thread would stall the runtime"
        );
        CurrentGuard(CURRENT.with(|c| c.replace(Some(current))))
    }
}

impl Drop for CurrentGuard {
    fn drop(&mut self) {
        let previous = self.0.take();
        CURRENT.with(|c| *c.borrow_mut() = previous);
    }
}

/// Wakes the thread in `block_on`.
struct ThreadWaker {
    thread: thread::Thread,
    woken: AtomicBool,
}

impl Wake for ThreadWaker {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.woken.store(true, Ordering::Release);
        self.thread.unpark();
    }
}

/// The tasks woken by one round of the reactor, queued together.
struct WakeBatch {
    runtime: Option<Arc<Shared>>,
    tasks: Vec<TaskRef>,
}

thread_local! {
    static WAKE_BATCH: RefCell<Option<WakeBatch>> = const { RefCell::new(None) };
}

/// Wakes every waker; the tasks they schedule go to the injector in one batch, under one
/// lock, and then one worker is unparked (which wakes the next if there is more to do).
/// The reactor thread wakes dozens of tasks per `epoll_wait` under load: one at a time,
/// each would take the injector's lock and look for a worker to unpark.
pub(crate) fn wake_in_one_batch(wakers: impl Iterator<Item = Waker>) {
    WAKE_BATCH.with(|batch| {
        *batch.borrow_mut() = Some(WakeBatch {
            runtime: None,
            tasks: Vec::new(),
        })
    });
    for waker in wakers {
        waker.wake();
    }
    let batch = WAKE_BATCH.with(|batch| batch.borrow_mut().take());
    if let Some(WakeBatch {
        runtime: Some(runtime),
        tasks,
    }) = batch
    {
        runtime.injector.push_batch(tasks);
        runtime.notify_work();
    }
}

/// Starts `future` as a new task on the current runtime; it may run on any worker.
///
/// # Panics
/// Outside the runtime (its workers and `block_on`).
pub fn spawn<F>(future: F) -> JoinHandle<F::Output>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    with_shared(|shared| shared.spawn(future))
}

/// Lets the other tasks run: the task goes to the back of its worker's queue.
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

impl Shared {
    fn spawn<F>(self: &Arc<Self>, future: F) -> JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let task = Task::new(future, Arc::clone(self));
        self.trace
            .say(|| format!("{}: spawned task {id}", whoami()));
        self.schedule(Arc::clone(&task) as TaskRef);
        JoinHandle::new(task)
    }

    /// Queues a task that is SCHEDULED: on this worker's queue if we are one of ours, else
    /// on the injector; then makes sure some worker will look.
    pub(crate) fn schedule(self: &Arc<Self>, task: TaskRef) {
        let task = CURRENT.with(|current| match &*current.borrow() {
            Some(Current::Worker(worker)) if Arc::ptr_eq(&worker.shared, self) => {
                worker
                    .local
                    .push(task, |batch| self.injector.push_batch(batch));
                None
            }
            _ => Some(task),
        });
        let Some(task) = task else {
            return self.notify_work();
        };
        // On the reactor's thread, inside `wake_in_one_batch`: collect, queue them later.
        let task = WAKE_BATCH.with(|batch| match &mut *batch.borrow_mut() {
            Some(batch) if batch.runtime.as_ref().is_none_or(|r| Arc::ptr_eq(r, self)) => {
                batch.runtime = Some(Arc::clone(self));
                batch.tasks.push(task);
                None
            }
            _ => Some(task),
        });
        if let Some(task) = task {
            self.injector.push(task);
            self.notify_work();
        }
    }

    /// Wakes one parked worker, unless one is searching already (it will find the work)
    /// or none is parked (they are all busy, and each looks at the queues between tasks).
    fn notify_work(&self) {
        // Pairs with the fence in `park`: either the parking worker sees the task we just
        // queued, or we see it in `sleeping` and wake it.
        fence(Ordering::SeqCst);
        if self.idle.searching.load(Ordering::SeqCst) != 0
            || self.idle.sleeping.load(Ordering::SeqCst) == 0
        {
            return;
        }
        let woken = {
            let mut sleepers = self.idle.lock();
            if self.idle.searching.load(Ordering::SeqCst) != 0 {
                return;
            }
            let Some(index) = sleepers.pop() else {
                return;
            };
            self.idle.sleeping.fetch_sub(1, Ordering::SeqCst);
            self.idle.searching.fetch_add(1, Ordering::SeqCst);
            index
        };
        self.trace
            .say(|| format!("{}: work queued → unpark worker {woken}", whoami()));
        self.parkers[woken].unpark();
    }

    /// Is any task queued anywhere? (A parking worker's last look.)
    fn has_work(&self) -> bool {
        !self.injector.is_empty() || self.queues.iter().any(|queue| !queue.is_empty())
    }
}

/// One worker thread's own state (only its thread touches it).
struct Worker {
    index: usize,
    local: Owner<TaskRef>,
    shared: Arc<Shared>,
    /// Counts turns, for `INJECTOR_INTERVAL`.
    tick: Cell<u32>,
    /// This worker counts in `Idle::searching`.
    searching: Cell<bool>,
    /// A xorshift state: which victim to try first.
    random: Cell<u32>,
}

fn run_worker(index: usize, local: Owner<TaskRef>, shared: Arc<Shared>) {
    let worker = Rc::new(Worker {
        index,
        local,
        shared,
        tick: Cell::new(0),
        searching: Cell::new(false),
        random: Cell::new(0x9E37_79B9 ^ (index as u32 + 1).wrapping_mul(0x85EB_CA6B)),
    });
    let _current = CurrentGuard::enter(Current::Worker(Rc::clone(&worker)));
    while !worker.shared.shutdown.load(Ordering::Acquire) {
        match worker.next_task().or_else(|| worker.search()) {
            Some(task) => {
                if worker.searching.replace(false) {
                    worker.shared.stop_searching();
                }
                task.run();
            }
            None => worker.park(),
        }
    }
    // Shutting down: drop the futures still queued here, on this thread.
    while let Some(task) = worker.local.pop() {
        task.cancel();
        task.run();
    }
}

impl Worker {
    /// The next task of our own: the local queue, else a batch from the injector.
    fn next_task(&self) -> Option<TaskRef> {
        let tick = self.tick.get().wrapping_add(1);
        self.tick.set(tick);
        if tick.is_multiple_of(INJECTOR_INTERVAL)
            && let Some(task) = self.shared.injector.pop_batch(1).pop_front()
        {
            return Some(task);
        }
        self.local.pop().or_else(|| self.take_from_injector())
    }

    /// Takes a fair share of the injector (up to half a local queue): one to run now, the
    /// rest into the local queue, where they cost no lock and can be stolen.
    fn take_from_injector(&self) -> Option<TaskRef> {
        let share = self.shared.injector.len() / self.shared.queues.len() + 1;
        let mut batch = self.shared.injector.pop_batch(share.min(CAPACITY / 2));
        let first = batch.pop_front()?;
        for task in batch {
            // The local queue was empty: half of it always has room, nothing overflows.
            self.local
                .push(task, |batch| self.shared.injector.push_batch(batch));
        }
        Some(first)
    }

    /// Steals half of another worker's queue, trying them in a random order; then the
    /// injector once more. At most half the workers search at once.
    fn search(&self) -> Option<TaskRef> {
        if !self.searching.get() {
            if !self
                .shared
                .idle
                .try_start_searching(self.shared.queues.len())
            {
                return None;
            }
            self.searching.set(true);
        }
        let workers = self.shared.queues.len();
        let start = self.next_random() as usize % workers;
        for offset in 0..workers {
            let victim = (start + offset) % workers;
            if victim == self.index {
                continue;
            }
            if let Some((task, count)) = self.shared.queues[victim].steal_into(&self.local) {
                self.shared.trace.say(|| {
                    format!(
                        "worker {}: stole {} from worker {victim}",
                        self.index,
                        fdio::count(count as u64, "task")
                    )
                });
                return Some(task);
            }
        }
        self.shared.injector.pop_batch(1).pop_front()
    }

    fn next_random(&self) -> u32 {
        let mut x = self.random.get();
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        self.random.set(x);
        x
    }

    /// Nothing to do anywhere: sleep until a waker or a spawn unparks us.
    fn park(&self) {
        let shared = &self.shared;
        shared.idle.sleep(self.index, self.searching.replace(false));
        // Pairs with the fence in `notify_work`: a task queued by someone who saw no sleeper
        // is visible here.
        fence(Ordering::SeqCst);
        if (shared.has_work() || shared.shutdown.load(Ordering::SeqCst))
            && shared.idle.unsleep(self.index)
        {
            self.searching.set(true);
            return;
        }
        // Not in the sleepers' list any more means a waker took us out: its unpark is on
        // the way, and `park` returns at once.
        shared
            .trace
            .say(|| format!("worker {}: nothing to do → park", self.index));
        shared.parkers[self.index].park();
        shared
            .trace
            .say(|| format!("worker {}: unparked", self.index));
        // Whoever woke us counted us as searching.
        self.searching.set(true);
    }
}

impl Shared {
    /// A searcher found work. The last one to stop wakes another worker, in case more work
    /// is waiting: that is how a burst of tasks spreads out, one worker at a time.
    fn stop_searching(&self) {
        if self.idle.searching.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.notify_work();
        }
    }
}

/// Who is parked, and how many are searching.
#[derive(Default)]
struct Idle {
    sleepers: Mutex<Vec<usize>>,
    /// `sleepers.len()`, readable without the lock.
    sleeping: AtomicUsize,
    searching: AtomicUsize,
}

impl Idle {
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<usize>> {
        self.sleepers.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn try_start_searching(&self, workers: usize) -> bool {
        let searching = self.searching.load(Ordering::SeqCst);
        if 2 * searching >= workers.max(2) {
            return false;
        }
        self.searching.fetch_add(1, Ordering::SeqCst);
        true
    }

    /// Worker `index` is about to park: it joins the sleepers (and leaves the searchers).
    /// Unlike a searcher that found work, it wakes nobody: its own last look at the queues,
    /// in `Worker::park`, is what covers work queued while it was the last searcher.
    fn sleep(&self, index: usize, was_searching: bool) {
        let mut sleepers = self.lock();
        sleepers.push(index);
        self.sleeping.fetch_add(1, Ordering::SeqCst);
        if was_searching {
            self.searching.fetch_sub(1, Ordering::SeqCst);
        }
    }

    /// Worker `index` found work after all. `false` if a waker already took it out of the
    /// sleepers (then that waker's unpark is coming).
    fn unsleep(&self, index: usize) -> bool {
        let mut sleepers = self.lock();
        let Some(position) = sleepers.iter().position(|&i| i == index) else {
            return false;
        };
        sleepers.swap_remove(position);
        self.sleeping.fetch_sub(1, Ordering::SeqCst);
        self.searching.fetch_add(1, Ordering::SeqCst);
        true
    }
}

/// A worker's bed: a flag and a condvar. On Linux std builds both on futex(2): a parked
/// thread sleeps in the kernel (`FUTEX_WAIT`) and costs no CPU until `FUTEX_WAKE`.
#[derive(Default)]
struct Parker {
    notified: Mutex<bool>,
    condvar: Condvar,
}

impl Parker {
    /// Sleeps until `unpark` (returns at once if it was called since the last `park`).
    fn park(&self) {
        let mut notified = self.notified.lock().unwrap_or_else(PoisonError::into_inner);
        while !*notified {
            notified = self
                .condvar
                .wait(notified)
                .unwrap_or_else(PoisonError::into_inner);
        }
        *notified = false;
    }

    fn unpark(&self) {
        *self.notified.lock().unwrap_or_else(PoisonError::into_inner) = true;
        self.condvar.notify_one();
    }
}

/// The global queue: tasks spawned or woken outside the workers, and the overflow of full
/// local queues. A mutex around a `VecDeque`: it is used far less often than the local
/// queues (a worker takes a batch at a time), so a lock-free queue here would buy little and
/// cost a page of subtle code (tokio's injector is a mutex-protected linked list too).
#[derive(Default)]
struct Injector {
    tasks: Mutex<VecDeque<TaskRef>>,
    /// `tasks.len()`, readable without the lock.
    len: AtomicUsize,
}

impl Injector {
    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<TaskRef>> {
        self.tasks.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn push(&self, task: TaskRef) {
        let mut tasks = self.lock();
        tasks.push_back(task);
        self.len.store(tasks.len(), Ordering::SeqCst);
    }

    fn push_batch(&self, batch: Vec<TaskRef>) {
        let mut tasks = self.lock();
        tasks.extend(batch);
        self.len.store(tasks.len(), Ordering::SeqCst);
    }

    /// Takes up to `max` tasks from the front.
    fn pop_batch(&self, max: usize) -> VecDeque<TaskRef> {
        if self.is_empty() {
            return VecDeque::new();
        }
        let mut tasks = self.lock();
        let count = max.min(tasks.len());
        let taken = tasks.drain(..count).collect();
        self.len.store(tasks.len(), Ordering::SeqCst);
        taken
    }

    fn len(&self) -> usize {
        self.len.load(Ordering::SeqCst)
    }

    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
