//! Graceful shutdown, as lessons 5 and up do it: on SIGINT or SIGTERM stop accepting, let
//! every connection finish what it read, wait (bounded) until what was written has left each
//! socket, close each cleanly, print a summary, exit 0. The words, which every such lesson
//! prints alike:
//!
//! ```text
//! SIGTERM: shutting down; waiting for 2 open connections to finish
//! connection 127.0.0.1:40212: gave up after 10s, dropping 2162688 bytes
//! shutdown complete: served 2 connections, echoed 4259840 bytes; gave up on 1 connection after 10s, dropping 2162688 bytes
//! ```
//!
//! `echoed` counts only bytes that left the server; the `gave up` parts appear only when the
//! grace period (10 s) ran out.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::os::fd::AsRawFd;
use std::thread;
use std::time::{Duration, Instant};

use echo_client::connect;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use super::conformance::{round_trip, run_out_of_fds};
use super::{PATIENCE, Server};

/// How long a graceful shutdown waits for connections to finish before giving up on them.
const GRACE: Duration = Duration::from_secs(10);

/// Sends `signal` to the server's process.
pub fn signal(server: &Server, signal: Signal) {
    kill(Pid::from_raw(server.process.child.id() as i32), signal).expect("send the signal");
}

/// On SIGINT, a client in the middle of a large echo still gets every byte the server read,
/// then a clean EOF (not a reset); the server prints its summary with that byte count and
/// exits 0.
pub fn sigint_loses_no_echo(bin: &str, args: &[&str]) {
    let mut server = Server::start(bin, args);
    let stream = connect(server.addr, PATIENCE).unwrap();
    let payload: Vec<u8> = (0..8 << 20).map(|i: u32| (i % 251) as u8).collect();
    let received = thread::scope(|scope| {
        let sender = scope.spawn(|| {
            // Stops with an error once the server has closed: that is expected.
            let _ = (&stream).write_all(&payload);
            let _ = stream.shutdown(Shutdown::Write);
        });
        let mut received = vec![0; 1 << 20];
        (&stream)
            .read_exact(&mut received)
            .expect("the first MiB of echo");
        signal(&server, Signal::SIGINT);
        (&stream)
            .read_to_end(&mut received)
            .expect("the rest of the echo, then EOF (no reset)");
        sender.join().unwrap();
        received
    });
    assert_eq!(
        received,
        payload[..received.len()],
        "the echo differs from what was sent"
    );
    server.process.expect_success();
    let summary = format!("served 1 connection, echoed {} bytes", received.len());
    assert!(
        server.process.wait_for_stderr(&summary),
        "{:?}",
        server.process.stderr()
    );
}

/// SIGTERM shuts down the same way: new connections are refused, exit 0.
pub fn sigterm_stops_accepting(bin: &str, args: &[&str]) {
    let mut server = Server::start(bin, args);
    round_trip(&connect(server.addr, PATIENCE).unwrap(), b"before\n");
    signal(&server, Signal::SIGTERM);
    server.process.expect_success();
    assert!(server.process.wait_for_stderr("SIGTERM: shutting down"));
    assert!(
        connect(server.addr, Duration::from_secs(1)).is_err(),
        "still accepting"
    );
}

/// SIGTERM sent the moment `listening on` is read is obeyed gracefully — the handler is in
/// place before the address is announced — five tries out of five.
pub fn shuts_down_on_a_signal_at_start_up(bin: &str, args: &[&str]) {
    for _ in 0..5 {
        let mut server = Server::start(bin, args);
        signal(&server, Signal::SIGTERM);
        server.process.expect_success();
        server
            .process
            .expect_stderr(&["SIGTERM: shutting down", "shutdown complete"]);
    }
}

/// Out of fds (a limit of 32, 40 clients connected and more waiting in the backlog, accept
/// failing each time it is tried), SIGTERM still wins: a graceful exit 0 within 10 s.
pub fn shuts_down_on_a_signal_while_out_of_fds(bin: &str, args: &[&str]) {
    let mut server = Server::start_with_fd_limit(bin, args, 32);
    let _clients = run_out_of_fds(&server);
    signal(&server, Signal::SIGTERM);
    server.process.expect_success();
    server
        .process
        .expect_stderr(&["SIGTERM: shutting down", "shutdown complete"]);
}

/// The byte at offset `at` of the endless stream [`shutdown_beside_a_slow_reader`] sends.
fn pattern(at: u64) -> u8 {
    (at % 251) as u8
}

