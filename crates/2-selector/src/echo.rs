//! The echo server as two callbacks: the listener's, which accepts connections and registers
//! a callback for each, and each connection's, which echoes. Python original:
//! `3_async_with_callbacks/callbacks.py`:
//!
//! ```python
//! def accept_connection(server_socket):
//!     client_socket, addr = server_socket.accept()
//!     selector.register(client_socket, selectors.EVENT_READ, data=send_message)
//!
//! def send_message(client_socket):
//!     request = client_socket.recv(4096)
//!     if request: client_socket.send(response)
//!     else: selector.unregister(client_socket); client_socket.close()
//! ```
//!
//! Both callbacks are written once for both triggers: each makes at most `ready.budget` reads
//! (or accepts) per call, stops early at `WouldBlock`, and calls `budget_spent` when the
//! budget ran out first. Level-triggered the budget is one read, as in Python.
//!
//! Neither returns an error, which would end the selector's loop: an error here belongs to
//! one connection (closed and logged) or to one `accept` (logged), never to the server.

use std::io::{self, Read};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::Duration;

use fdio::{PendingWrite, interrupted, log_closed, log_connected, out_of_fds, would_block};

use crate::selector::{Interest, Ready, Selector};

/// Above this many unsent bytes we stop reading a client until it catches up (backpressure):
/// a client that sends without reading cannot make us buffer without end.
const MAX_UNSENT: usize = 256 * 1024;

/// How long to stop accepting after running out of file descriptors.
const OUT_OF_FDS_PAUSE: Duration = Duration::from_millis(500);

/// Registers the listener with its accept callback. `selector.run()` then serves forever.
pub fn start(selector: &mut Selector, listener: TcpListener) -> io::Result<()> {
    listener.set_nonblocking(true)?;
    let name = format!("listener {}", listener.local_addr()?);
    selector.register(name, listener, Interest::READ, accept_connections)?;
    Ok(())
}

/// The listener's callback: accept waiting connections and register a callback for each.
fn accept_connections(
    selector: &mut Selector,
    listener: &mut TcpListener,
    ready: Ready,
) -> io::Result<()> {
    // Watch the listener again, in case a lack of fds paused it (a no-op otherwise).
    if let Err(err) = selector.modify(ready.token, listener, Interest::READ) {
        fdio::log!("accept: {err}");
    }
    for _ in 0..ready.budget {
        let (stream, peer) = match listener.accept() {
            Ok(connection) => connection,
            Err(err) if would_block(&err) => return Ok(()),
            Err(err) if interrupted(&err) => continue,
            Err(err) if out_of_fds(&err) => {
                // The connection waits in the backlog and keeps the listener readable: a
                // level-triggered epoll would report it again at once, forever. Stop watching
                // the listener, and ask the selector to call us again a little later.
                fdio::log!("accept: {err}; trying again in {OUT_OF_FDS_PAUSE:?}");
                if let Err(err) = selector.modify(ready.token, listener, Interest::NONE) {
                    fdio::log!("accept: {err}");
                }
                selector.wake_after(ready.token, OUT_OF_FDS_PAUSE);
                return Ok(());
            }
            // For example ECONNABORTED: that one connection is gone, the listener is fine.
            Err(err) => {
                fdio::log!("accept: {err}");
                continue;
            }
        };
        if let Err(err) = register_connection(selector, stream, peer) {
            log_closed(peer, Some(&err));
        }
    }
    selector.budget_spent(ready.token);
    Ok(())
}

fn register_connection(
    selector: &mut Selector,
    stream: TcpStream,
    peer: SocketAddr,
) -> io::Result<()> {
    // On Linux an accepted socket does not inherit the listener's non-blocking flag.
    stream.set_nonblocking(true)?;
    let mut connection = Connection {
        peer,
        unsent: PendingWrite::new(),
        eof: false,
    };
    selector.register(
        format!("client {peer}"),
        stream,
        Interest::READ,
        move |selector, stream, ready| connection.on_ready(selector, stream, ready),
    )?;
    log_connected(peer);
    Ok(())
}

/// What the callback of one client remembers between calls.
struct Connection {
    peer: SocketAddr,
    /// What the client sent that we could not write back yet.
    unsent: PendingWrite,
    /// The client closed its sending side.
    eof: bool,
}

impl Connection {
    /// The client's callback: echo what there is, then tell the selector what to wait for.
    /// An error closes this connection only.
    fn on_ready(
        &mut self,
        selector: &mut Selector,
        stream: &mut TcpStream,
        ready: Ready,
    ) -> io::Result<()> {
        let result = self.echo(selector, stream, ready).and_then(|()| {
            if self.finished() {
                return Ok(());
            }
            // The selector makes the `epoll_ctl` call only when this differs from last time.
            selector.modify(ready.token, stream, self.interest())
        });
        if result.is_err() || self.finished() {
            // Unregistering drops this callback, and the stream it owns: the socket closes.
            let _ = selector.unregister(ready.token, stream);
            log_closed(self.peer, result.err().as_ref());
        }
        Ok(())
    }

    /// Flushes what is owed, then reads and echoes: at most `ready.budget` reads, fewer if
    /// the kernel says `WouldBlock` first (nothing left), at EOF, or while we owe too much.
    fn echo(
        &mut self,
        selector: &mut Selector,
        stream: &mut TcpStream,
        ready: Ready,
    ) -> io::Result<()> {
        if ready.writable {
            self.unsent.flush_to(stream)?;
        }
        if !ready.readable {
            return Ok(());
        }
        let mut reads = 0;
        while self.wants_to_read() {
            if reads == ready.budget {
                selector.budget_spent(ready.token);
                break;
            }
            reads += 1;
            match stream.read(selector.read_buffer()) {
                Ok(0) => self.eof = true,
                Ok(n) => self
                    .unsent
                    .write_or_keep(stream, &selector.read_buffer()[..n])?,
                Err(err) if would_block(&err) => break,
                Err(err) if interrupted(&err) => continue,
                Err(err) => return Err(err),
            }
        }
        Ok(())
    }

    /// Read while the client may still send and does not owe us too much; watch for
    /// writability only while we owe bytes — a socket with room in its send buffer is always
    /// writable, and level-triggered epoll would report it on every turn.
    fn interest(&self) -> Interest {
        Interest {
            read: self.wants_to_read(),
            write: !self.unsent.is_empty(),
        }
    }

    fn wants_to_read(&self) -> bool {
        !self.eof && self.unsent.len() < MAX_UNSENT
    }

    /// The client sent EOF and has every byte back: time to close.
    fn finished(&self) -> bool {
        self.eof && self.unsent.is_empty()
    }
}
