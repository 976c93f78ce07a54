//! Lesson 5: our runtime serves every client, shuts down gracefully, and runs the Python
//! lesson's programs.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Command, Stdio};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::thread;
use std::time::{Duration, Instant};

use common::writer;
use common::{Closed, PATIENCE, Server, conformance::round_trip, run_with_a_closed};
use echo_client::connect;

const ASYNC_AWAIT: &str = env!("CARGO_BIN_EXE_async-await");

/// The whole conformance suite against `async-await echo`.
mod echo {
    crate::conformance_suite!(graceful: super::ASYNC_AWAIT, &["echo"]);
}

/// Under every fd limit from 4 to 12 (under 3 the loader cannot open the program's shared
/// libraries), `async-await echo` either exits 1 before `listening on` with one line naming
/// the cause (`Too many open files`), or listens and ends gracefully on SIGTERM. (Under 4
/// to 7 it printed `listening on`, then failed: under 6 and 7 it blamed its signal pipe,
/// `signals are already being received (or the self-pipe failed)`.)
#[test]
fn echo_under_tiny_fd_limits_starts_or_says_why() {
    for limit in 4..=12 {
        let mut process =
            common::Process::spawn(common::command_with_fd_limit(ASYNC_AWAIT, &["echo"], limit));
        match common::first_stdout_line(&mut process) {
            Some(line) => {
                assert!(line.starts_with("listening on "), "limit {limit}: {line:?}");
                let pid = nix::unistd::Pid::from_raw(process.child.id() as i32);
                nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
                let code = process.wait_exit();
                let stderr = process.stderr();
                assert_eq!(code, Some(0), "limit {limit}: {stderr:?}");
                assert!(
                    stderr.iter().any(|line| line
                        == "SIGTERM: shutting down; waiting for 0 open connections to finish"),
                    "limit {limit}: {stderr:?}"
                );
            }
            None => {
                let code = process.wait_exit();
                let stderr = process.stderr();
                assert_eq!(code, Some(1), "limit {limit}: {stderr:?}");
                assert!(
                    stderr.len() == 1 && stderr[0].contains("Too many open files"),
                    "limit {limit}: {stderr:?}"
                );
            }
        }
    }
}

/// Clients that send, shut their side and never read their echo hold their connections in
/// the close (`finish`: waiting until they have every byte), but cost the server next to no
/// CPU meanwhile: 200 of them, seconds later, use at most 3% of a core. (Looking every 10 ms,
/// they took 11%.)
#[test]
fn clients_that_never_take_their_last_bytes_cost_no_cpu() {
    let server = Server::start(ASYNC_AWAIT, &["echo"]);
    let clients: Vec<_> = (0..200)
        .map(|_| {
            let stream = echo_client::connect_with_receive_buffer(server.addr, 4096, PATIENCE)
                .expect("connect");
            (&stream).write_all(&[b'x'; 16 * 1024]).expect("send");
            stream
                .shutdown(std::net::Shutdown::Write)
                .expect("half-close");
            stream
        })
        .collect();
    assert!(server.process.wait_for_stderr("connection from"));
    thread::sleep(Duration::from_secs(3));
    let before = server.process.cpu_ticks();
    thread::sleep(Duration::from_secs(2));
    let used = server.process.cpu_ticks() - before;
    assert!(
        used <= 6,
        "{} clients waiting to be sent their last bytes: {used}/100 s of CPU in 2 s",
        clients.len()
    );
}

/// `async-await echo` holds 10,000 connections at once and still echoes on them.
#[test]
fn serves_ten_thousand_connections() {
    common::conformance::holds_ten_thousand_connections(ASYNC_AWAIT, &["echo"]);
}

/// `--trace` shows the executor polling tasks and the reactor waking them.
#[test]
fn trace_shows_executor_and_reactor() {
    let server = Server::start(ASYNC_AWAIT, &["echo", "--trace"]);
    let client = connect(server.addr, PATIENCE).unwrap();
    // Let the connection's task wait for bytes, so the reactor has to wake it.
    assert!(
        server
            .process
            .wait_for_stderr("reactor: waiting for I/O, timeout=none")
    );
    thread::sleep(Duration::from_millis(100));
    round_trip(&client, b"traced\n");
    server.process.expect_stderr(&[
        "executor: spawned task",
        "executor: polling task",
        "reactor: waiting for I/O",
        "readable → wake its reader",
    ]);
}

