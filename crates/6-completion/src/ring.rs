//! The completion loop: the two rings, `user_data` as the token, one `io_uring_enter` per turn.
//!
//! ```text
//!   our program                         the kernel
//!   ───────────                         ──────────
//!   push an entry into the            ┌───────────────────────────┐
//!   submission ring (SQ): "recv  ───▶ │ SQ: recv fd 7 · send fd 9 │ ───▶ it starts the work
//!   from fd 7, token 12"              └───────────────────────────┘
//!                                     ┌───────────────────────────┐
//!   read the completion ring (CQ): ◀──│ CQ: token 12 → 300 bytes  │ ◀─── it posts a result
//!   token 12 says who asked           └───────────────────────────┘
//! ```
//!
//! Both rings are memory shared with the kernel: pushing an entry or reading a result is a
//! plain memory access. The one system call is `io_uring_enter(2)`, and one call per turn of
//! the loop does both jobs: it hands the kernel every entry pushed since the last turn, and
//! (with `min_complete` = 1) sleeps until at least one result is there. Only a turn that
//! pushes more than the submission ring holds ([`SQ_ENTRIES`]) makes more calls: each time
//! the ring is full, one that hands the kernel what is there.
//!
//! Each request carries a 64-bit `user_data` that the kernel copies into its completion
//! untouched: ours is the index of a slot that holds the results and the waker of the
//! task waiting for them — the same job as the token of lesson 2's registry. A *multishot*
//! request (accept, receive) posts many completions for one submission; the flag
//! `IORING_CQE_F_MORE` on a completion says more will follow.
//!
//! Besides the program's requests the ring always has one of its own in flight: the read of
//! the [`Doorbell`], which wakes the loop when a task is woken from another thread.

use std::any::Any;
use std::cell::RefCell;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, IntoRawFd, OwnedFd};
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Context, Poll};

use fdio::{Trace, timeline};
use io_uring::{IoUring, opcode, squeue, types::Fd};

use crate::bufring::BufRing;
use crate::doorbell::Doorbell;
use crate::executor::Buffers;
use crate::probe;
use crate::slots::{Completion, Lifecycle, Slots, Token, Yields};
use crate::trace::TurnTrace;

/// The submission ring's size. A turn that pushes more first flushes what is there.
pub const SQ_ENTRIES: u32 = 1024;

/// The completion ring's size: multishot requests post many results per submission, so it is
/// larger. (The kernel keeps results that find the ring full, since Linux 5.5; they come out
/// at the next enter.)
pub const CQ_ENTRIES: u32 = 8 * SQ_ENTRIES;

/// How many buffers the ring holds beyond one per receive in flight, topped up before each
/// enter from the buffers given back last (see [`BufRing::offer`]): enough for a stream's
/// receive to fill a turn's worth without running dry, few enough that the same buffers
/// come back while they are still in the cache. Measured on a 2-core VM, a 1 GB stream cost
/// 0.68 s of CPU per GB with 64, 0.72 s with all 1,024 buffers offered, and 0.83 s with 4
/// (the stream ran the ring dry and fell back to buffers of its own): see
/// `docs/benchmark.md`.
pub const SPARE_IN_RING: usize = 64;

/// `io_uring_enter(2)`'s flag "wait for / collect completions", from `<linux/io_uring.h>`.
const IORING_ENTER_GETEVENTS: u32 = 1;

/// The `user_data` of the requests whose completion nobody awaits (the cancels).
const IGNORED: u64 = u64::MAX;

/// The `user_data` of the doorbell's read.
const DOORBELL: u64 = u64::MAX - 1;

/// The `user_data` of the closes (`IORING_OP_CLOSE`), whose results nobody awaits.
const CLOSE: u64 = u64::MAX - 2;

