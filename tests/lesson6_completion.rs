//! Lesson 6: the io_uring runtime serves every client (the whole conformance suite), holds
//! 10,000 connections, shuts down gracefully, narrates its rings, and runs the writer with
//! every read and write a request in the ring.
//!
//! Where io_uring is unavailable (a seccomp filter, `kernel.io_uring_disabled`, Linux < 6.0)
//! the binary says so in one line; the tests of this file then skip, printing that line.

mod common;

use std::process::Command;

use common::writer::{self, Writer};
use common::{PATIENCE, Server, TempFile, conformance::round_trip};
use echo_client::connect;

const COMPLETION: &str = env!("CARGO_BIN_EXE_completion");

/// The whole conformance suite against `completion echo` (skipped without io_uring).
mod echo {
    crate::conformance_suite!(
        graceful: super::COMPLETION, &["echo"], if: super::io_uring_available
    );
}

/// `true` if io_uring is usable here; else prints why (the binary's own line) and the test
/// that asked returns early: skipped.
fn io_uring_available() -> bool {
    let output = Command::new(COMPLETION)
        .arg("probe")
        .output()
        .expect("run completion probe");
    if !output.status.success() {
        let why = String::from_utf8_lossy(&output.stderr);
        assert!(
            why.contains("io_uring is unavailable here"),
            "probe failed without saying why: {why}"
        );
        eprintln!("skipped: {}", why.trim());
    }
    output.status.success()
}

/// `completion probe` says io_uring is usable, or why it is not, in one line.
#[test]
fn probe_says_whether_io_uring_is_usable() {
    let output = Command::new(COMPLETION).arg("probe").output().unwrap();
    let said = if output.status.success() {
        String::from_utf8_lossy(&output.stdout).into_owned()
    } else {
        String::from_utf8_lossy(&output.stderr).into_owned()
    };
    assert_eq!(said.lines().count(), 1, "{said:?}");
    assert!(
        said.starts_with("io_uring is available") || said.contains("io_uring is unavailable here"),
        "{said:?}"
    );
}

/// `completion echo` holds 10,000 connections at once and still echoes on them.
#[test]
fn holds_ten_thousand_connections() {
    if io_uring_available() {
        common::conformance::holds_ten_thousand_connections(COMPLETION, &["echo"]);
    }
}

/// Out of fds (a limit of 64), with 2,070 connections that came and went waiting in the
/// backlog, `completion echo` gets through them and serves a new client within seconds.
#[test]
fn echo_recovers_quickly_from_running_out_of_fds() {
    if !io_uring_available() {
        return;
    }
    common::conformance::recovers_quickly_from_running_out_of_fds(COMPLETION, &["echo"]);
}

/// `--trace` prints one line per turn of the loop: what it submitted (the multishot accept
/// and the signal pipe's read, then a receive and a send), what completed, and one
/// `io_uring_enter` for the turn.
#[test]
fn trace_shows_each_turn_of_the_ring() {
    if !io_uring_available() {
        return;
    }
    let server = Server::start(COMPLETION, &["echo", "--trace"]);
    let client = connect(server.addr, PATIENCE).unwrap();
    round_trip(&client, b"traced\n");
    server.process.expect_stderr(&[
        "ring: submitted [accept×1, read×1], waited → completed [accept×1]",
        "submitted [recv×1]",
        "completed [recv×1]",
        "submitted [send×1]",
        "completed [send×1]",
        "io_uring_enter calls: 1 (total",
    ]);
}

/// Pipe lines reach the file while stdin stays silent: both reads are in flight at once.
#[test]
fn writer_pipe_lines_arrive_while_stdin_is_silent() {
    if io_uring_available() {
        writer::pipe_lines_arrive_while_stdin_is_silent(COMPLETION, &["writer"]);
    }
}

/// EOF on stdin stops the ticker; every pipe line it wrote is in the file exactly once.
#[test]
fn writer_exits_on_eof_keeping_every_line() {
    if io_uring_available() {
        writer::exits_on_eof_keeping_every_line(COMPLETION, &["writer"]);
    }
}

/// After the pipe closes, no request reads it again: the program sits idle.
#[test]
fn writer_idles_after_the_pipe_closes() {
    if io_uring_available() {
        writer::idles_after_the_pipe_closes(COMPLETION, &["writer"]);
    }
}

