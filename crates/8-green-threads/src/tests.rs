//! Unit tests of the scheduler, the I/O that parks, and the guard page. (The switch itself
//! is tested in `switch.rs`.)

use std::cell::{Cell, RefCell};
use std::io::{self, Read, Write};
use std::os::unix::process::ExitStatusExt;
use std::process::Command;
use std::rc::Rc;
use std::time::{Duration, Instant};

use fdio::Trace;

use crate::io::PipeReader;
use crate::net::TcpStream;
use crate::runtime::{BUDGET, run, sleep, yield_now};
use crate::spawn::{panic_message, spawn, spawn_named};
use crate::sync::Notify;

fn quiet() -> Trace {
    Trace::new(false)
}

/// Green threads run in the order they were spawned; `join` returns each one's output.
#[test]
fn join_returns_each_output() {
    let outputs = run(quiet(), || {
        let squares: Vec<_> = (0..10_u64).map(|n| spawn(move || n * n).unwrap()).collect();
        squares
            .into_iter()
            .map(|square| square.join().unwrap())
            .collect::<Vec<_>>()
    })
    .unwrap();
    assert_eq!(outputs, (0..10).map(|n| n * n).collect::<Vec<_>>());
}

/// Two green threads that yield after each step interleave their steps exactly: `yield_now`
/// lets the other runnable one go first.
#[test]
fn yield_now_lets_the_other_go_first() {
    let steps = run(quiet(), || {
        let steps = Rc::new(RefCell::new(Vec::new()));
        let walkers = ["a", "b"].map(|name| {
            let steps = Rc::clone(&steps);
            spawn(move || {
                for step in 0..3 {
                    steps.borrow_mut().push(format!("{name}{step}"));
                    yield_now();
                }
            })
            .unwrap()
        });
        for walker in walkers {
            walker.join().unwrap();
        }
        steps.take()
    })
    .unwrap();
    assert_eq!(steps, ["a0", "b0", "a1", "b1", "a2", "b2"]);
}

/// Sleepers wake in the order of their deadlines, not of their spawning, and none before
/// its time.
#[test]
fn sleepers_wake_in_deadline_order() {
    let woken = run(quiet(), || {
        let woken = Rc::new(RefCell::new(Vec::new()));
        let start = Instant::now();
        let sleepers: Vec<_> = [60, 20, 40]
            .map(|millis| {
                let woken = Rc::clone(&woken);
                spawn(move || {
                    sleep(Duration::from_millis(millis));
                    assert!(start.elapsed() >= Duration::from_millis(millis));
                    woken.borrow_mut().push(millis);
                })
                .unwrap()
            })
            .into();
        for sleeper in sleepers {
            sleeper.join().unwrap();
        }
        woken.take()
    })
    .unwrap();
    assert_eq!(woken, [20, 40, 60]);
}

/// A panic ends only its own green thread: `join` returns it with its message, and the other
/// green threads run to their end.
#[test]
fn a_panic_ends_only_its_green_thread() {
    let (panicked, others) = run(quiet(), || {
        let failing =
            spawn(|| -> u32 { panic!("something went wrong in a green thread") }).unwrap();
        let others: Vec<_> = (0..3_u32)
            .map(|n| {
                spawn(move || {
                    yield_now();
                    n
                })
                .unwrap()
            })
            .collect();
        let panicked = failing
            .join()
            .map_err(|panic| panic_message(&*panic).to_string());
        let others: Vec<u32> = others
            .into_iter()
            .map(|other| other.join().unwrap())
            .collect();
        (panicked, others)
    })
    .unwrap();
    assert_eq!(
        panicked,
        Err("something went wrong in a green thread".to_string())
    );
    assert_eq!(others, [0, 1, 2]);
}

/// A green thread parked with nothing left that could wake it: `run` says so instead of
/// sleeping in `epoll_wait` for ever (Go: "all goroutines are asleep - deadlock!").
#[test]
fn a_deadlock_is_reported() {
    let result = run(quiet(), || Notify::new().wait());
    let err = result.expect_err("a deadlock");
    assert!(err.to_string().contains("deadlock"), "{err}");
}

