//! The cooperative budget, as in lesson 5: each poll of a task may make [`BUDGET`] I/O
//! operations; the next one schedules the task again and returns `Pending`.
//!
//! With many workers a task that never returns `Pending` no longer freezes the whole
//! program — the other workers steal what is queued behind it — but it still holds its own
//! worker, and the tasks in that worker's queue wait until a thief comes. The budget keeps
//! every turn short, so a flooding connection cannot hold a worker for long. The budget lives
//! in a thread-local: it belongs to whatever task this thread is polling now.

use std::cell::Cell;
use std::task::Context;

/// How many I/O operations one poll of a task may make (lesson 5's number, same reasons).
pub const BUDGET: u32 = 32;

thread_local! {
    static LEFT: Cell<u32> = const { Cell::new(BUDGET) };
}

/// A task is about to be polled on this thread: it gets a full budget.
pub(crate) fn reset() {
    LEFT.with(|left| left.set(BUDGET));
}

/// Takes one operation from the budget. `false` if it was spent: then the task has been
/// woken (it goes to the back of its worker's queue) and the caller returns `Pending`.
pub(crate) fn spend(cx: &Context<'_>) -> bool {
    LEFT.with(|left| match left.get() {
        0 => {
            cx.waker().wake_by_ref();
            false
        }
        n => {
            left.set(n - 1);
            true
        }
    })
}

/// The operation taken by [`spend`] did not run after all (nothing was ready).
pub(crate) fn refund() {
    LEFT.with(|left| left.set(left.get() + 1));
}