/// A regular file as stdin just works: read through the ring like a pipe, with no
/// "epoll refuses" line (there is no epoll here), both sources drained, exit 0.
#[test]
fn writer_reads_stdin_from_a_regular_file() {
    if !io_uring_available() {
        return;
    }
    let input = TempFile::new("stdin.txt");
    std::fs::write(&input.path, "first line from a file\nsecond line\n").unwrap();
    let mut writer = Writer::start_with_stdin_file(COMPLETION, &["writer"], &input);
    writer.process.expect_success();
    for line in ["s stdin ] first line from a file", "s stdin ] second line"] {
        assert!(writer.position(line).is_some(), "{:?}", writer.lines());
    }
    assert_eq!(
        writer.pipe_numbers(),
        (1..=writer.messages_sent()).collect::<Vec<_>>()
    );
    assert_eq!(
        writer.process.count_stderr("epoll"),
        0,
        "{:?}",
        writer.process.stderr()
    );
}

/// Two writers appending to one file: every line stays whole (one write request each).
#[test]
fn writer_lines_stay_whole_with_two_writers_on_one_file() {
    if io_uring_available() {
        writer::two_writers_appending_to_one_file_keep_lines_whole(COMPLETION, &["writer"]);
    }
}

/// A full disk (a file-size limit) stops the writer with one line, leaving no half line.
#[test]
fn writer_on_a_full_disk_leaves_no_half_line() {
    if io_uring_available() {
        writer::a_full_disk_leaves_no_half_line(COMPLETION, &["writer"]);
    }
}

/// `writer --output f < f` is refused in one line.
#[test]
fn writer_refuses_to_read_its_own_output() {
    if io_uring_available() {
        writer::refuses_to_read_its_own_output(COMPLETION, &["writer"]);
    }
}

/// A 10 MB line without a newline costs linear time.
#[test]
fn writer_long_line_costs_linear_time() {
    if io_uring_available() {
        writer::a_long_line_costs_linear_time(COMPLETION, &["writer"]);
    }
}

/// A FIFO as output: the writer says it waits for a reader.
#[test]
fn writer_says_it_waits_for_a_fifo_reader() {
    if io_uring_available() {
        writer::says_it_waits_for_a_fifo_reader(COMPLETION, &["writer"]);
    }
}

/// A non-blocking stdin (the ring answers `EAGAIN` for it) is waited for with a poll
/// request, not spun on.
#[test]
fn writer_reads_a_nonblocking_stdin() {
    if io_uring_available() {
        writer::reads_a_nonblocking_stdin(COMPLETION, &["writer"]);
    }
}

/// Pipe lines arrive on time while stdin floods.
#[test]
fn writer_pipe_lines_on_time_while_stdin_floods() {
    if io_uring_available() {
        writer::pipe_lines_on_time_while_stdin_floods(COMPLETION, &["writer"]);
    }
}

/// EOF on stdin is read while the pipe floods.
#[test]
fn writer_reads_stdin_eof_while_the_pipe_floods() {
    if io_uring_available() {
        writer::eof_on_stdin_is_read_while_the_pipe_floods(COMPLETION, &["writer"]);
    }
}

/// `--help` of the binary and of each subcommand exits 0 and shows its options (it needs
/// no io_uring: the arguments are parsed before the probe).
#[test]
fn every_help_parses() {
    let cases: &[(&[&str], &str)] = &[
        (&["--help"], "probe"),
        (&["echo", "--help"], "--addr"),
        (&["writer", "--help"], "--interval-ms"),
        (&["probe", "--help"], "Usage:"),
    ];
    for &(args, option) in cases {
        let output = Command::new(COMPLETION).args(args).output().unwrap();
        let help = String::from_utf8_lossy(&output.stdout);
        assert!(output.status.success(), "{args:?}");
        assert!(
            help.contains("Usage:") && help.contains(option),
            "{args:?}: {help}"
        );
    }
}

/// A port already taken is one line on stderr and exit 1, not a panic.
#[test]
fn a_taken_port_is_one_error_line() {
    if !io_uring_available() {
        return;
    }
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let output = Command::new(COMPLETION)
        .args(["echo", "--addr", &addr])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.starts_with(&format!("completion: cannot listen on {addr}: ")),
        "{stderr}"
    );
}
