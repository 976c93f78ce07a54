//! `--timeline FILE` on the runtimes of lessons 5, 6 and 7: a real session is recorded, the
//! file is valid Trace Event Format (the `timeline` tool reads it strictly: every event has
//! name, ph, ts, pid and tid, a complete event dur, every wake both ends), and what it shows
//! is what happened, in order.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;

use common::{PATIENCE, Server, TempFile, run_to_end};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use timeline::{Slice, Trace};

/// Sends `line` and reads its echo.
fn round_trip(stream: &mut TcpStream, line: &[u8]) {
    stream.write_all(line).expect("send");
    let mut echo = vec![0; line.len()];
    stream.read_exact(&mut echo).expect("the echo");
    assert_eq!(echo, line);
}

/// Runs `bin echo --timeline FILE` with two clients that each send two lines, one after the
/// other, then SIGTERM; the trace it wrote.
fn two_client_session(bin: &str, extra: &[&str]) -> Trace {
    let file = TempFile::new("timeline.json");
    let path = file.path.to_str().expect("a UTF-8 path");
    let mut args = vec!["echo", "--timeline", path];
    args.extend_from_slice(extra);
    let mut server = Server::start(bin, &args);
    let mut first = TcpStream::connect(server.addr).expect("connect");
    let mut second = TcpStream::connect(server.addr).expect("connect");
    for stream in [&first, &second] {
        stream.set_read_timeout(Some(PATIENCE)).expect("timeout");
    }
    round_trip(&mut first, b"hello\n");
    round_trip(&mut second, b"world\n");
    round_trip(&mut first, b"again\n");
    drop((first, second));
    assert!(common::wait_until(
        || server.process.count_stderr("closed") == 2
    ));
    kill(
        Pid::from_raw(server.process.child.id() as i32),
        Signal::SIGTERM,
    )
    .expect("SIGTERM");
    server.process.expect_success();
    assert!(
        server.process.wait_for_stderr("timeline: "),
        "{:?}",
        server.process.stderr()
    );
    timeline::read(&file.path).expect("a valid trace")
}

/// The polls of tasks whose name starts with `prefix`, in time order.
fn polls<'a>(trace: &'a Trace, prefix: &str) -> Vec<&'a Slice> {
    trace
        .slices
        .iter()
        .filter(|slice| slice.cat == "poll" && slice.name.starts_with(prefix))
        .collect()
}

/// The order a learner reads in the picture: the accepting task's poll, then the first
/// connection's first poll; later a wait (`wait_name`) that ends, a wake after it, and the
/// connection's poll that the wake points at.
fn assert_accept_poll_wait_wake_poll(trace: &Trace, accept: &str, wait_name: &str) {
    assert_order(trace, accept, "conn ", wait_name);
}

/// [`assert_accept_poll_wait_wake_poll`], for connections whose tasks are called `conn` …
/// (lessons 5 to 7) or `client` … (lesson 8's green threads).
fn assert_order(trace: &Trace, accept: &str, connection: &str, wait_name: &str) {
    let accepts = polls(trace, accept);
    let connections = polls(trace, &format!("{connection}127.0.0.1:"));
    let (Some(accept), Some(first_poll)) = (accepts.first(), connections.first()) else {
        panic!("no accept or no connection poll: {:#?}", trace.slices);
    };
    assert!(accept.ts < first_poll.ts, "the accept comes first");
    let names: std::collections::HashSet<&str> =
        connections.iter().map(|poll| poll.name.as_str()).collect();
    assert_eq!(
        names.len(),
        2,
        "one task per client, named for it: {names:?}"
    );
    let found = trace.slices.iter().any(|wait| {
        wait.cat == "wait"
            && wait.name == wait_name
            && wait.ts > first_poll.ts
            && trace.wakes.iter().any(|wake| {
                let woke = trace.slice_at(wake.to.0, wake.to.1);
                wake.from.1 >= wait.ts + wait.dur
                    && woke.is_some_and(|poll| {
                        poll.cat == "poll"
                            && poll.name.starts_with(connection)
                            && poll.ts > wake.from.1
                    })
            })
    });
    assert!(
        found,
        "no {wait_name} followed by a wake of a connection's poll: {:#?}",
        trace.slices
    );
}

/// Lesson 5, two clients: accept, a connection's poll, epoll_wait, its wake, its poll — on
/// one lane, the loop's.
#[test]
fn lesson5_two_clients_show_accept_poll_wait_wake_poll() {
    let trace = two_client_session(env!("CARGO_BIN_EXE_async-await"), &[]);
    assert_eq!(trace.program, "async-await echo");
    assert_accept_poll_wait_wake_poll(&trace, "main", "epoll_wait");
    let loop_lane = trace.lanes[0].tid;
    assert!(
        polls(&trace, "conn ")
            .iter()
            .all(|poll| poll.tid == loop_lane),
        "every task runs on the loop's thread"
    );
}

/// Lesson 6, two clients: the same order, with io_uring_enter as the wait, and each enter
/// says what it submitted and what completed.
#[test]
fn lesson6_two_clients_show_accept_poll_wait_wake_poll() {
    let trace = two_client_session(env!("CARGO_BIN_EXE_completion"), &[]);
    assert_accept_poll_wait_wake_poll(&trace, "main", "io_uring_enter");
    let enter = trace
        .slices
        .iter()
        .find(|slice| slice.name == "io_uring_enter" && slice.args.contains("recv"))
        .expect("an enter that completed a receive");
    assert!(enter.args.contains("\"completions\":"), "{}", enter.args);
}

