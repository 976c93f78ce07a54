//! The doorbell: how another thread wakes a loop that sleeps in `io_uring_enter`.
//!
//! The loop sleeps until a *completion* comes, and a waker fired by another thread (a
//! thread that finished some work, a timer library, a channel) makes none: it only puts a
//! task in the ready queue, which nobody looks at until something else ends the sleep — maybe
//! never. So the ring always has one more request in flight: a read of an `eventfd(2)`, a
//! counter in the kernel that becomes readable when someone adds to it. A wake from another
//! thread adds 1 ([`Doorbell::ring`]); the read completes; the loop wakes up, finds the task
//! in the ready queue, and submits the read again. Lesson 5 does the same with a
//! `mio::Waker` (an eventfd in epoll). When to ring is the ready queue's business
//! ([`executor`](crate::executor)): only when the loop may be asleep, so that the wakes a
//! running loop gives itself cost no system call.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

/// An eventfd whose read the ring keeps in flight.
pub struct Doorbell {
    fd: OwnedFd,
}

impl Doorbell {
    /// A new eventfd (blocking: the ring waits for a blocking fd, while a read of a
    /// non-blocking one would complete at once with `EAGAIN`).
    pub fn new() -> io::Result<Doorbell> {
        // Safety: eventfd takes no pointer.
        let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // Safety: a non-negative result of eventfd is a new fd, ours alone.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(Doorbell { fd })
    }

    /// The fd the ring reads.
    pub fn fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// Adds 1 to the counter: the read in flight completes, and the loop wakes up. From any
    /// thread. It cannot block (the counter would have to reach 2⁶⁴ − 1 first), and a
    /// failure leaves nothing to do: the loop then wakes at its next completion.
    pub fn ring(&self) {
        let one: u64 = 1;
        // Safety: writes 8 bytes from a live local to our own open fd.
        let _ = unsafe { libc::write(self.fd.as_raw_fd(), (&raw const one).cast(), 8) };
    }
}
