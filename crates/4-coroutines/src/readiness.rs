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
//!   brought its own proof: a read that came back short (see below), or a write that took
//!   only part of its bytes (on Linux a TCP socket takes less than it was offered only when
//!   its send buffer is full);
//! - a sub-coroutine whose direction is clear parks at once, without asking the kernel.
//!
//! **A short read.** A TCP read copies until the buffer is full or the socket has nothing
//! more (`tcp_recvmsg`), so a read that comes back short found the socket empty — that saves,
//! in a ping-pong, the `recv` that would say `WouldBlock` after each message. Except in two
//! cases, where bytes or an answer are left behind and no new edge will come for them: the
//! read stops at an **urgent byte**'s mark once it has copied anything, with ordinary bytes
//! queued behind it; and a read that takes the last bytes takes the **FIN** (or meets the
//! error of a reset) with them, so the next read returns the EOF at once. Both say so in
//! their event — epoll reports `EPOLLPRI` while an urgent byte waits (the scheduler asks for
//! it), `EPOLLRDHUP` or `EPOLLERR` once the peer closed or reset — so such an event marks
//! the fd for good: there, a short read clears nothing, and only `WouldBlock` does (or the
//! EOF ends the task). An urgent byte or a FIN that comes after the last event was written
//! down brings an event of its own, which wakes the task however its read ended. Ordinary
//! clients send no urgent byte, and a FIN only at the end: they keep the two-call echo.
//! (One gap is left, and it costs only its own connection: the kernel reports `EPOLLPRI`
//! only once it holds the urgent byte itself. A misbehaving sender can point its urgent
//! pointer at a byte that already came, out of order — the kernel then never learns the
//! byte, `TCP_URG_NOTYET` in `tcp_check_urg` — so no `EPOLLPRI` comes, yet the read still
//! stops at the mark, and the bytes behind it wait for that client's next edge: its next
//! bytes, or its FIN.)
//!
//! Without the table, a task would have to try its call before every park, and an edge that
//! came while it was busy elsewhere would be lost. Lesson 5's reactor keeps the same bits.
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
    /// Whether a read that comes back short proves the fd empty: until an event said urgent
    /// byte, closed or error.
    short_read_drains: bool,
}

const UNKNOWN: Ready = Ready {
    read: true,
    write: true,
    short_read_drains: true,
};

thread_local! {
    /// What is known about each fd, at its number: fds are small integers (the kernel gives
    /// out the lowest free one), so the table is a list, not a map.
    static TABLE: RefCell<Vec<Ready>> = const { RefCell::new(Vec::new()) };
}

/// Whether a call on `fd` that way is worth trying: no `WouldBlock` (or short read or
/// write) since the last event. `interest` is `Interest::READABLE` or `WRITABLE`.
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

/// A sub-coroutine's call on `fd` said `WouldBlock` (or a read or write came back short):
/// nothing more that way until the next event.
pub fn drained(fd: RawFd, interest: Interest) {
    update(fd, |ready| {
        if interest.is_readable() {
            ready.read = false;
        } else {
            ready.write = false;
        }
    });
}

/// Whether a read of `fd` that came back short proves it empty: no event said urgent byte,
/// closed or error since the fd was new.
pub fn short_read_drains(fd: RawFd) -> bool {
    TABLE.with_borrow(|table| {
        usize::try_from(fd)
            .ok()
            .and_then(|at| table.get(at))
            .is_none_or(|ready| ready.short_read_drains)
    })
}

/// The scheduler, for each event epoll reports: `fd` is worth trying for reading, for
/// writing, as the event says; and if the event says an urgent byte waits, or the peer
/// closed, or an error (`keep_reading`), a short read of `fd` no longer proves it empty.
pub(crate) fn record(fd: RawFd, readable: bool, writable: bool, keep_reading: bool) {
    update(fd, |ready| {
        ready.read |= readable;
        ready.write |= writable;
        ready.short_read_drains &= !keep_reading;
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
        record(fd, true, false, false);
        assert!(may_try(fd, Interest::READABLE));
        assert!(!may_try(fd, Interest::WRITABLE));
        forget(fd);
    }

    /// An event that says urgent byte, closed or error makes short reads prove nothing, for
    /// good: later events do not undo it, only forgetting the fd does.
    #[test]
    fn short_reads_prove_nothing_once_an_event_said_so() {
        let fd = 100_003;
        assert!(short_read_drains(fd));
        record(fd, true, false, true);
        record(fd, true, false, false);
        assert!(!short_read_drains(fd));
        forget(fd);
        assert!(short_read_drains(fd));
    }
}
