//! The echo conformance suite: what every lesson's `echo` must do, whatever its design.
//! Each check takes a running [`Server`]; the `conformance_suite!` macro turns the list into
//! one `#[test]` per check for a given server command.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use echo_client::{
    BulkPlan, FloodPlan, PipelinedPlan, connect, connect_with_receive_buffer, exchange, human,
};
use nix::sys::signal::Signal;
use nix::sys::socket::{setsockopt, sockopt};

use super::shutdown::signal;
use super::{PATIENCE, Process, Server, command_with_fd_limit, first_stdout_line, wait_until};

/// One `#[test]` per conformance check, each against a fresh server `bin args…`.
///
/// - `single_client:` what even a server that serves one client at a time must do: byte-exact
///   echo, half-close, a broken stderr, a signal at start-up, tiny fd limits.
/// - `concurrent:` adds the checks that need a server serving many clients at once: a flood
///   beside a quiet client, clients that never read, running out of fds (a signal then too).
/// - `graceful:` is `concurrent:` for the servers that shut down gracefully on SIGINT and
///   SIGTERM (lessons 5 and up): the signal checks expect the graceful exit, and the shutdown
///   checks of tests/common/shutdown.rs are added.
///
/// `if: run` makes each test return early (skipped) when `run()` is false — lesson 6,
/// where io_uring may be unavailable; `run` prints why.
#[macro_export]
macro_rules! conformance_suite {
    ($flavour:ident: $bin:expr, $args:expr) => {
        $crate::conformance_suite!($flavour: $bin, $args, if: || true);
    };
    (single_client: $bin:expr, $args:expr, if: $run:expr) => {
        $crate::conformance_suite!(@each_byte $bin, $args, $run);
        $crate::conformance_suite!(@own conformance, $bin, $args, $run;
            ends_on_a_signal_at_start_up);
    };
    (concurrent: $bin:expr, $args:expr, if: $run:expr) => {
        $crate::conformance_suite!(@each_byte $bin, $args, $run);
        $crate::conformance_suite!(@many_clients $bin, $args, $run);
        $crate::conformance_suite!(@own conformance, $bin, $args, $run;
            ends_on_a_signal_at_start_up, ends_on_a_signal_while_out_of_fds);
    };
    (graceful: $bin:expr, $args:expr, if: $run:expr) => {
        $crate::conformance_suite!(@each_byte $bin, $args, $run);
        $crate::conformance_suite!(@many_clients $bin, $args, $run);
        $crate::conformance_suite!(@own shutdown, $bin, $args, $run;
            shuts_down_on_a_signal_at_start_up, shuts_down_on_a_signal_while_out_of_fds,
            sigint_loses_no_echo, sigterm_stops_accepting, shutdown_beside_a_slow_reader,
            shutdown_gives_up_on_a_client_that_never_reads, a_reset_counts_only_what_left,
            a_reset_during_the_close_ends_it_at_once,
            closing_clients_that_never_read_cost_no_cpu, the_grace_period_costs_no_cpu);
    };
    (@each_byte $bin:expr, $args:expr, $run:expr) => {
        $crate::conformance_suite!(@checks $bin, $args, $run;
            binary_bytes, large_payload, one_byte_writes, half_close,
            bytes_behind_an_urgent_byte, bulk_stream, pipelined_client);
        $crate::conformance_suite!(@own conformance, $bin, $args, $run;
            serves_on_with_a_broken_stderr, serves_on_with_a_stalled_stderr,
            starts_or_says_why_with_eight_fds, starts_or_says_why_with_few_fds);
    };
    (@many_clients $bin:expr, $args:expr, $run:expr) => {
        $crate::conformance_suite!(@checks $bin, $args, $run;
            several_clients_at_once, serves_two_clients_at_once, abrupt_close_spares_others,
            slow_reader_keeps_its_bytes_and_others_are_served, flood_beside_quiet_client,
            non_readers_beside_a_ping);
        /// Running out of fds neither kills the server nor spins the CPU, and it accepts
        /// the waiting clients once fds are free again.
        #[test]
        fn survives_running_out_of_fds() {
            if !($run)() {
                return;
            }
            let server = $crate::common::Server::start_with_fd_limit($bin, $args, 32);
            $crate::common::conformance::survives_running_out_of_fds(&server);
        }
    };
    (@checks $bin:expr, $args:expr, $run:expr; $($check:ident),+) => {
        $(
            /// The conformance check of the same name in tests/common/conformance.rs.
            #[test]
            fn $check() {
                if !($run)() {
                    return;
                }
                let server = $crate::common::Server::start($bin, $args);
                $crate::common::conformance::$check(&server);
            }
        )+
    };
    // Checks that start their own server (a signal, a limit, a broken stderr).
    (@own $module:ident, $bin:expr, $args:expr, $run:expr; $($check:ident),+) => {
        $(
            /// The check of the same name in tests/common/conformance.rs or shutdown.rs.
            #[test]
            fn $check() {
                if !($run)() {
                    return;
                }
                $crate::common::$module::$check($bin, $args);
            }
        )+
    };
}

