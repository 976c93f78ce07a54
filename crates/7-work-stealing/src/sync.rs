//! The atomics, locks and `UnsafeCell` of the parts whose races loom checks — the local
//! queue, the task state, parking, the readiness word, the join slot: std's in a normal
//! build, loom's in the tests built with `--cfg loom`, so those models run the very code the
//! runtime runs. (The models' own threads and `Arc`s come from loom directly. What takes
//! std's types itself — the injector, the shutdown flags, the reactor's tables — is not
//! modelled: see the crate's doc.)
//!
//! loom replaces every atomic, mutex and condvar with one that records its accesses and
//! runs the model again and again, each time with another order of the threads' accesses,
//! and, where a load may return one of several earlier stores, another of those — a large
//! set of executions, not every one the memory model allows (the crate's doc says what it
//! leaves out). Its `UnsafeCell` hands out no reference: it lends a raw pointer to a
//! closure, so it can check that no two threads touch the cell at once. std's cell gets the
//! same two methods here.

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
