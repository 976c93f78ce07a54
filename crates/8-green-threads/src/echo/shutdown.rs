//! The echo server's graceful shutdown: each connection stops reading, finishes the chunk in
//! hand, sends EOF, and closes only once the client has acknowledged all it was sent — or
//! gives up at the end of the grace period, saying how many bytes it dropped.
//!
//! The contract lessons 5 to 8 share: on the signal, stop accepting and say how many
//! connections are open; each one finishes its chunk, shuts down its write side, then reads
//! and drops what the client still sends until `SIOCOUTQ` reads 0 — everything it wrote
//! has left the socket and been acknowledged; closing with unread input would send a reset,
//! which throws the send queue away. All of it bounded by one deadline, 10 s after the
//! signal. The summary counts as echoed only the bytes that left.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr};
use std::os::fd::{AsFd, AsRawFd};
use std::rc::Rc;
use std::time::{Duration, Instant};

use fdio::{interrupted, log_closed};
use nix::sys::signal::Signal;

use super::Server;
use crate::net::{TcpStream, timed_out};
use crate::runtime::sleep_until;

/// How long, after the signal, connections get to finish.
pub(super) const GRACE: Duration = Duration::from_secs(10);

/// How often a closing connection looks whether all it wrote has been acknowledged.
const LINGER_POLL: Duration = Duration::from_millis(5);

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
        _ => send_queue(stream).map(|unacknowledged| Closing::GaveUp { unacknowledged }),
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
            server.count_echoed(counted.written);
            log_closed(peer, Some(&err));
        }
    }
}

/// How a closing connection ended.
enum Closing {
    /// The client acknowledged everything: closed with nothing lost.
    Done,
    /// The grace period ended first: these bytes it was sent were never acknowledged.
    GaveUp { unacknowledged: u64 },
}

/// Sends EOF, then reads and drops what the client still sends, until the client has
/// acknowledged every byte (and the EOF) or `grace` has passed.
fn close_gracefully(stream: &TcpStream, grace: Instant) -> io::Result<Closing> {
    stream.shutdown(Shutdown::Write)?;
    let mut discard = [0; 4096];
    let mut client_closed = false;
    loop {
        // Data and the EOF: the EOF takes one place in the queue until it is acknowledged.
        let queued = send_queue(stream)?;
        if queued == 0 {
            return Ok(Closing::Done);
        }
        let now = Instant::now();
        if now >= grace {
            let unacknowledged = queued - 1;
            return Ok(Closing::GaveUp { unacknowledged });
        }
        // Wait a little: for the client's bytes (read and dropped), or for time to pass.
        let until = (now + LINGER_POLL).min(grace);
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

/// What `stream`'s peer has not acknowledged yet, `SIOCOUTQ` (tcp(7)): the bytes sent or
/// waiting to be, and one for the EOF once `shutdown(Write)` has queued it.
fn send_queue(stream: &TcpStream) -> io::Result<u64> {
    let mut queued: nix::libc::c_int = 0;
    // Safety: SIOCOUTQ (Linux's name for TIOCOUTQ on a socket) writes one int, into `queued`.
    let result =
        unsafe { nix::libc::ioctl(stream.as_fd().as_raw_fd(), nix::libc::TIOCOUTQ, &mut queued) };
    if result < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(u64::try_from(queued).unwrap_or(0))
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