/// `run` on a thread that already runs a runtime is refused, without harm to the first.
#[test]
fn run_inside_run_is_refused() {
    let inner = run(quiet(), || {
        run(quiet(), || 1).map_err(|err| err.to_string())
    })
    .unwrap();
    let err = inner.expect_err("a second runtime on one thread");
    assert!(err.contains("already running"), "{err}");
}

/// When main returns, a green thread still parked is abandoned: `run` returns at once, and
/// the OS thread can run another runtime.
#[test]
fn a_parked_green_thread_is_abandoned_when_main_returns() {
    let start = Instant::now();
    run(quiet(), || {
        spawn(|| sleep(Duration::from_secs(60))).unwrap();
        yield_now(); // it parks in its sleep
    })
    .unwrap();
    assert!(start.elapsed() < Duration::from_secs(10));
    assert_eq!(run(quiet(), || 7).unwrap(), 7);
}

/// A green thread whose reads never have to wait (a pipe full of bytes, read one byte at a
/// time) lets a runnable one run after at most `BUDGET` reads: the budget, not the program,
/// makes it yield.
#[test]
fn a_green_thread_that_never_waits_yields_after_its_budget() {
    let (pipe, mut filler) = std::io::pipe().unwrap();
    filler.write_all(&[7; 4096]).unwrap();
    let reads = run(quiet(), move || {
        let mut pipe = PipeReader::new(pipe).unwrap();
        let other_ran = Rc::new(Cell::new(false));
        let flag = Rc::clone(&other_ran);
        spawn(move || flag.set(true)).unwrap();
        let mut reads = 0;
        while !other_ran.get() && reads < 4096 {
            assert_eq!(pipe.read(&mut [0; 1]).unwrap(), 1);
            reads += 1;
        }
        reads
    })
    .unwrap();
    assert!(
        (1..=BUDGET + 1).contains(&reads),
        "{reads} reads before the other ran"
    );
}

/// A read parked on a socket fails with `TimedOut` as soon as another green thread sets its
/// read deadline to now; past the deadline, bytes that are there are not read; without a
/// deadline, they are.
#[test]
fn a_read_deadline_wakes_a_parked_read() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let mut client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let (accepted, _) = listener.accept().unwrap();
    let (parked, late, later) = run(quiet(), move || {
        let stream = Rc::new(TcpStream::from_std(accepted).unwrap());
        let reader = spawn({
            let stream = Rc::clone(&stream);
            move || (&*stream).read(&mut [0; 16]).map_err(|err| err.kind())
        })
        .unwrap();
        yield_now(); // the reader parks: nothing to read
        stream.set_read_deadline(Some(Instant::now()));
        let parked = reader.join().unwrap();
        client.write_all(b"x").unwrap();
        sleep(Duration::from_millis(20));
        let late = (&*stream).read(&mut [0; 16]).map_err(|err| err.kind());
        stream.set_read_deadline(None);
        let later = (&*stream).read(&mut [0; 16]).map_err(|err| err.kind());
        (parked, late, later)
    })
    .unwrap();
    assert_eq!(parked, Err(std::io::ErrorKind::TimedOut));
    assert_eq!(late, Err(std::io::ErrorKind::TimedOut));
    assert_eq!(later, Ok(1));
}

/// `Notify::wait_until` returns `false` at its deadline when nobody notifies, and `true`
/// when another green thread notifies first.
#[test]
fn notify_wakes_its_waiters_or_times_out() {
    let (timed_out, notified) = run(quiet(), || {
        let notify = Rc::new(Notify::new());
        let timed_out = notify.wait_until(Some(Instant::now() + Duration::from_millis(20)));
        let notifier = Rc::clone(&notify);
        spawn(move || notifier.notify_all()).unwrap();
        let notified = notify.wait_until(Some(Instant::now() + Duration::from_secs(10)));
        (timed_out, notified)
    })
    .unwrap();
    assert_eq!((timed_out, notified), (false, true));
}

