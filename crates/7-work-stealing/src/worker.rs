//! A worker thread: where it looks for its next task, how it steals, how it parks.
//!
//! ```text
//! loop {
//!     task = my queue            (about every 200 µs of polling: the driver, if free,
//!                                 and the injector first)
//!         or a share of the injector
//!         or half of a random other worker's queue     (only while "searching")
//!     found: run it (poll its future once)
//!     nothing anywhere: park — in the driver's epoll_wait if no one holds it, else on
//!                       my condvar
//! }
//! ```

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::Waker;
use std::time::{Duration, Instant};

use crate::idle::{GoingIdle, Left, Woken};
use crate::queue::{CAPACITY, Owner};
use crate::reactor::{Holder, Wait};
use crate::runtime::{Current, CurrentGuard, Shared};
use crate::task::{Ran, TaskRef};

/// How long a worker polls its own tasks, at most, between two looks at the injector first,
/// so that a task woken there (by the reactor, a timer, another thread) cannot starve behind
/// local tasks that keep waking each other. tokio's target (its `stats.rs`); it used to
/// look every 61st turn, whatever a turn cost, and so did this lesson: with four connections
/// flooding one worker, each turn about 1 ms, a ping woken by the reactor waited ~50 ms.
const INJECTOR_TARGET: Duration = Duration::from_micros(200);

/// The look comes every `interval` turns: at least every 2nd (every turn would put the
/// injector first), at most every 127th (tokio's bounds).
const INTERVAL_BOUNDS: (u32, u32) = (2, 127);

/// The interval a worker starts with, before it has measured anything (tokio's old fixed one).
const FIRST_INTERVAL: u32 = 61;

/// How much each new measurement weighs in the running mean of a poll's duration.
const SMOOTHING: f64 = 0.1;

/// One worker thread's own state (only its thread touches it).
pub(crate) struct Worker {
    pub(crate) index: usize,
    pub(crate) local: Owner<TaskRef>,
    pub(crate) shared: Arc<Shared>,
    /// When to look at the injector first: every so many turns ([`Interval`]).
    interval: Interval,
    /// This worker counts in `Idle::searching`.
    searching: Cell<bool>,
    /// `Some` while it wakes what its turn of the driver found: the tasks those wakes
    /// schedule are collected here, to be queued together (see `wake_from_driver`).
    collected: RefCell<Option<Vec<TaskRef>>>,
    /// A xorshift state: which victim to try first.
    random: Cell<u32>,
}

/// A worker thread's life: run tasks until the runtime shuts down, then drop what is left
/// in its queue.
pub(crate) fn run_worker(index: usize, local: Owner<TaskRef>, shared: Arc<Shared>) {
    let worker = Rc::new(Worker {
        index,
        local,
        shared,
        interval: Interval::new(),
        searching: Cell::new(false),
        collected: RefCell::new(None),
        random: Cell::new(0x9E37_79B9 ^ (index as u32 + 1).wrapping_mul(0x85EB_CA6B)),
    });
    let _current = CurrentGuard::enter(Current::Worker(Rc::clone(&worker)));
    while !worker.shared.shutdown.load(Ordering::Acquire) {
        match worker.next_task().or_else(|| worker.search()) {
            Some(task) => {
                if worker.searching.replace(false) && worker.shared.idle.stop_searching() {
                    // The last searcher found work: there may be more, wake the next.
                    worker.shared.notify_work();
                }
                if let Ran::Again(task) = task.run() {
                    worker.push_local(task);
                }
            }
            None => worker.park(),
        }
    }
    // Shutting down: drop the futures still queued here, on this thread.
    while let Some(task) = worker.local.pop() {
        task.cancel();
        // Cancelled, it is dropped, never run again.
        let _ = task.run();
    }
}

impl Worker {
    /// The next task of our own: the local queue, else a batch from the injector. Every
    /// so often, first what waits outside: I/O (if no one holds the driver), the injector.
    fn next_task(&self) -> Option<TaskRef> {
        if self.interval.look_outside_first() {
            self.poll_driver_in_passing();
            if let Some(task) = self.shared.injector.pop_batch(1).pop_front() {
                return Some(task);
            }
        }
        self.local.pop().or_else(|| self.take_from_injector())
    }

