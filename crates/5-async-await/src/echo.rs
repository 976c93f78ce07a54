//! The echo server: one task per connection, written as straight-line `async fn`s.
//!
//! Compare lesson 2, where a connection's state lived in a callback's captures and lesson 3,
//! where it was an enum: here it is just the local variables of `echo`, kept across each
//! `.await` by the state machine the compiler writes.
//!
//! Ctrl+C (SIGINT) or SIGTERM shuts down gracefully, losing nothing it counted: stop
//! accepting; each connection writes back the chunk in hand (it reads no new one), sends its
//! EOF, and closes only once every byte it wrote has left its socket. A client that does not
//! take its echo within the grace period (10 s) is given up on, and the server says how many
//! bytes it dropped for it. The summary counts as echoed only bytes that left. A second
//! signal during the grace period changes nothing: the grace is bounded; SIGKILL ends the
//! process at once.

use std::cell::{Cell, RefCell};
use std::io;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Duration;

use fdio::{ServerArgs, Trace, log_closed, log_connected, out_of_fds};
use nix::sys::signal::Signal;

use crate::combinators::{Either, race};
use crate::executor::{block_on, spawn_named};
use crate::net::{TcpListener, TcpStream};
use crate::signal::Signals;
use crate::sync::Event;
use crate::time::timeout;

/// How long to stop accepting after running out of file descriptors, at most: a connection
/// of ours that closes ends the pause at once (its fd is free again).
const OUT_OF_FDS_PAUSE: Duration = Duration::from_millis(500);

/// How long, at shutdown, connections get to finish before we give up on them.
const GRACE: Duration = Duration::from_secs(10);

/// Runs the server: `listening on …`, then serves until SIGINT or SIGTERM.
pub fn run(args: &ServerArgs) -> io::Result<()> {
    fdio::raise_fd_limit()?;
    block_on(Trace::new(args.trace), serve(args.addr))?
}

/// Accepts until SIGINT or SIGTERM, one task per connection; then shuts down gracefully.
async fn serve(addr: SocketAddr) -> io::Result<()> {
    // The signal handler first: a SIGTERM sent the moment `listening on` appears must find it
    // in place, or the signal's default action ends the process on the spot.
    let mut signals = Signals::new(&[Signal::SIGINT, Signal::SIGTERM])?;
    let mut listener = TcpListener::from_std(fdio::listen(addr)?)?;
    let server = Rc::new(Server::default());

    let signal = loop {
        // The signal is polled first, so it wins whatever else is ready — and out of fds,
        // `accept` is always ready: it fails at once, every time.
        match race(signals.recv(), accept(&mut listener, &server)).await {
            Either::Left(signal) => break signal?,
            Either::Right((stream, peer)) => {
                log_connected(peer);
                server.open.set(server.open.get() + 1);
                server.served.set(server.served.get() + 1);
                let task = connection(stream, peer, Rc::clone(&server));
                spawn_named(format_args!("conn {peer}"), task);
            }
        }
    };

    // Graceful shutdown: refuse new connections, let the open ones finish, for GRACE at most.
    drop(listener);
    let open_connections = fdio::count(server.open.get(), "open connection");
    fdio::log!("{signal}: shutting down; waiting for {open_connections} to finish");
    server.shutdown.set();
    if timeout(GRACE, server.all_closed()).await.is_err() {
        server.give_up.set();
        // Each connection left counts what it drops and ends, in the next turn of the loop.
        server.all_closed().await;
    }
    let served = fdio::count(server.served.get(), "connection");
    let echoed = fdio::count(server.echoed.get(), "byte");
    let given_up = match server.given_up.get() {
        0 => String::new(),
        n => format!(
            "; gave up on {} after {GRACE:?}, dropping {}",
            fdio::count(n, "connection"),
            fdio::count(server.dropped.get(), "byte")
        ),
    };
    fdio::log!("shutdown complete: served {served}, echoed {echoed}{given_up}");
    Ok(())
}

/// Waits for the next connection. Out of fds, `accept` fails and the client stays in the
/// backlog; trying again at once would spin, so wait until one of our connections closes
/// (its fd is free again) — or, for fds freed some other way, until the pause is over.
async fn accept(listener: &mut TcpListener, server: &Server) -> (TcpStream, SocketAddr) {
    loop {
        match listener.accept().await {
            Ok(accepted) => return accepted,
            Err(err) if out_of_fds(&err) => {
                fdio::log!(
                    "accept: {err}; not accepting for {OUT_OF_FDS_PAUSE:?} (or until a connection closes)"
                );
                let closed = Rc::new(Event::new());
                *server.closed.borrow_mut() = Rc::clone(&closed);
                let _ = timeout(OUT_OF_FDS_PAUSE, closed.wait()).await;
            }
            Err(err) => fdio::log!("accept: {err}"),
        }
    }
}

