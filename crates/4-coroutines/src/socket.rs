//! Beazley's `Socket` wrapper as sub-coroutines: `accept`, `recv` and `send_all` each do one
//! operation, yield a `ReadWait` / `WriteWait` while the kernel has nothing for them, and
//! return the result. A task calls them with `yield from` (a [`Delegate`](crate::Delegate)):
//! `data = yield from recv(client)`.
//!
//! The rule that makes this work on edge-triggered epoll: each one *tries first* and parks
//! only once the kernel said there is nothing — `WouldBlock`, or a read or write that came
//! back short — and no event came since. epoll reports a change to ready once; a sub-coroutine
//! that parked while data was already waiting would wait for an edge that has already
//! passed. The [`readiness`] table is where that is remembered: each one asks it before
//! trying, and clears its direction when the kernel said "that was all".
//!
//! They are also where a task spends its [`budget`]: each operation that got
//! something done costs one, and with the budget spent the next one yields `BudgetSpent`
//! instead of trying, so the scheduler can serve the other tasks first.
//!
//! Errors are not exceptions here: each returns an `io::Result`, and the caller decides.

use std::io::{self, Read, Write};
use std::mem;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::rc::Rc;

use fdio::{interrupted, would_block};
use mio::Interest;
use mio::net::{TcpListener, TcpStream};

use crate::budget;
use crate::bytes::{BUFFER_SIZE, Bytes};
use crate::coroutine::{Coroutine, Error, Exception, GeneratorState, State, Step};
use crate::readiness;
use crate::scheduler::Syscall;

/// `accept(listener)`:
///
/// ```python
/// def accept(listener):
///     while True:
///         if may_try(listener, READ):       # no WouldBlock since the last event
///             try:
///                 return listener.accept()  # costs one from the budget
///             except BlockingIOError:       # no connection waiting
///                 drained(listener, READ)
///         yield ReadWait(listener)          # only now park
/// ```
///
/// (Before each try, as in `recv` and `send_all`: `if budget spent: yield BudgetSpent`.)
pub enum Accept {
    /// Not started yet.
    Created(Rc<TcpListener>),
    /// Parked until the fd is readable, or with the budget spent until the task's next turn.
    Parked(Rc<TcpListener>),
    /// Returned its result.
    Closed,
}

impl Accept {
    /// `accept(listener)`: nothing runs until the first resume.
    pub fn new(listener: Rc<TcpListener>) -> Accept {
        Accept::Created(listener)
    }
}

impl Coroutine<()> for Accept {
    type Yield = Syscall;
    type Return = io::Result<(TcpStream, SocketAddr)>;

    fn resume(&mut self, (): ()) -> Step<Syscall, Self::Return> {
        let (Accept::Created(listener) | Accept::Parked(listener)) =
            mem::replace(self, Accept::Closed)
        else {
            return Err(Error::Closed);
        };
        if !budget::has_left() {
            *self = Accept::Parked(listener);
            return Ok(State::Yielded(Syscall::BudgetSpent));
        }
        let fd = listener.as_raw_fd();
        if !readiness::may_try(fd, Interest::READABLE) {
            *self = Accept::Parked(listener);
            return Ok(State::Yielded(Syscall::ReadWait(fd)));
        }
        loop {
            match listener.accept() {
                Err(err) if interrupted(&err) => continue,
                Err(err) if would_block(&err) => {
                    readiness::drained(fd, Interest::READABLE);
                    *self = Accept::Parked(listener);
                    return Ok(State::Yielded(Syscall::ReadWait(fd)));
                }
                result => {
                    budget::spend();
                    return Ok(State::Complete(result));
                }
            }
        }
    }

    fn throw(&mut self, exception: Exception) -> Step<Syscall, Self::Return> {
        escape(mem::replace(self, Accept::Closed).state(), exception)
    }

    fn state(&self) -> GeneratorState {
        match self {
            Accept::Created(_) => GeneratorState::Created,
            Accept::Parked(_) => GeneratorState::Suspended,
            Accept::Closed => GeneratorState::Closed,
        }
    }
}

