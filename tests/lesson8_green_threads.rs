//! Lesson 8: green threads run lesson 0's echo on epoll, shut down gracefully, run the writer
//! like every lesson, freeze together on a blocking read, and die loudly on a stack overflow.

mod common;

use common::writer;

const GREEN_THREADS: &str = env!("CARGO_BIN_EXE_green-threads");

/// The whole conformance suite against `green-threads echo`.
mod echo {
    crate::conformance_suite!(concurrent: super::GREEN_THREADS, &["echo"]);
}

/// `green-threads echo` holds 10,000 connections at once and still echoes on them.
#[test]
fn holds_ten_thousand_connections() {
    common::conformance::holds_ten_thousand_connections(GREEN_THREADS, &["echo"]);
}

/// On SIGINT, a client in the middle of a large echo still gets every byte the server read,
/// then a clean EOF (not a reset); the server prints its summary with that byte count and
/// exits 0.
#[test]
fn sigint_shuts_down_gracefully_without_losing_echo() {
    common::shutdown::sigint_loses_no_echo(GREEN_THREADS, &["echo"]);
}

/// SIGTERM shuts down the same way: new connections are refused, exit 0.
#[test]
fn sigterm_stops_accepting_and_exits_zero() {
    common::shutdown::sigterm_stops_accepting(GREEN_THREADS, &["echo"]);
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