/// MXCSR's control bits (bits 6 to 15: rounding, masks) and the x87 control word.
fn control_words() -> (u32, u16) {
    let (mut mxcsr, mut x87) = (0u32, 0u16);
    // Safety: each instruction stores into the local whose address it is given.
    unsafe {
        std::arch::asm!("stmxcsr [{}]", in(reg) &raw mut mxcsr, options(nostack));
        std::arch::asm!("fnstcw [{}]", in(reg) &raw mut x87, options(nostack));
    }
    (mxcsr & 0xFFC0, x87)
}

fn set_control_words(mxcsr: u32, x87: u16) {
    // Safety: both are valid control words (reserved bits clear); they change only how this
    // thread rounds and which floating-point exceptions are masked.
    unsafe {
        std::arch::asm!("ldmxcsr [{}]", in(reg) &raw const mxcsr, options(nostack));
        std::arch::asm!("fldcw [{}]", in(reg) &raw const x87, options(nostack));
    }
}

/// Each green thread keeps its own floating-point control words (the ABI makes them
/// callee-saved): one sets "round toward zero" in MXCSR and "round down" in the x87 word and
/// yields; the other still sees the defaults, and the first, resumed, still sees its own.
#[test]
fn each_green_thread_keeps_its_own_rounding_mode() {
    const TOWARD_ZERO: u32 = 0x7F80;
    const X87_ROUND_DOWN: u16 = 0x077F;
    let (own, other, scheduler) = run(quiet(), || {
        let own = spawn(|| {
            let before = control_words();
            set_control_words(TOWARD_ZERO, X87_ROUND_DOWN);
            yield_now();
            yield_now();
            let seen = control_words();
            set_control_words(before.0, before.1);
            seen
        })
        .unwrap();
        let other = spawn(|| {
            yield_now(); // the first has set its own by now
            control_words()
        })
        .unwrap();
        (own.join().unwrap(), other.join().unwrap(), control_words())
    })
    .unwrap();
    assert_eq!(own, (TOWARD_ZERO, X87_ROUND_DOWN));
    assert_eq!(other, (0x1F80, 0x037F));
    assert_eq!(scheduler, (0x1F80, 0x037F));
}

/// The environment variable that makes a test, run again as a child process, do the
/// crashing part itself.
const CHILD: &str = "GREEN_THREADS_TEST_CHILD";

