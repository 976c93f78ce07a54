//! Stress tests of the runtime, bounded in count and in time: each runs under a watchdog that
//! fails the test, instead of hanging the suite, if the runtime loses a wake.

use std::future::{Future, poll_fn};
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::task::{Poll, Waker};
use std::thread;
use std::time::{Duration, Instant};

use crate::{JoinError, Runtime, sleep, spawn, yield_now};

/// Runs `test` on a thread of its own and fails if it takes longer than `limit`.
fn with_watchdog(limit: Duration, test: impl FnOnce() + Send + 'static) {
    let (done, finished) = mpsc::channel();
    let runner = thread::spawn(move || {
        test();
        let _ = done.send(());
    });
    match finished.recv_timeout(limit) {
        Ok(()) => runner.join().expect("the test thread"),
        // The test panicked: report its panic.
        Err(mpsc::RecvTimeoutError::Disconnected) => {
            if let Err(panic) = runner.join() {
                std::panic::resume_unwind(panic);
            }
        }
        Err(mpsc::RecvTimeoutError::Timeout) => panic!("no progress after {limit:?}: a hang"),
    }
}

/// One million tasks, spawned from a task (so local queues overflow into the injector and
/// the other worker steals) and from `block_on` (the injector): each runs exactly once.
#[test]
fn a_million_tasks_each_run_exactly_once() {
    with_watchdog(Duration::from_secs(120), || {
        const TASKS: usize = 1_000_000;
        let runtime = Runtime::new(2).unwrap();
        let runs: Arc<Vec<AtomicU8>> = Arc::new((0..TASKS).map(|_| AtomicU8::new(0)).collect());
        let half = {
            let runs = Arc::clone(&runs);
            runtime.spawn(async move {
                let handles: Vec<_> = (0..TASKS / 2)
                    .map(|i| {
                        let runs = Arc::clone(&runs);
                        spawn(async move {
                            runs[i].fetch_add(1, Ordering::Relaxed);
                        })
                    })
                    .collect();
                for handle in handles {
                    handle.await.unwrap();
                }
            })
        };
        runtime.block_on(async {
            let handles: Vec<_> = (TASKS / 2..TASKS)
                .map(|i| {
                    let runs = Arc::clone(&runs);
                    spawn(async move {
                        runs[i].fetch_add(1, Ordering::Relaxed);
                    })
                })
                .collect();
            for handle in handles {
                handle.await.unwrap();
            }
            half.await.unwrap();
        });
        let wrong: Vec<_> = (0..TASKS)
            .filter(|&i| runs[i].load(Ordering::Relaxed) != 1)
            .take(5)
            .collect();
        assert!(wrong.is_empty(), "tasks run other than once: {wrong:?}");
    });
}

/// A one-value mailbox: what a task awaits in the ping-pong.
#[derive(Default)]
struct Mailbox {
    slot: Mutex<(Option<u32>, Option<Waker>)>,
}

impl Mailbox {
    fn send(&self, value: u32) {
        let waker = {
            let mut slot = self.slot.lock().unwrap();
            slot.0 = Some(value);
            slot.1.take()
        };
        if let Some(waker) = waker {
            waker.wake();
        }
    }

    fn recv(&self) -> impl Future<Output = u32> + '_ {
        poll_fn(|cx| {
            let mut slot = self.slot.lock().unwrap();
            match slot.0.take() {
                Some(value) => Poll::Ready(value),
                None => {
                    slot.1 = Some(cx.waker().clone());
                    Poll::Pending
                }
            }
        })
    }
}

