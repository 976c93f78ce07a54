//! Small tools for running futures together: [`race`] (tokio's `select!` for two),
//! [`join_all`] (asyncio's `gather`) and [`yield_now`] (`await asyncio.sleep(0)`). They need
//! nothing from the runtime but the waker they are polled with.

use std::future::{Future, poll_fn};
use std::pin::Pin;
use std::task::{Context, Poll};

/// One of two outputs: which future of a [`race`] finished first.
#[derive(Debug, PartialEq, Eq)]
pub enum Either<A, B> {
    Left(A),
    Right(B),
}

/// Polls both futures and returns the output of the first to finish; the other is dropped,
/// which cancels it: tokio's `select!` for two. (asyncio's `wait(…, FIRST_COMPLETED)` is not
/// the same: the loser keeps running until you cancel it.) `race` is biased: it polls `a`
/// first, so when both are ready `a` wins (tokio's `select!` starts at a random branch unless
/// told `biased;`).
pub fn race<A: Future, B: Future>(a: A, b: B) -> Race<A, B> {
    Race { a, b }
}

/// The future of [`race`]: a plain struct rather than an `async fn`. An `async fn` keeps
/// what it is given twice — the argument, and the local its body moves it into (here, to pin
/// it) — and the echo server races each connection's whole echo against the give-up: as an
/// `async fn`, `race` made every connection's task 856 bytes where 440 do.
#[must_use = "futures do nothing unless you `.await` or poll them"]
pub struct Race<A, B> {
    a: A,
    b: B,
}

impl<A: Future, B: Future> Future for Race<A, B> {
    type Output = Either<A::Output, B::Output>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        // Safety: `a` and `b` are pinned with the `Race` that holds them: nothing moves them
        // out of it (no method takes them, and `Race` has no `Drop`), and the compiler makes
        // `Race` `Unpin` only when both are.
        let (a, b) = unsafe {
            let this = self.get_unchecked_mut();
            (
                Pin::new_unchecked(&mut this.a),
                Pin::new_unchecked(&mut this.b),
            )
        };
        if let Poll::Ready(output) = a.poll(cx) {
            return Poll::Ready(Either::Left(output));
        }
        if let Poll::Ready(output) = b.poll(cx) {
            return Poll::Ready(Either::Right(output));
        }
        Poll::Pending
    }
}

/// Runs every future concurrently and returns all their outputs, in the order given (not
/// the order they finished): asyncio's `gather`, tokio's `join_all`.
///
/// The futures share the task that awaits `join_all`: when any of them wakes it, every one
/// not yet finished is polled again. That is one poll too many for most of them, but a
/// spurious poll is harmless (a future that cannot go on returns `Pending` again); a
/// production `join_all` gives each future a waker of its own to poll only the one woken.
pub async fn join_all<F: Future>(futures: impl IntoIterator<Item = F>) -> Vec<F::Output> {
    // Boxed, so each is pinned where it is however the vector moves.
    let mut running: Vec<Pin<Box<F>>> = futures.into_iter().map(Box::pin).collect();
    let mut outputs: Vec<Option<F::Output>> = running.iter().map(|_| None).collect();
    poll_fn(|cx| {
        let mut all_done = true;
        for (future, output) in running.iter_mut().zip(&mut outputs) {
            if output.is_some() {
                continue; // finished: a future must not be polled after `Ready`
            }
            match future.as_mut().poll(cx) {
                Poll::Ready(value) => *output = Some(value),
                Poll::Pending => all_done = false,
            }
        }
        if all_done {
            Poll::Ready(outputs.iter_mut().filter_map(Option::take).collect())
        } else {
            Poll::Pending
        }
    })
    .await
}

/// Lets other ready tasks run before continuing: `await asyncio.sleep(0)`.
pub async fn yield_now() {
    let mut yielded = false;
    poll_fn(|cx| {
        if yielded {
            return Poll::Ready(());
        }
        yielded = true;
        cx.waker().wake_by_ref();
        Poll::Pending
    })
    .await
}
