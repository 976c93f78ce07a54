//! TCP: `TcpListener::accept`, `TcpStream::connect`, `read`, `read_chunk`, `write`,
//! `write_all`.
//!
//! The same dance as lesson 5, in `Registered::io`: if the reactor says the direction may be
//! ready, try the system call; on `WouldBlock`, clear the readiness (with the tick we saw),
//! leave the waker and return `Pending`; each operation spends one unit of the budget.
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

use fdio::{interrupted, would_block};
use mio::Token;
use mio::event::Source;

use crate::budget;
use crate::reactor::{Direction, Reactor, ScheduledIo};
use crate::runtime::with_shared;

/// The size of the buffers [`TcpStream::read_chunk`] lends: the most one chunk holds.
pub const READ_CHUNK: usize = 64 * 1024;

/// A mio source registered with the runtime's reactor; deregistered when dropped.
pub(crate) struct Registered<S: Source> {
    pub(crate) source: S,
    token: Token,
    io: Arc<ScheduledIo>,
    reactor: Arc<Reactor>,
}

/// The outcome of one operation, with the tick its readiness had (see `reactor`).
pub(crate) struct Done<T> {
    pub(crate) result: T,
    tick: usize,
}

impl<S: Source> Registered<S> {
    /// Registers `source` with the current runtime's reactor.
    pub(crate) fn new(mut source: S) -> io::Result<Registered<S>> {
        let reactor = with_shared(|shared| Arc::clone(&shared.reactor));
        let (token, io) = reactor.register(&mut source)?;
        Ok(Registered {
            source,
            token,
            io,
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

    /// The call got less than it asked for (a short read or write) at `tick`: the kernel had
    /// no more, so skip the call that would only say `WouldBlock`.
    pub(crate) fn clear_ready<T>(&self, direction: Direction, done: &Done<T>) {
        Reactor::clear_ready(&self.io, direction, done.tick);
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

/// A listening socket.
pub struct TcpListener {
    inner: Registered<mio::net::TcpListener>,
}

impl TcpListener {
    /// Takes over a bound `std` listener (for example from `fdio::listen`).
    pub fn from_std(listener: std::net::TcpListener) -> io::Result<TcpListener> {
        listener.set_nonblocking(true)?;
        Ok(TcpListener {
            inner: Registered::new(mio::net::TcpListener::from_std(listener))?,
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
    pub async fn accept(&mut self) -> io::Result<(TcpStream, SocketAddr)> {
        let done = poll_fn(|cx| {
            self.inner
                .io(cx, Direction::Read, |listener| listener.accept())
        })
        .await?;
        let (stream, peer) = done.result;
        Ok((
            TcpStream {
                inner: Registered::new(stream)?,
            },
            peer,
        ))
    }
}

/// A TCP connection.
pub struct TcpStream {
    inner: Registered<mio::net::TcpStream>,
}

impl TcpStream {
    /// Connects to `addr` without blocking: writable once the handshake is done, and
    /// `SO_ERROR` says how it went.
    pub async fn connect(addr: SocketAddr) -> io::Result<TcpStream> {
        let mut inner = Registered::new(mio::net::TcpStream::connect(addr)?)?;
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
        Ok(TcpStream { inner })
    }

    pub fn peer_addr(&self) -> io::Result<SocketAddr> {
        self.inner.source.peer_addr()
    }

    /// Reads what is there (at least one byte), or `Ok(0)` at EOF.
    pub async fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let len = buf.len();
        let done = poll_fn(|cx| {
            self.inner
                .io(cx, Direction::Read, |stream| stream.read(buf))
        })
        .await?;
        if done.result > 0 && done.result < len {
            self.inner.clear_ready(Direction::Read, &done);
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
        if !done.result.is_empty() && done.result.len() < READ_CHUNK {
            self.inner.clear_ready(Direction::Read, &done);
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
        while !buf.is_empty() {
            match self.write(buf).await? {
                0 => return Err(io::ErrorKind::WriteZero.into()),
                n => buf = &buf[n..],
            }
        }
        Ok(())
    }

    /// Shuts down one or both directions (`Shutdown::Write` sends EOF, keeps reading).
    pub fn shutdown(&self, how: Shutdown) -> io::Result<()> {
        self.inner.source.shutdown(how)
    }
}