fn client(server: &Server) -> TcpStream {
    connect(server.addr, PATIENCE).expect("connect to the server")
}

/// Sends `message` and checks the echo is exactly `message`.
pub fn round_trip(stream: &TcpStream, message: &[u8]) {
    let echoed = exchange(stream, message, message.len()).expect("echo of a message");
    assert_eq!(echoed, message, "the echo differs from what was sent");
}

/// `len` deterministic bytes covering all 256 values (a xorshift generator).
fn noise(len: usize) -> Vec<u8> {
    let mut state: u32 = 0x9E37_79B9;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            state as u8
        })
        .collect()
}

fn assert_same(got: &[u8], sent: &[u8]) {
    if let Some(at) = got.iter().zip(sent).position(|(a, b)| a != b) {
        panic!(
            "the echo differs from what was sent at byte {at} of {}",
            sent.len()
        );
    }
    assert_eq!(got.len(), sent.len(), "the echo has the wrong length");
}

/// Bytes that are not text — 0x00, 0xFF, invalid UTF-8, every byte value — come back
/// unchanged.
pub fn binary_bytes(server: &Server) {
    let mut payload: Vec<u8> = (0..=255).collect();
    payload.extend_from_slice(b"\x00\x00\xff\xfe not utf-8: \xc3\x28 \xa0\xa1\n\r\n");
    round_trip(&client(server), &payload);
}

/// A 4 MiB payload, written while the echo is read, comes back byte for byte.
pub fn large_payload(server: &Server) {
    let payload = noise(4 << 20);
    let echoed = exchange(&client(server), &payload, 64 * 1024).expect("4 MiB echo");
    assert_same(&echoed, &payload);
}

/// A message written one byte per `write` comes back whole and in order.
pub fn one_byte_writes(server: &Server) {
    let payload = noise(2000);
    let echoed = exchange(&client(server), &payload, 1).expect("echo of 1-byte writes");
    assert_same(&echoed, &payload);
}

/// After the client shuts its sending side, it still gets the whole echo, then EOF.
pub fn half_close(server: &Server) {
    let stream = client(server);
    let payload = noise(1 << 20);
    thread::scope(|scope| {
        scope.spawn(|| {
            (&stream).write_all(&payload).expect("send");
            stream
                .shutdown(Shutdown::Write)
                .expect("shut down the sending side");
        });
        let mut echoed = Vec::new();
        (&stream).read_to_end(&mut echoed).expect("echo, then EOF");
        assert_same(&echoed, &payload);
    });
}

