//! `Event`: set once, awaited by many (asyncio's `Event`), for the echo server's shutdown.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

/// A flag that tasks can wait for.
#[derive(Default)]
pub struct Event {
    set: Cell<bool>,
    /// One place per waiting [`Wait`]: a wait polled again replaces its waker in its place
    /// instead of adding another, so 10,000 connections raced against the shutdown again
    /// and again keep 10,000 entries, not one per message.
    waiters: RefCell<Vec<Option<Waker>>>,
    free: RefCell<Vec<usize>>,
}

impl Event {
    pub fn new() -> Event {
        Event::default()
    }

    pub fn is_set(&self) -> bool {
        self.set.get()
    }

    /// Sets the flag and wakes every waiting task.
    pub fn set(&self) {
        self.set.set(true);
        let waiters = std::mem::take(&mut *self.waiters.borrow_mut());
        for waker in waiters.into_iter().flatten() {
            waker.wake();
        }
    }

    /// Waits until the flag is set.
    pub fn wait(&self) -> Wait<'_> {
        Wait {
            event: self,
            place: None,
        }
    }
}

/// The future of [`Event::wait`].
pub struct Wait<'a> {
    event: &'a Event,
    place: Option<usize>,
}

impl Future for Wait<'_> {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.event.is_set() {
            return Poll::Ready(());
        }
        let mut waiters = self.event.waiters.borrow_mut();
        let place = match self.place {
            Some(place) if place < waiters.len() => place,
            _ => match self.event.free.borrow_mut().pop() {
                Some(place) => place,
                None => {
                    waiters.push(None);
                    waiters.len() - 1
                }
            },
        };
        // Polled again by the same task (each time it loses a race): keep the waker it has.
        match &mut waiters[place] {
            Some(waker) if waker.will_wake(cx.waker()) => {}
            waiting => *waiting = Some(cx.waker().clone()),
        }
        drop(waiters);
        self.place = Some(place);
        Poll::Pending
    }
}

impl Drop for Wait<'_> {
    fn drop(&mut self) {
        if let Some(place) = self.place {
            let mut waiters = self.event.waiters.borrow_mut();
            if let Some(waker) = waiters.get_mut(place) {
                *waker = None;
                self.event.free.borrow_mut().push(place);
            }
        }
    }
}