/// One connection, from accept to close: the echo, given up on if the grace period ends
/// first; then its bytes go into the summary.
async fn connection(mut stream: TcpStream, peer: SocketAddr, server: Rc<Server>) {
    let received = Cell::new(0);
    let ended = race(
        server.give_up.wait(),
        echo(&mut stream, &server.shutdown, &received),
    )
    .await;
    // What is still in the socket, or was lost with it to a reset, never reached the client.
    // (If the socket cannot even say, it failed: count nothing as lost.)
    let unsent = stream
        .delivery()
        .map_or(0, |delivery| delivery.undelivered()) as u64;
    let written = stream.bytes_written();
    match ended {
        Either::Left(()) => {
            // Read but not yet written back, and written but still in the socket.
            let dropped = received.get() - written + unsent;
            let bytes = fdio::count(dropped, "byte");
            fdio::log!("connection {peer}: gave up after {GRACE:?}, dropping {bytes}");
            server.given_up.set(server.given_up.get() + 1);
            server.dropped.set(server.dropped.get() + dropped);
        }
        Either::Right(result) => log_closed(peer, result.err().as_ref()),
    }
    server.echoed.set(server.echoed.get() + written - unsent);
    drop(stream); // closed: its fd is free for the next `accept`
    server.open.set(server.open.get() - 1);
    server.closed.borrow().set();
    if server.open.get() == 0 && server.shutdown.is_set() {
        server.all_closed.set();
    }
}

/// Echoes until the client's EOF or the shutdown; then sends EOF and waits until closing
/// loses none of the echo (`close_gracefully`: the client has acknowledged every byte).
/// `received` counts the bytes taken to echo: if the server gives up on this connection
/// mid-chunk, it says what was still in hand.
///
/// ```python
/// while data := await reader.read(65536):
///     writer.write(data); await writer.drain()
/// ```
async fn echo(stream: &mut TcpStream, shutdown: &Event, received: &Cell<u64>) -> io::Result<()> {
    // One wait on the shutdown for the whole connection, raced again and again: its place
    // in the event's waiter list is taken once, not once per message.
    let mut shutdown_wait = shutdown.wait();
    loop {
        // Wait for bytes — or for the shutdown, which wins only between two echoes: a chunk
        // already read is always written back in full first. Losing the race costs nothing:
        // a read takes bytes only in the poll that returns them.
        let chunk = match race(&mut shutdown_wait, stream.read_chunk()).await {
            Either::Left(()) => break,
            Either::Right(chunk) => chunk?,
        };
        if chunk.is_empty() {
            break; // EOF
        }
        received.set(received.get() + chunk.len() as u64);
        stream.write_all(&chunk).await?;
    }
    stream.close_gracefully().await
}

/// What the server shares with its connections: the shutdown's two moments, and the counts
/// for its summary.
#[derive(Default)]
struct Server {
    /// Set on SIGINT or SIGTERM: connections read no new chunk, finish and close.
    shutdown: Event,
    /// Set when the grace period is over: the connections still open give up.
    give_up: Event,
    /// Set when the last connection closes after the shutdown.
    all_closed: Event,
    open: Cell<u64>,
    served: Cell<u64>,
    /// Bytes that left the server: written, and not still in a socket when it closed.
    echoed: Cell<u64>,
    given_up: Cell<u64>,
    dropped: Cell<u64>,
    /// Set when a connection closes, freeing its fd. An `Event` is set once, so each pause
    /// for lack of fds puts a fresh one here and waits for that.
    closed: RefCell<Rc<Event>>,
}

impl Server {
    /// Waits until no connection is open.
    async fn all_closed(&self) {
        if self.open.get() > 0 {
            self.all_closed.wait().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An idle connection's task stays under 512 bytes: it holds no buffer, so the task is
    /// most of what each of the README's 10,000 idle connections costs (about 0.8 KB in
    /// all). A `race` that kept its futures twice made it 856 bytes.
    #[test]
    fn an_idle_connections_task_stays_small() {
        let task_size = block_on(Trace::new(false), async {
            let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
            let peer = listener.local_addr()?;
            let stream = TcpStream::connect(peer).await?;
            let task = connection(stream, peer, Rc::new(Server::default()));
            io::Result::Ok(size_of_val(&task))
        })
        .and_then(|size| size)
        .expect("a connection to our own listener");
        assert!(
            task_size <= 512,
            "a connection's task takes {task_size} bytes"
        );
    }
}