/// A slow reader: it sends nonstop and reads its echo for 1 s, then looks away; SIGTERM comes
/// 0.5 s into the pause, while megabytes of its echo wait in the server's socket. 2.5 s later
/// it reads 2 MiB (so the server can finish the echo in hand and begin its close), looks
/// away again for 3 s, then reads on. It gets every byte, right, then a clean EOF (no reset),
/// and the summary's `echoed` is exactly what it received: what the server counted as echoed
/// left the server; its close threw nothing away. (A server that closes after a fixed linger
/// with the client's bytes still unread sends a reset, and the reset destroys what was still
/// queued for the client: the second pause is longer than such a linger.)
pub fn shutdown_beside_a_slow_reader(bin: &str, args: &[&str]) {
    let mut server = Server::start(bin, args);
    // A 256 KiB receive buffer: far smaller than what the server's socket queues for it (so
    // echo waits there during the pauses), yet well above loopback's 64 KiB segments (so no
    // silly-window stall muddles the check).
    let stream =
        echo_client::connect_with_receive_buffer(server.addr, 256 << 10, PATIENCE).unwrap();
    let received = thread::scope(|scope| {
        scope.spawn(|| {
            let mut chunk = vec![0; 64 * 1024];
            let mut at = 0;
            // Ends with an error once the server has closed (or after 1 GiB: a bound only).
            while at < 1 << 30 {
                chunk
                    .iter_mut()
                    .zip(at..)
                    .for_each(|(b, i)| *b = pattern(i));
                match (&stream).write(&chunk) {
                    Ok(n) => at += n as u64,
                    Err(_) => break,
                }
            }
        });
        let mut received: u64 = 0;
        let mut buf = vec![0; 64 * 1024];
        let mut read_some = |received: &mut u64| -> bool {
            let n = match (&stream).read(&mut buf) {
                Ok(0) => return false,
                Ok(n) => n,
                Err(err) => panic!(
                    "after {received} bytes of echo the connection failed ({err}): \
                     the server's close destroyed bytes on their way (a reset?)"
                ),
            };
            if let Some(i) = (0..n).find(|&i| buf[i] != pattern(*received + i as u64)) {
                panic!("byte {} of the echo is wrong", *received + i as u64);
            }
            *received += n as u64;
            true
        };
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(1) {
            assert!(read_some(&mut received), "EOF before the signal");
        }
        thread::sleep(Duration::from_millis(500));
        signal(&server, Signal::SIGTERM);
        thread::sleep(Duration::from_millis(2500));
        let before_peek = received;
        while received < before_peek + (2 << 20) {
            assert!(
                read_some(&mut received),
                "EOF before the server could finish its echo"
            );
        }
        thread::sleep(Duration::from_secs(3));
        let reading_on = Instant::now();
        while read_some(&mut received) {
            assert!(
                reading_on.elapsed() < GRACE + PATIENCE,
                "no EOF after {:?} of reading: {received} bytes so far",
                reading_on.elapsed()
            );
        }
        // The sender ends once the server has closed; shut our side so it cannot block.
        let _ = stream.shutdown(Shutdown::Both);
        received
    });
    server.process.expect_success();
    let summary = format!("shutdown complete: served 1 connection, echoed {received} bytes");
    assert!(
        server.process.wait_for_stderr(&summary),
        "the summary must count exactly the {received} bytes the client received: {:?}",
        server.process.stderr()
    );
    assert_eq!(server.process.count_stderr("gave up"), 0);
}

/// A client that sends and never reads (a 4 KiB receive buffer) holds the shutdown only for
/// the grace period (10 s): then the server gives up on it, logs how many bytes it dropped
/// for that connection, says so in the summary, and exits 0.
pub fn shutdown_gives_up_on_a_client_that_never_reads(bin: &str, args: &[&str]) {
    let mut server = Server::start(bin, args);
    let stream = echo_client::connect_with_receive_buffer(server.addr, 4096, PATIENCE).unwrap();
    stream
        .set_write_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let chunk = vec![b'x'; 64 * 1024];
    // Sends until the connection takes no more (a write times out), at most 64 MiB.
    for _ in 0..1024 {
        if (&stream).write_all(&chunk).is_err() {
            break;
        }
    }
    let peer = stream.local_addr().unwrap();
    let signalled = Instant::now();
    signal(&server, Signal::SIGTERM);
    let code = server.process.wait_exit_within(GRACE + PATIENCE);
    let stderr = server.process.stderr();
    assert_eq!(code, Some(0), "{stderr:?}");
    assert!(
        signalled.elapsed() >= GRACE - Duration::from_millis(500),
        "the server closed a connection it still owed bytes to after only {:?}: {stderr:?}",
        signalled.elapsed()
    );
    let given_up = format!("connection {peer}: gave up after 10s, dropping ");
    let line = stderr
        .iter()
        .find(|line| line.starts_with(&given_up))
        .unwrap_or_else(|| panic!("no {given_up:?} line: {stderr:?}"));
    let dropped: u64 = line[given_up.len()..]
        .trim_end_matches(" bytes")
        .trim_end_matches(" byte")
        .parse()
        .unwrap_or_else(|_| panic!("no byte count in {line:?}"));
    assert!(dropped > 0, "{line:?}");
    let summary = format!("; gave up on 1 connection after 10s, dropping {dropped} bytes");
    assert!(
        stderr.iter().any(|line| line
            .starts_with("shutdown complete: served 1 connection, echoed ")
            && line.ends_with(&summary)),
        "no summary ending {summary:?}: {stderr:?}"
    );
}