fn run(args: &[&str]) -> (String, String) {
    common::run_to_end(ASYNC_AWAIT, args)
}

/// `clock` interleaves the two coroutines exactly as the Python lesson does. (Ticks of
/// 200 ms: a tick that comes more than a tick late is skipped, so a stall that long, on a
/// loaded machine, would cost a line; 40 ms ticks lost lines to 50 ms stalls.)
#[test]
fn clock_prints_both_coroutines() {
    let (stdout, _) = run(&["clock", "--for-secs", "7", "--tick-ms", "200"]);
    let expected = "0\n0 seconds passed.\n1\n2\n3\n3 seconds passed.\n4\n5\n6\n6 seconds passed.\n";
    assert_eq!(stdout, expected);
}

/// Runs `async-await clock <args>` and returns each line of its stdout with how long after
/// the program was started it arrived. Fails the test if a line takes longer than `PATIENCE`
/// to come.
fn clock_lines_with_times(args: &[&str]) -> Vec<(String, Duration)> {
    let started = Instant::now();
    let mut child = Command::new(ASYNC_AWAIT)
        .arg("clock")
        .args(args)
        .stdout(Stdio::piped())
        .spawn()
        .expect("run async-await");
    let stdout = child.stdout.take().expect("stdout is piped");
    let (lines, arrived) = mpsc::channel();
    thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let line = line.expect("read stdout");
            if lines.send((line, started.elapsed())).is_err() {
                return;
            }
        }
    });
    let mut timed = Vec::new();
    loop {
        match arrived.recv_timeout(PATIENCE) {
            Ok(line) => timed.push(line),
            Err(RecvTimeoutError::Disconnected) => break, // EOF: the clock has stopped
            Err(RecvTimeoutError::Timeout) => {
                let _ = child.kill();
                panic!("clock {args:?}: no line for {PATIENCE:?} after {timed:?}");
            }
        }
    }
    assert!(child.wait().expect("wait for clock").success());
    timed
}

/// When `text` arrived, since the program was started.
fn arrived(lines: &[(String, Duration)], text: &str) -> Duration {
    lines
        .iter()
        .find(|(line, _)| line == text)
        .unwrap_or_else(|| panic!("no {text:?} in {lines:?}"))
        .1
}

/// The clock run by the two tests below: ticks of 1 s, 900 ms of work after each number.
const TICK: Duration = Duration::from_millis(1000);
const WORK: Duration = Duration::from_millis(900);
const BLOCKED_CLOCK: [&str; 6] = ["--for-secs", "4", "--tick-ms", "1000", "--block-ms", "900"];

/// `clock --block-ms 900`: `print_nums` blocks the loop's thread after each number, so
/// `print_time`, which had nothing to do with that work, prints its reports after it: report
/// N comes no sooner than N ticks and the work after the program started. (A lower bound:
/// a loaded machine can only make a line later, never earlier.)
#[test]
fn clock_a_blocking_call_freezes_the_other_coroutine() {
    let lines = clock_lines_with_times(&BLOCKED_CLOCK);
    let texts: Vec<&str> = lines.iter().map(|(line, _)| line.as_str()).collect();
    assert_eq!(
        texts,
        ["0", "0 seconds passed.", "1", "2", "3", "3 seconds passed."]
    );
    for second in [0, 3] {
        let report = arrived(&lines, &format!("{second} seconds passed."));
        let not_before = TICK * second + WORK;
        assert!(
            report >= not_before,
            "{second}: {report:?} < {not_before:?}"
        );
    }
}

/// `clock --block-ms 900 --fixed`: the same work on the blocking pool leaves the loop free,
/// and each report comes right after its number, where a blocked loop would make it wait
/// for the 900 ms of work: in less than half that (a margin of 450 ms for a busy machine to
/// be late in scheduling either process).
#[test]
fn clock_spawn_blocking_keeps_the_other_coroutine_on_time() {
    let mut args = BLOCKED_CLOCK.to_vec();
    args.push("--fixed");
    let lines = clock_lines_with_times(&args);
    let texts: Vec<&str> = lines.iter().map(|(line, _)| line.as_str()).collect();
    assert_eq!(
        texts,
        ["0", "0 seconds passed.", "1", "2", "3", "3 seconds passed."]
    );
    for second in [0, 3] {
        let number = arrived(&lines, &second.to_string());
        let report = arrived(&lines, &format!("{second} seconds passed."));
        assert!(
            report - number < WORK / 2,
            "{second}: {:?}",
            report - number
        );
    }
}

