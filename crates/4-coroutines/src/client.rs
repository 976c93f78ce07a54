//! A client's task: `data = yield from recv(client)`, then `yield from send_all(client,
//! data)`, until EOF. The server task in [`echo`](crate::echo) starts one per connection.

use std::io;
use std::mem;
use std::net::SocketAddr;
use std::rc::Rc;

use fdio::log_closed;
use mio::net::TcpStream;

use crate::coroutine::{Coroutine, Error, Exception, GENERATOR_EXIT, GeneratorState, State, Step};
use crate::delegate::Delegate;
use crate::scheduler::Syscall;
use crate::socket::{Recv, SendAll};

/// A client's task:
///
/// ```python
/// def handle_client(client, addr):
///     try:
///         while True:
///             data = yield from recv(client)        # Receiving
///             if not data:
///                 break                             # EOF: send_all left nothing owed
///             yield from send_all(client, data)     # Sending
///         log_closed(addr)
///     except Exception as err:                      # I/O error, or thrown in
///         log_closed(addr, err)
///     client.close()
/// ```
pub enum Client {
    /// Not started yet.
    Created {
        stream: Rc<TcpStream>,
        peer: SocketAddr,
    },
    /// Inside `data = yield from recv(client)`.
    Receiving {
        stream: Rc<TcpStream>,
        peer: SocketAddr,
        recv: Delegate<Recv>,
    },
    /// Inside `yield from send_all(client, data)`.
    Sending {
        stream: Rc<TcpStream>,
        peer: SocketAddr,
        send: Delegate<SendAll>,
    },
    /// Finished: its socket is closed.
    Closed,
}

impl Client {
    /// `handle_client(client, addr)`; `stream` must be non-blocking (mio's are).
    pub fn new(stream: TcpStream, peer: SocketAddr) -> Client {
        Client::Created {
            stream: Rc::new(stream),
            peer,
        }
    }

    fn receiving(stream: Rc<TcpStream>, peer: SocketAddr) -> Client {
        let recv = Delegate::new(Recv::new(Rc::clone(&stream)));
        Client::Receiving { stream, peer, recv }
    }

    /// Runs the loop above until it parks or ends. `thrown`, if any, is raised first in
    /// the sub-coroutine the task is paused in — that is what `yield from` does with a throw.
    fn run(&mut self, mut thrown: Option<Exception>) -> Step<Syscall, ()> {
        loop {
            // Leaving `Closed` behind: returning without putting a state back closes it, and
            // dropping the stream closes the socket.
            match mem::replace(self, Client::Closed) {
                Client::Created { stream, peer } => *self = Client::receiving(stream, peer),
                Client::Receiving {
                    stream,
                    peer,
                    mut recv,
                } => match recv.step((), thrown.take()) {
                    Ok(State::Yielded(wait)) => {
                        *self = Client::Receiving { stream, peer, recv };
                        return Ok(State::Yielded(wait));
                    }
                    Ok(State::Complete(Ok(data))) if data.is_empty() => return finish(peer, None),
                    Ok(State::Complete(Ok(data))) => {
                        let send = Delegate::new(SendAll::new(Rc::clone(&stream), data));
                        *self = Client::Sending { stream, peer, send };
                    }
                    Ok(State::Complete(Err(err))) => return finish(peer, Some(err)),
                    Err(error) => return caught(peer, error),
                },
                Client::Sending {
                    stream,
                    peer,
                    mut send,
                } => match send.step((), thrown.take()) {
                    Ok(State::Yielded(wait)) => {
                        *self = Client::Sending { stream, peer, send };
                        return Ok(State::Yielded(wait));
                    }
                    Ok(State::Complete(Ok(()))) => *self = Client::receiving(stream, peer),
                    Ok(State::Complete(Err(err))) => return finish(peer, Some(err)),
                    Err(error) => return caught(peer, error),
                },
                Client::Closed => return Err(Error::Closed),
            }
        }
    }
}

/// The connection is over: log it; the task returns (and its socket closes).
fn finish(peer: SocketAddr, error: Option<io::Error>) -> Step<Syscall, ()> {
    log_closed(peer, error.as_ref());
    Ok(State::Complete(()))
}

/// `except Exception as err`: an exception out of a sub-coroutine ends this connection
/// only. `GeneratorExit` (a `close()`) goes on up, as Python's `except Exception` lets it.
fn caught(peer: SocketAddr, error: Error) -> Step<Syscall, ()> {
    match error {
        Error::Raised(exception) if !exception.is(GENERATOR_EXIT) => {
            finish(peer, Some(io::Error::other(exception.to_string())))
        }
        error => Err(error),
    }
}

impl Coroutine<()> for Client {
    type Yield = Syscall;
    type Return = ();

    fn resume(&mut self, (): ()) -> Step<Syscall, ()> {
        self.run(None)
    }

    fn throw(&mut self, exception: Exception) -> Step<Syscall, ()> {
        match self {
            Client::Receiving { .. } | Client::Sending { .. } => self.run(Some(exception)),
            Client::Created { .. } => {
                *self = Client::Closed;
                Err(Error::raised(exception))
            }
            Client::Closed => Err(Error::Raised(exception)),
        }
    }

    fn state(&self) -> GeneratorState {
        match self {
            Client::Created { .. } => GeneratorState::Created,
            Client::Receiving { .. } | Client::Sending { .. } => GeneratorState::Suspended,
            Client::Closed => GeneratorState::Closed,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::time::{Duration, Instant};

    /// Parked in `recv`, the task echoes what arrives through `send_all` and parks in
    /// `recv` again; an exception thrown in (what the scheduler does when it cannot park a
    /// task) goes down into `recv`, comes back out, and ends the task: the socket closes.
    #[test]
    fn echoes_through_its_sub_coroutines_until_a_throw_ends_it() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let mut peer = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (ours, addr) = listener.accept().unwrap();
        ours.set_nonblocking(true).unwrap();
        let mut client = Client::new(TcpStream::from_std(ours), addr);
        let Ok(State::Yielded(Syscall::ReadWait(fd))) = client.resume(()) else {
            panic!("an empty socket: the task parks in recv");
        };

        peer.write_all(b"ping").unwrap();
        peer.set_nonblocking(true).unwrap();
        let mut echoed = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(10);
        while echoed.len() < 4 {
            assert!(Instant::now() < deadline, "no echo");
            // What the scheduler does when epoll reports the socket readable.
            crate::readiness::record(fd, true, false, false);
            // Each resume runs recv, then send_all, then parks in recv again.
            assert!(matches!(
                client.resume(()),
                Ok(State::Yielded(Syscall::ReadWait(_)))
            ));
            let mut buf = [0; 16];
            if let Ok(n) = peer.read(&mut buf) {
                echoed.extend_from_slice(&buf[..n]);
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        assert_eq!(echoed, b"ping");

        assert!(matches!(
            client.throw(Exception::new("OSError")),
            Ok(State::Complete(()))
        ));
        assert_eq!(client.state(), GeneratorState::Closed);
        peer.set_nonblocking(false).unwrap();
        peer.set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        assert_eq!(peer.read(&mut [0; 16]).unwrap(), 0, "the socket is closed");
    }
}