/// A TCP read stops short at an urgent byte's mark once it has copied anything
/// (`tcp_recvmsg`), with ordinary bytes already queued behind it: a short read does not prove
/// the socket empty. `abc`, one urgent byte (out of band, not part of the stream), then `def`
/// come back as `abcdef`, and then `ghi`, an urgent byte, `jkl` as `ghijkl` — the second
/// round while the server already waits on the connection — on ten connections in turn, so
/// that some read surely stops at a mark. (An edge-triggered loop that took a short read for
/// "empty" waited for an edge that never came: `def` sat in the socket.)
pub fn bytes_behind_an_urgent_byte(server: &Server) {
    use std::os::fd::AsRawFd;
    for attempt in 1..=10 {
        let mut stream = client(server);
        stream.set_nodelay(true).expect("TCP_NODELAY");
        stream.set_read_timeout(Some(PATIENCE)).expect("timeout");
        for [before, after] in [[b"abc", b"def"], [b"ghi", b"jkl"]] {
            stream.write_all(before).expect("send");
            nix::sys::socket::send(
                stream.as_raw_fd(),
                b"!",
                nix::sys::socket::MsgFlags::MSG_OOB,
            )
            .expect("send the urgent byte");
            stream.write_all(after).expect("send");
            let mut echoed = Vec::new();
            let mut buf = [0; 64];
            while echoed.len() < 6 {
                match stream.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => echoed.extend_from_slice(&buf[..n]),
                }
            }
            assert_eq!(
                echoed,
                [*before, *after].concat(),
                "connection {attempt}: the bytes behind the urgent byte were not echoed"
            );
        }
    }
}

/// A 64 MiB stream, read while it is written, comes back byte for byte: the server keeps
/// reading while its writes wait and writing while its reads wait, and forgets no readiness
/// edge on the way (a forgotten one stops the echo for good: a hang, reported after
/// [`PATIENCE`]).
pub fn bulk_stream(server: &Server) {
    let plan = BulkPlan {
        bytes: 64 << 20,
        time_limit: PATIENCE,
        patience: PATIENCE,
    };
    let report = echo_client::bulk_stream(server.addr, &plan).unwrap_or_else(|err| panic!("{err}"));
    assert_eq!(
        report.bytes, plan.bytes,
        "only {} of {} bytes were sent within {PATIENCE:?}",
        report.bytes, plan.bytes
    );
}

/// A client with an 8 KiB receive buffer sends 4,000,000 bytes in 4000-byte writes 0.5 ms
/// apart before it reads anything, then gets every byte back: the server holds what it cannot
/// write yet, and comes back to reading once the client drains its echo.
pub fn pipelined_client(server: &Server) {
    let plan = PipelinedPlan {
        patience: PATIENCE,
        ..PipelinedPlan::default()
    };
    let report =
        echo_client::pipelined_client(server.addr, &plan).unwrap_or_else(|err| panic!("{err}"));
    assert_eq!(report.bytes, plan.bytes as u64);
}

/// While one client floods the server with 1 MiB blobs (and reads its echo), a quiet client
/// pinging every 100 ms for 2 s gets every ping answered, the slowest within 1 s: the server
/// does not serve one connection for as long as it keeps sending. The bound is generous on
/// purpose: it catches starvation only; how fast the pings come back is the benchmark's
/// business.
pub fn flood_beside_quiet_client(server: &Server) {
    let plan = FloodPlan {
        ping_every: Duration::from_millis(100),
        duration: Duration::from_secs(2),
        patience: PATIENCE,
        ..FloodPlan::default()
    };
    let report = echo_client::flood_beside_quiet_client(server.addr, &plan)
        .unwrap_or_else(|err| panic!("{err}"));
    let worst = report.worst_ping().expect("at least one ping");
    assert!(
        worst <= Duration::from_secs(1),
        "the quiet client waited {} for a ping's echo beside the flood (p99 {}, {} pings): \
         starved",
        human(worst),
        human(report.ping_percentile(99.0).unwrap_or_default()),
        report.pings.len()
    );
}

/// Eight clients connected at once, sending in turn, each get exactly their own bytes.
pub fn several_clients_at_once(server: &Server) {
    let clients: Vec<TcpStream> = (0..8).map(|_| client(server)).collect();
    for round in 0..3 {
        for (id, stream) in clients.iter().enumerate() {
            (&*stream)
                .write_all(format!("client {id} round {round}\n").as_bytes())
                .unwrap();
        }
        for (id, stream) in clients.iter().enumerate() {
            let expected = format!("client {id} round {round}\n");
            let mut echoed = vec![0; expected.len()];
            (&*stream)
                .read_exact(&mut echoed)
                .expect("each client's echo");
            assert_eq!(String::from_utf8_lossy(&echoed), expected);
        }
    }
}

