//! Small tools for futures, as in lesson 5: [`race`] two futures, and an [`Event`] that
//! many tasks wait on — now `Sync`, since its waiters run on several threads.

use std::collections::HashMap;
use std::future::{Future, poll_fn};
use std::pin::{Pin, pin};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Waker};

/// One of two outputs: which future of a [`race`] finished first.
#[derive(Debug, PartialEq, Eq)]
pub enum Either<A, B> {
    Left(A),
    Right(B),
}

/// Polls both futures and returns the output of the first to finish; the other is dropped
/// (cancelled). Biased: `a` is polled first.
pub async fn race<A: Future, B: Future>(a: A, b: B) -> Either<A::Output, B::Output> {
    let mut a = pin!(a);
    let mut b = pin!(b);
    poll_fn(|cx| {
        if let Poll::Ready(output) = a.as_mut().poll(cx) {
            return Poll::Ready(Either::Left(output));
        }
        if let Poll::Ready(output) = b.as_mut().poll(cx) {
            return Poll::Ready(Either::Right(output));
        }
        Poll::Pending
    })
    .await
}

/// A flag set once, that any number of tasks await (asyncio's `Event`).
#[derive(Default)]
pub struct Event {
    set: AtomicBool,
    waiters: Mutex<Waiters>,
}

/// The wakers waiting on an [`Event`], by ticket.
#[derive(Default)]
struct Waiters {
    next_ticket: u64,
    wakers: HashMap<u64, Waker>,
}

impl Event {
    pub fn new() -> Event {
        Event::default()
    }

    /// Sets the flag and wakes every waiter.
    pub fn set(&self) {
        self.set.store(true, Ordering::SeqCst);
        let waiters = std::mem::take(&mut self.lock().wakers);
        for waker in waiters.into_values() {
            waker.wake();
        }
    }

    pub fn is_set(&self) -> bool {
        self.set.load(Ordering::SeqCst)
    }

    /// Waits until the flag is set.
    pub fn wait(&self) -> EventWait<'_> {
        EventWait {
            event: self,
            registered: None,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Waiters> {
        self.waiters.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The future of [`Event::wait`].
pub struct EventWait<'a> {
    event: &'a Event,
    /// Our ticket, and the waker left under it.
    registered: Option<(u64, Waker)>,
}

impl Future for EventWait<'_> {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.event.is_set() {
            return Poll::Ready(());
        }
        // Polled again by the same task (an echo races its shutdown wait at every read):
        // our waker is there already, no need to take the lock that every connection shares.
        if let Some((_, waker)) = &self.registered
            && waker.will_wake(cx.waker())
        {
            return Poll::Pending;
        }
        let mut waiters = self.event.lock();
        // Checked again under the lock: `set` stores the flag before it takes the waiters.
        if self.event.is_set() {
            return Poll::Ready(());
        }
        let ticket = match &self.registered {
            Some((ticket, _)) => *ticket,
            None => {
                waiters.next_ticket += 1;
                waiters.next_ticket
            }
        };
        waiters.wakers.insert(ticket, cx.waker().clone());
        drop(waiters);
        self.registered = Some((ticket, cx.waker().clone()));
        Poll::Pending
    }
}

impl Drop for EventWait<'_> {
    fn drop(&mut self) {
        if let Some((ticket, _)) = self.registered.take() {
            self.event.lock().wakers.remove(&ticket);
        }
    }
}