/// How many bytes wait unread in `stream`'s receive queue (`FIONREAD`): bytes its kernel has
/// taken, and acknowledged, that it has not read yet.
fn unread(stream: &TcpStream) -> u64 {
    let mut queued: nix::libc::c_int = 0;
    // Safety: FIONREAD writes one int through the pointer, which points at `queued`.
    let result =
        unsafe { nix::libc::ioctl(stream.as_raw_fd(), nix::libc::FIONREAD, &raw mut queued) };
    assert!(result == 0, "FIONREAD: {}", std::io::Error::last_os_error());
    queued as u64
}

/// A client sends 4 MiB (a 64 KiB receive buffer), reads 256 KiB of its echo, then resets the
/// connection (SO_LINGER 0) while megabytes of echo wait in the server's socket: the reset
/// throws them away, they never leave. SIGTERM then: the summary's `echoed` is what the
/// client's kernel took (what it read, and what still waited in its receive queue), less at
/// most what its reset overtook the acknowledgement of — never what the server wrote into the
/// socket before the reset destroyed it.
pub fn a_reset_counts_only_what_left(bin: &str, args: &[&str]) {
    let mut server = Server::start(bin, args);
    let stream = echo_client::connect_with_receive_buffer(server.addr, 64 << 10, PATIENCE).unwrap();
    // The sender stops once its writes have waited 1 s: the server has stopped reading.
    stream
        .set_write_timeout(Some(Duration::from_secs(1)))
        .unwrap();
    let took = thread::scope(|scope| {
        let sender = scope.spawn(|| (&stream).write_all(&vec![b'r'; 4 << 20]));
        let mut buf = vec![0; 64 << 10];
        let mut read = 0;
        while read < 256 << 10 {
            match (&stream).read(&mut buf) {
                Ok(0) | Err(_) => panic!("the echo ended after {read} bytes"),
                Ok(n) => read += n as u64,
            }
        }
        let _ = sender.join();
        // Let the last of the echo the server wrote reach the client's receive queue.
        thread::sleep(Duration::from_millis(200));
        read + unread(&stream)
    });
    nix::sys::socket::setsockopt(
        &stream,
        nix::sys::socket::sockopt::Linger,
        &nix::libc::linger {
            l_onoff: 1,
            l_linger: 0,
        },
    )
    .unwrap();
    drop(stream);
    assert!(
        server.process.wait_for_stderr("closed"),
        "the server never saw the reset: {:?}",
        server.process.stderr()
    );
    signal(&server, Signal::SIGTERM);
    server.process.expect_success();
    assert!(
        server.process.wait_for_stderr("shutdown complete"),
        "no summary: {:?}",
        server.process.stderr()
    );
    counts_what_the_client_took(&server.process.stderr(), took, 64 << 10);
}

/// The summary's `echoed` is at most `took`, what the client's kernel took before its reset,
/// and at least `took - window`. The server can know only what was *acknowledged*: bytes that
/// reached the client in its last moments (a few bytes filling a nearly closed window, whose
/// ACK the receiver delays) may be overtaken by its reset, so the server counts them lost —
/// never more than the client's receive buffer (`window`) holds. What must never happen is
/// counting what the reset destroyed in the server's own send queue: more than `took`.
fn counts_what_the_client_took(stderr: &[String], took: u64, window: u64) {
    let summary = stderr
        .iter()
        .find(|line| line.starts_with("shutdown complete: served 1 connection, echoed "))
        .unwrap_or_else(|| panic!("no summary for one connection: {stderr:?}"));
    let echoed: u64 = summary["shutdown complete: served 1 connection, echoed ".len()..]
        .split(' ')
        .next()
        .and_then(|number| number.parse().ok())
        .unwrap_or_else(|| panic!("no byte count in {summary:?}"));
    assert!(
        echoed <= took && took - echoed <= window,
        "the client's kernel took {took} bytes before its reset (the reset threw the rest \
         away), the summary says {echoed}: {stderr:?}"
    );
}

/// Counts the server's CPU ticks (1/100 s) over `span`.
fn cpu_over(server: &Server, span: Duration) -> u64 {
    let before = server.process.cpu_ticks();
    thread::sleep(span);
    server.process.cpu_ticks() - before
}

