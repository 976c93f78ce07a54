//! The echo server: one task per connection, the same straight-line `async fn` as lesson 5 —
//! but the tasks run on every worker at once. What changed in the program is only what the
//! compiler asked for: state shared between tasks is `Arc` and atomics instead of `Rc` and
//! `Cell`, because those tasks may now run on different threads at the same moment.
//!
//! Ctrl+C (SIGINT) or SIGTERM shuts down gracefully: stop accepting, let every connection
//! finish writing what it already read, close each one cleanly, print one summary line.

use std::io;
use std::net::Shutdown;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use fdio::{ServerArgs, Trace, log_closed, log_connected, out_of_fds};
use nix::sys::signal::Signal;

use crate::future::{Either, Event, race};
use crate::net::{TcpListener, TcpStream};
use crate::runtime::{Runtime, spawn_named};
use crate::signal::Signals;
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
    open: AtomicUsize,
    served: AtomicU64,
    echoed: AtomicU64,
    /// Set when a connection closes, freeing its fd. An `Event` is set once, so each pause
    /// for lack of fds puts a fresh one here and waits for that.
    closed: Mutex<Arc<Event>>,
}

impl Stats {
    fn closed(&self) -> Arc<Event> {
        Arc::clone(&self.closed.lock().unwrap_or_else(PoisonError::into_inner))
    }
}

/// Binds, prints `listening on …`, and serves on `workers` workers until SIGINT or SIGTERM.
pub fn run(args: &ServerArgs, workers: usize) -> io::Result<()> {
    fdio::raise_fd_limit()?;
    let listener = fdio::listen(args.addr)?;
    let runtime = Runtime::with_trace(workers, Trace::new(args.trace))?;
    runtime.block_on(serve(listener))
}

async fn serve(listener: std::net::TcpListener) -> io::Result<()> {
    let mut listener = TcpListener::from_std(listener)?;
    let mut signals = Signals::new(&[Signal::SIGINT, Signal::SIGTERM])?;
    let shutdown = Arc::new(Event::new());
    let all_closed = Arc::new(Event::new());
    let stats = Arc::new(Stats::default());

    let signal = loop {
        match race(listener.accept(), signals.recv()).await {
            Either::Left(Ok((stream, peer))) => {
                log_connected(peer);
                stats.open.fetch_add(1, Ordering::SeqCst);
                stats.served.fetch_add(1, Ordering::Relaxed);
                let (shutdown, all_closed, stats) = (
                    Arc::clone(&shutdown),
                    Arc::clone(&all_closed),
                    Arc::clone(&stats),
                );
                spawn_named(format_args!("conn {peer}"), async move {
                    let result = echo(stream, &shutdown, &stats).await;
                    log_closed(peer, result.err().as_ref());
                    stats.closed().set();
                    // The last one out, once the shutdown began, says so. SeqCst on both
                    // sides: either we see the shutdown, or `serve` sees our decrement.
                    if stats.open.fetch_sub(1, Ordering::SeqCst) == 1 && shutdown.is_set() {
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
                let closed = Arc::new(Event::new());
                *stats.closed.lock().unwrap_or_else(PoisonError::into_inner) = Arc::clone(&closed);
                let _ = timeout(OUT_OF_FDS_PAUSE, closed.wait()).await;
            }
            Either::Left(Err(err)) => fdio::log!("accept: {err}"),
            Either::Right(signal) => break signal?,
        }
    };

    // Graceful shutdown: refuse new connections, ask the open ones to finish, wait for them.
    drop(listener);
    let open = stats.open.load(Ordering::SeqCst);
    let open_connections = fdio::count(open as u64, "open connection");
    fdio::log!("{signal}: shutting down; waiting for {open_connections} to finish");
    shutdown.set();
    let finished =
        stats.open.load(Ordering::SeqCst) == 0 || timeout(GRACE, all_closed.wait()).await.is_ok();
    let unfinished = if finished {
        String::new()
    } else {
        format!(
            "; gave up on {} after {GRACE:?}",
            stats.open.load(Ordering::SeqCst)
        )
    };
    let served = fdio::count(stats.served.load(Ordering::Relaxed), "connection");
    let echoed = fdio::count(stats.echoed.load(Ordering::Relaxed), "byte");
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
    // One wait on the shutdown for the whole connection, raced again and again.
    let mut shutdown_wait = shutdown.wait();
    loop {
        // Wait for bytes — or for the shutdown, which wins only between two echoes: a chunk
        // already read is always written back in full first.
        let chunk = match race(&mut shutdown_wait, stream.read_chunk()).await {
            Either::Left(()) => break,
            Either::Right(chunk) => chunk?,
        };
        if chunk.is_empty() {
            break; // EOF
        }
        stream.write_all(&chunk).await?;
        stats
            .echoed
            .fetch_add(chunk.len() as u64, Ordering::Relaxed);
    }
    close_gracefully(&mut stream).await
}

/// Sends EOF, then reads (and drops) whatever the client still sends until its own EOF, so
/// that closing does not reset the connection and destroy echo bytes still on their way.
async fn close_gracefully(stream: &mut TcpStream) -> io::Result<()> {
    stream.shutdown(Shutdown::Write)?;
    let drain = async {
        while !stream.read_chunk().await?.is_empty() {}
        Ok::<(), io::Error>(()) // its EOF
    };
    // A client that never closes only delays us by LINGER.
    timeout(LINGER, drain).await.unwrap_or(Ok(()))
}
