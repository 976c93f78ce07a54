//! `async-await handmade`: a future written by hand, with no `async` at all, and the rules
//! every such future keeps.
//!
//! At the bottom of every `.await` there is a future someone wrote by hand: the runtime's
//! `Sleep`, its `TcpStream` reads, its `Mutex`. Here is the smallest one, a [`Timer`] that
//! another thread rings. Its `poll` does three things: *check* (has it rung?), *store*
//! `cx.waker()` where the other party will find it, *return* `Pending`. When the thread rings,
//! it sets the flag and wakes the waker; whoever polls (our runtime, or the small loop in
//! [`block_on_by_hand`]) polls again, and this time the check says `Ready`. An `async` block
//! that awaits a `Timer` adds no magic: its `poll` calls the `Timer`'s with the same `cx`.
//!
//! # The waker contract
//! The executor polls a task again only when its waker is woken. So a future that returns
//! `Pending` promises that it will be woken, and keeps the promise by these rules (each is
//! tested in `handmade/tests.rs`; rules 1, 2, 4 and 5 also against a future that breaks
//! them, to show the test would see it):
//!
//! 1. **Store the waker before returning `Pending`.** A future that returns `Pending` and
//!    leaves no waker anywhere is never polled again: its task hangs.
//! 2. **Wake the latest waker.** A later poll may bring a different waker: the future was
//!    moved to another task (a `JoinHandle` polled once by one task, then moved into another
//!    and awaited there). Replace the stored one (`will_wake` says when it is the same, and
//!    the clone can be saved): waking the first would wake a task that no longer polls it.
//! 3. **Wakes may come from any thread.** A `Waker` is `Send + Sync`; the thread that rings
//!    a [`Timer`] wakes it directly. Our runtime's waker then pokes `epoll_wait` awake
//!    through a `mio::Waker` (see `executor.rs`).
//! 4. **A spurious poll must be harmless.** A future may be polled when nothing happened (a
//!    `race` polls both sides when either is woken). A poll is a question, not a piece of
//!    news: check again, store the waker again, return `Pending` again.
//! 5. **Register interest before the final check.** If the future checks ("not rung"), then
//!    stores its waker, an event that comes in between finds no waker to wake, and the
//!    future waits for one that has already gone. [`Timer`] checks and stores under one
//!    lock, so the event comes either before (the check sees it) or after (it finds the
//!    waker). Without a lock the order saves you: store the waker, *then* check. This is the
//!    rule the old `async-await echo` broke: after a short read it decided its socket was
//!    empty and went to write; the edge epoll reported meanwhile found no reader waiting and
//!    was dropped, and the next `readable()` waited for an edge that had passed. The fix is
//!    the reactor's readiness bit (`reactor.rs`): the event is kept until a task uses it, so
//!    a task's check always comes after the event was recorded.

use std::fmt::Debug;
use std::io::{self, Write};
use std::pin::{Pin, pin};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, Wake, Waker};
use std::thread::{self, Thread};
use std::time::Duration;

/// What the timer and the party that rings it share: has it rung, and whom to wake.
#[derive(Default)]
pub(crate) struct Slot {
    pub(crate) rung: bool,
    pub(crate) waker: Option<Waker>,
}

/// Locks a slot. A panic while it was held cannot leave it half-written (each write is one
/// field), so a poisoned lock is still good to use.
pub(crate) fn lock(slot: &Mutex<Slot>) -> std::sync::MutexGuard<'_, Slot> {
    slot.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A future that is ready once its [`Bell`] rings: written by hand, no `async` inside.
pub struct Timer {
    slot: Arc<Mutex<Slot>>,
}

/// The other party: rings the [`Timer`] it was made with, from any thread.
pub struct Bell {
    slot: Arc<Mutex<Slot>>,
}

/// A timer and the bell that rings it (a one-shot channel carrying no value).
pub fn timer() -> (Timer, Bell) {
    let slot = Arc::new(Mutex::new(Slot::default()));
    let bell = Bell {
        slot: Arc::clone(&slot),
    };
    (Timer { slot }, bell)
}

