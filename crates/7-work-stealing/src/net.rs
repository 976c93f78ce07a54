//! TCP: `TcpListener::accept`, `TcpStream::connect`, `read`, `read_chunk`, `write`,
//! `write_all`.
//!
//! The same dance as lesson 5, in `Registered::io`: if the reactor says the direction may be
//! ready, try the system call; on `WouldBlock`, clear the readiness (with the tick we saw),
//! leave the waker and return `Pending`; each operation spends one unit of the budget. A
//! TCP read or write that comes back short clears it too (with the tick it saw): it took
//! all there was, or the send buffer is full — a read unless an event said an urgent byte
//! waits, or the peer closed (see `reactor`).
//!
//! What changed is who may hold these objects: a task moves between workers, so a
//! `TcpStream` must be `Send` — and it is, because it holds an `Arc` to the shared reactor
//! and to its own readiness word, not a thread-local runtime (lesson 5's were `!Send` on
//! purpose).

use std::cell::RefCell;
use std::future::poll_fn;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr};
use std::ops::Deref;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use fdio::{Delivery, interrupted, out_of_fds, would_block};
use mio::Token;
use mio::event::Source;

use crate::budget;
use crate::future::{Either, Event, race};
use crate::reactor::{Direction, Reactor, ScheduledIo};
use crate::runtime::with_shared;
use crate::time::{sleep, timeout};

/// The size of the buffers [`TcpStream::read_chunk`] lends: the most one chunk holds.
pub const READ_CHUNK: usize = 64 * 1024;

/// A mio source registered with the runtime's reactor; deregistered when dropped.
pub(crate) struct Registered<S: Source> {
    pub(crate) source: S,
    token: Token,
    io: Arc<ScheduledIo>,
    reactor: Arc<Reactor>,
    /// Declared after `source`, so it drops after the fd is closed (fields drop in order).
    _closed: ClosedNotice,
}

/// Tells the reactor, when dropped, that a source's fd was closed (see `TcpListener::accept`).
struct ClosedNotice(Arc<Reactor>);

impl Drop for ClosedNotice {
    fn drop(&mut self) {
        self.0.fd_was_closed();
    }
}

/// The outcome of one operation, with the tick its readiness had (see `reactor`).
pub(crate) struct Done<T> {
    pub(crate) result: T,
    tick: usize,
}

impl<S: Source> Registered<S> {
    /// Registers `source` with the current runtime's reactor, watched for urgent bytes too
    /// if `urgent` (a TCP stream: see `reactor`).
    pub(crate) fn new(mut source: S, urgent: bool) -> io::Result<Registered<S>> {
        let reactor = with_shared(|shared| Arc::clone(&shared.reactor));
        let (token, io) = reactor.register(&mut source, urgent)?;
        Ok(Registered {
            source,
            token,
            io,
            _closed: ClosedNotice(Arc::clone(&reactor)),
            reactor,
        })
    }

    /// Tries `op` while the reactor says `direction` may be ready; on `WouldBlock`, clears
    /// the readiness and waits for the next event. `Pending` too when the budget is spent.
    pub(crate) fn io<T>(
        &mut self,
        cx: &mut Context<'_>,
        direction: Direction,
        mut op: impl FnMut(&mut S) -> io::Result<T>,
    ) -> Poll<io::Result<Done<T>>> {
        if !budget::spend(cx) {
            return Poll::Pending;
        }
        loop {
            let tick =
                match self
                    .reactor
                    .poll_ready(self.token, &self.io, &mut self.source, direction, cx)
                {
                    Poll::Ready(Ok(tick)) => tick,
                    Poll::Ready(Err(err)) => return Poll::Ready(Err(err)),
                    Poll::Pending => {
                        budget::refund();
                        return Poll::Pending;
                    }
                };
            match op(&mut self.source) {
                Err(err) if interrupted(&err) => {}
                Err(err) if would_block(&err) => Reactor::clear_ready(&self.io, direction, tick),
                Err(err) => return Poll::Ready(Err(err)),
                Ok(result) => return Poll::Ready(Ok(Done { result, tick })),
            }
        }
    }

    /// A write got less than it asked for at `tick`: a TCP socket takes less than it is
    /// offered only when its send buffer is full, so skip the call that would only say
    /// `WouldBlock`. (A short read is `read_came_short`'s.)
    pub(crate) fn clear_ready<T>(&self, direction: Direction, done: &Done<T>) {
        Reactor::clear_ready(&self.io, direction, done.tick);
    }

    /// A TCP read got less than it asked for at `tick`: it took all there was, so skip the
    /// read that would only say `WouldBlock` — unless an event said otherwise (see
    /// `reactor`).
    pub(crate) fn read_came_short<T>(&self, done: &Done<T>) {
        Reactor::read_came_short(&self.io, done.tick);
    }
}

