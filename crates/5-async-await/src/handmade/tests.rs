//! The waker contract, rule by rule: each test runs the rule on [`Timer`] and on a future
//! written to break it, and shows that the broken one misses its wake.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::thread;

use fdio::Trace;

use super::*;
use crate::executor::block_on;

/// A waker that counts its wakes.
#[derive(Default)]
struct Counter(AtomicUsize);

impl Wake for Counter {
    fn wake(self: Arc<Self>) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

impl Counter {
    fn wakes(&self) -> usize {
        self.0.load(Ordering::SeqCst)
    }
}

fn counting_waker() -> (Arc<Counter>, Waker) {
    let counter = Arc::new(Counter::default());
    (Arc::clone(&counter), Waker::from(counter))
}

fn poll_with<F: Future + Unpin>(future: &mut F, waker: &Waker) -> Poll<F::Output> {
    Pin::new(future).poll(&mut Context::from_waker(waker))
}

/// Broken (rule 1): returns `Pending` and keeps no waker.
struct KeepsNoWaker(Arc<Mutex<Slot>>);

impl Future for KeepsNoWaker {
    type Output = ();
    fn poll(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<()> {
        if lock(&self.0).rung {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }
}

/// Broken (rule 2): keeps the first waker it was given, ignores the later ones.
struct KeepsFirstWaker(Arc<Mutex<Slot>>);

impl Future for KeepsFirstWaker {
    type Output = ();
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let mut slot = lock(&self.0);
        if slot.rung {
            return Poll::Ready(());
        }
        slot.waker.get_or_insert_with(|| cx.waker().clone());
        Poll::Pending
    }
}

/// Broken (rule 4): takes a second poll as news that the bell rang.
struct TrustsEveryPoll {
    slot: Arc<Mutex<Slot>>,
    polled: bool,
}

impl Future for TrustsEveryPoll {
    type Output = ();
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.polled {
            return Poll::Ready(());
        }
        self.polled = true;
        lock(&self.slot).waker = Some(cx.waker().clone());
        Poll::Pending
    }
}

/// Polls `future` once with a counting waker, rings the bell, and returns how many wakes
/// came.
fn wakes_after_one_poll<F: Future + Unpin>(make: impl FnOnce(Arc<Mutex<Slot>>) -> F) -> usize {
    let (timer, bell) = timer();
    let mut future = make(timer.slot);
    let (counter, waker) = counting_waker();
    assert!(poll_with(&mut future, &waker).is_pending());
    bell.ring();
    counter.wakes()
}

/// Rule 1: a `Timer` that returned `Pending` left its waker, and ringing the bell wakes it
/// once; a future that returns `Pending` and keeps no waker is never woken.
#[test]
fn pending_leaves_a_waker_that_the_bell_wakes() {
    assert_eq!(wakes_after_one_poll(|slot| Timer { slot }), 1);
    assert_eq!(wakes_after_one_poll(KeepsNoWaker), 0, "the broken one");
}

/// Polls `future` with one waker, then with another, rings, and returns the wakes of each.
fn wakes_after_two_wakers<F: Future + Unpin>(
    make: impl FnOnce(Arc<Mutex<Slot>>) -> F,
) -> (usize, usize) {
    let (timer, bell) = timer();
    let mut future = make(timer.slot);
    let (first, first_waker) = counting_waker();
    let (second, second_waker) = counting_waker();
    assert!(poll_with(&mut future, &first_waker).is_pending());
    assert!(poll_with(&mut future, &second_waker).is_pending());
    bell.ring();
    (first.wakes(), second.wakes())
}

/// Rule 2: polled with one waker and then another, a `Timer` wakes the latest; a future
/// that keeps only the first wakes a task that no longer polls it.
#[test]
fn the_latest_waker_is_the_one_woken() {
    assert_eq!(wakes_after_two_wakers(|slot| Timer { slot }), (0, 1));
    assert_eq!(
        wakes_after_two_wakers(KeepsFirstWaker),
        (1, 0),
        "the broken one"
    );
}

/// Runs `work` on a thread of its own and says whether it finished within 5 s. A thread
/// that hangs is left behind: the test fails, and the process ends with the test run.
fn finishes_within_5s(work: impl FnOnce() + Send + 'static) -> bool {
    let (done, finished) = mpsc::channel();
    thread::spawn(move || {
        work();
        let _ = done.send(());
    });
    finished.recv_timeout(Duration::from_secs(5)).is_ok()
}

/// Rule 3: a bell rung from another thread wakes a task of our runtime even while the loop
/// sleeps in `epoll_wait` with no timer and no I/O to wake it: the waker pokes epoll. If it
/// did not, the loop would sleep forever and the test would time out.
#[test]
fn a_wake_from_another_thread_reaches_a_sleeping_runtime() {
    fn is_send<T: Send>(_: &T) {}
    let finished = finishes_within_5s(|| {
        let (timer, bell) = timer();
        is_send(&bell);
        let ringer = thread::spawn(move || {
            thread::sleep(Duration::from_millis(50));
            bell.ring();
        });
        block_on(Trace::new(false), timer).expect("the runtime itself failed");
        ringer.join().unwrap();
    });
    assert!(
        finished,
        "the runtime never saw the wake from the other thread"
    );
}

/// Rule 4: polls that come with no ring (spurious, with the same waker or a new one) leave
/// a `Timer` `Pending`, and it is woken once when the bell rings; a future that takes a poll
/// for news says `Ready` though nothing rang.
#[test]
fn a_spurious_poll_is_harmless() {
    let (mut timer, bell) = timer();
    let (_, waker) = counting_waker();
    let (latest, latest_waker) = counting_waker();
    for waker in [&waker, &waker, &latest_waker] {
        assert!(poll_with(&mut timer, waker).is_pending());
    }
    bell.ring();
    assert_eq!(latest.wakes(), 1);
    assert!(poll_with(&mut timer, &latest_waker).is_ready());

    let (timer, _bell) = super::timer();
    let mut broken = TrustsEveryPoll {
        slot: timer.slot,
        polled: false,
    };
    assert!(poll_with(&mut broken, &waker).is_pending());
    assert!(
        poll_with(&mut broken, &waker).is_ready(),
        "the broken one says Ready with the bell silent"
    );
}

/// Which comes first in a poll without a lock: the check, or storing the waker.
#[derive(Clone, Copy)]
enum Order {
    CheckThenStore,
    StoreThenCheck,
}

/// A timer without a lock: a flag and a waker slot, and a hook that runs between the two
/// steps of its poll — where another thread's ring can land.
struct Unlocked {
    rung: Arc<AtomicBool>,
    waker: Arc<Mutex<Option<Waker>>>,
    order: Order,
    between: Option<Box<dyn FnOnce()>>,
}

impl Future for Unlocked {
    type Output = ();
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let between = self.between.take().unwrap_or_else(|| Box::new(|| {}));
        let rung = match self.order {
            Order::CheckThenStore => {
                let rung = self.rung.load(Ordering::SeqCst);
                between();
                *self.waker.lock().unwrap() = Some(cx.waker().clone());
                rung
            }
            Order::StoreThenCheck => {
                *self.waker.lock().unwrap() = Some(cx.waker().clone());
                between();
                self.rung.load(Ordering::SeqCst)
            }
        };
        if rung { Poll::Ready(()) } else { Poll::Pending }
    }
}

