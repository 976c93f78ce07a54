//! Timers as requests: `IORING_OP_TIMEOUT` completes after a while, like any other request.
//!
//! Lesson 5 kept its own heap of deadlines and gave the nearest one to `epoll_wait` as its
//! timeout. Here a sleep is just one more request in the ring: it completes (with
//! `-ETIME`, "the time is up") when its time has passed, and wakes its task like a receive
//! does. The loop itself never computes a timeout.

use std::future::Future;
use std::time::Duration;

use io_uring::{opcode, types::Timespec};

use crate::executor::{Either, race};
use crate::op::Op;

/// Waits for `duration`: `await asyncio.sleep(seconds)`.
pub async fn sleep(duration: Duration) {
    // The kernel reads the timespec when it takes the request from the ring, after this
    // function has returned `Pending`: it lives in a `Box` that the request owns.
    let timespec = Box::new(
        Timespec::new()
            .sec(duration.as_secs())
            .nsec(duration.subsec_nanos()),
    );
    // Safety: the entry points into the `Box`'s heap memory, which moving the `Box` does not
    // move; the `Op` (or its slot, if dropped) owns the `Box` until the last completion.
    let op = unsafe {
        Op::submit("timeout", timespec, |timespec| {
            opcode::Timeout::new(&raw const **timespec).build()
        })
    };
    // The result is `-ETIME` when the time is up; the sleep is over either way.
    let _ = op.await;
}

/// `future`'s output, or `Err(Elapsed)` if it takes longer than `duration` (then it is
/// dropped, cancelling it): `asyncio.wait_for`.
pub async fn timeout<F: Future>(duration: Duration, future: F) -> Result<F::Output, Elapsed> {
    match race(future, sleep(duration)).await {
        Either::Left(output) => Ok(output),
        Either::Right(()) => Err(Elapsed),
    }
}

/// A [`timeout`] ran out.
#[derive(Debug)]
pub struct Elapsed;
