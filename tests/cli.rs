//! Every binary's command line: each `--help` the README points to parses, and bad input
//! gets a one-line error and clap's usage, never a panic.

mod common;

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::process::CommandExt;
use std::process::{Command, Output};
use std::thread;
use std::time::{Duration, Instant};

use common::{Closed, Process, Server, run_with_a_closed};

const SYNC: &str = env!("CARGO_BIN_EXE_sync");
const SELECT: &str = env!("CARGO_BIN_EXE_select");
const GENERATORS: &str = env!("CARGO_BIN_EXE_generators");
const SELECTOR: &str = env!("CARGO_BIN_EXE_selector");
const ASYNC_AWAIT: &str = env!("CARGO_BIN_EXE_async-await");
const COROUTINES: &str = env!("CARGO_BIN_EXE_coroutines");
const CLIENT: &str = env!("CARGO_BIN_EXE_client");
const COMPLETION: &str = env!("CARGO_BIN_EXE_completion");
const WORK_STEALING: &str = env!("CARGO_BIN_EXE_work-stealing");
const TIMELINE: &str = env!("CARGO_BIN_EXE_timeline");
const GREEN_THREADS: &str = env!("CARGO_BIN_EXE_green-threads");

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
        (ASYNC_AWAIT, &["clock", "--help"], "--block-ms"),
        (ASYNC_AWAIT, &["cancel", "--help"], "Usage:"),
        (COROUTINES, &["--help"], "repl"),
        (COROUTINES, &["echo", "--help"], "--trace"),
        (COROUTINES, &["writer", "--help"], "--interval-ms"),
        (COROUTINES, &["repl", "--help"], "interpreter session"),
        (CLIENT, &["--help"], "--clients"),
        (ASYNC_AWAIT, &["echo", "--help"], "--timeline"),
        (ASYNC_AWAIT, &["writer", "--help"], "--timeline"),
        (ASYNC_AWAIT, &["tasks", "--help"], "--timeline"),
        (COMPLETION, &["echo", "--help"], "--timeline"),
        (COMPLETION, &["writer", "--help"], "--timeline"),
        (WORK_STEALING, &["echo", "--help"], "--timeline"),
        (WORK_STEALING, &["writer", "--help"], "--timeline"),
        (WORK_STEALING, &["tour", "--help"], "--timeline"),
        (TIMELINE, &["--help"], "--busiest-ms"),
        (GREEN_THREADS, &["echo", "--help"], "--timeline"),
        (GREEN_THREADS, &["writer", "--help"], "--timeline"),
        (GREEN_THREADS, &["--help"], "overflow"),
        (GREEN_THREADS, &["echo", "--help"], "--trace"),
        (GREEN_THREADS, &["writer", "--help"], "--interval-ms"),
        (GREEN_THREADS, &["block", "--help"], "Usage:"),
        (GREEN_THREADS, &["stacks", "--help"], "--count"),
        (GREEN_THREADS, &["overflow", "--help"], "Usage:"),
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
        (ASYNC_AWAIT, &["clock", "--block-ms", "0"]),
        (ASYNC_AWAIT, &["clock", "--block-ms", "60001"]),
        (ASYNC_AWAIT, &["clock", "--fixed"]),
        (CLIENT, &["--every-ms", "10"]), // only meaningful with --clients
        (CLIENT, &["--clients", "0"]),
        (GREEN_THREADS, &["stacks", "--count", "0"]),
        (GREEN_THREADS, &["stacks", "--count", "20001"]),
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

/// Runs `client <args…>` against a `select echo` of its own, stdout a pipe; `adjust` comes
/// last (stdout to a file, a resource limit). Returns the server, to keep it alive, and the
/// running client.
fn timed_client(args: &[&str], adjust: impl FnOnce(&mut Command)) -> (Server, Process) {
    let server = Server::start(SELECT, &["echo"]);
    let mut command = Command::new(CLIENT);
    command
        .args(["--addr", &server.addr.to_string()])
        .args(args);
    (server, Process::spawn_adjusted(command, adjust))
}

