//! Lesson 8: green threads run lesson 0's echo on epoll, shut down gracefully, run the writer
//! like every lesson, freeze together on a blocking read, and die loudly on a stack overflow.

// The context switch is x86-64 assembly; elsewhere the runtime refuses to start, in one line.
#![cfg(target_arch = "x86_64")]

mod common;

use common::writer;

const GREEN_THREADS: &str = env!("CARGO_BIN_EXE_green-threads");

/// The whole conformance suite against `green-threads echo`, its graceful shutdown included.
mod echo {
    crate::conformance_suite!(graceful: super::GREEN_THREADS, &["echo"]);
}

/// `green-threads echo` holds 10,000 connections at once and still echoes on them.
#[test]
fn holds_ten_thousand_connections() {
    common::conformance::holds_ten_thousand_connections(GREEN_THREADS, &["echo"]);
}

/// Out of fds, with 2,070 connections that came and went waiting in the backlog, `echo`
/// serves a new client within seconds: a closing connection ends the pause at once.
#[test]
fn echo_recovers_quickly_from_running_out_of_fds() {
    common::conformance::recovers_quickly_from_running_out_of_fds(GREEN_THREADS, &["echo"]);
}

/// In `green-threads writer` pipe lines arrive while stdin stays silent.
#[test]
fn writer_pipe_lines_arrive_while_stdin_is_silent() {
    writer::pipe_lines_arrive_while_stdin_is_silent(GREEN_THREADS, &["writer"]);
}

/// EOF on stdin ends `green-threads writer` with exit 0, losing no line.
#[test]
fn writer_exits_on_eof_keeping_every_line() {
    writer::exits_on_eof_keeping_every_line(GREEN_THREADS, &["writer"]);
}

/// `green-threads writer` stops reading the closed pipe and sits idle.
#[test]
fn writer_idles_after_the_pipe_closes() {
    writer::idles_after_the_pipe_closes(GREEN_THREADS, &["writer"]);
}

/// `green-threads writer < file`: epoll refuses a regular file; the writer reads it anyway.
#[test]
fn writer_reads_stdin_from_a_regular_file() {
    writer::works_with_stdin_from_a_file(GREEN_THREADS, &["writer"]);
}

/// Two `green-threads writer`s appending to one file at once never mangle a line.
#[test]
fn writer_lines_stay_whole_with_two_writers_on_one_file() {
    writer::two_writers_appending_to_one_file_keep_lines_whole(GREEN_THREADS, &["writer"]);
}

/// `green-threads writer` on a full disk: one error line, exit 1, no half line in the file.
#[test]
fn writer_on_a_full_disk_leaves_no_half_line() {
    writer::a_full_disk_leaves_no_half_line(GREEN_THREADS, &["writer"]);
}

/// `green-threads writer --output f < f` is refused in one line, the file untouched.
#[test]
fn writer_refuses_to_read_its_own_output() {
    writer::refuses_to_read_its_own_output(GREEN_THREADS, &["writer"]);
}

/// A long line costs `green-threads writer` linear time, and arrives whole.
#[test]
fn writer_long_line_costs_linear_time() {
    writer::a_long_line_costs_linear_time(GREEN_THREADS, &["writer"]);
}

/// `green-threads writer --output fifo` says it waits for the FIFO's reader, then writes.
#[test]
fn writer_says_it_waits_for_a_fifo_reader() {
    writer::says_it_waits_for_a_fifo_reader(GREEN_THREADS, &["writer"]);
}

/// `green-threads writer` reads a non-blocking stdin correctly.
#[test]
fn writer_reads_a_nonblocking_stdin() {
    writer::reads_a_nonblocking_stdin(GREEN_THREADS, &["writer"]);
}

/// `green-threads writer` writes the pipe's lines on time while stdin (a big file) floods.
#[test]
fn writer_pipe_lines_on_time_while_stdin_floods() {
    writer::pipe_lines_on_time_while_stdin_floods(GREEN_THREADS, &["writer"]);
}

/// `green-threads writer` reads stdin's line and EOF while the pipe floods.
#[test]
fn writer_reads_stdin_eof_while_the_pipe_floods() {
    writer::eof_on_stdin_is_read_while_the_pipe_floods(GREEN_THREADS, &["writer"]);
}

