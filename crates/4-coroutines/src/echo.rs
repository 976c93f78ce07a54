//! The echo server as coroutine tasks, after Beazley's coroutine scheduler: a `server` task
//! accepts and starts a [`Client`] task per connection; each delegates its I/O to the
//! [`socket`](crate::socket) sub-coroutines with `yield from`.

use std::io;
use std::mem;
use std::rc::Rc;
use std::time::Duration;

use fdio::{ServerArgs, Trace, log_connected, out_of_fds};
use mio::net::TcpListener;

use crate::bytes::BUFFER_SIZE;
use crate::client::Client;
use crate::coroutine::{Coroutine, Error, Exception, GeneratorState, State, Step};
use crate::delegate::Delegate;
use crate::scheduler::{Scheduler, Syscall, Task};
use crate::socket::Accept;

/// How long to stop accepting after running out of file descriptors.
const OUT_OF_FDS_PAUSE: Duration = Duration::from_millis(500);

/// Every lesson stops reading a client that owes it this much (backpressure). Here it is
/// built in: a client's task does not read again until `send_all` has returned, so it never
/// owes more than one read.
const MAX_UNSENT: usize = 256 * 1024;
const _: () = assert!(BUFFER_SIZE <= MAX_UNSENT);

/// Listens on `args.addr` and serves forever.
pub fn serve(args: &ServerArgs) -> io::Result<()> {
    fdio::raise_fd_limit()?;
    let listener = fdio::listen(args.addr)?;
    listener.set_nonblocking(true)?;
    let name = format!("listener {}", listener.local_addr()?);
    let mut scheduler = Scheduler::new(Trace::new(args.trace))?;
    scheduler.spawn(Task::new(
        name,
        Server::new(TcpListener::from_std(listener)),
    ));
    scheduler.run()
}

/// The server task:
///
/// ```python
/// def server(listener):
///     while True:
///         try:
///             client, addr = yield from accept(listener)    # Accepting
///         except OSError as err:
///             if out_of_fds(err):
///                 yield Sleep(0.5)          # the backlog stays readable: do not spin
///             continue
///         yield NewTask(handle_client(client, addr))
/// ```
pub enum Server {
    /// Not started yet.
    Created(Rc<TcpListener>),
    /// Inside `yield from accept(listener)`, or about to enter it again.
    Accepting {
        listener: Rc<TcpListener>,
        accept: Delegate<Accept>,
    },
    /// An exception went through it.
    Closed,
}

impl Server {
    /// `server(listener)`; `listener` must be non-blocking.
    pub fn new(listener: TcpListener) -> Server {
        Server::Created(Rc::new(listener))
    }

    /// Runs the loop above until it yields. `thrown`, if any, is raised first inside the
    /// `yield from accept(…)` the server is paused in — and escapes: nothing catches it.
    fn run(&mut self, mut thrown: Option<Exception>) -> Step<Syscall, ()> {
        let (listener, mut accept) = match mem::replace(self, Server::Closed) {
            Server::Created(listener) => (Rc::clone(&listener), start_accept(listener)),
            Server::Accepting { listener, accept } => (listener, accept),
            Server::Closed => return Err(Error::Closed),
        };
        loop {
            // This drains the backlog: `accept` parks only once the kernel says WouldBlock.
            match accept.step((), thrown.take())? {
                State::Yielded(wait) => {
                    *self = Server::Accepting { listener, accept };
                    return Ok(State::Yielded(wait));
                }
                State::Complete(Ok((stream, peer))) => {
                    log_connected(peer);
                    let client = Task::new(format!("client {peer}"), Client::new(stream, peer));
                    *self = Server::Accepting {
                        accept: start_accept(Rc::clone(&listener)),
                        listener,
                    };
                    return Ok(State::Yielded(Syscall::NewTask(client)));
                }
                State::Complete(Err(err)) if out_of_fds(&err) => {
                    fdio::log!("accept: {err}; trying again in {OUT_OF_FDS_PAUSE:?}");
                    *self = Server::Accepting {
                        accept: start_accept(Rc::clone(&listener)),
                        listener,
                    };
                    return Ok(State::Yielded(Syscall::Sleep(OUT_OF_FDS_PAUSE)));
                }
                // For example ECONNABORTED: that one connection is gone, the listener is fine.
                State::Complete(Err(err)) => {
                    fdio::log!("accept: {err}");
                    accept = start_accept(Rc::clone(&listener));
                }
            }
        }
    }
}

/// `yield from accept(listener)`, about to begin.
fn start_accept(listener: Rc<TcpListener>) -> Delegate<Accept> {
    Delegate::new(Accept::new(listener))
}

impl Coroutine<()> for Server {
    type Yield = Syscall;
    type Return = ();

    fn resume(&mut self, (): ()) -> Step<Syscall, ()> {
        self.run(None)
    }

    fn throw(&mut self, exception: Exception) -> Step<Syscall, ()> {
        match self {
            Server::Accepting { .. } => self.run(Some(exception)),
            Server::Created(_) => {
                *self = Server::Closed;
                Err(Error::raised(exception))
            }
            Server::Closed => Err(Error::Raised(exception)),
        }
    }

    fn state(&self) -> GeneratorState {
        match self {
            Server::Created(_) => GeneratorState::Created,
            Server::Accepting { .. } => GeneratorState::Suspended,
            Server::Closed => GeneratorState::Closed,
        }
    }
}