/// The ring, the slots of the requests in flight, the provided buffers and the doorbell.
///
/// Dropping it submits what is still in the submission ring (the last closes), cancels every
/// request and waits (a bounded while) for the kernel to finish them; then the ring is
/// closed — `ring` is the first field, so it is dropped first — and only then are the
/// buffers the kernel was using freed. What a request that would not stop may still use is
/// leaked, never freed.
pub struct Driver {
    ring: IoUring,
    /// Fds whose close the submission ring could not take (the ring was failing): closed
    /// after the ring, whose unsubmitted entries, which may name them, die with it.
    close_after_the_ring: Vec<OwnedFd>,
    slots: Slots,
    /// The provided buffers that multishot receives fill. Shared with the buffers lent out
    /// (a [`RingBuf`](crate::bufring::RingBuf) goes back by itself when dropped), in a cell of
    /// its own: a buffer parked in an abandoned slot may be dropped while the driver is busy.
    pub(crate) buffers: Rc<RefCell<BufRing>>,
    doorbell: Arc<Doorbell>,
    /// What the doorbell's read reads into, and whether that read is in flight.
    doorbell_count: Box<u64>,
    doorbell_armed: bool,
    /// Shutting down: the doorbell's read is not submitted again.
    closing: bool,
    /// Receives from the buffer ring in flight: each may take a buffer at the next enter.
    receiving: usize,
    /// Where [`complete`](Self::complete) copies a turn's completions, kept from turn to
    /// turn so that a turn allocates nothing.
    reaped: Vec<(u64, Completion)>,
    trace: TurnTrace,
}

impl Driver {
    /// Sets up the rings, checks the requests the lessons use, registers a provided-buffer
    /// ring of `buffers`, and submits the doorbell's read (one `io_uring_enter`: so a ring
    /// that cannot be entered fails here, not in the program's first turn). An error says
    /// what failed, why, and what to do about it, in one line.
    pub fn new(trace: Trace, buffers: Buffers) -> io::Result<Driver> {
        let doorbell = Doorbell::new().map_err(|err| {
            io::Error::new(
                err.kind(),
                format!("cannot make the doorbell's eventfd: {err}"),
            )
        })?;
        let doorbell = Arc::new(doorbell);
        // SINGLE_ISSUER + DEFER_TASKRUN (Linux 6.1): only this thread submits, and the kernel
        // finishes our requests' work when we enter, not by interrupting us at any moment.
        let ring = IoUring::builder()
            .setup_cqsize(CQ_ENTRIES)
            .setup_single_issuer()
            .setup_defer_taskrun()
            .build(SQ_ENTRIES)
            .or_else(|_| {
                IoUring::builder()
                    .setup_cqsize(CQ_ENTRIES)
                    .build(SQ_ENTRIES)
            })
            .map_err(|err| probe::unavailable("io_uring_setup", &err))?;
        probe::check_opcodes(&ring.submitter())?;
        // Safety: the driver keeps the buffers until the ring is closed (see the type's doc,
        // and `Drop`), and leaks them if a request that may select one would not stop.
        let registered =
            unsafe { BufRing::register(&ring.submitter(), buffers.count, buffers.size) }
                .map_err(|err| probe::unavailable("io_uring_register (the buffer ring)", &err))?;
        let mut driver = Driver {
            ring,
            close_after_the_ring: Vec::new(),
            slots: Slots::default(),
            buffers: Rc::new(RefCell::new(registered)),
            doorbell,
            doorbell_count: Box::new(0),
            doorbell_armed: false,
            closing: false,
            receiving: 0,
            reaped: Vec::new(),
            trace: TurnTrace::new(Trace::new(false)),
        };
        driver.arm_doorbell()?;
        driver
            .syscall(0)
            .map_err(|err| probe::unavailable("io_uring_enter", &err))?;
        // `--trace` narrates the loop, from its first turn on.
        driver.trace = TurnTrace::new(trace);
        Ok(driver)
    }

    /// The doorbell that wakes this loop from another thread.
    pub(crate) fn doorbell(&self) -> Arc<Doorbell> {
        Arc::clone(&self.doorbell)
    }

    /// Pushes `entry` into the submission ring; the kernel sees it at the next enter.
    ///
    /// # Safety
    /// Every pointer in `entry` must stay valid, and be used by nobody else, until the
    /// request's last completion has been filed — the owner keeps what they point into
    /// until then, or hands it to [`abandon`](Self::abandon) — or point into memory the
    /// driver owns (the provided buffers).
    pub unsafe fn submit(&mut self, kind: &'static str, entry: squeue::Entry) -> io::Result<Token> {
        // Safety: passed on to our caller.
        unsafe { self.insert_and_push(kind, Yields::Value, false, entry, usize::MAX) }
    }