/// `cancel`: the reader whose partial line lives in its read's future loses that part when
/// the read is cancelled by its timer; the reader that keeps it in itself loses nothing.
#[test]
fn cancel_shows_the_partial_line_lost_then_kept() {
    let (stdout, _) = run(&["cancel"]);
    let (forgetful, buffered) = stdout
        .split_once("2. the partial line kept in the reader (cancel-safe)")
        .unwrap_or_else(|| panic!("{stdout}"));
    for expected in [
        "1. the partial line kept in the read's future (not cancel-safe)",
        "no line after 200ms: the read is dropped, another one started",
        "got \"second half\\n\"",
        "\"first half, \" was lost with the dropped read",
    ] {
        assert!(
            forgetful.contains(expected),
            "no {expected:?} in:\n{stdout}"
        );
    }
    for expected in [
        "no line after 200ms: the read is dropped, another one started",
        "got \"first half, second half\\n\"",
        "nothing lost",
    ] {
        assert!(buffered.contains(expected), "no {expected:?} in:\n{stdout}");
    }
}

/// `download` prints both times, and the concurrent run takes well under half the time of
/// the sequential one (10 waits of 300 ms: at least 3 s against ~0.3 s, so a loaded machine
/// has more than a second of margin).
#[test]
fn download_concurrently_is_faster() {
    let (stdout, _) = run(&["download", "--count", "10", "--delay-ms", "300"]);
    let seconds = |prefix: &str| -> f64 {
        let line = stdout
            .lines()
            .find(|line| line.starts_with(prefix))
            .unwrap_or_else(|| panic!("{stdout}"));
        line[prefix.len()..]
            .trim_end_matches(" seconds.")
            .parse()
            .unwrap()
    };
    let sequential = seconds("Synchronous download of 10 images took: ");
    let concurrent = seconds("Asynchronous download of 10 images took: ");
    assert!(sequential >= 3.0, "{stdout}");
    assert!(concurrent < sequential / 2.0, "{stdout}");
    assert!(stdout.contains("faster."), "{stdout}");
}

/// `tasks` runs the whole tour and each step shows what the lesson says it shows.
#[test]
fn tasks_tour_runs_to_the_end() {
    let (stdout, _) = run(&["tasks"]);
    for expected in [
        "is_finished() right after spawn: false",
        "awaited: Ok(42)",
        "awaited: Err(Panicked(\"something went wrong in a task\"))",
        "the sleeping task's future was dropped",
        "awaited: Err(Cancelled)",
        "result: Err(Elapsed)",
        "at most 3 held a permit at the same time",
        "counter = 5 (no update lost)",
        "tour done",
    ] {
        assert!(stdout.contains(expected), "no {expected:?} in:\n{stdout}");
    }
}

/// The tour's panicking task shows its panic in one line on stderr, where and what, whatever
/// the environment: with `RUST_BACKTRACE=1` (or `full`) Rust's own report added a backtrace
/// of 17 frames in the middle of the tour.
#[test]
fn tasks_shows_the_panic_in_one_line_whatever_the_environment() {
    for backtrace in ["0", "1", "full"] {
        let output = Command::new(ASYNC_AWAIT)
            .arg("tasks")
            .env("RUST_BACKTRACE", backtrace)
            .stdin(Stdio::null())
            .output()
            .expect("run async-await tasks");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            output.status.success(),
            "RUST_BACKTRACE={backtrace}: {stderr}"
        );
        assert_eq!(
            stderr,
            "   panicked in crates/5-async-await/src/tour.rs: something went wrong in a task\n",
            "RUST_BACKTRACE={backtrace}"
        );
    }
}

/// In `async-await writer` pipe lines arrive while stdin stays silent.
#[test]
fn writer_pipe_lines_arrive_while_stdin_is_silent() {
    writer::pipe_lines_arrive_while_stdin_is_silent(ASYNC_AWAIT, &["writer"]);
}

/// EOF on stdin ends `async-await writer` with exit 0, losing no line.
#[test]
fn writer_exits_on_eof_keeping_every_line() {
    writer::exits_on_eof_keeping_every_line(ASYNC_AWAIT, &["writer"]);
}

/// `async-await writer` stops reading the closed pipe and sits idle.
#[test]
fn writer_idles_after_the_pipe_closes() {
    writer::idles_after_the_pipe_closes(ASYNC_AWAIT, &["writer"]);
}

