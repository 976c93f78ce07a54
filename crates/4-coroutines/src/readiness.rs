//! The scheduler's readiness table: what epoll said about each fd, per direction, kept
//! until the kernel says otherwise.
//!
//! mio registers fds **edge-triggered**: epoll reports a *change* to "readable" once, then
//! says nothing until the next change. A task may be busy elsewhere when the edge comes —
//! echoing, or waiting for its next turn — with nobody parked on that fd to wake. So the
//! scheduler writes down every event, and the sub-coroutines read it before they try:
//!
//! - a direction is **set** by every event epoll reports for it, whether or not a task waits
//!   (and an fd the table knows nothing about counts as set: try the call);
//! - it is **cleared** by a sub-coroutine whose call said `WouldBlock` — or whose call
//!   brought its own proof: a TCP read after which the kernel said it holds nothing more,
//!   or a write that took only part of its bytes (on Linux a TCP socket takes less than it
//!   was offered only when its send buffer is full);
//! - a sub-coroutine whose direction is clear parks at once, without asking the kernel.
//!
//! A short read alone proves nothing: a TCP read stops at an urgent byte's mark once it has
//! copied anything (`tcp_recvmsg`), with ordinary bytes already queued behind it, and those
//! bring no new edge. So `recv` reads with `recvmsg` on a socket that asked the kernel to
//! say, with each read, how many bytes it still holds (`TCP_INQ`, tcp(7)): the urgent byte
//! and the bytes behind it count, and so does the EOF (as one). Only `0` marks the read
//! direction drained — which saves, in a ping-pong, the `recv` that would say `WouldBlock`
//! after each message (tokio saves it by taking a short read for "empty", which the urgent
//! byte shows wrong).
//!
//! Without the table, a task would have to try its call before every park, and an edge that
//! came while it was busy elsewhere would be lost. Lesson 5's reactor keeps the same bits.
//!
//! The peer closing its side needs nothing more: its event sets the read direction, and a
//! read after the EOF never says `WouldBlock` — it returns the EOF again.
//!
//! Events are written down only between two turns, on the scheduler's own thread, so a clear
//! made right after a system call can never erase a newer event (tokio's reactor runs on
//! another thread, and keeps a tick beside each bit for that). Like the [`budget`], the
//! table lives in a thread-local: the sub-coroutines that read it sit deep inside a task's
//! `yield from`s, and a coroutine cannot borrow the scheduler that resumes it. Only the
//! scheduler sets bits and forgets fds; the sub-coroutines only ask and clear.
//!
//! [`budget`]: crate::budget

use std::cell::RefCell;
use std::os::fd::RawFd;

use mio::Interest;

/// What is known about one fd. An fd past the end of the table is worth trying both ways.
#[derive(Debug, Clone, Copy)]
struct Ready {
    read: bool,
    write: bool,
}

const UNKNOWN: Ready = Ready {
    read: true,
    write: true,
};

thread_local! {
    /// What is known about each fd, at its number: fds are small integers (the kernel gives
    /// out the lowest free one), so the table is a list, not a map.
    static TABLE: RefCell<Vec<Ready>> = const { RefCell::new(Vec::new()) };
}

/// Whether a call on `fd` that way is worth trying: no `WouldBlock` (or read that emptied
/// the socket, or short write) since the last event. `interest` is `Interest::READABLE` or `WRITABLE`.
pub fn may_try(fd: RawFd, interest: Interest) -> bool {
    TABLE.with_borrow(|table| {
        let ready = usize::try_from(fd)
            .ok()
            .and_then(|at| table.get(at))
            .copied()
            .unwrap_or(UNKNOWN);
        if interest.is_readable() {
            ready.read
        } else {
            ready.write
        }
    })
}

/// A sub-coroutine's call on `fd` said `WouldBlock` (or the kernel said after a read that it
/// holds nothing more, or a write came back short): nothing more that way until the next
/// event.
pub fn drained(fd: RawFd, interest: Interest) {
    update(fd, |ready| {
        if interest.is_readable() {
            ready.read = false;
        } else {
            ready.write = false;
        }
    });
}

/// The scheduler, for each event epoll reports: `fd` is worth trying for reading, for
/// writing, as the event says.
pub(crate) fn record(fd: RawFd, readable: bool, writable: bool) {
    update(fd, |ready| {
        ready.read |= readable;
        ready.write |= writable;
    });
}

/// The scheduler, when the task of `fd` finished (the fd is closed, or no longer watched):
/// whatever was known about it is forgotten, so an fd opened later under the same number
/// starts unknown.
pub(crate) fn forget(fd: RawFd) {
    update(fd, |ready| *ready = UNKNOWN);
}

/// Changes what is known about `fd` (the table grows to hold it).
fn update(fd: RawFd, change: impl FnOnce(&mut Ready)) {
    let Ok(at) = usize::try_from(fd) else { return };
    TABLE.with_borrow_mut(|table| {
        if table.len() <= at {
            table.resize(at + 1, UNKNOWN);
        }
        change(&mut table[at]);
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An fd starts worth trying both ways; a drained direction is not, until forgotten.
    /// The other direction is not touched.
    #[test]
    fn a_drained_direction_waits_and_the_other_does_not() {
        let fd = 100_001; // no real fd: the table only keeps numbers
        assert!(may_try(fd, Interest::READABLE) && may_try(fd, Interest::WRITABLE));
        drained(fd, Interest::READABLE);
        assert!(!may_try(fd, Interest::READABLE));
        assert!(may_try(fd, Interest::WRITABLE));
        forget(fd);
        assert!(may_try(fd, Interest::READABLE));
    }

    /// An event sets what it reports, and only that: writing waits for its own event.
    #[test]
    fn an_event_sets_only_the_directions_it_reports() {
        let fd = 100_002;
        drained(fd, Interest::READABLE);
        drained(fd, Interest::WRITABLE);
        record(fd, true, false);
        assert!(may_try(fd, Interest::READABLE));
        assert!(!may_try(fd, Interest::WRITABLE));
        forget(fd);
    }
}
