//! A task's state, one atomic word: who may poll it, and what a wake must do.
//!
//! On one thread (lesson 5) a task is polled only by the loop, one at a time, and a wake
//! just queues its id. Here a wake can come from any thread at any moment — while the task
//! sits in a queue, while another worker is polling it, after it finished — and two workers
//! must never poll the same future at once (`poll` takes `&mut`). So every transition is a
//! compare-and-swap on one word of flags:
//!
//! ```text
//!             wake                    a worker pops it
//!   idle ───────────────▶ SCHEDULED ───────────────────▶ RUNNING
//!    ▲                        ▲                        │  │  │
//!    │ Pending                │ Pending, NOTIFIED:     │  │  │ Ready, or panicked
//!    └────────────────────────┼─ scheduled again ◀─────┘  │  ▼
//!                             │                           │ COMPLETE
//!          wake while RUNNING: set NOTIFIED ──────────────┘
//!   abort: set CANCELLED (and SCHEDULED if idle): the next worker to pop it drops it
//! ```
//!
//! - A wake that finds the task idle sets SCHEDULED and must queue it: exactly one wake
//!   wins that CAS, so a task is never queued twice.
//! - A wake that finds it RUNNING only sets NOTIFIED: the worker polling it sees the flag
//!   when the poll returns `Pending` and queues it again. Without the flag that wake would
//!   be lost — the future may have checked its condition just before it became true.
//! - A wake that finds it SCHEDULED or COMPLETE does nothing.
//!
//! tokio's `state.rs` is the same idea, with the reference count packed in the same word.

use crate::sync::{AtomicUsize, Ordering};

/// The task is in a run queue, or about to be put in one by whoever set this bit: set by
/// the wake (or `abort`) that found it idle, and by a spawn; cleared by the worker that pops
/// it. While it is set, no other wake queues the task.
const SCHEDULED: usize = 1;
/// A worker is polling the task, or dropping its future: only that worker touches the
/// future. Set by `start`, cleared when the poll ends.
const RUNNING: usize = 2;
/// Woken while RUNNING: the worker polling it queues it again when the poll returns
/// `Pending`. Only ever set together with RUNNING; cleared when that poll ends.
const NOTIFIED: usize = 4;
/// The future is gone: it returned, panicked, or was dropped after `abort`. Once this bit is
/// set, it is never unset, and no wake queues the task again.
const COMPLETE: usize = 8;
/// `abort` was called: the next worker to hold the task drops its future instead of polling
/// it. Once this bit is set, it is never unset.
const CANCELLED: usize = 16;

/// What the caller of [`State::wake`] must do.
#[must_use = "`Queue` means the caller must queue the task, or it is never polled again"]
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum AfterWake {
    /// The task was idle: it is SCHEDULED now, and the caller must queue it. Exactly one of
    /// any number of racing wakes gets this.
    Queue,
    /// Nothing to do: it is queued already, the worker polling it will queue it again
    /// (NOTIFIED), or it is complete.
    Nothing,
}

/// What the caller of [`State::cancel`] (`abort`) must do.
#[must_use = "`Queue` means the caller must queue the task, or its future is never dropped"]
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum AfterCancel {
    /// The task was idle: it is SCHEDULED now, and the caller must queue it so that the
    /// worker that pops it drops its future.
    Queue,
    /// Nothing to do: a worker holds it or will pop it, and sees CANCELLED; or it is
    /// complete, or aborted already.
    Nothing,
}

/// What the worker that popped a task must do with it.
#[must_use]
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Start {
    /// Poll it: it is RUNNING now, and only this worker may touch its future.
    Poll,
    /// It was aborted: drop its future (it is RUNNING, so nobody else touches it), then
    /// call `complete`.
    Cancel,
}

/// What the worker must do after a poll that returned `Pending`.
#[must_use]
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum AfterPoll {
    /// Nothing: it waits for a wake.
    Idle,
    /// It was woken during the poll: queue it again.
    Reschedule,
    /// It was aborted during the poll: drop its future, then call `complete`.
    Cancel,
}

/// The atomic state of one task.
#[derive(Debug)]
pub(crate) struct State(AtomicUsize);

impl State {
    /// A new task is scheduled: `spawn` queues it at once.
    pub(crate) fn new_scheduled() -> State {
        State(AtomicUsize::new(SCHEDULED))
    }

