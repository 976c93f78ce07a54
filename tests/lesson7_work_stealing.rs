//! Lesson 7: the work-stealing runtime serves every client from several workers, shuts down
//! gracefully, runs the writer like every lesson, and its tour shows stealing.

mod common;

use std::io::Read;
use std::process::Command;
use std::thread;
use std::time::Duration;

use common::writer;
use common::{PATIENCE, Server, conformance::round_trip};
use echo_client::connect;

const WORK_STEALING: &str = env!("CARGO_BIN_EXE_work-stealing");

/// The whole conformance suite against `work-stealing echo` on two workers.
mod echo {
    crate::conformance_suite!(graceful: super::WORK_STEALING, &["echo", "--workers", "2"]);
}

/// The same suite on one worker: the runtime must not depend on a thief to make progress.
mod echo_one_worker {
    crate::conformance_suite!(graceful: super::WORK_STEALING, &["echo", "--workers", "1"]);
}

/// The same suite with the reactor's own thread waiting for I/O (`--driver thread`) instead of
/// an idle worker: the other way to drive the runtime must serve just as well.
mod echo_driver_thread {
    crate::conformance_suite!(
        graceful: super::WORK_STEALING,
        &["echo", "--workers", "2", "--driver", "thread"]
    );
}

/// `work-stealing echo` holds 10,000 connections at once and still echoes on them.
#[test]
fn holds_ten_thousand_connections() {
    common::conformance::holds_ten_thousand_connections(WORK_STEALING, &["echo"]);
}

/// `--trace` shows the spawns, and whoever holds the driver — `--driver thread`: the
/// reactor's thread; `--driver worker`: an idle worker — waking a connection's task.
#[test]
fn trace_shows_spawns_and_driver_wakes() {
    for driver in ["thread", "worker"] {
        let args = ["echo", "--trace", "--workers", "2", "--driver", driver];
        let server = Server::start(WORK_STEALING, &args);
        let client = connect(server.addr, PATIENCE).unwrap();
        assert!(server.process.wait_for_stderr("main: spawned task 0"));
        thread::sleep(Duration::from_millis(100));
        round_trip(&client, b"traced\n");
        let texts = [
            "waiting for I/O",
            "1 event ready, 0 timer(s) due → wake 1 task",
        ];
        server.process.expect_stderr(&texts);
        // Who said it: the reactor's thread, or a worker ("worker 1: waiting for I/O").
        let waiters = server
            .process
            .stderr()
            .into_iter()
            .filter(|line| texts.iter().any(|text| line.contains(text)));
        for line in waiters {
            let by_reactor = line.starts_with("reactor: ");
            assert_eq!(
                by_reactor,
                driver == "thread",
                "--driver {driver}: {line:?}"
            );
        }
    }
}

fn run(args: &[&str]) -> (String, String) {
    common::run_to_end(WORK_STEALING, args)
}

/// `tour --trace`: tasks spawned on a worker that then stays busy are all stolen by the
/// other, workers park and are unparked, and while one worker computes, the other echoes
/// the pings (each answered well within the 600 ms the busy task takes: the bound only
/// catches a frozen runtime).
#[test]
fn tour_shows_stealing_parking_and_a_busy_worker() {
    let (stdout, stderr) = run(&["tour", "--trace"]);
    for expected in [
        "a runtime with 2 workers",
        "8 of the 8 ran on other workers: stolen from its queue",
        "the sleeping task woke up after",
        "5 pings were echoed meanwhile",
    ] {
        assert!(stdout.contains(expected), "no {expected:?} in:\n{stdout}");
    }
    for expected in ["stole", "nothing to do → park", "unparked", "spawned task"] {
        assert!(stderr.contains(expected), "no {expected:?} in:\n{stderr}");
    }
    let slowest = stdout
        .lines()
        .find_map(|line| line.split_once("the slowest took "))
        .map(|(_, took)| took.to_string())
        .unwrap_or_else(|| panic!("{stdout}"));
    assert!(
        !slowest.ends_with('s') || slowest.ends_with("ms") || slowest.ends_with("µs"),
        "a ping waited seconds: {slowest}"
    );
}

