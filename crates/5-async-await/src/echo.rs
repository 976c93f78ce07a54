//! The echo server: one task per connection, written as straight-line `async fn`s.
//!
//! Compare lesson 2, where a connection's state lived in a callback's captures and lesson 3,
//! where it was an enum: here it is just the local variables of `echo`, kept across each
//! `.await` by the state machine the compiler writes.
//!
//! Ctrl+C (SIGINT) or SIGTERM shuts down gracefully: stop accepting, let every connection
//! finish writing what it already read, close each one cleanly, print one summary line.

use std::cell::{Cell, RefCell};
use std::io;
use std::net::Shutdown;
use std::rc::Rc;
use std::time::Duration;

use fdio::{ServerArgs, Trace, log_closed, log_connected, out_of_fds};
use nix::sys::signal::Signal;

use crate::executor::{Either, block_on, race, spawn_named};
use crate::net::{TcpListener, TcpStream};
use crate::signal::Signals;
use crate::sync::Event;
use crate::time::timeout;

/// How long to stop accepting after running out of file descriptors, at most: a connection
/// of ours that closes ends the pause at once (its fd is free again).
const OUT_OF_FDS_PAUSE: Duration = Duration::from_millis(500);

/// How long, at shutdown, connections get to finish before we give up on them.
const GRACE: Duration = Duration::from_secs(10);

/// How long a closing connection waits for its client's EOF (see `close_gracefully`).
const LINGER: Duration = Duration::from_secs(2);

/// What the server counts for its summary line.
#[derive(Default)]
struct Stats {
    open: Cell<usize>,
    served: Cell<u64>,
    echoed: Cell<u64>,
    /// Set when a connection closes, freeing its fd. An `Event` is set once, so each pause
    /// for lack of fds puts a fresh one here and waits for that.
    closed: RefCell<Rc<Event>>,
}

/// Binds, prints `listening on …`, and serves until SIGINT or SIGTERM.
pub fn run(args: &ServerArgs) -> io::Result<()> {
    fdio::raise_fd_limit()?;
    let listener = fdio::listen(args.addr)?;
    block_on(Trace::new(args.trace), serve(listener))?
}

async fn serve(listener: std::net::TcpListener) -> io::Result<()> {
    let mut listener = TcpListener::from_std(listener)?;
    let mut signals = Signals::new(&[Signal::SIGINT, Signal::SIGTERM])?;
    let shutdown = Rc::new(Event::new());
    let all_closed = Rc::new(Event::new());
    let stats = Rc::new(Stats::default());

    let signal = loop {
        match race(listener.accept(), signals.recv()).await {
            Either::Left(Ok((stream, peer))) => {
                log_connected(peer);
                stats.open.set(stats.open.get() + 1);
                stats.served.set(stats.served.get() + 1);
                let (shutdown, all_closed, stats) = (
                    Rc::clone(&shutdown),
                    Rc::clone(&all_closed),
                    Rc::clone(&stats),
                );
                spawn_named(format_args!("conn {peer}"), async move {
                    let result = echo(stream, &shutdown, &stats).await;
                    log_closed(peer, result.err().as_ref());
                    stats.open.set(stats.open.get() - 1);
                    stats.closed.borrow().set();
                    if stats.open.get() == 0 && shutdown.is_set() {
                        all_closed.set();
                    }
                });
            }
            Either::Left(Err(err)) if out_of_fds(&err) => {
                // The connection stays in the backlog; retrying at once would spin. Wait
                // until one of our connections closes — or, for fds freed some other way,
                // until the pause is over.
                fdio::log!(
                    "accept: {err}; not accepting for {OUT_OF_FDS_PAUSE:?} (or until a connection closes)"
                );
                let closed = Rc::new(Event::new());
                *stats.closed.borrow_mut() = Rc::clone(&closed);
                let _ = timeout(OUT_OF_FDS_PAUSE, closed.wait()).await;
            }
            Either::Left(Err(err)) => fdio::log!("accept: {err}"),
            Either::Right(signal) => break signal?,
        }
    };

    // Graceful shutdown: refuse new connections, ask the open ones to finish, wait for them.
    drop(listener);
    let open = stats.open.get();
    let open_connections = fdio::count(open as u64, "open connection");
    fdio::log!("{signal}: shutting down; waiting for {open_connections} to finish");
    shutdown.set();
    let finished = open == 0 || timeout(GRACE, all_closed.wait()).await.is_ok();
    let unfinished = if finished {
        String::new()
    } else {
        format!("; gave up on {} after {GRACE:?}", stats.open.get())
    };
    let served = fdio::count(stats.served.get(), "connection");
    let echoed = fdio::count(stats.echoed.get(), "byte");
    fdio::log!("shutdown complete: served {served}, echoed {echoed}{unfinished}");
    Ok(())
}

/// Echoes until the client's EOF or the shutdown; then closes cleanly.
///
/// ```python
/// while data := await reader.read(65536):
///     writer.write(data); await writer.drain()
/// ```
async fn echo(mut stream: TcpStream, shutdown: &Event, stats: &Stats) -> io::Result<()> {
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
        stream.write_all(&chunk).await?;
        stats.echoed.set(stats.echoed.get() + chunk.len() as u64);
    }
    close_gracefully(&mut stream).await
}

/// Sends EOF, then reads (and drops) whatever the client still sends until its own EOF.
/// Closing a socket that has unread bytes makes the kernel send a reset, and a reset can
/// destroy echo bytes still on their way to the client: lingering avoids that.
async fn close_gracefully(stream: &mut TcpStream) -> io::Result<()> {
    stream.shutdown(Shutdown::Write)?;
    let drain = async {
        while !stream.read_chunk().await?.is_empty() {}
        Ok::<(), io::Error>(()) // its EOF
    };
    // A client that never closes only delays us by LINGER.
    timeout(LINGER, drain).await.unwrap_or(Ok(()))
}
