//! `TcpListener` and `TcpStream` on the ring: multishot accept, multishot receive into
//! provided buffers, sends that own their buffer.
//!
//! A multishot request is submitted once and completes many times: every new connection,
//! every chunk of bytes is one more completion with the same token, filed in the request's
//! slot until the task takes it. So the request belongs to the listener or the stream, not
//! to the future that awaits the next result: a future dropped by `race` loses nothing, the
//! results wait in the slot for the next call. A multishot ends when a completion comes
//! without `IORING_CQE_F_MORE` — an error, EOF, the buffer ring running dry (`ENOBUFS`),
//! or our cancel — and the next call then submits it again ("re-arms" it).

use std::cell::RefCell;
use std::io;
use std::net::SocketAddr;
use std::ops::Deref;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::ptr::NonNull;
use std::rc::Rc;
use std::task::{Context, Poll};

use io_uring::{opcode, types::Fd};

use crate::bufring::{BufRing, GROUP};
use crate::executor::{with_driver, with_runtime};
use crate::op::Op;
use crate::slots::{Completion, Token};

/// How many received buffers a stream may hold before the ring pauses its receive (cancels
/// it; the stream re-arms it once its task has taken them). Without it, a client that sends and never
/// reads would leave its bytes in our buffers, not in its socket, until none are left.
const MAX_QUEUED: usize = 8;

/// A listening socket whose accept is one multishot request.
pub struct TcpListener {
    fd: OwnedFd,
    accept: Option<Token>,
}

impl TcpListener {
    /// Takes over a bound, listening socket.
    pub fn from_std(listener: std::net::TcpListener) -> TcpListener {
        TcpListener {
            fd: listener.into(),
            accept: None,
        }
    }

    /// The next connection: `await reader, writer = …` of asyncio's `start_server`.
    pub async fn accept(&mut self) -> io::Result<(TcpStream, SocketAddr)> {
        std::future::poll_fn(|cx| self.poll_accept(cx)).await
    }

    fn poll_accept(&mut self, cx: &Context<'_>) -> Poll<io::Result<(TcpStream, SocketAddr)>> {
        loop {
            let token = match self.accept {
                Some(token) => token,
                None => {
                    let entry = opcode::AcceptMulti::new(Fd(self.fd.as_raw_fd()))
                        .flags(libc::SOCK_CLOEXEC)
                        .build();
                    let token = with_driver(|driver| driver.submit("accept", entry))?;
                    *self.accept.insert(token)
                }
            };
            let Some(completion) = next_result(token, cx) else {
                return Poll::Pending;
            };
            let Some(completion) = completion else {
                self.accept = None; // the multishot has ended: submit it again
                continue;
            };
            // Safety: a successful accept's result is a new fd, ours alone.
            let accepted = completion
                .io_result()
                .map(|fd| unsafe { OwnedFd::from_raw_fd(fd as i32) });
            return Poll::Ready(accepted.and_then(|fd| {
                // A multishot accept does not say who connected: ask the socket. A client
                // that reset its connection before we asked has no address any more.
                // (Borrowed, not duplicated: a server out of fds cannot afford one more.)
                // Safety: `fd` is an open socket and outlives the borrowed view.
                let socket = unsafe { std::net::TcpStream::from_raw_fd(fd.as_raw_fd()) };
                let peer = std::mem::ManuallyDrop::new(socket)
                    .peer_addr()
                    .map_err(|err| {
                        io::Error::new(
                            err.kind(),
                            format!("a connection closed before we could ask who made it: {err}"),
                        )
                    })?;
                Ok((TcpStream::new(fd), peer))
            }));
        }
    }
}

impl Drop for TcpListener {
    fn drop(&mut self) {
        // The kernel holds the socket while the accept is in flight: closing our fd alone
        // would leave it listening. Cancel it; the socket closes when the cancel is done.
        release(self.accept.take());
    }
}

/// Takes the next result of a multishot request, within the task's budget. `None` when the
/// task must wait (its waker is stored, or the budget is spent); `Some(None)` when the
/// request has ended.
fn next_result(token: Token, cx: &Context<'_>) -> Option<Option<Completion>> {
    if !with_runtime(|runtime| runtime.budget.spend(cx)) {
        return None;
    }
    match with_driver(|driver| driver.poll_next(token, cx)) {
        Poll::Ready(result) => Some(result),
        Poll::Pending => {
            with_runtime(|runtime| runtime.budget.refund());
            None
        }
    }
}

fn release(token: Option<Token>) {
    if let Some(token) = token {
        with_driver(|driver| driver.abandon(token, Box::new(())));
    }
}

/// A connection: a multishot receive into the buffer ring, and sends of owned buffers.
pub struct TcpStream {
    fd: OwnedFd,
    recv: Option<Token>,
    /// The receive ended with `ENOBUFS`: re-arm it only once a buffer is back in the ring.
    out_of_buffers: bool,
    eof: bool,
    /// How many times the receive was re-armed after the buffer ring ran dry.
    rearmed_after_enobufs: u32,
    buffers: Rc<RefCell<BufRing>>,
}

