//! Every binary's command line: each `--help` the README points to parses, and bad input
//! gets a one-line error and clap's usage, never a panic.

mod common;

use std::process::{Command, Output};

use common::Server;

const SYNC: &str = env!("CARGO_BIN_EXE_sync");
const SELECT: &str = env!("CARGO_BIN_EXE_select");
const GENERATORS: &str = env!("CARGO_BIN_EXE_generators");
const SELECTOR: &str = env!("CARGO_BIN_EXE_selector");
const ASYNC_AWAIT: &str = env!("CARGO_BIN_EXE_async-await");
const COROUTINES: &str = env!("CARGO_BIN_EXE_coroutines");
const CLIENT: &str = env!("CARGO_BIN_EXE_client");

fn run(bin: &str, args: &[&str]) -> Output {
    Command::new(bin)
        .args(args)
        .output()
        .expect("run the binary")
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// `--help` of every binary and subcommand exits 0 and shows usage and its options.
#[test]
fn every_help_parses() {
    let cases: &[(&str, &[&str], &str)] = &[
        (SYNC, &["--help"], "writer"),
        (SYNC, &["echo", "--help"], "--threads"),
        (SYNC, &["writer", "--help"], "--interval-ms"),
        (SELECT, &["--help"], "echo"),
        (SELECT, &["echo", "--help"], "--poll"),
        (SELECT, &["writer", "--help"], "--output"),
        (GENERATORS, &["--help"], "writer"),
        (GENERATORS, &["echo", "--help"], "--trace"),
        (GENERATORS, &["writer", "--help"], "--interval-ms"),
        (SELECTOR, &["--help"], "writer"),
        (SELECTOR, &["echo", "--help"], "--trace"),
        (SELECTOR, &["writer", "--help"], "--count"),
        (ASYNC_AWAIT, &["--help"], "download"),
        (ASYNC_AWAIT, &["echo", "--help"], "--addr"),
        (ASYNC_AWAIT, &["writer", "--help"], "--output"),
        (ASYNC_AWAIT, &["clock", "--help"], "--for-secs"),
        (ASYNC_AWAIT, &["download", "--help"], "--delay-ms"),
        (ASYNC_AWAIT, &["tasks", "--help"], "Usage:"),
        (COROUTINES, &["--help"], "repl"),
        (COROUTINES, &["echo", "--help"], "--trace"),
        (COROUTINES, &["writer", "--help"], "--interval-ms"),
        (COROUTINES, &["repl", "--help"], "interpreter session"),
        (CLIENT, &["--help"], "--clients"),
    ];
    for &(bin, args, option) in cases {
        let output = run(bin, args);
        assert!(
            output.status.success(),
            "{bin} {args:?}: {}",
            stderr(&output)
        );
        let help = stdout(&output);
        assert!(
            help.contains("Usage:") && help.contains(option),
            "{bin} {args:?}: {help}"
        );
    }
}

/// A bad flag, a missing subcommand or a bad value exits 2 with clap's one-line error and a
/// pointer to the usage on stderr.
#[test]
fn bad_input_gets_usage_and_exit_code_2() {
    let cases: &[(&str, &[&str])] = &[
        (SYNC, &["echo", "--bogus"]),
        (SYNC, &[]),
        (SELECT, &["echo", "--addr", "not-an-address"]),
        (SELECT, &["writer", "--count", "-1"]),
        (ASYNC_AWAIT, &["clock", "--tick-ms", "0"]),
        (ASYNC_AWAIT, &["download", "--count", "0"]),
        (CLIENT, &["--every-ms", "10"]), // only meaningful with --clients
        (CLIENT, &["--clients", "0"]),
    ];
    for &(bin, args) in cases {
        let output = run(bin, args);
        assert_eq!(output.status.code(), Some(2), "{bin} {args:?}");
        let message = stderr(&output);
        // A missing subcommand prints the whole help; anything else, clap's `error:` line.
        let usage = message.contains("Usage:");
        let error_line = message.starts_with("error: ") && message.contains("try '--help'");
        assert!(usage || error_line, "{bin} {args:?}: {message}");
    }
}

/// A port already taken ends the second server with exit 1 and one line saying why.
#[test]
fn address_in_use_is_one_clear_line() {
    let first = Server::start(SELECT, &["echo"]);
    let addr = first.addr.to_string();
    let output = run(SYNC, &["echo", "--addr", &addr]);
    assert_eq!(output.status.code(), Some(1));
    let message = stderr(&output);
    assert_eq!(message.lines().count(), 1, "{message}");
    assert!(
        message.starts_with(&format!("sync: cannot listen on {addr}: ")),
        "{message}"
    );
}

/// The client says clearly when nobody is listening, and exits 1.
#[test]
fn client_without_server_is_one_clear_line() {
    let server = Server::start(SELECT, &["echo"]);
    let addr = server.addr.to_string();
    drop(server); // the port is free again: nobody listens there
    let output = run(CLIENT, &["--addr", &addr]);
    assert_eq!(output.status.code(), Some(1));
    let message = stderr(&output);
    assert!(
        message.starts_with(&format!("client: cannot connect to {addr}: ")),
        "{message}"
    );
}

/// `client --clients 3` against `select echo` prints an answer line per message and a
/// summary where every client got every answer.
#[test]
fn timed_clients_report_every_answer() {
    let server = Server::start(SELECT, &["echo"]);
    let addr = server.addr.to_string();
    let output = run(
        CLIENT,
        &[
            "--addr",
            &addr,
            "--clients",
            "3",
            "--every-ms",
            "100",
            "--for-secs",
            "1",
        ],
    );
    assert!(output.status.success(), "{}", stderr(&output));
    let text = stdout(&output);
    for id in 1..=3 {
        assert!(
            text.contains(&format!("client {id}: message 1 answered in ")),
            "{text}"
        );
        assert!(
            text.contains(&format!(
                "client {id}: 10 sent, 10 answered, slowest answer "
            )),
            "{text}"
        );
    }
}
