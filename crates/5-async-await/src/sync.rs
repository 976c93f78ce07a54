//! Async locks: `Semaphore`, `Mutex`, and a one-shot `Event`, for tasks of one runtime.
//!
//! `async with lock:` in Python waits without blocking the thread: the task is parked in the
//! lock's queue and woken when it is its turn. Here the queue is FIFO and a released permit
//! is *handed* to the first waiter (it cannot be taken by a task that arrives later), so no
//! waiter starves and no wake-up is lost.

use std::cell::{Cell, RefCell, RefMut};
use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::ops::{Deref, DerefMut};
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

/// One task waiting in a semaphore's queue.
struct Waiter {
    granted: Cell<bool>,
    waker: RefCell<Option<Waker>>,
}

struct SemaphoreState {
    permits: usize,
    queue: VecDeque<Rc<Waiter>>,
}

/// A counter of permits: `acquire().await` takes one (waiting if none is left), dropping
/// the permit gives it back. `asyncio.Semaphore`.
pub struct Semaphore {
    state: RefCell<SemaphoreState>,
}

/// A permit of a [`Semaphore`]; returned to it on drop.
pub struct Permit<'a> {
    semaphore: &'a Semaphore,
}

impl Semaphore {
    pub fn new(permits: usize) -> Semaphore {
        Semaphore {
            state: RefCell::new(SemaphoreState {
                permits,
                queue: VecDeque::new(),
            }),
        }
    }

    /// Permits free right now.
    pub fn available(&self) -> usize {
        self.state.borrow().permits
    }

    /// Waits for a permit, in FIFO order.
    pub fn acquire(&self) -> Acquire<'_> {
        Acquire {
            semaphore: self,
            waiter: None,
        }
    }

    /// Gives one permit back: straight to the first waiter if there is one.
    fn release(&self) {
        let mut state = self.state.borrow_mut();
        match state.queue.pop_front() {
            Some(waiter) => {
                drop(state);
                waiter.granted.set(true);
                if let Some(waker) = waiter.waker.borrow_mut().take() {
                    waker.wake();
                }
            }
            None => state.permits += 1,
        }
    }
}

/// The future of [`Semaphore::acquire`].
pub struct Acquire<'a> {
    semaphore: &'a Semaphore,
    waiter: Option<Rc<Waiter>>,
}

impl<'a> Future for Acquire<'a> {
    type Output = Permit<'a>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Permit<'a>> {
        let semaphore = self.semaphore;
        match &self.waiter {
            Some(waiter) if waiter.granted.get() => {
                self.waiter = None; // the permit is ours now: nothing to hand back on drop
                return Poll::Ready(Permit { semaphore });
            }
            Some(waiter) => {
                *waiter.waker.borrow_mut() = Some(cx.waker().clone());
                return Poll::Pending;
            }
            None => {}
        }
        let mut state = semaphore.state.borrow_mut();
        // Take a free permit only if nobody queued before us: first come, first served.
        if state.permits > 0 && state.queue.is_empty() {
            state.permits -= 1;
            return Poll::Ready(Permit { semaphore });
        }
        let waiter = Rc::new(Waiter {
            granted: Cell::new(false),
            waker: RefCell::new(Some(cx.waker().clone())),
        });
        state.queue.push_back(Rc::clone(&waiter));
        drop(state);
        self.waiter = Some(waiter);
        Poll::Pending
    }
}

impl Drop for Acquire<'_> {
    fn drop(&mut self) {
        let Some(waiter) = self.waiter.take() else {
            return;
        };
        if waiter.granted.get() {
            // Granted but cancelled before it saw the permit: pass it on, or it is lost.
            self.semaphore.release();
        } else {
            self.semaphore
                .state
                .borrow_mut()
                .queue
                .retain(|queued| !Rc::ptr_eq(queued, &waiter));
        }
    }
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        self.semaphore.release();
    }
}

/// A value only one task at a time may use: `lock().await` gives a guard, and the lock is
/// released when the guard is dropped — `async with lock:`. A semaphore of one permit
/// guarantees the exclusion; the `RefCell` inside only lends the value out.
pub struct Mutex<T> {
    semaphore: Semaphore,
    value: RefCell<T>,
}

/// Access to a [`Mutex`]'s value; the lock is released on drop.
pub struct MutexGuard<'a, T> {
    // Field order matters: the borrow ends before the permit is returned.
    value: RefMut<'a, T>,
    _permit: Permit<'a>,
}

impl<T> Mutex<T> {
    pub fn new(value: T) -> Mutex<T> {
        Mutex {
            semaphore: Semaphore::new(1),
            value: RefCell::new(value),
        }
    }

    /// Waits for the lock, in FIFO order.
    pub async fn lock(&self) -> MutexGuard<'_, T> {
        let permit = self.semaphore.acquire().await;
        MutexGuard {
            value: self.value.borrow_mut(),
            _permit: permit,
        }
    }
}

impl<T> Deref for MutexGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.value
    }
}

impl<T> DerefMut for MutexGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        &mut self.value
    }
}

/// A flag set once that any number of tasks can wait for: `asyncio.Event`.
///
/// Each waiting future has a numbered place in the waiters map and takes it out when it is
/// dropped, so waiting costs the same with 10 waiters or 10,000 — and a wait that loses a
/// `race` leaves nothing behind.
#[derive(Default)]
pub struct Event {
    set: Cell<bool>,
    waiters: RefCell<HashMap<u64, Waker>>,
    next_waiter: Cell<u64>,
}

impl Event {
    pub fn new() -> Event {
        Event::default()
    }

    /// Sets the flag and wakes every waiter.
    pub fn set(&self) {
        self.set.set(true);
        let waiters = std::mem::take(&mut *self.waiters.borrow_mut());
        for waker in waiters.into_values() {
            waker.wake();
        }
    }

    pub fn is_set(&self) -> bool {
        self.set.get()
    }

    /// How many wakers wait on the flag now.
    #[cfg(test)]
    pub(crate) fn waiting(&self) -> usize {
        self.waiters.borrow().len()
    }

    /// Waits until the flag is set.
    pub fn wait(&self) -> EventWait<'_> {
        EventWait {
            event: self,
            place: None,
        }
    }
}

/// The future of [`Event::wait`].
pub struct EventWait<'a> {
    event: &'a Event,
    place: Option<u64>,
}

impl Future for EventWait<'_> {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.event.set.get() {
            return Poll::Ready(());
        }
        let place = match self.place {
            Some(place) => place,
            None => {
                let place = self.event.next_waiter.get();
                self.event.next_waiter.set(place + 1);
                self.place = Some(place);
                place
            }
        };
        let mut waiters = self.event.waiters.borrow_mut();
        match waiters.get_mut(&place) {
            Some(waker) if waker.will_wake(cx.waker()) => {}
            _ => {
                waiters.insert(place, cx.waker().clone());
            }
        }
        Poll::Pending
    }
}

impl Drop for EventWait<'_> {
    fn drop(&mut self) {
        if let Some(place) = self.place {
            self.event.waiters.borrow_mut().remove(&place);
        }
    }
}
