//! Timers: `sleep`, `sleep_until`, `timeout`. Lesson 5's, kept by the reactor's thread: the
//! earliest deadline is its `epoll_wait` timeout, and a new earliest timer interrupts the
//! wait (through the `mio::Waker`) so the timeout is computed again.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use crate::future::{Either, race};
use crate::reactor::{Reactor, TimerKey};
use crate::runtime::with_shared;

/// A future that completes at `deadline`. Dropping it cancels the timer.
pub struct Sleep {
    deadline: Instant,
    /// Where the timer is, once polled (and the reactor that keeps it).
    timer: Option<(TimerKey, Arc<Reactor>)>,
}

/// Completes after `duration`.
pub fn sleep(duration: Duration) -> Sleep {
    sleep_until(Instant::now() + duration)
}

/// Completes at `deadline`.
pub fn sleep_until(deadline: Instant) -> Sleep {
    Sleep {
        deadline,
        timer: None,
    }
}

impl Future for Sleep {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if Instant::now() >= self.deadline {
            self.cancel();
            return Poll::Ready(());
        }
        // Polled again (maybe with a new waker): replace the entry, keep the deadline.
        self.cancel();
        let reactor = with_shared(|shared| Arc::clone(&shared.reactor));
        let key = reactor.add_timer(self.deadline, cx.waker());
        self.timer = Some((key, reactor));
        Poll::Pending
    }
}

impl Sleep {
    fn cancel(&mut self) {
        if let Some((key, reactor)) = self.timer.take() {
            reactor.lock_timers().remove(&key);
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

/// Runs `future` for at most `duration`; if the time runs out first, `future` is dropped
/// (cancelled) and `Err(Elapsed)` is returned.
pub async fn timeout<F: Future>(duration: Duration, future: F) -> Result<F::Output, Elapsed> {
    match race(future, sleep(duration)).await {
        Either::Left(output) => Ok(output),
        Either::Right(()) => Err(Elapsed),
    }
}
