//! Green threads and the scheduler that runs them, M:1: many green threads on one OS thread.
//!
//! ```text
//! run(main):                                  a green thread, anywhere in its code:
//!   loop {                                      park():
//!     for each green thread in the run queue:     switch(its context → the scheduler's)
//!       switch(scheduler → its context)  ───────► … runs until it parks, yields or ends …
//!       (back here when it parks)        ◄─────── switch(its context → the scheduler's)
//!     epoll_wait(timeout: 0 if some are
//!       runnable, else the nearest timer)         unpark(green thread):
//!     unpark the green threads whose fd is ready    put it in the run queue (once)
//!     unpark those whose timer is due
//!   }
//! ```
//!
//! The scheduler runs on the OS thread's own stack, each green thread on its own
//! ([`crate::stack`]). A green thread gives the CPU back only when it *parks*: in a read that
//! would block, a `sleep`, a `join`, a [`Notify`](crate::sync::Notify), or `yield_now`. That
//! is the cooperative part: a green thread that computes for a second without calling any of
//! them holds every other one for that second (`green-threads block` shows it).
//!
//! **A panic** unwinds the green thread's own stack up to its entry function, which catches
//! it: the panic ends that green thread only, and `join` returns it as `Err`, as
//! `std::thread`'s does. No unwinding ever crosses a switch: the frames above the entry
//! function belong to no one (its return address is 0). And while a panic unwinds, no other
//! green thread runs: std's panic state is the OS thread's, so a destructor that parks waits
//! on the OS thread for its fd or timer instead of switching ([`crate::unwinding`]). All
//! of this needs unwinding: built with `panic = "abort"` (a Cargo profile setting), any
//! green thread's panic ends the whole process, as any `std::thread`'s would.
//!
//! **When `main` returns**, `run` returns. Green threads still parked then are *abandoned*:
//! never resumed, and their stacks never freed. Go does the same when `main` returns (greenlet
//! instead throws `GreenletExit` into each greenlet it collects). Freeing them would not be
//! safe: a value pinned on a stack is promised to stay where it is until it is dropped, and
//! these are never dropped. Leaking is safe; the memory goes back at exit. Never resumed
//! means by the next `run` on the thread too: a green thread, like a stream's token, belongs
//! to the runtime that made it (`RuntimeId`), so a `Notify` or a `TcpStream` that `main`
//! returned, used under the next runtime, wakes nothing and deregisters nothing there.
//!
//! One rule keeps this file sound: **no `RefCell` borrow is held across a switch**. A borrow
//! held by a parked green thread would make every other one that touches the runtime panic.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::io;
use std::panic;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use fdio::Trace;
use fdio::timeline::TaskTag;

use crate::overflow::{self, AltStack, GuardInfo};
use crate::reactor::Reactor;
use crate::spawn::spawn_named;
use crate::stack::Stack;
use crate::switch::{Context, SUPPORTED, switch};
use crate::unwinding;

/// How many I/O operations a green thread may make before it must let the others run: the
/// cooperative budget (see `net`). tokio's number, with the same 4 KiB reads: a connection
/// that always has data echoes at most 256 KiB per turn, a fraction of a millisecond.
pub const BUDGET: u32 = 128;

/// One green thread: its stack, its saved context, and what it is to run.
pub(crate) struct Green {
    /// Where it stopped, while it does not run.
    pub(crate) context: Context,
    /// `None` once it has finished and the scheduler has unmapped it.
    pub(crate) stack: RefCell<Option<Stack>>,
    /// What it runs; taken when it starts.
    pub(crate) body: Cell<Option<Box<dyn FnOnce()>>>,
    pub(crate) finished: Cell<bool>,
    /// In the run queue already: unparking it again adds nothing.
    pub(crate) queued: Cell<bool>,
    /// The green thread parked in `join` on this one.
    pub(crate) joiner: Cell<Option<Rc<Green>>>,
    /// Its name, and what the stack-overflow handler needs to know about it.
    pub(crate) guard: GuardInfo,
    /// The runtime whose scheduler runs it: no other ever resumes it.
    pub(crate) runtime: RuntimeId,
    /// Its name and its last wake, for `--timeline`.
    pub(crate) tag: TaskTag,
}

impl fmt::Display for Green {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.guard.label)
    }
}