impl<S: Source> Drop for Registered<S> {
    fn drop(&mut self) {
        self.reactor.deregister(self.token, &mut self.source);
    }
}

thread_local! {
    /// Buffers [`Chunk`]s gave back, on this thread (a few, to reuse; more are freed).
    static BUFFERS: RefCell<Vec<Vec<u8>>> = const { RefCell::new(Vec::new()) };
}

/// How many returned buffers a thread keeps (1 MiB).
const KEEP_BUFFERS: usize = 16;

/// Bytes read by [`TcpStream::read_chunk`], in a buffer lent only once bytes arrived: a
/// connection holds a buffer only while it has bytes in hand, so 10,000 idle ones hold none.
pub struct Chunk {
    buffer: Vec<u8>,
    len: usize,
}

impl Deref for Chunk {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        &self.buffer[..self.len]
    }
}

impl Drop for Chunk {
    fn drop(&mut self) {
        let buffer = std::mem::take(&mut self.buffer);
        // `try_with`: a chunk dropped while its thread exits just frees its buffer.
        let _ = BUFFERS.try_with(|free| {
            let mut free = free.borrow_mut();
            if buffer.len() == READ_CHUNK && free.len() < KEEP_BUFFERS {
                free.push(buffer);
            }
        });
    }
}

fn lend_buffer() -> Vec<u8> {
    BUFFERS
        .try_with(|free| free.borrow_mut().pop())
        .ok()
        .flatten()
        .unwrap_or_else(|| vec![0; READ_CHUNK])
}

/// After `accept` failed for lack of fds, how long the next one waits at most before it
/// tries again; the close of one of our own fds ends the wait at once.
const OUT_OF_FDS_PAUSE: Duration = Duration::from_millis(500);

/// A listening socket.
pub struct TcpListener {
    inner: Registered<mio::net::TcpListener>,
    /// Set when `accept` failed for lack of fds: the close the next one waits for.
    out_of_fds: Option<Arc<Event>>,
}

impl TcpListener {
    /// Takes over a bound `std` listener (for example from `fdio::listen`).
    pub fn from_std(listener: std::net::TcpListener) -> io::Result<TcpListener> {
        listener.set_nonblocking(true)?;
        Ok(TcpListener {
            inner: Registered::new(mio::net::TcpListener::from_std(listener), false)?,
            out_of_fds: None,
        })
    }

    /// Binds `addr` (without printing anything).
    pub fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
        TcpListener::from_std(std::net::TcpListener::bind(addr)?)
    }

    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.source.local_addr()
    }

    /// Waits for the next connection.
    ///
    /// Out of fds (`EMFILE`, `ENFILE`), it returns the error — and the next call waits before
    /// it tries again: the connection is still in the backlog, so the listener stays ready,
    /// and trying at once would fail at once, again and again, spinning the CPU. It waits
    /// until one of this runtime's fds is closed (then one is free), or `OUT_OF_FDS_PAUSE`
    /// for fds freed some other way. As a wait, not an error in a loop: a program that
    /// races `accept` against a signal sees the signal at once.
    pub async fn accept(&mut self) -> io::Result<(TcpStream, SocketAddr)> {
        if let Some(closed) = &self.out_of_fds {
            let _ = timeout(OUT_OF_FDS_PAUSE, closed.wait()).await;
            self.out_of_fds = None;
        }
        let accepted = poll_fn(|cx| {
            self.inner
                .io(cx, Direction::Read, |listener| listener.accept())
        })
        .await;
        let done = match accepted {
            Err(err) if out_of_fds(&err) => {
                self.out_of_fds = Some(self.inner.reactor.next_fd_close());
                return Err(err);
            }
            other => other?,
        };
        let (stream, peer) = done.result;
        Ok((
            TcpStream {
                inner: Registered::new(stream, true)?,
                eof_sent: false,
            },
            peer,
        ))
    }
}

/// A TCP connection.
pub struct TcpStream {
    inner: Registered<mio::net::TcpStream>,
    /// `shutdown` has queued our EOF: the kernel counts it as one byte of its send queue,
    /// and after a reset only we can tell it from data.
    eof_sent: bool,
}

/// How long `until_sent` waits, at most, between two looks at what is still unsent.
const UNSENT_LOOK_MAX: Duration = Duration::from_secs(1);

impl TcpStream {
    /// Connects to `addr` without blocking: writable once the handshake is done, and
    /// `SO_ERROR` says how it went.
    pub async fn connect(addr: SocketAddr) -> io::Result<TcpStream> {
        let mut inner = Registered::new(mio::net::TcpStream::connect(addr)?, true)?;
        poll_fn(|cx| {
            inner.io(cx, Direction::Write, |stream| {
                if let Some(err) = stream.take_error()? {
                    return Err(err);
                }
                // Writable and no error, yet not connected: a spurious wakeup, keep waiting.
                match stream.peer_addr() {
                    Ok(_) => Ok(()),
                    Err(err) if err.kind() == io::ErrorKind::NotConnected => {
                        Err(io::ErrorKind::WouldBlock.into())
                    }
                    Err(err) => Err(err),
                }
            })
        })
        .await?;
        Ok(TcpStream {
            inner,
            eof_sent: false,
        })
    }

