//! The injector: the runtime's one global queue.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};

use crate::task::TaskRef;

/// The global queue: tasks spawned or woken outside the workers, and the overflow of full
/// local queues. A mutex around a `VecDeque`: it is used far less often than the local
/// queues (a worker takes a batch at a time), so a lock-free queue here would buy little and
/// cost a page of subtle code (tokio's injector is a mutex-protected linked list too).
#[derive(Default)]
pub(crate) struct Injector {
    tasks: Mutex<VecDeque<TaskRef>>,
    /// `tasks.len()`, readable without the lock.
    len: AtomicUsize,
}

impl Injector {
    fn lock(&self) -> MutexGuard<'_, VecDeque<TaskRef>> {
        self.tasks.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn push(&self, task: TaskRef) {
        let mut tasks = self.lock();
        tasks.push_back(task);
        self.len.store(tasks.len(), Ordering::SeqCst);
    }

    pub(crate) fn push_batch(&self, batch: Vec<TaskRef>) {
        let mut tasks = self.lock();
        tasks.extend(batch);
        self.len.store(tasks.len(), Ordering::SeqCst);
    }

    /// Takes up to `max` tasks from the front.
    pub(crate) fn pop_batch(&self, max: usize) -> VecDeque<TaskRef> {
        if self.is_empty() {
            return VecDeque::new();
        }
        let mut tasks = self.lock();
        let count = max.min(tasks.len());
        let taken = tasks.drain(..count).collect();
        self.len.store(tasks.len(), Ordering::SeqCst);
        taken
    }

    pub(crate) fn len(&self) -> usize {
        self.len.load(Ordering::SeqCst)
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Everything queued (at shutdown).
    pub(crate) fn take_all(&self) -> VecDeque<TaskRef> {
        let taken = std::mem::take(&mut *self.lock());
        self.len.store(0, Ordering::SeqCst);
        taken
    }
}