/// Two tasks wake each other 100,000 times each. Every wake crosses between tasks that may
/// run on different workers (and the ball is sometimes in flight while a worker parks): a
/// single lost wake stops the game, and the watchdog fails the test.
#[test]
fn ping_pong_a_hundred_thousand_rounds() {
    with_watchdog(Duration::from_secs(120), || {
        const ROUNDS: u32 = 100_000;
        let runtime = Runtime::new(2).unwrap();
        let (ping, pong) = (Arc::new(Mailbox::default()), Arc::new(Mailbox::default()));
        let workers_seen = Arc::new(Mutex::new(std::collections::HashSet::new()));
        let player = |inbox: Arc<Mailbox>, outbox: Arc<Mailbox>, serves: bool| {
            let workers_seen = Arc::clone(&workers_seen);
            async move {
                if serves {
                    outbox.send(0);
                }
                loop {
                    let ball = inbox.recv().await;
                    if let Some(name) = thread::current().name() {
                        workers_seen.lock().unwrap().insert(name.to_string());
                    }
                    if ball >= 2 * ROUNDS {
                        outbox.send(ball + 1);
                        return ball;
                    }
                    outbox.send(ball + 1);
                }
            }
        };
        let a = runtime.spawn(player(Arc::clone(&ping), Arc::clone(&pong), true));
        let b = runtime.spawn(player(pong, ping, false));
        let (a, b) = runtime.block_on(async { (a.await.unwrap(), b.await.unwrap()) });
        assert!(a.abs_diff(b) == 1 && a.max(b) == 2 * ROUNDS + 1, "{a} {b}");
        assert!(!workers_seen.lock().unwrap().is_empty());
    });
}

/// A task that panics gives `Err(Panicked)` to its handle; the workers go on running the
/// other tasks, many panics later.
#[test]
fn a_panicking_task_leaves_the_runtime_running() {
    with_watchdog(Duration::from_secs(30), || {
        let runtime = Runtime::new(2).unwrap();
        runtime.block_on(async {
            for round in 0..20 {
                let panicked = spawn(async move {
                    yield_now().await;
                    panic!("task {round} fails on purpose");
                });
                let result = panicked.await;
                assert_eq!(
                    result,
                    Err(JoinError::Panicked(format!(
                        "task {round} fails on purpose"
                    )))
                );
            }
            let fine = spawn(async { 6 * 7 });
            assert_eq!(fine.await, Ok(42));
        });
    });
}

/// Sets its flag when dropped: tells whether a future was dropped.
struct DropFlag(Arc<AtomicBool>);

