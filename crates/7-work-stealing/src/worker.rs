//! A worker thread: where it looks for its next task, how it steals, how it parks.
//!
//! ```text
//! loop {
//!     task = my queue            (every 61st turn: the injector first, so it cannot starve)
//!         or a share of the injector
//!         or half of a random other worker's queue     (only while "searching")
//!     found: run it (poll its future once);  nothing anywhere: park
//! }
//! ```

use std::cell::Cell;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{Ordering, fence};

use crate::queue::{CAPACITY, Owner};
use crate::runtime::{Current, CurrentGuard, Shared};
use crate::task::TaskRef;

/// Every this many turns a worker looks at the injector before its own queue (tokio: 61,
/// a prime, so it does not fall in step with tasks that come in rounds).
const INJECTOR_INTERVAL: u32 = 61;

/// One worker thread's own state (only its thread touches it).
pub(crate) struct Worker {
    pub(crate) index: usize,
    pub(crate) local: Owner<TaskRef>,
    pub(crate) shared: Arc<Shared>,
    /// Counts turns, for `INJECTOR_INTERVAL`.
    tick: Cell<u32>,
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
        let parked = fdio::timeline::begin();
        shared.parkers[self.index].park();
        parked.wait("park", fdio::timeline::Args::new);
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
    pub(crate) fn stop_searching(&self) {
        if self.idle.searching.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.notify_work();
        }
    }
}