impl Drop for Green {
    fn drop(&mut self) {
        // Still here: it never finished, it was abandoned (see the module doc): leak it.
        if let Some(stack) = self.stack.take() {
            std::mem::forget(stack);
        }
    }
}

/// Everything one running scheduler owns. Reached through a thread-local, as the OS thread
/// is the one thing all its green threads share.
pub(crate) struct Runtime {
    pub(crate) id: RuntimeId,
    /// The scheduler's own context, on the OS thread's stack.
    pub(crate) scheduler: Context,
    /// The green thread running now. Holding it keeps it alive while it runs.
    current: RefCell<Option<Rc<Green>>>,
    run_queue: RefCell<VecDeque<Rc<Green>>>,
    /// Parked green threads by deadline (and a number, to tell equal deadlines apart).
    timers: RefCell<BTreeMap<(Instant, u64), Rc<Green>>>,
    pub(crate) reactor: RefCell<Reactor>,
    /// What the running green thread may still do before it must yield.
    budget: Cell<u32>,
    pub(crate) next_id: Cell<u64>,
    next_timer: Cell<u64>,
    pub(crate) trace: Trace,
    /// Where the stack-overflow handler runs, for as long as this runtime does.
    _alt_stack: AltStack,
}

thread_local! {
    static RUNTIME: RefCell<Option<Rc<Runtime>>> = const { RefCell::new(None) };
}

/// Runs `f` with the runtime of this OS thread.
///
/// # Panics
/// Outside [`run`].
pub(crate) fn with_runtime<R>(f: impl FnOnce(&Runtime) -> R) -> R {
    try_with_runtime(f)
        .expect("no green-thread runtime here: call this inside lesson_green_threads::runtime::run")
}

/// Like [`with_runtime`], but `None` outside [`run`] (for destructors). `f` must not switch:
/// the thread-local stays borrowed while it runs (only `run` itself ever changes it).
pub(crate) fn try_with_runtime<R>(f: impl FnOnce(&Runtime) -> R) -> Option<R> {
    RUNTIME.with_borrow(|runtime| runtime.as_deref().map(f))
}

/// Like [`try_with_runtime`], but `None` unless this thread's runtime is runtime `id`: a
/// token or a green thread of an ended runtime means nothing to the next one.
pub(crate) fn with_runtime_of<R>(id: RuntimeId, f: impl FnOnce(&Runtime) -> R) -> Option<R> {
    try_with_runtime(|runtime| (runtime.id == id).then(|| f(runtime))).flatten()
}

/// Which runtime a green thread or a registered fd belongs to. Tokens are slab indexes that
/// every runtime hands out again from 0, so the next `run` on the thread has the same ones;
/// this number, never reused in the process, tells the runtimes apart (lesson 5's, again).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RuntimeId(u64);

/// Runs `main` as the first green thread of a new scheduler on this OS thread, with every
/// green thread it spawns, until `main` returns; returns what `main` returned. A panic in
/// `main` is resumed here, after the runtime is gone. Errors: this is not x86-64, the OS
/// refused a resource (epoll, a stack), `run` is already running on this thread, or every
/// green thread is parked with nothing left to wake any of them (a deadlock).
pub fn run<T: 'static>(trace: Trace, main: impl FnOnce() -> T + 'static) -> io::Result<T> {
    if !SUPPORTED {
        return Err(io::Error::new(
            io::ErrorKind::Unsupported,
            format!(
                "green threads need an x86-64 processor, this is {}: the context switch is \
                 written in x86-64 assembly",
                std::env::consts::ARCH
            ),
        ));
    }
    if try_with_runtime(|_| ()).is_some() {
        return Err(io::Error::other(
            "a green-thread runtime is already running on this thread",
        ));
    }
    static RUNTIMES_STARTED: AtomicU64 = AtomicU64::new(0);
    let runtime = Rc::new(Runtime {
        id: RuntimeId(RUNTIMES_STARTED.fetch_add(1, Ordering::Relaxed)),
        scheduler: Context::empty(),
        current: RefCell::new(None),
        run_queue: RefCell::new(VecDeque::new()),
        timers: RefCell::new(BTreeMap::new()),
        reactor: RefCell::new(Reactor::new(trace)?),
        budget: Cell::new(BUDGET),
        next_id: Cell::new(0),
        next_timer: Cell::new(0),
        trace,
        _alt_stack: overflow::install()?,
    });
    let _entered = Entered::new(Rc::clone(&runtime));
    let main = spawn_named("main", main)?;
    runtime.schedule_until(&main.green)?;
    match main.try_take() {
        Some(Ok(output)) => Ok(output),
        Some(Err(panic)) => panic::resume_unwind(panic),
        None => unreachable!("the scheduler returns once main has finished"),
    }
}

