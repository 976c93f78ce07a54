//! Tests of the runtime as a whole, with logical assertions: orders, counts and drops —
//! never timings.

use std::cell::{Cell, RefCell};
use std::io::{PipeWriter, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::task::{Poll, Waker};
use std::thread;
use std::time::{Duration, Instant};

use fdio::Trace;

use crate::blocking::spawn_blocking;
use crate::cancel::{BufferedLines, ForgetfulLines, ReadLine};
use crate::combinators::{Either, join_all, race, yield_now};
use crate::executor::{block_on, spawn};
use crate::io::AsyncReader;
use crate::net::TcpStream;
use crate::runtime::try_with_runtime;
use crate::sync::{Event, Mutex, Semaphore};
use crate::task::JoinError;
use crate::time::{sleep, sleep_until, timeout};

fn run<T>(future: impl Future<Output = T>) -> T {
    block_on(Trace::new(false), future).expect("the runtime itself failed")
}

/// Fails the test run if the test it guards has not finished within 10 s: for the tests
/// whose failure mode is a loop that never wakes up again (a hang, not a wrong value).
/// Dropped, it stops its thread and waits for it, so no thread outlives the test (Miri
/// reports one that does).
struct Watchdog {
    /// Dropping it tells the thread the test is over.
    done: Option<mpsc::Sender<()>>,
    thread: Option<thread::JoinHandle<()>>,
}

impl Watchdog {
    fn arm(test: &'static str) -> Watchdog {
        let (done, finished) = mpsc::channel::<()>();
        let thread = thread::spawn(move || {
            if let Err(RecvTimeoutError::Timeout) = finished.recv_timeout(Duration::from_secs(10)) {
                eprintln!("{test}: the loop never woke up (10 s)");
                std::process::exit(101);
            }
        });
        Watchdog {
            done: Some(done),
            thread: Some(thread),
        }
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        drop(self.done.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Sets a flag when dropped: proves a future was dropped (cancelled).
struct DropFlag(Rc<Cell<bool>>);

impl Drop for DropFlag {
    fn drop(&mut self) {
        self.0.set(true);
    }
}

/// Timers spawned in shuffled order fire in the order of their deadlines. (The deadlines
/// are counted from one instant: counted from each task's first poll, a machine busy enough
/// to stall the loop 20 ms between two polls would reorder them itself.)
#[test]
fn timers_fire_in_deadline_order() {
    let fired = run(async {
        let fired = Rc::new(RefCell::new(Vec::new()));
        let start = Instant::now();
        let handles: Vec<_> = [30, 10, 50, 20, 40]
            .into_iter()
            .map(|ms| {
                let fired = Rc::clone(&fired);
                spawn(async move {
                    sleep_until(start + Duration::from_millis(ms)).await;
                    fired.borrow_mut().push(ms);
                })
            })
            .collect();
        for handle in handles {
            handle.await.unwrap();
        }
        Rc::try_unwrap(fired).unwrap().into_inner()
    });
    assert_eq!(fired, [10, 20, 30, 40, 50]);
}

/// `abort` drops the task's future at its `.await`, and awaiting the handle says Cancelled.
#[test]
fn abort_drops_the_future() {
    let dropped = Rc::new(Cell::new(false));
    let flag = Rc::clone(&dropped);
    let result = run(async move {
        let task = spawn(async move {
            let _flag = DropFlag(flag);
            sleep(Duration::from_secs(3600)).await;
        });
        yield_now().await;
        task.abort();
        assert!(task.is_finished());
        task.await
    });
    assert_eq!(result, Err(JoinError::Cancelled));
    assert!(dropped.get(), "the aborted task's future was not dropped");
}

/// A task that panics yields `JoinError::Panicked` with its message; the other tasks and
/// the runtime keep running.
#[test]
fn a_panicking_task_does_not_take_the_runtime_down() {
    let (panicked, survivor) = run(async {
        let survivor = spawn(async {
            sleep(Duration::from_millis(20)).await;
            "still here"
        });
        let panicked = spawn(async {
            yield_now().await;
            panic!("boom");
        });
        (panicked.await, survivor.await)
    });
    assert_eq!(
        panicked,
        Err::<(), _>(JoinError::Panicked("boom".to_string()))
    );
    assert_eq!(survivor, Ok("still here"));
}

/// 100 tasks contend for one `Mutex`, each yielding inside it: all finish, none ever
/// overlaps another inside the lock, and no increment is lost.
#[test]
fn mutex_excludes_and_loses_no_update() {
    let (total, overlapped) = run(async {
        let counter = Rc::new(Mutex::new(0));
        let inside = Rc::new(Cell::new(false));
        let overlapped = Rc::new(Cell::new(false));
        let tasks: Vec<_> = (0..100)
            .map(|_| {
                let (counter, inside, overlapped) = (
                    Rc::clone(&counter),
                    Rc::clone(&inside),
                    Rc::clone(&overlapped),
                );
                spawn(async move {
                    let mut value = counter.lock().await;
                    overlapped.set(overlapped.get() || inside.replace(true));
                    let seen = *value;
                    yield_now().await;
                    *value = seen + 1;
                    inside.set(false);
                })
            })
            .collect();
        for task in tasks {
            task.await.unwrap();
        }
        let total = *counter.lock().await;
        (total, overlapped.get())
    });
    assert_eq!(total, 100);
    assert!(!overlapped, "two tasks held the lock at once");
}

/// A semaphore of 3 never has more than 3 holders, and all 20 tasks get through.
#[test]
fn semaphore_never_admits_more_than_its_permits() {
    let (most, done) = run(async {
        let semaphore = Rc::new(Semaphore::new(3));
        let (holders, most, done) = (
            Rc::new(Cell::new(0)),
            Rc::new(Cell::new(0)),
            Rc::new(Cell::new(0)),
        );
        let tasks: Vec<_> = (0..20)
            .map(|n| {
                let (semaphore, holders, most, done) = (
                    Rc::clone(&semaphore),
                    Rc::clone(&holders),
                    Rc::clone(&most),
                    Rc::clone(&done),
                );
                spawn(async move {
                    let _permit = semaphore.acquire().await;
                    holders.set(holders.get() + 1);
                    most.set(most.get().max(holders.get()));
                    for _ in 0..n % 4 {
                        yield_now().await;
                    }
                    holders.set(holders.get() - 1);
                    done.set(done.get() + 1);
                })
            })
            .collect();
        for task in tasks {
            task.await.unwrap();
        }
        assert_eq!(semaphore.available(), 3, "a permit was lost");
        (most.get(), done.get())
    });
    assert_eq!(most, 3);
    assert_eq!(done, 20);
}

/// A waiter that gives up (its acquire is dropped) does not keep the permit it was handed.
#[test]
fn a_cancelled_acquire_passes_its_permit_on() {
    let available = run(async {
        let semaphore = Rc::new(Semaphore::new(1));
        let held = semaphore.acquire().await;
        let gives_up = timeout(Duration::from_millis(20), semaphore.acquire()).await;
        assert!(gives_up.is_err());
        drop(held);
        let again = timeout(Duration::from_secs(5), semaphore.acquire()).await;
        assert!(again.is_ok(), "the permit was lost");
        drop(again);
        semaphore.available()
    });
    assert_eq!(available, 1);
}

/// The result of `spawn_blocking` wakes the loop, which sleeps in epoll with no timer.
#[test]
fn spawn_blocking_result_wakes_the_loop() {
    let _watchdog = Watchdog::arm("spawn_blocking_result_wakes_the_loop");
    let result = run(async {
        spawn_blocking(|| {
            thread::sleep(Duration::from_millis(50));
            thread::current().name().map(str::to_string)
        })
        .await
    });
    let name = result.unwrap().unwrap();
    assert!(name.starts_with("blocking-"), "ran on {name}");
}

/// A waker fired from another thread wakes the loop out of `epoll_wait`.
#[test]
fn a_waker_from_another_thread_wakes_the_loop() {
    let _watchdog = Watchdog::arm("a_waker_from_another_thread_wakes_the_loop");
    let woken = run(async {
        let fired = Arc::new(AtomicBool::new(false));
        let mut sent: Option<thread::JoinHandle<()>> = None;
        std::future::poll_fn(|cx| {
            if fired.load(Ordering::SeqCst) {
                return Poll::Ready(());
            }
            if sent.is_none() {
                let (fired, waker): (_, Waker) = (Arc::clone(&fired), cx.waker().clone());
                sent = Some(thread::spawn(move || {
                    thread::sleep(Duration::from_millis(50));
                    fired.store(true, Ordering::SeqCst);
                    waker.wake();
                }));
            }
            Poll::Pending
        })
        .await;
        sent.map(|thread| thread.join().is_ok())
    });
    assert_eq!(woken, Some(true));
}

/// A `timeout` that expires drops (cancels) the future it was given.
#[test]
fn an_expired_timeout_cancels_its_future() {
    let dropped = Rc::new(Cell::new(false));
    let flag = Rc::clone(&dropped);
    let result = run(timeout(Duration::from_millis(20), async move {
        let _flag = DropFlag(flag);
        sleep(Duration::from_secs(3600)).await;
    }));
    assert!(result.is_err());
    assert!(dropped.get(), "the timed-out future was not dropped");
}

/// An `Event` wait that is dropped — it lost a `race` — leaves no waker behind, so waiting
/// costs the same however often connections did it; `set` still wakes a live waiter.
#[test]
fn abandoned_event_waits_leave_nothing_behind() {
    let (left_behind, woken) = run(async {
        let event = Rc::new(Event::new());
        for _ in 0..1000 {
            let lost = race(yield_now(), event.wait()).await;
            assert_eq!(lost, Either::Left(()));
        }
        let left_behind = event.waiting();
        let setter = Rc::clone(&event);
        spawn(async move { setter.set() });
        event.wait().await;
        (left_behind, event.is_set())
    });
    assert_eq!(left_behind, 0, "dropped waits kept their wakers");
    assert!(woken);
}

/// The peer's last bytes and its EOF can arrive under one epoll edge, taken while nobody
/// waits to read. The read of those bytes comes back short, but the event said the peer
/// closed: the bit stays set, and the next read finds the EOF instead of waiting for an edge
/// that never comes.
#[test]
fn eof_arriving_with_the_last_bytes_is_not_lost() {
    let _watchdog = Watchdog::arm("eof_arriving_with_the_last_bytes_is_not_lost");
    let (first, after) = run(async {
        let (mut stream, mut peer) = connected().await;
        peer.write_all(b"bye").unwrap();
        peer.shutdown(std::net::Shutdown::Write).unwrap();
        // Let the reactor take the one edge for both while nobody waits to read.
        sleep(Duration::from_millis(50)).await;
        let first = stream.read_chunk().await.unwrap().to_vec();
        (first, stream.read_chunk().await.unwrap().to_vec())
    });
    assert_eq!(first, b"bye");
    assert_eq!(after, b"", "the EOF was not read");
}

/// Bytes that arrive while the task is busy elsewhere (not reading) are not forgotten: their
/// edge sets the readiness bit, and the next read finds them — even though the last read
/// said `WouldBlock` and cleared the bit. This is the edge the echo used to lose under a
/// bulk stream.
#[test]
fn an_edge_with_nobody_waiting_is_remembered() {
    let _watchdog = Watchdog::arm("an_edge_with_nobody_waiting_is_remembered");
    let (first, second) = run(async {
        let (mut stream, mut peer) = connected().await;
        peer.write_all(b"one").unwrap();
        let first = stream.read_chunk().await.unwrap().to_vec();
        // Nothing more: a read says `WouldBlock` (the bit is cleared) and gives up.
        assert!(
            timeout(Duration::from_millis(20), stream.read_chunk())
                .await
                .is_err()
        );
        peer.write_all(b"two").unwrap();
        // Busy elsewhere: the loop takes the edge for "two" while nobody waits to read.
        sleep(Duration::from_millis(50)).await;
        let second = stream.read_chunk().await.unwrap().to_vec();
        (first, second)
    });
    assert_eq!(
        (first.as_slice(), second.as_slice()),
        (&b"one"[..], &b"two"[..])
    );
}

/// Polls `future` once, from inside a task: what it says before the loop turns again.
async fn poll_once<F: Future>(future: F) -> Poll<F::Output> {
    let mut future = std::pin::pin!(future);
    std::future::poll_fn(|cx| Poll::Ready(future.as_mut().poll(cx))).await
}

/// A connection: our `TcpStream`, connected on this runtime, and its peer, a plain blocking
/// std socket the test writes to.
async fn connected() -> (TcpStream, std::net::TcpStream) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let stream = TcpStream::connect(listener.local_addr().unwrap())
        .await
        .unwrap();
    let (peer, _) = listener.accept().unwrap();
    (stream, peer)
}

/// Waits (blocking, bounded) until everything `peer` sent sits in our socket: our kernel has
/// acknowledged it.
fn wait_acknowledged(peer: &std::net::TcpStream) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !fdio::all_acknowledged(peer).unwrap() {
        assert!(Instant::now() < deadline, "the bytes never arrived");
        thread::sleep(Duration::from_millis(1));
    }
}

/// A read that comes back short (it took all there was) clears the readiness bit: the next
/// read waits for an event without asking the kernel. Proven by bytes that
/// arrive before the loop turns again: a read that asked would find them; this one says
/// `Pending` at once, and finds them after the loop took their event.
#[test]
fn a_read_that_empties_the_socket_skips_the_next_read() {
    let _watchdog = Watchdog::arm("a_read_that_empties_the_socket_skips_the_next_read");
    let (first, skipped, second) = run(async {
        let (mut stream, mut peer) = connected().await;
        peer.write_all(b"one").unwrap();
        wait_acknowledged(&peer);
        let first = stream.read_chunk().await.unwrap().to_vec();
        // No `.await` from here to the poll: the loop takes no event meanwhile.
        peer.write_all(b"two").unwrap();
        wait_acknowledged(&peer);
        let (skipped, second) = match poll_once(stream.read_chunk()).await {
            Poll::Pending => (true, stream.read_chunk().await.unwrap().to_vec()),
            Poll::Ready(chunk) => (false, chunk.unwrap().to_vec()),
        };
        (first, skipped, second)
    });
    assert_eq!(first, b"one");
    assert!(
        skipped,
        "the read after an emptying read asked the kernel again"
    );
    assert_eq!(second, b"two");
}

/// Leaves a read of `stream` waiting on its empty socket: it says `WouldBlock`, clears the
/// readiness bit, and the next event will wake the task.
async fn park_a_read(stream: &mut TcpStream) {
    assert!(
        poll_once(stream.read_chunk()).await.is_pending(),
        "the socket is empty"
    );
}

/// `abc`, an urgent byte and `def` arrive while a read waits, and one event reports them:
/// a TCP read stops at an urgent byte's mark once it has copied anything, so the read it
/// wakes comes back short with `def` still queued, and no edge will come for it. The event
/// said an urgent byte waits (`EPOLLPRI`), so that short read clears nothing, and the next
/// read, polled before the loop turns, reads `def`. (With a short read taken for "empty",
/// `def` waited for the client's next bytes.)
#[test]
fn a_read_stopped_at_an_urgent_mark_reads_again() {
    use nix::sys::socket::{MsgFlags, send};
    let _watchdog = Watchdog::arm("a_read_stopped_at_an_urgent_mark_reads_again");
    let (first, second) = run(async {
        let (mut stream, mut peer) = connected().await;
        park_a_read(&mut stream).await;
        // No `.await` until all of it is in our socket: the loop sees it in one event.
        peer.write_all(b"abc").unwrap();
        send(peer.as_raw_fd(), b"!", MsgFlags::MSG_OOB).unwrap();
        peer.write_all(b"def").unwrap();
        wait_acknowledged(&peer);
        let first = stream.read_chunk().await.unwrap().to_vec();
        let second = match poll_once(stream.read_chunk()).await {
            Poll::Ready(chunk) => chunk.unwrap().to_vec(),
            Poll::Pending => b"(waited for an event that never comes)".to_vec(),
        };
        (first, second)
    });
    assert_eq!(first, b"abc", "the read stops at the urgent mark");
    assert_eq!(second, b"def");
}

/// `abc`, an urgent byte and `def`, in the socket before the loop has taken their event: the
/// first read's short `abc` is taken for "empty" (nothing has said urgent yet), and the next
/// read waits. What saves it is that event, still to come: it says urgent, and wakes the
/// read, which gets `def`.
#[test]
fn a_short_read_before_the_event_waits_for_it() {
    use nix::sys::socket::{MsgFlags, send};
    let _watchdog = Watchdog::arm("a_short_read_before_the_event_waits_for_it");
    let (first, second) = run(async {
        let (mut stream, mut peer) = connected().await;
        peer.write_all(b"abc").unwrap();
        send(peer.as_raw_fd(), b"!", MsgFlags::MSG_OOB).unwrap();
        peer.write_all(b"def").unwrap();
        wait_acknowledged(&peer);
        let first = stream.read_chunk().await.unwrap().to_vec();
        let second = stream.read_chunk().await.unwrap().to_vec();
        (first, second)
    });
    assert_eq!(first, b"abc", "the read stops at the urgent mark");
    assert_eq!(second, b"def");
}

/// The last bytes and the EOF arrive while a read waits, and one event reports them: the
/// read it wakes takes the bytes and the FIN with them, and comes back short; no edge will
/// come for the EOF. The event said the peer closed (`EPOLLRDHUP`), so that short read
/// clears nothing, and the next read, polled before the loop turns, returns the EOF.
#[test]
fn the_eof_behind_the_last_bytes_is_read_without_a_second_event() {
    let _watchdog = Watchdog::arm("the_eof_behind_the_last_bytes_is_read_without_a_second_event");
    let (first, eof) = run(async {
        let (mut stream, mut peer) = connected().await;
        park_a_read(&mut stream).await;
        peer.write_all(b"last").unwrap();
        peer.shutdown(std::net::Shutdown::Write).unwrap();
        wait_acknowledged(&peer);
        let first = stream.read_chunk().await.unwrap().to_vec();
        let eof = match poll_once(stream.read_chunk()).await {
            Poll::Ready(chunk) => chunk.unwrap().is_empty(),
            Poll::Pending => false,
        };
        (first, eof)
    });
    assert_eq!(first, b"last");
    assert!(eof, "the EOF was left waiting for an event");
}

/// A main future that panics unwinds out of `block_on` cleanly: the task it left pending is
/// dropped, the thread-local no longer names the dead runtime, and the same thread can run
/// another `block_on` (before, the thread aborted on exit: "thread local panicked on drop").
#[test]
fn a_panicking_main_future_leaves_the_thread_usable() {
    let dropped = Rc::new(Cell::new(false));
    let flag = Rc::clone(&dropped);
    let panicked = catch_unwind(AssertUnwindSafe(|| {
        run(async move {
            spawn(async move {
                let _flag = DropFlag(flag);
                sleep(Duration::from_secs(3600)).await;
            });
            yield_now().await; // the task starts sleeping: it holds a timer
            panic!("the main future gives up");
        })
    }));
    assert!(panicked.is_err());
    assert!(dropped.get(), "the leftover task was not dropped");
    assert!(
        try_with_runtime(|_| ()).is_none(),
        "the dead runtime is still the current one"
    );
    assert_eq!(run(async { spawn(async { 6 * 7 }).await }), Ok(42));
}

/// Panics when dropped: a destructor that fails while `block_on` cleans up.
struct PanicOnDrop;

impl Drop for PanicOnDrop {
    fn drop(&mut self) {
        panic!("a destructor gives up");
    }
}

/// A leftover task whose destructor panics, when the runtime ends, keeps neither the other
/// leftover tasks from being dropped nor `block_on` from returning, and leaves the thread
/// usable: the panic is that task's (its handle would say `Panicked`), caught as its drop is.
/// (It unwound out of `block_on` before, which the guards in `runtime.rs` cleaned up after.)
#[test]
fn a_panicking_destructor_of_a_leftover_task_leaves_the_thread_usable() {
    let dropped = Rc::new(Cell::new(false));
    let flag = Rc::clone(&dropped);
    let ended = catch_unwind(AssertUnwindSafe(|| {
        run(async move {
            spawn(async {
                let _bomb = PanicOnDrop;
                std::future::pending::<()>().await
            });
            spawn(async move {
                let _flag = DropFlag(flag);
                std::future::pending::<()>().await
            });
            yield_now().await; // both start, and hold their locals
        })
    }));
    assert!(
        ended.is_ok(),
        "the leftover task's panic unwound out of block_on"
    );
    assert!(dropped.get(), "the other leftover task was not dropped");
    assert!(
        try_with_runtime(|_| ()).is_none(),
        "the dead runtime is still the current one"
    );
    assert_eq!(run(async { spawn(async { 6 * 7 }).await }), Ok(42));
}

/// A `JoinHandle` kept from one `block_on` and aborted inside another on the same thread
/// leaves that runtime's tasks alone, though they reuse its task id.
#[test]
fn a_join_handle_cannot_abort_a_task_of_another_runtime() {
    let _watchdog = Watchdog::arm("a_join_handle_cannot_abort_a_task_of_another_runtime");
    #[allow(clippy::async_yields_async)] // on purpose: the handle outlives its runtime
    let stale = run(async {
        let task = spawn(std::future::pending::<()>());
        yield_now().await;
        task
    });
    let unrelated = run(async move {
        let unrelated = spawn(async {
            sleep(Duration::from_millis(20)).await;
            "still here"
        });
        yield_now().await; // it has task id 0 in this runtime, as `stale` had in its own
        stale.abort();
        assert!(stale.is_finished());
        unrelated.await
    });
    assert_eq!(unrelated, Ok("still here"));
}

/// Aborted from inside a nested `block_on`, a task of the outer runtime is not left running:
/// its future is dropped at its next turn on its own runtime.
#[test]
fn an_abort_from_a_nested_runtime_drops_the_task_at_its_next_turn() {
    let dropped = Rc::new(Cell::new(false));
    let flag = Rc::clone(&dropped);
    let (result, dropped_in_time) = run(async move {
        let task = spawn(async move {
            let _flag = DropFlag(flag);
            loop {
                yield_now().await;
            }
        });
        yield_now().await;
        run(async { task.abort() });
        yield_now().await; // the task's next turn
        (task.await, dropped.get())
    });
    assert_eq!(result, Err(JoinError::Cancelled));
    assert!(dropped_in_time, "the aborted task was still running");
}

/// A task whose reads always find bytes still lets the others run: after `BUDGET` reads its
/// next one returns `Pending` and the other task gets its turn long before the 64 KiB the
/// busy task reads one byte at a time are all read.
#[test]
fn a_task_that_always_has_work_lets_the_others_run() {
    let _watchdog = Watchdog::arm("a_task_that_always_has_work_lets_the_others_run");
    const SENT: usize = 64 * 1024;
    let read_when_the_other_ran = run(async {
        let (mut stream, mut peer) = connected().await;
        peer.write_all(&[7; SENT]).unwrap();
        sleep(Duration::from_millis(50)).await; // every byte is in our receive buffer
        let read = Rc::new(Cell::new(0));
        let seen = Rc::clone(&read);
        let busy = spawn(async move {
            let mut byte = [0];
            while seen.get() < SENT {
                let n = stream.read(&mut byte).await.unwrap();
                seen.set(seen.get() + n);
            }
        });
        let counted = Rc::clone(&read);
        let other = spawn(async move { counted.get() });
        let read_when_the_other_ran = other.await.unwrap();
        busy.await.unwrap();
        read_when_the_other_ran
    });
    assert!(
        read_when_the_other_ran < SENT,
        "the other task ran only after all {read_when_the_other_ran} reads"
    );
}

/// An I/O object that outlives its runtime and is dropped inside another one does not
/// reach into the other's reactor: both had token 0, and the stray must not free the slot
/// of the new runtime's stream, which goes on reading.
#[test]
fn an_io_object_from_another_runtime_leaves_this_one_alone() {
    let _watchdog = Watchdog::arm("an_io_object_from_another_runtime_leaves_this_one_alone");
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let stray = run(async { TcpStream::connect(addr).await.unwrap() }); // token 0 there
    let echoed = run(async {
        let mut ours = TcpStream::connect(addr).await.unwrap(); // token 0 here
        let (mut peer, _) = listener.accept().unwrap(); // the stray's connection
        drop(peer);
        (peer, _) = listener.accept().unwrap(); // ours
        drop(stray);
        peer.write_all(b"still mine").unwrap();
        ours.read_chunk().await.map(|chunk| chunk.to_vec())
    });
    assert_eq!(echoed.unwrap(), b"still mine");
}

/// `race` keeps each future it is given once: an `async fn race` kept both twice (the
/// arguments, then the locals that pin them), and as the echo server races each
/// connection's whole echo, every idle connection paid for its echo twice. The raced
/// future still runs: the first to finish wins.
#[test]
fn race_keeps_each_future_once() {
    let with_a_buffer = async {
        let buffer = [7u8; 1024];
        yield_now().await;
        buffer.iter().map(|&byte| u32::from(byte)).sum::<u32>()
    };
    let alone = size_of_val(&with_a_buffer);
    let raced = race(with_a_buffer, std::future::pending::<()>());
    assert!(
        size_of_val(&raced) <= alone + 16,
        "race of a {alone}-byte future takes {} bytes",
        size_of_val(&raced)
    );
    assert_eq!(run(raced), Either::Left(7 * 1024));
}

/// `join_all` runs its futures concurrently (each starts before any finishes) and returns
/// their outputs in the order given, though they finish in the reverse order. Each waits a
/// number of turns of the loop, not of milliseconds: sleeps 10 ms apart finished together,
/// in the order given, whenever the loaded machine held the process back longer than that.
#[test]
fn join_all_runs_all_at_once_and_keeps_the_order() {
    let (outputs, log) = run(async {
        let log = Rc::new(RefCell::new(Vec::new()));
        let outputs = join_all([3, 2, 1].map(|turns| {
            let log = Rc::clone(&log);
            async move {
                log.borrow_mut().push(format!("start {turns}"));
                for _ in 0..turns {
                    yield_now().await;
                }
                log.borrow_mut().push(format!("end {turns}"));
                turns
            }
        }))
        .await;
        (outputs, Rc::try_unwrap(log).unwrap().into_inner())
    });
    assert_eq!(outputs, [3, 2, 1]);
    assert_eq!(
        log,
        ["start 3", "start 2", "start 1", "end 1", "end 2", "end 3"]
    );
}

/// A pipe whose write end the test keeps: bytes go in exactly when the test says.
fn pipe_reader() -> (AsyncReader, PipeWriter) {
    let (reader, writer) = std::io::pipe().unwrap();
    (AsyncReader::pipe(reader).unwrap(), writer)
}

/// A line arrives in two parts; the read that has the first part is cancelled (it loses a
/// race against a timer) before the second comes. Returns the line the next read gets.
async fn line_after_a_cancelled_read(lines: &mut impl ReadLine, sender: &mut PipeWriter) -> String {
    sender.write_all(b"first half, ").unwrap();
    let first = race(lines.read_line(), sleep(Duration::from_millis(50))).await;
    assert!(matches!(first, Either::Right(())), "the read won the race");
    sender.write_all(b"second half\n").unwrap();
    lines.read_line().await.unwrap().expect("a line, not EOF")
}

/// The loss: a reader that keeps the partial line in its future loses it when that future
/// is dropped; the next read gets only the line's second half.
#[test]
fn a_cancelled_read_loses_the_partial_line_it_held() {
    let _watchdog = Watchdog::arm("a_cancelled_read_loses_the_partial_line_it_held");
    let line = run(async {
        let (reader, mut sender) = pipe_reader();
        line_after_a_cancelled_read(&mut ForgetfulLines::new(reader), &mut sender).await
    });
    assert_eq!(line, "second half\n");
}

/// The fix: a reader that keeps the partial line in itself loses nothing when a read is
/// cancelled; the next read gets the whole line.
#[test]
fn a_cancelled_read_of_a_buffered_reader_loses_nothing() {
    let _watchdog = Watchdog::arm("a_cancelled_read_of_a_buffered_reader_loses_nothing");
    let line = run(async {
        let (reader, mut sender) = pipe_reader();
        line_after_a_cancelled_read(&mut BufferedLines::new(reader), &mut sender).await
    });
    assert_eq!(line, "first half, second half\n");
}

/// Aborting a task whose future panics when it is dropped: that panic belongs to the aborted
/// task (its `JoinError`, as tokio's `cancel_task` makes it), not to whoever called `abort`
/// — here the main future, through which it unwinds out of `block_on` and ends the program.
/// (Issue 19's item 11, fixed for lesson 7's `finish`, is here too: `Runtime::cancel` drops
/// the future outside any `catch_unwind`.)
#[test]
fn a_destructor_that_panics_on_abort_is_the_aborted_tasks_error() {
    let outcome = catch_unwind(AssertUnwindSafe(|| {
        run(async {
            let handle = spawn(async {
                let _bomb = PanicOnDrop;
                std::future::pending::<()>().await
            });
            yield_now().await; // it starts, and holds its bomb
            handle.abort();
            handle.await
        })
    }));
    match outcome {
        Ok(Err(JoinError::Panicked(message))) => assert_eq!(message, "a destructor gives up"),
        Ok(other) => panic!("awaiting the aborted task gave {other:?}"),
        Err(_) => panic!(
            "the aborted task's destructor panicked through `abort()` into the task that called it"
        ),
    }
}

/// The fds epoll `epoll_fd` watches, from `/proc/self/fdinfo` (one `tfd:` line each).
fn watched_fds(epoll_fd: RawFd) -> Vec<RawFd> {
    let info = std::fs::read_to_string(format!("/proc/self/fdinfo/{epoll_fd}"))
        .expect("read the epoll fd's fdinfo");
    info.lines()
        .filter_map(|line| line.strip_prefix("tfd:"))
        .filter_map(|rest| rest.split_whitespace().next()?.parse().ok())
        .collect()
}

/// A dropped pipe reader leaves epoll: its registration is removed while its fd is still
/// open. Closed first, the removal fails (`EBADF`), and epoll keeps watching the pipe for as
/// long as another descriptor of it lives (a `dup`, a child after `fork`) — under a token
/// the reactor hands out again.
#[test]
fn a_dropped_pipe_reader_leaves_epoll() {
    let (reader, _writer) = std::io::pipe().expect("pipe");
    let other = reader.try_clone().expect("dup"); // keeps the pipe open after the drop
    let fd = reader.as_raw_fd();
    let watched_after = run(async {
        let mut reader = AsyncReader::pipe(reader).expect("register");
        let mut byte = [0; 1];
        // One read that waits: now epoll watches it.
        let waited = race(reader.read(&mut byte), yield_now()).await;
        assert!(
            matches!(waited, Either::Right(())),
            "the empty pipe gave {waited:?}"
        );
        let epoll_fd = try_with_runtime(|runtime| runtime.reactor.borrow().registry().as_raw_fd())
            .expect("in block_on");
        assert!(
            watched_fds(epoll_fd).contains(&fd),
            "epoll never watched it"
        );
        drop(reader);
        watched_fds(epoll_fd)
    });
    drop(other);
    assert!(
        !watched_after.contains(&fd),
        "epoll still watches fd {fd} after its reader was dropped: {watched_after:?}"
    );
}

/// Runs the test `name` of this binary alone in a child process, with `CHILD_TEST` set so it
/// does its part there, and returns how the child ended: for a failure that aborts the
/// whole process rather than panicking in one test.
fn in_child_process(name: &str) -> std::process::Output {
    let exe = std::env::current_exe().expect("the test binary");
    std::process::Command::new(exe)
        .args([name, "--exact", "--test-threads", "1", "--nocapture"])
        .env("CHILD_TEST", name)
        .output()
        .expect("run the test binary")
}

/// An I/O object still alive when its thread exits — kept in a thread-local, outlived by
/// the runtime's own — is dropped quietly. Its destructor asks for the current runtime:
/// with `LocalKey::with` that panicked ("cannot access a Thread Local Storage value during
/// or after destruction"), and a panic in a thread-local's destructor aborts the process.
/// `try_with` says there is none.
#[test]
fn an_io_object_dropped_at_thread_exit_is_dropped_quietly() {
    const NAME: &str = "tests::an_io_object_dropped_at_thread_exit_is_dropped_quietly";
    if std::env::var("CHILD_TEST").as_deref() != Ok(NAME) {
        let output = in_child_process(NAME);
        assert!(
            output.status.success(),
            "{}\n{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
        return;
    }
    thread_local! {
        static KEPT: RefCell<Option<AsyncReader>> = const { RefCell::new(None) };
    }
    let thread = thread::spawn(|| {
        // First touched before the runtime's thread-local, so destroyed after it: thread-
        // locals are destroyed in the reverse order of their first use.
        KEPT.with(|_| ());
        run(async {
            let (reader, _writer) = std::io::pipe().expect("pipe");
            let reader = AsyncReader::pipe(reader).expect("register");
            KEPT.with(|kept| *kept.borrow_mut() = Some(reader));
        });
    });
    thread.join().expect("the thread");
}
