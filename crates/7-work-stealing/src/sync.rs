//! The atomics, `Arc`, `Mutex` and `UnsafeCell` the lock-free parts use: std's in a normal
//! build, loom's under `--cfg loom`, so the model checks run the very code the runtime runs.
//!
//! loom replaces every atomic with one that records its accesses and explores, one run at a
//! time, every order in which the threads could make them. Its `UnsafeCell` cannot hand out
//! a reference: it lends a raw pointer to a closure, so it can check that no two threads
//! touch the cell at once. std's cell gets the same two methods here.

#[cfg(loom)]
pub(crate) use loom::cell::UnsafeCell;
#[cfg(loom)]
pub(crate) use loom::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};

#[cfg(not(loom))]
pub(crate) use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};

/// `std::cell::UnsafeCell` with loom's API: access through a closure.
#[cfg(not(loom))]
#[derive(Debug)]
pub(crate) struct UnsafeCell<T>(std::cell::UnsafeCell<T>);

#[cfg(not(loom))]
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
