//! TCP, async: `TcpListener::accept`, `TcpStream::connect`, `read`, `read_chunk`, `write`,
//! `write_all`, and `close_gracefully`, which closes without losing what was written.
//!
//! Every operation is the same dance, in `Registered::io`: if the reactor says the
//! direction may be ready, try the system call; if it says `WouldBlock`, tell the reactor
//! (which clears its readiness bit), leave the task's waker there and return `Pending`; when
//! the reactor wakes the task, the call is tried again. Every operation that gets through
//! also spends one unit of the task's cooperative budget (see [`crate::budget`]).

use std::cell::RefCell;
use std::future::poll_fn;
use std::io::{self, Read, Write};
use std::marker::PhantomData;
use std::net::{Shutdown, SocketAddr};
use std::ops::Deref;
use std::os::fd::{AsFd, BorrowedFd};
use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::Duration;

use fdio::{Delivery, interrupted, would_block};
use mio::Token;
use mio::event::Source;

use crate::combinators::{Either, race};
use crate::reactor::Direction;
use crate::runtime::{RuntimeId, runtime_id, with_runtime, with_runtime_of};
use crate::time::sleep;

/// The size of the buffers [`TcpStream::read_chunk`] lends: the most one chunk holds.
pub const READ_CHUNK: usize = 64 * 1024;

/// How soon [`TcpStream::close_gracefully`] looks again whether the peer has acknowledged
/// everything (no event says so): at first, and at most — the wait doubles each time, so a
/// peer that never takes its last bytes costs a look a second, not a hundred.
const ACK_CHECK_FIRST: Duration = Duration::from_millis(10);
const ACK_CHECK_MOST: Duration = Duration::from_secs(1);

/// A mio source registered with one runtime's reactor; deregistered when dropped.
/// Its token means something only to that reactor: every use goes through the runtime it
/// was registered with, never to another `block_on` that reuses the same token. That
/// reactor is on this thread: the `PhantomData` makes it (and every I/O type holding it)
/// impossible to send to another thread.
pub(crate) struct Registered<S: Source> {
    pub(crate) source: S,
    token: Token,
    runtime: RuntimeId,
    on_this_thread: PhantomData<Rc<()>>,
}

impl<S: Source> Registered<S> {
    /// Registers `source` for reading, and for `EPOLLPRI` too if `urgent` (a TCP stream: see
    /// [`crate::reactor`]; a pipe, a terminal or a listener has no urgent byte).
    pub(crate) fn new(mut source: S, urgent: bool) -> io::Result<Registered<S>> {
        let token =
            with_runtime(|runtime| runtime.reactor.borrow_mut().register(&mut source, urgent))?;
        Ok(Registered {
            source,
            token,
            runtime: runtime_id(),
            on_this_thread: PhantomData,
        })
    }

    /// Tries `op` if the reactor says `direction` may be ready; on `WouldBlock`, clears the
    /// readiness and waits for the next event. `Pending` too when the task has spent its
    /// budget: it is scheduled again at the back of the queue, after the others.
    pub(crate) fn io<T>(
        &mut self,
        cx: &mut Context<'_>,
        direction: Direction,
        mut op: impl FnMut(&mut S) -> io::Result<T>,
    ) -> Poll<io::Result<T>> {
        let (token, source) = (self.token, &mut self.source);
        with_runtime_of(self.runtime, |runtime| {
            if !runtime.budget.spend(cx) {
                return Poll::Pending;
            }
            loop {
                let ready = runtime
                    .reactor
                    .borrow_mut()
                    .poll_ready(token, source, direction, cx);
                if let Poll::Ready(Err(err)) = ready {
                    return Poll::Ready(Err(err));
                }
                if ready.is_pending() {
                    runtime.budget.refund();
                    return Poll::Pending;
                }
                match op(source) {
                    Err(err) if interrupted(&err) => {}
                    Err(err) if would_block(&err) => {
                        runtime.reactor.borrow_mut().clear_ready(token, direction);
                    }
                    result => return Poll::Ready(result),
                }
            }
        })
        .unwrap_or_else(|| Poll::Ready(Err(gone())))
    }