/// Runs the test `name` again in a child process with `CHILD` set; its exit status and
/// stderr.
fn in_child_process(name: &str) -> (std::process::ExitStatus, String) {
    let output = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", name, "--nocapture", "--test-threads=1"])
        .env(CHILD, "1")
        .output()
        .unwrap();
    (
        output.status,
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// A green thread that recurses without end touches its guard page: the process writes one
/// line naming it, and aborts (in a child process, this test binary run again).
#[test]
fn a_stack_overflow_is_reported_and_aborts() {
    if std::env::var_os(CHILD).is_some() {
        let _ = run(quiet(), || {
            spawn_named("deep", || crate::stacks::dig(usize::MAX))
                .unwrap()
                .join()
        });
        unreachable!("the recursion should have hit the guard page");
    }
    let (status, stderr) = in_child_process("tests::a_stack_overflow_is_reported_and_aborts");
    assert_eq!(
        status.signal(),
        Some(nix::libc::SIGABRT),
        "{status}: {stderr}"
    );
    let reports: Vec<&str> = stderr
        .lines()
        .filter(|line| line.contains("overflow"))
        .collect();
    assert_eq!(
        reports,
        [
            "green thread 1 (deep) has overflowed its 256 KiB stack (it touched its guard page): aborting"
        ],
        "{stderr}"
    );
}

/// A fault anywhere but in the running green thread's guard page is not called an overflow:
/// the handler hands it on, and the process dies of SIGSEGV (in a child process).
#[test]
fn another_fault_is_not_called_an_overflow() {
    if std::env::var_os(CHILD).is_some() {
        let _ = run(quiet(), || {
            spawn_named("wild", || {
                let page = crate::stack::Stack::new(4096).unwrap();
                let guard = page.guard().start;
                // A load from a PROT_NONE page that is no green thread's: the guard page of a
                // stack no green thread runs on.
                // Safety: it is not meant to complete: the load faults and the process dies.
                unsafe { std::arch::asm!("mov {0}, [{0}]", inout(reg) guard => _) };
            })
            .unwrap()
            .join()
        });
        unreachable!("the load should have faulted");
    }
    let (status, stderr) = in_child_process("tests::another_fault_is_not_called_an_overflow");
    assert_eq!(
        status.signal(),
        Some(nix::libc::SIGSEGV),
        "{status}: {stderr}"
    );
    assert!(!stderr.contains("overflow"), "{stderr}");
}

/// The lowest address the running green thread's stack may use.
fn running_stack_bottom() -> usize {
    crate::runtime::with_runtime(|runtime| {
        let green = runtime.current();
        let stack = green.stack.borrow();
        stack.as_ref().map_or(0, |stack| stack.bottom() as usize)
    })
}

/// Recurses until less than `margin` bytes of the running green thread's stack are left,
/// then calls `at_the_bottom` there.
#[inline(never)]
fn descend_to(bottom: usize, margin: usize, at_the_bottom: &dyn Fn()) {
    let frame = std::hint::black_box([0_u8; 256]);
    if (&raw const frame) as usize > bottom + margin {
        descend_to(bottom, margin, at_the_bottom);
    } else {
        at_the_bottom();
    }
    std::hint::black_box(&frame);
}

/// A signal (here SIGUSR1, through `fdio::signal_pipe`, as SIGTERM reaches `echo`) that
/// comes while a green thread is a few hundred bytes from the end of its stack: its handler
/// runs on the alternate signal stack (`SA_ONSTACK`), and the signal arrives. Without the
/// flag the kernel finds no room for the handler's frame (3.4 KiB with AVX-512): the signal
/// is lost, or the fault is called an overflow (in a child process).
#[test]
fn a_signal_near_the_end_of_a_green_threads_stack_is_handled() {
    if std::env::var_os(CHILD).is_some() {
        let received = run(quiet(), || {
            use nix::sys::signal::Signal;
            let mut signals = crate::signal::Signals::new(&[Signal::SIGUSR1]).unwrap();
            // A lost signal must fail the test, not hang it.
            spawn(|| {
                sleep(Duration::from_secs(5));
                fdio::log!("no SIGUSR1 within 5 s: it was lost");
                std::process::exit(3);
            })
            .unwrap();
            spawn(|| {
                descend_to(running_stack_bottom(), 1024, &|| {
                    // Safety: tgkill only sends a signal, to this very thread.
                    unsafe {
                        nix::libc::syscall(
                            nix::libc::SYS_tgkill,
                            nix::libc::getpid(),
                            nix::libc::gettid(),
                            nix::libc::SIGUSR1,
                        )
                    };
                });
            })
            .unwrap()
            .join()
            .unwrap();
            signals.recv().unwrap()
        })
        .unwrap();
        assert_eq!(received, nix::sys::signal::Signal::SIGUSR1);
        return;
    }
    let (status, stderr) =
        in_child_process("tests::a_signal_near_the_end_of_a_green_threads_stack_is_handled");
    assert!(status.success(), "{status}: {stderr}");
}

/// A SIGSEGV that no access to an address raised is never called an overflow, even if its
/// `si_addr` bytes look like the guard page's: here one with `si_code` `SI_KERNEL` (what a
/// general protection fault sends, with no address) queued to this thread with the running
/// green thread's guard page in those bytes. The handler hands it on, and std's handler,
/// seeing no fault of its own thread, lets the process go on (in a child process).
#[test]
fn a_sigsegv_that_is_no_page_fault_is_not_called_an_overflow() {
    if std::env::var_os(CHILD).is_some() {
        run(quiet(), || {
            let guard = running_stack_bottom() - crate::stack::page_size();
            // siginfo_t on x86-64: si_signo, si_errno, si_code (three ints), padding, then
            // the union whose first word is si_addr. 128 bytes in all.
            let mut info = [0_u64; 16];
            info[0] = nix::libc::SIGSEGV as u64; // si_errno 0 in the high half
            info[1] = nix::libc::SI_KERNEL as u64;
            info[2] = guard as u64;
            // Safety: rt_tgsigqueueinfo reads 128 bytes of `info`; sending to our own thread
            // with a positive si_code is allowed.
            let sent = unsafe {
                nix::libc::syscall(
                    nix::libc::SYS_rt_tgsigqueueinfo,
                    nix::libc::getpid(),
                    nix::libc::gettid(),
                    nix::libc::SIGSEGV,
                    info.as_ptr(),
                )
            };
            assert_eq!(sent, 0, "{}", std::io::Error::last_os_error());
        })
        .unwrap();
        return;
    }
    let (status, stderr) =
        in_child_process("tests::a_sigsegv_that_is_no_page_fault_is_not_called_an_overflow");
    assert!(!stderr.contains("overflowed"), "{stderr}");
    assert!(status.success(), "{status}: {stderr}");
}

// ---- Review of lessons 7 and 8 (branch review78): each test below fails on main as it is. ----

/// Two green threads parked in reads of one stream (`Read for &TcpStream`, shared through an
/// `Rc`, as std's `&TcpStream` allows): the first bytes wake one of them, the next bytes the
/// other. Neither is forgotten — today the second park replaces the first as the fd's only
/// waiter, and the first sleeps until its deadline (for ever without one).
#[test]
fn two_readers_of_one_stream_are_both_woken() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let mut client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let (accepted, _) = listener.accept().unwrap();
    let results = run(quiet(), move || {
        let stream = Rc::new(TcpStream::from_std(accepted).unwrap());
        // Only a bound for the test: a forgotten reader fails at it instead of hanging.
        stream.set_read_deadline(Some(Instant::now() + Duration::from_secs(3)));
        let readers: Vec<_> = (0..2)
            .map(|_| {
                let stream = Rc::clone(&stream);
                spawn(move || (&*stream).read(&mut [0; 16]).map_err(|err| err.kind())).unwrap()
            })
            .collect();
        yield_now(); // both park: nothing to read yet
        client.write_all(b"a").unwrap();
        sleep(Duration::from_millis(50)); // one reader wakes and takes the byte
        client.write_all(b"b").unwrap();
        readers
            .into_iter()
            .map(|reader| reader.join().unwrap())
            .collect::<Vec<_>>()
    })
    .unwrap();
    assert_eq!(results, [Ok(1), Ok(1)]);
}

/// Runs `send` (as the client, on `client`) while a green thread's read of the server's end
/// is parked on its empty socket, all of it before the scheduler next asks epoll, so that one
/// event reports everything `send` did. The reader then reads twice (16-byte buffer); returns
/// what each read got, or its error's kind. The reads have a deadline, only so that a read
/// that parks for an edge that never comes fails instead of hanging.
fn two_reads_after_one_event(
    send: impl FnOnce(&mut std::net::TcpStream) + 'static,
) -> [Result<Vec<u8>, io::ErrorKind>; 2] {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let mut client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let (accepted, _) = listener.accept().unwrap();
    run(quiet(), move || {
        let stream = TcpStream::from_std(accepted).unwrap();
        stream.set_read_deadline(Some(Instant::now() + Duration::from_secs(3)));
        let reader = spawn(move || {
            let read = || {
                let mut buf = [0; 16];
                let n = (&stream).read(&mut buf).map_err(|err| err.kind())?;
                Ok(buf[..n].to_vec())
            };
            [read(), read()]
        })
        .unwrap();
        yield_now(); // the reader parks: nothing to read yet
        send(&mut client);
        // Everything is in the server's socket once its kernel has acknowledged it. (No
        // green thread runs meanwhile: this one does not park.)
        let deadline = Instant::now() + Duration::from_secs(10);
        while !fdio::all_acknowledged(&client).unwrap() {
            assert!(Instant::now() < deadline, "the bytes never arrived");
            std::thread::sleep(Duration::from_millis(1));
        }
        reader.join().unwrap()
    })
    .unwrap()
}

/// `abc`, an urgent byte and `def`, reported by one event: a TCP read stops at an urgent
/// byte's mark once it has copied anything, so the first read comes back short with `def`
/// still queued, and no edge will come for it. The event said an urgent byte waits
/// (`EPOLLPRI`), so that short read clears nothing, and the second read gets `def`.
#[test]
fn the_bytes_behind_an_urgent_byte_need_no_second_event() {
    use nix::sys::socket::{MsgFlags, send};
    use std::os::fd::AsRawFd;
    let reads = two_reads_after_one_event(|client| {
        client.write_all(b"abc").unwrap();
        send(client.as_raw_fd(), b"!", MsgFlags::MSG_OOB).unwrap();
        client.write_all(b"def").unwrap();
    });
    assert_eq!(reads, [Ok(b"abc".to_vec()), Ok(b"def".to_vec())]);
}

/// The last bytes and the FIN, reported by one event: the first read takes the bytes and the
/// FIN with them, and comes back short; no edge will come for the EOF. The event said the
/// peer closed (`EPOLLRDHUP`), so that short read clears nothing, and the second read
/// returns the EOF.
#[test]
fn the_eof_behind_the_last_bytes_needs_no_second_event() {
    let reads = two_reads_after_one_event(|client| {
        client.write_all(b"last").unwrap();
        client.shutdown(std::net::Shutdown::Write).unwrap();
    });
    assert_eq!(reads, [Ok(b"last".to_vec()), Ok(Vec::new())]);
}

/// A `TcpStream` made by one `run` and dropped inside the next (it was `run`'s output) leaves
/// the new runtime alone: the new listener, which got the same slot in the new reactor, still
/// accepts. Today the stale token deregisters the listener's slot (epoll still watches the fd,
/// but the reactor no longer knows it): `accept` parks where no event can reach it and sees
/// the connection only at its deadline — without one, `run` ends with "deadlock". Lesson 5
/// has its `RuntimeId` check and lesson 7 its generations; lesson 8 has neither.
#[test]
fn a_stream_from_an_ended_runtime_leaves_the_next_one_alone() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let _client = std::net::TcpStream::connect(addr).unwrap();
    let (accepted, _) = listener.accept().unwrap();
    let old = run(quiet(), move || TcpStream::from_std(accepted).unwrap()).unwrap();
    let connector = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(200));
        std::net::TcpStream::connect(addr)
    });
    let accepted = run(quiet(), move || {
        let listener = crate::net::TcpListener::from_std(listener).unwrap();
        listener.set_deadline(Some(Instant::now() + Duration::from_secs(5)));
        drop(old);
        listener.accept().map(|_| ()).map_err(|err| err.kind())
    });
    let _ = connector.join();
    assert_eq!(
        accepted.map_err(|err| err.to_string()),
        Ok(Ok(())),
        "the listener of the second runtime"
    );
}

