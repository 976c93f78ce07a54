//! Lesson 2: a selector with callbacks on epoll, level-triggered by default or edge-triggered
//! with `--edge`, serves every client and both writer sources.

mod common;

use std::fs::File;
use std::io::Write;
use std::process::{Command, Stdio};
use std::thread;

use common::writer::{self, Writer};
use common::{PATIENCE, Process, Server, TempFile, conformance::round_trip};
use echo_client::connect;

const SELECTOR: &str = env!("CARGO_BIN_EXE_selector");

/// The whole conformance suite against `selector echo` (level-triggered).
mod selector {
    crate::conformance_suite!(concurrent: super::SELECTOR, &["echo"]);
}

/// The whole conformance suite against `selector echo --edge` (`EPOLLET`).
mod selector_edge {
    crate::conformance_suite!(concurrent: super::SELECTOR, &["echo", "--edge"]);
}

/// `selector echo` holds 10,000 connections at once and still echoes on them.
#[test]
fn serves_ten_thousand_connections() {
    common::conformance::holds_ten_thousand_connections(SELECTOR, &["echo"]);
}

/// `--trace` shows the epoll calls with their flags, each wakeup and the callback it runs;
/// level-triggered by default, so no `EPOLLET`.
#[test]
fn trace_shows_epoll_calls_and_callbacks() {
    let server = Server::start(SELECTOR, &["echo", "--trace"]);
    let client = connect(server.addr, PATIENCE).unwrap();
    round_trip(&client, b"traced\n");
    drop(client);
    server.process.expect_stderr(&[
        "selector: epoll_create1, Level-triggered",
        "selector: register Token(0) (listener 127.0.0.1:",
        "epoll_ctl(ADD, fd ",
        "selector: woke up with 1 ready",
        "(listener 127.0.0.1:",
        "): EPOLLIN → its callback",
        "selector: register Token(1) (client 127.0.0.1:",
        "selector: unregister Token(1): epoll_ctl(DEL, fd ",
    ]);
    assert_eq!(server.process.count_stderr("EPOLLET"), 0);
}

/// With `--edge` every registration carries `EPOLLET`.
#[test]
fn edge_trace_shows_epollet() {
    let server = Server::start(SELECTOR, &["echo", "--edge", "--trace"]);
    let client = connect(server.addr, PATIENCE).unwrap();
    round_trip(&client, b"traced\n");
    drop(client);
    server.process.expect_stderr(&[
        "selector: epoll_create1, Edge-triggered",
        "(listener 127.0.0.1:",
        "EPOLLIN|EPOLLET)",
        "(client 127.0.0.1:",
        "EPOLLIN|EPOLLET)",
    ]);
}

/// In `selector writer` pipe lines arrive while stdin stays silent.
#[test]
fn writer_pipe_lines_arrive_while_stdin_is_silent() {
    writer::pipe_lines_arrive_while_stdin_is_silent(SELECTOR, &["writer"]);
}

/// EOF on stdin ends `selector writer` with exit 0, losing no line.
#[test]
fn writer_exits_on_eof_keeping_every_line() {
    writer::exits_on_eof_keeping_every_line(SELECTOR, &["writer"]);
}

/// `selector writer` unregisters the closed pipe and sits idle.
#[test]
fn writer_idles_after_the_pipe_closes() {
    writer::idles_after_the_pipe_closes(SELECTOR, &["writer"]);
}

/// `selector writer < file`: epoll refuses a regular file; the writer says so and reads it.
#[test]
fn writer_reads_stdin_from_a_regular_file() {
    writer::works_with_stdin_from_a_file(SELECTOR, &["writer"]);
}

/// `selector writer --edge` works the same: pipe lines arrive while stdin stays silent.
#[test]
fn edge_writer_pipe_lines_arrive_while_stdin_is_silent() {
    writer::pipe_lines_arrive_while_stdin_is_silent(SELECTOR, &["writer", "--edge"]);
}