/// `recv(client)`: one read of up to [`BUFFER_SIZE`] bytes; empty at EOF.
///
/// ```python
/// def recv(sock):
///     while True:
///         if may_try(sock, READ):           # nothing said "empty" since the last event
///             try:
///                 data = sock.recv(65536)   # costs one from the budget
///             except BlockingIOError:       # nothing to read
///                 drained(sock, READ)
///             else:
///                 if 0 < len(data) < 65536 and short_read_drains(sock):
///                     drained(sock, READ)   # it read all there was
///                 return data
///         yield ReadWait(sock)              # only now park
/// ```
///
/// A read that comes back short found the socket empty, so the next `recv` parks without
/// asking: in a ping-pong that saves the third system call per message, the `recv` that
/// would say `WouldBlock`. Unless an event said an urgent byte came, or the peer closed, or
/// an error (`short_read_drains`, see [`readiness`]): a TCP read stops at an urgent byte's
/// mark with bytes behind it, and takes the FIN with the last bytes, and no new edge comes
/// for what it left.
///
/// What it returns is the read buffer itself, lent by a pool ([`Bytes`]): nothing is copied.
pub enum Recv {
    /// Not started yet.
    Created(Rc<TcpStream>),
    /// Parked until the fd is readable, or with the budget spent until the task's next turn.
    Parked(Rc<TcpStream>),
    /// Returned its result.
    Closed,
}

impl Recv {
    /// `recv(sock)`: nothing runs until the first resume.
    pub fn new(stream: Rc<TcpStream>) -> Recv {
        Recv::Created(stream)
    }
}

impl Coroutine<()> for Recv {
    type Yield = Syscall;
    type Return = io::Result<Bytes>;

    fn resume(&mut self, (): ()) -> Step<Syscall, Self::Return> {
        let (Recv::Created(stream) | Recv::Parked(stream)) = mem::replace(self, Recv::Closed)
        else {
            return Err(Error::Closed);
        };
        if !budget::has_left() {
            *self = Recv::Parked(stream);
            return Ok(State::Yielded(Syscall::BudgetSpent));
        }
        let fd = stream.as_raw_fd();
        if !readiness::may_try(fd, Interest::READABLE) {
            // Nothing came since the kernel last said "that was all": park without asking.
            *self = Recv::Parked(stream);
            return Ok(State::Yielded(Syscall::ReadWait(fd)));
        }
        loop {
            let read = Bytes::read_with(BUFFER_SIZE, |buf| (&*stream).read(buf));
            match read {
                Err(err) if interrupted(&err) => continue,
                Err(err) if would_block(&err) => {
                    // Nothing there: park, until epoll reports the next bytes.
                    readiness::drained(fd, Interest::READABLE);
                    *self = Recv::Parked(stream);
                    return Ok(State::Yielded(Syscall::ReadWait(fd)));
                }
                result => {
                    budget::spend();
                    let short = |bytes: &Bytes| !bytes.is_empty() && bytes.len() < BUFFER_SIZE;
                    if result.as_ref().is_ok_and(short) && readiness::short_read_drains(fd) {
                        // It read all there was: the next `recv` parks without asking.
                        readiness::drained(fd, Interest::READABLE);
                    }
                    return Ok(State::Complete(result));
                }
            }
        }
    }

    fn throw(&mut self, exception: Exception) -> Step<Syscall, Self::Return> {
        escape(mem::replace(self, Recv::Closed).state(), exception)
    }

    fn state(&self) -> GeneratorState {
        match self {
            Recv::Created(_) => GeneratorState::Created,
            Recv::Parked(_) => GeneratorState::Suspended,
            Recv::Closed => GeneratorState::Closed,
        }
    }
}

