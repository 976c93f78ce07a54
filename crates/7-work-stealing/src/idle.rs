//! Who is parked and who is searching: how a worker sleeps, and how one queued task wakes
//! one worker — not all of them.
//!
//! The race to get right: a worker finds every queue empty and goes to sleep, while another
//! thread queues a task and looks for a sleeper to wake. If the worker looked at the queues
//! before the task came, and the waker looked for sleepers before the worker lay down, the
//! task waits with everyone asleep. So each side writes first and reads second, with a
//! `SeqCst` fence between:
//!
//! ```text
//!   worker (going idle)                    waker (after queueing a task)
//!   join the sleepers                      ─
//!   fence(SeqCst)                          fence(SeqCst)
//!   look at every queue once more          look for a sleeper (or a searcher)
//! ```
//!
//! The two fences are ordered one way or the other, so at least one side sees the other's
//! write: the worker sees the task (and leaves the sleepers), or the waker sees the sleeper
//! (and unparks it). The loom checks at the end of this file run both sides through every
//! interleaving.

use std::sync::PoisonError;

use crate::sync::{AtomicUsize, Condvar, Mutex, MutexGuard, Ordering, fence};

/// Who is parked, and how many are searching.
pub(crate) struct Idle {
    sleepers: Mutex<Vec<usize>>,
    /// `sleepers.len()`, readable without the lock.
    sleeping: AtomicUsize,
    /// Workers between "my queue is empty" and "parked" (or "found work").
    searching: AtomicUsize,
    /// One bed per worker, by worker number.
    parkers: Box<[Parker]>,
}

/// What a worker about to park must do.
#[must_use]
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum GoingIdle {
    /// Work came after all: it left the sleepers, and counts as searching again.
    FoundWork,
    /// Nothing anywhere: call [`Idle::sleep`]. Whoever queues a task will unpark it.
    MustSleep,
}