/// A stream made by one `run` and read under the next fails with an error that says why,
/// instead of asking the new reactor about a token that is not its own.
#[test]
fn a_stream_from_an_ended_runtime_cannot_be_read_in_the_next() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let _client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let (accepted, _) = listener.accept().unwrap();
    let old = run(quiet(), move || TcpStream::from_std(accepted).unwrap()).unwrap();
    let read = run(quiet(), move || {
        (&old).read(&mut [0; 16]).map_err(|err| err.to_string())
    })
    .unwrap();
    let err = read.expect_err("a read under another runtime");
    assert!(err.contains("runtime that has ended"), "{err}");
}

/// Joining a green thread of an ended runtime panics with a message, instead of parking for
/// ever (the green thread was abandoned: it will never finish).
#[test]
fn joining_a_green_thread_of_an_ended_runtime_panics_with_a_reason() {
    let handle = run(quiet(), || {
        let handle = spawn(|| sleep(Duration::from_secs(60))).unwrap();
        yield_now(); // it parks in its sleep
        handle
    })
    .unwrap();
    let joined = run(quiet(), move || {
        let joiner = spawn(move || handle.join().is_ok()).unwrap();
        joiner
            .join()
            .map_err(|panic| panic_message(&*panic).to_string())
    })
    .unwrap();
    let message = joined.expect_err("join should panic");
    assert!(message.contains("runtime that has ended"), "{message}");
}

