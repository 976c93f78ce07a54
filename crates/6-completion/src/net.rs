//! `TcpListener` and `TcpStream` on the ring: multishot accept, multishot receive into
//! provided buffers, sends that own their buffer, and a close that loses no byte.
//!
//! A multishot request is submitted once and completes many times: every new connection,
//! every chunk of bytes is one more completion with the same token, filed in the request's
//! slot until the task takes it. So the request belongs to the listener or the stream, not
//! to the future that awaits the next result: a future dropped by `race` loses nothing, the
//! results wait in the slot for the next call. A multishot ends when a completion comes
//! without `IORING_CQE_F_MORE` — an error, EOF, the buffer ring running dry (`ENOBUFS`),
//! or our pause — and the next call then submits it again ("re-arms" it).
//!
//! The buffer ring is shared by every connection, and a client that never reads its echo
//! leaves its bytes in the buffers they came in. Two rules keep such clients from taking
//! the ring from everyone else:
//! - **A share per connection.** A connection's multishot receive is paused (cancelled)
//!   once [`SHARE`] filled buffers wait for its task to take them — a task busy sending to a
//!   client that does not read takes none — and submitted again when the task takes them.
//!   (The kernel may fill more before the cancel lands: since Linux 6.8 it receives from a
//!   busy socket at most 32 times in a row before it lets other work run; before that, for
//!   as long as the socket has bytes and the ring has buffers.)
//! - **A buffer of its own when the ring is empty.** Shares alone cannot do it: 2,000 such
//!   clients want more buffers than the ring has, whatever the share. So a receive never
//!   waits for the ring: when it is empty, or has just run dry (`ENOBUFS`), the connection
//!   receives into a buffer of its own instead (one request, one buffer, freed after its
//!   echo), and takes from the ring again at its next receive if the ring has a buffer. A
//!   client that never reads then holds one buffer of its own, and costs only itself.

use std::cell::RefCell;
use std::io;
use std::net::SocketAddr;
use std::ops::Deref;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use fdio::Delivery;
use io_uring::{opcode, types::Fd};

use crate::buf::{IoBuf, IoBufMut, request_len};
use crate::bufring::{BufRing, GROUP, RingBuf};
use crate::executor::{Either, RuntimeId, race, runtime_id, with_driver_of};
use crate::fd::RingFd;
use crate::op::Op;
use crate::slots::{Completion, Token};
use crate::time::sleep;

/// A connection's share of the buffer ring: its receive is paused when this many filled
/// buffers wait untaken (the one its task is sending comes on top).
pub const SHARE: usize = 8;

/// How long [`TcpStream::close_gracefully`] waits at most before it asks again whether the
/// client has acknowledged everything: the wait doubles from 1 ms up to this, so a client
/// that never takes its last bytes costs a look a second (as in lessons 5 and 7), not 16.
pub const ACK_CHECK_MOST: Duration = Duration::from_secs(1);

/// A listening socket whose accept is one multishot request.
///
/// It stays on the thread of its ring (a thread-local): dropped on another thread, it could
/// not cancel its accept, and the socket would go on accepting clients nobody serves. Like
/// every I/O handle here (and lesson 5's), it is not `Send`:
///
/// ```compile_fail,E0277
/// # use lesson_completion::net::TcpListener;
/// fn drop_elsewhere(listener: TcpListener) {
///     std::thread::spawn(move || drop(listener)); // error: cannot be sent between threads
/// }
/// ```
pub struct TcpListener {
    runtime: RuntimeId,
    accept: Option<Token>,
    /// The last field: closed (through the ring) after `Drop` has cancelled the accept.
    fd: RingFd,
}

impl TcpListener {
    /// Binds `addr` and prints `listening on <addr>` (see `fdio::listen`).
    pub fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
        Ok(TcpListener::from_std(fdio::listen(addr)?))
    }

    /// Takes over a bound, listening socket.
    pub fn from_std(listener: std::net::TcpListener) -> TcpListener {
        TcpListener {
            runtime: runtime_id(),
            accept: None,
            fd: RingFd::new(listener.into()),
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
                    let listener = self.fd.as_fd();
                    // Safety: `fd` is a `RingFd` of this runtime (`with_driver_of`): it is
                    // closed through this ring, after the accept's entry.
                    let token = with_driver_of(self.runtime, |driver| unsafe {
                        driver.submit_accept(listener)
                    })
                    .unwrap_or_else(|| Err(another_runtime()))?;
                    *self.accept.insert(token)
                }
            };
            let Some(completion) = ready!(next_result(self.runtime, token, cx))? else {
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
        // (Then `fd` closes through the ring, after the accept's entry if it is still there.)
        release(self.runtime, self.accept.take());
    }
}

