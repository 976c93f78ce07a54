//! The echo server as one loop over the listener and every client:
//!
//! ```text
//! loop {
//!     watch = listener (for new connections) + every client (read: it may send;
//!             write: only while we owe it bytes)
//!     ready = select(watch)          // the only place the thread sleeps
//!     serve every ready client: read what it sent, write it back, keep what does not fit
//!     accept every waiting connection
//! }
//! ```
//!
//! Python original: `2_event_loop/event_loop.py`, which watches only for reading and calls a
//! blocking `send`; here writes are non-blocking too, so a client that stops reading cannot
//! stall the loop.

use std::collections::BTreeMap;
use std::io::{self, Read};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::time::{Duration, Instant};

use fdio::{PendingWrite, Trace, interrupted, log_closed, log_connected, out_of_fds, would_block};

use crate::wait::{Backend, Ready, Watch};

/// How much one `read` takes from a client.
const READ_CHUNK: usize = 64 * 1024;

/// A client that sends but does not read would make us buffer without end. Above this many
/// unsent bytes we stop reading from it until it catches up; its unread bytes then wait in
/// the kernel, and TCP flow control slows its writes down. Nothing is dropped.
const MAX_UNSENT: usize = 256 * 1024;

/// How long to stop accepting after running out of file descriptors.
const OUT_OF_FDS_PAUSE: Duration = Duration::from_millis(500);

/// One connected client.
struct Client {
    stream: TcpStream,
    peer: SocketAddr,
    /// What the client sent that we could not write back yet.
    unsent: PendingWrite,
    /// The client closed its sending side (`read` returned 0).
    eof: bool,
}

impl Client {
    fn wants_read(&self) -> bool {
        !self.eof && self.unsent.len() < MAX_UNSENT
    }

    fn wants_write(&self) -> bool {
        !self.unsent.is_empty()
    }

    /// It sent EOF and has all its bytes back: time to close.
    fn finished(&self) -> bool {
        self.eof && self.unsent.is_empty()
    }

    /// Acts on what the kernel said is ready. One read per wakeup is enough: select and poll
    /// are level-triggered, so if more is waiting the next wait returns at once.
    fn serve(&mut self, ready: Ready, buf: &mut [u8]) -> io::Result<()> {
        if ready.writable {
            self.unsent.flush_to(&mut self.stream)?;
        }
        if ready.readable {
            match self.stream.read(buf) {
                Ok(0) => self.eof = true,
                Ok(n) => self.unsent.write_or_keep(&mut self.stream, &buf[..n])?,
                // Readiness is a hint, not a promise: nothing there after all.
                Err(err) if would_block(&err) || interrupted(&err) => {}
                Err(err) => return Err(err),
            }
        }
        Ok(())
    }
}

/// Serves clients forever with one thread and one loop.
pub fn serve(listener: TcpListener, backend: Backend, trace: Trace) -> io::Result<()> {
    listener.set_nonblocking(true)?;
    let listener_fd = listener.as_raw_fd();
    // Ordered by fd, so the trace lists fds in order.
    let mut clients: BTreeMap<RawFd, Client> = BTreeMap::new();
    let mut accept_paused_until: Option<Instant> = None;
    let mut buf = vec![0; READ_CHUNK];

    loop {
        // 1. Say what we wait for.
        let mut watches = Vec::with_capacity(clients.len() + 1);
        if accept_paused_until.is_none() {
            watches.push(Watch {
                fd: listener.as_fd(),
                read: true,
                write: false,
            });
        }
        watches.extend(clients.values().map(|client| Watch {
            fd: client.stream.as_fd(),
            read: client.wants_read(),
            write: client.wants_write(),
        }));
        let timeout =
            accept_paused_until.map(|until| until.saturating_duration_since(Instant::now()));

        // 2. Sleep until something is ready: the only place this thread ever waits.
        let ready = backend.wait(&watches, timeout, trace)?;

        // 3. Serve the clients that are ready.
        for &event in ready.iter().filter(|event| event.fd != listener_fd) {
            let Some(client) = clients.get_mut(&event.fd) else {
                continue;
            };
            let result = client.serve(event, &mut buf);
            if result.is_err() || client.finished() {
                let peer = client.peer;
                clients.remove(&event.fd); // dropping the stream closes the socket
                log_closed(peer, result.err().as_ref());
                accept_paused_until = None; // an fd was freed: accepting may work again
            }
        }

        // 4. Accept new clients — after serving, so that an fd closed in step 3 and reused by
        //    a new client right now never receives the old client's events.
        if ready.iter().any(|event| event.fd == listener_fd) {
            accept_paused_until = accept_all(&listener, backend, &mut clients);
        }
        if accept_paused_until.is_some_and(|until| Instant::now() >= until) {
            accept_paused_until = None;
        }
    }
}

/// Accepts every waiting connection, until `WouldBlock`. Returns when to resume accepting if
/// the process ran out of fds.
fn accept_all(
    listener: &TcpListener,
    backend: Backend,
    clients: &mut BTreeMap<RawFd, Client>,
) -> Option<Instant> {
    loop {
        let (stream, peer) = match listener.accept() {
            Ok(connection) => connection,
            Err(err) if would_block(&err) => return None,
            Err(err) if interrupted(&err) => continue,
            Err(err) if out_of_fds(&err) => {
                // The connection stays in the backlog and the listener stays readable: if we
                // kept watching it, every wait would return at once and the CPU would spin.
                fdio::log!(
                    "accept: {err}; not accepting for {OUT_OF_FDS_PAUSE:?} (or until a client leaves)"
                );
                return Some(Instant::now() + OUT_OF_FDS_PAUSE);
            }
            // For example ECONNABORTED: that one connection is gone, the listener is fine.
            Err(err) => {
                fdio::log!("accept: {err}");
                continue;
            }
        };
        let fd = stream.as_raw_fd();
        if let Some(limit) = backend.fd_limit()
            && fd >= limit
        {
            fdio::log!(
                "select: fd {fd} is beyond FD_SETSIZE ({limit}); closing the connection from {peer} \
                 — `select echo --poll` and lesson 2 have no such limit"
            );
            continue; // `stream` is dropped: closed
        }
        if let Err(err) = stream.set_nonblocking(true) {
            log_closed(peer, Some(&err));
            continue;
        }
        log_connected(peer);
        clients.insert(
            fd,
            Client {
                stream,
                peer,
                unsent: PendingWrite::new(),
                eof: false,
            },
        );
    }
}