/// While one client stays connected, a second one is answered too.
pub fn serves_two_clients_at_once(server: &Server) {
    let first = client(server);
    round_trip(&first, b"first\n");
    let second = client(server);
    round_trip(&second, b"second, while first is still connected\n");
    round_trip(&first, b"first again\n");
}

/// A client that resets its connection (RST) closes only itself: other clients, old and
/// new, keep being served.
pub fn abrupt_close_spares_others(server: &Server) {
    let survivor = client(server);
    round_trip(&survivor, b"before\n");

    let rude = client(server);
    (&rude).write_all(&noise(64 * 1024)).unwrap();
    // Linger 0: close() sends RST instead of FIN, as a crashed client would.
    setsockopt(
        &rude,
        sockopt::Linger,
        &nix::libc::linger {
            l_onoff: 1,
            l_linger: 0,
        },
    )
    .unwrap();
    drop(rude);

    assert!(
        server.process.wait_for_stderr("closed"),
        "the server never logged the reset connection"
    );
    round_trip(&survivor, b"after\n");
    round_trip(&client(server), b"newcomer\n");
}

/// A client that sends 4 MiB without reading: the server keeps every byte for it (nothing
/// dropped), and meanwhile keeps answering another client.
pub fn slow_reader_keeps_its_bytes_and_others_are_served(server: &Server) {
    let slow = client(server);
    let payload = noise(4 << 20);
    thread::scope(|scope| {
        let sender = scope.spawn(|| (&slow).write_all(&payload));
        // Let the slow client's bytes pile up in the server while it reads nothing.
        thread::sleep(Duration::from_millis(300));
        let other = client(server);
        for n in 0..20 {
            round_trip(&other, format!("other client, message {n}\n").as_bytes());
        }
        let mut echoed = vec![0; payload.len()];
        (&slow)
            .read_exact(&mut echoed)
            .expect("the slow reader's whole echo");
        assert_same(&echoed, &payload);
        sender
            .join()
            .unwrap()
            .expect("the slow reader's sending side");
    });
}

/// With at most 32 fds, 40 clients connect: the server logs that it ran out, does not
/// spin the CPU while out, logs once per pause however many more clients arrive, and once
/// 20 clients leave it accepts and answers the rest.
pub fn survives_running_out_of_fds(server: &Server) {
    let mut clients: Vec<TcpStream> = (0..40).map(|_| client(server)).collect();
    assert!(
        server.process.wait_for_stderr("Too many open files"),
        "the server never ran out of fds: {:?}",
        server.process.stderr()
    );
    round_trip(&clients[0], b"still serving\n");

    let ticks_before = server.process.cpu_ticks();
    thread::sleep(Duration::from_secs(1));
    let used = server.process.cpu_ticks() - ticks_before;
    assert!(
        used <= 30,
        "out of fds, the server used {used}/100 s of CPU in 1 s: it spins"
    );

    // Clients keep arriving while fds are out: one log line per pause, not one (nor one
    // more retry timer) per client.
    let logged = server.process.count_stderr("Too many open files");
    let burst: Vec<TcpStream> = (0..200).map(|_| client(server)).collect();
    thread::sleep(Duration::from_secs(1));
    let more = server.process.count_stderr("Too many open files") - logged;
    assert!(
        more <= 10,
        "200 clients arriving while out of fds made {more} more log lines in 1 s"
    );
    drop(burst);

    let staying = clients.split_off(20);
    drop(clients);
    assert!(
        wait_until(|| server.process.count_stderr(" closed") >= 20),
        "the server did not notice 20 clients leaving"
    );
    round_trip(staying.last().unwrap(), b"accepted once fds were free\n");
}

