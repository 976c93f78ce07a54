//! Timers: `sleep`, `sleep_until`, `timeout` and `interval`.
//!
//! Ours keeps timers in an ordered map (`BTreeMap`), earliest deadline first, and a dropped
//! timer leaves it at once. asyncio's loop keeps a binary heap (`heapq`) and cancels lazily:
//! a cancelled timer stays in the heap, marked, until it reaches the top (or until so many
//! are cancelled that the heap is rebuilt). In both, the earliest deadline is the reactor's
//! `poll` timeout, so the thread sleeps until either I/O arrives or the next timer is due —
//! then fires every due timer by waking its task.

use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use crate::combinators::{Either, race};
use crate::runtime::with_runtime;

/// A timer's place in the map: its deadline, then a sequence number for equal deadlines.
pub(crate) type TimerKey = (Instant, u64);

/// The pending timers, earliest first.
#[derive(Default)]
pub(crate) struct Timers {
    wakers: BTreeMap<TimerKey, Waker>,
    next_sequence: u64,
}

impl Timers {
    fn insert(&mut self, deadline: Instant, waker: &Waker) -> TimerKey {
        let key = (deadline, self.next_sequence);
        self.next_sequence += 1;
        self.wakers.insert(key, waker.clone());
        key
    }

    /// The earliest deadline, if any timer is pending.
    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        self.wakers.keys().next().map(|&(deadline, _)| deadline)
    }

    /// Wakes, in deadline order, every timer due at `now`; returns how many fired.
    pub(crate) fn fire_due(&mut self, now: Instant) -> usize {
        let later = self.wakers.split_off(&(now, u64::MAX));
        let due = std::mem::replace(&mut self.wakers, later);
        let fired = due.len();
        for waker in due.into_values() {
            waker.wake();
        }
        fired
    }
}

/// A future that completes at `deadline`. Dropping it cancels the timer.
pub struct Sleep {
    deadline: Instant,
    key: Option<TimerKey>,
}

/// Completes after `duration` — `await asyncio.sleep(seconds)`.
pub fn sleep(duration: Duration) -> Sleep {
    sleep_until(Instant::now() + duration)
}

/// Completes at `deadline`.
pub fn sleep_until(deadline: Instant) -> Sleep {
    Sleep {
        deadline,
        key: None,
    }
}

impl Future for Sleep {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if Instant::now() >= self.deadline {
            self.cancel();
            return Poll::Ready(());
        }
        let deadline = self.deadline;
        with_runtime(|runtime| {
            let mut timers = runtime.timers.borrow_mut();
            // Polled again (maybe with a new waker): replace the entry, keep the deadline.
            if let Some(key) = self.key.take() {
                timers.wakers.remove(&key);
            }
            self.key = Some(timers.insert(deadline, cx.waker()));
        });
        Poll::Pending
    }
}

impl Sleep {
    fn cancel(&mut self) {
        if let Some(key) = self.key.take() {
            crate::runtime::try_with_runtime(|runtime| {
                runtime.timers.borrow_mut().wakers.remove(&key)
            });
        }
    }
}

impl Drop for Sleep {
    fn drop(&mut self) {
        self.cancel();
    }
}

/// `timeout` gave up: the future took longer than allowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Elapsed;

impl fmt::Display for Elapsed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("deadline has elapsed")
    }
}

impl std::error::Error for Elapsed {}

/// Runs `future` for at most `duration`: `asyncio.wait_for`. If the time runs out first,
/// `future` is dropped — cancelled — and `Err(Elapsed)` is returned.
pub async fn timeout<F: Future>(duration: Duration, future: F) -> Result<F::Output, Elapsed> {
    match race(future, sleep(duration)).await {
        Either::Left(output) => Ok(output),
        Either::Right(()) => Err(Elapsed),
    }
}

/// Ticks every `period`, on a fixed schedule: a late tick does not push the next ones back.
pub struct Interval {
    next: Instant,
    period: Duration,
}

/// An interval whose first tick is immediate.
pub fn interval(period: Duration) -> Interval {
    Interval {
        next: Instant::now(),
        period,
    }
}

impl Interval {
    /// Waits for the next tick and returns when it was due. If we fell behind by more than a
    /// period, the missed ticks are skipped rather than fired in a burst.
    pub async fn tick(&mut self) -> Instant {
        sleep_until(self.next).await;
        let due = self.next;
        self.next += self.period;
        let now = Instant::now();
        if self.next < now {
            self.next = now + self.period;
        }
        due
    }
}