/// `async-await writer < file`: epoll refuses a regular file; the writer reads it anyway.
#[test]
fn writer_reads_stdin_from_a_regular_file() {
    writer::works_with_stdin_from_a_file(ASYNC_AWAIT, &["writer"]);
}

/// Runs `async-await <args>` with stdout into a pipe, reads lines until one starts with
/// `until`, then closes the pipe as `| head` does. Returns the exit status and stderr.
fn close_stdout_after(args: &[&str], until: &str) -> (std::process::ExitStatus, String) {
    let mut child = Command::new(ASYNC_AWAIT)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run async-await");
    let stdout = child.stdout.take().expect("stdout is piped");
    let mut lines = BufReader::new(stdout).lines();
    loop {
        let line = lines
            .next()
            .unwrap_or_else(|| panic!("{args:?}: stdout ended before {until:?}"))
            .expect("read stdout");
        if line.starts_with(until) {
            break;
        }
    }
    drop(lines); // closes the read end: the program's next write fails with EPIPE
    let output = child.wait_with_output().expect("wait for async-await");
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    (output.status, stderr)
}

/// `async-await tasks | head`: when the reader closes stdout mid-tour, the tour ends quietly:
/// exit 0, and on stderr only the panic that step 2 shows on purpose, no "failed printing".
#[test]
fn tasks_ends_quietly_when_the_reader_goes_away() {
    // Step 4 waits 100 ms before its next line: the pipe is closed during that wait.
    let (status, stderr) = close_stdout_after(&["tasks"], "4. timeout");
    assert!(status.success(), "{status}: {stderr}");
    assert_eq!(stderr.matches("panicked in").count(), 1, "{stderr}");
    assert!(
        stderr.contains("something went wrong in a task"),
        "{stderr}"
    );
}

/// `async-await download | head -1` ends quietly too: exit 0, nothing on stderr.
#[test]
fn download_ends_quietly_when_the_reader_goes_away() {
    // The next line comes after the two one-by-one downloads, 400 ms later.
    let args = ["download", "--count", "2", "--delay-ms", "200"];
    let (status, stderr) = close_stdout_after(&args, "a local server on");
    assert!(status.success(), "{status}: {stderr}");
    assert_eq!(stderr, "");
}

/// `async-await <args>`, stdin empty.
fn program(args: &[&str]) -> Command {
    let mut command = Command::new(ASYNC_AWAIT);
    command.args(args).stdin(Stdio::null());
    command
}

/// Each program that prints, with small numbers so it ends soon.
const PROGRAMS: [&[&str]; 5] = [
    &["clock", "--for-secs", "2", "--tick-ms", "10"],
    &["download", "--count", "1", "--delay-ms", "0"],
    &["tasks"],
    &["cancel"],
    &["handmade", "--delay-ms", "10"],
];

/// With nobody reading its stdout from the start (`| head -0`), each program ends quietly:
/// exit 0, nothing on stderr. (`cancel` and `handmade` said `Broken pipe` and exited 1.)
#[test]
fn every_program_ends_quietly_when_nobody_reads_its_output() {
    for args in PROGRAMS {
        let (status, stderr) = run_with_a_closed(Closed::Stdout, program(args));
        assert!(status.success(), "{args:?}: {status}: {stderr}");
        assert_eq!(stderr, "", "{args:?}");
    }
}

/// With stderr a pipe nobody reads (`2>&1 | head -1` once `head` is gone), each program
/// still prints all it prints and exits 0: a line stderr refuses is dropped.
#[test]
fn every_program_runs_on_with_a_closed_stderr() {
    for args in PROGRAMS {
        let (status, stdout) = run_with_a_closed(Closed::Stderr, program(args));
        assert!(status.success(), "{args:?}: {status}");
        assert!(stdout.lines().count() >= 3, "{args:?}: {stdout}");
    }
}

/// `tasks` and `download` with stdout on a full disk (`> /dev/full`): a failed write is an
/// error like any other, one line on stderr and exit 1, not a panic.
#[test]
fn a_full_disk_is_one_error_line() {
    for args in [
        &["tasks"][..],
        &["download", "--count", "1", "--delay-ms", "0"],
    ] {
        let full = std::fs::OpenOptions::new()
            .write(true)
            .open("/dev/full")
            .expect("open /dev/full");
        let output = Command::new(ASYNC_AWAIT)
            .args(args)
            .stdout(full)
            .output()
            .expect("run async-await");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(1), "{args:?}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{args:?}: {stderr}");
        assert!(
            stderr.starts_with("async-await: ") && stderr.contains("(os error 28)"),
            "{args:?}: {stderr}"
        );
    }
}

