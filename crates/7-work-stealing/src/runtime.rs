//! The runtime: what the workers share, `block_on`, `spawn`, and where a woken task goes.
//! The workers' own loop is in [`crate::worker`]; parking in [`crate::idle`].
//!
//! A task woken or spawned on a worker goes to that worker's queue — it is hot in that
//! core's cache; one woken elsewhere (the reactor thread, a timer, `block_on`'s thread) goes
//! to the injector. Either way the waker then calls `Shared::notify_work`, which wakes one
//! parked worker — only if nobody is already searching: a searcher will find the task, and
//! waking every worker for one task would make them all fight over it (the "thundering
//! herd"). When the last searcher finds work it wakes the next one, so a burst of tasks
//! spreads over the workers one at a time.

use std::cell::RefCell;
use std::fmt::Display;
use std::future::{Future, poll_fn};
use std::io;
use std::pin::pin;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, TryLockError};
use std::task::{Context, Poll, Wake, Waker};
use std::thread;

use fdio::Trace;
use fdio::timeline::{self, TaskTag};

use crate::budget;
use crate::idle::Idle;
use crate::injector::Injector;
use crate::queue::{self, Queue};
use crate::reactor::{Driver, Reactor};
use crate::task::{JoinHandle, Task, TaskRef};
use crate::worker::{Worker, run_worker};

/// A multi-threaded, work-stealing runtime. Dropping it stops the workers.
pub struct Runtime {
    shared: Arc<Shared>,
    threads: Vec<thread::JoinHandle<()>>,
}

/// Who waits for I/O: who holds the reactor's driver (its mio `Poll`) and sleeps in its
/// `epoll_wait`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum DriverMode {
    /// An idle worker (tokio's way): the tasks it wakes go to its own queue.
    #[default]
    Worker,
    /// A thread of its own, the reactor's: the tasks it wakes go to the injector.
    Thread,
}

/// What the workers, the wakers and the reactor share.
pub(crate) struct Shared {
    /// The thieves' end of every worker's queue, by worker number.
    pub(crate) queues: Vec<Arc<Queue<TaskRef>>>,
    pub(crate) injector: Injector,
    pub(crate) idle: Idle,
    pub(crate) reactor: Arc<Reactor>,
    /// `--driver worker`: the driver, taken by whichever worker parks while it is free.
    driver: Option<Mutex<Driver>>,
    pub(crate) shutdown: AtomicBool,
    next_id: AtomicU64,
    pub(crate) trace: Trace,
}

/// Where the current thread stands: a worker of some runtime, or a thread inside
/// `block_on`. That is how `spawn`, `sleep` and the I/O types find their runtime.
pub(crate) enum Current {
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
    /// Starts `workers` worker threads (at least one); an idle worker waits for I/O.
    pub fn new(workers: usize) -> io::Result<Runtime> {
        Runtime::build(workers, DriverMode::default(), Trace::new(false))
    }

    /// Starts `workers` worker threads (at least one), and the reactor's thread if `driver`
    /// says so; `trace` narrates spawns, steals, parks and wakes on stderr.
    pub fn build(workers: usize, driver: DriverMode, trace: Trace) -> io::Result<Runtime> {
        let workers = workers.max(1);
        let (reactor, io_driver) = Reactor::new(trace)?;
        let mut threads = Vec::new();
        let io_driver = match driver {
            DriverMode::Worker => Some(Mutex::new(io_driver)),
            DriverMode::Thread => {
                threads.push(reactor.start_thread(io_driver)?);
                None
            }
        };
        let (owners, queues): (Vec<_>, Vec<_>) = (0..workers).map(|_| queue::new()).unzip();
        let interrupt = Arc::clone(&reactor);
        let shared = Arc::new(Shared {
            queues,
            injector: Injector::default(),
            idle: Idle::new(workers, Box::new(move || interrupt.interrupt())),
            reactor,
            driver: io_driver,
            shutdown: AtomicBool::new(false),
            next_id: AtomicU64::new(0),
            trace,
        });
        for (index, local) in owners.into_iter().enumerate() {
            let shared = Arc::clone(&shared);
            let thread = thread::Builder::new()
                .name(format!("worker-{index}"))
                .spawn(move || or_exit(|| run_worker(index, local, shared)))?;
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
            tag: TaskTag::named("main"),
        });
        let waker = Waker::from(Arc::clone(&woken));
        let mut cx = Context::from_waker(&waker);
        let mut future = pin!(future);
        loop {
            if woken.woken.swap(false, Ordering::AcqRel) {
                budget::reset();
                if let Poll::Ready(output) = woken.tag.poll(|| future.as_mut().poll(&mut cx)) {
                    return output;
                }
            } else {
                let parked = timeline::begin();
                thread::park();
                parked.wait("park", timeline::Args::new);
            }
        }
    }

    /// Spawns `future` from outside the runtime (it goes to the injector).
    pub fn spawn<F>(&self, future: F) -> JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.shared.spawn(None, future)
    }
}

