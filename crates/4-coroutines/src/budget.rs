//! The cooperative budget: how much work a task may do in one turn.
//!
//! A coroutine runs until it yields, and the I/O sub-coroutines yield only when the kernel
//! says `WouldBlock`. A client that never stops sending never makes its socket say that, so
//! without a limit its task would run on and on while every other task waited: a quiet
//! client's `ping` behind a flood, the writer's pipe lines behind a flood on stdin. Nothing
//! can interrupt a coroutine from outside; it has to give the turn back itself.
//!
//! So every task starts its turn with a budget of [`PER_TURN`] operations. Each `accept`,
//! `recv`, `read` and each write of `send_all` that gets something done spends one. Once the
//! budget is spent, the next operation does not even try: it yields
//! [`Syscall::BudgetSpent`](crate::scheduler::Syscall::BudgetSpent), and the scheduler
//! serves everyone else — after a look at epoll — before that task's next turn. Waiting
//! (parking on an fd or a timer) ends a turn too, and the next turn starts with a full
//! budget. tokio does exactly this, with 128 operations per task and turn. Ours are bigger
//! — a `recv` takes up to 64 KiB, where a tokio echo server typically reads 4 or 16 KiB — so
//! we give 32: a flooding client then echoes about a megabyte per turn, as on tokio, and a
//! quiet client waits for about that much, a millisecond or less (128 made it a few).
//!
//! The budget lives in a thread-local, as tokio's does: the sub-coroutines that spend it sit
//! deep inside a task's `yield from`s, and a coroutine cannot borrow the scheduler that
//! resumes it. Only the scheduler sets it, before each resume.

use std::cell::Cell;

/// Operations a task may do in one turn before the others are served.
pub const PER_TURN: u32 = 32;

thread_local! {
    /// What the running task has left of its budget.
    static LEFT: Cell<u32> = const { Cell::new(PER_TURN) };
}

/// The scheduler, before it resumes a task: it has `left` operations left in this turn.
pub fn set(left: u32) {
    LEFT.set(left);
}

/// The scheduler, after the task yielded: what it left unspent.
pub fn left() -> u32 {
    LEFT.get()
}

/// Whether the running task may do one more operation in this turn.
pub fn has_left() -> bool {
    LEFT.get() > 0
}

/// An operation got something done: it costs one.
pub fn spend() {
    LEFT.set(LEFT.get().saturating_sub(1));
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A budget of two allows two operations, then none, until the scheduler refills it.
    #[test]
    fn spends_down_to_zero_and_is_refilled() {
        set(2);
        assert!(has_left());
        spend();
        spend();
        assert!(!has_left());
        spend();
        assert_eq!(left(), 0, "never below zero");
        set(PER_TURN);
        assert!(has_left());
    }
}