impl TcpStream {
    /// Takes over a connected stream socket (TCP, or a Unix socket pair in the tests).
    pub(crate) fn new(fd: OwnedFd) -> TcpStream {
        TcpStream {
            fd,
            recv: None,
            out_of_buffers: false,
            eof: false,
            rearmed_after_enobufs: 0,
            buffers: with_driver(|driver| Rc::clone(&driver.buffers)),
        }
    }

    /// The next bytes the client sent, in a buffer the kernel picked from the ring; `None`
    /// at EOF. Dropping the buffer gives it back to the ring.
    ///
    /// ```python
    /// data = await reader.read(65536)
    /// ```
    pub async fn recv(&mut self) -> io::Result<Option<RingBuf>> {
        std::future::poll_fn(|cx| self.poll_recv(cx)).await
    }

    fn poll_recv(&mut self, cx: &Context<'_>) -> Poll<io::Result<Option<RingBuf>>> {
        loop {
            if self.eof {
                return Poll::Ready(Ok(None));
            }
            let token = match self.recv {
                Some(token) => token,
                None => {
                    if self.out_of_buffers {
                        std::task::ready!(self.buffers.borrow_mut().poll_available(cx));
                        self.out_of_buffers = false;
                        self.rearmed_after_enobufs += 1;
                    }
                    let entry = opcode::RecvMulti::new(Fd(self.fd.as_raw_fd()), GROUP).build();
                    *self.recv.insert(with_driver(|driver| {
                        driver.submit_multishot("recv", entry, MAX_QUEUED)
                    })?)
                }
            };
            let Some(completion) = next_result(token, cx) else {
                return Poll::Pending;
            };
            let Some(completion) = completion else {
                self.recv = None; // the multishot has ended: submit it again
                continue;
            };
            if let Some(id) = completion.buffer_id() {
                let start = self.buffers.borrow_mut().take(id);
                let buffer = RingBuf {
                    id,
                    start,
                    len: completion.result.max(0) as usize,
                    ring: Rc::clone(&self.buffers),
                };
                if completion.result > 0 {
                    return Poll::Ready(Ok(Some(buffer)));
                }
                // A buffer with no bytes: it goes back at once (dropped here).
            }
            match completion.result {
                0 => {
                    self.eof = true;
                    return Poll::Ready(Ok(None));
                }
                n if n == -libc::ENOBUFS => self.out_of_buffers = true,
                n if n == -libc::ECANCELED => {} // the pause: re-armed once the rest is taken
                n if n < 0 => return Poll::Ready(Err(io::Error::from_raw_os_error(-n))),
                _ => {}
            }
        }
    }

    /// How many times the receive was re-armed after the buffer ring ran dry (`ENOBUFS`).
    pub fn rearmed_after_enobufs(&self) -> u32 {
        self.rearmed_after_enobufs
    }

    /// Sends all of `buf`, then gives it back: the send owns the buffer while the kernel
    /// reads from it (see [`crate::op`]). `MSG_NOSIGNAL`: a vanished client is `EPIPE`, an
    /// error for this connection only, not a `SIGPIPE` for the whole server.
    pub async fn write_all<B: AsRef<[u8]> + Unpin + 'static>(
        &mut self,
        buf: B,
    ) -> (io::Result<()>, B) {
        let mut buf = buf;
        let mut sent = 0;
        while sent < buf.as_ref().len() {
            let rest = &buf.as_ref()[sent..];
            let entry =
                opcode::Send::new(Fd(self.fd.as_raw_fd()), rest.as_ptr(), rest.len() as u32)
                    .flags(libc::MSG_NOSIGNAL)
                    .build();
            let (result, returned) = Op::submit("send", entry, buf).await;
            buf = returned;
            match result {
                Ok(0) => return (Err(io::ErrorKind::WriteZero.into()), buf),
                Ok(n) => sent += n as usize,
                Err(err) if fdio::interrupted(&err) => {}
                Err(err) => return (Err(err), buf),
            }
        }
        (Ok(()), buf)
    }

    /// Sends EOF to the client (`shutdown(SHUT_WR)`), through the ring too.
    pub async fn shutdown_write(&mut self) -> io::Result<()> {
        let entry = opcode::Shutdown::new(Fd(self.fd.as_raw_fd()), libc::SHUT_WR).build();
        Op::submit("shutdown", entry, ()).await.0.map(drop)
    }
}

impl Drop for TcpStream {
    fn drop(&mut self) {
        // As for the listener: the receive in flight holds the socket open in the kernel.
        release(self.recv.take());
    }
}

/// A provided buffer the kernel filled: ours until dropped, then back in the ring.
pub struct RingBuf {
    id: u16,
    start: NonNull<u8>,
    len: usize,
    ring: Rc<RefCell<BufRing>>,
}

impl Deref for RingBuf {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        // Safety: the buffer is out of the ring (`take`), so the kernel does not write into
        // it until `drop` gives it back; the completion said `len` bytes are in it.
        unsafe { std::slice::from_raw_parts(self.start.as_ptr(), self.len) }
    }
}

impl AsRef<[u8]> for RingBuf {
    fn as_ref(&self) -> &[u8] {
        self
    }
}

impl Drop for RingBuf {
    fn drop(&mut self) {
        self.ring.borrow_mut().give_back(self.id);
    }
}
