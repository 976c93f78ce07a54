//! The cooperative budget: how a task that always has work is made to let the others run.
//!
//! A task runs until it returns `Pending`. A connection whose client never stops sending
//! would never return it: each read finds bytes, each write finds room, and the loop never
//! gets back to the other tasks, nor to epoll. So each poll of a task starts with a budget of
//! [`BUDGET`] I/O operations; an operation that finds the budget spent does not run: it
//! schedules its task again — at the back of the ready queue — and returns `Pending`, as if
//! it had to wait. The task's code does not change: fairness lives in the runtime. (tokio
//! does the same; asyncio instead runs every ready callback once per turn of its loop.)
//!
//! Why 32 and not tokio's 128: a `read_chunk` moves up to 64 KiB, where tokio's echo reads a
//! few KiB at a time. 32 operations (16 reads and 16 writes) keep a flooding connection's
//! turn to about a megabyte — a millisecond on loopback — which is what the others wait.

use std::cell::Cell;
use std::task::Context;

use fdio::Trace;

/// How many I/O operations one poll of a task may make.
pub const BUDGET: u32 = 32;

/// What is left of the budget of the task being polled.
pub(crate) struct Budget {
    left: Cell<u32>,
    trace: Trace,
}

impl Budget {
    pub(crate) fn new(trace: Trace) -> Budget {
        Budget {
            left: Cell::new(BUDGET),
            trace,
        }
    }

    /// A task is about to be polled: it gets a full budget.
    pub(crate) fn reset(&self) {
        self.left.set(BUDGET);
    }

    /// Takes one operation from the budget. `false` if it was spent: then the task has been
    /// scheduled again and the caller returns `Pending`.
    pub(crate) fn spend(&self, cx: &Context<'_>) -> bool {
        match self.left.get() {
            0 => {
                self.trace
                    .say(|| format!("budget: {BUDGET} operations done → let the others run"));
                cx.waker().wake_by_ref();
                false
            }
            left => {
                self.left.set(left - 1);
                true
            }
        }
    }

    /// The operation taken by [`spend`](Self::spend) did not run after all (nothing was ready).
    pub(crate) fn refund(&self) {
        self.left.set(self.left.get() + 1);
    }
}
