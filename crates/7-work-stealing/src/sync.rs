//! The atomics, locks and `UnsafeCell` of the parts that threads race on — the local queue,
//! the task state, parking, the readiness word, the join slot: std's in a normal build,
//! loom's in the tests built with `--cfg loom`, so the model checks run the very code the
//! runtime runs. (The checks' own threads and `Arc`s come from loom directly.)
//!
//! loom replaces every atomic, mutex and condvar with one that records its accesses and
//! explores, one run at a time, the orders in which the threads could make them — and every
//! value a weak memory order lets a load return. Its `UnsafeCell` hands out no reference: it
//! lends a raw pointer to a closure, so it can check that no two threads touch the cell at
//! once. std's cell gets the same two methods here.

#[cfg(all(loom, test))]
pub(crate) use loom::cell::UnsafeCell;
#[cfg(all(loom, test))]
pub(crate) use loom::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering, fence};
#[cfg(all(loom, test))]
pub(crate) use loom::sync::{Condvar, Mutex, MutexGuard};

#[cfg(not(all(loom, test)))]
pub(crate) use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering, fence};
#[cfg(not(all(loom, test)))]
pub(crate) use std::sync::{Condvar, Mutex, MutexGuard};

/// `std::cell::UnsafeCell` with loom's API: access through a closure.
#[cfg(not(all(loom, test)))]
#[derive(Debug)]
pub(crate) struct UnsafeCell<T>(std::cell::UnsafeCell<T>);

#[cfg(not(all(loom, test)))]
impl<T> UnsafeCell<T> {
    pub(crate) const fn new(value: T) -> UnsafeCell<T> {
        UnsafeCell(std::cell::UnsafeCell::new(value))
    }

    pub(crate) fn with<R>(&self, f: impl FnOnce(*const T) -> R) -> R {
        f(self.0.get())
    }

    pub(crate) fn with_mut<R>(&self, f: impl FnOnce(*mut T) -> R) -> R {
        f(self.0.get())
    }
}
