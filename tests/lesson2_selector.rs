//! Lesson 2: a selector with callbacks on epoll serves every client and both writer sources.

mod common;

use common::writer;
use common::{PATIENCE, Server, conformance::round_trip};
use echo_client::connect;

const SELECTOR: &str = env!("CARGO_BIN_EXE_selector");

/// The whole conformance suite against `selector echo`.
mod selector {
    crate::conformance_suite!(concurrent: super::SELECTOR, &["echo"]);
}

/// `selector echo` holds 10,000 connections at once and still echoes on them.
#[test]
fn serves_ten_thousand_connections() {
    common::conformance::holds_ten_thousand_connections(SELECTOR, &["echo"]);
}

/// `--trace` names the callback each event runs, and the registrations as they change.
#[test]
fn trace_shows_callbacks_and_registrations() {
    let server = Server::start(SELECTOR, &["echo", "--trace"]);
    let client = connect(server.addr, PATIENCE).unwrap();
    round_trip(&client, b"traced\n");
    drop(client);
    server.process.expect_stderr(&[
        "(listener 127.0.0.1:",
        "is readable → its callback",
        "selector: register Token(1) (client 127.0.0.1:",
        "selector: unregister Token(1)",
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