/// Two `async-await writer`s appending to one file at once never mangle a line.
#[test]
fn writer_lines_stay_whole_with_two_writers_on_one_file() {
    writer::two_writers_appending_to_one_file_keep_lines_whole(ASYNC_AWAIT, &["writer"]);
}

/// `async-await writer` on a full disk: one error line, exit 1, no half line left in the file.
#[test]
fn writer_on_a_full_disk_leaves_no_half_line() {
    writer::a_full_disk_leaves_no_half_line(ASYNC_AWAIT, &["writer"]);
}

/// `async-await writer --output f < f` is refused in one line, the file untouched.
#[test]
fn writer_refuses_to_read_its_own_output() {
    writer::refuses_to_read_its_own_output(ASYNC_AWAIT, &["writer"]);
}

/// A long line costs `async-await writer` linear time, and arrives whole.
#[test]
fn writer_long_line_costs_linear_time() {
    writer::a_long_line_costs_linear_time(ASYNC_AWAIT, &["writer"]);
}

/// `async-await writer`: a stdin line that never ends costs bounded memory.
#[test]
fn writer_line_without_end_costs_bounded_memory() {
    writer::a_line_without_end_costs_bounded_memory(ASYNC_AWAIT, &["writer"]);
}

/// `async-await writer --output fifo` says it waits for the FIFO's reader, then writes to it.
#[test]
fn writer_says_it_waits_for_a_fifo_reader() {
    writer::says_it_waits_for_a_fifo_reader(ASYNC_AWAIT, &["writer"]);
}

/// `async-await writer` reads a non-blocking stdin correctly.
#[test]
fn writer_reads_a_nonblocking_stdin() {
    writer::reads_a_nonblocking_stdin(ASYNC_AWAIT, &["writer"]);
}

/// `async-await writer` writes the pipe's lines on time while stdin (a big file) floods: the
/// two reads take turns at going first in the race, so a stdin that is always ready cannot
/// win them all, and reads of a file, which never wait, still spend the task's budget, so the
/// loop lets the reactor see that the pipe has a line.
#[test]
fn writer_pipe_lines_on_time_while_stdin_floods() {
    writer::pipe_lines_on_time_while_stdin_floods(ASYNC_AWAIT, &["writer"]);
}

/// `async-await writer` reads stdin's line and EOF while the pipe floods.
#[test]
fn writer_reads_stdin_eof_while_the_pipe_floods() {
    writer::eof_on_stdin_is_read_while_the_pipe_floods(ASYNC_AWAIT, &["writer"]);
}

/// `clock` with numbers so big their deadlines cannot be represented is refused in one line
/// with exit 1, not a panic (`overflow when adding duration to instant`).
#[test]
fn clock_refuses_a_run_too_long_to_schedule() {
    let output = Command::new(ASYNC_AWAIT)
        .args([
            "clock",
            "--tick-ms",
            "18446744073709551615",
            "--for-secs",
            "1000",
        ])
        .output()
        .expect("run async-await");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.starts_with("async-await: --tick-ms 18446744073709551615 --for-secs 1000 ends"),
        "{stderr}"
    );
}

/// Out of fds (a limit of 64), with 2,070 connections that came and went waiting in the
/// backlog, `async-await echo` gets through them and serves a new client within seconds: it
/// retries `accept` as soon as a connection closes, not on a fixed 500 ms pause (which took
/// 18 s here).
#[test]
fn echo_recovers_quickly_from_running_out_of_fds() {
    common::conformance::recovers_quickly_from_running_out_of_fds(ASYNC_AWAIT, &["echo"]);
}

/// `async-await handmade` shows the life of a future written by hand, then of the same wait
/// written with `async`: polled, `Pending`, woken from the timer's thread, polled, `Ready`.
/// Bounded: the program must exit 0 within `PATIENCE`.
#[test]
fn handmade_shows_a_future_polled_woken_and_ready() {
    let mut command = Command::new(ASYNC_AWAIT);
    command.args(["handmade", "--delay-ms", "20"]);
    let mut process = common::Process::spawn(command);
    process.expect_success();
    let mut stdout = String::new();
    process
        .child
        .stdout
        .take()
        .expect("stdout is piped")
        .read_to_string(&mut stdout)
        .expect("read the program's stdout");
    let waits = [
        "poll #1",
        "→ Pending: the loop sleeps until the waker is woken",
        "woken, from the thread \"timer\"",
        "poll #2",
    ];
    let mut expected =
        vec!["1. a Timer future written by hand (no async), rung by a thread after 20 ms"];
    expected.extend(waits);
    expected.extend([
        "→ Ready(())",
        "2. the same wait written with async: async { Timer::after(20 ms).await; \"rang\" }",
        "(the async block's poll calls the Timer's poll, with the same waker)",
    ]);
    expected.extend(waits);
    expected.push("→ Ready(\"rang\")");
    let steps: Vec<&str> = stdout.lines().map(str::trim).collect();
    assert_eq!(steps, expected, "{stdout}");
}

