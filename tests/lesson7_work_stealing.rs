//! Lesson 7: the work-stealing runtime serves every client from several workers, shuts down
//! gracefully, runs the writer like every lesson, and its tour shows stealing.

mod common;

use std::io::Read;
use std::process::Command;
use std::thread;
use std::time::Duration;

use common::writer;
use common::{PATIENCE, Server, conformance::round_trip};
use echo_client::connect;

const WORK_STEALING: &str = env!("CARGO_BIN_EXE_work-stealing");

/// The whole conformance suite against `work-stealing echo` on two workers.
mod echo {
    crate::conformance_suite!(concurrent: super::WORK_STEALING, &["echo", "--workers", "2"]);
}

/// The same suite on one worker: the runtime must not depend on a thief to make progress.
mod echo_one_worker {
    crate::conformance_suite!(concurrent: super::WORK_STEALING, &["echo", "--workers", "1"]);
}

/// `work-stealing echo` holds 10,000 connections at once and still echoes on them.
#[test]
fn holds_ten_thousand_connections() {
    common::conformance::holds_ten_thousand_connections(WORK_STEALING, &["echo"]);
}

/// On SIGINT, a client in the middle of a large echo still gets every byte the server read,
/// then a clean EOF (not a reset); the server prints its summary with that byte count and
/// exits 0.
#[test]
fn sigint_shuts_down_gracefully_without_losing_echo() {
    common::shutdown::sigint_loses_no_echo(WORK_STEALING, &["echo", "--workers", "2"]);
}

/// SIGTERM shuts down the same way: new connections are refused, exit 0.
#[test]
fn sigterm_stops_accepting_and_exits_zero() {
    common::shutdown::sigterm_stops_accepting(WORK_STEALING, &["echo"]);
}

/// `--trace` shows the spawns, and the reactor's thread waking a connection's task.
#[test]
fn trace_shows_spawns_and_reactor_wakes() {
    let server = Server::start(WORK_STEALING, &["echo", "--trace", "--workers", "2"]);
    let client = connect(server.addr, PATIENCE).unwrap();
    assert!(server.process.wait_for_stderr("main: spawned task 0"));
    thread::sleep(Duration::from_millis(100));
    round_trip(&client, b"traced\n");
    server
        .process
        .expect_stderr(&["reactor: waiting for I/O", "ready", "→ wake 1 task"]);
}

fn run(args: &[&str]) -> (String, String) {
    common::run_to_end(WORK_STEALING, args)
}

/// `tour --trace`: tasks spawned on a worker that then stays busy are all stolen by the
/// other, workers park and are unparked, and while one worker computes, the other echoes
/// the pings (each answered well within the 600 ms the busy task takes: the bound only
/// catches a frozen runtime).
#[test]
fn tour_shows_stealing_parking_and_a_busy_worker() {
    let (stdout, stderr) = run(&["tour", "--trace"]);
    for expected in [
        "a runtime with 2 workers",
        "8 of the 8 ran on other workers: stolen from its queue",
        "the sleeping task woke up after",
        "5 pings were echoed meanwhile",
    ] {
        assert!(stdout.contains(expected), "no {expected:?} in:\n{stdout}");
    }
    for expected in ["stole", "nothing to do → park", "unparked", "spawned task"] {
        assert!(stderr.contains(expected), "no {expected:?} in:\n{stderr}");
    }
    let slowest = stdout
        .lines()
        .find_map(|line| line.split_once("the slowest took "))
        .map(|(_, took)| took.to_string())
        .unwrap_or_else(|| panic!("{stdout}"));
    assert!(
        !slowest.ends_with('s') || slowest.ends_with("ms") || slowest.ends_with("µs"),
        "a ping waited seconds: {slowest}"
    );
}

/// In `work-stealing writer` pipe lines arrive while stdin stays silent.
#[test]
fn writer_pipe_lines_arrive_while_stdin_is_silent() {
    writer::pipe_lines_arrive_while_stdin_is_silent(WORK_STEALING, &["writer"]);
}