    pub fn peer_addr(&self) -> io::Result<SocketAddr> {
        self.inner.source.peer_addr()
    }

    /// Reads what is there (at least one byte), or `Ok(0)` at EOF.
    pub async fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let done = poll_fn(|cx| {
            self.inner
                .io(cx, Direction::Read, |stream| stream.read(&mut *buf))
        })
        .await?;
        if done.result > 0 && done.result < buf.len() {
            self.inner.read_came_short(&done); // see `reactor`
        }
        Ok(done.result)
    }

    /// Reads what is there (at most [`READ_CHUNK`] bytes) into a buffer lent once bytes
    /// have arrived; an empty chunk means EOF.
    pub async fn read_chunk(&mut self) -> io::Result<Chunk> {
        let done = poll_fn(|cx| {
            self.inner.io(cx, Direction::Read, |stream| {
                // A chunk from the start: dropped after a `WouldBlock`, it gives the
                // buffer back for the next try.
                let mut chunk = Chunk {
                    buffer: lend_buffer(),
                    len: 0,
                };
                chunk.len = stream.read(&mut chunk.buffer)?;
                Ok(chunk)
            })
        })
        .await?;
        if done.result.len > 0 && done.result.len < READ_CHUNK {
            self.inner.read_came_short(&done); // see `reactor`
        }
        Ok(done.result)
    }

    /// Writes some of `buf` (at least one byte) and returns how much.
    pub async fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let done = poll_fn(|cx| {
            self.inner
                .io(cx, Direction::Write, |stream| stream.write(buf))
        })
        .await?;
        if done.result < buf.len() {
            self.inner.clear_ready(Direction::Write, &done); // the send buffer is full
        }
        Ok(done.result)
    }

    /// Writes all of `buf`, waiting for room as often as needed.
    pub async fn write_all(&mut self, mut buf: &[u8]) -> io::Result<()> {
        self.write_all_from(&mut buf).await
    }

    /// Writes all of `*buf`, moving its start past every byte written. Cancel-safe: if this
    /// future is dropped half way (it lost a `race`), `*buf` is exactly what was not written.
    pub async fn write_all_from(&mut self, buf: &mut &[u8]) -> io::Result<()> {
        while !buf.is_empty() {
            match self.write(buf).await? {
                0 => return Err(io::ErrorKind::WriteZero.into()),
                n => *buf = &buf[n..],
            }
        }
        Ok(())
    }

    /// Shuts down one or both directions (`Shutdown::Write` sends EOF, keeps reading).
    pub fn shutdown(&mut self, how: Shutdown) -> io::Result<()> {
        self.inner.source.shutdown(how)?;
        self.eof_sent |= how != Shutdown::Read;
        Ok(())
    }

    /// What has become of the bytes written here ([`fdio::delivery`]: `SIOCOUTQ` and the
    /// connection's state): all acknowledged by the peer, some still on their way, or some
    /// lost to a reset.
    pub fn delivery(&self) -> io::Result<Delivery> {
        fdio::delivery(&self.inner.source, self.eof_sent)
    }

    /// After `shutdown(Write)`: waits until the peer has acknowledged everything written
    /// here, and our EOF, reading and dropping whatever the client still sends. Closing
    /// before that, with its bytes unread, would reset the connection — and a reset throws
    /// away what is still queued to send. If the peer resets it first, what it had not
    /// acknowledged is lost: the error says how much ([`delivery`](Self::delivery) says it
    /// too, and for good).
    ///
    /// No event says "acknowledged", so it asks the kernel after each chunk it drops, or
    /// after a pause: 1 ms, doubling up to 1 s (2,000 clients that never read cost 14% of a
    /// core through the grace period when it stopped at 50 ms, 2% now).
    pub async fn until_sent(&mut self) -> io::Result<()> {
        let mut pause = Duration::from_millis(1);
        let mut client_done = false; // its EOF: there is nothing left to read
        loop {
            match self.delivery()? {
                Delivery::Done => return Ok(()),
                Delivery::Pending(_) => {}
                Delivery::Lost(bytes) => {
                    let bytes = fdio::count(bytes as u64, "byte");
                    return Err(io::Error::new(
                        io::ErrorKind::ConnectionReset,
                        format!("reset by the peer with {bytes} not yet acknowledged"),
                    ));
                }
            }
            if client_done {
                sleep(pause).await;
            } else if let Either::Left(chunk) = race(self.read_chunk(), sleep(pause)).await {
                client_done = chunk?.is_empty();
            }
            pause = (pause * 2).min(UNSENT_LOOK_MAX);
        }
    }
}
