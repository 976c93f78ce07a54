//! The echo server: one task per connection, the same straight-line `async fn` as lesson 5 —
//! but the tasks run on every worker at once. What changed in the program is only what the
//! compiler asked for: state shared between tasks is `Arc` and atomics instead of `Rc` and
//! `Cell`, because those tasks may now run on different threads at the same moment.
//!
//! Ctrl+C (SIGINT) or SIGTERM shuts down gracefully, losing nothing it counted: stop
//! accepting; each connection writes back the chunk in hand, sends EOF, and waits until
//! everything it wrote has reached the client — for 10 s at most, then it gives up and says
//! how many bytes it drops; one summary line. A client that resets its connection ends it at
//! once, and what its kernel had not acknowledged is not counted as echoed (the reset threw
//! it away: `fdio::delivery` says `Lost`).

use std::io;
use std::net;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use fdio::{Delivery, ServerArgs, Trace, count, log_closed, log_connected};
use nix::sys::signal::Signal;

use crate::future::{Either, Event, race};
use crate::net::{TcpListener, TcpStream};
use crate::runtime::{DriverMode, Runtime, spawn_named};
use crate::signal::Signals;
use crate::time::timeout;

/// How long, after the signal, connections get to finish before we give up on them.
const GRACE: Duration = Duration::from_secs(10);

/// Where the shutdown stands; every connection watches it.
#[derive(Default)]
struct Shutdown {
    /// The signal came: read no more.
    begun: Event,
    /// The grace period is over: give up.
    over: Event,
    /// The last connection closed, after `begun`.
    all_closed: Event,
}

/// What the server counts for its summary line.
#[derive(Default)]
struct Stats {
    open: AtomicUsize,
    served: AtomicU64,
    /// Bytes written back to the clients, less those still in the kernel's send queue of a
    /// connection given up, or thrown away by a client's reset: bytes that left.
    echoed: AtomicU64,
    /// Connections given up at the end of the grace period, and the bytes they dropped
    /// (still in hand, or still in the send queue).
    given_up: AtomicU64,
    dropped: AtomicU64,
}

/// How a connection ended, when it did not fail.
enum Finished {
    Closed,
    /// The grace period ran out with these many bytes not delivered.
    GaveUp {
        dropped: u64,
    },
}

/// Prints `listening on …` and serves on `workers` workers until SIGINT or SIGTERM.
pub fn run(args: &ServerArgs, workers: usize, driver: DriverMode) -> io::Result<()> {
    fdio::raise_fd_limit()?;
    let runtime = Runtime::build(workers, driver, Trace::new(args.trace))?;
    runtime.block_on(async {
        // The signals first: one sent the moment `listening on` is printed is obeyed.
        let signals = Signals::new(&[Signal::SIGINT, Signal::SIGTERM])?;
        let listener = TcpListener::from_std(fdio::listen(args.addr)?)?;
        serve(listener, signals).await
    })
}