    /// A write got less than it asked for: a TCP socket takes less than it is offered only
    /// when its send buffer is full, so skip the call that would only say `WouldBlock` and
    /// wait for the next event. Only in the poll that made that call: see [`crate::reactor`].
    pub(crate) fn clear_ready(&self, direction: Direction) {
        with_runtime_of(self.runtime, |runtime| {
            runtime
                .reactor
                .borrow_mut()
                .clear_ready(self.token, direction)
        });
    }

    /// A TCP read got less than it asked for: it took all there was, so skip the read that
    /// would only say `WouldBlock` — unless an event said an urgent byte, the peer's FIN or an
    /// error (see [`crate::reactor`]). Only in the poll that made the read.
    pub(crate) fn read_came_short(&self) {
        with_runtime_of(self.runtime, |runtime| {
            runtime.reactor.borrow_mut().read_came_short(self.token)
        });
    }
}

impl<S: Source> Drop for Registered<S> {
    fn drop(&mut self) {
        let token = self.token;
        with_runtime_of(self.runtime, |runtime| {
            runtime
                .reactor
                .borrow_mut()
                .deregister(token, &mut self.source)
        });
    }
}

/// The error for an I/O object used outside the `block_on` that created it.
fn gone() -> io::Error {
    io::Error::other("this I/O object belongs to another runtime (or to one that has ended)")
}

/// Bytes read by [`TcpStream::read_chunk`], in a buffer the runtime lends: when the chunk is
/// dropped the buffer goes back to the runtime for the next read. So a connection holds a
/// buffer only while it has bytes in hand, and 10,000 idle connections hold none.
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
        crate::runtime::try_with_runtime(|runtime| runtime.buffers.give_back(buffer));
    }
}

/// The buffers [`Chunk`]s borrow. Only chunks in hand hold one; a few returned ones are kept
/// for the next reads, so a busy loop neither allocates nor zeroes a buffer per read.
#[derive(Default)]
pub(crate) struct BufferPool {
    free: RefCell<Vec<Vec<u8>>>,
}

impl BufferPool {
    /// How many returned buffers are kept (1 MiB): more is freed, so a burst of slow
    /// readers, once over, costs nothing.
    const KEEP: usize = 16;

    fn lend(&self) -> Vec<u8> {
        self.free
            .borrow_mut()
            .pop()
            .unwrap_or_else(|| vec![0; READ_CHUNK])
    }

    fn give_back(&self, buffer: Vec<u8>) {
        let mut free = self.free.borrow_mut();
        if buffer.len() == READ_CHUNK && free.len() < BufferPool::KEEP {
            free.push(buffer);
        }
    }
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
            inner: Registered::new(mio::net::TcpListener::from_std(listener), false)?,
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
        let (stream, peer) = poll_fn(|cx| {
            self.inner
                .io(cx, Direction::Read, |listener| listener.accept())
        })
        .await?;
        Ok((
            TcpStream {
                inner: Registered::new(stream, true)?,
                written: 0,
                eof_sent: false,
            },
            peer,
        ))
    }
}

/// A TCP connection.
pub struct TcpStream {
    inner: Registered<mio::net::TcpStream>,
    /// Bytes written so far: see [`bytes_written`](Self::bytes_written).
    written: u64,
    /// Whether `shutdown` has queued our EOF. The kernel counts it in the send queue as one
    /// byte until the peer acknowledges it, and after a reset only we know it is there.
    eof_sent: bool,
}