/// In `work-stealing writer` pipe lines arrive while stdin stays silent.
#[test]
fn writer_pipe_lines_arrive_while_stdin_is_silent() {
    writer::pipe_lines_arrive_while_stdin_is_silent(WORK_STEALING, &["writer"]);
}

/// EOF on stdin ends `work-stealing writer` with exit 0, losing no line.
#[test]
fn writer_exits_on_eof_keeping_every_line() {
    writer::exits_on_eof_keeping_every_line(WORK_STEALING, &["writer"]);
}

/// `work-stealing writer` stops reading the closed pipe and sits idle.
#[test]
fn writer_idles_after_the_pipe_closes() {
    writer::idles_after_the_pipe_closes(WORK_STEALING, &["writer"]);
}

/// `work-stealing writer < file`: epoll refuses a regular file; the writer reads it anyway.
#[test]
fn writer_reads_stdin_from_a_regular_file() {
    writer::works_with_stdin_from_a_file(WORK_STEALING, &["writer"]);
}

/// Two `work-stealing writer`s appending to one file at once never mangle a line.
#[test]
fn writer_lines_stay_whole_with_two_writers_on_one_file() {
    writer::two_writers_appending_to_one_file_keep_lines_whole(WORK_STEALING, &["writer"]);
}

/// `work-stealing writer` on a full disk: one error line, exit 1, no half line in the file.
#[test]
fn writer_on_a_full_disk_leaves_no_half_line() {
    writer::a_full_disk_leaves_no_half_line(WORK_STEALING, &["writer"]);
}

/// `work-stealing writer --output f < f` is refused in one line, the file untouched.
#[test]
fn writer_refuses_to_read_its_own_output() {
    writer::refuses_to_read_its_own_output(WORK_STEALING, &["writer"]);
}

/// A long line costs `work-stealing writer` linear time, and arrives whole.
#[test]
fn writer_long_line_costs_linear_time() {
    writer::a_long_line_costs_linear_time(WORK_STEALING, &["writer"]);
}

/// `work-stealing writer --output fifo` says it waits for the FIFO's reader, then writes.
#[test]
fn writer_says_it_waits_for_a_fifo_reader() {
    writer::says_it_waits_for_a_fifo_reader(WORK_STEALING, &["writer"]);
}

/// `work-stealing writer` reads a non-blocking stdin correctly.
#[test]
fn writer_reads_a_nonblocking_stdin() {
    writer::reads_a_nonblocking_stdin(WORK_STEALING, &["writer"]);
}

/// `work-stealing writer` writes the pipe's lines on time while stdin (a big file) floods.
#[test]
fn writer_pipe_lines_on_time_while_stdin_floods() {
    writer::pipe_lines_on_time_while_stdin_floods(WORK_STEALING, &["writer"]);
}

/// `work-stealing writer` reads stdin's line and EOF while the pipe floods.
#[test]
fn writer_reads_stdin_eof_while_the_pipe_floods() {
    writer::eof_on_stdin_is_read_while_the_pipe_floods(WORK_STEALING, &["writer"]);
}

/// Out of fds (a limit of 64), with 2,070 connections that came and went waiting in the
/// backlog, `work-stealing echo` gets through them and serves a new client within seconds.
#[test]
fn echo_recovers_quickly_from_running_out_of_fds() {
    common::conformance::recovers_quickly_from_running_out_of_fds(
        WORK_STEALING,
        &["echo", "--workers", "2"],
    );
}

