//! The echo server: lesson 0's program, a green thread per connection.
//!
//! `echo_until_eof` is lesson 0's, line for line: `read` into a buffer on the stack,
//! `write_all` it back, until EOF. There a read that waits blocks the OS thread — and so every
//! other client. Here it parks only its own green thread. Nothing in the program says so: the
//! difference is all in `TcpStream`.
//!
//! **Shutdown.** Ctrl+C (SIGINT) or SIGTERM: a green thread parked in a read of the signal
//! pipe wakes up and stops the accept loop (a deadline on the listener: see `net`). Then every
//! connection gets a read deadline of *now* — it never reads a new chunk — and a write
//! deadline 10 s away: it finishes the chunk in hand, sends EOF, reads and drops what the
//! client still sends until all it wrote has been acknowledged (`SIOCOUTQ` is 0), and closes.
//! Closing earlier, with unread bytes, would send a reset, and a reset throws away what is
//! still in the send queue. A connection that has not got there 10 s after the signal is
//! given up, with one line saying how many bytes it dropped; the summary counts as echoed
//! only the bytes that left.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr};
use std::os::fd::{AsFd, AsRawFd};
use std::rc::Rc;
use std::time::{Duration, Instant};

use fdio::{ServerArgs, interrupted, log_closed, log_connected, out_of_fds};
use nix::sys::signal::Signal;

use crate::net::{TcpListener, TcpStream, timed_out};
use crate::runtime::{panic_message, sleep_until, spawn_named};
use crate::signal::Signals;
use crate::sync::Notify;

/// How long to stop accepting after running out of file descriptors, at most: a connection
/// that closes, or a signal, ends the pause at once.
const OUT_OF_FDS_PAUSE: Duration = Duration::from_millis(500);

/// How long, after the signal, connections get to finish.
const GRACE: Duration = Duration::from_secs(10);

/// How often a closing connection looks whether all it wrote has been acknowledged.
const LINGER_POLL: Duration = Duration::from_millis(5);

/// Runs `green-threads echo`: installs the signal handler, then listens (in that order: a
/// signal sent the moment `listening on` appears is obeyed), then serves until a signal.
pub fn run(args: &ServerArgs) -> io::Result<()> {
    fdio::raise_fd_limit()?;
    let signals = Signals::new(&[Signal::SIGINT, Signal::SIGTERM])?;
    let listener = TcpListener::from_std(fdio::listen(args.addr)?)?;
    serve(listener, signals)
}

/// What the connections share: who is open (to stop them at shutdown), and the counts.
#[derive(Default)]
struct Server {
    open: RefCell<HashMap<u64, Rc<TcpStream>>>,
    next_id: Cell<u64>,
    served: Cell<u64>,
    echoed: Cell<u64>,
    gave_up: Cell<u64>,
    dropped: Cell<u64>,
    /// When the grace period ends; set by the signal.
    grace: Cell<Option<Instant>>,
    /// Notified when a connection closes (its fd is free again) and when a signal comes:
    /// the out-of-fds pause and the shutdown's wait for the last connection park on it.
    changed: Notify,
}

fn serve(listener: TcpListener, mut signals: Signals) -> io::Result<()> {
    let listener = Rc::new(listener);
    let server = Rc::new(Server::default());
    // One green thread parks in a read of the signal pipe. When it wakes, it stops the
    // accept loop: a deadline of now makes the parked `accept` fail with `TimedOut`.
    let watcher = spawn_named("signals", {
        let (listener, server) = (Rc::clone(&listener), Rc::clone(&server));
        move || {
            let signal = signals.recv();
            listener.set_deadline(Some(Instant::now()));
            server.changed.notify_all();
            signal
        }
    })?;
    accept_until_stopped(&listener, &server);
    drop(listener); // the watcher has dropped its copy: the listener closes, refusing newcomers
    let signal = watcher
        .join()
        .map_err(|panic| io::Error::other(panic_message(&*panic).to_string()))??;
    shut_down(signal, &server);
    Ok(())
}

