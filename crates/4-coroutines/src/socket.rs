//! Beazley's `Socket` wrapper as sub-coroutines: `accept`, `recv` and `send_all` each do one
//! operation, yield a `ReadWait` / `WriteWait` while the kernel says `WouldBlock`, and
//! return the result. A task calls them with `yield from` (a [`Delegate`](crate::Delegate)):
//! `data = yield from recv(client)`.
//!
//! The rule that makes this work on edge-triggered epoll: each one *tries first* and parks
//! only after `WouldBlock`. epoll reports a change to ready once; a sub-coroutine that
//! parked while data was already waiting would wait for an edge that has already passed.
//!
//! Errors are not exceptions here: each returns an `io::Result`, and the caller decides.

use std::cell::RefCell;
use std::io::{self, Read};
use std::mem;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::rc::Rc;

use fdio::{PendingWrite, interrupted, would_block};
use mio::net::{TcpListener, TcpStream};

use crate::coroutine::{Coroutine, Error, Exception, GeneratorState, State, Step};
use crate::scheduler::Syscall;

/// How much one `recv` takes.
pub const READ_CHUNK: usize = 64 * 1024;

thread_local! {
    /// One read buffer for every `recv`: only one coroutine runs at a time, so they can all
    /// share it — a client parked in `recv` holds no buffer, and no `recv` pays for zeroing
    /// a fresh 64 KiB on every call. (Thread-local, because a coroutine cannot borrow from
    /// the scheduler that resumes it.)
    static READ_BUFFER: RefCell<Vec<u8>> = RefCell::new(vec![0; READ_CHUNK]);
}

/// `accept(listener)`:
///
/// ```python
/// def accept(listener):
///     while True:
///         try:
///             return listener.accept()
///         except BlockingIOError:       # no connection waiting: only now park
///             yield ReadWait(listener)
/// ```
pub enum Accept {
    /// Not started yet.
    Created(Rc<TcpListener>),
    /// Parked after `WouldBlock`, until the scheduler says the fd is readable.
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
        loop {
            match listener.accept() {
                Err(err) if interrupted(&err) => continue,
                Err(err) if would_block(&err) => {
                    let fd = listener.as_raw_fd();
                    *self = Accept::Parked(listener);
                    return Ok(State::Yielded(Syscall::ReadWait(fd)));
                }
                result => return Ok(State::Complete(result)),
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

/// `recv(client)`: one read of up to [`READ_CHUNK`] bytes; empty at EOF.
///
/// ```python
/// def recv(sock):
///     while True:
///         try:
///             return sock.recv(65536)
///         except BlockingIOError:       # nothing to read: only now park
///             yield ReadWait(sock)
/// ```
pub enum Recv {
    /// Not started yet.
    Created(Rc<TcpStream>),
    /// Parked after `WouldBlock`, until the scheduler says the fd is readable.
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
    type Return = io::Result<Vec<u8>>;

    fn resume(&mut self, (): ()) -> Step<Syscall, Self::Return> {
        let (Recv::Created(stream) | Recv::Parked(stream)) = mem::replace(self, Recv::Closed)
        else {
            return Err(Error::Closed);
        };
        let received = READ_BUFFER.with_borrow_mut(|buf| {
            loop {
                match (&*stream).read(buf) {
                    Err(err) if interrupted(&err) => continue,
                    Err(err) if would_block(&err) => return None,
                    Ok(n) => return Some(Ok(buf[..n].to_vec())),
                    Err(err) => return Some(Err(err)),
                }
            }
        });
        match received {
            Some(result) => Ok(State::Complete(result)),
            None => {
                // Nothing there: only now park, until epoll reports the next bytes.
                let fd = stream.as_raw_fd();
                *self = Recv::Parked(stream);
                Ok(State::Yielded(Syscall::ReadWait(fd)))
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

/// `send_all(client, data)`: returns once every byte is written. What a write does not take
/// waits in a [`PendingWrite`] — the only time a client holds a send buffer.
///
/// ```python
/// def send_all(sock, data):
///     while data:
///         try:
///             sent = sock.send(data)
///             data = data[sent:]        # a partial write keeps its tail
///         except BlockingIOError:       # no room: only now park
///             yield WriteWait(sock)
/// ```
pub enum SendAll {
    /// Not started yet: all of `data` is still to send.
    Created {
        stream: Rc<TcpStream>,
        data: Vec<u8>,
    },
    /// Parked after `WouldBlock`, holding what is still unsent.
    Parked {
        stream: Rc<TcpStream>,
        unsent: PendingWrite,
    },
    /// Returned its result.
    Closed,
}

impl SendAll {
    /// `send_all(sock, data)`: nothing runs until the first resume.
    pub fn new(stream: Rc<TcpStream>, data: Vec<u8>) -> SendAll {
        SendAll::Created { stream, data }
    }
}

impl Coroutine<()> for SendAll {
    type Yield = Syscall;
    type Return = io::Result<()>;

    fn resume(&mut self, (): ()) -> Step<Syscall, io::Result<()>> {
        let (stream, unsent, written) = match mem::replace(self, SendAll::Closed) {
            SendAll::Created { stream, data } => {
                // Most of the time it all goes out now, and nothing is copied.
                let mut unsent = PendingWrite::new();
                let written = unsent.write_or_keep(&mut &*stream, &data);
                (stream, unsent, written)
            }
            SendAll::Parked { stream, mut unsent } => {
                let written = unsent.flush_to(&mut &*stream);
                (stream, unsent, written)
            }
            SendAll::Closed => return Err(Error::Closed),
        };
        if let Err(err) = written {
            return Ok(State::Complete(Err(err)));
        }
        if unsent.is_empty() {
            return Ok(State::Complete(Ok(())));
        }
        // Bytes are left over only because a write said WouldBlock.
        let fd = stream.as_raw_fd();
        *self = SendAll::Parked { stream, unsent };
        Ok(State::Yielded(Syscall::WriteWait(fd)))
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
    use std::io::Write;
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

    /// Resumes `coroutine` until it completes, sleeping a little between waits (there is no
    /// scheduler here); panics after 10 s.
    fn drive<C: Coroutine<(), Yield = Syscall>>(coroutine: &mut C) -> C::Return {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match coroutine.resume(()).unwrap() {
                State::Complete(value) => return value,
                State::Yielded(_) => assert!(Instant::now() < deadline, "never completed"),
            }
            thread::sleep(Duration::from_millis(1));
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
        assert_eq!(drive(&mut recv).unwrap(), b"hello");
        assert_eq!(recv.state(), GeneratorState::Closed);

        peer.shutdown(std::net::Shutdown::Write).unwrap();
        assert_eq!(drive(&mut Recv::new(ours)).unwrap(), b"");
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
