//! TCP that looks blocking: `TcpListener::accept`, and `TcpStream` with std's `Read` and
//! `Write` — so `read`, `write_all`, `BufReader`, any code written for blocking sockets.
//!
//! Underneath, every call is the same loop (`Registered::io`): try the system call on the
//! non-blocking socket; if it says `WouldBlock`, leave this green thread with the reactor
//! among the socket's waiters and **park** — switch to the scheduler, which runs the others
//! and sleeps in `epoll_wait`; when epoll reports the socket, the scheduler switches back
//! here, and the call is tried again. The caller saw one call that took a while: lesson 0's
//! program runs unchanged, on lesson 5's mechanism.
//!
//! **The budget.** A connection whose client never stops sending would never park: each read
//! finds bytes, each write finds room, and no other green thread would run again. So every
//! call spends one unit of the green thread's budget ([`BUDGET`](crate::runtime::BUDGET) per
//! turn); a call that finds it spent yields first. Fairness lives in the runtime, not in the
//! program.
//!
//! **Deadlines.** A blocking call cannot wait for two things: a green thread parked in `read`
//! cannot also wait for Ctrl+C. Blocking APIs solve that with deadlines set from outside: Go's
//! `conn.SetReadDeadline(time.Now())` makes a `Read` parked in another goroutine return an
//! error at once. `set_read_deadline`, `set_write_deadline` and `TcpListener::set_deadline`
//! do the same here: a call that is (or gets) past its deadline fails with `TimedOut`.

use std::cell::Cell;
use std::io::{self, Read, Write};
use std::marker::PhantomData;
use std::net::{Shutdown, SocketAddr};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::rc::Rc;
use std::time::Instant;

use fdio::{Delivery, interrupted, would_block};

use crate::reactor::{Direction, Interest, Reactor};
use crate::runtime::{RuntimeId, park_until, spend_budget, unpark, with_runtime, with_runtime_of};

/// A call failed because its deadline passed (see the module doc).
pub fn timed_out(err: &io::Error) -> bool {
    err.kind() == io::ErrorKind::TimedOut
}

/// An fd watched by this thread's reactor, with a deadline per direction; deregistered when
/// dropped, before `source` closes it. Any number of green threads may wait on it at once
/// (a stream shared through an `Rc`): an event wakes them all. Its token means something
/// only to the reactor of the runtime that registered it: every use goes through that
/// runtime, and under another one (the next `run`, if `main` returned the stream) the fd is
/// not registered at all. It stays on its OS thread: the `PhantomData` makes it (and every
/// I/O type holding it) impossible to send to another.
pub(crate) struct Registered<S: AsFd> {
    source: S,
    token: usize,
    runtime: RuntimeId,
    read_deadline: Cell<Option<Instant>>,
    write_deadline: Cell<Option<Instant>>,
    on_this_thread: PhantomData<Rc<()>>,
}

impl<S: AsFd> Registered<S> {
    /// Registers `source` (which must be non-blocking, or look it: see `io::Stdin`).
    pub(crate) fn new(source: S, interest: Interest) -> io::Result<Registered<S>> {
        let (token, runtime) = with_runtime(|runtime| {
            let token = runtime
                .reactor
                .borrow_mut()
                .register(source.as_fd(), interest);
            token.map(|token| (token, runtime.id))
        })?;
        Ok(Registered {
            source,
            token,
            runtime,
            read_deadline: Cell::new(None),
            write_deadline: Cell::new(None),
            on_this_thread: PhantomData,
        })
    }

    /// The loop under every call: try `op` while the reactor says `direction` may be ready;
    /// on `WouldBlock`, park until it says so again. Fails with `TimedOut` once the deadline
    /// of `direction` has passed.
    pub(crate) fn io<T>(
        &self,
        direction: Direction,
        mut op: impl FnMut(&S) -> io::Result<T>,
    ) -> io::Result<T> {
        loop {
            let deadline = self.deadline(direction).get();
            if deadline.is_some_and(|deadline| Instant::now() >= deadline) {
                return Err(io::Error::new(io::ErrorKind::TimedOut, "deadline passed"));
            }
            spend_budget();
            let ready = self
                .reactor(|reactor| reactor.is_ready(self.token, direction))
                .ok_or_else(gone)?;
            if ready {
                match op(&self.source) {
                    Err(err) if would_block(&err) => self.clear_ready(direction),
                    Err(err) if interrupted(&err) => continue,
                    result => return result,
                }
            }
            self.park_on(direction, deadline);
        }
    }

    /// Parks this green thread until epoll reports `direction` ready, or `deadline`.
    fn park_on(&self, direction: Direction, deadline: Option<Instant>) {
        let green = with_runtime(|runtime| {
            let green = runtime.current();
            runtime.trace.say(|| {
                let fd = self.source.as_fd().as_raw_fd();
                let call = match direction {
                    Direction::Read => "read",
                    Direction::Write => "write",
                };
                format!("{green}: {call} on fd {fd} would block → park")
            });
            green
        });
        let waiter = Rc::clone(&green);
        self.reactor(|reactor| reactor.add_waiter(self.token, direction, waiter));
        park_until(deadline);
        // Woken by the event, it is no waiter any more; by the deadline or a spurious wake, it
        // still is: take it back.
        self.reactor(|reactor| reactor.forget_waiter(self.token, direction, &green));
    }

    /// The kernel has nothing more for `direction` for now (`WouldBlock`, or a short write).
    pub(crate) fn clear_ready(&self, direction: Direction) {
        self.reactor(|reactor| reactor.clear_ready(self.token, direction));
    }

    /// A TCP read came back short (see `Reactor::read_came_short`).
    pub(crate) fn read_came_short(&self) {
        self.reactor(|reactor| reactor.read_came_short(self.token));
    }