impl Drop for DropFlag {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

/// `abort` drops the future of a task that waits (on a long timer) and of one that is
/// running (yielding in a loop); both handles give `Err(Cancelled)`.
#[test]
fn abort_drops_the_future() {
    with_watchdog(Duration::from_secs(30), || {
        let runtime = Runtime::new(2).unwrap();
        runtime.block_on(async {
            let (waiting_dropped, busy_dropped) = (
                Arc::new(AtomicBool::new(false)),
                Arc::new(AtomicBool::new(false)),
            );
            let flag = DropFlag(Arc::clone(&waiting_dropped));
            let waiting = spawn(async move {
                let _flag = flag;
                sleep(Duration::from_secs(3600)).await;
            });
            let flag = DropFlag(Arc::clone(&busy_dropped));
            let started = Arc::new(AtomicBool::new(false));
            let busy = {
                let started = Arc::clone(&started);
                spawn(async move {
                    let _flag = flag;
                    loop {
                        started.store(true, Ordering::SeqCst);
                        yield_now().await;
                    }
                })
            };
            while !started.load(Ordering::SeqCst) {
                sleep(Duration::from_millis(1)).await;
            }
            sleep(Duration::from_millis(10)).await;
            waiting.abort();
            busy.abort();
            assert!(waiting.is_finished() || !waiting_dropped.load(Ordering::SeqCst));
            assert_eq!(waiting.await, Err(JoinError::Cancelled));
            assert_eq!(busy.await, Err(JoinError::Cancelled));
            assert!(
                waiting_dropped.load(Ordering::SeqCst),
                "the waiting future lives"
            );
            assert!(busy_dropped.load(Ordering::SeqCst), "the busy future lives");
        });
    });
}

/// A task woken from a plain thread (not a worker) goes through the injector and runs.
#[test]
fn a_wake_from_another_thread_reaches_the_task() {
    with_watchdog(Duration::from_secs(30), || {
        let runtime = Runtime::new(2).unwrap();
        for round in 0..200 {
            let mailbox = Arc::new(Mailbox::default());
            let receiver = {
                let mailbox = Arc::clone(&mailbox);
                runtime.spawn(async move { mailbox.recv().await })
            };
            let sender = thread::spawn(move || mailbox.send(round));
            assert_eq!(runtime.block_on(receiver), Ok(round));
            sender.join().unwrap();
        }
    });
}

/// `sleep` waits at least its duration, and many sleepers on many workers all wake.
#[test]
fn sleepers_wake_on_time() {
    with_watchdog(Duration::from_secs(30), || {
        let runtime = Runtime::new(2).unwrap();
        let woken = Arc::new(AtomicUsize::new(0));
        let started = Instant::now();
        runtime.block_on(async {
            let handles: Vec<_> = (0..100)
                .map(|i| {
                    let woken = Arc::clone(&woken);
                    spawn(async move {
                        sleep(Duration::from_millis(20 + i % 30)).await;
                        woken.fetch_add(1, Ordering::SeqCst);
                    })
                })
                .collect();
            for handle in handles {
                handle.await.unwrap();
            }
        });
        assert_eq!(woken.load(Ordering::SeqCst), 100);
        assert!(started.elapsed() >= Duration::from_millis(49));
    });
}

/// One worker is enough: a task that yields in a loop does not starve the others queued
/// on the same (only) worker, nor those in the injector (looked at first every few turns).
#[test]
fn one_worker_is_fair_to_the_injector() {
    with_watchdog(Duration::from_secs(30), || {
        let runtime = Runtime::new(1).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let spinner = {
            let stop = Arc::clone(&stop);
            runtime.spawn(async move {
                while !stop.load(Ordering::SeqCst) {
                    yield_now().await;
                }
            })
        };
        // Spawned from outside: they go to the injector, behind a task that never stops.
        let late = runtime.spawn(async { "served" });
        assert_eq!(runtime.block_on(late), Ok("served"));
        stop.store(true, Ordering::SeqCst);
        runtime.block_on(spinner).unwrap();
    });
}

/// Burns the CPU for `duration` without returning: one long poll.
fn spin_for(duration: Duration) {
    let started = Instant::now();
    while started.elapsed() < duration {
        std::hint::spin_loop();
    }
}

/// One worker, four tasks that each poll for 1 ms and yield (so its own queue is never
/// empty), and a task woken from a plain thread (so it waits in the injector): that task runs
/// after at most a few of those long polls, not after 61 of them. The worker looks at the
/// injector first about every 200 µs of polling, however long a poll takes. (It counts
/// polls, not time: it holds on a loaded machine too.)
#[test]
fn a_task_in_the_injector_waits_for_few_long_polls() {
    with_watchdog(Duration::from_secs(60), || {
        let runtime = Runtime::new(1).unwrap();
        let long_polls = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let spinners: Vec<_> = (0..4)
            .map(|_| {
                let (long_polls, stop) = (Arc::clone(&long_polls), Arc::clone(&stop));
                runtime.spawn(async move {
                    while !stop.load(Ordering::SeqCst) {
                        spin_for(Duration::from_millis(1));
                        long_polls.fetch_add(1, Ordering::SeqCst);
                        yield_now().await;
                    }
                })
            })
            .collect();
        // Long enough for the worker to have measured how long its polls take.
        while long_polls.load(Ordering::SeqCst) < 200 {
            thread::sleep(Duration::from_millis(5));
        }
        let mut waited = Vec::new();
        for round in 0..5 {
            let mailbox = Arc::new(Mailbox::default());
            let polls_before = Arc::new(AtomicUsize::new(0));
            let receiver = {
                let (mailbox, polls_before, long_polls) = (
                    Arc::clone(&mailbox),
                    Arc::clone(&polls_before),
                    Arc::clone(&long_polls),
                );
                runtime.spawn(async move {
                    mailbox.recv().await;
                    long_polls.load(Ordering::SeqCst) - polls_before.load(Ordering::SeqCst)
                })
            };
            thread::sleep(Duration::from_millis(20)); // it waits in `recv` now
            polls_before.store(long_polls.load(Ordering::SeqCst), Ordering::SeqCst);
            mailbox.send(round);
            waited.push(runtime.block_on(receiver).unwrap());
        }
        stop.store(true, Ordering::SeqCst);
        for spinner in spinners {
            runtime.block_on(spinner).unwrap();
        }
        assert!(
            waited.iter().all(|&polls| polls <= 4),
            "long polls run before the woken task, each time: {waited:?}"
        );
    });
}

// ---- From the review of lessons 7 and 8 (review78): panics in destructors, and shutdown. ----

/// The environment variable that makes a test, run again as a child process, do the part
/// that may end the process itself.
const CHILD: &str = "WORK_STEALING_TEST_CHILD";

/// Runs the test `name` again in a child process with `CHILD` set; its exit status and stderr.
fn in_child_process(name: &str) -> (std::process::ExitStatus, String) {
    let output = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", name, "--nocapture", "--test-threads=1"])
        .env(CHILD, "1")
        .output()
        .unwrap();
    (
        output.status,
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// Panics when dropped: a destructor that fails.
struct PanicsOnDrop;

impl Drop for PanicsOnDrop {
    fn drop(&mut self) {
        panic!("the destructor fails on purpose");
    }
}

/// A detached task (its handle dropped) returns a value whose destructor panics: nobody will
/// ever take that output, so the worker drops it — and the panic must stay that task's, as
/// a panic in `poll` or in the future's destructor does (tokio drops an unwanted output
/// inside `catch_unwind`). It used to unwind out of `Task::run` into the worker's loop,
/// where `or_exit` ended the whole process with exit 101 (in a child process here).
#[test]
fn a_detached_tasks_output_that_panics_when_dropped_ends_nothing_else() {
    if std::env::var_os(CHILD).is_some() {
        let runtime = Runtime::new(1).unwrap();
        runtime.block_on(async {
            drop(spawn(async {
                sleep(Duration::from_millis(20)).await;
                PanicsOnDrop
            }));
            sleep(Duration::from_millis(300)).await;
            assert_eq!(spawn(async { 6 * 7 }).await, Ok(42));
        });
        return;
    }
    let (status, stderr) = in_child_process(
        "tests::a_detached_tasks_output_that_panics_when_dropped_ends_nothing_else",
    );
    assert!(status.success(), "{status}: {stderr}");
}

/// Dropping the runtime ends a detached task that waits on a timer (see `Runtime`'s `drop`);
/// its future's destructor panics. That panic is the task's: the drop of the runtime
/// returns and the program goes on (tokio's shutdown drops each task inside `catch_unwind`).
/// The reactor's thread used to drop the last waker, so the future, outside any
/// `catch_unwind`: `or_exit` ended the process with exit 101 (in a child process here).
#[test]
fn a_destructor_that_panics_at_shutdown_ends_nothing_else() {
    if std::env::var_os(CHILD).is_some() {
        let runtime = Runtime::new(1).unwrap();
        runtime.block_on(async {
            drop(spawn(async {
                let _fails = PanicsOnDrop;
                sleep(Duration::from_secs(3600)).await;
            }));
            sleep(Duration::from_millis(50)).await; // it runs, and waits on its timer
        });
        drop(runtime);
        return;
    }
    let (status, stderr) =
        in_child_process("tests::a_destructor_that_panics_at_shutdown_ends_nothing_else");
    assert!(status.success(), "{status}: {stderr}");
}

/// Dropping the runtime ends a task that waits on a timer even while its `JoinHandle` lives
/// on: its future is dropped, and the handle, awaited from another runtime, says
/// `Err(Cancelled)` (as tokio's does once its runtime is gone). The reactor used to drop the
/// waker, the handle kept the task, and the handle was still pending after 2 s.
#[test]
fn a_task_waiting_on_a_timer_ends_with_its_runtime_even_with_a_handle() {
    with_watchdog(Duration::from_secs(30), || {
        let dropped = Arc::new(AtomicBool::new(false));
        let runtime = Runtime::new(1).unwrap();
        let flag = DropFlag(Arc::clone(&dropped));
        let waiting = runtime.spawn(async move {
            let _flag = flag;
            sleep(Duration::from_secs(3600)).await;
        });
        runtime.block_on(sleep(Duration::from_millis(50))); // it runs, and waits on its timer
        drop(runtime);
        let other = Runtime::new(1).unwrap();
        let outcome = other.block_on(crate::timeout(Duration::from_secs(2), waiting));
        assert_eq!(outcome, Ok(Err(JoinError::Cancelled)), "the handle");
        assert!(
            dropped.load(Ordering::SeqCst),
            "the future was never dropped"
        );
    });
}

// ---- Ported from lesson 5's review: a pipe leaving epoll; a runtime dropped at thread exit. ----

/// The fds epoll `epoll_fd` watches, from `/proc/self/fdinfo` (one `tfd:` line each).
fn watched_fds(epoll_fd: std::os::fd::RawFd) -> Vec<std::os::fd::RawFd> {
    let info = std::fs::read_to_string(format!("/proc/self/fdinfo/{epoll_fd}"))
        .expect("read the epoll fd's fdinfo");
    info.lines()
        .filter_map(|line| line.strip_prefix("tfd:"))
        .filter_map(|rest| rest.split_whitespace().next()?.parse().ok())
        .collect()
}

/// A dropped pipe reader leaves epoll: its registration is removed while its fd is still
/// open. Closed first, the removal fails (`EBADF`), and epoll keeps watching the pipe for as
/// long as another descriptor of it lives (a `dup`, a child after `fork`).
#[test]
fn a_dropped_pipe_reader_leaves_epoll() {
    use std::os::fd::AsRawFd;
    let (reader, _writer) = std::io::pipe().expect("pipe");
    let other = reader.try_clone().expect("dup"); // keeps the pipe open after the drop
    let fd = reader.as_raw_fd();
    let runtime = Runtime::new(1).unwrap();
    let (watched_before, watched_after) = runtime.block_on(async {
        let reader = crate::io::AsyncReader::pipe(reader).expect("register");
        let epoll_fd = crate::runtime::with_shared(|shared| shared.reactor.epoll_fd());
        let before = watched_fds(epoll_fd);
        drop(reader);
        (before, watched_fds(epoll_fd))
    });
    drop(other);
    assert!(watched_before.contains(&fd), "epoll never watched it");
    assert!(
        !watched_after.contains(&fd),
        "epoll still watches fd {fd} after its reader was dropped: {watched_after:?}"
    );
}

/// A runtime kept in a thread-local, and so dropped when its thread exits — maybe after the
/// thread-local that says which runtime the thread is in — ends its tasks quietly. Its drop
/// wakes the task waiting on a timer, and a wake asks that thread-local where to queue the
/// task: with `LocalKey::with` that panicked ("cannot access a Thread Local Storage value
/// during or after destruction"), and a panic in a thread-local's destructor aborts the
/// process (in a child process here). `try_with` says: on no worker.
#[test]
fn a_runtime_dropped_at_thread_exit_is_dropped_quietly() {
    if std::env::var_os(CHILD).is_some() {
        std::thread_local! {
            static KEPT: std::cell::RefCell<Option<Runtime>> =
                const { std::cell::RefCell::new(None) };
        }
        let thread = thread::spawn(|| {
            // First touched before the runtime's thread-locals, so destroyed after them:
            // thread-locals are destroyed in the reverse order of their first use.
            KEPT.with(|_| ());
            let runtime = Runtime::new(1).unwrap();
            runtime.block_on(async {
                drop(spawn(sleep(Duration::from_secs(3600))));
                sleep(Duration::from_millis(50)).await; // it runs, and waits on its timer
            });
            KEPT.with(|kept| *kept.borrow_mut() = Some(runtime));
        });
        thread.join().expect("the thread");
        return;
    }
    let (status, stderr) =
        in_child_process("tests::a_runtime_dropped_at_thread_exit_is_dropped_quietly");
    assert!(status.success(), "{status}: {stderr}");
}

/// On one worker (which alone turns the driver, `--driver worker`, and only between two
/// polls): a task parks a read on its empty socket, then runs `send` as the client and waits
/// until the server's kernel holds all of it, without returning — so the driver's next turn
/// sees everything `send` did in one event. Then the task reads twice (16-byte buffer) and
/// returns what each read got; the second read has a deadline, only so that a read that
/// waits for an edge that never comes fails instead of hanging.
fn two_reads_after_one_event(
    send: impl FnOnce(&mut std::net::TcpStream) + Send + 'static,
) -> (Vec<u8>, Result<Vec<u8>, String>) {
    use std::io::Write as _;
    let (result, done) = mpsc::channel();
    with_watchdog(Duration::from_secs(30), move || {
        let runtime = Runtime::new(1).unwrap();
        let reads = runtime.block_on(async move {
            spawn(async move {
                let mut listener =
                    crate::TcpListener::bind("127.0.0.1:0".parse().unwrap()).unwrap();
                let mut client =
                    std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
                let (mut stream, _) = listener.accept().await.unwrap();
                let mut buf = [0; 16];
                let parked = poll_fn(|cx| {
                    let read = std::pin::pin!(stream.read(&mut buf));
                    Poll::Ready(read.poll(cx).is_pending())
                })
                .await;
                assert!(parked, "the empty socket had something to read");
                send(&mut client);
                let deadline = Instant::now() + Duration::from_secs(10);
                while !fdio::all_acknowledged(&client).unwrap() {
                    assert!(Instant::now() < deadline, "the bytes never arrived");
                    thread::sleep(Duration::from_millis(1));
                }
                client.flush().unwrap();
                let n = stream.read(&mut buf).await.unwrap();
                let first = buf[..n].to_vec();
                let second =
                    match crate::timeout(Duration::from_secs(3), stream.read(&mut buf)).await {
                        Ok(read) => read
                            .map(|n| buf[..n].to_vec())
                            .map_err(|err| err.to_string()),
                        Err(_) => Err("waited for an event that never comes".to_string()),
                    };
                drop(client);
                (first, second)
            })
            .await
            .unwrap()
        });
        let _ = result.send(reads);
    });
    done.recv().unwrap()
}

/// `abc`, an urgent byte and `def`, reported by one event: a TCP read stops at an urgent
/// byte's mark once it has copied anything, so the first read comes back short with `def`
/// still queued, and no edge will come for it. The event said an urgent byte waits
/// (`EPOLLPRI`), so that short read clears nothing, and the second read gets `def`.
#[test]
fn the_bytes_behind_an_urgent_byte_need_no_second_event() {
    use nix::sys::socket::{MsgFlags, send};
    use std::io::Write as _;
    use std::os::fd::AsRawFd;
    let reads = two_reads_after_one_event(|client| {
        client.write_all(b"abc").unwrap();
        send(client.as_raw_fd(), b"!", MsgFlags::MSG_OOB).unwrap();
        client.write_all(b"def").unwrap();
    });
    assert_eq!(reads, (b"abc".to_vec(), Ok(b"def".to_vec())));
}

/// The last bytes and the FIN, reported by one event: the first read takes the bytes and the
/// FIN with them, and comes back short; no edge will come for the EOF. The event said the
/// peer closed (`EPOLLRDHUP`), which keeps the read worth trying for good, so the second
/// read returns the EOF.
#[test]
fn the_eof_behind_the_last_bytes_needs_no_second_event() {
    use std::io::Write as _;
    let reads = two_reads_after_one_event(|client| {
        client.write_all(b"last").unwrap();
        client.shutdown(std::net::Shutdown::Write).unwrap();
    });
    assert_eq!(reads, (b"last".to_vec(), Ok(Vec::new())));
}