thread_local! {
    static ABANDONED_RAN_ON: Cell<bool> = const { Cell::new(false) };
}

/// `runtime`'s doc: green threads still parked when `main` returns are "abandoned: never
/// resumed". One parked on a `Notify` that outlives the runtime (its output) is resumed by
/// the next runtime on the thread when that one notifies — on a stack the doc calls leaked,
/// in a runtime it never belonged to (and its fds and timers name the old reactor's slots).
#[test]
fn an_abandoned_green_thread_is_never_resumed() {
    let gate = run(quiet(), || {
        let gate = Rc::new(Notify::new());
        let waiter = Rc::clone(&gate);
        spawn(move || {
            waiter.wait();
            ABANDONED_RAN_ON.set(true);
        })
        .unwrap();
        yield_now(); // it parks on the gate
        gate
    })
    .unwrap();
    run(quiet(), move || {
        gate.notify_all();
        yield_now();
    })
    .unwrap();
    assert!(
        !ABANDONED_RAN_ON.get(),
        "a green thread of the first runtime ran in the second"
    );
}

/// std keeps its panic state per OS thread, and every green thread shares it: while one
/// green thread's panic unwinds through a destructor that parks (a `BufWriter` flushing into
/// a socket, here a `yield_now`), another that ran would see `thread::panicking()`, and a
/// `std::sync::Mutex` guard it dropped would poison the mutex although it never panicked. So
/// none runs meanwhile: the mutex stays clean.
#[test]
fn a_panic_unwinding_in_one_green_thread_does_not_poison_anothers_mutex() {
    struct ParksWhenDropped;
    impl Drop for ParksWhenDropped {
        fn drop(&mut self) {
            yield_now();
        }
    }
    let poisoned = run(quiet(), || {
        let mutex = Rc::new(std::sync::Mutex::new(0));
        let holder = {
            let mutex = Rc::clone(&mutex);
            spawn(move || {
                let mut guard = mutex.lock().unwrap();
                yield_now(); // the other one starts to panic meanwhile
                *guard += 1;
            })
            .unwrap()
        };
        let panicking = spawn(|| {
            let _parks = ParksWhenDropped;
            panic!("on purpose, while the other holds its lock");
        })
        .unwrap();
        holder.join().unwrap();
        let _ = panicking.join();
        mutex.is_poisoned()
    })
    .unwrap();
    assert!(
        !poisoned,
        "a mutex poisoned by a green thread that never panicked"
    );
}