/// EOF on stdin ends `work-stealing writer` with exit 0, losing no line.
#[test]
fn writer_exits_on_eof_keeping_every_line() {
    writer::exits_on_eof_keeping_every_line(WORK_STEALING, &["writer"]);
}

/// `work-stealing writer` stops reading the closed pipe and sits idle.
#[test]
fn writer_idles_after_the_pipe_closes() {
    writer::idles_after_the_pipe_closes(WORK_STEALING, &["writer"]);
}

/// `work-stealing writer < file`: epoll refuses a regular file; the writer reads it anyway.
#[test]
fn writer_reads_stdin_from_a_regular_file() {
    writer::works_with_stdin_from_a_file(WORK_STEALING, &["writer"]);
}

/// Two `work-stealing writer`s appending to one file at once never mangle a line.
#[test]
fn writer_lines_stay_whole_with_two_writers_on_one_file() {
    writer::two_writers_appending_to_one_file_keep_lines_whole(WORK_STEALING, &["writer"]);
}

/// `work-stealing writer` on a full disk: one error line, exit 1, no half line in the file.
#[test]
fn writer_on_a_full_disk_leaves_no_half_line() {
    writer::a_full_disk_leaves_no_half_line(WORK_STEALING, &["writer"]);
}

/// `work-stealing writer --output f < f` is refused in one line, the file untouched.
#[test]
fn writer_refuses_to_read_its_own_output() {
    writer::refuses_to_read_its_own_output(WORK_STEALING, &["writer"]);
}

/// A long line costs `work-stealing writer` linear time, and arrives whole.
#[test]
fn writer_long_line_costs_linear_time() {
    writer::a_long_line_costs_linear_time(WORK_STEALING, &["writer"]);
}

/// `work-stealing writer --output fifo` says it waits for the FIFO's reader, then writes.
#[test]
fn writer_says_it_waits_for_a_fifo_reader() {
    writer::says_it_waits_for_a_fifo_reader(WORK_STEALING, &["writer"]);
}

/// `work-stealing writer` reads a non-blocking stdin correctly.
#[test]
fn writer_reads_a_nonblocking_stdin() {
    writer::reads_a_nonblocking_stdin(WORK_STEALING, &["writer"]);
}

/// `work-stealing writer` writes the pipe's lines on time while stdin (a big file) floods.
#[test]
fn writer_pipe_lines_on_time_while_stdin_floods() {
    writer::pipe_lines_on_time_while_stdin_floods(WORK_STEALING, &["writer"]);
}

/// `work-stealing writer` reads stdin's line and EOF while the pipe floods.
#[test]
fn writer_reads_stdin_eof_while_the_pipe_floods() {
    writer::eof_on_stdin_is_read_while_the_pipe_floods(WORK_STEALING, &["writer"]);
}

/// Out of fds (a limit of 64), with 2,070 connections that came and went waiting in the
/// backlog, `work-stealing echo` gets through them and serves a new client within seconds.
#[test]
fn echo_recovers_quickly_from_running_out_of_fds() {
    common::conformance::recovers_quickly_from_running_out_of_fds(
        WORK_STEALING,
        &["echo", "--workers", "2"],
    );
}

/// Every subcommand's `--help` parses and names its options.
#[test]
fn every_help_parses() {
    for (args, expected) in [
        (&["--help"][..], "tour"),
        (&["echo", "--help"], "--workers"),
        (&["writer", "--help"], "--output"),
        (&["tour", "--help"], "--trace"),
    ] {
        let (stdout, _) = run(args);
        assert!(stdout.contains(expected), "{args:?}: {stdout}");
    }
}

/// `--workers 0` is refused with one clear error, not a runtime without workers.
#[test]
fn zero_workers_is_refused() {
    let output = Command::new(WORK_STEALING)
        .args(["echo", "--workers", "0"])
        .output()
        .expect("run work-stealing");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("invalid value '0' for '--workers"),
        "{stderr}"
    );
}