/// The error of a handle used inside a runtime other than its own.
fn another_runtime() -> io::Error {
    io::Error::other("this socket belongs to another runtime (another block_on)")
}

/// The next result of a multishot request (see [`crate::op::next_result`]); an error
/// outside its runtime.
fn next_result(
    runtime: RuntimeId,
    token: Token,
    cx: &Context<'_>,
) -> Poll<io::Result<Option<Completion>>> {
    match crate::op::next_result(runtime, token, cx) {
        Some(polled) => polled.map(Ok),
        None => Poll::Ready(Err(another_runtime())),
    }
}

/// Abandons the multishot request `token`, if any: the kernel cancels it.
fn release(runtime: RuntimeId, token: Option<Token>) {
    if let Some(token) = token {
        // A multishot request keeps nothing alive: what it fills is the driver's.
        with_driver_of(runtime, |driver| drop(driver.abandon(token, Box::new(()))));
    }
}

/// A connection: receives from the buffer ring (or into a buffer of its own when the ring
/// is empty), sends of owned buffers.
pub struct TcpStream {
    runtime: RuntimeId,
    receiving: Receiving,
    /// The last receive from the ring found it dry (`ENOBUFS`): the next one uses a buffer
    /// of its own.
    ring_was_dry: bool,
    eof: bool,
    /// How many times a receive from the ring found it dry.
    ring_ran_dry: u32,
    buffers: Rc<RefCell<BufRing>>,
    /// Bytes the kernel took from `write_all` (sent, or queued in the socket to be sent).
    sent: u64,
    /// Bytes the last `write_all` was given and the kernel did not take (it was dropped in
    /// the middle, or failed).
    unsent: u64,
    /// `shutdown_write` queued our EOF: the kernel counts it in the send queue as one byte.
    eof_sent: bool,
    /// The last field: closed (through the ring) after `Drop` has cancelled the receive.
    fd: RingFd,
}

/// The receive a stream has in flight.
enum Receiving {
    Idle,
    /// A multishot receive into the shared buffer ring.
    FromRing(Token),
    /// A single receive into a buffer of the stream's own (the ring was empty).
    IntoOwn(Op<Vec<u8>>),
}

/// Bytes a receive brought: in a buffer of the ring (back in the ring when dropped), or in
/// one of the stream's own.
pub enum Chunk {
    Ring(RingBuf),
    Own(Vec<u8>),
}

impl TcpStream {
    /// Takes over a connected stream socket (TCP, or a Unix socket pair in the tests).
    ///
    /// # Panics
    /// Outside `block_on`.
    pub(crate) fn new(fd: OwnedFd) -> TcpStream {
        let runtime = runtime_id();
        let buffers = with_driver_of(runtime, |driver| Rc::clone(&driver.buffers))
            .expect("the current runtime");
        TcpStream {
            runtime,
            receiving: Receiving::Idle,
            ring_was_dry: false,
            eof: false,
            ring_ran_dry: 0,
            buffers,
            sent: 0,
            unsent: 0,
            eof_sent: false,
            fd: RingFd::new(fd),
        }
    }

    /// The next bytes the client sent; `None` at EOF. Dropping the chunk gives its buffer
    /// back to the ring.
    ///
    /// ```python
    /// data = await reader.read(65536)
    /// ```
    pub async fn recv(&mut self) -> io::Result<Option<Chunk>> {
        std::future::poll_fn(|cx| self.poll_recv(cx)).await
    }

    fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<Option<Chunk>>> {
        loop {
            if self.eof {
                return Poll::Ready(Ok(None));
            }
            match &mut self.receiving {
                Receiving::Idle => self.receiving = self.start_receiving()?,
                Receiving::FromRing(token) => {
                    let Some(completion) = ready!(next_result(self.runtime, *token, cx))? else {
                        self.receiving = Receiving::Idle; // the multishot has ended
                        continue;
                    };
                    if let Some(received) = self.on_ring_result(completion) {
                        return Poll::Ready(received);
                    }
                }
                Receiving::IntoOwn(op) => {
                    let (result, mut buf) = ready!(Pin::new(op).poll(cx));
                    self.receiving = Receiving::Idle;
                    match result {
                        Ok(0) => self.eof = true,
                        Ok(n) => {
                            // Safety: the kernel wrote `n` bytes at the start of the buffer.
                            unsafe { buf.set_len(n as usize) };
                            return Poll::Ready(Ok(Some(Chunk::Own(buf))));
                        }
                        Err(err) if fdio::interrupted(&err) => {}
                        Err(err) => return Poll::Ready(Err(err)),
                    }
                }
            }
        }
    }