/// `writer --edge --trace`: stdin holds 40 KiB when the loop starts, more than one budget
/// (4 reads of 1 KiB). The callback stops after its 4 reads, and the selector runs it again
/// on the next turn although no new edge comes; every line still reaches the file.
#[test]
fn edge_writer_trace_shows_a_budget_running_out() {
    let mut writer = Writer::start(SELECTOR, &["writer", "--edge", "--trace"], 20, 3);
    let lines: String = (0..2000)
        .map(|n| format!("line {n:05} of stdin\n"))
        .collect();
    assert!(lines.len() > 4 * 1024);
    let stdin = writer.process.child.stdin.as_mut().unwrap();
    stdin.write_all(lines.as_bytes()).unwrap();
    writer.process.expect_stderr(&[
        "(stdin) spent its budget of 4 reads: running it again next turn",
        "(stdin): budget spent last turn → its callback",
    ]);
    writer.close_stdin();
    writer.process.expect_success();
    assert!(writer.position("s stdin ] line 01999 of stdin").is_some());
}

/// Fairness (level-triggered, one read per event): while stdin is flooded with lines, the
/// pipe's lines still arrive among them, not after the last of them.
#[test]
fn writer_pipe_lines_are_not_held_back_by_a_busy_stdin() {
    let mut writer = Writer::start(SELECTOR, &["writer"], 20, 5);
    let mut stdin = writer.process.child.stdin.take().unwrap();
    let line = "flood line from stdin\n".repeat(1000);
    let flooder = thread::spawn(move || {
        for _ in 0..100 {
            stdin.write_all(line.as_bytes()).unwrap();
        }
    });
    flooder.join().unwrap();
    writer.process.expect_success();
    let last_stdin_line = writer.lines().len()
        - 1
        - (writer.lines().iter().rev())
            .position(|line| line.contains(" stdin ] "))
            .unwrap();
    let first_pipe_line = writer
        .position(" pipe ] External message from pipe 1")
        .unwrap();
    assert!(
        first_pipe_line < last_stdin_line,
        "pipe line 1 is line {first_pipe_line}, after all stdin lines (the last is {last_stdin_line})"
    );
}

/// `selector writer` on a full disk (`ulimit -f`): one `cannot append to …` line, the last,
/// exit 1, no half line in the file. (A callback that only logged its error let the loop run
/// on to `done: … lines appended` and exit 0.)
#[test]
fn writer_on_a_full_disk_leaves_no_half_line() {
    writer::a_full_disk_leaves_no_half_line(SELECTOR, &["writer"]);
}

/// `selector writer --output /dev/full`, stdin still open: the first failed append ends the
/// program with exit 1, and the last stderr line is that error, said once — not `stdin: …`
/// and `pipe: …` logged by each callback, then `Broken pipe` from the ticker at teardown.
#[test]
fn writer_on_dev_full_ends_with_the_real_error() {
    let mut command = Command::new(SELECTOR);
    command.args(["writer", "--output", "/dev/full"]);
    command.args(["--interval-ms", "20", "--count", "1000"]);
    let mut process = Process::spawn(command);
    let stdin = process.child.stdin.as_mut().expect("stdin is piped");
    // Fails only if the program has already exited (on the pipe's first line): fine.
    let _ = stdin.write_all(b"a line for a full disk\n");
    let code = process.wait_exit();
    let stderr = process.stderr();
    assert_eq!(code, Some(1), "{stderr:?}");
    assert_eq!(
        stderr.last().map(String::as_str),
        Some("selector: cannot append to /dev/full: No space left on device (os error 28)"),
        "{stderr:?}"
    );
    assert_eq!(process.count_stderr("cannot append to"), 1, "{stderr:?}");
}

/// `selector writer < /tmp`: epoll refuses a directory as it refuses a file, and the first
/// read fails (`Is a directory`). That error ends the program at once: exit 1, it is the last
/// stderr line, and no pipe line (the first is due after 1 s) reached the file. (Logged and
/// dropped, it let the program run on until the ticker was done, and exit 0.)
#[test]
fn writer_with_a_directory_as_stdin_fails_at_once() {
    let directory = File::open(std::env::temp_dir()).expect("open the temp directory");
    let output = TempFile::new("output.txt");
    let mut writer = Writer::start_to(SELECTOR, &["writer"], output, 1000, 3, |command| {
        command.stdin(Stdio::from(directory));
    });
    let code = writer.process.wait_exit();
    let stderr = writer.process.stderr();
    assert_eq!(code, Some(1), "{stderr:?}");
    assert_eq!(
        stderr.last().map(String::as_str),
        Some("selector: Is a directory (os error 21)"),
        "{stderr:?}"
    );
    assert_eq!(writer.lines(), Vec::<String>::new());
}