/// `tour | head -1`: when the reader closes stdout, the tour ends quietly, exit 0.
#[test]
fn tour_ends_quietly_when_the_reader_goes_away() {
    let mut child = Command::new(WORK_STEALING)
        .arg("tour")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run work-stealing");
    let mut first = [0; 1];
    child
        .stdout
        .take()
        .expect("stdout is piped")
        .read_exact(&mut first)
        .expect("the tour's first byte");
    // Dropped: the read end is closed, the tour's next line fails with EPIPE.
    let output = child.wait_with_output().expect("wait for the tour");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{}: {stderr}", output.status);
    assert_eq!(stderr, "");
}

/// `tour --trace 2>&1 | head`: writing the trace to a closed pipe panics a worker or the
/// reactor's thread outside any task; the process ends instead of hanging with a dead
/// runtime thread.
#[test]
fn a_runtime_thread_that_panics_ends_the_process() {
    let mut child = Command::new(WORK_STEALING)
        .args(["tour", "--trace"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run work-stealing");
    let mut first = [0; 1];
    child
        .stderr
        .take()
        .expect("stderr is piped")
        .read_exact(&mut first)
        .expect("the first trace byte");
    let started = std::time::Instant::now();
    loop {
        if child.try_wait().expect("wait for the tour").is_some() {
            break; // ended, whatever its exit code: the point is that it ended
        }
        if started.elapsed() > PATIENCE {
            let _ = child.kill();
            panic!("the tour hangs after its stderr was closed");
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// The hostile checks of the shutdown contract and the signals, against `work-stealing echo`.
mod hostile {
    use std::io::{ErrorKind, Read, Write};
    use std::net::{Shutdown, TcpStream};
    use std::os::unix::process::CommandExt;
    use std::process::{Command, Stdio};
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::thread;
    use std::time::{Duration, Instant};

    use echo_client::connect;
    use nix::sys::signal::Signal;

    use crate::common::conformance::round_trip;
    use crate::common::shutdown::signal;
    use crate::common::{PATIENCE, Server, wait_until};

    use super::WORK_STEALING;

    /// The byte at `offset` of what the clients here send.
    fn pattern(offset: u64) -> u8 {
        (offset % 251) as u8
    }

    /// Waits (bounded by `limit`) for the server to exit; returns its exit code.
    fn exit_within(server: &mut Server, limit: Duration) -> Option<i32> {
        let started = Instant::now();
        loop {
            if let Some(status) = server.process.child.try_wait().unwrap() {
                return status.code();
            }
            assert!(
                started.elapsed() < limit,
                "still running {limit:?} after the signal: {:?}",
                server.process.stderr()
            );
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGTERM sent the moment `listening on` is read is obeyed: a graceful exit 0, five
    /// times out of five (the handler is installed before the address is printed).
    #[test]
    fn sigterm_at_start_up_is_obeyed() {
        for _ in 0..5 {
            let mut server = Server::start(WORK_STEALING, &["echo", "--workers", "2"]);
            signal(&server, Signal::SIGTERM);
            server.process.expect_success();
            assert!(server.process.wait_for_stderr("SIGTERM: shutting down"));
        }
    }

    /// Out of fds (a limit of 32) with 40 clients connected and more waiting in the backlog,
    /// so that every `accept` fails at once: SIGTERM still ends the server, exit 0, within a
    /// few seconds.
    #[test]
    fn sigterm_while_out_of_fds_is_obeyed() {
        for workers in ["1", "2"] {
            let mut server =
                Server::start_with_fd_limit(WORK_STEALING, &["echo", "--workers", workers], 32);
            let clients: Vec<TcpStream> = (0..60)
                .map(|_| connect(server.addr, PATIENCE).unwrap())
                .collect();
            assert!(server.process.wait_for_stderr("Too many open files"));
            thread::sleep(Duration::from_millis(600)); // past one out-of-fds pause
            signal(&server, Signal::SIGTERM);
            assert_eq!(exit_within(&mut server, Duration::from_secs(5)), Some(0));
            drop(clients);
        }
    }

    /// Under a limit of 8 fds the server either runs and obeys SIGTERM, or exits 1 before
    /// `listening on` with one line naming the cause: "Too many open files".
    #[test]
    fn a_tiny_fd_limit_is_named() {
        let mut command = Command::new(WORK_STEALING);
        command
            .args(["echo", "--addr", "127.0.0.1:0"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        // Safety: between fork and exec only async-signal-safe calls: setrlimit is one.
        unsafe {
            command.pre_exec(|| {
                use nix::sys::resource::{Resource, setrlimit};
                setrlimit(Resource::RLIMIT_NOFILE, 8, 8).map_err(Into::into)
            });
        }
        let mut child = command.spawn().unwrap();
        let mut stdout = child.stdout.take().unwrap();
        let mut first = String::new();
        let mut byte = [0; 1];
        while !first.ends_with('\n') && stdout.read(&mut byte).unwrap() == 1 {
            first.push(byte[0] as char);
        }
        if first.starts_with("listening on") {
            // It runs: it must obey the signal.
            let pid = nix::unistd::Pid::from_raw(child.id() as i32);
            nix::sys::signal::kill(pid, Signal::SIGTERM).unwrap();
        }
        let output = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        if first.starts_with("listening on") {
            assert_eq!(output.status.code(), Some(0), "{stderr}");
        } else {
            assert_eq!(output.status.code(), Some(1), "{stderr}");
            assert_eq!(stderr.lines().count(), 1, "{stderr}");
            assert!(stderr.contains("Too many open files"), "{stderr}");
        }
    }

    /// A client sends without pause and reads slowly (64 KiB per 10 ms), but stops reading
    /// from 1.5 s to 4.5 s; SIGTERM at 2 s. So the echo waits in the server's socket when
    /// the signal comes, and for longer than a fixed linger before a close; then the client
    /// reads on. It gets every
    /// byte back, then a clean EOF (no reset), and the summary's `echoed N bytes` is exactly
    /// what it received.
    #[test]
    fn shutdown_beside_a_slow_reader_loses_nothing() {
        let mut server = Server::start(WORK_STEALING, &["echo", "--workers", "2"]);
        let stream = connect(server.addr, PATIENCE).unwrap();
        let stop = AtomicBool::new(false);
        let received = thread::scope(|scope| {
            scope.spawn(|| {
                let mut sent = 0u64;
                let mut block = vec![0; 64 << 10];
                while !stop.load(Ordering::SeqCst) {
                    for (i, byte) in block.iter_mut().enumerate() {
                        *byte = pattern(sent + i as u64);
                    }
                    match (&stream).write(&block) {
                        Ok(n) => sent += n as u64,
                        Err(_) => break, // the server is gone: expected at the end
                    }
                }
            });
            let reader = scope.spawn(|| {
                let mut received = 0u64;
                let mut buf = vec![0; 64 << 10];
                let started = Instant::now();
                let mut paused = false;
                loop {
                    if !paused && started.elapsed() > Duration::from_millis(1500) {
                        paused = true;
                        thread::sleep(Duration::from_secs(3));
                    }
                    match (&stream).read(&mut buf) {
                        Ok(0) => return Ok(received),
                        Ok(n) => {
                            for (i, &byte) in buf[..n].iter().enumerate() {
                                let offset = received + i as u64;
                                assert_eq!(byte, pattern(offset), "byte {offset}");
                            }
                            received += n as u64;
                            thread::sleep(Duration::from_millis(10));
                        }
                        Err(err) if err.kind() == ErrorKind::Interrupted => {}
                        Err(err) => return Err((err, received)),
                    }
                }
            });
            thread::sleep(Duration::from_secs(2));
            signal(&server, Signal::SIGTERM);
            let received = reader.join().unwrap();
            stop.store(true, Ordering::SeqCst);
            let _ = stream.shutdown(Shutdown::Both);
            received
        });
        let received = received.expect("every byte, then a clean EOF, not a reset");
        assert_eq!(exit_within(&mut server, PATIENCE), Some(0));
        let summary = format!("served 1 connection, echoed {received} bytes");
        assert!(
            server.process.wait_for_stderr(&summary),
            "received {received}: {:?}",
            server.process.stderr()
        );
    }

    /// A client that sends and never reads: ten seconds after SIGTERM the server gives up on
    /// it, says how many bytes it dropped (one line for the connection, the same count in
    /// the summary), and exits 0. The `echoed N bytes` of its summary counts only what left:
    /// afterwards the client finds exactly N bytes waiting for it.
    #[test]
    fn shutdown_gives_up_on_a_client_that_never_reads() {
        let mut server = Server::start(WORK_STEALING, &["echo", "--workers", "2"]);
        let stream = connect(server.addr, PATIENCE).unwrap();
        stream.set_nonblocking(true).unwrap();
        let block = vec![7; 64 << 10];
        let mut stuck = 0;
        // Write until the server stops taking bytes: its and our buffers are full.
        while stuck < 50 {
            match (&stream).write(&block) {
                Ok(_) => stuck = 0,
                Err(err) if err.kind() == ErrorKind::WouldBlock => {
                    stuck += 1;
                    thread::sleep(Duration::from_millis(10));
                }
                Err(err) => panic!("{err}"),
            }
        }
        let peer = stream.local_addr().unwrap();
        signal(&server, Signal::SIGTERM);
        assert_eq!(exit_within(&mut server, Duration::from_secs(20)), Some(0));
        let stderr = server.process.stderr();
        let gave_up: Vec<_> = stderr.iter().filter(|l| l.contains("gave up")).collect();
        let line = format!("connection {peer}: gave up after 10s, dropping ");
        assert!(
            gave_up.len() == 2 && gave_up[0].starts_with(&line),
            "{stderr:?}"
        );
        let dropped = gave_up[0][line.len()..].to_string();
        assert!(
            dropped.ends_with(" bytes") && dropped != "0 bytes",
            "{dropped}"
        );
        assert!(
            gave_up[1].contains(&format!(
                "; gave up on 1 connection after 10s, dropping {dropped}"
            )),
            "{stderr:?}"
        );
        // What reached us is still in our socket, after the server's reset.
        stream.set_nonblocking(false).unwrap();
        let mut waiting = 0;
        let mut buf = vec![0; 64 << 10];
        while let Ok(n @ 1..) = (&stream).read(&mut buf) {
            waiting += n;
        }
        assert!(
            gave_up[1].contains(&format!("echoed {waiting} bytes;")),
            "{waiting} bytes reached the client: {stderr:?}"
        );
    }

    /// With stderr a pipe whose reader is gone, the server keeps serving: three clients in
    /// turn get their echo, and it is still running.
    #[test]
    fn a_broken_stderr_does_not_stop_the_server() {
        let mut child = Command::new(WORK_STEALING)
            .args(["echo", "--workers", "2", "--addr", "127.0.0.1:0"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        drop(child.stderr.take()); // the reader goes away
        let mut stdout = child.stdout.take().unwrap();
        let mut first = String::new();
        let mut byte = [0; 1];
        while !first.ends_with('\n') && stdout.read(&mut byte).unwrap() == 1 {
            first.push(byte[0] as char);
        }
        let addr = first
            .trim()
            .strip_prefix("listening on ")
            .unwrap()
            .parse()
            .unwrap();
        for n in 0..3 {
            let client = connect(addr, PATIENCE).unwrap();
            round_trip(&client, format!("client {n}\n").as_bytes());
        }
        assert!(child.try_wait().unwrap().is_none(), "the server died");
        let _ = child.kill();
        let _ = child.wait();
        let _ = wait_until(|| true);
    }
}
