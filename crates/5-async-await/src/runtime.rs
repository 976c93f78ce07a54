//! What one running loop owns, and how a future finds it.
//!
//! Like asyncio's "running loop", the runtime a future runs on is found through a
//! thread-local set by `block_on`: that is how `spawn`, `sleep` and the I/O types reach it.
//! This module keeps that thread-local, the accessors, the guards that clean it up however
//! `block_on` ends, and the id that tells one runtime from the next. The loop itself is in
//! [`crate::executor`].

use std::cell::RefCell;
use std::io;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use fdio::Trace;

use crate::blocking::BlockingPool;
use crate::budget::Budget;
use crate::executor::{ReadyQueue, Tasks};
use crate::net::BufferPool;
use crate::reactor::{Reactor, WAKE_TOKEN};
use crate::time::Timers;

/// Everything one running loop owns.
pub(crate) struct Runtime {
    pub(crate) id: RuntimeId,
    pub(crate) reactor: RefCell<Reactor>,
    pub(crate) timers: RefCell<Timers>,
    pub(crate) blocking: BlockingPool,
    /// The buffers `TcpStream::read_chunk` lends.
    pub(crate) buffers: BufferPool,
    /// What the task being polled may still do before it must let the others run.
    pub(crate) budget: Budget,
    pub(crate) tasks: RefCell<Tasks>,
    pub(crate) ready: Arc<ReadyQueue>,
    pub(crate) trace: Trace,
}

impl Runtime {
    /// A new runtime: its own epoll, timers, blocking pool and (empty) tasks.
    pub(crate) fn new(trace: Trace) -> io::Result<Rc<Runtime>> {
        let reactor = Reactor::new(trace)?;
        let poll_waker = mio::Waker::new(reactor.registry(), WAKE_TOKEN)?;
        static RUNTIMES_STARTED: AtomicU64 = AtomicU64::new(0);
        Ok(Rc::new(Runtime {
            id: RuntimeId(RUNTIMES_STARTED.fetch_add(1, Ordering::Relaxed)),
            reactor: RefCell::new(reactor),
            timers: RefCell::new(Timers::default()),
            blocking: BlockingPool::new(4)?,
            buffers: BufferPool::default(),
            budget: Budget::new(trace),
            tasks: RefCell::new(Tasks::default()),
            ready: Arc::new(ReadyQueue::new(poll_waker)),
            trace,
        }))
    }
}

/// Which runtime a handle belongs to. Task ids and I/O tokens are slab indexes that each
/// runtime hands out again, so another `block_on` on the same thread has the same ones;
/// this id, never reused in the process, tells the runtimes apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RuntimeId(u64);

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
///
/// `try_with`, not `with`: an I/O object that outlives its runtime in another thread-local
/// is dropped when its thread exits, maybe after `CURRENT` was destroyed; `with` would
/// panic there, and a panic in a thread-local's destructor aborts the process.
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
/// tasks or sources, which reuse its ids.
pub(crate) fn with_runtime_of<R>(id: RuntimeId, f: impl FnOnce(&Runtime) -> R) -> Option<R> {
    try_with_runtime(|runtime| (runtime.id == id).then(|| f(runtime))).flatten()
}

/// Makes `runtime` the thread's current one until the returned guard is dropped.
///
/// Two guards in one, so the cleanup happens however the loop ends: returning, or unwinding
/// from a panic in the main future. Dropped in the reverse order: first the tasks still
/// pending, while the runtime is still reachable from their destructors (an I/O type
/// deregisters itself when dropped); then the thread-local is given back, even if one of
/// those destructors panicked. Without them a panic would leave this runtime in the
/// thread-local, to be dropped at thread exit, when its tasks' destructors can no longer
/// reach a thread-local: the process would abort.
pub(crate) fn enter(runtime: &Rc<Runtime>) -> Entered<'_> {
    let current = Current::enter(Rc::clone(runtime));
    Entered {
        _leftover: DropTasksLeft(runtime),
        _current: current,
    }
}

/// What [`enter`] returns. Its fields drop in the order written: the tasks first.
pub(crate) struct Entered<'a> {
    _leftover: DropTasksLeft<'a>,
    _current: Current,
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