/// `send_all(client, data)`: returns once every byte is written.
///
/// ```python
/// def send_all(sock, data):
///     while data:
///         if not may_try(sock, WRITE):      # full, and no event since
///             yield WriteWait(sock)
///             continue
///         try:
///             sent = sock.send(data)        # costs one from the budget
///             data = data[sent:]            # a partial write keeps its tail
///             if data:                      # the kernel took what fit: the send buffer
///                 drained(sock, WRITE)      # is full, so park at once (see below)
///                 yield WriteWait(sock)
///         except BlockingIOError:           # no room: only now park
///             drained(sock, WRITE)
///             yield WriteWait(sock)
/// ```
///
/// A write that takes only part of `data` is as good as `WouldBlock`: on Linux a TCP socket
/// takes less than it was offered only when its send buffer is full, and it then flags
/// itself so that epoll reports the next bit of room. Parking at once saves a `send` whose
/// only answer would be `WouldBlock` (tokio's `poll_write` does the same). Parked, it keeps
/// only what is unsent ([`Bytes::shrink`]).
pub enum SendAll {
    /// Not started yet: all of `data` is still to send.
    Created { stream: Rc<TcpStream>, data: Bytes },
    /// Parked until the fd is writable, or with the budget spent until the task's next
    /// turn, holding what is still unsent.
    Parked {
        stream: Rc<TcpStream>,
        unsent: Bytes,
    },
    /// Returned its result.
    Closed,
}

impl SendAll {
    /// `send_all(sock, data)`: nothing runs until the first resume.
    pub fn new(stream: Rc<TcpStream>, data: impl Into<Bytes>) -> SendAll {
        SendAll::Created {
            stream,
            data: data.into(),
        }
    }
}

impl Coroutine<()> for SendAll {
    type Yield = Syscall;
    type Return = io::Result<()>;

    fn resume(&mut self, (): ()) -> Step<Syscall, io::Result<()>> {
        let (stream, mut unsent) = match mem::replace(self, SendAll::Closed) {
            SendAll::Created { stream, data } => (stream, data),
            SendAll::Parked { stream, unsent } => (stream, unsent),
            SendAll::Closed => return Err(Error::Closed),
        };
        let fd = stream.as_raw_fd();
        if !unsent.is_empty() && !readiness::may_try(fd, Interest::WRITABLE) {
            return Ok(self.park(stream, unsent));
        }
        while !unsent.is_empty() {
            if !budget::has_left() {
                *self = SendAll::Parked { stream, unsent };
                return Ok(State::Yielded(Syscall::BudgetSpent));
            }
            match (&*stream).write(&unsent) {
                Ok(0) => return Ok(State::Complete(Err(io::ErrorKind::WriteZero.into()))),
                Ok(sent) => {
                    budget::spend();
                    let all_sent = sent == unsent.len();
                    unsent.advance(sent);
                    if !all_sent {
                        readiness::drained(fd, Interest::WRITABLE);
                        return Ok(self.park(stream, unsent));
                    }
                }
                Err(err) if interrupted(&err) => {}
                Err(err) if would_block(&err) => {
                    readiness::drained(fd, Interest::WRITABLE);
                    return Ok(self.park(stream, unsent));
                }
                Err(err) => return Ok(State::Complete(Err(err))),
            }
        }
        // Dropping the sent `Bytes` gives its buffer back to the pool.
        Ok(State::Complete(Ok(())))
    }

    fn throw(&mut self, exception: Exception) -> Step<Syscall, io::Result<()>> {
        escape(mem::replace(self, SendAll::Closed).state(), exception)
    }

    fn state(&self) -> GeneratorState {
        match self {
            SendAll::Created { .. } => GeneratorState::Created,
            SendAll::Parked { .. } => GeneratorState::Suspended,
            SendAll::Closed => GeneratorState::Closed,
        }
    }
}

impl SendAll {
    /// `yield WriteWait(sock)`, keeping only the unsent bytes.
    fn park(&mut self, stream: Rc<TcpStream>, mut unsent: Bytes) -> State<Syscall, io::Result<()>> {
        unsent.shrink();
        let fd = stream.as_raw_fd();
        *self = SendAll::Parked { stream, unsent };
        State::Yielded(Syscall::WriteWait(fd))
    }
}

