//! TCP, async: `TcpListener::accept`, `TcpStream::connect`, `read`, `write`, `write_all`.
//!
//! Every operation is the same dance, in [`Registered::io`]: try the system call; if it says
//! `WouldBlock`, leave the task's waker with the reactor for that direction and return
//! `Pending`; when the reactor wakes the task, the call is tried again.

use std::future::poll_fn;
use std::io::{self, Read, Write};
use std::marker::PhantomData;
use std::net::{Shutdown, SocketAddr};
use std::rc::Rc;
use std::task::{Context, Poll};

/// The size of the runtime's shared read buffer: the most one `try_read_chunk` returns.
pub const READ_CHUNK: usize = 64 * 1024;

use fdio::{interrupted, would_block};
use mio::Token;
use mio::event::Source;

use crate::executor::{try_with_runtime, with_runtime};
use crate::reactor::Direction;

/// A mio source registered with the current runtime's reactor; deregistered when dropped.
/// Its token means something only to that reactor, on that thread: the `PhantomData` makes
/// it (and every I/O type holding it) impossible to send to another thread.
pub(crate) struct Registered<S: Source> {
    pub(crate) source: S,
    token: Token,
    on_this_thread: PhantomData<Rc<()>>,
}

impl<S: Source> Registered<S> {
    pub(crate) fn new(mut source: S) -> io::Result<Registered<S>> {
        let token = with_runtime(|runtime| runtime.reactor.borrow_mut().register(&mut source))?;
        Ok(Registered {
            source,
            token,
            on_this_thread: PhantomData,
        })
    }

    /// Tries `op`; on `WouldBlock`, waits for `direction` and returns `Pending`.
    pub(crate) fn io<T>(
        &mut self,
        cx: &mut Context<'_>,
        direction: Direction,
        mut op: impl FnMut(&mut S) -> io::Result<T>,
    ) -> Poll<io::Result<T>> {
        loop {
            match op(&mut self.source) {
                Err(err) if interrupted(&err) => continue,
                Err(err) if would_block(&err) => {
                    let (token, waker) = (self.token, cx.waker());
                    with_runtime(|runtime| {
                        runtime
                            .reactor
                            .borrow_mut()
                            .wait_for(token, direction, waker)
                    });
                    return Poll::Pending;
                }
                result => return Poll::Ready(result),
            }
        }
    }
}

impl<S: Source> Drop for Registered<S> {
    fn drop(&mut self) {
        let token = self.token;
        try_with_runtime(|runtime| {
            runtime
                .reactor
                .borrow_mut()
                .deregister(token, &mut self.source)
        });
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
        let (stream, peer) = poll_fn(|cx| {
            self.inner
                .io(cx, Direction::Read, |listener| listener.accept())
        })
        .await?;
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
    /// Connects to `addr` without blocking: the kernel starts the handshake (`EINPROGRESS`),
    /// the socket becomes writable when it is done, and `SO_ERROR` says how it went.
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
        poll_fn(|cx| {
            self.inner
                .io(cx, Direction::Read, |stream| stream.read(buf))
        })
        .await
    }

    /// Waits for the reactor to report the socket readable, without reading — so the caller
    /// holds no buffer while it waits. Call it only once a read said `WouldBlock` or came
    /// back short: epoll (edge-triggered) reports the *next* bytes to arrive, not those
    /// already there. Then [`try_read_chunk`](Self::try_read_chunk) gets them.
    pub async fn readable(&mut self) {
        let mut waiting = false;
        let token = self.inner.token;
        poll_fn(|cx| {
            if waiting {
                return Poll::Ready(()); // woken (if spuriously, the next read says WouldBlock)
            }
            waiting = true;
            with_runtime(|runtime| {
                runtime
                    .reactor
                    .borrow_mut()
                    .wait_for(token, Direction::Read, cx.waker())
            });
            Poll::Pending
        })
        .await
    }

    /// Reads what is there now, without waiting, into the runtime's shared read buffer, and
    /// returns a copy of exactly those bytes: `None` if nothing was there (`WouldBlock`),
    /// empty at EOF. At most [`READ_CHUNK`] bytes; fewer means the socket is drained.
    pub fn try_read_chunk(&mut self) -> io::Result<Option<Vec<u8>>> {
        let stream = &mut self.inner.source;
        with_runtime(|runtime| {
            let mut buf = runtime.read_buffer.borrow_mut();
            loop {
                match stream.read(&mut buf) {
                    Ok(n) => return Ok(Some(buf[..n].to_vec())),
                    Err(err) if interrupted(&err) => continue,
                    Err(err) if would_block(&err) => return Ok(None),
                    Err(err) => return Err(err),
                }
            }
        })
    }

    /// Writes some of `buf` (at least one byte) and returns how much.
    pub async fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        poll_fn(|cx| {
            self.inner
                .io(cx, Direction::Write, |stream| stream.write(buf))
        })
        .await
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
