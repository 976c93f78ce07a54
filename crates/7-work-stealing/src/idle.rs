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
//! (and unparks it). The loom checks at the end of this file run both sides through the
//! interleavings loom explores — every one for a single worker; with two workers (three
//! threads), those with at most 2 preemptions. Their worker is a copy of `run_worker`'s loop,
//! and their run queues are one counter of tasks.

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
    /// Interrupts the `epoll_wait` of the worker holding the driver (`--driver worker`).
    interrupt_driver: Box<dyn Fn() + Send + Sync>,
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

/// Why [`Idle::sleep`] returned.
#[must_use]
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Woken {
    /// A waker unparked it: it left the sleepers and counts as searching.
    Unparked,
    /// It slept in the driver, and the driver returned without an unpark: I/O or a timer
    /// (the wakers are in the driver), a new timer, or a stale interrupt. It is still among
    /// the sleepers: sleep again, or [`Idle::leave`].
    ByTheDriver,
}

/// What a worker that the driver woke (and that has tasks now) must do, after [`Idle::leave`].
#[must_use]
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Left {
    /// It left the sleepers: it runs its tasks, and is not searching.
    Running,
    /// A waker had taken it out already and counted it as searching; its unpark is on the
    /// way: `sleep` once more (on the condvar) to take it, then it is searching.
    TakeTheUnpark,
}