    /// Like [`submit`](Self::submit), for a multishot receive from the buffer ring, which is
    /// paused (cancelled) when `pause_at` of its results wait untaken: its owner submits it
    /// again after taking them. Until its last completion, it counts as one more receive
    /// for which [`enter`](Self::enter) keeps a buffer in the ring.
    ///
    /// # Safety
    /// As for [`submit`](Self::submit).
    pub unsafe fn submit_multishot(
        &mut self,
        kind: &'static str,
        entry: squeue::Entry,
        pause_at: usize,
    ) -> io::Result<Token> {
        // Safety: as our caller promises.
        unsafe { self.insert_and_push(kind, Yields::Value, true, entry, pause_at) }
    }

    /// Submits a multishot accept on `listener` (Linux 5.19): one completion per new
    /// connection, each result a new fd (close-on-exec) that whoever takes it owns. The
    /// driver builds this request itself: it is the only one whose results it treats as fds
    /// ([`Yields::NewFd`]), closing those that nobody takes.
    ///
    /// # Safety
    /// The entry names `listener` by its fd number, which the kernel looks up only when the
    /// next `io_uring_enter` submits it — after the borrow has ended. The number must stay
    /// the listener's until then: a [`RingFd`](crate::fd::RingFd) of this driver's runtime
    /// is closed through this ring, after the entry. (Borrowed and closed meanwhile, the
    /// number may be the next listener's by then, and its clients accepted here.)
    ///
    /// ```compile_fail,E0133
    /// # use lesson_completion::ring::Driver;
    /// # use std::os::fd::AsFd;
    /// fn accept_on(driver: &mut Driver, listener: std::net::TcpListener) {
    ///     let _ = driver.submit_accept(listener.as_fd()); // error: unsafe
    /// }
    /// ```
    pub unsafe fn submit_accept(&mut self, listener: BorrowedFd<'_>) -> io::Result<Token> {
        let entry = opcode::AcceptMulti::new(Fd(listener.as_raw_fd()))
            .flags(libc::SOCK_CLOEXEC)
            .build();
        // Safety: an accept that asks for no address points to no memory; our caller keeps
        // the number the listener's until the entry is submitted.
        unsafe { self.insert_and_push("accept", Yields::NewFd, false, entry, usize::MAX) }
    }

    /// A slot for the request, then the entry, carrying the slot's token, into the ring.
    /// `from_ring`: it receives into the buffer ring.
    ///
    /// # Safety
    /// As for [`submit`](Self::submit).
    unsafe fn insert_and_push(
        &mut self,
        kind: &'static str,
        yields: Yields,
        from_ring: bool,
        entry: squeue::Entry,
        pause_at: usize,
    ) -> io::Result<Token> {
        let token = self.slots.insert(kind, yields, from_ring, pause_at);
        // Safety: as our caller promises.
        if let Err(err) = unsafe { self.push(kind, &entry.user_data(token.user_data())) } {
            self.slots.remove(token);
            return Err(err);
        }
        self.receiving += usize::from(from_ring);
        Ok(token)
    }

    /// # Safety
    /// As for [`submit`](Self::submit).
    unsafe fn push(&mut self, kind: &'static str, entry: &squeue::Entry) -> io::Result<()> {
        // Safety: our caller vouches for the entry's pointers.
        while unsafe { self.ring.submission().push(entry) }.is_err() {
            // The ring is full: hand what is there to the kernel now — one more
            // `io_uring_enter` this turn, which `--trace` counts too.
            let span = timeline::begin();
            let entered = self.syscall(0);
            self.trace.entered(span.stop());
            entered?;
        }
        self.trace.pushed(kind);
        Ok(())
    }

