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
//! (with `min_complete` = 1) sleeps until at least one result is there.
//!
//! Each request carries a 64-bit `user_data` that the kernel copies into its completion
//! untouched: ours is the index of a slot that holds the results and the waker of the
//! task waiting for them — the same job as the token of lesson 2's registry. A *multishot*
//! request (accept, receive) posts many completions for one submission; the flag
//! `IORING_CQE_F_MORE` on a completion says more will follow.

use std::any::Any;
use std::cell::RefCell;
use std::io;
use std::rc::Rc;
use std::task::{Context, Poll};

use fdio::Trace;
use io_uring::{IoUring, cqueue, opcode, squeue};

use crate::bufring::BufRing;
use crate::slots::{Completion, Slots, Tally, Token};

/// The submission ring's size. A turn that pushes more first flushes what is there.
const SQ_ENTRIES: u32 = 1024;

/// The completion ring's size: multishot requests post many results per submission, so it is
/// larger. (The kernel keeps results that find the ring full, since Linux 5.5; they come out
/// at the next enter.)
const CQ_ENTRIES: u32 = 8 * SQ_ENTRIES;

/// `io_uring_enter(2)`'s flag "wait for / collect completions", from `<linux/io_uring.h>`.
const IORING_ENTER_GETEVENTS: u32 = 1;

/// The `user_data` of the requests whose completion nobody awaits (the cancels).
const IGNORED: u64 = u64::MAX;

/// The ring, the slots of the requests in flight, and the counts `--trace` prints.
pub struct Driver {
    ring: IoUring,
    slots: Slots,
    /// The provided buffers that multishot receives fill. Shared with the buffers lent out
    /// (a [`RingBuf`](crate::net::RingBuf) goes back by itself when dropped), in a cell of
    /// its own: a buffer parked in an abandoned slot may be dropped while the driver is busy.
    pub(crate) buffers: Rc<RefCell<BufRing>>,
    trace: Trace,
    enters: u64,
    submitted_this_turn: Vec<&'static str>,
}

