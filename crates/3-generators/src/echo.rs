//! The echo server as tasks: one server task accepts connections and spawns one client task
//! per connection; the [`Scheduler`] runs them all on one thread.
//!
//! Rust has no generators on stable, so each task is written the way the compiler would
//! write one: an `enum` of the places it can stop at, and a `resume` that runs from the current
//! place to the next one. Above each enum is the Python generator it stands for.

use std::io::{self, Read};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use fdio::{PendingWrite, Trace, interrupted, log_closed, log_connected, out_of_fds, would_block};

use crate::scheduler::Scheduler;
use crate::task::{Context, Step, Task};

/// A client that sends but does not read would make us buffer without end. Once we owe it
/// this many bytes we stop reading from it until it catches up; its bytes then wait in the
/// kernel, and TCP flow control slows its writes down. Nothing is dropped.
const MAX_UNSENT: usize = 256 * 1024;

/// How long the server task stops accepting after running out of file descriptors.
const OUT_OF_FDS_PAUSE: Duration = Duration::from_millis(500);

/// Serves clients forever: a scheduler with one server task to start with.
pub fn serve(listener: TcpListener, trace: Trace) -> io::Result<()> {
    let mut scheduler = Scheduler::new(trace)?;
    scheduler.spawn(ServerTask::new(listener)?);
    scheduler.run()
}

// The Python generator (`4_generators/generators.py`); it has no answer to running out of
// fds (`accept` raises, and the server dies):
//
//     def server(listener):
//         while True:
//             yield "read", listener
//             client_sock, addr = listener.accept()
//             print("Connection from", addr)
//             tasks.append(client(client_sock))
//
/// Where the server task stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ServerState {
    /// Taking one connection off the backlog per turn, until `WouldBlock`.
    Accepting,
    /// Out of fds: leaving the backlog alone for a while. Retrying at once would spin the CPU,
    /// and parking on `Read` is not allowed (`accept` did not say `WouldBlock`): epoll would
    /// not mention the connections already waiting again.
    Paused,
}

/// The listener's task: accepts connections and spawns a [`ClientTask`] for each.
pub struct ServerTask {
    listener: TcpListener,
    addr: SocketAddr,
    state: ServerState,
}

impl ServerTask {
    /// A task for `listener`, which it switches to non-blocking.
    pub fn new(listener: TcpListener) -> io::Result<ServerTask> {
        listener.set_nonblocking(true)?;
        Ok(ServerTask {
            addr: listener.local_addr()?,
            listener,
            state: ServerState::Accepting,
        })
    }
}

impl Task for ServerTask {
    fn resume(&mut self, ctx: &mut Context<'_>) -> io::Result<Step> {
        if self.state == ServerState::Paused {
            ctx.trace.say(|| "pause over: accepting again".to_string());
            self.state = ServerState::Accepting;
        }
        loop {
            let (stream, peer) = match self.listener.accept() {
                Ok(connection) => connection,
                // The backlog is empty: now, and only now, parking on `Read` is safe.
                Err(err) if would_block(&err) => {
                    return Ok(Step::Read(self.listener.as_raw_fd()));
                }
                Err(err) if interrupted(&err) => continue,
                Err(err) if out_of_fds(&err) => {
                    fdio::log!(
                        "accept: {err}; not accepting for {OUT_OF_FDS_PAUSE:?}, then trying again"
                    );
                    self.state = ServerState::Paused;
                    return Ok(Step::Sleep(Instant::now() + OUT_OF_FDS_PAUSE));
                }
                // For example ECONNABORTED: that one connection is gone, the listener is fine.
                Err(err) => {
                    fdio::log!("accept: {err}");
                    continue;
                }
            };
            if let Err(err) = stream.set_nonblocking(true) {
                log_closed(peer, Some(&err));
                continue;
            }
            log_connected(peer);
            ctx.spawn(ClientTask::new(stream, peer));
            // More connections may be waiting; let the new client and the others have a turn.
            return Ok(Step::Yield);
        }
    }