/// 10,000 connections open at once are all accepted, and a sample of them (every 499th and
/// the last) still echoes. Starts its own server: it needs a raised fd limit on both sides.
pub fn holds_ten_thousand_connections(bin: &str, args: &[&str]) {
    super::raise_fd_limit();
    let server = Server::start(bin, args);
    let clients: Vec<TcpStream> = (0..10_000).map(|_| client(&server)).collect();
    for (n, stream) in clients.iter().enumerate().step_by(499) {
        round_trip(stream, format!("connection {n}\n").as_bytes());
    }
    round_trip(clients.last().unwrap(), b"the 10,000th\n");
    assert!(
        wait_until(|| server.process.count_stderr("connection from") == 10_000),
        "the server did not log 10,000 connections"
    );
}

/// Out of fds (a limit of 64), with 2,070 connections that came and went waiting in the
/// backlog, the server gets through them and echoes a new client within 5 s: it retries
/// `accept` as soon as a connection closes, not only after a fixed pause (a fixed 500 ms
/// pause took 18 s here). Starts its own server, with that fd limit.
pub fn recovers_quickly_from_running_out_of_fds(bin: &str, args: &[&str]) {
    super::raise_fd_limit();
    let server = Server::start_with_fd_limit(bin, args, 64);
    let held: Vec<_> = (0..70)
        .map(|_| connect(server.addr, PATIENCE).expect("connect"))
        .collect();
    assert!(server.process.wait_for_stderr("Too many open files"));
    let more: Vec<_> = (0..2000)
        .map(|_| connect(server.addr, PATIENCE).expect("connect"))
        .collect();
    drop(held);
    drop(more);

    let started = std::time::Instant::now();
    let client = connect(server.addr, PATIENCE).expect("connect");
    client
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    (&client).write_all(b"ping").unwrap();
    let mut echoed = [0; 4];
    let answered = (&client).read_exact(&mut echoed);
    assert!(
        answered.is_ok(),
        "no echo within 5 s of the flood ending ({:?} so far): {answered:?}",
        started.elapsed()
    );
    assert_eq!(&echoed, b"ping");
}

/// How long a ping may wait for its echo in the hostile checks before the test calls the
/// quiet client starved. Generous: it catches a server that stops serving (a drained shared
/// pool answers never, or after many seconds), not a slow one — on a machine kept at load 12
/// by four busy loops, correct servers answered within 2.03 s.
const PING_PATIENCE: Duration = Duration::from_secs(5);

/// Sends `ping` and waits at most [`PING_PATIENCE`] for its echo.
fn ping(stream: &TcpStream, ping: &str, beside: &str) {
    stream.set_read_timeout(Some(PING_PATIENCE)).unwrap();
    let started = Instant::now();
    (&*stream).write_all(ping.as_bytes()).expect("send a ping");
    let mut echoed = vec![0; ping.len()];
    if let Err(err) = (&*stream).read_exact(&mut echoed) {
        panic!(
            "{ping:?} was not answered within {PING_PATIENCE:?} beside {beside} \
             (waited {}): {err}",
            human(started.elapsed())
        );
    }
    assert_eq!(echoed, ping.as_bytes(), "the ping's echo differs");
}