/// `block`: while the reader blocks in `read(2)`, the ticker is silent for the whole wait
/// (about 500 ms); when the reader parks instead, the ticker keeps its 200 ms beat. The
/// bounds leave room for a loaded machine: they tell a freeze from a beat, nothing finer.
#[test]
fn block_freezes_every_green_thread_and_parking_does_not() {
    let (stdout, _) = common::run_to_end(GREEN_THREADS, &["block"]);
    let silences: Vec<u64> = stdout
        .lines()
        .filter_map(|line| line.trim().strip_prefix("the ticker was silent for "))
        .map(|rest| {
            let millis = rest.split("ms").next().unwrap_or(rest);
            millis
                .parse()
                .unwrap_or_else(|_| panic!("{rest:?} in:\n{stdout}"))
        })
        .collect();
    assert_eq!(silences.len(), 2, "{stdout}");
    assert!(
        silences[0] >= 450,
        "blocked: silent only {}ms\n{stdout}",
        silences[0]
    );
    assert!(
        silences[1] < 400,
        "parked: silent {}ms\n{stdout}",
        silences[1]
    );
    let parking = stdout
        .split("2. ")
        .nth(1)
        .unwrap_or_else(|| panic!("{stdout}"));
    let ticks_before_ping = parking
        .lines()
        .take_while(|line| !line.contains("reader: got"))
        .filter(|line| line.ends_with("ticker: tick"))
        .count();
    assert!(
        ticks_before_ping >= 2,
        "the ticker did not tick while the reader waited:\n{stdout}"
    );
}

/// `stacks`: parked green threads cost a few pages each, far less than their 256 KiB
/// stacks; a stack used deeper keeps its pages; finished ones give them back.
#[test]
fn stacks_cost_the_pages_they_touch() {
    let (stdout, _) = common::run_to_end(GREEN_THREADS, &["stacks", "--count", "500"]);
    let kib_per_green_thread = |prefix: &str| -> f64 {
        let line = stdout
            .lines()
            .find(|line| line.starts_with(prefix))
            .unwrap_or_else(|| panic!("no {prefix:?} in:\n{stdout}"));
        let before = line
            .split(" KiB per green thread")
            .next()
            .unwrap_or_default();
        before
            .rsplit(' ')
            .next()
            .and_then(|number| number.parse().ok())
            .unwrap_or_else(|| panic!("no KiB figure in {line:?}"))
    };
    let parked = kib_per_green_thread("parked: ");
    let deep = kib_per_green_thread("each went ");
    assert!(
        parked < 64.0,
        "a parked green thread costs {parked} KiB:\n{stdout}"
    );
    assert!(
        deep >= parked + 32.0,
        "a deep stack kept only {deep} KiB:\n{stdout}"
    );
}

/// `overflow`: the green thread that recurses without end is named in one line, and the
/// process aborts (SIGABRT) instead of corrupting memory.
#[test]
fn overflow_names_the_green_thread_and_aborts() {
    use std::os::unix::process::ExitStatusExt;
    let output = std::process::Command::new(GREEN_THREADS)
        .arg("overflow")
        .output()
        .expect("run green-threads overflow");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.signal(), Some(nix::libc::SIGABRT), "{stderr}");
    assert_eq!(
        stderr.trim_end(),
        "green thread 1 (recurse) has overflowed its 256 KiB stack (it touched its guard page): aborting"
    );
}

/// `--trace` shows the scheduler switching to a connection's green thread, the green thread
/// parking on its socket, and epoll waking it.
#[test]
fn trace_shows_parking_and_waking() {
    let server = common::Server::start(GREEN_THREADS, &["echo", "--trace"]);
    let client = echo_client::connect(server.addr, common::PATIENCE).unwrap();
    assert!(server.process.wait_for_stderr("(client 127.0.0.1:"));
    std::thread::sleep(std::time::Duration::from_millis(100));
    common::conformance::round_trip(&client, b"traced\n");
    server.process.expect_stderr(&[
        "scheduler: spawned green thread 2 (client 127.0.0.1:",
        "scheduler: switch to green thread 2 (client",
        "would block → park",
        "reactor: epoll_wait",
        "readable → wake green thread 2 (client",
    ]);
}