    /// The next result of request `token`: `Some` when one is there, `None` once the last
    /// one has been taken (the request is over), `Pending` after storing the waker.
    pub fn poll_next(&mut self, token: Token, cx: &Context<'_>) -> Poll<Option<Completion>> {
        let Some(slot) = self.slots.get_mut(token) else {
            return Poll::Ready(None);
        };
        if let Some(completion) = slot.results.pop_front() {
            return Poll::Ready(Some(completion));
        }
        match &slot.lifecycle {
            Lifecycle::Finished => {
                self.slots.remove(token);
                Poll::Ready(None)
            }
            Lifecycle::Abandoned(_) => Poll::Ready(None),
            Lifecycle::Waiting(waker) if waker.will_wake(cx.waker()) => Poll::Pending,
            Lifecycle::Submitted | Lifecycle::Waiting(_) => {
                slot.lifecycle = Lifecycle::Waiting(cx.waker().clone());
                Poll::Pending
            }
        }
    }

    /// How many emptied result queues the slots keep for the next requests (for tests).
    #[cfg(test)]
    pub fn spare_queues(&self) -> usize {
        self.slots.spare_queues()
    }

    /// The owner of `token` is gone. If the kernel is done, the slot is freed and
    /// `keep_alive` handed back; if not, the request is cancelled and `keep_alive` —
    /// whatever the kernel may still use — stays in the slot until its last completion.
    /// Results nobody took are discarded: buffers the kernel filled for them go back to the
    /// buffer ring, fds it accepted for them are closed.
    ///
    /// What comes back is the caller's to drop once it no longer borrows the driver: its
    /// `Drop` may need the runtime.
    #[must_use = "drop it after the driver's borrow ends"]
    pub fn abandon(&mut self, token: Token, keep_alive: Box<dyn Any>) -> Option<Box<dyn Any>> {
        let Some(slot) = self.slots.get_mut(token) else {
            return Some(keep_alive);
        };
        // Taken out, to be discarded below; the emptied queue goes back to the slots.
        let mut leftovers = std::mem::take(&mut slot.results);
        let yields = slot.yields;
        let unused = match slot.lifecycle {
            Lifecycle::Finished => {
                self.slots.remove(token);
                Some(keep_alive)
            }
            Lifecycle::Abandoned(_) => Some(keep_alive),
            Lifecycle::Submitted | Lifecycle::Waiting(_) => {
                slot.lifecycle = Lifecycle::Abandoned(keep_alive);
                self.cancel(token);
                None
            }
        };
        for completion in leftovers.drain(..) {
            self.discard(yields, completion);
        }
        self.slots.keep_queue(leftovers);
        unused
    }

    /// Asks the kernel to stop request `token` early (`IORING_OP_ASYNC_CANCEL`). The request
    /// then ends with a last completion — `-ECANCELED`, or its real result if it won the
    /// race — and only after that last completion is the kernel done with its buffer.
    fn cancel(&mut self, token: Token) {
        let cancel = opcode::AsyncCancel::new(token.user_data())
            .build()
            .user_data(IGNORED);
        // Safety: a cancel names its target by `user_data`: it points to no memory.
        if let Err(err) = unsafe { self.push("cancel", &cancel) } {
            // The request then runs to its natural end; its slot keeps the buffer till then.
            self.trace.say(|| format!("ring: cannot cancel: {err}"));
        }
    }

    /// One `io_uring_enter`: hands the kernel every request pushed since the last one and,
    /// if `wait`, sleeps until at least one completion is there (the doorbell's read is
    /// always in flight, so something can always end the sleep). Then call
    /// [`complete`](Self::complete).
    ///
    /// First the buffer ring is topped up to one buffer per receive in flight and
    /// [`SPARE_IN_RING`] more, from the buffers given back last.
    pub fn enter(&mut self, wait: bool) -> io::Result<()> {
        self.buffers
            .borrow_mut()
            .offer(self.receiving.saturating_add(SPARE_IN_RING));
        let span = timeline::begin();
        let entered = self.syscall(u32::from(wait));
        self.trace.entered(span.stop());
        entered
    }

