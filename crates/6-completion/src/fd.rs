//! An fd that requests name by its number — and that is therefore closed through the ring.
//!
//! An entry names its file by fd *number*, and the kernel looks the number up not when we
//! push the entry but when it issues the request: during the `io_uring_enter` that submits
//! it (`io_submit_sqes` → `io_issue_sqe` → `io_assign_file`, which calls `fget`), or later
//! still for a request it hands to a worker thread (io-wq), which looks the number up when
//! it runs. Until then the number is just a number. Close it with `close(2)` in between —
//! a stream dropped in the same turn as its receive was pushed, or while its shutdown waits
//! for a worker — and the number is free; the next socket or file opened gets the lowest
//! free number, maybe this one, and with it the requests still waiting: a receive that
//! takes the new socket's bytes, a send that writes ours to its peer.
//!
//! ```text
//!   push "recv fd 7"   drop the stream   accept → fd 7   io_uring_enter
//!   ───────────────────── close(7) ────── (a new client) ── recv fd 7: the new client's!
//! ```
//!
//! So a [`RingFd`] closes itself through the ring: `IORING_OP_CLOSE` goes into the
//! submission ring after every entry that names the number, and the kernel takes entries in
//! order. The number stays ours until the close runs; by then every earlier request holds
//! the file itself (a reference the close does not take away: a receive in flight keeps the
//! socket open until it completes, which is why a stream cancels its receive first). A
//! shutdown is no request at all here ([`TcpStream::shutdown_write`]): the kernel runs
//! `IORING_OP_SHUTDOWN` on a worker, which would look the number up at a moment nobody
//! controls; `shutdown(2)` never blocks, so the stream simply calls it.
//!
//! tokio-uring's `SharedFd` does the same: its last owner closes it with `IORING_OP_CLOSE`.
//!
//! [`TcpStream::shutdown_write`]: crate::net::TcpStream::shutdown_write

use std::io;
use std::marker::PhantomData;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::rc::Rc;

use crate::executor::{RuntimeId, runtime_id, with_driver_of, with_runtime_of};

/// An fd whose requests go through one runtime's ring, closed through that ring when
/// dropped. Like every handle here it stays on its thread (its ring is a thread-local):
///
/// ```compile_fail,E0277
/// fn on_another_thread<T: Send>(_: T) {}
/// fn give_away(fd: lesson_completion::fd::RingFd) {
///     on_another_thread(fd); // error: `Rc<()>` cannot be sent between threads safely
/// }
/// ```
pub struct RingFd {
    /// `None` only while being dropped.
    fd: Option<OwnedFd>,
    runtime: RuntimeId,
    on_this_thread: PhantomData<Rc<()>>,
}

impl RingFd {
    /// Takes over `fd`, for requests in the current runtime's ring.
    ///
    /// # Panics
    /// Outside `block_on`.
    pub fn new(fd: OwnedFd) -> RingFd {
        RingFd {
            fd: Some(fd),
            runtime: runtime_id(),
            on_this_thread: PhantomData,
        }
    }

    /// The fd's number, for an entry of the current runtime's ring — which must be its own:
    /// the close goes through its own ring, after *its* entries. An entry in another ring
    /// (another `block_on` the handle was carried into) could wait there while the fd is
    /// closed and its number given to the next file: an error then, not a request.
    pub fn number_for_request(&self) -> io::Result<RawFd> {
        with_runtime_of(self.runtime, |_| self.as_raw_fd()).ok_or_else(|| {
            io::Error::other("this fd belongs to another runtime (another block_on)")
        })
    }
}

impl AsFd for RingFd {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_ref().expect("open until dropped").as_fd()
    }
}

impl AsRawFd for RingFd {
    fn as_raw_fd(&self) -> RawFd {
        self.as_fd().as_raw_fd()
    }
}

impl Drop for RingFd {
    fn drop(&mut self) {
        let Some(fd) = self.fd.take() else {
            return;
        };
        // In its runtime: after the entries already pushed. Outside it, the closure is not
        // run and `fd` is dropped with it — `close(2)` — which is sound because that runtime
        // has ended (`block_on` does not nest): its driver submitted every entry before it
        // closed its ring, and no other ring has one (`number_for_request`).
        with_driver_of(self.runtime, move |driver| driver.close(fd));
    }
}
