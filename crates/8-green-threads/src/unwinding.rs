//! A green thread that parks while a panic unwinds its stack: it blocks the OS thread.
//!
//! std keeps its panic state per OS thread: how many panics are unwinding on it. Every green
//! thread of a runtime runs on one OS thread, so while one green thread's panic unwinds,
//! `std::thread::panicking()` is true in all of them. Usually no one notices: an unwinding
//! green thread runs destructors, and no other runs meanwhile. But a destructor may park — a
//! `BufWriter` flushing into a socket, a `sleep` — and if the scheduler then ran another green
//! thread, that one would live inside a panic that is not its own: a `std::sync::MutexGuard`
//! it drops would poison its mutex, and a panic of its own would count as a second panic on
//! the thread. std's count is private, so it cannot be put aside at a switch and put back.
//!
//! Hence the rule: **while a green thread unwinds, no other runs.** A green thread that parks
//! while `thread::panicking()` does not switch away: it waits right here, on the OS thread,
//! for what it parked on — its fd, in `epoll_wait`, or its timer — as a blocking call would,
//! then goes on unwinding. Whatever wakes the others meanwhile waits in the run queue. A wait
//! for another green thread (`join`, a `Notify` without a deadline) could never end, since
//! none may run: that aborts the process with one line that says so, rather than hang.
//! So a destructor that waits for a slow client holds every green thread until it is done:
//! give it a deadline, or keep such work out of destructors.

use std::time::Instant;

use crate::runtime::with_runtime;

/// [`park`](crate::runtime::park) for a green thread whose panic is unwinding: waits for
/// epoll and the timers on the OS thread until this green thread is unparked, and returns
/// without ever switching.
pub(crate) fn block_until_unparked() {
    with_runtime(|runtime| {
        let green = runtime.current();
        if !green.queued.get() && !runtime.waits_for_io_or_time(&green) {
            fdio::log!(
                "{green} waits for another green thread while a panic unwinds it, and no other \
                 may run until it is done (std's panic state is per OS thread): aborting"
            );
            std::process::abort();
        }
        runtime
            .trace
            .say(|| format!("{green}: parks while a panic unwinds it → blocks the OS thread"));
        let mut woken = Vec::new();
        while !green.queued.get() {
            let timeout = runtime
                .nearest_timer()
                .map(|at| at.saturating_duration_since(Instant::now()));
            if let Err(err) = runtime.wait_for_events(timeout, &mut woken) {
                fdio::log!("{green}: epoll_wait failed while a panic unwinds it: {err}: aborting");
                std::process::abort();
            }
        }
        runtime.dequeue(&green);
    });
}