    /// The receive to submit: a multishot from the ring, or — when the ring is empty or
    /// just ran dry — one receive into a buffer of our own.
    fn start_receiving(&mut self) -> io::Result<Receiving> {
        let fd = self.fd.number_for_request()?;
        let (available, size) = {
            let buffers = self.buffers.borrow();
            (buffers.available(), buffers.buffer_size() as usize)
        };
        if std::mem::take(&mut self.ring_was_dry) || available == 0 {
            return Ok(Receiving::IntoOwn(recv_into(fd, Vec::with_capacity(size))));
        }
        let entry = opcode::RecvMulti::new(Fd(fd), GROUP).build();
        // Safety: the receive writes only into provided buffers, which the driver owns.
        let token = with_driver_of(self.runtime, |driver| unsafe {
            driver.submit_multishot("recv", entry, SHARE)
        })
        .unwrap_or_else(|| Err(another_runtime()))?;
        Ok(Receiving::FromRing(token))
    }

    /// What one result of the multishot receive means: bytes, EOF or an error — or `None`
    /// when the receive just ended and is submitted again (the ring ran dry, or our pause).
    fn on_ring_result(&mut self, completion: Completion) -> Option<io::Result<Option<Chunk>>> {
        if let Some(id) = completion.buffer_id() {
            let len = completion.result.max(0) as usize;
            // Safety: this completion of our receive named buffer `id`, with `len` bytes;
            // each completion is read once, here.
            let buffer = unsafe { RingBuf::take(&self.buffers, id, len) };
            if len > 0 {
                return Some(Ok(Some(Chunk::Ring(buffer))));
            }
            // A buffer with no bytes: it goes back at once (dropped here).
        }
        match completion.result {
            0 => {
                self.eof = true;
                Some(Ok(None))
            }
            n if n == -libc::ENOBUFS => {
                self.ring_ran_dry += 1;
                self.ring_was_dry = true;
                None
            }
            n if n == -libc::ECANCELED => None, // the pause: taken, so submitted again
            n if n < 0 => Some(Err(io::Error::from_raw_os_error(-n))),
            _ => None,
        }
    }

    /// How many times a receive from the buffer ring found it dry (`ENOBUFS`).
    pub fn ring_ran_dry(&self) -> u32 {
        self.ring_ran_dry
    }

    /// Sends all of `buf`, then gives it back: the send owns the buffer while the kernel
    /// reads from it (see [`crate::op`]), and the buffer must keep its bytes in place while
    /// it moves ([`IoBuf`]). `MSG_NOSIGNAL`: a vanished client is `EPIPE`, an error for
    /// this connection only, not a `SIGPIPE` for the whole server.
    pub async fn write_all<B: IoBuf>(&mut self, buf: B) -> (io::Result<()>, B) {
        let mut buf = buf;
        let mut sent = 0;
        self.unsent = buf.len() as u64;
        let fd = match self.fd.number_for_request() {
            Ok(fd) => fd,
            Err(err) => return (Err(err), buf),
        };
        while sent < buf.len() {
            let (result, returned) = send(fd, buf, sent).await;
            buf = returned;
            match result {
                Ok(0) => return (Err(io::ErrorKind::WriteZero.into()), buf),
                Ok(n) => {
                    sent += n as usize;
                    self.sent += u64::from(n);
                    self.unsent -= u64::from(n);
                }
                Err(err) if fdio::interrupted(&err) => {}
                Err(err) => return (Err(err), buf),
            }
        }
        (Ok(()), buf)
    }

    /// Sends EOF to the client: `shutdown(2)` with `SHUT_WR`, made here, not as a request.
    /// It never blocks, and as a request it would be worse than useless: the kernel runs
    /// `IORING_OP_SHUTDOWN` on a worker thread, which looks the fd number up whenever it
    /// gets to it — maybe after the stream was dropped and the number given to the next
    /// connection (see [`crate::fd`]).
    pub fn shutdown_write(&mut self) -> io::Result<()> {
        // Safety: shutdown(2) takes an fd of ours and no pointer.
        if unsafe { libc::shutdown(self.fd.as_raw_fd(), libc::SHUT_WR) } < 0 {
            return Err(io::Error::last_os_error());
        }
        self.eof_sent = true;
        Ok(())
    }

