//! `Notify`: a green thread parks until another says that something changed.
//!
//! With OS threads this needs a mutex beside the condition variable: between checking the
//! condition and going to sleep, another thread could change it and notify, and the wake-up
//! would be lost. Here nothing runs between a green thread's check and its park — the other
//! green threads run only once it has switched away — so a list of parked green threads is
//! all it takes.

use std::cell::RefCell;
use std::rc::Rc;
use std::time::Instant;

use crate::runtime::{Green, park_until, unpark, with_runtime};

/// Green threads parked until [`notify_all`](Notify::notify_all).
#[derive(Default)]
pub struct Notify {
    waiters: RefCell<Vec<Rc<Green>>>,
}

impl Notify {
    pub fn new() -> Notify {
        Notify::default()
    }

    /// Makes every green thread parked in `wait` runnable.
    pub fn notify_all(&self) {
        let waiters = std::mem::take(&mut *self.waiters.borrow_mut());
        for green in &waiters {
            unpark(green);
        }
    }

    /// Parks until notified. It may also return without: check again what you wait for.
    pub fn wait(&self) {
        self.wait_until(None);
    }

    /// Parks until notified or until `deadline`; whether it was notified.
    pub fn wait_until(&self, deadline: Option<Instant>) -> bool {
        let green = with_runtime(|runtime| runtime.current());
        self.waiters.borrow_mut().push(Rc::clone(&green));
        park_until(deadline);
        let mut waiters = self.waiters.borrow_mut();
        match waiters.iter().position(|waiter| Rc::ptr_eq(waiter, &green)) {
            Some(index) => {
                waiters.swap_remove(index); // not notified: stop waiting
                false
            }
            None => true,
        }
    }
}