    /// Applies `change` until the CAS succeeds; returns the word before. `change` returns
    /// `None` to leave the word as it is.
    fn update(&self, change: impl Fn(usize) -> Option<usize>) -> usize {
        match self
            .0
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, change)
        {
            Ok(before) | Err(before) => before,
        }
    }

    /// A waker was woken: SCHEDULED if it was idle, NOTIFIED if it is RUNNING.
    ///
    /// A wake that changes nothing (the task is queued already) still *writes* the word, the
    /// same value back: a `Release` that the worker's next `start` acquires. Without it the
    /// poll that follows might not see what the waker did just before waking — set a flag,
    /// fill a buffer — and would return `Pending` for good. (loom found this one: a
    /// compare-and-swap that is not made is only a load, and publishes nothing.)
    pub(crate) fn wake(&self) -> AfterWake {
        let before = self.update(|state| {
            if state & (COMPLETE | SCHEDULED | NOTIFIED) != 0 {
                Some(state)
            } else if state & RUNNING != 0 {
                Some(state | NOTIFIED)
            } else {
                Some(state | SCHEDULED)
            }
        });
        if before & (COMPLETE | SCHEDULED | NOTIFIED | RUNNING) == 0 {
            AfterWake::Queue
        } else {
            AfterWake::Nothing
        }
    }

    /// A worker popped the task: SCHEDULED → RUNNING.
    pub(crate) fn start(&self) -> Start {
        let before = self.update(|state| {
            debug_assert!(state & SCHEDULED != 0 && state & RUNNING == 0, "{state:b}");
            Some((state & !SCHEDULED) | RUNNING)
        });
        if before & CANCELLED != 0 {
            Start::Cancel
        } else {
            Start::Poll
        }
    }

    /// The poll returned `Pending`: RUNNING → idle, or → SCHEDULED if woken meanwhile.
    pub(crate) fn after_pending(&self) -> AfterPoll {
        let before = self.update(|state| {
            if state & CANCELLED != 0 {
                None // stays RUNNING until its future is dropped
            } else if state & NOTIFIED != 0 {
                Some((state & !(RUNNING | NOTIFIED)) | SCHEDULED)
            } else {
                Some(state & !RUNNING)
            }
        });
        if before & CANCELLED != 0 {
            AfterPoll::Cancel
        } else if before & NOTIFIED != 0 {
            AfterPoll::Reschedule
        } else {
            AfterPoll::Idle
        }
    }

    /// The future returned `Ready`, panicked, or was dropped: RUNNING → COMPLETE, for good.
    pub(crate) fn complete(&self) {
        self.update(|state| Some((state & !(RUNNING | NOTIFIED | SCHEDULED)) | COMPLETE));
    }

    /// `abort`: marks it CANCELLED, and SCHEDULED if it was idle.
    pub(crate) fn cancel(&self) -> AfterCancel {
        let before = self.update(|state| {
            if state & (COMPLETE | CANCELLED) != 0 {
                None
            } else if state & (RUNNING | SCHEDULED) != 0 {
                Some(state | CANCELLED)
            } else {
                Some(state | CANCELLED | SCHEDULED)
            }
        });
        if before & (COMPLETE | CANCELLED | RUNNING | SCHEDULED) == 0 {
            AfterCancel::Queue
        } else {
            AfterCancel::Nothing
        }
    }

    pub(crate) fn is_complete(&self) -> bool {
        self.0.load(Ordering::Acquire) & COMPLETE != 0
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    /// The life of a task: scheduled, polled, woken while polled, polled again, done.
    #[test]
    fn a_wake_during_a_poll_schedules_again() {
        let state = State::new_scheduled();
        assert_eq!(
            state.wake(),
            AfterWake::Nothing,
            "scheduled: queued once only"
        );
        assert_eq!(state.start(), Start::Poll);
        assert_eq!(
            state.wake(),
            AfterWake::Nothing,
            "running: the poller queues it"
        );
        assert_eq!(state.after_pending(), AfterPoll::Reschedule);
        assert_eq!(state.start(), Start::Poll);
        assert_eq!(state.after_pending(), AfterPoll::Idle);
        assert_eq!(state.wake(), AfterWake::Queue, "idle: the waker queues it");
        assert_eq!(state.start(), Start::Poll);
        state.complete();
        assert_eq!(
            state.wake(),
            AfterWake::Nothing,
            "complete: never queued again"
        );
        assert_eq!(state.cancel(), AfterCancel::Nothing);
    }

    /// Aborting an idle task queues it, and the worker that pops it drops it.
    #[test]
    fn abort_of_an_idle_task_queues_it_to_be_dropped() {
        let state = State::new_scheduled();
        assert_eq!(state.start(), Start::Poll);
        assert_eq!(state.after_pending(), AfterPoll::Idle);
        assert_eq!(state.cancel(), AfterCancel::Queue);
        assert_eq!(state.wake(), AfterWake::Nothing);
        assert_eq!(state.start(), Start::Cancel);
        state.complete();
        assert!(state.is_complete());
    }
}