    /// Closes the sending side cleanly and waits until closing loses nothing: sends EOF
    /// ([`shutdown_write`](Self::shutdown_write)), then reads and drops whatever the client
    /// still sends (a client that finishes sending before it reads would wait for us
    /// forever) until the client has acknowledged every byte and the EOF — or, once the
    /// client's own EOF came, every byte: nothing is left unread then. Closing sooner, with
    /// the client's bytes unread, would reset the connection, and a reset throws away what
    /// the kernel still had to send. If the client resets first, what it had not
    /// acknowledged is lost: the error says how much.
    ///
    /// Nothing in io_uring completes when a peer acknowledges, so this asks the kernel
    /// ([`fdio::delivery`]: `SIOCOUTQ` and the connection's state) after each chunk it
    /// drops, or after a pause: 1 ms, doubling up to [`ACK_CHECK_MOST`]. Bound it from
    /// outside (a timeout) if the client may never read.
    pub async fn close_gracefully(&mut self) -> io::Result<()> {
        self.shutdown_write()?;
        let mut client_done = false; // its EOF: there is nothing left to read
        let mut pause = Duration::from_millis(1);
        loop {
            match self.delivery()? {
                Delivery::Done => return Ok(()),
                Delivery::Pending(0) if client_done => return Ok(()),
                Delivery::Pending(_) => {}
                Delivery::Lost(bytes) => {
                    let bytes = fdio::count(bytes as u64, "byte");
                    return Err(io::Error::new(
                        io::ErrorKind::ConnectionReset,
                        format!("reset by the client with {bytes} not yet acknowledged"),
                    ));
                }
            }
            if client_done {
                sleep(pause).await;
            } else if let Either::Left(chunk) = race(self.recv(), sleep(pause)).await {
                client_done = chunk?.is_none();
            }
            pause = (pause * 2).min(ACK_CHECK_MOST);
        }
    }

    /// Bytes the kernel took from `write_all` so far.
    pub fn bytes_sent(&self) -> u64 {
        self.sent
    }

    /// Bytes a `write_all` dropped in the middle (or failed) had not handed to the kernel.
    pub fn bytes_unsent(&self) -> u64 {
        self.unsent
    }

    /// What has become of the bytes the kernel took ([`fdio::delivery`]): all acknowledged
    /// by the client, some still on their way (what closing now would lose), or some lost
    /// to a reset. The EOF [`shutdown_write`](Self::shutdown_write) queued is not counted.
    pub fn delivery(&self) -> io::Result<Delivery> {
        fdio::delivery(&self.fd, self.eof_sent)
    }
}

impl Drop for TcpStream {
    fn drop(&mut self) {
        // As for the listener: the receive in flight holds the socket open in the kernel.
        if let Receiving::FromRing(token) = self.receiving {
            release(self.runtime, Some(token));
        }
    }
}

/// One receive into `buf`'s spare room: the request owns the buffer until it completes.
fn recv_into(fd: RawFd, buf: Vec<u8>) -> Op<Vec<u8>> {
    // Safety: the entry points into `buf`'s heap bytes (`IoBufMut`: stable while the `Op`
    // that owns the buffer moves), within its capacity.
    unsafe {
        Op::submit("recv-own", buf, |buf| {
            opcode::Recv::new(Fd(fd), buf.stable_mut_ptr(), request_len(buf.capacity())).build()
        })
    }
}

/// One send of `buf`'s bytes from `from` on: the request owns the buffer until it completes.
fn send<B: IoBuf>(fd: RawFd, buf: B, from: usize) -> Op<B> {
    // Safety: the entry points into `buf`'s bytes (`IoBuf`: stable while the `Op` that owns
    // the buffer moves), within its length.
    unsafe {
        Op::submit("send", buf, |buf| {
            let rest = &buf.bytes()[from..];
            opcode::Send::new(Fd(fd), rest.as_ptr(), request_len(rest.len()))
                .flags(libc::MSG_NOSIGNAL)
                .build()
        })
    }
}

impl Deref for Chunk {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        self.bytes()
    }
}

// Safety: either kind keeps its bytes stable: a `RingBuf` in the ring's mapping, a `Vec` on
// the heap; both are `IoBuf`.
unsafe impl IoBuf for Chunk {
    fn stable_ptr(&self) -> *const u8 {
        match self {
            Chunk::Ring(buf) => buf.stable_ptr(),
            Chunk::Own(buf) => buf.stable_ptr(),
        }
    }

    fn len(&self) -> usize {
        match self {
            Chunk::Ring(buf) => IoBuf::len(buf),
            Chunk::Own(buf) => IoBuf::len(buf),
        }
    }
}