/// 150 clients that send but never read (a 4 KiB receive buffer each, up to 6 MiB sent each —
/// enough to fill the server's socket buffers for them and then whatever it holds itself —
/// still sending while the pings run) cost only themselves: a client connected before them
/// and one connected after them each get 20 pings answered, each within 5 s. A server that
/// lets non-readers take a shared pool (a buffer ring, a memory budget) fails here.
pub fn non_readers_beside_a_ping(server: &Server) {
    const NON_READERS: usize = 150;
    const EACH: usize = 6 << 20;
    // Up to 900 MiB in the kernel's socket buffers: one heavy check at a time.
    let _turn = super::heavy_turn();
    let before = client(server);
    round_trip(&before, b"connected before the non-readers\n");
    let non_readers: Vec<TcpStream> = (0..NON_READERS)
        .map(|_| {
            let stream = connect_with_receive_buffer(server.addr, 4096, PATIENCE)
                .expect("connect a non-reader");
            stream.set_nonblocking(true).unwrap();
            stream
        })
        .collect();
    let done = AtomicBool::new(false);
    thread::scope(|scope| {
        // The non-readers keep sending what their connections take, without blocking, until
        // each has sent 6 MiB or the pings are done (or failed: the guard below), at most
        // for a minute. Bounded: 900 MiB.
        let feeder = scope.spawn(|| {
            let chunk = noise(64 * 1024);
            let mut sent = vec![0; NON_READERS];
            let started = Instant::now();
            while !done.load(Ordering::Relaxed) && started.elapsed() < Duration::from_secs(60) {
                for (stream, sent) in non_readers.iter().zip(&mut sent) {
                    if *sent < EACH {
                        match (&*stream).write(&chunk[..chunk.len().min(EACH - *sent)]) {
                            Ok(n) => *sent += n,
                            Err(err) if err.kind() == std::io::ErrorKind::WouldBlock => {}
                            Err(err) => panic!("a non-reader's send failed: {err}"),
                        }
                    }
                }
                thread::sleep(Duration::from_millis(5));
            }
            sent.iter().sum::<usize>()
        });
        // Whatever happens to the pings, the feeder stops with them.
        let _stop_feeding = SetOnDrop(&done);
        // Let them fill what the server will hold for them.
        thread::sleep(Duration::from_secs(2));
        let beside = format!("{NON_READERS} clients that never read");
        let after = client(server);
        for n in 0..20 {
            ping(
                &before,
                &format!("ping {n} from the client that came first\n"),
                &beside,
            );
            ping(
                &after,
                &format!("ping {n} from a client that came after\n"),
                &beside,
            );
            thread::sleep(Duration::from_millis(10));
        }
        done.store(true, Ordering::Relaxed);
        let sent = feeder.join().expect("the non-readers' feeder");
        assert!(
            sent >= NON_READERS << 20,
            "the non-readers sent only {sent} bytes: the check did not load the server"
        );
    });
}

/// Sets its flag when dropped, also when a failed assertion unwinds past it.
struct SetOnDrop<'a>(&'a AtomicBool);

impl Drop for SetOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// With stderr a pipe nobody reads (`server 2>&1 | head -1`), every log line fails: the
/// server drops them and serves on — three clients in turn, then a fourth, all answered.
pub fn serves_on_with_a_broken_stderr(bin: &str, args: &[&str]) {
    let mut server = Server::start_with_broken_stderr(bin, args);
    for n in 0..3 {
        round_trip(&client(&server), format!("client {n}\n").as_bytes());
    }
    round_trip(&client(&server), b"still serving\n");
    let status = server.process.child.try_wait().expect("try_wait");
    assert!(status.is_none(), "the server exited: {status:?}");
}

/// With stderr a pipe whose reader is alive but never reads (`server 2>&1 | less`, and the
/// learner does not scroll; a terminal paused with Ctrl+S), the pipe fills after a few dozen
/// log lines and a blocking write to it would wait for ever — the whole loop with it, signals
/// included. The server drops the lines stderr cannot take now and serves on: 300 clients in
/// turn each get their echo, and SIGTERM then ends the process (exit 0 for the servers that
/// handle it, the signal's for the others).
pub fn serves_on_with_a_stalled_stderr(bin: &str, args: &[&str]) {
    let (mut server, stalled) = Server::start_with_stalled_stderr(bin, args);
    // Each client is logged twice (connected, closed): 300 fill a one-page pipe many times over.
    for n in 0..300 {
        let stream = client(&server);
        if let Err(err) = exchange(&stream, format!("client {n}\n").as_bytes(), 64) {
            panic!("client {n} got no echo with stderr stalled: {err}");
        }
    }
    signal(&server, Signal::SIGTERM);
    let code = server.process.wait_exit();
    assert!(
        matches!(code, None | Some(0)),
        "after SIGTERM, with stderr stalled, exit code {code:?}"
    );
    drop(stalled);
}