    /// Takes every completion from the ring, files each in its slot and wakes the task
    /// waiting for it. `waited` is for `--trace`: whether the enter before it slept.
    ///
    /// Returns what abandoned requests kept alive and the kernel is now done with: the
    /// caller drops it once it no longer borrows the driver, since its `Drop` may need the
    /// runtime (a buffer that owns a stream closes it through the ring).
    #[must_use = "drop it after the driver's borrow ends"]
    pub fn complete(&mut self, waited: bool) -> Vec<Box<dyn Any>> {
        // Copied out first: the completion ring is borrowed while we walk it.
        let mut reaped = std::mem::take(&mut self.reaped);
        reaped.extend(self.ring.completion().map(|entry| {
            let completion = Completion {
                result: entry.result(),
                flags: entry.flags(),
            };
            (entry.user_data(), completion)
        }));
        let mut freed = Vec::new();
        for (user_data, completion) in reaped.drain(..) {
            let kind = self.complete_one(user_data, completion, &mut freed);
            self.trace.completed(kind);
        }
        self.reaped = reaped;
        self.trace.end_of_turn(waited);
        freed
    }

    /// One turn: [`enter`](Self::enter), then [`complete`](Self::complete). Returns what
    /// `complete` returns.
    #[must_use = "drop it after the driver's borrow ends"]
    pub fn turn(&mut self, wait: bool) -> io::Result<Vec<Box<dyn Any>>> {
        self.enter(wait)?;
        Ok(self.complete(wait))
    }