/// None of these catches anything: an exception thrown in escapes, and they are closed.
fn escape<Y, R>(was: GeneratorState, exception: Exception) -> Step<Y, R> {
    match was {
        GeneratorState::Closed => Err(Error::Raised(exception)),
        GeneratorState::Created | GeneratorState::Suspended => Err(Error::raised(exception)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::thread;
    use std::time::{Duration, Instant};

    /// A connected pair on 127.0.0.1: our non-blocking end, and a blocking peer.
    fn socket_pair() -> (Rc<TcpStream>, std::net::TcpStream) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let peer = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (ours, _) = listener.accept().unwrap();
        ours.set_nonblocking(true).unwrap();
        (Rc::new(TcpStream::from_std(ours)), peer)
    }

    /// Waits (bounded) until everything `peer` sent sits in our socket: our kernel has
    /// acknowledged it.
    fn wait_acknowledged(peer: &std::net::TcpStream) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !fdio::all_acknowledged(peer).unwrap() {
            assert!(Instant::now() < deadline, "the bytes never arrived");
            thread::sleep(Duration::from_millis(1));
        }
    }

    /// A read that comes back short marks the socket drained: the next `recv` parks without
    /// asking, even though bytes arrived meanwhile (their event, not yet written down, will
    /// wake it).
    #[test]
    fn a_read_that_empties_the_socket_parks_the_next_recv_without_asking() {
        let (ours, mut peer) = socket_pair();
        peer.write_all(b"one").unwrap();
        wait_acknowledged(&peer);
        budget::set(budget::PER_TURN);
        let Ok(State::Complete(first)) = Recv::new(Rc::clone(&ours)).resume(()) else {
            panic!("the bytes are there: the first recv reads")
        };
        assert_eq!(&*first.unwrap(), b"one");
        assert!(!readiness::may_try(ours.as_raw_fd(), Interest::READABLE));
        peer.write_all(b"two").unwrap();
        wait_acknowledged(&peer);
        match Recv::new(Rc::clone(&ours)).resume(()) {
            Ok(State::Yielded(Syscall::ReadWait(_))) => {}
            _ => panic!("the recv after an emptying read asked the kernel again"),
        }
    }

    /// The last bytes and the EOF together, and the one event that says so (readable, and
    /// closed: what the scheduler writes down for it): the read that takes the bytes comes
    /// back short, having taken the FIN too, and the next `recv` returns the EOF instead of
    /// parking for an edge that will not come.
    #[test]
    fn the_eof_behind_the_last_bytes_is_read_without_a_second_event() {
        let (ours, mut peer) = socket_pair();
        peer.write_all(b"last").unwrap();
        peer.shutdown(std::net::Shutdown::Write).unwrap();
        wait_acknowledged(&peer);
        readiness::record(ours.as_raw_fd(), true, false, true);
        budget::set(budget::PER_TURN);
        let Ok(State::Complete(first)) = Recv::new(Rc::clone(&ours)).resume(()) else {
            panic!("the bytes are there: the first recv reads")
        };
        assert_eq!(&*first.unwrap(), b"last");
        match Recv::new(Rc::clone(&ours)).resume(()) {
            Ok(State::Complete(eof)) => assert!(eof.unwrap().is_empty()),
            _ => panic!("the EOF was left waiting for an event"),
        }
    }

    /// Resumes `coroutine` until it completes, as the scheduler would: after each wait it
    /// sleeps a little, then writes down an event for the fd waited on (a call tried on a
    /// hint that was wrong just says `WouldBlock` again), and refills the budget. Panics
    /// after 10 s.
    fn drive<C: Coroutine<(), Yield = Syscall>>(coroutine: &mut C) -> C::Return {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            budget::set(budget::PER_TURN);
            let call = match coroutine.resume(()).unwrap() {
                State::Complete(value) => return value,
                State::Yielded(call) => call,
            };
            assert!(Instant::now() < deadline, "never completed");
            thread::sleep(Duration::from_millis(1));
            match call {
                Syscall::ReadWait(fd) => readiness::record(fd, true, false, false),
                Syscall::WriteWait(fd) => readiness::record(fd, false, true, false),
                _ => {}
            }
        }
    }

    /// With nothing to read, recv parks on its socket's fd; once the peer writes it returns
    /// the bytes; after the peer shuts down it returns empty (EOF).
    #[test]
    fn recv_parks_until_data_then_returns_it() {
        let (ours, mut peer) = socket_pair();
        let mut recv = Recv::new(Rc::clone(&ours));
        match recv.resume(()) {
            Ok(State::Yielded(Syscall::ReadWait(fd))) => assert_eq!(fd, ours.as_raw_fd()),
            _ => panic!("recv of an empty socket must park on ReadWait"),
        }
        assert_eq!(recv.state(), GeneratorState::Suspended);
        peer.write_all(b"hello").unwrap();
        assert_eq!(&*drive(&mut recv).unwrap(), b"hello");
        assert_eq!(recv.state(), GeneratorState::Closed);

        peer.shutdown(std::net::Shutdown::Write).unwrap();
        assert!(drive(&mut Recv::new(ours)).unwrap().is_empty());
    }

    /// After an event that said an urgent byte waits, a short read does not mark the socket
    /// drained: a TCP read stops at an urgent byte's mark, with ordinary bytes behind it.
    /// Sent `abc`, one urgent byte, `def`, all queued before the first read, and the one
    /// event for them written down (readable, urgent): that read gets only `abc`, and the
    /// next `recv` still reads `def` instead of parking to wait for an edge that has already
    /// come.
    #[test]
    fn a_recv_after_a_short_read_still_reads_the_bytes_behind_an_urgent_byte() {
        use nix::sys::socket::{MsgFlags, send};
        let (ours, mut peer) = socket_pair();
        peer.write_all(b"abc").unwrap();
        send(peer.as_raw_fd(), b"!", MsgFlags::MSG_OOB).unwrap();
        peer.write_all(b"def").unwrap();
        wait_acknowledged(&peer);
        readiness::record(ours.as_raw_fd(), true, false, true);
        budget::set(budget::PER_TURN);
        let Ok(State::Complete(first)) = Recv::new(Rc::clone(&ours)).resume(()) else {
            panic!("the bytes are there: the first recv reads")
        };
        assert_eq!(&*first.unwrap(), b"abc", "stopped at the urgent mark");
        match Recv::new(Rc::clone(&ours)).resume(()) {
            Ok(State::Complete(second)) => assert_eq!(&*second.unwrap(), b"def"),
            _ => panic!("the bytes behind the urgent byte were left waiting for an edge"),
        }
    }

    /// What a short read taken for "empty" relies on when the urgent byte and the FIN come
    /// only after the event the scheduler last wrote down (which said neither): they bring
    /// an event of their own — edge-triggered epoll reports each wake-up the socket makes,
    /// not only a change from empty — and it says urgent byte and closed. So the short read
    /// that stops at the mark parks the task for an event that is on its way, not one that
    /// has passed.
    #[test]
    fn an_urgent_byte_and_a_fin_after_the_last_event_bring_their_own() {
        use mio::unix::SourceFd;
        use mio::{Events, Poll, Token};
        use nix::sys::socket::{MsgFlags, send};
        let (ours, mut peer) = socket_pair();
        let mut poll = Poll::new().unwrap();
        let interest = Interest::READABLE | Interest::PRIORITY; // as the scheduler asks
        let fd = ours.as_raw_fd();
        poll.registry()
            .register(&mut SourceFd(&fd), Token(0), interest)
            .unwrap();
        let mut events = Events::with_capacity(8);
        let mut next_event = |what: &str| {
            poll.poll(&mut events, Some(Duration::from_secs(10)))
                .unwrap();
            let event = events
                .iter()
                .next()
                .unwrap_or_else(|| panic!("no event for {what}"));
            (
                event.is_readable(),
                event.is_priority(),
                event.is_read_closed(),
            )
        };
        peer.write_all(b"abc").unwrap();
        wait_acknowledged(&peer);
        assert_eq!(
            next_event("abc"),
            (true, false, false),
            "readable, nothing more"
        );
        // After that event, before our read: an urgent byte, more bytes, the FIN.
        send(peer.as_raw_fd(), b"!", MsgFlags::MSG_OOB).unwrap();
        peer.write_all(b"def").unwrap();
        peer.shutdown(std::net::Shutdown::Write).unwrap();
        wait_acknowledged(&peer);
        let mut buf = [0; 64];
        let n = (&*ours).read(&mut buf).unwrap();
        assert_eq!(
            &buf[..n],
            b"abc",
            "short: stopped at the urgent byte's mark"
        );
        assert_eq!(
            next_event("the rest"),
            (true, true, true),
            "urgent byte, and closed"
        );
    }

    /// send_all of more than the socket buffers hold parks on WriteWait, keeps the unsent
    /// tail, and returns once the peer has read every byte, in order.
    #[test]
    fn send_all_parks_while_full_and_delivers_everything() {
        let (ours, mut peer) = socket_pair();
        let payload: Vec<u8> = (0..32 << 20).map(|i: u32| (i % 251) as u8).collect();
        let mut send = SendAll::new(Rc::clone(&ours), payload.clone());
        assert!(matches!(
            send.resume(()),
            Ok(State::Yielded(Syscall::WriteWait(_)))
        ));
        let reader = thread::spawn(move || {
            let mut received = vec![0; 32 << 20];
            peer.read_exact(&mut received).map(|()| received)
        });
        drive(&mut send).unwrap();
        assert_eq!(reader.join().unwrap().unwrap(), payload);
    }

    /// With its task's budget spent, recv yields `BudgetSpent` and leaves the bytes in the
    /// socket; on the next turn (a full budget) it reads them, and that costs one.
    #[test]
    fn recv_gives_way_when_the_budget_is_spent() {
        let (ours, mut peer) = socket_pair();
        peer.write_all(b"later").unwrap();
        let mut recv = Recv::new(ours);
        budget::set(0);
        assert!(matches!(
            recv.resume(()),
            Ok(State::Yielded(Syscall::BudgetSpent))
        ));
        assert_eq!(recv.state(), GeneratorState::Suspended);
        assert_eq!(&*drive(&mut recv).unwrap(), b"later");
        assert_eq!(budget::left(), budget::PER_TURN - 1);
    }

    /// accept parks while no client is waiting, and returns the connection once one comes.
    #[test]
    fn accept_parks_until_a_client_connects() {
        let std_listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = std_listener.local_addr().unwrap();
        std_listener.set_nonblocking(true).unwrap();
        let listener = Rc::new(TcpListener::from_std(std_listener));
        let mut accept = Accept::new(Rc::clone(&listener));
        assert!(matches!(
            accept.resume(()),
            Ok(State::Yielded(Syscall::ReadWait(_)))
        ));
        let client = std::net::TcpStream::connect(addr).unwrap();
        let (_, peer) = drive(&mut accept).unwrap();
        assert_eq!(peer, client.local_addr().unwrap());
    }

    /// An exception thrown into a parked sub-coroutine escapes and closes it.
    #[test]
    fn throw_escapes_and_closes() {
        let (ours, _peer) = socket_pair();
        let mut recv = Recv::new(ours);
        recv.resume(()).unwrap();
        let Err(err) = recv.throw(Exception::new("OSError")) else {
            panic!("recv catches nothing");
        };
        assert_eq!(err, Error::Raised(Exception::new("OSError")));
        assert_eq!(recv.state(), GeneratorState::Closed);
        assert!(matches!(recv.resume(()), Err(Error::Closed)));
    }
}
