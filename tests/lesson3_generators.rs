//! Lesson 3: a scheduler of hand-written tasks serves every client and both writer sources.

mod common;

use common::writer;

const GENERATORS: &str = env!("CARGO_BIN_EXE_generators");

/// The whole suite against `generators echo`.
mod generators {
    crate::conformance_suite!(concurrent: super::GENERATORS, &["echo"]);
}

/// `generators echo` holds 10,000 connections at once and still echoes on them.
#[test]
fn echo_serves_ten_thousand_connections() {
    common::conformance::holds_ten_thousand_connections(GENERATORS, &["echo"]);
}

/// In `generators writer` pipe lines arrive while stdin stays silent.
#[test]
fn writer_pipe_lines_arrive_while_stdin_is_silent() {
    writer::pipe_lines_arrive_while_stdin_is_silent(GENERATORS, &["writer"]);
}

/// EOF on stdin ends `generators writer` with exit 0, losing no line.
#[test]
fn writer_exits_on_eof_keeping_every_line() {
    writer::exits_on_eof_keeping_every_line(GENERATORS, &["writer"]);
}

/// `generators writer` stops watching the closed pipe and sits idle.
#[test]
fn writer_idles_after_the_pipe_closes() {
    writer::idles_after_the_pipe_closes(GENERATORS, &["writer"]);
}

/// `generators writer < file`: epoll refuses a regular file; the writer says so in one line
/// and reads it directly.
#[test]
fn writer_reads_stdin_from_a_regular_file() {
    writer::works_with_stdin_from_a_file(GENERATORS, &["writer"]);
}
