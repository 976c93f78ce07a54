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
//! client still sends until all it wrote has been acknowledged ([`fdio::delivery`], asked
//! after each chunk dropped or after a pause that doubles from 10 ms to 1 s), and closes.
//! Closing earlier, with unread bytes, would send a reset, and a reset throws away what is
//! still in the send queue. A reset from the client ends the wait at once. A connection that
//! has not got there 10 s after the signal is given up, with one line saying how many bytes
//! it dropped; the summary counts as echoed only the bytes that left — not those a reset
//! threw away. That part is [`shutdown`].

pub mod shutdown;

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

use fdio::{ServerArgs, interrupted, log_closed, log_connected, out_of_fds};
use nix::sys::signal::Signal;

use crate::net::{TcpListener, TcpStream, timed_out};
use crate::signal::Signals;
use crate::spawn::{panic_message, spawn_named};
use crate::sync::Notify;
use shutdown::{Counted, finish_at_shutdown, shut_down, undelivered};

/// How long to stop accepting after running out of file descriptors, at most: a connection
/// that closes, or a signal, ends the pause at once.
const OUT_OF_FDS_PAUSE: Duration = Duration::from_millis(500);

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
        // The client's EOF: all that is in the socket leaves after we close. An error (a
        // reset): what is still there never will.
        Ok(()) => {
            server.count_echoed(counted.written);
            log_closed(peer, None);
        }
        Err(err) => {
            server.count_echoed(counted.written.saturating_sub(undelivered(stream)));
            log_closed(peer, Some(&err));
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