/// `client --clients 3 … | head -1`: once the reader has its line and closes the pipe, the
/// client stops quietly: exit 0, nothing on stderr. (It panicked: `failed printing to
/// stdout: Broken pipe`, exit 101.)
#[test]
fn timed_client_ends_quietly_when_the_reader_goes_away() {
    let args = ["--clients", "3", "--every-ms", "100", "--for-secs", "1"];
    let (_server, mut client) = timed_client(&args, |_| {});
    let stdout = client.child.stdout.take().expect("stdout is piped");
    let mut first_line = String::new();
    let mut reader = BufReader::new(stdout);
    reader.read_line(&mut first_line).expect("read stdout");
    assert!(first_line.contains(" answered in "), "{first_line:?}");
    drop(reader); // closes the pipe, as `head -1` does once it has its line
    let code = client.wait_exit();
    assert_eq!(code, Some(0), "{:?}", client.stderr());
    assert_eq!(client.stderr(), Vec::<String>::new());
}

/// `client --clients 3 … > /dev/full`: a failed write to stdout is an error like any other:
/// one line on stderr, exit 1. (It panicked, exit 101.)
#[test]
fn timed_client_on_a_full_disk_is_one_error_line() {
    let full = File::options()
        .write(true)
        .open("/dev/full")
        .expect("open /dev/full");
    let args = ["--clients", "3", "--every-ms", "100", "--for-secs", "1"];
    let (_server, mut client) = timed_client(&args, |command| {
        command.stdout(full);
    });
    let code = client.wait_exit();
    assert_eq!(code, Some(1), "{:?}", client.stderr());
    assert_eq!(
        client.stderr(),
        ["client: No space left on device (os error 28)"]
    );
}

/// The interactive client (`client | head -1`) also ends quietly when stdout's reader goes
/// away: exit 0, and only its `connected to …` line on stderr (not `client: Broken pipe`).
#[test]
fn interactive_client_ends_quietly_when_the_reader_goes_away() {
    let (_server, mut client) = timed_client(&[], |_| {});
    let mut stdin = client.child.stdin.take().expect("stdin is piped");
    stdin.write_all(b"first\n").expect("type a line");
    let mut reader = BufReader::new(client.child.stdout.take().expect("stdout is piped"));
    let mut echo = String::new();
    reader.read_line(&mut echo).expect("read the echo");
    assert_eq!(echo, "first\n");
    drop(reader); // closes the pipe, as `head -1` does once it has its line
    // Their echo is what the client cannot print. More than one line: a process another
    // test forks at this moment holds a copy of the pipe's read end until its exec, and a
    // write then still finds a reader. (The client may have exited already.)
    for _ in 0..100 {
        if client.child.try_wait().expect("try_wait").is_some() {
            break;
        }
        let _ = stdin.write_all(b"more\n");
        thread::sleep(Duration::from_millis(50));
    }
    let code = client.wait_exit();
    let stderr = client.stderr();
    assert_eq!(code, Some(0), "{stderr:?}");
    assert_eq!(stderr.len(), 1, "{stderr:?}");
    assert!(stderr[0].starts_with("connected to "), "{stderr:?}");
}

/// Numbers too big to run are refused by clap (exit 2, `… is not in 1..=10000`), before
/// anything starts: 65535 clients failed to spawn their threads (a panic, exit 101), and
/// `--for-secs 18446744073709551615` overflowed a `Duration` in every client thread.
#[test]
fn client_refuses_numbers_too_big_to_run() {
    // A port nobody listens on: the old client tried, and failed there, quickly.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free port")
        .to_string();
    let cases: &[(&[&str], &str)] = &[
        (&["--clients", "65535"], "65535 is not in 1..=10000"),
        (&["--clients", "10001"], "10001 is not in 1..=10000"),
        (
            &["--clients", "2", "--for-secs", "18446744073709551615"],
            "18446744073709551615 is not in 0..=86400",
        ),
        (
            &["--clients", "2", "--every-ms", "18446744073709551615"],
            "18446744073709551615 is not in 0..=3600000",
        ),
    ];
    for &(args, reason) in cases {
        let output = Command::new(CLIENT)
            .args(["--addr", &closed])
            .args(args)
            .output()
            .expect("run the client");
        let message = stderr(&output);
        assert_eq!(output.status.code(), Some(2), "{args:?}: {message}");
        assert!(
            message.starts_with("error: ") && message.contains(reason),
            "{args:?}: {message}"
        );
    }
}