impl Drop for Runtime {
    /// Stops the workers and the reactor, then ends every task it can reach: those still
    /// queued, and those waiting on the reactor or a timer — it wakes their wakers, which
    /// queues them. Each is cancelled: its future is dropped, and its handle, if someone
    /// still holds it, says `Err(JoinError::Cancelled)`. A task waiting only on another
    /// task's waker (a channel held by a task nobody will poll) is not reached: it is
    /// leaked, and its handle never resolves — the runtime keeps no list of every task, as
    /// tokio's `OwnedTasks` does, to keep `spawn` to one allocation.
    fn drop(&mut self) {
        self.shared.shutdown.store(true, Ordering::SeqCst);
        self.shared.idle.unpark_all();
        self.shared.reactor.shut_down();
        for thread in self.threads.drain(..) {
            // A worker that panicked outside a task has nothing more to clean up.
            let _ = thread.join();
        }
        // No thread is left to run a task, nor waits in the driver: a woken one goes to the
        // injector.
        for waker in self.shared.reactor.take_waiters() {
            waker.wake();
        }
        // Dropping a future may wake more (the handle another task awaits): until none is left.
        loop {
            let tasks = self.shared.injector.take_all();
            if tasks.is_empty() {
                break;
            }
            for task in tasks {
                task.cancel();
                // Cancelled, it is dropped, never run again.
                let _ = task.run();
            }
        }
    }
}

/// Runs a runtime thread's body (a worker's loop, the reactor's); if it panics — outside any
/// task, whose panics are caught — ends the process. A dead worker or reactor would leave
/// the tasks waiting on it forever: a hang is worse than the exit a panic on the main
/// thread would cause.
pub(crate) fn or_exit(body: impl FnOnce()) {
    if std::panic::catch_unwind(std::panic::AssertUnwindSafe(body)).is_err() {
        // The panic hook has printed the message, if stderr was still there to print it.
        std::process::exit(101);
    }
}

/// Makes `current` this thread's runtime context; puts back the previous one when dropped.
pub(crate) struct CurrentGuard(Option<Current>);

impl CurrentGuard {
    pub(crate) fn enter(current: Current) -> CurrentGuard {
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
    /// `main`, for `--timeline`.
    tag: TaskTag,
}

impl Wake for ThreadWaker {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.tag.woken();
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
    with_shared(|shared| shared.spawn(None, future))
}

/// [`spawn`], with a name for `--timeline` to show (`conn 127.0.0.1:40212`); the name is
/// formatted only while a timeline is being recorded.
///
/// # Panics
/// Outside the runtime (its workers and `block_on`).
pub fn spawn_named<F>(name: impl Display, future: F) -> JoinHandle<F::Output>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    with_shared(|shared| shared.spawn(Some(&name), future))
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
    fn spawn<F>(self: &Arc<Self>, name: Option<&dyn Display>, future: F) -> JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let tag = name.map_or_else(|| TaskTag::numbered(id), TaskTag::named);
        let task = Task::new(future, Arc::clone(self), tag);
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
                worker.schedule_local(task);
                None
            }
            _ => Some(task),
        });
        let Some(task) = task else {
            return;
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
    pub(crate) fn notify_work(&self) {
        if let Some(woken) = self.idle.notify_one() {
            self.trace
                .say(|| format!("{}: work queued → unpark worker {woken}", whoami()));
        }
    }

    /// `--driver worker`: the driver, if no other worker holds it now.
    pub(crate) fn try_take_driver(&self) -> Option<MutexGuard<'_, Driver>> {
        match self.driver.as_ref()?.try_lock() {
            Ok(driver) => Some(driver),
            // A panic in a turn of the driver ends the process (`or_exit`): not reached.
            Err(TryLockError::Poisoned(poisoned)) => Some(poisoned.into_inner()),
            Err(TryLockError::WouldBlock) => None,
        }
    }

    /// Is any task queued anywhere? (A parking worker's last look.)
    pub(crate) fn has_work(&self) -> bool {
        !self.injector.is_empty() || self.queues.iter().any(|queue| !queue.is_empty())
    }
}