    /// Files one completion in its slot and wakes the task waiting for it; what an abandoned
    /// request kept alive goes into `freed` once its last completion has come. Returns the
    /// kind of request it was.
    fn complete_one(
        &mut self,
        user_data: u64,
        completion: Completion,
        freed: &mut Vec<Box<dyn Any>>,
    ) -> &'static str {
        match user_data {
            IGNORED => return "cancel",
            CLOSE => return "close",
            DOORBELL => {
                self.doorbell_armed = false;
                // Read again — unless shutting down, or the read itself failed (it would
                // fail again at once, every turn: a loop that never sleeps).
                let rearmed = match completion.io_result() {
                    _ if self.closing => Ok(()),
                    Ok(_) => self.arm_doorbell(),
                    Err(err) => Err(err),
                };
                if let Err(err) = rearmed {
                    fdio::log!("completion: wakes from other threads may be lost: {err}");
                }
                return "wake";
            }
            _ => {}
        }
        let token = Token::from_user_data(user_data);
        let Some(slot) = self.slots.get_mut(token) else {
            // Cannot happen: a slot lives until its last completion. Still, a buffer
            // attached to it must not be lost.
            self.discard(Yields::Value, completion);
            return "unknown";
        };
        let (kind, yields) = (slot.kind, slot.yields);
        let last = !completion.more_to_come();
        if last && slot.from_ring {
            self.receiving -= 1;
        }
        if let Lifecycle::Abandoned(_) = slot.lifecycle {
            // Nobody will take this result: return its buffer, and once the kernel is done,
            // free the slot, handing what the kernel was using to the caller to drop.
            self.discard(yields, completion);
            if last
                && let Some(slot) = self.slots.remove(token)
                && let Lifecycle::Abandoned(kept) = slot.lifecycle
            {
                freed.push(kept);
            }
            return kind;
        }
        slot.results.push_back(completion);
        let next = if last {
            Lifecycle::Finished
        } else {
            Lifecycle::Submitted
        };
        if let Lifecycle::Waiting(waker) = std::mem::replace(&mut slot.lifecycle, next) {
            waker.wake();
        }
        // Exactly at the mark, not above it: results filed before the cancel lands do not
        // ask again.
        if !last && slot.results.len() == slot.pause_at {
            self.cancel(token);
        }
        kind
    }

    /// A result nobody will take: its buffer goes back to the ring, and a connection an
    /// abandoned accept still accepted is closed.
    fn discard(&mut self, yields: Yields, completion: Completion) {
        if let Some(id) = completion.buffer_id() {
            // Safety: the completion named buffer `id`, and it is discarded: nobody took it.
            unsafe { self.buffers.borrow_mut().recycle(id) };
        }
        if yields == Yields::NewFd && completion.result >= 0 {
            // Safety: the request is the driver's own accept (`submit_accept`): a successful
            // result is a new fd, and nobody took it.
            drop(unsafe { OwnedFd::from_raw_fd(completion.result) });
        }
    }

    /// Closes `fd` through the ring (`IORING_OP_CLOSE`): after every entry already pushed,
    /// some of which may name the same number (see [`crate::fd`]); the number stays taken
    /// until the kernel runs the close. Nobody awaits its result: `close(2)`'s errors are
    /// ignored as `OwnedFd`'s drop ignores them.
    pub(crate) fn close(&mut self, fd: OwnedFd) {
        let entry = opcode::Close::new(Fd(fd.as_raw_fd()))
            .build()
            .user_data(CLOSE);
        // Safety: a close points to no memory.
        match unsafe { self.push("close", &entry) } {
            // The kernel closes the number now: it is no longer ours to close.
            Ok(()) => drop(fd.into_raw_fd()),
            Err(err) => {
                self.trace
                    .say(|| format!("ring: cannot close through the ring: {err}"));
                self.close_after_the_ring.push(fd);
            }
        }
    }

    /// Submits the doorbell's read: 8 bytes into `doorbell_count`.
    fn arm_doorbell(&mut self) -> io::Result<()> {
        let entry = opcode::Read::new(
            Fd(self.doorbell.fd()),
            (&raw mut *self.doorbell_count).cast(),
            8,
        )
        .build()
        .user_data(DOORBELL);
        // Safety: `doorbell_count` is a `Box` the driver keeps until the read's completion
        // (or leaks, in `shut_down`); only the kernel writes into it.
        unsafe { self.push("wake", &entry)? };
        self.doorbell_armed = true;
        Ok(())
    }

    /// The system call itself. `EINTR` (a signal arrived — our handler wrote to the
    /// self-pipe, whose read will complete) and `EBUSY` (completions are waiting to be
    /// taken first) just end the turn.
    fn syscall(&mut self, min_complete: u32) -> io::Result<()> {
        let to_submit = self.ring.submission().len() as u32;
        // GETEVENTS always: with DEFER_TASKRUN the kernel finishes our requests only then.
        let flags = IORING_ENTER_GETEVENTS;
        // Safety: no extra argument is passed (`None`), the flags are the plain ones.
        let entered = unsafe {
            self.ring
                .submitter()
                .enter::<libc::sigset_t>(to_submit, min_complete, flags, None)
        };
        match entered {
            Ok(_) => Ok(()),
            Err(err) if matches!(err.raw_os_error(), Some(libc::EINTR | libc::EBUSY)) => Ok(()),
            Err(err) => Err(err),
        }
    }

    /// How many `io_uring_enter` calls the loop has made (what `--trace` counts).
    pub fn io_uring_enters(&self) -> u64 {
        self.trace.enters()
    }

    /// How many of the program's requests are in flight (the kernel may still complete
    /// them); the doorbell's read is not counted.
    pub fn in_flight(&self) -> usize {
        self.slots.in_flight()
    }

    /// Cancels every request and waits, a bounded number of turns, until the kernel is done
    /// with them: only then may what they use be freed. Not narrated: the program is over.
    fn shut_down(&mut self) {
        self.trace.silence();
        self.closing = true;
        // Busy while the kernel may still complete a request, or an entry (a close) waits in
        // the submission ring: closing the ring would drop it.
        let busy = |driver: &mut Driver| {
            driver.in_flight() > 0 || driver.doorbell_armed || !driver.ring.submission().is_empty()
        };
        if !busy(self) {
            return;
        }
        let cancel_all = opcode::AsyncCancel2::new(io_uring::types::CancelBuilder::any().all())
            .build()
            .user_data(IGNORED);
        // Safety: a cancel points to no memory.
        if unsafe { self.push("cancel", &cancel_all) }.is_ok() {
            for _ in 0..100 {
                // What the kernel is done with is freed now: the driver is being dropped, so
                // nobody borrows it, and the runtime is no longer current.
                if self.turn(false).map(drop).is_err() || !busy(self) {
                    break;
                }
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
        }
        if busy(self) {
            // A request that would not stop (a disk read the kernel cannot cancel once
            // started) may still write into what the driver keeps: leak that, never free it.
            std::mem::forget(std::mem::take(&mut self.slots));
            std::mem::forget(Rc::clone(&self.buffers));
            std::mem::forget(std::mem::replace(&mut self.doorbell_count, Box::new(0)));
        }
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        self.shut_down();
        // Then the fields, in order: `ring` first (the kernel lets go of the buffer ring,
        // and of the fds), then the fds it could not close, the slots and the buffers.
    }
}
