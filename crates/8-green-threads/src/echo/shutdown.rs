//! The echo server's graceful shutdown: each connection stops reading, finishes the chunk in
//! hand, sends EOF, and closes only once the client has acknowledged all it was sent — or
//! gives up at the end of the grace period, saying how many bytes it dropped.
//!
//! The contract lessons 5 to 8 share: on the signal, stop accepting and say how many
//! connections are open; each one finishes its chunk, shuts down its write side, then reads
//! and drops what the client still sends until `SIOCOUTQ` reads 0 — everything it wrote
//! has left the socket and been acknowledged; closing with unread input would send a reset,
//! which throws the send queue away. A reset from the client ends the wait at once: nothing
//! will move again. All of it bounded by one deadline, 10 s after the signal. The summary
//! counts as echoed only the bytes that left.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr};
use std::rc::Rc;
use std::time::{Duration, Instant};

use fdio::{Delivery, interrupted, log_closed};
use nix::sys::signal::Signal;

use super::Server;
use crate::net::{TcpStream, timed_out};
use crate::runtime::sleep_until;

/// How long, after the signal, connections get to finish.
pub(super) const GRACE: Duration = Duration::from_secs(10);

/// How soon a closing connection looks again whether the client has acknowledged everything
/// (no event says so): at first, and at most — the wait doubles each time, so a client that
/// never takes its last bytes costs a look a second, not two hundred. Lesson 5's numbers.
const ACK_CHECK_FIRST: Duration = Duration::from_millis(10);
const ACK_CHECK_MOST: Duration = Duration::from_secs(1);

/// The shutdown stopped this connection: its read deadline between two chunks, or the end
/// of the grace period in the middle of one.
pub(super) fn finish_at_shutdown(
    stream: &TcpStream,
    peer: SocketAddr,
    counted: &Counted,
    server: &Server,
) {
    let unwritten = counted.read - counted.written; // the rest of the chunk in hand
    let closing = match unwritten {
        0 => close_gracefully(stream, server.grace.get().unwrap_or_else(Instant::now)),
        _ => stream.delivery().map(|delivery| Closing::GaveUp {
            unacknowledged: delivery.undelivered() as u64,
        }),
    };
    match closing {
        Ok(Closing::Done) => {
            server.count_echoed(counted.written);
            log_closed(peer, None);
        }
        Ok(Closing::GaveUp { unacknowledged }) => {
            let dropped = unwritten + unacknowledged;
            server.count_echoed(counted.written.saturating_sub(unacknowledged));
            server.gave_up.set(server.gave_up.get() + 1);
            server.dropped.set(server.dropped.get() + dropped);
            let dropped = fdio::count(dropped, "byte");
            fdio::log!("connection {peer}: gave up after {GRACE:?}, dropping {dropped}");
        }
        Err(err) => {
            server.count_echoed(counted.written.saturating_sub(undelivered(stream)));
            log_closed(peer, Some(&err));
        }
    }
}

/// What is still in `stream`'s socket, or was lost with it to a reset: bytes that never
/// reached the client. (If the socket cannot even say, it failed: count nothing as lost.)
pub(super) fn undelivered(stream: &TcpStream) -> u64 {
    stream
        .delivery()
        .map_or(0, |delivery| delivery.undelivered() as u64)
}

/// How a closing connection ended.
enum Closing {
    /// The client acknowledged everything: closed with nothing lost.
    Done,
    /// The grace period ended first: these bytes it was sent were never acknowledged.
    GaveUp { unacknowledged: u64 },
}

/// Sends EOF, then reads and drops what the client still sends, until the client has
/// acknowledged every byte and the EOF (after the client's own EOF every byte is enough:
/// nothing can be left unread, so closing sends no reset) or `grace` has passed. A reset
/// ends it at once, with an error that says how much it threw away. No event says
/// "acknowledged": this asks the kernel again after each chunk it drops, or after a pause
/// that doubles each time.
fn close_gracefully(stream: &TcpStream, grace: Instant) -> io::Result<Closing> {
    stream.shutdown(Shutdown::Write)?;
    let mut discard = [0; 4096];
    let mut client_closed = false;
    let mut pause = ACK_CHECK_FIRST;
    loop {
        match stream.delivery()? {
            Delivery::Done => return Ok(Closing::Done),
            Delivery::Pending(0) if client_closed => return Ok(Closing::Done),
            Delivery::Pending(unacknowledged) if Instant::now() >= grace => {
                let unacknowledged = unacknowledged as u64;
                return Ok(Closing::GaveUp { unacknowledged });
            }
            Delivery::Pending(_) => {}
            Delivery::Lost(bytes) => {
                let bytes = fdio::count(bytes as u64, "byte");
                return Err(io::Error::new(
                    io::ErrorKind::ConnectionReset,
                    format!("reset by the peer with {bytes} not yet acknowledged"),
                ));
            }
        }
        // Wait a little: for the client's bytes (read and dropped), or for time to pass.
        let until = (Instant::now() + pause).min(grace);
        pause = (pause * 2).min(ACK_CHECK_MOST);
        if client_closed {
            sleep_until(until);
            continue;
        }
        stream.set_read_deadline(Some(until));
        match (&*stream).read(&mut discard) {
            Ok(0) => client_closed = true,
            Ok(_) => {}
            Err(err) if timed_out(&err) || interrupted(&err) => {}
            Err(err) => return Err(err),
        }
    }
}

/// The stream, counting what goes through it: when the grace period ends in the middle of a
/// `write_all`, how much of the chunk in hand was written.
pub(super) struct Counted<'a> {
    stream: &'a TcpStream,
    read: u64,
    pub(super) written: u64,
}

impl<'a> Counted<'a> {
    pub(super) fn new(stream: &'a TcpStream) -> Counted<'a> {
        Counted {
            stream,
            read: 0,
            written: 0,
        }
    }
}

impl Read for Counted<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.stream.read(buf)?;
        self.read += n as u64;
        Ok(n)
    }
}

impl Write for Counted<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.stream.write(buf)?;
        self.written += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Graceful shutdown: the connections stop reading and finish (see the module doc).
pub(super) fn shut_down(signal: Signal, server: &Server) {
    let now = Instant::now();
    let grace = now + GRACE;
    server.grace.set(Some(grace));
    let open = server.open.borrow().len() as u64;
    let open_connections = fdio::count(open, "open connection");
    fdio::log!("{signal}: shutting down; waiting for {open_connections} to finish");
    let open: Vec<Rc<TcpStream>> = server.open.borrow().values().cloned().collect();
    for stream in open {
        stream.set_read_deadline(Some(now));
        stream.set_write_deadline(Some(grace));
    }
    // Each connection ends by itself by the grace deadline: its reads and writes stop then.
    while !server.open.borrow().is_empty() {
        server.changed.wait();
    }
    let served = fdio::count(server.served.get(), "connection");
    let echoed = fdio::count(server.echoed.get(), "byte");
    let gave_up = match server.gave_up.get() {
        0 => String::new(),
        given_up => format!(
            "; gave up on {} after {GRACE:?}, dropping {}",
            fdio::count(given_up, "connection"),
            fdio::count(server.dropped.get(), "byte")
        ),
    };
    fdio::log!("shutdown complete: served {served}, echoed {echoed}{gave_up}");
}