/// A client that half-closes, then resets before it has taken its echo (it dies, or closes
/// with the echo unread), ends its connection at once: the server logs it closed within
/// seconds, without a shutdown. `finish` waited for `fdio::unsent_bytes` to reach 0 once the
/// client's EOF had come; after a reset the kernel's count (`write_seq - snd_una`) never
/// moves again, so the connection, its fd and its once-a-second timer stayed until the
/// process ended — and at a shutdown it waited the whole grace period, then reported the
/// bytes the reset had destroyed as "dropping" them. (Lesson 6 checks the TCP state: `CLOSE`
/// with bytes unacknowledged is a reset.)
#[test]
fn a_client_that_resets_while_its_echo_closes_frees_the_connection() {
    let server = Server::start(ASYNC_AWAIT, &["echo"]);
    let stream =
        echo_client::connect_with_receive_buffer(server.addr, 4096, PATIENCE).expect("connect");
    let peer = stream.local_addr().expect("local address");
    (&stream).write_all(&[b'x'; 16 * 1024]).expect("send");
    stream
        .shutdown(std::net::Shutdown::Write)
        .expect("half-close");
    // The echo fills our small window; the rest waits in the server's socket, unacknowledged,
    // while the server's `finish` waits for it.
    assert!(server.process.wait_for_stderr("connection from"));
    thread::sleep(Duration::from_secs(1));
    // Closing with the echo unread sends a reset.
    drop(stream);
    let closed = format!("connection {peer} closed");
    assert!(
        server.process.wait_for_stderr(&closed),
        "no {closed:?} within 10 s of the reset: {:?}",
        server.process.stderr()
    );
}

/// A client that resets during the shutdown, its echo unread: the summary counts as echoed
/// exactly the bytes the client's kernel took (and acknowledged) before the reset. The
/// kernel's count of what is unacknowledged (`SIOCOUTQ`) still holds our EOF as one byte
/// after a reset, and the state no longer tells it apart: it was counted as a byte of echo
/// lost, one too many.
#[test]
fn a_reset_during_the_shutdown_counts_as_echoed_what_the_client_took() {
    use std::os::fd::AsRawFd;
    let mut server = Server::start(ASYNC_AWAIT, &["echo"]);
    let stream =
        echo_client::connect_with_receive_buffer(server.addr, 4096, PATIENCE).expect("connect");
    (&stream).write_all(&[b'x'; 16 * 1024]).expect("send");
    assert!(server.process.wait_for_stderr("connection from"));
    common::shutdown::signal(&server, nix::sys::signal::Signal::SIGTERM);
    assert!(server.process.wait_for_stderr("shutting down"));
    // The echo fills our small window; the rest waits in the server's socket, behind which
    // the server queues its EOF. What we took settles once our window is shut.
    let unread = || {
        let mut bytes: nix::libc::c_int = 0;
        // Safety: FIONREAD writes one int into a live local.
        let result =
            unsafe { nix::libc::ioctl(stream.as_raw_fd(), nix::libc::FIONREAD, &raw mut bytes) };
        assert_eq!(result, 0, "FIONREAD");
        bytes
    };
    let started = Instant::now();
    let mut taken = unread();
    loop {
        thread::sleep(Duration::from_millis(300));
        let now = unread();
        if now == taken && now > 0 {
            break;
        }
        assert!(started.elapsed() < PATIENCE, "the echo never settled");
        taken = now;
    }
    drop(stream); // closing with the echo unread sends a reset
    server.process.expect_success();
    let summary = format!("shutdown complete: served 1 connection, echoed {taken} bytes");
    assert!(
        server.process.wait_for_stderr(&summary),
        "the summary must count the {taken} bytes the client took: {:?}",
        server.process.stderr()
    );
}
