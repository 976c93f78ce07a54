//! A worker thread: where it looks for its next task, how it steals, how it parks.
//!
//! ```text
//! loop {
//!     task = my queue            (about every 200 µs of polling: the injector first)
//!         or a share of the injector
//!         or half of a random other worker's queue     (only while "searching")
//!     found: run it (poll its future once);  nothing anywhere: park
//! }
//! ```

use std::cell::Cell;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crate::idle::GoingIdle;
use crate::queue::{CAPACITY, Owner};
use crate::runtime::{Current, CurrentGuard, Shared};
use crate::task::TaskRef;

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
        if self.interval.injector_first()
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

    /// Nothing to do anywhere: sleep until a waker or a spawn unparks us.
    fn park(&self) {
        let shared = &self.shared;
        let has_work = || shared.has_work() || shared.shutdown.load(Ordering::SeqCst);
        let was_searching = self.searching.replace(false);
        if shared.idle.go_idle(self.index, was_searching, has_work) == GoingIdle::MustSleep {
            shared
                .trace
                .say(|| format!("worker {}: nothing to do → park", self.index));
            let parked = fdio::timeline::begin();
            shared.idle.sleep(self.index);
            parked.wait("park", fdio::timeline::Args::new);
            // The time asleep was no polling: measure from here.
            self.interval.restart();
            shared
                .trace
                .say(|| format!("worker {}: unparked", self.index));
        }
        // Whoever woke us counted us as searching; so did `go_idle` if it found work.
        self.searching.set(true);
    }
}

/// How often a worker looks at the injector first, tuned to its tasks, as tokio's is: it
/// keeps a running mean of how long a poll takes, and looks every `INJECTOR_TARGET ÷ mean`
/// turns. Short polls (a million tiny tasks) make the interval long, so the injector's lock
/// is rarely taken; long ones (connections echoing a flood) make it short. Measured once per
/// interval, not per poll: a clock read per poll would cost more than a short poll.
struct Interval {
    /// The interval now, in turns.
    turns: Cell<u32>,
    /// Turns left until the next look.
    left: Cell<u32>,
    /// The running mean of one poll's duration, in nanoseconds.
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

    /// Called once per turn: `true` on the turn that looks at the injector first. That turn
    /// also folds the interval's polls into the mean and sets the next interval from it.
    fn injector_first(&self) -> bool {
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