    /// Queues a task scheduled on this worker: on its own queue — unless it is waking what
    /// the driver found (then it is collected).
    pub(crate) fn schedule_local(&self, task: TaskRef) {
        if let Some(collected) = self.collected.borrow_mut().as_mut() {
            collected.push(task);
            return;
        }
        self.push_local(task);
    }

    /// Pushes `task` at the back of this worker's queue, then makes sure some worker will
    /// look (a parked one may steal it).
    fn push_local(&self, task: TaskRef) {
        self.local
            .push(task, |batch| self.shared.injector.push_batch(batch));
        self.shared.notify_work();
    }

    /// `--driver worker`, while busy: collects what is ready without waiting, if no other
    /// worker holds the driver. Otherwise, with every worker busy, no one would look at
    /// epoll until one ran out of tasks (tokio does this every 61st turn).
    fn poll_driver_in_passing(&self) {
        let Some(mut driver) = self.shared.try_take_driver() else {
            return;
        };
        let who = Holder::Worker(self.index);
        self.shared.reactor.turn(&mut driver, Wait::No, who);
        let woken = std::mem::take(&mut driver.woken);
        drop(driver);
        self.wake_from_driver(woken, WokenInto::Injector);
    }

    /// Wakes what a turn of the driver found, and queues the tasks those wakes schedule
    /// together: `into` says where. Then one parked worker is unparked, once for the batch,
    /// if there is something for it.
    fn wake_from_driver(&self, woken: Vec<Waker>, into: WokenInto) {
        if woken.is_empty() {
            return;
        }
        *self.collected.borrow_mut() = Some(Vec::new());
        for waker in woken {
            waker.wake();
        }
        let tasks = self.collected.borrow_mut().take().unwrap_or_default();
        let something_to_steal = match into {
            WokenInto::OwnQueue => {
                let more_than_one = tasks.len() > 1;
                for task in tasks {
                    self.local
                        .push(task, |batch| self.shared.injector.push_batch(batch));
                }
                more_than_one
            }
            WokenInto::Injector if tasks.is_empty() => false,
            WokenInto::Injector => {
                self.shared.injector.push_batch(tasks);
                true
            }
        };
        if something_to_steal {
            self.shared.notify_work();
        }
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
            if !self.shared.idle.try_start_searching() {
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
                fdio::timeline::instant("steal", || {
                    let from = format!("worker {victim}");
                    fdio::timeline::Args::new()
                        .text("from", from)
                        .number("tasks", count as i64)
                });
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

    /// Nothing to do anywhere: sleep until a waker or a spawn unparks us — in the driver's
    /// `epoll_wait` if no other worker holds it (`--driver worker`), else on our condvar.
    fn park(&self) {
        let shared = &self.shared;
        let has_work = || shared.has_work() || shared.shutdown.load(Ordering::SeqCst);
        let was_searching = self.searching.replace(false);
        if shared.idle.go_idle(self.index, was_searching, has_work) == GoingIdle::FoundWork {
            // `go_idle` counted us as searching again.
            self.searching.set(true);
            return;
        }
        shared
            .trace
            .say(|| format!("worker {}: nothing to do → park", self.index));
        loop {
            let (woken, from_driver) = self.sleep();
            if woken == Woken::Unparked {
                // Whoever woke us counted us as searching.
                self.searching.set(true);
                self.wake_from_driver(from_driver, WokenInto::OwnQueue);
                break;
            }
            // The driver returned by itself. Nothing woken: sleep again, still a sleeper.
            if from_driver.is_empty() && !shared.shutdown.load(Ordering::SeqCst) {
                continue;
            }
            match shared.idle.leave(self.index) {
                Left::Running => self.searching.set(false),
                Left::TakeTheUnpark => {
                    self.sleep_on_condvar();
                    self.searching.set(true);
                }
            }
            self.wake_from_driver(from_driver, WokenInto::OwnQueue);
            break;
        }
        // The time asleep was no polling: measure from here.
        self.interval.restart();
        shared
            .trace
            .say(|| format!("worker {}: unparked", self.index));
    }

    /// Sleeps once: in the driver if we can take it, else on the condvar. Returns why it
    /// woke, and the wakers the driver released (to wake once the driver is let go).
    fn sleep(&self) -> (Woken, Vec<std::task::Waker>) {
        let shared = &self.shared;
        let Some(mut driver) = shared.try_take_driver() else {
            self.sleep_on_condvar();
            return (Woken::Unparked, Vec::new());
        };
        let who = Holder::Worker(self.index);
        let mut wait_for_io = || {
            shared.reactor.turn(&mut driver, Wait::UntilTimer, who);
        };
        // `--timeline` shows this sleep as the driver's `epoll_wait`.
        let woken = shared.idle.sleep(self.index, Some(&mut wait_for_io));
        (woken, std::mem::take(&mut driver.woken))
    }

    /// Sleeps on our condvar until a waker unparks us (`--timeline`: a `park` slice).
    fn sleep_on_condvar(&self) {
        let parked = fdio::timeline::begin();
        let woken = self.shared.idle.sleep(self.index, None);
        debug_assert_eq!(
            woken,
            Woken::Unparked,
            "only an unpark ends a condvar's sleep"
        );
        parked.wait("park", fdio::timeline::Args::new);
    }
}

/// Where the tasks a turn of the driver woke are queued.
enum WokenInto {
    /// This worker's own queue: it was idle, and runs them now — no lock, and in this core's
    /// cache (tokio's go there too). One parked worker is unparked if there is more than the
    /// one it runs next: one task alone would only move to another thread, for a futex wake.
    OwnQueue,
    /// The injector, whose first task the worker runs at once: it was busy, and polled the
    /// driver in passing. At the back of its own queue they would wait behind every task
    /// there; this way a task woken by I/O waits at most one interval, as one woken by the
    /// reactor's thread does.
    Injector,
}

/// How often a worker looks at the injector first, tuned to its tasks, as tokio's is: it
/// keeps a running mean of how long a poll takes, and looks every `INJECTOR_TARGET ÷ mean`
/// turns. Short polls (a million tiny tasks) make the interval long, so the injector's lock
/// is rarely taken; long ones (connections echoing a flood) make it short. Measured once per
/// interval, not per poll: a clock read per poll would cost more than a short poll.
///
/// A turn is one pass of the worker's loop, which is one poll — except a pass that found
/// nothing and did not sleep (a failed search, a last look before parking that found work):
/// it counts as a turn too, and the time it spent searching counts as polling. So the mean
/// is a turn's, not strictly a poll's: close enough to choose between 2 and 127, and a
/// sleep, which is no turn, starts the measurement again.
struct Interval {
    /// The interval now, in turns.
    turns: Cell<u32>,
    /// Turns left until the next look.
    left: Cell<u32>,
    /// The running mean of one turn's duration (mostly a poll's), in nanoseconds.
    mean_poll_nanos: Cell<f64>,
    /// When the current interval began.
    since: Cell<Instant>,
}

impl Interval {
    fn new() -> Interval {
        let nanos = INJECTOR_TARGET.as_nanos() as f64 / f64::from(FIRST_INTERVAL);
        Interval {
            turns: Cell::new(FIRST_INTERVAL),
            left: Cell::new(FIRST_INTERVAL),
            mean_poll_nanos: Cell::new(nanos),
            since: Cell::new(Instant::now()),
        }
    }

    /// Called once per turn: `true` on the turn that looks outside first (the driver, the
    /// injector). That turn also folds the interval's polls into the mean and sets the next
    /// interval from it.
    fn look_outside_first(&self) -> bool {
        let left = self.left.get();
        if left > 1 {
            self.left.set(left - 1);
            return false;
        }
        let polls = self.turns.get();
        let now = Instant::now();
        let mean = now.duration_since(self.since.get()).as_nanos() as f64 / f64::from(polls);
        // A measurement over many polls weighs as much as that many single ones would.
        let weight = 1.0 - (1.0 - SMOOTHING).powi(polls as i32);
        let smoothed = weight * mean + (1.0 - weight) * self.mean_poll_nanos.get();
        self.mean_poll_nanos.set(smoothed);
        let (least, most) = INTERVAL_BOUNDS;
        // `as` saturates: a mean of 0 ns gives u32::MAX, clamped to `most`.
        let turns = ((INJECTOR_TARGET.as_nanos() as f64 / smoothed) as u32).clamp(least, most);
        self.turns.set(turns);
        self.left.set(turns);
        self.since.set(now);
        true
    }

    /// The worker slept: the time asleep was no polling, the interval starts again now.
    fn restart(&self) {
        self.left.set(self.turns.get());
        self.since.set(Instant::now());
    }
}