#[cfg(all(test, loom))]
mod loom_tests {
    use super::*;
    use loom::sync::atomic::AtomicBool;
    use loom::sync::{Arc, Mutex};

    /// A task whose "future" is ready once `flag` is set. One thread sets the flag and
    /// wakes; two workers run whatever is queued. In every interleaving the task completes
    /// (the wake is never lost) and two polls never overlap.
    #[test]
    fn loom_a_wake_racing_a_poll_is_never_lost() {
        loom::model(|| {
            let state = Arc::new(State::new_scheduled());
            let flag = Arc::new(AtomicBool::new(false));
            let polling = Arc::new(AtomicBool::new(false));
            // The run queue: how many times the task is in it.
            let queued = Arc::new(Mutex::new(1usize));

            let worker = {
                let (state, flag, polling, queued) = (
                    Arc::clone(&state),
                    Arc::clone(&flag),
                    Arc::clone(&polling),
                    Arc::clone(&queued),
                );
                move || {
                    loop {
                        {
                            let mut queued = queued.lock().unwrap();
                            if *queued == 0 {
                                return;
                            }
                            *queued -= 1;
                        }
                        assert_eq!(state.start(), Start::Poll);
                        assert!(!polling.swap(true, Ordering::SeqCst), "two polls at once");
                        let ready = flag.load(Ordering::SeqCst);
                        polling.store(false, Ordering::SeqCst);
                        if ready {
                            state.complete();
                        } else if state.after_pending() == AfterPoll::Reschedule {
                            *queued.lock().unwrap() += 1;
                        }
                    }
                }
            };
            let other_worker = loom::thread::spawn(worker.clone());
            let waker = {
                let (state, flag, queued) =
                    (Arc::clone(&state), Arc::clone(&flag), Arc::clone(&queued));
                loom::thread::spawn(move || {
                    flag.store(true, Ordering::SeqCst);
                    if state.wake() == AfterWake::Queue {
                        *queued.lock().unwrap() += 1;
                    }
                })
            };
            waker.join().unwrap();
            worker();
            other_worker.join().unwrap();
            // Whatever was queued has been run: the last poll saw the flag.
            assert!(state.is_complete(), "the wake was lost");
        });
    }

    /// `abort` racing a poll that ends `Pending`: the future is dropped exactly once, by
    /// whoever holds the task when the CANCELLED flag is seen.
    #[test]
    fn loom_abort_racing_a_poll_drops_once() {
        loom::model(|| {
            let state = Arc::new(State::new_scheduled());
            let dropped = Arc::new(AtomicUsize::new(0));
            let run = |state: &State, dropped: &AtomicUsize| match state.start() {
                Start::Cancel => {
                    dropped.fetch_add(1, Ordering::SeqCst);
                    state.complete();
                    false
                }
                Start::Poll => match state.after_pending() {
                    AfterPoll::Cancel => {
                        dropped.fetch_add(1, Ordering::SeqCst);
                        state.complete();
                        false
                    }
                    AfterPoll::Reschedule => true,
                    AfterPoll::Idle => false,
                },
            };
            let aborter = {
                let state = Arc::clone(&state);
                loom::thread::spawn(move || state.cancel() == AfterCancel::Queue)
            };
            let mut again = run(&state, &dropped);
            let must_queue = aborter.join().unwrap();
            again |= must_queue;
            if again {
                run(&state, &dropped);
            }
            assert_eq!(dropped.load(Ordering::SeqCst), 1);
            assert!(state.is_complete());
        });
    }
}
