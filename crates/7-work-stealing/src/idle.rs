//! Who is parked and who is searching: how a worker sleeps, and how one queued task wakes
//! one worker — not all of them.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};

/// Who is parked, and how many are searching.
#[derive(Default)]
pub(crate) struct Idle {
    sleepers: Mutex<Vec<usize>>,
    /// `sleepers.len()`, readable without the lock.
    sleeping: AtomicUsize,
    pub(crate) searching: AtomicUsize,
}

impl Idle {
    fn lock(&self) -> MutexGuard<'_, Vec<usize>> {
        self.sleepers.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Work was queued: the parked worker to wake, if one must be — none if a worker is
    /// searching already (it will find the work) or none is parked (they are all busy, and
    /// each looks at the queues between two tasks). The one returned counts as searching
    /// from now on.
    pub(crate) fn worker_to_wake(&self) -> Option<usize> {
        if self.searching.load(Ordering::SeqCst) != 0 || self.sleeping.load(Ordering::SeqCst) == 0 {
            return None;
        }
        let mut sleepers = self.lock();
        if self.searching.load(Ordering::SeqCst) != 0 {
            return None;
        }
        let index = sleepers.pop()?;
        self.sleeping.fetch_sub(1, Ordering::SeqCst);
        self.searching.fetch_add(1, Ordering::SeqCst);
        Some(index)
    }

    pub(crate) fn try_start_searching(&self, workers: usize) -> bool {
        let searching = self.searching.load(Ordering::SeqCst);
        if 2 * searching >= workers.max(2) {
            return false;
        }
        self.searching.fetch_add(1, Ordering::SeqCst);
        true
    }

    /// Worker `index` is about to park: it joins the sleepers (and leaves the searchers).
    /// Unlike a searcher that found work, it wakes nobody: its own last look at the queues,
    /// in `Worker::park`, is what covers work queued while it was the last searcher.
    pub(crate) fn sleep(&self, index: usize, was_searching: bool) {
        let mut sleepers = self.lock();
        sleepers.push(index);
        self.sleeping.fetch_add(1, Ordering::SeqCst);
        if was_searching {
            self.searching.fetch_sub(1, Ordering::SeqCst);
        }
    }

    /// Worker `index` found work after all. `false` if a waker already took it out of the
    /// sleepers (then that waker's unpark is coming).
    pub(crate) fn unsleep(&self, index: usize) -> bool {
        let mut sleepers = self.lock();
        let Some(position) = sleepers.iter().position(|&i| i == index) else {
            return false;
        };
        sleepers.swap_remove(position);
        self.sleeping.fetch_sub(1, Ordering::SeqCst);
        self.searching.fetch_add(1, Ordering::SeqCst);
        true
    }
}

/// A worker's bed: a flag and a condvar. On Linux std builds both on futex(2): a parked
/// thread sleeps in the kernel (`FUTEX_WAIT`) and costs no CPU until `FUTEX_WAKE`.
#[derive(Default)]
pub(crate) struct Parker {
    notified: Mutex<bool>,
    condvar: Condvar,
}

impl Parker {
    /// Sleeps until `unpark` (returns at once if it was called since the last `park`).
    pub(crate) fn park(&self) {
        let mut notified = self.notified.lock().unwrap_or_else(PoisonError::into_inner);
        while !*notified {
            notified = self
                .condvar
                .wait(notified)
                .unwrap_or_else(PoisonError::into_inner);
        }
        *notified = false;
    }

    pub(crate) fn unpark(&self) {
        *self.notified.lock().unwrap_or_else(PoisonError::into_inner) = true;
        self.condvar.notify_one();
    }
}
