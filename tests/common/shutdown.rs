//! Graceful shutdown, as lessons 5, 6 and 7 do it: on SIGINT or SIGTERM stop accepting, let
//! every connection finish what it read, close each cleanly, print a summary, exit 0.

use std::io::{Read, Write};
use std::net::Shutdown;
use std::thread;
use std::time::Duration;

use echo_client::connect;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use super::conformance::round_trip;
use super::{PATIENCE, Server};

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