async fn serve(mut listener: TcpListener, mut signals: Signals) -> io::Result<()> {
    let shutdown = Arc::new(Shutdown::default());
    let stats = Arc::new(Stats::default());

    let signal = loop {
        // The signal first: when both are ready, it wins.
        match race(signals.recv(), listener.accept()).await {
            Either::Left(signal) => break signal?,
            Either::Right(Ok((mut stream, peer))) => {
                log_connected(peer);
                stats.open.fetch_add(1, Ordering::SeqCst);
                stats.served.fetch_add(1, Ordering::Relaxed);
                let (shutdown, stats) = (Arc::clone(&shutdown), Arc::clone(&stats));
                spawn_named(format_args!("conn {peer}"), async move {
                    match echo(&mut stream, &shutdown, &stats).await {
                        Ok(Finished::GaveUp { dropped }) => fdio::log!(
                            "connection {peer}: gave up after {GRACE:?}, dropping {}",
                            count(dropped, "byte")
                        ),
                        Ok(Finished::Closed) => log_closed(peer, None),
                        Err(err) => {
                            // A reset threw away what the client had not acknowledged: it
                            // was written, and never left.
                            if let Ok(Delivery::Lost(lost)) = stream.delivery() {
                                stats.echoed.fetch_sub(lost as u64, Ordering::Relaxed);
                            }
                            log_closed(peer, Some(&err));
                        }
                    }
                    drop(stream); // closed before it counts as closed
                    // The last one out, once the shutdown began, says so. SeqCst on both
                    // sides: either we see the shutdown, or `serve` sees our decrement.
                    if stats.open.fetch_sub(1, Ordering::SeqCst) == 1 && shutdown.begun.is_set() {
                        shutdown.all_closed.set();
                    }
                });
            }
            // Out of fds, among others: `accept` itself waits before it tries again.
            Either::Right(Err(err)) => fdio::log!("accept: {err}"),
        }
    };

    // Graceful shutdown: refuse new connections, ask the open ones to finish, wait for them.
    drop(listener);
    let open = stats.open.load(Ordering::SeqCst) as u64;
    let open_connections = count(open, "open connection");
    fdio::log!("{signal}: shutting down; waiting for {open_connections} to finish");
    shutdown.begun.set();
    if stats.open.load(Ordering::SeqCst) > 0
        && timeout(GRACE, shutdown.all_closed.wait()).await.is_err()
    {
        shutdown.over.set(); // the ones still open give up now
        shutdown.all_closed.wait().await;
    }
    let served = count(stats.served.load(Ordering::Relaxed), "connection");
    let echoed = count(stats.echoed.load(Ordering::Relaxed), "byte");
    let given_up = match stats.given_up.load(Ordering::Relaxed) {
        0 => String::new(),
        n => format!(
            "; gave up on {} after {GRACE:?}, dropping {}",
            count(n, "connection"),
            count(stats.dropped.load(Ordering::Relaxed), "byte")
        ),
    };
    fdio::log!("shutdown complete: served {served}, echoed {echoed}{given_up}");
    Ok(())
}

/// Echoes until the client's EOF or the shutdown. Then sends EOF and waits until the client
/// has everything — or until the grace period is over.
///
/// ```python
/// while data := await reader.read(65536):
///     writer.write(data); await writer.drain()
/// ```
async fn echo(stream: &mut TcpStream, shutdown: &Shutdown, stats: &Stats) -> io::Result<Finished> {
    // One wait on the shutdown for the whole connection, raced again and again.
    let mut begun = shutdown.begun.wait();
    loop {
        // Wait for bytes — or for the shutdown, which wins only between two echoes: a chunk
        // already read is always written back in full first.
        let chunk = match race(&mut begun, stream.read_chunk()).await {
            Either::Left(()) => break,
            Either::Right(chunk) => chunk?,
        };
        if chunk.is_empty() {
            // EOF: nothing is left unread, so closing resets nothing, and the kernel
            // delivers what we wrote.
            return Ok(Finished::Closed);
        }
        // `unsent` moves on as bytes are written: if the grace period ends first, it is
        // what was never written.
        let mut unsent = &chunk[..];
        let written = race(stream.write_all_from(&mut unsent), shutdown.over.wait()).await;
        let done = chunk.len() - unsent.len();
        stats.echoed.fetch_add(done as u64, Ordering::Relaxed);
        match written {
            Either::Left(result) => result?,
            Either::Right(()) => return give_up(stream, unsent.len(), stats),
        }
    }
    // The shutdown: EOF after the data, then wait until it has all left.
    stream.shutdown(net::Shutdown::Write)?;
    match race(stream.until_sent(), shutdown.over.wait()).await {
        Either::Left(result) => result.map(|()| Finished::Closed),
        Either::Right(()) => give_up(stream, 0, stats),
    }
}

/// The grace period is over: counts what is dropped — `unsent` bytes still in hand, and
/// what the kernel still has to send.
fn give_up(stream: &TcpStream, unsent: usize, stats: &Stats) -> io::Result<Finished> {
    let queued = stream.delivery()?.undelivered() as u64;
    let dropped = unsent as u64 + queued;
    stats.given_up.fetch_add(1, Ordering::Relaxed);
    stats.dropped.fetch_add(dropped, Ordering::Relaxed);
    stats.echoed.fetch_sub(queued, Ordering::Relaxed); // written, but it never left
    Ok(Finished::GaveUp { dropped })
}