/// Makes a runtime this thread's; takes it back when dropped, also when a panic unwinds.
struct Entered;

impl Entered {
    fn new(runtime: Rc<Runtime>) -> Entered {
        RUNTIME.set(Some(runtime));
        Entered
    }
}

impl Drop for Entered {
    fn drop(&mut self) {
        RUNTIME.take();
    }
}

impl Runtime {
    /// The scheduler's loop (see the module doc), until `main` has finished.
    fn schedule_until(&self, main: &Green) -> io::Result<()> {
        let mut woken = Vec::new();
        loop {
            // 1. Run the green threads runnable now. Those that become runnable meanwhile
            //    wait for the next turn: one that keeps yielding cannot starve epoll.
            let runnable = self.run_queue.borrow().len();
            for _ in 0..runnable {
                let Some(green) = self.run_queue.borrow_mut().pop_front() else {
                    break;
                };
                green.queued.set(false);
                if !green.finished.get() {
                    self.resume(green);
                }
                if main.finished.get() {
                    return Ok(());
                }
            }
            // 2. Wait for I/O: not at all if a green thread is runnable, else until the
            //    nearest timer, or for ever. If nothing could ever wake anyone, say so.
            let timeout = if !self.run_queue.borrow().is_empty() {
                Some(Duration::ZERO)
            } else if let Some(at) = self.nearest_timer() {
                Some(at.saturating_duration_since(Instant::now()))
            } else if self.reactor.borrow().parked() == 0 {
                return Err(io::Error::other(
                    "all green threads are parked and nothing can wake them: deadlock",
                ));
            } else {
                None
            };
            // 3. Unpark the green threads whose fd is ready or whose timer is due.
            self.wait_for_events(timeout, &mut woken)?;
        }
    }

    /// Waits in `epoll_wait` for at most `timeout` (`None`: no limit), then unparks the green
    /// threads whose fd became ready, and those whose timer is due.
    pub(crate) fn wait_for_events(
        &self,
        timeout: Option<Duration>,
        woken: &mut Vec<Rc<Green>>,
    ) -> io::Result<()> {
        self.reactor.borrow_mut().wait(timeout, woken)?;
        for green in woken.drain(..) {
            self.unpark(&green);
        }
        let now = Instant::now();
        loop {
            let mut timers = self.timers.borrow_mut();
            let Some(due) = timers.first_entry().filter(|entry| entry.key().0 <= now) else {
                return Ok(());
            };
            let green = due.remove();
            drop(timers);
            self.unpark(&green);
        }
    }

    /// When the nearest timer is due.
    pub(crate) fn nearest_timer(&self) -> Option<Instant> {
        self.timers.borrow().keys().next().map(|(at, _)| *at)
    }

    /// Switches to `green` until it parks, yields or ends.
    fn resume(&self, green: Rc<Green>) {
        self.trace.say(|| format!("scheduler: switch to {green}"));
        self.budget.set(BUDGET);
        overflow::entering(&green.guard);
        let to: *const Context = &green.context;
        let running = Rc::clone(&green);
        *self.current.borrow_mut() = Some(green);
        // On the timeline, from this switch to the one back is the green thread's slice.
        running.tag.poll(|| {
            // Safety: `to` is the context `green` saved when it parked (or made by `spawn`)
            // and has not been resumed since: a green thread is in the run queue at most
            // once, and a finished one is never resumed. `self.current` keeps it alive while
            // it runs.
            unsafe { switch(&self.scheduler, &*to) }
        });
        overflow::leaving();
        let green = self.current.borrow_mut().take();
        if let Some(green) = green.filter(|green| green.finished.get()) {
            self.trace
                .say(|| format!("scheduler: {green} has finished"));
            // It runs on it no more: unmap its stack.
            drop(green.stack.take());
        }
    }