impl Idle {
    /// `interrupt_driver` wakes a worker that sleeps in the driver: a write to the driver's
    /// eventfd, which ends its `epoll_wait`.
    pub(crate) fn new(workers: usize, interrupt_driver: Box<dyn Fn() + Send + Sync>) -> Idle {
        Idle {
            sleepers: Mutex::new(Vec::with_capacity(workers)),
            sleeping: AtomicUsize::new(0),
            searching: AtomicUsize::new(0),
            parkers: (0..workers).map(|_| Parker::default()).collect(),
            interrupt_driver,
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
        self.parkers[index].unpark(&self.interrupt_driver);
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

    /// Worker `index` sleeps until it is unparked — then it counts as searching (whoever
    /// unparked it counted it so). Given `driver`, a wait for I/O (`epoll_wait`), it sleeps
    /// in that instead of on its condvar: then an unpark interrupts the driver, and the driver
    /// may also return by itself, with I/O or a timer to see to ([`Woken::ByTheDriver`]).
    pub(crate) fn sleep(&self, index: usize, driver: Option<&mut dyn FnMut()>) -> Woken {
        let parker = &self.parkers[index];
        match driver {
            None => {
                parker.park_on_condvar();
                Woken::Unparked
            }
            Some(wait_for_io) => parker.park_in_driver(wait_for_io),
        }
    }

    /// Worker `index`, woken by the driver, has tasks to run: it leaves the sleepers, unless
    /// a waker took it out already (then that waker's unpark is on the way).
    pub(crate) fn leave(&self, index: usize) -> Left {
        let mut sleepers = self.lock();
        let Some(position) = sleepers.iter().position(|&i| i == index) else {
            return Left::TakeTheUnpark;
        };
        sleepers.swap_remove(position);
        self.sleeping.fetch_sub(1, Ordering::SeqCst);
        Left::Running
    }

    /// Unparks every worker, sleeping or not (the runtime is shutting down).
    pub(crate) fn unpark_all(&self) {
        for parker in &self.parkers {
            parker.unpark(&self.interrupt_driver);
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

/// A worker's bed: where it sleeps, and a condvar. On Linux std builds both the mutex and
/// the condvar on futex(2): a parked thread sleeps in the kernel (`FUTEX_WAIT`) and costs no
/// CPU until `FUTEX_WAKE`. A worker holding the driver sleeps in `epoll_wait` instead, and
/// is woken by a write to the driver's eventfd.
#[derive(Default)]
struct Parker {
    bed: Mutex<Bed>,
    condvar: Condvar,
}

/// Where a worker is, as its parker sees it.
#[derive(Default, Debug, Clone, Copy, PartialEq, Eq)]
enum Bed {
    /// Not asleep, and no unpark waiting.
    #[default]
    Awake,
    /// Asleep on the condvar: an unpark notifies it.
    OnCondvar,
    /// Asleep in the driver's `epoll_wait`: an unpark interrupts the driver.
    InDriver,
    /// Unparked: the next `park` returns at once.
    Unparked,
}

impl Parker {
    fn lock(&self) -> MutexGuard<'_, Bed> {
        self.bed.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Sleeps on the condvar until `unpark` (returns at once if it was called since the last
    /// park).
    fn park_on_condvar(&self) {
        let mut bed = self.lock();
        if *bed != Bed::Unparked {
            *bed = Bed::OnCondvar;
            while *bed != Bed::Unparked {
                bed = self
                    .condvar
                    .wait(bed)
                    .unwrap_or_else(PoisonError::into_inner);
            }
        }
        *bed = Bed::Awake;
    }

    /// Sleeps in the driver: says so, then waits for I/O, unless an unpark came first.
    fn park_in_driver(&self, wait_for_io: &mut dyn FnMut()) -> Woken {
        {
            let mut bed = self.lock();
            if *bed == Bed::Unparked {
                *bed = Bed::Awake;
                return Woken::Unparked;
            }
            // Said *before* the wait: an unpark from now on sees it and interrupts the driver
            // (an interrupt that comes before `epoll_wait` makes it return at once).
            *bed = Bed::InDriver;
        }
        wait_for_io();
        let mut bed = self.lock();
        let woken = match *bed {
            Bed::Unparked => Woken::Unparked,
            _ => Woken::ByTheDriver,
        };
        *bed = Bed::Awake;
        woken
    }

    fn unpark(&self, interrupt_driver: &dyn Fn()) {
        let before = std::mem::replace(&mut *self.lock(), Bed::Unparked);
        match before {
            Bed::OnCondvar => self.condvar.notify_one(),
            Bed::InDriver => interrupt_driver(),
            Bed::Awake | Bed::Unparked => {}
        }
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
        /// `--driver worker`: the driver an idle worker may sleep in.
        driver: Option<Arc<Driver>>,
    }

    /// The model's driver: `epoll_wait` on an eventfd registered edge-triggered. Each write
    /// (`interrupt`) is one edge, and one `wait` returns for each edge since the last
    /// (`pending`); the kernel's I/O is `io_ready`, tasks made ready before an edge.
    #[derive(Default)]
    struct Driver {
        /// Taken with `try_lock` only, as the runtime's `Shared::try_take_driver` does.
        held: Mutex<()>,
        pending: Mutex<bool>,
        edge: Condvar,
        io_ready: AtomicUsize,
    }

    impl Driver {
        fn interrupt(&self) {
            *self.pending.lock().unwrap() = true;
            self.edge.notify_one();
        }

        fn wait(&self) {
            let mut pending = self.pending.lock().unwrap();
            while !*pending {
                pending = self.edge.wait(pending).unwrap();
            }
            *pending = false;
        }

        /// The kernel finds a socket ready: the task waiting for it is in the next turn's
        /// wakers.
        fn io_ready(&self) {
            self.io_ready.fetch_add(1, Ordering::AcqRel);
            self.interrupt();
        }
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
                == GoingIdle::FoundWork
            {
                searching = true;
                continue;
            }
            searching = sleep(index, idle, model);
        }
    }

    /// A parked worker's sleep, as `Worker::park` sleeps: in the driver if it can take it
    /// (`--driver worker`; the model's driver is free only if `model.driver` is `Some`),
    /// else on its condvar. Returns whether it is searching now.
    fn sleep(index: usize, idle: &Idle, model: &Model) -> bool {
        loop {
            let (woken, ready) = match model.driver.as_ref().map(|driver| driver.held.try_lock()) {
                Some(Ok(_held)) => {
                    let driver = model.driver.as_ref().unwrap();
                    let mut ready = 0;
                    // A turn: wait, then collect what is ready (before the bed is looked at).
                    let mut turn = || {
                        driver.wait();
                        ready = driver.io_ready.swap(0, Ordering::AcqRel);
                    };
                    (idle.sleep(index, Some(&mut turn)), ready)
                }
                _ => (idle.sleep(index, None), 0),
            };
            let searching = match woken {
                // Whoever woke us counted us as searching.
                Woken::Unparked => true,
                // An interrupt meant for no one now: sleep again, still a sleeper.
                Woken::ByTheDriver if ready == 0 && !model.shutdown.load(Ordering::Acquire) => {
                    continue;
                }
                Woken::ByTheDriver => match idle.leave(index) {
                    Left::Running => false,
                    Left::TakeTheUnpark => {
                        assert_eq!(idle.sleep(index, None), Woken::Unparked);
                        true
                    }
                },
            };
            // The tasks the driver woke go to our own queue (here: the model's one queue).
            model.queued.fetch_add(ready, Ordering::AcqRel);
            return searching;
        }
    }

    /// Starts `workers` model workers, runs `produce` on this thread, waits until `tasks`
    /// have run, then shuts the workers down. With `driver`, an idle worker sleeps in the
    /// model's driver (`--driver worker`); without, every worker sleeps on its condvar.
    fn run_model(workers: usize, driver: bool, tasks: usize, produce: impl FnOnce(&Idle, &Model)) {
        let driver = driver.then(|| Arc::new(Driver::default()));
        let interrupt = driver.clone();
        let idle = Arc::new(Idle::new(
            workers,
            Box::new(move || {
                if let Some(driver) = &interrupt {
                    driver.interrupt();
                }
            }),
        ));
        let model = Arc::new(Model {
            driver,
            ..Model::default()
        });
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
        loom::model(|| run_model(1, false, 1, |idle, model| model.queue(idle)));
    }

    /// Two workers, one task: a notify that finds a worker searching wakes nobody, and the
    /// searcher must then find the task, even if it was about to park. Three threads: at
    /// most 2 preemptions per run (3 take five minutes here).
    #[test]
    fn loom_a_searcher_about_to_park_finds_the_task() {
        let mut builder = loom::model::Builder::new();
        builder.preemption_bound = Some(builder.preemption_bound.map_or(2, |bound| bound.min(2)));
        builder.check(|| run_model(2, false, 1, |idle, model| model.queue(idle)));
    }

    /// `--driver worker`, one worker: it sleeps in the driver, and a task queued meanwhile
    /// (an unpark: an interrupt of the driver) is run in every interleaving — the unpark
    /// that comes before the worker is in `epoll_wait` makes the wait return at once.
    #[test]
    fn loom_a_worker_in_the_driver_is_unparked() {
        loom::model(|| run_model(1, true, 1, |idle, model| model.queue(idle)));
    }

    /// `--driver worker`, two workers: one sleeps in the driver, the other on its condvar;
    /// I/O makes a task ready (the driver returns by itself) while another thread queues a
    /// task and unparks a sleeper — perhaps the very worker the driver just woke, which must
    /// then take that unpark. Both tasks run, and every worker can be shut down.
    #[test]
    fn loom_io_and_an_unpark_meet_in_the_driver() {
        let mut builder = loom::model::Builder::new();
        builder.preemption_bound = Some(builder.preemption_bound.map_or(2, |bound| bound.min(2)));
        builder.check(|| {
            run_model(2, true, 2, |idle, model| {
                model.driver.as_ref().unwrap().io_ready();
                model.queue(idle);
            });
        });
    }
}
