//! Lesson 0: the blocking server and writer do one thing at a time; `--threads` serves all.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::time::Duration;

use common::writer::{self, Writer};
use common::{PATIENCE, Server, wait_until};
use echo_client::connect;

const SYNC: &str = env!("CARGO_BIN_EXE_sync");

/// The byte-exact checks that need only one client at a time, against plain `sync echo`.
mod one_at_a_time {
    crate::conformance_suite!(single_client: super::SYNC, &["echo"]);
}

/// The whole suite against `sync echo --threads`: one thread per client serves them all.
mod threads {
    crate::conformance_suite!(concurrent: super::SYNC, &["echo", "--threads"]);
}

/// `sync echo` answers client 2 only after client 1 has left: while client 1 is connected,
/// client 2's bytes get no echo even though client 1 keeps being answered.
#[test]
fn serves_client_two_only_after_client_one_leaves() {
    let server = Server::start(SYNC, &["echo"]);
    let first = connect(server.addr, PATIENCE).unwrap();
    common::conformance::round_trip(&first, b"one\n");

    // The kernel completes client 2's connection (it waits in the listen backlog) and
    // takes its bytes, but the server is busy with client 1: no echo comes.
    let second = connect(server.addr, PATIENCE).unwrap();
    (&second).write_all(b"two\n").unwrap();
    second
        .set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let err = (&second)
        .read(&mut [0; 16])
        .expect_err("client 2 was answered while client 1 was connected");
    assert!(
        matches!(err.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut),
        "{err}"
    );

    // The server is still with client 1 …
    common::conformance::round_trip(&first, b"one again\n");
    // … until client 1 leaves: then client 2 gets its echo.
    drop(first);
    second.set_read_timeout(Some(PATIENCE)).unwrap();
    let mut echoed = [0; 4];
    (&second)
        .read_exact(&mut echoed)
        .expect("client 2's echo after client 1 left");
    assert_eq!(&echoed, b"two\n");
}

/// In `sync writer` pipe lines wait for stdin: with stdin silent only the first pipe line
/// (read before blocking on stdin) reaches the file; the rest arrive after the next stdin
/// line, which comes first in the file.
#[test]
fn writer_holds_pipe_lines_until_stdin_speaks() {
    let mut writer = Writer::start(SYNC, &["writer"], 20, 5);
    assert!(
        wait_until(|| writer.pipe_numbers() == [1]),
        "{:?}",
        writer.lines()
    );
    // The ticker writes its other 4 lines within 100 ms; the program stays blocked on stdin.
    std::thread::sleep(Duration::from_millis(600));
    assert_eq!(
        writer.pipe_numbers(),
        [1],
        "a pipe line arrived while stdin was silent"
    );

    writer.type_line("go");
    assert!(
        wait_until(|| writer.pipe_numbers().len() == 5),
        "{:?}",
        writer.lines()
    );
    let go = writer.position("s stdin ] go").expect("the stdin line");
    let second = writer.position("External message from pipe 2").unwrap();
    assert!(
        go < second,
        "pipe line 2 came before the stdin line: {:?}",
        writer.lines()
    );
    writer.close_stdin();
    writer.process.expect_success();
}

/// EOF on stdin ends `sync writer` with exit 0, losing no line.
#[test]
fn writer_exits_on_eof_keeping_every_line() {
    writer::exits_on_eof_keeping_every_line(SYNC, &["writer"]);
}

/// `sync writer` does not spin once the pipe is closed.
#[test]
fn writer_idles_after_the_pipe_closes() {
    writer::idles_after_the_pipe_closes(SYNC, &["writer"]);
}

/// Two `sync writer`s appending to one file at once never mangle a line.
#[test]
fn writer_lines_stay_whole_with_two_writers_on_one_file() {
    writer::two_writers_appending_to_one_file_keep_lines_whole(SYNC, &["writer"]);
}

/// `sync writer` on a full disk: one error line, exit 1, no half line left in the file.
#[test]
fn writer_on_a_full_disk_leaves_no_half_line() {
    writer::a_full_disk_leaves_no_half_line(SYNC, &["writer"]);
}

/// `sync writer --output f < f` is refused in one line, the file untouched.
#[test]
fn writer_refuses_to_read_its_own_output() {
    writer::refuses_to_read_its_own_output(SYNC, &["writer"]);
}

/// A long line costs `sync writer` linear time, and arrives whole.
#[test]
fn writer_long_line_costs_linear_time() {
    writer::a_long_line_costs_linear_time(SYNC, &["writer"]);
}

/// `sync writer --output fifo` says it waits for the FIFO's reader, then writes to it.
#[test]
fn writer_says_it_waits_for_a_fifo_reader() {
    writer::says_it_waits_for_a_fifo_reader(SYNC, &["writer"]);
}

/// `sync writer` reads a non-blocking stdin correctly.
#[test]
fn writer_reads_a_nonblocking_stdin() {
    writer::reads_a_nonblocking_stdin(SYNC, &["writer"]);
}