    /// Puts `green` in the run queue, unless it is there already or has finished. A green
    /// thread unparked while it runs goes on when it next parks: a park may always return
    /// without a reason, and every caller checks again what it waited for. One of an ended
    /// runtime (a `Notify` outlived it) is abandoned: this scheduler never resumes it.
    pub(crate) fn unpark(&self, green: &Rc<Green>) {
        if green.runtime != self.id {
            return;
        }
        if !green.queued.replace(true) && !green.finished.get() {
            green.tag.woken();
            self.run_queue.borrow_mut().push_back(Rc::clone(green));
        }
    }

    /// Whether something but another green thread can unpark `green`: its fd, or its timer.
    /// (A look through every fd and timer: only for the rare park during a panic.)
    pub(crate) fn waits_for_io_or_time(&self, green: &Rc<Green>) -> bool {
        let has_timer = (self.timers.borrow().values()).any(|timer| Rc::ptr_eq(timer, green));
        has_timer || self.reactor.borrow().is_waiting(green)
    }

    /// Takes `green` out of the run queue: it goes on without waiting for its turn.
    pub(crate) fn dequeue(&self, green: &Rc<Green>) {
        if green.queued.replace(false) {
            self.run_queue
                .borrow_mut()
                .retain(|queued| !Rc::ptr_eq(queued, green));
        }
    }

    /// The green thread running now.
    ///
    /// # Panics
    /// On the scheduler's own stack (no green thread runs).
    pub(crate) fn current(&self) -> Rc<Green> {
        let current = self.current.borrow();
        Rc::clone(current.as_ref().expect("called outside a green thread"))
    }
}

/// Switches from the running green thread to the scheduler; returns when the green thread is
/// next resumed — after an `unpark`, or for no reason at all: check again what you wait for.
pub(crate) fn park() {
    if thread::panicking() {
        // std's panic state is per OS thread: no other green thread may run now.
        return unwinding::block_until_unparked();
    }
    let (from, to) = with_runtime(|runtime| {
        let current = runtime.current.borrow();
        let green = current.as_ref().expect("park() outside a green thread");
        let from: *const Context = &green.context;
        (from, &raw const runtime.scheduler)
    });
    // Safety: `from` is the running green thread's context, kept alive by the scheduler's
    // `current` while it runs; `to` is the scheduler's, saved when it resumed us, in the
    // runtime, which outlives every green thread's run. No borrow is held across the switch.
    unsafe { switch(&*from, &*to) }
}

/// [`park`], and be unparked at `deadline` at the latest.
pub(crate) fn park_until(deadline: Option<Instant>) {
    let Some(deadline) = deadline else {
        return park();
    };
    let key = with_runtime(|runtime| {
        let number = runtime.next_timer.get();
        runtime.next_timer.set(number + 1);
        let key = (deadline, number);
        runtime.timers.borrow_mut().insert(key, runtime.current());
        key
    });
    park();
    // Woken by something else first: the timer is not needed any more.
    with_runtime(|runtime| runtime.timers.borrow_mut().remove(&key));
}

/// Makes `green` runnable again.
pub(crate) fn unpark(green: &Rc<Green>) {
    with_runtime(|runtime| runtime.unpark(green));
}

/// Lets every other runnable green thread run before this one goes on: `gevent.sleep(0)`,
/// `runtime.Gosched()`.
pub fn yield_now() {
    with_runtime(|runtime| runtime.unpark(&runtime.current()));
    park();
}

/// Parks this green thread for `duration`; the others run meanwhile.
pub fn sleep(duration: Duration) {
    sleep_until(Instant::now() + duration);
}

/// Parks this green thread until `deadline`.
pub fn sleep_until(deadline: Instant) {
    while Instant::now() < deadline {
        park_until(Some(deadline));
    }
}

/// Takes one operation from the running green thread's budget; if it was spent, yields
/// first (and comes back with a full one: `resume` refills it).
pub(crate) fn spend_budget() {
    let spent = with_runtime(|runtime| {
        let left = runtime.budget.get();
        runtime.budget.set(left.saturating_sub(1));
        left == 0
    });
    if spent {
        with_runtime(|runtime| {
            runtime
                .trace
                .say(|| format!("scheduler: {} spent its budget → yield", runtime.current()))
        });
        yield_now();
    }
}
