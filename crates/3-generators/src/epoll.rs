//! epoll, through mio: the scheduler's `select`. It remembers which fds it watches, for which
//! task and in which direction, and turns its events into "fd 7 can be read".
//!
//! An fd is registered the first time a task parks on it, for the direction it parks on, and
//! widened with `reregister` the first time its task parks the other way: one `epoll_ctl` per
//! connection, not one per park. From then on epoll reports that fd whether or not a task is
//! parked on it, and the scheduler drops the events nobody waits for.
//!
//! Why not register both directions at once: a terminal on stdin becomes "writable" again each
//! time it has shown our stderr, so every trace line would wake the loop — to print another.
//!
//! The kernel forgets an fd when it is closed (a finished task drops its sockets) and may give
//! the same number to the next connection: so each registration remembers its owner, and an fd
//! number seen with a new owner is registered afresh. Closing is enough here only because no fd
//! is ever duplicated: epoll drops an fd when the *last* descriptor of its open file closes,
//! so after a `dup` or a `fork` a closed fd could still report events.

use std::collections::HashMap;
use std::io;
use std::os::fd::RawFd;
use std::time::Duration;

use fdio::{epoll_refuses, epoll_refuses_line, interrupted};
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};

/// At most this many readiness events per `epoll_wait`; any more wait for the next call.
const EVENTS_PER_WAIT: usize = 1024;

/// Which way a task waits on its fd.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    Read,
    Write,
}

/// How epoll watches one fd, and for which task.
struct Watch {
    owner: usize,
    /// Every direction its task has parked on so far; `None`: epoll refused the fd.
    interest: Option<Interest>,
}

/// An epoll instance, the fds it watches, and the events of the last wait.
pub struct Epoll {
    poll: Poll,
    events: Events,
    watched: HashMap<RawFd, Watch>,
}

impl Epoll {
    /// A new epoll instance, watching nothing.
    pub fn new() -> io::Result<Epoll> {
        Ok(Epoll {
            poll: Poll::new()?,
            events: Events::with_capacity(EVENTS_PER_WAIT),
            watched: HashMap::new(),
        })
    }

    /// Makes sure epoll watches `fd` in `direction` for task `owner`. Returns `false` if epoll
    /// refuses the fd (a regular file, `/dev/null`): it never says `WouldBlock`, so it is
    /// always ready. (A read of a file can still wait for the disk; readiness cannot say so.)
    pub fn watch(&mut self, fd: RawFd, owner: usize, direction: Direction) -> io::Result<bool> {
        let (wanted, verb) = match direction {
            Direction::Read => (Interest::READABLE, "reading"),
            Direction::Write => (Interest::WRITABLE, "writing"),
        };
        let (token, registry) = (Token(fd as usize), self.poll.registry());
        match self.watched.get_mut(&fd) {
            Some(watch) if watch.owner == owner => match watch.interest {
                None => Ok(false),
                Some(interest) if interest | wanted == interest => Ok(true),
                Some(interest) => {
                    registry.reregister(&mut SourceFd(&fd), token, interest | wanted)?;
                    watch.interest = Some(interest | wanted);
                    Ok(true)
                }
            },
            _ => {
                let interest = match registry.register(&mut SourceFd(&fd), token, wanted) {
                    Ok(()) => Some(wanted),
                    Err(err) if epoll_refuses(&err) => {
                        fdio::log!("{}", epoll_refuses_line("generators", fd, verb));
                        None
                    }
                    Err(err) => return Err(err),
                };
                self.watched.insert(fd, Watch { owner, interest });
                Ok(interest.is_some())
            }
        }
    }

    /// Sleeps until a watched fd is ready or `timeout` passes (`None`: no timeout; zero: do
    /// not sleep, only collect). A signal ends the wait early, with no events (on Linux even
    /// Ctrl+Z then `fg` does, with no handler installed: signal(7)).
    pub fn wait(&mut self, timeout: Option<Duration>) -> io::Result<()> {
        match self.poll.poll(&mut self.events, timeout) {
            Err(err) if interrupted(&err) => Ok(()),
            result => result,
        }
    }

    /// What the last wait found: each fd, once per direction it is ready in. An error or a
    /// hang-up counts as both: the task's next read or write meets it and ends.
    pub fn ready(&self) -> impl Iterator<Item = (RawFd, Direction)> + '_ {
        self.events.iter().flat_map(|event| {
            let fd = event.token().0 as RawFd;
            let failed = event.is_error();
            let readable = event.is_readable() || event.is_read_closed() || failed;
            let writable = event.is_writable() || event.is_write_closed() || failed;
            let read = readable.then_some((fd, Direction::Read));
            let write = writable.then_some((fd, Direction::Write));
            read.into_iter().chain(write)
        })
    }
}