impl Idle {
    pub(crate) fn new(workers: usize) -> Idle {
        Idle {
            sleepers: Mutex::new(Vec::with_capacity(workers)),
            sleeping: AtomicUsize::new(0),
            searching: AtomicUsize::new(0),
            parkers: (0..workers).map(|_| Parker::default()).collect(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Vec<usize>> {
        self.sleepers.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Work was just queued: unparks one worker, if one must be — none if a worker is
    /// searching already (it will find the work) or none is parked (they are all busy, and
    /// each looks at the queues between two tasks). Returns the one unparked, which counts
    /// as searching from now on.
    pub(crate) fn notify_one(&self) -> Option<usize> {
        // The waker's side of the handshake (see the module doc).
        fence(Ordering::SeqCst);
        if self.searching.load(Ordering::SeqCst) != 0 || self.sleeping.load(Ordering::SeqCst) == 0 {
            return None;
        }
        let index = {
            let mut sleepers = self.lock();
            if self.searching.load(Ordering::SeqCst) != 0 {
                return None;
            }
            let index = sleepers.pop()?;
            self.sleeping.fetch_sub(1, Ordering::SeqCst);
            self.searching.fetch_add(1, Ordering::SeqCst);
            index
        };
        self.parkers[index].unpark();
        Some(index)
    }

    /// A worker whose queue is empty wants to steal: it may, unless half the workers
    /// search already (more would only fight over the same queues).
    pub(crate) fn try_start_searching(&self) -> bool {
        let searching = self.searching.load(Ordering::SeqCst);
        if 2 * searching >= self.parkers.len().max(2) {
            return false;
        }
        self.searching.fetch_add(1, Ordering::SeqCst);
        true
    }

    /// A searcher found work. `true` if it was the last one searching: the caller must
    /// then `notify_one`, in case more work is waiting — that is how a burst of tasks
    /// spreads over the workers, one at a time.
    #[must_use]
    pub(crate) fn stop_searching(&self) -> bool {
        self.searching.fetch_sub(1, Ordering::SeqCst) == 1
    }

    /// Worker `index` found nothing anywhere: it joins the sleepers (and leaves the
    /// searchers), then takes one last look — `has_work` — at every queue. Unlike a
    /// searcher that found work it wakes nobody: this last look is what covers work queued
    /// while it was the last searcher.
    pub(crate) fn go_idle(
        &self,
        index: usize,
        was_searching: bool,
        has_work: impl FnOnce() -> bool,
    ) -> GoingIdle {
        {
            let mut sleepers = self.lock();
            sleepers.push(index);
            self.sleeping.fetch_add(1, Ordering::SeqCst);
            if was_searching {
                self.searching.fetch_sub(1, Ordering::SeqCst);
            }
        }
        // The worker's side of the handshake (see the module doc).
        fence(Ordering::SeqCst);
        if has_work() && self.unsleep(index) {
            return GoingIdle::FoundWork;
        }
        // Not among the sleepers any more means a waker took it out: its unpark is on the
        // way, and `sleep` returns at once.
        GoingIdle::MustSleep
    }

    /// Worker `index` sleeps until it is unparked; it then counts as searching (whoever
    /// unparked it counted it so).
    pub(crate) fn sleep(&self, index: usize) {
        self.parkers[index].park();
    }

    /// Unparks every worker, sleeping or not (the runtime is shutting down).
    pub(crate) fn unpark_all(&self) {
        for parker in &self.parkers {
            parker.unpark();
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

#[cfg(all(test, loom))]
mod loom_tests {
    use super::*;
    use loom::sync::Arc;
    use loom::sync::atomic::AtomicBool;

    /// The queues of the model (tasks counted in an atomic), how many have been run, and
    /// the shutdown flag.
    #[derive(Default)]
    struct Model {
        queued: AtomicUsize,
        ran: Mutex<usize>,
        all_ran: Condvar,
        shutdown: AtomicBool,
    }

    impl Model {
        fn take(&self) -> bool {
            self.queued
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1))
                .is_ok()
        }

        /// Queues a task, as a waker or a spawn does: push, then `notify_one`.
        fn queue(&self, idle: &Idle) {
            self.queued.fetch_add(1, Ordering::AcqRel);
            let _ = idle.notify_one();
        }

        /// Waits until `tasks` tasks have run: if a wake-up was lost, this waits forever
        /// beside a parked worker, and loom fails the run (a deadlock).
        fn wait_until_ran(&self, tasks: usize) {
            let mut ran = self.ran.lock().unwrap();
            while *ran < tasks {
                ran = self.all_ran.wait(ran).unwrap();
            }
        }
    }

    /// A worker's loop, as `worker::run_worker` runs it: its next task, or start searching
    /// and look once more (stealing, in the runtime), or go idle and sleep.
    fn worker(index: usize, idle: &Idle, model: &Model) {
        let mut searching = false;
        while !model.shutdown.load(Ordering::Acquire) {
            if model.take() {
                if std::mem::replace(&mut searching, false) && idle.stop_searching() {
                    let _ = idle.notify_one();
                }
                *model.ran.lock().unwrap() += 1;
                model.all_ran.notify_one();
                continue;
            }
            if !searching && idle.try_start_searching() {
                searching = true;
                continue;
            }
            let has_work = || {
                model.queued.load(Ordering::Acquire) > 0 || model.shutdown.load(Ordering::Acquire)
            };
            if idle.go_idle(index, std::mem::replace(&mut searching, false), has_work)
                == GoingIdle::MustSleep
            {
                idle.sleep(index);
            }
            searching = true;
        }
    }

    /// Starts `workers` model workers, runs `produce` on this thread, waits until `tasks`
    /// have run, then shuts the workers down.
    fn run_model(workers: usize, tasks: usize, produce: impl FnOnce(&Idle, &Model)) {
        let idle = Arc::new(Idle::new(workers));
        let model = Arc::new(Model::default());
        let threads: Vec<_> = (0..workers)
            .map(|index| {
                let (idle, model) = (Arc::clone(&idle), Arc::clone(&model));
                loom::thread::spawn(move || worker(index, &idle, &model))
            })
            .collect();
        produce(&idle, &model);
        model.wait_until_ran(tasks);
        model.shutdown.store(true, Ordering::Release);
        idle.unpark_all();
        for thread in threads {
            thread.join().unwrap();
        }
        assert_eq!(*model.ran.lock().unwrap(), tasks);
    }

    /// A worker goes idle while another thread queues a task and notifies: in every
    /// interleaving the task is run — either the worker's last look sees it, or the
    /// notify sees the worker among the sleepers and unparks it.
    #[test]
    fn loom_a_task_queued_while_the_worker_parks_is_run() {
        loom::model(|| run_model(1, 1, |idle, model| model.queue(idle)));
    }

    /// Two workers, one task: a notify that finds a worker searching wakes nobody, and the
    /// searcher must then find the task, even if it was about to park. Three threads: at
    /// most 2 preemptions per run (3 take five minutes here).
    #[test]
    fn loom_a_searcher_about_to_park_finds_the_task() {
        let mut builder = loom::model::Builder::new();
        builder.preemption_bound = Some(builder.preemption_bound.map_or(2, |bound| bound.min(2)));
        builder.check(|| run_model(2, 1, |idle, model| model.queue(idle)));
    }
}