/// `count` clients (a 4 KiB receive buffer each) that send `each` bytes and never read.
fn non_readers(server: &Server, count: usize, each: usize, half_close: bool) -> Vec<TcpStream> {
    super::raise_fd_limit();
    (0..count)
        .map(|_| {
            let stream = echo_client::connect_with_receive_buffer(server.addr, 4096, PATIENCE)
                .expect("connect");
            (&stream).write_all(&vec![b'x'; each]).expect("send");
            if half_close {
                stream.shutdown(Shutdown::Write).expect("half-close");
            }
            stream
        })
        .collect()
}

/// 5,000 clients that send 16 KiB, shut their side and never read their echo: the server
/// holds their connections in the close (until they have every byte), or hands them to the
/// kernel, and either way costs next to no CPU meanwhile — at most 10/100 s of CPU in 2 s.
/// A close that looks every few tens of milliseconds whether the client has acknowledged
/// costs a good part of a core here.
pub fn closing_clients_that_never_read_cost_no_cpu(bin: &str, args: &[&str]) {
    let _turn = super::heavy_turn();
    let server = Server::start(bin, args);
    let clients = non_readers(&server, 5000, 16 << 10, true);
    thread::sleep(Duration::from_secs(3));
    let used = cpu_over(&server, Duration::from_secs(2));
    assert!(
        used <= 10,
        "{} clients waiting to be sent their last bytes: {used}/100 s of CPU in 2 s",
        clients.len()
    );
}

/// 4,000 clients that never read (each sent 32 KiB), then SIGTERM: through the grace period
/// the server waits for them to take their echo without spinning — at most 50/100 s of CPU
/// over 5 s of it (10 % of a core) — then gives up on them and exits 0.
pub fn the_grace_period_costs_no_cpu(bin: &str, args: &[&str]) {
    let _turn = super::heavy_turn();
    let mut server = Server::start(bin, args);
    let clients = non_readers(&server, 4000, 32 << 10, false);
    thread::sleep(Duration::from_secs(2));
    signal(&server, Signal::SIGTERM);
    thread::sleep(Duration::from_secs(2));
    let used = cpu_over(&server, Duration::from_secs(5));
    assert!(
        used <= 50,
        "through the grace period, beside {} clients that never read: {used}/100 s of CPU in 5 s",
        clients.len()
    );
    let code = server.process.wait_exit_within(GRACE + PATIENCE);
    assert_eq!(code, Some(0), "{:?}", server.process.stderr().last());
}

/// A client (a 4 KiB receive buffer) sends 16 KiB and reads nothing; SIGTERM comes while the
/// server holds 12 KiB of its echo in the send queue, so the close waits for the client to
/// take it; the client half-closes, then resets the connection. The reset ends that wait at
/// once: the server exits 0 within 3 s of the reset (not after the 10 s grace period), logs
/// no `gave up` line (it did not give up: the client left), and its summary's `echoed` is
/// what the client's kernel took (less at most what its reset overtook the acknowledgement of). (A close that, after the client's EOF, only looks
/// at `SIOCOUTQ` never sees the reset: the count stays where it was, for good.)
pub fn a_reset_during_the_close_ends_it_at_once(bin: &str, args: &[&str]) {
    let mut server = Server::start(bin, args);
    let stream = echo_client::connect_with_receive_buffer(server.addr, 4096, PATIENCE).unwrap();
    (&stream).write_all(&[b'c'; 16 << 10]).unwrap();
    thread::sleep(Duration::from_millis(500));
    signal(&server, Signal::SIGTERM);
    assert!(server.process.wait_for_stderr("shutting down"));
    thread::sleep(Duration::from_millis(500));
    stream.shutdown(Shutdown::Write).unwrap();
    thread::sleep(Duration::from_secs(1));
    let took = unread(&stream);
    nix::sys::socket::setsockopt(
        &stream,
        nix::sys::socket::sockopt::Linger,
        &nix::libc::linger {
            l_onoff: 1,
            l_linger: 0,
        },
    )
    .unwrap();
    drop(stream);
    let reset = Instant::now();
    let code = server.process.wait_exit_within(GRACE + PATIENCE);
    let stderr = server.process.stderr();
    assert_eq!(code, Some(0), "{stderr:?}");
    assert!(
        reset.elapsed() < Duration::from_secs(3),
        "the server exited {:?} after the client's reset: it waited on a connection that was \
         gone: {stderr:?}",
        reset.elapsed()
    );
    assert_eq!(
        server.process.count_stderr("gave up"),
        0,
        "the client reset its connection; nobody gave up on it: {stderr:?}"
    );
    counts_what_the_client_took(&stderr, took, 4096);
}
