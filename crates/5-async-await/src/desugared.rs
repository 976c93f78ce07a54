//! `async fn`, desugared: the enum the compiler writes for it, and why `poll` takes
//! `Pin<&mut Self>`.
//!
//! [`checksum`] is an `async fn` that lends a local buffer to a read, as an echo does:
//!
//! ```rust
//! # use lesson_async_await::desugared::fill;
//! async fn checksum() -> u32 {
//!     let mut buffer = [0u8; 8];
//!     let filled = fill(&mut buffer).await;   // `fill`'s future holds `&mut buffer`
//!     buffer[..filled].iter().map(|&byte| u32::from(byte)).sum()
//! }
//! ```
//!
//! The compiler turns it into an enum with one variant per place it can stop, holding the
//! locals that live across that `.await` — [`Checksum`] below is that enum written out. At the
//! `.await` the future holds **both** `buffer` and `fill`'s future, and `fill`'s future holds
//! a `&mut` to `buffer`: a pointer into the enum itself. Move the enum (return it, push it
//! into a `Vec`, `mem::swap` it) and `buffer` moves with it, but the pointer still points
//! where `buffer` was.
//!
//! So a future that has been polled must stay where it is until it is dropped, and that is
//! what `Pin<&mut Self>` says: whoever holds a `Pin` promises not to move what it points to.
//! Our runtime keeps the promise by boxing each task (`Box::pin` in `spawn`) and with
//! `pin!` on the stack in `block_on` and `race`. Before its first poll a future points
//! nowhere (state `Start`), so futures can be created and passed around freely; only
//! polling needs the pin.
//!
//! Types that never point into themselves — most types, and [`Fill`] — are `Unpin`: for them
//! a `Pin` is just a `&mut` (`Pin::new`, `Pin::get_mut`). The compiler marks every `async`
//! future `!Unpin`; the hand-written [`Checksum`] says so with a `PhantomPinned`. Then the
//! compiler refuses to take it out of its `Pin`:
//!
//! ```rust,compile_fail,E0277
//! use std::pin::{Pin, pin};
//! use lesson_async_await::desugared::checksum;
//!
//! let mut future = pin!(checksum());
//! // Once polled, `future` may point into itself: a plain `&mut` would let it be moved.
//! let unpinned: &mut _ = Pin::get_mut(future.as_mut()); // error: cannot be unpinned
//! ```
//!
//! ```rust,compile_fail,E0277
//! use std::pin::{Pin, pin};
//! use lesson_async_await::desugared::Checksum;
//!
//! let mut future = pin!(Checksum::Start);
//! let unpinned: &mut Checksum = Pin::get_mut(future.as_mut()); // the same refusal
//! ```
//!
//! while a `Fill`, which only borrows from outside, comes out of its `Pin` at will:
//!
//! ```rust
//! use std::pin::{Pin, pin};
//! use lesson_async_await::desugared::fill;
//!
//! let mut buffer = [0u8; 8];
//! let mut future = pin!(fill(&mut buffer));
//! let unpinned = Pin::get_mut(future.as_mut());
//! ```
//!
//! Pinning keeps the buffer in place; one more thing keeps the pointer to it valid. A `&mut`
//! promises that nothing else touches what it points at while it is in use, and a `&Checksum`
//! — which any safe code can take from the `Pin` — promises that nothing changes what *it*
//! covers, `buffer` included, while the `&mut` inside `reading` may still write there. So the
//! borrowed local is kept in an [`UnsafeCell`], which tells the compiler that a shared
//! reference to it does not mean "unchanging". Without it, Miri (which checks every access
//! against Rust's aliasing rules) finds undefined behaviour in this module's test: under
//! Stacked Borrows the look through `&Checksum` alone, under Tree Borrows the next poll,
//! whose write goes through the `&mut` that the look froze.
//!
//! The compiler's own `async` futures have this very hole, and it is not closed:
//! [rust-lang/rust#137750] shows an `async` block, all safe code, polled, looked at through
//! `Pin`'s safe `Deref`, polled again — undefined behaviour for Miri under both Stacked and
//! Tree Borrows. The fix decided there is the still-unstable `UnsafePinned`, made to contain
//! an `UnsafeCell` ([rust-lang/rust#140638]); the compiler does not yet put its futures'
//! borrowed locals in one. A hand-written future can do it today, as [`Checksum`] does.
//!
//! [rust-lang/rust#137750]: https://github.com/rust-lang/rust/issues/137750
//! [rust-lang/rust#140638]: https://github.com/rust-lang/rust/pull/140638
//!
//! Lessons 3 and 4 never met this, because their state machines own their data: a client
//! task keeps its unsent bytes in a field and borrows them anew on each resume, and no state
//! holds a borrow of another field. A learner's hand-written enum could do the same here;
//! `async fn` cannot choose, because it lets you borrow a local across an `.await`.

use std::cell::UnsafeCell;
use std::marker::PhantomPinned;
use std::pin::Pin;
use std::task::{Context, Poll};

/// What [`Fill`] writes into the buffer it was lent.
const DATA: &[u8] = b"async fn";

/// A read that has to wait once: its first poll returns `Pending` (waking its task at once,
/// as if the data had just arrived), its second copies `"async fn"` into the buffer.
pub struct Fill<'a> {
    buffer: &'a mut [u8],
    waited: bool,
}

/// Fills `buffer` with as much of `"async fn"` as fits, after one `Pending`.
pub fn fill(buffer: &mut [u8]) -> Fill<'_> {
    Fill {
        buffer,
        waited: false,
    }
}