/// Lesson 0's accept loop: each connection gets a green thread, and `accept` parks.
fn accept_until_stopped(listener: &TcpListener, server: &Rc<Server>) {
    loop {
        let (stream, peer) = match listener.accept() {
            Ok(connection) => connection,
            Err(err) if timed_out(&err) => return, // the signal: see `serve`
            Err(err) if interrupted(&err) => continue,
            Err(err) if out_of_fds(&err) => {
                // The connection stays in the backlog; retrying at once would spin. Wait until
                // one of ours closes, a signal comes, or the pause is over.
                fdio::log!(
                    "accept: {err}; not accepting for {OUT_OF_FDS_PAUSE:?} (or until a connection closes)"
                );
                server
                    .changed
                    .wait_until(Some(Instant::now() + OUT_OF_FDS_PAUSE));
                continue;
            }
            // For example ECONNABORTED: that one connection is gone, the listener is fine.
            Err(err) => {
                fdio::log!("accept: {err}");
                continue;
            }
        };
        log_connected(peer);
        let stream = Rc::new(stream);
        let id = server.opened(Rc::clone(&stream));
        let connection = {
            let server = Rc::clone(server);
            move || {
                serve_client(&stream, peer, &server);
                drop(stream); // so that `closed` closes the fd before it tells anyone
                server.closed(id);
            }
        };
        if let Err(err) = spawn_named(format!("client {peer}"), connection) {
            log_closed(peer, Some(&err));
            server.closed(id);
        }
    }
}

/// Echoes one client until it closes, or until the shutdown stops it; an error ends only
/// this client.
fn serve_client(stream: &TcpStream, peer: SocketAddr, server: &Server) {
    let mut counted = Counted::new(stream);
    let result = echo_until_eof(&mut counted);
    match result {
        Err(err) if timed_out(&err) && server.grace.get().is_some() => {
            finish_at_shutdown(stream, peer, &counted, server);
        }
        result => {
            server.count_echoed(counted.written);
            log_closed(peer, result.err().as_ref());
        }
    }
}

/// Lesson 0's loop, unchanged: a read that waits parks this green thread only.
fn echo_until_eof(stream: &mut (impl Read + Write)) -> io::Result<()> {
    // Python's `recv(4096)`.
    let mut buf = [0; 4096];
    loop {
        let n = match stream.read(&mut buf) {
            Ok(0) => return Ok(()), // the client closed its side: we are done
            Ok(n) => n,
            Err(err) if interrupted(&err) => continue,
            Err(err) => return Err(err),
        };
        // If the client does not read, this parks until it does — this client only.
        stream.write_all(&buf[..n])?;
    }
}

/// The shutdown stopped this connection: its read deadline between two chunks, or the end
/// of the grace period in the middle of one.
fn finish_at_shutdown(stream: &TcpStream, peer: SocketAddr, counted: &Counted, server: &Server) {
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
struct Counted<'a> {
    stream: &'a TcpStream,
    read: u64,
    written: u64,
}

impl<'a> Counted<'a> {
    fn new(stream: &'a TcpStream) -> Counted<'a> {
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
fn shut_down(signal: Signal, server: &Server) {
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

impl Server {
    /// A connection was accepted; its id.
    fn opened(&self, stream: Rc<TcpStream>) -> u64 {
        let id = self.next_id.get();
        self.next_id.set(id + 1);
        self.served.set(self.served.get() + 1);
        self.open.borrow_mut().insert(id, stream);
        id
    }

    /// Connection `id` has closed.
    fn closed(&self, id: u64) {
        let stream = self.open.borrow_mut().remove(&id);
        drop(stream); // the last copy: the fd is free again
        self.changed.notify_all();
    }

    fn count_echoed(&self, bytes: u64) {
        self.echoed.set(self.echoed.get() + bytes);
    }
}