/// Lesson 7, two clients on two workers, with each driver: a lane for main and each worker,
/// and for the reactor only with `--driver thread`; an epoll_wait (the reactor's, or an idle
/// worker's) is followed by a wake of a connection's poll on a worker.
#[test]
fn lesson7_two_clients_show_accept_poll_wait_wake_poll() {
    for driver in ["thread", "worker"] {
        let args = ["--workers", "2", "--driver", driver];
        let trace = two_client_session(env!("CARGO_BIN_EXE_work-stealing"), &args);
        let lanes: Vec<&str> = trace.lanes.iter().map(|lane| lane.name.as_str()).collect();
        for lane in ["main", "worker-0", "worker-1"] {
            assert!(
                lanes.contains(&lane),
                "--driver {driver}: no {lane} lane: {lanes:?}"
            );
        }
        let reactor_lane = lanes.contains(&"reactor");
        assert_eq!(
            reactor_lane,
            driver == "thread",
            "--driver {driver}: {lanes:?}"
        );
        assert_accept_poll_wait_wake_poll(&trace, "main", "epoll_wait");
    }
}

/// Lesson 8, two clients: each green thread's run is a slice named for its client, and the
/// same order holds — the scheduler's epoll_wait, then the unpark, then the run it causes.
#[test]
fn lesson8_two_clients_show_accept_run_wait_wake_run() {
    if std::env::consts::ARCH != "x86_64" {
        return; // lesson 8's switch is x86-64 assembly: elsewhere it refuses to run
    }
    let trace = two_client_session(env!("CARGO_BIN_EXE_green-threads"), &[]);
    assert_eq!(trace.program, "green-threads echo");
    assert_order(&trace, "main", "client ", "epoll_wait");
}

/// The tours record too: lesson 7's shows a steal, lesson 5's a job on the blocking pool's
/// own lane (its DNS lookup).
#[test]
fn the_tours_record_steals_and_the_blocking_pool() {
    let file = TempFile::new("tour.json");
    let path = file.path.to_str().expect("a UTF-8 path");
    run_to_end(
        env!("CARGO_BIN_EXE_work-stealing"),
        &["tour", "--timeline", path],
    );
    let tour = timeline::read(&file.path).expect("a valid trace");
    assert!(
        tour.instants.iter().any(|instant| instant.name == "steal"),
        "no steal in lesson 7's tour"
    );
    run_to_end(
        env!("CARGO_BIN_EXE_async-await"),
        &["tasks", "--timeline", path],
    );
    let tasks = timeline::read(&file.path).expect("a valid trace");
    let job = tasks
        .slices
        .iter()
        .find(|slice| slice.name == "blocking job")
        .expect("the DNS lookup ran on the blocking pool");
    let pool_lane = tasks.lanes.iter().find(|lane| lane.tid == job.tid);
    assert!(pool_lane.is_some_and(|lane| lane.name.starts_with("blocking-")));
    // (Whether the pool's thread also wakes the task depends on who is first: a lookup done
    // before the task first polls its handle is found there, with no wake.)
}

/// Without `--timeline` nothing is written, and a path that cannot be created fails before
/// the program starts, in one line.
#[test]
fn a_timeline_that_cannot_be_written_is_said_at_once() {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_async-await"))
        .args([
            "echo",
            "--addr",
            "127.0.0.1:0",
            "--timeline",
            "/nonexistent/dir/t.json",
        ])
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run");
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("--timeline /nonexistent/dir/t.json: No such file or directory"),
        "{stderr}"
    );
    assert!(output.stdout.is_empty(), "it started anyway");
}

/// A FIFO as `--timeline` is refused at once, in one line, whether or not anyone reads it:
/// the trace is written in one go at the end, so with no reader the open would block before
/// `listening on` (silently, forever), and a reader that stops reading would hold the end of
/// the program after `shutdown complete`, deaf to every signal.
#[test]
fn a_fifo_as_the_timeline_is_refused() {
    let fifo = TempFile::new("timeline.fifo");
    nix::unistd::mkfifo(&fifo.path, nix::sys::stat::Mode::S_IRWXU).expect("mkfifo");
    let path = fifo.path.to_str().expect("a UTF-8 path");
    let args = ["echo", "--addr", "127.0.0.1:0", "--timeline", path];
    let refused = |server: &mut common::Process| {
        assert_eq!(server.wait_exit(), Some(1), "it started");
        let stderr = server.stderr();
        assert_eq!(stderr.len(), 1, "{stderr:?}");
        assert!(
            stderr[0].contains(&format!("--timeline {path}: a FIFO")),
            "{stderr:?}"
        );
    };
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_async-await"));
    command.args(args);
    refused(&mut common::Process::spawn(command)); // nobody reads it
    // A reader that holds it open and never reads (opening for reading and writing does not
    // wait for a writer).
    let _reader = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&fifo.path)
        .expect("open the FIFO");
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_async-await"));
    command.args(args);
    refused(&mut common::Process::spawn(command));
}