impl Timer {
    /// A timer rung by a thread of its own, named "timer", after `duration`.
    pub fn after(duration: Duration) -> io::Result<Timer> {
        let (timer, bell) = timer();
        thread::Builder::new()
            .name("timer".to_string())
            .spawn(move || {
                thread::sleep(duration);
                bell.ring();
            })?;
        Ok(timer)
    }
}

impl Future for Timer {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        // The check and the store happen under one lock: `ring` cannot come in between
        // (rule 5).
        let mut slot = lock(&self.slot);
        if slot.rung {
            return Poll::Ready(());
        }
        // Rules 1 and 2: keep a waker, and always the latest one.
        match &mut slot.waker {
            Some(stored) if stored.will_wake(cx.waker()) => {}
            other => *other = Some(cx.waker().clone()),
        }
        Poll::Pending
    }
}

impl Bell {
    /// Marks the timer rung and wakes whoever polled it last.
    pub fn ring(self) {
        let waker = {
            let mut slot = lock(&self.slot);
            slot.rung = true;
            slot.waker.take()
        };
        // Woken outside the lock: a waker may run code (ours pushes onto a queue), and that
        // code must not find the slot locked.
        if let Some(waker) = waker {
            waker.wake();
        }
    }
}

/// The waker of [`block_on_by_hand`]: unparks the polling thread, and notes who woke it.
struct Unpark {
    polling: Thread,
    woken_by: Mutex<Option<String>>,
}

impl Wake for Unpark {
    fn wake(self: Arc<Self>) {
        let me = thread::current();
        *self.woken_by.lock().unwrap_or_else(PoisonError::into_inner) =
            Some(me.name().unwrap_or("unnamed").to_string());
        self.polling.unpark();
    }
}

/// The smallest executor: poll, and if `Pending`, sleep until the waker is woken; repeat.
/// It prints each step to `out`. (Our runtime does the same, for many tasks, with epoll as
/// its way to sleep.)
pub fn block_on_by_hand<F: Future>(mut out: impl Write, future: F) -> io::Result<F::Output>
where
    F::Output: Debug,
{
    let unpark = Arc::new(Unpark {
        polling: thread::current(),
        woken_by: Mutex::new(None),
    });
    let waker = Waker::from(Arc::clone(&unpark));
    let mut cx = Context::from_waker(&waker);
    let mut future = pin!(future);
    let mut poll = 1;
    loop {
        writeln!(out, "   poll #{poll}")?;
        if let Poll::Ready(output) = future.as_mut().poll(&mut cx) {
            writeln!(out, "   → Ready({output:?})")?;
            return Ok(output);
        }
        writeln!(
            out,
            "   → Pending: the loop sleeps until the waker is woken"
        )?;
        // `park` may return without an `unpark` (its docs say so): then look again.
        let woken_by = loop {
            let woken_by = unpark
                .woken_by
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .take();
            match woken_by {
                Some(name) => break name,
                None => thread::park(),
            }
        };
        writeln!(out, "   woken, from the thread {woken_by:?}")?;
        poll += 1;
    }
}

/// Runs the demonstration: the hand-made timer, then the same wait written with `async`.
pub fn run(delay: Duration) -> io::Result<()> {
    match show(delay) {
        // The reader went away (`handmade | head -3`): a normal way to end, as in `clock`.
        Err(err) if fdio::reader_went_away(&err) => Ok(()),
        other => other,
    }
}

fn show(delay: Duration) -> io::Result<()> {
    let mut out = io::stdout();
    let ms = delay.as_millis();
    writeln!(
        out,
        "1. a Timer future written by hand (no async), rung by a thread after {ms} ms"
    )?;
    block_on_by_hand(&mut out, Timer::after(delay)?)?;

    writeln!(
        out,
        "2. the same wait written with async: async {{ Timer::after({ms} ms).await; \"rang\" }}"
    )?;
    writeln!(
        out,
        "   (the async block's poll calls the Timer's poll, with the same waker)"
    )?;
    let timer = Timer::after(delay)?;
    block_on_by_hand(&mut out, async {
        timer.await;
        "rang"
    })?;
    Ok(())
}

#[cfg(test)]
mod tests;
