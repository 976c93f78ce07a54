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

use std::io::{self, Read};
use std::net::SocketAddr;
use std::time::Duration;

use fdio::{PendingWrite, interrupted, log_closed, log_connected, out_of_fds, would_block};
use mio::net::{TcpListener, TcpStream};
use mio::{Interest, Token};

use crate::selector::{Ready, Selector};

/// Above this many unsent bytes we stop reading a client until it catches up (backpressure):
/// a client that sends without reading cannot make us buffer without end.
const MAX_UNSENT: usize = 256 * 1024;

/// How long to stop accepting after running out of file descriptors.
const OUT_OF_FDS_PAUSE: Duration = Duration::from_millis(500);

/// Registers the listener with its accept callback. `selector.run()` then serves forever.
pub fn start(selector: &mut Selector, listener: std::net::TcpListener) -> io::Result<()> {
    listener.set_nonblocking(true)?;
    let name = format!("listener {}", listener.local_addr()?);
    selector.register(
        name,
        TcpListener::from_std(listener),
        Interest::READABLE,
        accept_connections,
    )?;
    Ok(())
}

/// The listener's callback: accept every waiting connection and register a callback for it.
fn accept_connections(selector: &mut Selector, listener: &mut TcpListener, ready: Ready) {
    // Edge-triggered: epoll says "readable" once per burst of connections, so accept until
    // WouldBlock, or the ones left in the backlog may wait until the next client comes.
    loop {
        let (stream, peer) = match listener.accept() {
            Ok(connection) => connection,
            Err(err) if would_block(&err) => return,
            Err(err) if interrupted(&err) => continue,
            Err(err) if out_of_fds(&err) => {
                // The remaining connections wait in the backlog. No new edge will come for
                // them, so ask the selector to call us again a little later.
                eprintln!("accept: {err}; trying again in {OUT_OF_FDS_PAUSE:?}");
                selector.wake_after(ready.token, OUT_OF_FDS_PAUSE);
                return;
            }
            // For example ECONNABORTED: that one connection is gone, the listener is fine.
            Err(err) => {
                eprintln!("accept: {err}");
                continue;
            }
        };
        let mut connection = Connection {
            peer,
            unsent: PendingWrite::new(),
            eof: false,
            watching: Interest::READABLE,
        };
        let registered = selector.register(
            format!("client {peer}"),
            stream,
            Interest::READABLE,
            move |selector, stream, ready| connection.on_ready(selector, stream, ready.token),
        );
        match registered {
            Ok(_) => log_connected(peer),
            Err(err) => log_closed(peer, Some(&err)),
        }
    }
}

/// What the callback of one client remembers between calls.
struct Connection {
    peer: SocketAddr,
    /// What the client sent that we could not write back yet.
    unsent: PendingWrite,
    /// The client closed its sending side.
    eof: bool,
    /// What the selector watches this client for now.
    watching: Interest,
}

impl Connection {
    /// The client's callback: echo what there is, then tell the selector what to wait for.
    fn on_ready(&mut self, selector: &mut Selector, stream: &mut TcpStream, token: Token) {
        let result = self.echo(stream, selector.read_buffer()).and_then(|()| {
            if self.finished() {
                return Ok(());
            }
            // Watch for writability only while we owe bytes: an empty send buffer would
            // otherwise report "writable" again and again.
            let wanted = if self.unsent.is_empty() {
                Interest::READABLE
            } else {
                Interest::READABLE | Interest::WRITABLE
            };
            if wanted != self.watching {
                selector.modify(token, stream, wanted)?;
                self.watching = wanted;
            }
            Ok(())
        });
        if result.is_err() || self.finished() {
            // Unregistering drops this callback, and the stream it owns: the socket closes.
            let _ = selector.unregister(token, stream);
            log_closed(self.peer, result.err().as_ref());
        }
    }

    /// Flushes what is owed, then reads and echoes until the kernel says `WouldBlock`.
    /// Edge-triggered: whatever we leave behind now, epoll will not mention again. Even a
    /// read shorter than the buffer is no proof the socket is empty: the client's last bytes
    /// and its EOF can arrive under one edge, and only the next read finds the EOF.
    fn echo(&mut self, stream: &mut TcpStream, buf: &mut [u8]) -> io::Result<()> {
        self.unsent.flush_to(stream)?;
        // Stop reading while we owe too much; when the client catches up, the writable event
        // brings us back here and reading resumes where it stopped.
        while !self.eof && self.unsent.len() < MAX_UNSENT {
            match stream.read(buf) {
                Ok(0) => self.eof = true,
                Ok(n) => self.unsent.write_or_keep(stream, &buf[..n])?,
                Err(err) if would_block(&err) => break,
                Err(err) if interrupted(&err) => continue,
                Err(err) => return Err(err),
            }
        }
        Ok(())
    }

    /// The client sent EOF and has every byte back: time to close.
    fn finished(&self) -> bool {
        self.eof && self.unsent.is_empty()
    }
}