/// When the client threads cannot all be started (here an address-space limit leaves no
/// room for 1,000 thread stacks), the client says so in one line and exits 1; the clients
/// it did start stop at their next answer. (Spawning panicked: exit 101.)
#[test]
fn timed_client_out_of_threads_is_one_error_line() {
    let args = ["--clients", "1000", "--every-ms", "100", "--for-secs", "1"];
    let (_server, mut client) = timed_client(&args, |command| {
        // Safety: the closure runs in the child between fork and exec, where only
        // async-signal-safe calls are allowed; setrlimit is one, and nothing here allocates.
        unsafe {
            command.pre_exec(|| {
                use nix::sys::resource::{Resource, setrlimit};
                const ADDRESS_SPACE: u64 = 400 << 20;
                setrlimit(Resource::RLIMIT_AS, ADDRESS_SPACE, ADDRESS_SPACE).map_err(Into::into)
            });
        }
    });
    let code = client.wait_exit();
    let stderr = client.stderr();
    assert_eq!(code, Some(1), "{stderr:?}");
    assert_eq!(stderr.len(), 1, "{stderr:?}");
    assert!(
        stderr[0].starts_with("client: cannot start client ") && stderr[0].contains(" of 1000: "),
        "{stderr:?}"
    );
}

/// Against a server that accepts and never answers, the timed client says its wait timed
/// out, and after how long (`timed out after 10.00 s`: one client's run of 0 s plus 10 s),
/// not `Resource temporarily unavailable (os error 11)`.
#[test]
fn timed_client_says_when_an_answer_timed_out() {
    // The kernel completes the connection for a listener that never calls accept: the
    // client's line sits unread.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = silent.local_addr().expect("its address").to_string();
    let mut command = Command::new(CLIENT);
    command.args(["--addr", &addr, "--clients", "1", "--for-secs", "0"]);
    let mut client = Process::spawn(command);
    // The patience is 10 s; wait_exit's own is as long, so first wait here, longer.
    let deadline = Instant::now() + Duration::from_secs(30);
    while client.child.try_wait().expect("try_wait").is_none() {
        assert!(Instant::now() < deadline, "the client did not give up");
        thread::sleep(Duration::from_millis(100));
    }
    let code = client.wait_exit();
    let mut stdout = String::new();
    let mut pipe = client.child.stdout.take().expect("stdout is piped");
    pipe.read_to_string(&mut stdout).expect("read stdout");
    assert_eq!(code, Some(1), "{:?}", client.stderr());
    assert!(
        stdout.contains(
            "client 1: 1 sent, 0 answered, slowest answer 0.00 ms — \
             no answer to message 1: timed out after 10.00 s\n"
        ),
        "{stdout}"
    );
}

/// Each lesson's `writer` and lesson 4's `repl` end as usual with stdout a pipe nobody reads
/// (they print nothing there) and with stderr one (the lines they say there are dropped):
/// exit 0, and the writer's file gets the line typed on stdin.
#[test]
fn writers_and_the_repl_run_on_with_a_closed_stdout_or_stderr() {
    let typed = common::TempFile::new("typed.txt");
    std::fs::write(&typed.path, "hello\n").expect("write the typed line");
    let stdin = || File::open(&typed.path).expect("open the typed line");
    for closed in [Closed::Stdout, Closed::Stderr] {
        for bin in [SYNC, SELECT, SELECTOR, GENERATORS, COROUTINES, ASYNC_AWAIT] {
            let output = common::TempFile::new("closed-writer.txt");
            let mut writer = Command::new(bin);
            writer
                .args(["writer", "--count", "2", "--interval-ms", "10", "--output"])
                .arg(&output.path)
                .stdin(stdin());
            let (status, other) = run_with_a_closed(closed, writer);
            assert!(
                status.success(),
                "{bin} writer, {closed:?} closed: {status}: {other}"
            );
            let log = output.read();
            assert!(
                log.contains("stdin ] hello"),
                "{bin}, {closed:?} closed: {log}"
            );
        }
        let mut repl = Command::new(COROUTINES);
        repl.arg("repl").stdin(stdin());
        let (status, other) = run_with_a_closed(closed, repl);
        assert!(
            status.success(),
            "repl, {closed:?} closed: {status}: {other}"
        );
    }
}