impl TcpStream {
    /// Connects to `addr` without blocking: the kernel starts the handshake (`EINPROGRESS`),
    /// the socket becomes writable when it is done, and `SO_ERROR` says how it went.
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
            written: 0,
            eof_sent: false,
        })
    }

    pub fn peer_addr(&self) -> io::Result<SocketAddr> {
        self.inner.source.peer_addr()
    }

    /// Reads what is there (at least one byte), or `Ok(0)` at EOF.
    pub async fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let asked = buf.len();
        let n = poll_fn(|cx| {
            self.inner
                .io(cx, Direction::Read, |stream| stream.read(buf))
        })
        .await?;
        self.after_read(n, asked);
        Ok(n)
    }

    /// Reads what is there (at most [`READ_CHUNK`] bytes) into a buffer the runtime lends
    /// only once bytes have arrived; an empty chunk means EOF. Use it where many connections
    /// wait: a `read(&mut buf)` that waits holds its `buf` all the while.
    pub async fn read_chunk(&mut self) -> io::Result<Chunk> {
        let chunk = poll_fn(|cx| {
            self.inner.io(cx, Direction::Read, |stream| {
                let mut buffer = with_runtime(|runtime| runtime.buffers.lend());
                let len = stream.read(&mut buffer)?;
                Ok(Chunk { buffer, len })
            })
        })
        .await?;
        self.after_read(chunk.len(), READ_CHUNK);
        Ok(chunk)
    }

    /// A read got `n` of the `asked` bytes: fewer (a short read) means it took all there
    /// was, and the next read waits for an event, as tokio's does — unless the reactor knows
    /// of an urgent byte or the peer's FIN that a short read leaves behind (see
    /// [`crate::reactor`]). In the poll that made the read. (`n == 0` is the EOF: it stays
    /// there to read again.)
    fn after_read(&self, n: usize, asked: usize) {
        if n > 0 && n < asked {
            self.inner.read_came_short();
        }
    }

    /// Writes some of `buf` (at least one byte) and returns how much.
    pub async fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = poll_fn(|cx| {
            self.inner
                .io(cx, Direction::Write, |stream| stream.write(buf))
        })
        .await?;
        self.written += n as u64;
        if n < buf.len() {
            self.inner.clear_ready(Direction::Write); // the send buffer is full
        }
        Ok(n)
    }

    /// How many bytes this stream has written into its socket so far, counted as each
    /// write returns — also the writes of a `write_all` that was cancelled halfway. (Written
    /// is not yet delivered: [`delivery`](Self::delivery) says what became of it.)
    pub fn bytes_written(&self) -> u64 {
        self.written
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
    pub fn shutdown(&mut self, how: Shutdown) -> io::Result<()> {
        self.inner.source.shutdown(how)?;
        self.eof_sent |= how != Shutdown::Read;
        Ok(())
    }

    /// What has become of the bytes written here ([`fdio::delivery`]): all acknowledged by
    /// the peer, some still on their way, or some lost to a reset.
    pub fn delivery(&self) -> io::Result<Delivery> {
        fdio::delivery(self, self.eof_sent)
    }

    /// Sends EOF (our FIN, after the data), then waits until closing loses nothing, reading
    /// and dropping whatever the peer still sends; then drop the stream to close it.
    ///
    /// Closing with some of the peer's bytes unread makes the kernel reset the connection,
    /// and a reset throws away what is still in the socket, our EOF included: so until the
    /// peer's own EOF, wait until it has acknowledged everything, EOF too. After its EOF
    /// nothing can be left unread, and it is enough that it has every byte. If the peer
    /// resets the connection first, what it had not acknowledged is lost: the error says how
    /// much. No event says "acknowledged", so this asks the kernel again after each chunk it
    /// drops, or after a pause. Bound it from outside (a `race`) if the peer may never read.
    pub async fn close_gracefully(&mut self) -> io::Result<()> {
        self.shutdown(Shutdown::Write)?;
        let mut peer_done = false; // its EOF: there is nothing left to read
        let mut pause = ACK_CHECK_FIRST;
        loop {
            match self.delivery()? {
                Delivery::Done => return Ok(()),
                Delivery::Pending(0) if peer_done => return Ok(()),
                Delivery::Pending(_) => {}
                Delivery::Lost(bytes) => {
                    let bytes = fdio::count(bytes as u64, "byte");
                    return Err(io::Error::new(
                        io::ErrorKind::ConnectionReset,
                        format!("reset by the peer with {bytes} not yet acknowledged"),
                    ));
                }
            }
            if peer_done {
                sleep(pause).await;
            } else if let Either::Left(chunk) = race(self.read_chunk(), sleep(pause)).await {
                peer_done = chunk?.is_empty();
            }
            pause = (pause * 2).min(ACK_CHECK_MOST);
        }
    }
}

/// The socket's fd, to ask the kernel about it (`fdio::delivery`).
impl AsFd for TcpStream {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.inner.source.as_fd()
    }
}