impl Future for Fill<'_> {
    /// How many bytes were written.
    type Output = usize;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<usize> {
        if !self.waited {
            self.waited = true;
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        let filled = DATA.len().min(self.buffer.len());
        self.buffer[..filled].copy_from_slice(&DATA[..filled]);
        Poll::Ready(filled)
    }
}

/// The sum of the bytes a [`fill`] puts in a local buffer: the `async fn` that [`Checksum`]
/// writes out by hand.
pub async fn checksum() -> u32 {
    let mut buffer = [0u8; 8];
    let filled = fill(&mut buffer).await;
    buffer[..filled].iter().map(|&byte| u32::from(byte)).sum()
}

// async fn checksum() -> u32 {
//     let mut buffer = [0u8; 8];             // Start
//     let filled = fill(&mut buffer).await;  // Waiting: `buffer`, and a future borrowing it
//     buffer[..filled].iter().map(|&byte| u32::from(byte)).sum()   // Done
// }
//
/// [`checksum`] as the compiler makes it: an enum of the places it can stop at.
pub enum Checksum {
    /// Not polled yet: holds nothing, and may still move.
    Start,
    /// Stopped at the `.await`. `reading` borrows `buffer`, next to it in this very variant:
    /// Rust has no name for such a lifetime, so it says `'static`, and the `unsafe` in
    /// `poll` answers for it. `reading` is `None` only while it is being made; it is declared
    /// first so that, if the future is dropped here, it is dropped before `buffer`. `buffer`
    /// is in an `UnsafeCell`: a `&Checksum` must not freeze what `reading` writes to.
    Waiting {
        reading: Option<Fill<'static>>,
        buffer: UnsafeCell<[u8; 8]>,
        /// Makes the enum `!Unpin`, as the compiler makes every `async` future: it must not
        /// move once it points into itself.
        _pinned: PhantomPinned,
    },
    /// Returned its output; polling it again is a bug.
    Done,
}

impl Future for Checksum {
    type Output = u32;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<u32> {
        // Safety: the enum is never moved out of `self`: each step replaces the state in
        // place, which drops the old state where it lies. So `buffer` stays at its address
        // for as long as `reading` borrows it.
        let this = unsafe { self.get_unchecked_mut() };
        loop {
            match this {
                Checksum::Start => {
                    // The compiler too puts `buffer` in its place first, then makes the
                    // future that points at it.
                    *this = Checksum::Waiting {
                        reading: None,
                        buffer: UnsafeCell::new([0; 8]),
                        _pinned: PhantomPinned,
                    };
                    if let Checksum::Waiting {
                        buffer, reading, ..
                    } = this
                    {
                        // Safety: `buffer` is pinned with the enum (above), nothing else
                        // touches it while `reading` lives, and `reading` is dropped before
                        // `buffer` is used again or dropped (below).
                        *reading = Some(fill(unsafe { &mut *buffer.get() }));
                    }
                }
                Checksum::Waiting {
                    reading: Some(read),
                    ..
                } => {
                    // `Fill` is `Unpin`, so `Pin::new` pins it without `unsafe`.
                    let Poll::Ready(filled) = Pin::new(read).poll(cx) else {
                        return Poll::Pending;
                    };
                    let Checksum::Waiting {
                        buffer, reading, ..
                    } = this
                    else {
                        unreachable!("matched Waiting above");
                    };
                    // The `.await` is over: the borrow ends before `buffer` is read.
                    *reading = None;
                    let buffer = buffer.get_mut();
                    let sum = buffer[..filled].iter().map(|&byte| u32::from(byte)).sum();
                    *this = Checksum::Done;
                    return Poll::Ready(sum);
                }
                Checksum::Waiting { reading: None, .. } => {
                    unreachable!("`reading` is made in the same poll as `Waiting`")
                }
                Checksum::Done => panic!("`Checksum` polled after it returned"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use fdio::Trace;

    use super::*;
    use crate::executor::block_on;

    /// The enum written by hand, run on our runtime, gives what the `async fn` gives.
    #[test]
    fn the_desugared_enum_computes_what_the_async_fn_does() {
        let expected: u32 = DATA.iter().map(|&byte| u32::from(byte)).sum();
        let (by_compiler, by_hand) = block_on(Trace::new(false), async {
            (checksum().await, Checksum::Start.await)
        })
        .expect("the runtime itself failed");
        assert_eq!((by_compiler, by_hand), (expected, expected));
    }

    /// Between its two polls, `Checksum` holds a pointer into itself: the `Fill` it waits on
    /// points at the `buffer` beside it. This is what a move would break. Looking at it
    /// through a `&Checksum` (as `Pin` lets any safe code) and then polling it again, which
    /// writes through that pointer, is sound: under Miri, without the `UnsafeCell`, the look
    /// alone is undefined behaviour for Stacked Borrows, and the write after it for Tree
    /// Borrows too.
    #[test]
    fn the_waiting_state_points_into_itself() {
        let mut future = Box::pin(Checksum::Start);
        let mut cx = Context::from_waker(std::task::Waker::noop());
        assert!(future.as_mut().poll(&mut cx).is_pending());
        let Checksum::Waiting {
            buffer,
            reading: Some(read),
            ..
        } = &*future
        else {
            panic!("one poll should leave it at the .await");
        };
        assert_eq!(read.buffer.as_ptr(), buffer.get().cast::<u8>().cast_const());
        let expected: u32 = DATA.iter().map(|&byte| u32::from(byte)).sum();
        assert_eq!(future.as_mut().poll(&mut cx), Poll::Ready(expected));
    }
}