/// Rings an `Unlocked` timer between the two steps of its first poll, and says whether the
/// ring was lost: the poll said `Pending` and nobody woke the waker.
fn ring_between_is_lost(order: Order) -> bool {
    let rung = Arc::new(AtomicBool::new(false));
    let waker_slot = Arc::new(Mutex::new(None::<Waker>));
    let ring = {
        let (rung, waker_slot) = (Arc::clone(&rung), Arc::clone(&waker_slot));
        move || {
            rung.store(true, Ordering::SeqCst);
            if let Some(waker) = waker_slot.lock().unwrap().take() {
                waker.wake();
            }
        }
    };
    let mut future = Unlocked {
        rung,
        waker: waker_slot,
        order,
        between: Some(Box::new(ring)),
    };
    let (counter, waker) = counting_waker();
    poll_with(&mut future, &waker).is_pending() && counter.wakes() == 0
}

/// Rule 5: a ring that lands between the check and the storing of the waker is lost when
/// the check comes first (the old echo's hang), and is seen when the waker is stored first.
#[test]
fn interest_is_registered_before_the_final_check() {
    assert!(!ring_between_is_lost(Order::StoreThenCheck));
    assert!(
        ring_between_is_lost(Order::CheckThenStore),
        "the broken order should lose the ring"
    );
}

/// The hand-made loop prints the life of a future: polled, `Pending`, woken from the timer's
/// thread, polled again, `Ready`.
#[test]
fn block_on_by_hand_prints_each_step() {
    let mut out = Vec::new();
    let timer = Timer::after(Duration::from_millis(10)).unwrap();
    block_on_by_hand(&mut out, timer).unwrap();
    let out = String::from_utf8(out).unwrap();
    let steps: Vec<&str> = out.lines().map(str::trim).collect();
    assert_eq!(
        steps,
        [
            "poll #1",
            "→ Pending: the loop sleeps until the waker is woken",
            "woken, from the thread \"timer\"",
            "poll #2",
            "→ Ready(())",
        ]
    );
}