impl Driver {
    /// Sets up the rings and registers a provided-buffer ring of `buffers` × `buffer_size`.
    pub fn new(trace: Trace, buffers: u16, buffer_size: u32) -> io::Result<Driver> {
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
            })?;
        let buffers = Rc::new(RefCell::new(BufRing::register(
            &ring.submitter(),
            buffers,
            buffer_size,
        )?));
        Ok(Driver {
            ring,
            slots: Slots::default(),
            buffers,
            trace,
            enters: 0,
            submitted_this_turn: Vec::new(),
        })
    }

    /// Pushes `entry` into the submission ring; the kernel sees it at the next enter.
    pub fn submit(&mut self, kind: &'static str, entry: squeue::Entry) -> io::Result<Token> {
        self.submit_multishot(kind, entry, usize::MAX)
    }

    /// Like [`submit`](Self::submit), for a multishot request that is cancelled once
    /// `max_queued` of its results wait to be taken: its owner re-arms it after taking them.
    pub fn submit_multishot(
        &mut self,
        kind: &'static str,
        entry: squeue::Entry,
        max_queued: usize,
    ) -> io::Result<Token> {
        let token = self.slots.insert(kind, max_queued);
        self.push(kind, entry.user_data(token.user_data()))?;
        Ok(token)
    }

    fn push(&mut self, kind: &'static str, entry: squeue::Entry) -> io::Result<()> {
        // Safety: every pointer in our entries stays valid until the request's last
        // completion: the futures own their buffers, and a dropped one leaves them in its
        // slot (`abandon`); the provided buffers live as long as the ring.
        while unsafe { self.ring.submission().push(&entry) }.is_err() {
            // The ring is full: hand what is there to the kernel now.
            self.enter(0)?;
        }
        if self.trace.enabled() {
            self.submitted_this_turn.push(kind);
        }
        Ok(())
    }

    /// The next result of request `token`: `Some` when one is there, `None` once the last
    /// one has been taken (the request is over), `Pending` after storing the waker.
    pub fn poll_next(&mut self, token: Token, cx: &Context<'_>) -> Poll<Option<Completion>> {
        let Some(slot) = self.slots.get_mut(token) else {
            return Poll::Ready(None);
        };
        if let Some(completion) = slot.completions.pop_front() {
            return Poll::Ready(Some(completion));
        }
        if slot.finished {
            self.slots.remove(token);
            return Poll::Ready(None);
        }
        slot.waker = Some(cx.waker().clone());
        Poll::Pending
    }

    /// Whether the kernel is done with `token` (its last completion has arrived).
    pub fn finished(&self, token: Token) -> bool {
        self.slots.get(token).is_none_or(|slot| slot.finished)
    }

    /// Asks the kernel to stop request `token` early (`IORING_OP_ASYNC_CANCEL`). The request
    /// then ends with a last completion — `-ECANCELED`, or its real result if it won the
    /// race — and only after that last completion is the kernel done with its buffer.
    pub fn cancel(&mut self, token: Token) -> io::Result<()> {
        match self.slots.get_mut(token) {
            Some(slot) if !slot.finished && !slot.cancelling => slot.cancelling = true,
            _ => return Ok(()),
        }
        let cancel = opcode::AsyncCancel::new(token.user_data())
            .build()
            .user_data(IGNORED);
        self.push("cancel", cancel)
    }

    /// The future that awaited `token` was dropped. If the kernel is done, the slot is freed;
    /// if not, the request is cancelled and `keep_alive` — whatever the kernel may still
    /// write into — stays in the slot until its last completion. Buffers the kernel already
    /// filled for it go back to the buffer ring.
    pub fn abandon(&mut self, token: Token, keep_alive: Box<dyn Any>) {
        let Some(slot) = self.slots.get_mut(token) else {
            return;
        };
        let leftovers: Vec<Completion> = slot.completions.drain(..).collect();
        let (kind, finished) = (slot.kind, slot.finished);
        if !finished {
            slot.abandoned = Some(keep_alive);
            slot.waker = None;
        }
        for completion in leftovers {
            self.discard(kind, completion);
        }
        if finished {
            self.slots.remove(token);
        } else if let Err(err) = self.cancel(token) {
            // The request then runs to its natural end; its slot keeps the buffer till then.
            self.trace.say(|| format!("ring: cannot cancel: {err}"));
        }
    }

    /// One turn: a single `io_uring_enter` submits everything pushed since the last turn
    /// and, if `wait`, sleeps until at least one completion is there; then every completion
    /// is taken from the ring and the tasks waiting for them are woken.
    pub fn turn(&mut self, wait: bool) -> io::Result<()> {
        let submitted = std::mem::take(&mut self.submitted_this_turn);
        let enters_before = self.enters;
        self.enter(u32::from(wait))?;
        let mut completed = Vec::new();
        // Collected first: the completion ring is borrowed while we walk it.
        let entries: Vec<cqueue::Entry> = self.ring.completion().collect();
        for entry in entries {
            let completion = Completion {
                result: entry.result(),
                flags: entry.flags(),
            };
            let kind = self.complete(Token::from_user_data(entry.user_data()), completion);
            if let Some(kind) = kind
                && self.trace.enabled()
            {
                completed.push(kind);
            }
        }
        self.trace.say(|| {
            format!(
                "ring: submitted {}, {} → completed {}; io_uring_enter calls: {} (total {})",
                Tally(&submitted),
                if wait { "waited" } else { "did not wait" },
                Tally(&completed),
                self.enters - enters_before,
                self.enters
            )
        });
        Ok(())
    }

    /// Files one completion in its slot and wakes the task waiting for it. Returns the kind
    /// of request, or `None` for a completion nobody awaits.
    fn complete(&mut self, token: Token, completion: Completion) -> Option<&'static str> {
        if token.user_data() == IGNORED {
            return Some("cancel");
        }
        let Some(slot) = self.slots.get_mut(token) else {
            // Cannot happen: a slot lives until its last completion. Still, a buffer
            // attached to it must not be lost.
            self.discard("unknown", completion);
            return None;
        };
        let kind = slot.kind;
        slot.finished = !cqueue::more(completion.flags);
        if slot.abandoned.is_some() {
            // Nobody will take this result: return its buffer, and once the kernel is done,
            // free the slot (and with it what the kernel was writing into).
            let finished = slot.finished;
            self.discard(kind, completion);
            if finished {
                self.slots.remove(token);
            }
            return Some(kind);
        }
        slot.completions.push_back(completion);
        let hoarding = !slot.finished && slot.completions.len() >= slot.max_queued;
        if let Some(waker) = slot.waker.take() {
            waker.wake();
        }
        if hoarding && let Err(err) = self.cancel(token) {
            self.trace.say(|| format!("ring: cannot cancel: {err}"));
        }
        Some(kind)
    }

    /// A result nobody will take: its buffer goes back to the ring, and a connection an
    /// abandoned accept still accepted is closed.
    fn discard(&mut self, kind: &'static str, completion: Completion) {
        if let Some(id) = completion.buffer_id() {
            self.buffers.borrow_mut().recycle(id);
        }
        if kind == "accept" && completion.result >= 0 {
            // Safety: a successful accept's result is a new fd that nobody else has.
            drop(unsafe {
                <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(completion.result)
            });
        }
    }

    /// The system call itself. `EINTR` (a signal arrived — our handler wrote to the
    /// self-pipe, whose read will complete) and `EBUSY` (completions are waiting to be
    /// taken first) just end the turn.
    fn enter(&mut self, min_complete: u32) -> io::Result<()> {
        let to_submit = self.ring.submission().len() as u32;
        self.enters += 1;
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

    /// How many requests are in flight (the kernel may still complete them).
    pub fn in_flight(&self) -> usize {
        self.slots.in_flight()
    }

    /// Cancels every request and waits, a bounded number of turns, until the kernel is done
    /// with them: only then may their buffers be freed.
    pub fn shut_down(&mut self) {
        if self.in_flight() == 0 {
            return;
        }
        let cancel_all = opcode::AsyncCancel2::new(io_uring::types::CancelBuilder::any().all())
            .build()
            .user_data(IGNORED);
        if self.push("cancel", cancel_all).is_err() {
            return;
        }
        for _ in 0..100 {
            if self.turn(false).is_err() || self.in_flight() == 0 {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        if self.in_flight() > 0 {
            // A request that would not stop (a disk read the kernel cannot cancel once
            // started) may still write into what its slot keeps: leak that, never free it.
            std::mem::forget(std::mem::take(&mut self.slots));
            std::mem::forget(Rc::clone(&self.buffers));
        }
    }
}
