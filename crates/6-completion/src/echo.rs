//! The echo server: lesson 5's program, line for line, on the ring.
//!
//! What changed is underneath: `accept` takes the next result of one multishot accept,
//! `recv` the next buffer the kernel filled for a multishot receive, and `write_all` owns
//! the buffer while the kernel sends it, then drops it — which puts it back in the ring.
//!
//! Ctrl+C (SIGINT) or SIGTERM shuts down gracefully: stop accepting, let every connection
//! finish the chunk in hand and close cleanly — until the client has every byte it was sent
//! — and print one summary line. A connection that cannot finish within 10 s (its client
//! does not read) is given up, and the summary says how many bytes were dropped with it.

use std::cell::{Cell, RefCell};
use std::io;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Duration;

use fdio::{ServerArgs, Trace, count, log_closed, log_connected, out_of_fds};
use nix::sys::signal::Signal;

use crate::executor::{Either, block_on, race, spawn_named};
use crate::net::{TcpListener, TcpStream};
use crate::signal::Signals;
use crate::sync::Event;
use crate::time::timeout;

/// How long to stop accepting after running out of file descriptors, at most: a connection
/// of ours that closes ends the pause at once (its fd is free again), and so does a signal.
const OUT_OF_FDS_PAUSE: Duration = Duration::from_millis(500);

/// How long, at shutdown, connections get to finish before we give up on them.
const GRACE: Duration = Duration::from_secs(10);

/// What the server counts for its summary line.
#[derive(Default)]
struct Stats {
    open: Cell<usize>,
    served: Cell<u64>,
    /// Bytes that reached the clients: sent, and acknowledged.
    echoed: Cell<u64>,
    gave_up: Cell<u64>,
    dropped: Cell<u64>,
    /// Set when a connection closes, freeing its fd. An `Event` is set once, so each pause
    /// for lack of fds puts a fresh one here and waits for that.
    closed: RefCell<Rc<Event>>,
}

/// Sets up the ring and the signal handling, binds (printing `listening on …`), and serves
/// until SIGINT or SIGTERM. Whatever cannot be set up fails before `listening on`.
pub fn run(args: &ServerArgs) -> io::Result<()> {
    fdio::raise_fd_limit()?;
    block_on(Trace::new(args.trace), serve(args.addr))?
}

async fn serve(addr: SocketAddr) -> io::Result<()> {
    // The handler first: a SIGTERM sent the moment `listening on` is printed is ours.
    let mut signals = Signals::new(&[Signal::SIGINT, Signal::SIGTERM])?;
    let mut listener = TcpListener::bind(addr)?;
    let shutdown = Rc::new(Event::new());
    let give_up = Rc::new(Event::new());
    let all_closed = Rc::new(Event::new());
    let stats = Rc::new(Stats::default());

    let signal = loop {
        // The signal is raced first: an accept that fails at once, every time, cannot
        // starve it.
        match race(signals.recv(), listener.accept()).await {
            Either::Right(Ok((mut stream, peer))) => {
                log_connected(peer);
                stats.open.set(stats.open.get() + 1);
                stats.served.set(stats.served.get() + 1);
                let (shutdown, give_up, all_closed, stats) = (
                    Rc::clone(&shutdown),
                    Rc::clone(&give_up),
                    Rc::clone(&all_closed),
                    Rc::clone(&stats),
                );
                spawn_named(format_args!("conn {peer}"), async move {
                    serve_one(&mut stream, peer, &shutdown, &give_up, &stats).await;
                    drop(stream); // closed: its fd is free for the next accept
                    stats.open.set(stats.open.get() - 1);
                    stats.closed.borrow().set();
                    if stats.open.get() == 0 && shutdown.is_set() {
                        all_closed.set();
                    }
                });
            }
            Either::Right(Err(err)) if out_of_fds(&err) => {
                // The connection stays in the backlog; retrying at once would spin. Wait
                // until one of our connections closes, the pause is over — or a signal.
                fdio::log!(
                    "accept: {err}; not accepting for {OUT_OF_FDS_PAUSE:?} (or until a connection closes)"
                );
                let closed = Rc::new(Event::new());
                *stats.closed.borrow_mut() = Rc::clone(&closed);
                let pause = timeout(OUT_OF_FDS_PAUSE, closed.wait());
                if let Either::Left(signal) = race(signals.recv(), pause).await {
                    break signal?;
                }
            }
            Either::Right(Err(err)) => fdio::log!("accept: {err}"),
            Either::Left(signal) => break signal?,
        }
    };

    // Graceful shutdown: refuse new connections, ask the open ones to finish, wait for them
    // — for GRACE at most, then give up on those left.
    drop(listener);
    let open = stats.open.get();
    fdio::log!(
        "{signal}: shutting down; waiting for {} to finish",
        count(open as u64, "open connection")
    );
    shutdown.set();
    if open > 0 && timeout(GRACE, all_closed.wait()).await.is_err() {
        give_up.set();
        all_closed.wait().await;
    }
    let mut summary = format!(
        "shutdown complete: served {}, echoed {}",
        count(stats.served.get(), "connection"),
        count(stats.echoed.get(), "byte")
    );
    if stats.gave_up.get() > 0 {
        summary += &format!(
            "; gave up on {} after {GRACE:?}, dropping {}",
            count(stats.gave_up.get(), "connection"),
            count(stats.dropped.get(), "byte")
        );
    }
    fdio::log!("{summary}");
    Ok(())
}