    fn deadline(&self, direction: Direction) -> &Cell<Option<Instant>> {
        match direction {
            Direction::Read => &self.read_deadline,
            Direction::Write => &self.write_deadline,
        }
    }

    /// Sets the deadline of `direction`, and wakes the green threads parked there, so that
    /// they look at the new deadline.
    pub(crate) fn set_deadline(&self, direction: Direction, deadline: Option<Instant>) {
        self.deadline(direction).set(deadline);
        let waiters = self.reactor(|reactor| reactor.take_waiters(self.token, direction));
        for green in waiters.iter().flatten() {
            unpark(green);
        }
    }

    /// Runs `f` with the reactor that knows this fd; `None` under another runtime, or none.
    fn reactor<R>(&self, f: impl FnOnce(&mut Reactor) -> R) -> Option<R> {
        with_runtime_of(self.runtime, |runtime| f(&mut runtime.reactor.borrow_mut()))
    }
}

impl<S: AsFd> Drop for Registered<S> {
    fn drop(&mut self) {
        // Only from the reactor that registered it: another runtime's may have given the same
        // token to another fd, and after the runtime has ended there is nothing to undo.
        self.reactor(|reactor| reactor.deregister(self.token, self.source.as_fd()));
    }
}

/// The error for an I/O object used under another runtime than the one that made it.
fn gone() -> io::Error {
    io::Error::other("this I/O object belongs to a green-thread runtime that has ended")
}

/// A listening socket.
pub struct TcpListener {
    inner: Registered<std::net::TcpListener>,
}

impl TcpListener {
    /// Takes over a bound `std` listener (for example from `fdio::listen`).
    pub fn from_std(listener: std::net::TcpListener) -> io::Result<TcpListener> {
        listener.set_nonblocking(true)?;
        Ok(TcpListener {
            inner: Registered::new(listener, Interest::Read)?,
        })
    }

    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.source.local_addr()
    }

    /// Waits for the next connection; this green thread only.
    pub fn accept(&self) -> io::Result<(TcpStream, SocketAddr)> {
        let (stream, peer) = self
            .inner
            .io(Direction::Read, |listener| listener.accept())?;
        Ok((TcpStream::from_std(stream)?, peer))
    }

    /// From `deadline` on, `accept` fails with `TimedOut` — also one parked now.
    pub fn set_deadline(&self, deadline: Option<Instant>) {
        self.inner.set_deadline(Direction::Read, deadline);
    }
}

/// A TCP connection. `Read` and `Write` are implemented for `&TcpStream` too, as for std's.
/// It belongs to the runtime of its OS thread, so it cannot be sent to another thread:
///
/// ```compile_fail,E0277
/// fn send_away(stream: lesson_green_threads::net::TcpStream) {
///     std::thread::spawn(move || drop(stream));
/// }
/// ```
pub struct TcpStream {
    inner: Registered<std::net::TcpStream>,
    /// `shutdown(Write)` has queued our EOF: [`delivery`](Self::delivery) does not count it.
    eof_sent: Cell<bool>,
}

impl TcpStream {
    /// Takes over a connected `std` stream.
    pub fn from_std(stream: std::net::TcpStream) -> io::Result<TcpStream> {
        stream.set_nonblocking(true)?;
        Ok(TcpStream {
            inner: Registered::new(stream, Interest::ReadWrite)?,
            eof_sent: Cell::new(false),
        })
    }

    /// Connects to `addr`. (Blocks the whole OS thread for the handshake: fine on loopback,
    /// which the tests use; a real client would connect without blocking, as lesson 5 does.)
    pub fn connect(addr: SocketAddr) -> io::Result<TcpStream> {
        TcpStream::from_std(std::net::TcpStream::connect(addr)?)
    }

    pub fn peer_addr(&self) -> io::Result<SocketAddr> {
        self.inner.source.peer_addr()
    }

    /// Shuts down one or both directions (`Shutdown::Write` sends EOF, reading goes on).
    pub fn shutdown(&self, how: Shutdown) -> io::Result<()> {
        self.inner.source.shutdown(how)?;
        self.eof_sent
            .set(self.eof_sent.get() || how != Shutdown::Read);
        Ok(())
    }

    /// What has become of the bytes written here ([`fdio::delivery`]): all acknowledged by
    /// the peer, some still on their way, or some lost to a reset.
    pub fn delivery(&self) -> io::Result<Delivery> {
        fdio::delivery(self, self.eof_sent.get())
    }

    /// From `deadline` on, reads fail with `TimedOut` — also one parked now.
    pub fn set_read_deadline(&self, deadline: Option<Instant>) {
        self.inner.set_deadline(Direction::Read, deadline);
    }

    /// From `deadline` on, writes fail with `TimedOut` — also one parked now.
    pub fn set_write_deadline(&self, deadline: Option<Instant>) {
        self.inner.set_deadline(Direction::Write, deadline);
    }
}

impl AsFd for TcpStream {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.inner.source.as_fd()
    }
}

impl Read for &TcpStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self
            .inner
            .io(Direction::Read, |mut socket| socket.read(buf))?;
        if n > 0 && n < buf.len() {
            // It took all there was, unless an event said otherwise: see `reactor`.
            self.inner.read_came_short();
        }
        Ok(n)
    }
}

impl Write for &TcpStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self
            .inner
            .io(Direction::Write, |mut socket| socket.write(buf))?;
        if n < buf.len() {
            self.inner.clear_ready(Direction::Write); // the send buffer is full
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(()) // nothing is buffered here
    }
}

impl Read for TcpStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        (&*self).read(buf)
    }
}

impl Write for TcpStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        (&*self).write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