/// SIGTERM sent the moment `listening on` is read ends the server at once (no handler: the
/// default action; a lesson that handles it: see shutdown.rs). Five tries.
pub fn ends_on_a_signal_at_start_up(bin: &str, args: &[&str]) {
    for _ in 0..5 {
        let mut server = Server::start(bin, args);
        signal(&server, Signal::SIGTERM);
        server.process.wait_exit();
    }
}

/// Out of fds (a limit of 32, 40 clients connected and more waiting in the backlog), the
/// server still obeys SIGTERM: it ends within a few seconds.
pub fn ends_on_a_signal_while_out_of_fds(bin: &str, args: &[&str]) {
    let mut server = Server::start_with_fd_limit(bin, args, 32);
    let _clients = run_out_of_fds(&server);
    signal(&server, Signal::SIGTERM);
    server.process.wait_exit();
}

/// Connects 40 clients, waits until the server (limited to 32 fds) says it ran out, then
/// connects 20 more, which wait in the backlog. Returns them all, to be held open.
pub fn run_out_of_fds(server: &Server) -> Vec<TcpStream> {
    let mut clients: Vec<TcpStream> = (0..40).map(|_| client(server)).collect();
    assert!(
        server.process.wait_for_stderr("Too many open files"),
        "the server never ran out of fds: {:?}",
        server.process.stderr()
    );
    clients.extend((0..20).map(|_| client(server)));
    clients
}

/// Allowed only 8 open files (`ulimit -n 8`), the server either runs — still alive half a
/// second after a client connected (it may have no fd left to accept it), and ends on
/// SIGTERM — or exits 1 before `listening on` with one stderr line that names the cause
/// (`Too many open files`), not a misleading one.
pub fn starts_or_says_why_with_eight_fds(bin: &str, args: &[&str]) {
    starts_or_says_why_with(bin, args, 8);
}

/// The same under each tighter limit, 4 to 7 fds (under 4 the dynamic loader itself fails):
/// a server whose own fds (the listener,
/// epoll, a signal pipe, a ring) do not all fit exits 1 before `listening on`, naming the
/// cause — it never prints `listening on` and then dies for an fd it opens after it, leaving
/// a learner's `nc` to connect to a server that is gone.
pub fn starts_or_says_why_with_few_fds(bin: &str, args: &[&str]) {
    for max_fds in 4..=7 {
        starts_or_says_why_with(bin, args, max_fds);
    }
}

/// Allowed only `max_fds` open files: `listening on` and still running (half a second
/// later: a server that fails to start dies at once), or exit 1 before it with one stderr
/// line naming the cause.
fn starts_or_says_why_with(bin: &str, args: &[&str], max_fds: u64) {
    let mut process = Process::spawn(command_with_fd_limit(bin, args, max_fds));
    match first_stdout_line(&mut process) {
        Some(line) => {
            let addr = line
                .strip_prefix("listening on ")
                .and_then(|rest| rest.trim().parse().ok())
                .unwrap_or_else(|| panic!("first line {line:?}"));
            let mut server = Server { process, addr };
            // It may have no fd left for a client; it must still obey the signal.
            let _client = connect(server.addr, PATIENCE);
            thread::sleep(Duration::from_millis(500));
            let exited = server.process.child.try_wait().expect("try_wait");
            assert!(
                exited.is_none(),
                "allowed {max_fds} fds, it printed `listening on` and then exited ({exited:?}): {:?}",
                server.process.stderr()
            );
            signal(&server, Signal::SIGTERM);
            server.process.wait_exit();
        }
        None => {
            let code = process.wait_exit();
            let stderr = process.stderr();
            assert_eq!(
                code,
                Some(1),
                "allowed {max_fds} fds: no `listening on`, and exit {code:?}: {stderr:?}"
            );
            assert!(
                stderr.len() == 1 && stderr[0].contains("Too many open files"),
                "under a limit of {max_fds} fds the error must be one line naming the cause: {stderr:?}"
            );
        }
    }
}