    fn describe(&self) -> String {
        format!("server {}", self.addr)
    }
}

// The Python generator, were the original an echo server that never blocks on `send`:
//
//     def client(sock):
//         unsent = b""
//         while True:
//             yield "read", sock                    # Reading
//             data = sock.recv(65536)
//             if not data:
//                 break
//             unsent += data
//             while unsent:                         # Writing
//                 yield "write", sock
//                 unsent = unsent[sock.send(unsent):]
//         while unsent: ...                         # Writing, peer closed
//         sock.close()                              # Closing
//
// Ours tries each call first and yields only when it would block (epoll's edges demand it:
// see `crate::task`), and keeps reading while it owes less than MAX_UNSENT.
//
/// Where a client task stands.
#[derive(Debug)]
enum ClientState {
    /// Reading what the peer sent and echoing it at once; what the socket does not take is
    /// kept, up to [`MAX_UNSENT`].
    Reading,
    /// Sending what we owe before reading again. `peer_closed`: the peer sent EOF, so once
    /// everything is sent we close.
    Writing { peer_closed: bool },
    /// Finished, cleanly or with `error`: log it. Dropping the task closes the socket.
    Closing { error: Option<io::Error> },
}

/// One connection's task: echoes every byte back, in order.
pub struct ClientTask {
    stream: TcpStream,
    peer: SocketAddr,
    /// What the peer sent that it has not taken back yet. Holds memory only while not empty.
    unsent: PendingWrite,
    state: ClientState,
}

impl ClientTask {
    /// A task for a freshly accepted, non-blocking `stream`.
    pub fn new(stream: TcpStream, peer: SocketAddr) -> ClientTask {
        ClientTask {
            stream,
            peer,
            unsent: PendingWrite::new(),
            state: ClientState::Reading,
        }
    }
}

impl Task for ClientTask {
    fn resume(&mut self, ctx: &mut Context<'_>) -> io::Result<Step> {
        let fd = self.stream.as_raw_fd();
        loop {
            match self.state {
                ClientState::Reading => match self.stream.read(ctx.buf) {
                    Ok(0) => self.state = ClientState::Writing { peer_closed: true },
                    Ok(n) => {
                        if let Err(err) = self.unsent.write_or_keep(&mut self.stream, &ctx.buf[..n])
                        {
                            self.state = ClientState::Closing { error: Some(err) };
                            continue;
                        }
                        if self.unsent.len() >= MAX_UNSENT {
                            // Stop reading until the peer catches up. Our last write said
                            // `WouldBlock` (that is why bytes are left), so we may park.
                            self.state = ClientState::Writing { peer_closed: false };
                            return Ok(Step::Write(fd));
                        }
                        // More may be waiting: read it on the next turn, after the others.
                        return Ok(Step::Yield);
                    }
                    Err(err) if would_block(&err) && self.unsent.is_empty() => {
                        return Ok(Step::Read(fd));
                    }
                    // Nothing to read, but bytes to send: send them first.
                    Err(err) if would_block(&err) => {
                        self.state = ClientState::Writing { peer_closed: false };
                    }
                    Err(err) if interrupted(&err) => {}
                    Err(err) => self.state = ClientState::Closing { error: Some(err) },
                },
                ClientState::Writing { peer_closed } => {
                    if let Err(err) = self.unsent.flush_to(&mut self.stream) {
                        self.state = ClientState::Closing { error: Some(err) };
                    } else if !self.unsent.is_empty() {
                        // The flush stopped at `WouldBlock`: wait until the peer reads.
                        return Ok(Step::Write(fd));
                    } else if peer_closed {
                        self.state = ClientState::Closing { error: None };
                    } else {
                        self.state = ClientState::Reading;
                    }
                }
                ClientState::Closing { ref error } => {
                    log_closed(self.peer, error.as_ref());
                    return Ok(Step::Done);
                }
            }
        }
    }

    fn describe(&self) -> String {
        format!("client {}", self.peer)
    }
}

#[cfg(test)]
mod tests;