/// A detached green thread (its `JoinHandle` dropped) returns a value whose destructor
/// panics: nobody will take that output, so it is dropped where the green thread ends — and
/// the panic must stay that green thread's ("a panic ends only its green thread"). Today the
/// output is dropped in `green_main`, outside `catch_unwind`, and a panic cannot unwind out of
/// an `extern "C"` function: the process aborts (in a child process here).
#[test]
fn a_detached_green_threads_output_that_panics_when_dropped_ends_nothing_else() {
    struct PanicsOnDrop;
    impl Drop for PanicsOnDrop {
        fn drop(&mut self) {
            panic!("the destructor fails on purpose");
        }
    }
    if std::env::var_os(CHILD).is_some() {
        let after = run(quiet(), || {
            drop(spawn(|| PanicsOnDrop).unwrap());
            yield_now(); // it runs, returns its value, and ends
            spawn(|| 6 * 7).unwrap().join().unwrap()
        });
        assert_eq!(after.unwrap(), 42);
        return;
    }
    let (status, stderr) = in_child_process(
        "tests::a_detached_green_threads_output_that_panics_when_dropped_ends_nothing_else",
    );
    assert!(status.success(), "{status}: {stderr}");
}

/// A destructor that reads a socket while its green thread's panic unwinds gets its bytes —
/// and meanwhile no other green thread runs: one that yields in a loop never once sees
/// `thread::panicking()` (std's panic state is the OS thread's: see `unwinding`).
#[test]
fn while_a_panic_unwinds_through_a_read_no_other_green_thread_runs() {
    struct ReadsWhenDropped(Rc<TcpStream>, Rc<Cell<usize>>);
    impl Drop for ReadsWhenDropped {
        fn drop(&mut self) {
            let n = (&*self.0).read(&mut [0; 16]).unwrap_or(0);
            self.1.set(n);
        }
    }
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let mut client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let (accepted, _) = listener.accept().unwrap();
    let writer = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(100));
        client.write_all(b"late").map(|()| client)
    });
    let (read, saw_a_panic) = run(quiet(), move || {
        let stream = Rc::new(TcpStream::from_std(accepted).unwrap());
        let read = Rc::new(Cell::new(0));
        let unwinding = Rc::new(Cell::new(false));
        let observer = {
            let unwinding = Rc::clone(&unwinding);
            spawn(move || {
                let mut saw_a_panic = false;
                while !unwinding.get() {
                    saw_a_panic |= std::thread::panicking();
                    yield_now();
                }
                saw_a_panic
            })
            .unwrap()
        };
        let panicking = {
            let (stream, read) = (Rc::clone(&stream), Rc::clone(&read));
            spawn(move || {
                let _reads = ReadsWhenDropped(stream, read);
                panic!("on purpose, with a read in a destructor");
            })
            .unwrap()
        };
        assert!(panicking.join().is_err());
        unwinding.set(true);
        (read.get(), observer.join().unwrap())
    })
    .unwrap();
    let _client = writer.join().unwrap().unwrap();
    assert_eq!(read, 4, "the destructor's read");
    assert!(!saw_a_panic, "another green thread ran inside the panic");
}

