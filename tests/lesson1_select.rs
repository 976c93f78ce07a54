//! Lesson 1: one `select` (or `poll`) loop serves every client and both writer sources.

mod common;

use std::io::{ErrorKind, Read};
use std::net::TcpStream;

use common::writer;
use common::{PATIENCE, Server, conformance::round_trip, wait_until};
use echo_client::connect;

const SELECT: &str = env!("CARGO_BIN_EXE_select");

/// The whole suite against `select echo`.
mod select {
    crate::conformance_suite!(concurrent: super::SELECT, &["echo"]);
}

/// The whole suite against `select echo --poll`.
mod poll {
    crate::conformance_suite!(concurrent: super::SELECT, &["echo", "--poll"]);
}

/// Past FD_SETSIZE, `select echo` refuses the connection with one line naming FD_SETSIZE
/// and closes it; earlier clients keep their echo, and once fds below 1024 are free again a
/// new client is served.
#[test]
fn select_refuses_fds_beyond_fd_setsize_and_keeps_serving() {
    common::raise_fd_limit();
    let server = Server::start(SELECT, &["echo"]);
    let mut clients: Vec<TcpStream> = (0..1100)
        .map(|_| connect(server.addr, PATIENCE).unwrap())
        .collect();
    assert!(
        server
            .process
            .wait_for_stderr("is beyond FD_SETSIZE (1024)"),
        "no refusal line; last stderr lines: {:?}",
        server
            .process
            .stderr()
            .iter()
            .rev()
            .take(3)
            .collect::<Vec<_>>()
    );
    let refusal = server
        .process
        .stderr()
        .into_iter()
        .find(|l| l.contains("FD_SETSIZE"))
        .unwrap();
    assert!(
        refusal.contains("--poll"),
        "the refusal does not point to --poll: {refusal}"
    );

    // The last client was refused: the server closed it (EOF, or a reset).
    let mut last = clients.pop().unwrap();
    match last.read(&mut [0; 1]) {
        Ok(0) => {}
        Err(err) if err.kind() == ErrorKind::ConnectionReset => {}
        other => panic!("the refused client got {other:?}"),
    }
    // The first one is still served.
    round_trip(&clients[0], b"still here\n");

    // Free 200 fds below 1024; a newcomer gets one of them.
    drop(clients.drain(..200));
    assert!(
        wait_until(|| server.process.count_stderr(" closed") >= 200),
        "closes not seen"
    );
    round_trip(&connect(server.addr, PATIENCE).unwrap(), b"newcomer\n");
}

/// `select echo --poll` holds 10,000 connections at once and still echoes on them.
#[test]
fn poll_serves_ten_thousand_connections() {
    common::conformance::holds_ten_thousand_connections(SELECT, &["echo", "--poll"]);
}

/// In `select writer` pipe lines arrive while stdin stays silent.
#[test]
fn writer_pipe_lines_arrive_while_stdin_is_silent() {
    writer::pipe_lines_arrive_while_stdin_is_silent(SELECT, &["writer"]);
    writer::pipe_lines_arrive_while_stdin_is_silent(SELECT, &["writer", "--poll"]);
}

/// EOF on stdin ends `select writer` with exit 0, losing no line.
#[test]
fn writer_exits_on_eof_keeping_every_line() {
    writer::exits_on_eof_keeping_every_line(SELECT, &["writer"]);
    writer::exits_on_eof_keeping_every_line(SELECT, &["writer", "--poll"]);
}

/// `select writer` stops watching the closed pipe and sits idle.
#[test]
fn writer_idles_after_the_pipe_closes() {
    writer::idles_after_the_pipe_closes(SELECT, &["writer"]);
    writer::idles_after_the_pipe_closes(SELECT, &["writer", "--poll"]);
}

/// Two `select writer`s appending to one file at once never mangle a line.
#[test]
fn writer_lines_stay_whole_with_two_writers_on_one_file() {
    writer::two_writers_appending_to_one_file_keep_lines_whole(SELECT, &["writer"]);
}

/// `select writer` on a full disk: one error line, exit 1, no half line left in the file.
#[test]
fn writer_on_a_full_disk_leaves_no_half_line() {
    writer::a_full_disk_leaves_no_half_line(SELECT, &["writer"]);
}

/// `select writer --output f < f` is refused in one line, the file untouched.
#[test]
fn writer_refuses_to_read_its_own_output() {
    writer::refuses_to_read_its_own_output(SELECT, &["writer"]);
}

/// A long line costs `select writer` linear time, and arrives whole.
#[test]
fn writer_long_line_costs_linear_time() {
    writer::a_long_line_costs_linear_time(SELECT, &["writer"]);
}

/// `select writer --output fifo` says it waits for the FIFO's reader, then writes to it.
#[test]
fn writer_says_it_waits_for_a_fifo_reader() {
    writer::says_it_waits_for_a_fifo_reader(SELECT, &["writer"]);
}

/// `select writer` reads a non-blocking stdin correctly.
#[test]
fn writer_reads_a_nonblocking_stdin() {
    writer::reads_a_nonblocking_stdin(SELECT, &["writer"]);
}

/// `select writer` (both backends) writes the pipe's lines on time while stdin floods: each
/// turn reads every ready fd once.
#[test]
fn writer_pipe_lines_on_time_while_stdin_floods() {
    writer::pipe_lines_on_time_while_stdin_floods(SELECT, &["writer"]);
    writer::pipe_lines_on_time_while_stdin_floods(SELECT, &["writer", "--poll"]);
}