/// One connection, from accept to close: its echo — unless the grace period runs out
/// first, and then what it still held is counted as dropped.
///
/// It borrows the stream its task holds: an `async fn` keeps what it is given twice (the
/// argument, and the local its body moves it into), so a stream handed over would be kept
/// three times by each of 10,000 idle connections (120 bytes each time).
async fn serve_one(
    stream: &mut TcpStream,
    peer: SocketAddr,
    shutdown: &Event,
    give_up: &Event,
    stats: &Stats,
) {
    let finished = race(echo(stream, shutdown), give_up.wait()).await;
    // What the client has not acknowledged by now never reaches it (0 after a clean close;
    // what a reset threw away; what we give up on): only the rest was echoed.
    let in_flight = stream
        .delivery()
        .map_or(0, |delivery| delivery.undelivered() as u64);
    let echoed = stream.bytes_sent().saturating_sub(in_flight);
    stats.echoed.set(stats.echoed.get() + echoed);
    match finished {
        Either::Left(result) => log_closed(peer, result.err().as_ref()),
        Either::Right(()) => {
            let dropped = in_flight + stream.bytes_unsent();
            fdio::log!(
                "connection {peer}: gave up after {GRACE:?}, dropping {}",
                count(dropped, "byte")
            );
            stats.gave_up.set(stats.gave_up.get() + 1);
            stats.dropped.set(stats.dropped.get() + dropped);
        }
    }
}

/// Echoes until the client's EOF or the shutdown; then closes cleanly.
///
/// ```python
/// while data := await reader.read(65536):
///     writer.write(data); await writer.drain()
/// ```
async fn echo(stream: &mut TcpStream, shutdown: &Event) -> io::Result<()> {
    // One wait on the shutdown for the whole connection, raced again and again: its place
    // in the event's waiter list is taken once, not once per message.
    let mut shutdown_wait = shutdown.wait();
    loop {
        // Wait for bytes — or for the shutdown, which wins only between two echoes: a chunk
        // already received is always written back in full first. Losing the race costs
        // nothing: the receive stays in flight in `stream`, its results wait there.
        let chunk = match race(&mut shutdown_wait, stream.recv()).await {
            Either::Left(()) => break,
            Either::Right(chunk) => chunk?,
        };
        let Some(chunk) = chunk else {
            break; // EOF
        };
        // The send owns the buffer until the kernel is done with it; we get it back and
        // drop it, which returns it to the ring.
        let (sent, _chunk) = stream.write_all(chunk).await;
        sent?;
    }
    // EOF to the client, then wait until it has every byte: closing sooner could reset
    // the connection and destroy what is still on its way.
    stream.close_gracefully().await
}

#[cfg(test)]
mod tests {
    use std::os::unix::net::UnixStream;

    use super::*;

    /// An idle connection's task stays small: it holds no buffer, so the task — the stream
    /// (120 bytes), the counters and this future — is most of what each of 10,000 idle
    /// connections costs (under 1 KB in all). The future borrows the stream: an `async fn`
    /// keeps what it is given twice, and taking the stream, with a `race` that kept its
    /// futures twice, made it 1,152 bytes.
    #[test]
    fn an_idle_connections_task_stays_small() {
        if !crate::tests::available() {
            return;
        }
        let (ours, _theirs) = UnixStream::pair().expect("a socket pair");
        let future_size = block_on(Trace::new(false), async {
            let mut stream = TcpStream::new(ours.into());
            let (shutdown, give_up, stats) = (Event::new(), Event::new(), Stats::default());
            let peer = SocketAddr::from(([127, 0, 0, 1], 1));
            size_of_val(&serve_one(&mut stream, peer, &shutdown, &give_up, &stats))
        })
        .expect("the ring");
        assert!(
            future_size <= 512,
            "serve_one's future takes {future_size} bytes"
        );
    }
}