/// A green thread that, while its panic unwinds, waits for another green thread (a `join`)
/// could never be woken, since none may run: the process aborts with one line that says so,
/// rather than hang (in a child process).
#[test]
fn waiting_for_another_green_thread_while_unwinding_aborts_with_a_reason() {
    struct JoinsWhenDropped(Option<crate::spawn::JoinHandle<()>>);
    impl Drop for JoinsWhenDropped {
        fn drop(&mut self) {
            if let Some(other) = self.0.take() {
                let _ = other.join();
            }
        }
    }
    if std::env::var_os(CHILD).is_some() {
        let _ = run(quiet(), || {
            let other = spawn(|| sleep(Duration::from_secs(60))).unwrap();
            spawn(move || {
                let _joins = JoinsWhenDropped(Some(other));
                panic!("on purpose, with a join in a destructor");
            })
            .unwrap()
            .join()
        });
        unreachable!("the join while unwinding should have aborted the process");
    }
    let (status, stderr) = in_child_process(
        "tests::waiting_for_another_green_thread_while_unwinding_aborts_with_a_reason",
    );
    assert_eq!(
        status.signal(),
        Some(nix::libc::SIGABRT),
        "{status}: {stderr}"
    );
    assert!(
        stderr.contains("waits for another green thread while a panic unwinds it"),
        "{stderr}"
    );
}

/// A pipe reader still alive when its OS thread exits — kept in a thread-local, outlived by
/// the runtime's own — is dropped quietly. Its destructor asks for the current runtime, to
/// leave its reactor: with `LocalKey::with_borrow` that panicked ("cannot access a Thread
/// Local Storage value during or after destruction"), and a panic in a thread-local's
/// destructor aborts the process (in a child process here). `try_with` says there is none.
#[test]
fn a_pipe_reader_dropped_at_thread_exit_is_dropped_quietly() {
    if std::env::var_os(CHILD).is_some() {
        thread_local! {
            static KEPT: RefCell<Option<PipeReader>> = const { RefCell::new(None) };
        }
        let thread = std::thread::spawn(|| {
            // First touched before the runtime's thread-local, so destroyed after it:
            // thread-locals are destroyed in the reverse order of their first use.
            KEPT.with(|_| ());
            run(quiet(), || {
                let (reader, _writer) = std::io::pipe().unwrap();
                let reader = PipeReader::new(reader).unwrap();
                KEPT.with(|kept| *kept.borrow_mut() = Some(reader));
            })
            .unwrap();
        });
        thread.join().expect("the thread");
        return;
    }
    let (status, stderr) =
        in_child_process("tests::a_pipe_reader_dropped_at_thread_exit_is_dropped_quietly");
    assert!(status.success(), "{status}: {stderr}");
}