/// Every subcommand's `--help` parses and names its options.
#[test]
fn every_help_parses() {
    for (args, expected) in [
        (&["--help"][..], "tour"),
        (&["echo", "--help"], "--workers"),
        (&["writer", "--help"], "--output"),
        (&["tour", "--help"], "--trace"),
    ] {
        let (stdout, _) = run(args);
        assert!(stdout.contains(expected), "{args:?}: {stdout}");
    }
}

/// `--workers 0` is refused with one clear error, not a runtime without workers.
#[test]
fn zero_workers_is_refused() {
    let output = Command::new(WORK_STEALING)
        .args(["echo", "--workers", "0"])
        .output()
        .expect("run work-stealing");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("invalid value '0' for '--workers"),
        "{stderr}"
    );
}

/// `tour | head -1`: when the reader closes stdout, the tour ends quietly, exit 0.
#[test]
fn tour_ends_quietly_when_the_reader_goes_away() {
    let mut child = Command::new(WORK_STEALING)
        .arg("tour")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run work-stealing");
    let mut first = [0; 1];
    child
        .stdout
        .take()
        .expect("stdout is piped")
        .read_exact(&mut first)
        .expect("the tour's first byte");
    // Dropped: the read end is closed, the tour's next line fails with EPIPE.
    let output = child.wait_with_output().expect("wait for the tour");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{}: {stderr}", output.status);
    assert_eq!(stderr, "");
}

/// `tour --trace 2>&1 | head`: once stderr is a closed pipe, the trace lines (written by the
/// workers and the reactor's thread) are dropped, and the tour runs to its end, exit 0.
#[test]
fn a_closed_stderr_drops_the_trace_and_the_tour_goes_on() {
    let mut child = Command::new(WORK_STEALING)
        .args(["tour", "--trace"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run work-stealing");
    let mut first = [0; 1];
    child
        .stderr
        .take()
        .expect("stderr is piped")
        .read_exact(&mut first)
        .expect("the first trace byte");
    // Dropped: the read end is closed, the next trace line fails with EPIPE.
    let mut stdout = String::new();
    child
        .stdout
        .take()
        .expect("stdout is piped")
        .read_to_string(&mut stdout)
        .expect("the tour's stdout");
    let status = child.wait().expect("wait for the tour");
    assert!(status.success(), "{status}: {stdout}");
    assert!(
        stdout.contains("5 pings were echoed meanwhile"),
        "the tour did not reach its end: {stdout}"
    );
}

/// A client that sends and never reads is given up 10 s after SIGTERM; the summary's `echoed
/// N bytes` counts only what left the server: afterwards the client finds exactly N bytes
/// waiting in its socket. (The conformance suite checks the give-up lines; this checks the
/// count.)
#[test]
fn echoed_counts_only_what_reached_a_client_given_up() {
    use std::io::Write;

    let mut server = Server::start(WORK_STEALING, &["echo", "--workers", "2"]);
    let stream = echo_client::connect_with_receive_buffer(server.addr, 4096, PATIENCE).unwrap();
    stream
        .set_write_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let chunk = vec![b'x'; 64 * 1024];
    // Sends until the connection takes no more (a write times out), at most 64 MiB.
    for _ in 0..1024 {
        if (&stream).write_all(&chunk).is_err() {
            break;
        }
    }
    common::shutdown::signal(&server, nix::sys::signal::Signal::SIGTERM);
    assert_eq!(
        server.process.wait_exit_within(Duration::from_secs(20)),
        Some(0)
    );
    // What reached us is still in our socket, after the server's reset.
    stream.set_read_timeout(Some(PATIENCE)).unwrap();
    let mut waiting = 0;
    let mut buf = vec![0; 64 * 1024];
    while let Ok(n @ 1..) = (&stream).read(&mut buf) {
        waiting += n;
    }
    let stderr = server.process.stderr();
    assert!(
        stderr.iter().any(|line| line.starts_with(&format!(
            "shutdown complete: served 1 connection, echoed {waiting} bytes; gave up"
        ))),
        "{waiting} bytes reached the client: {stderr:?}"
    );
}
