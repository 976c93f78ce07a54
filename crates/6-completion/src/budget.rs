//! The cooperative budget: how a task that always has work is made to let the others run.
//!
//! As in lesson 5: a task runs until it returns `Pending`, and a connection whose results
//! are always there — a multishot receive keeps filing buffers while the task sends — would
//! never return it. So each poll of a task starts with a budget of [`BUDGET`] operations
//! taken from the ring; a result found with the budget spent is left where it is: the task
//! is scheduled again, at the back of the ready queue, and returns `Pending`. The task's
//! code does not change: fairness lives in the runtime.
//!
//! With completions a send always waits for its completion, hence for the next turn of the
//! loop, so an echo task rarely spends the budget: it guards the receive queue, which can
//! hold many buffers at once.

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
