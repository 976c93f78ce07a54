//! The reactor: the part of the runtime that talks to the kernel about I/O.
//!
//! It owns the mio `Poll` (epoll) and, for every registered source, the waker of the task
//! waiting to read it and the waker of the task waiting to write it. I/O futures are
//! *optimistic*: they first try the system call; only if it says `WouldBlock` do they leave
//! their waker here and return `Pending`. When epoll reports the source ready, the reactor
//! wakes that waker, and the executor polls the task again, which tries the call again.
//!
//! Sources are registered once for both directions, edge-triggered: epoll reports each change
//! to "ready". That is enough because a future only waits after `WouldBlock` — after it has
//! taken everything there was — so the next change is exactly what it waits for.

use std::io;
use std::task::Waker;
use std::time::Duration;

use fdio::{Trace, interrupted};
use mio::event::Source;
use mio::{Events, Interest, Poll, Registry, Token};

/// The token of the `mio::Waker` that lets other threads interrupt `poll`.
pub(crate) const WAKE_TOKEN: Token = Token(usize::MAX);

/// Which way a task waits on a source.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    Read,
    Write,
}

/// The tasks waiting on one source.
#[derive(Default)]
struct Waiters {
    read: Option<Waker>,
    write: Option<Waker>,
    /// epoll said the peer closed its side (or the socket failed). That is a state, not an
    /// event: epoll says it once, maybe under the same edge as the last bytes, so a reader
    /// that stops after a short read must still be told. Every later wait to read ends at once.
    read_closed: bool,
}

/// Owns the `Poll` and a slab of waiters, indexed by token.
pub(crate) struct Reactor {
    poll: Poll,
    events: Events,
    sources: Vec<Option<Waiters>>,
    free: Vec<usize>,
    trace: Trace,
}

impl Reactor {
    pub(crate) fn new(trace: Trace) -> io::Result<Reactor> {
        Ok(Reactor {
            poll: Poll::new()?,
            events: Events::with_capacity(1024),
            sources: Vec::new(),
            free: Vec::new(),
            trace,
        })
    }

    pub(crate) fn registry(&self) -> &Registry {
        self.poll.registry()
    }

    /// Registers `source` for both directions and returns its token.
    pub(crate) fn register(&mut self, source: &mut impl Source) -> io::Result<Token> {
        let index = match self.free.pop() {
            Some(index) => index,
            None => {
                self.sources.push(None);
                self.sources.len() - 1
            }
        };
        let token = Token(index);
        if let Err(err) =
            self.registry()
                .register(source, token, Interest::READABLE | Interest::WRITABLE)
        {
            self.free.push(index);
            return Err(err);
        }
        self.sources[index] = Some(Waiters::default());
        Ok(token)
    }

    /// Forgets `source`; its waiters are dropped without being woken.
    pub(crate) fn deregister(&mut self, token: Token, source: &mut impl Source) {
        // Deregistering only fails if the fd is already gone, and closing it removes it
        // from epoll anyway: nothing to do about an error here.
        let _ = self.registry().deregister(source);
        if let Some(slot) = self.sources.get_mut(token.0)
            && slot.take().is_some()
        {
            self.free.push(token.0);
        }
    }

    /// Leaves `waker` to be woken when `token`'s source is ready for `direction`. Only the
    /// latest waker is kept: a task polled again may come with a different one.
    pub(crate) fn wait_for(&mut self, token: Token, direction: Direction, waker: &Waker) {
        let Some(Some(waiters)) = self.sources.get_mut(token.0) else {
            return;
        };
        if direction == Direction::Read && waiters.read_closed {
            waker.wake_by_ref(); // the next read returns EOF (or the error) at once
            return;
        }
        let slot = match direction {
            Direction::Read => &mut waiters.read,
            Direction::Write => &mut waiters.write,
        };
        match slot {
            Some(old) if old.will_wake(waker) => {}
            _ => *slot = Some(waker.clone()),
        }
    }

    /// Waits for I/O events for at most `timeout` (`None`: no limit).
    pub(crate) fn wait(&mut self, timeout: Option<Duration>) -> io::Result<()> {
        self.trace
            .say(|| format!("reactor: waiting for I/O, timeout={}", describe(timeout)));
        match self.poll.poll(&mut self.events, timeout) {
            // A signal ended the wait early: no events, the loop goes round again.
            Err(err) if interrupted(&err) => {
                self.events.clear();
                Ok(())
            }
            result => result,
        }
    }

    /// Wakes the tasks waiting on the sources the last `wait` found ready.
    pub(crate) fn wake_ready(&mut self) {
        for event in self.events.iter() {
            if event.token() == WAKE_TOKEN {
                self.trace
                    .say(|| "reactor: woken by another thread".to_string());
                continue;
            }
            // A token deregistered while its events were queued: nobody waits any more.
            let Some(Some(waiters)) = self.sources.get_mut(event.token().0) else {
                continue;
            };
            // "closed" and "error" wake the waiter too: its next system call reports them.
            let token = event.token();
            let readable = event.is_readable() || event.is_read_closed() || event.is_error();
            let writable = event.is_writable() || event.is_write_closed() || event.is_error();
            waiters.read_closed |= event.is_read_closed() || event.is_error();
            if readable && let Some(waker) = waiters.read.take() {
                self.trace
                    .say(|| format!("reactor: {token:?} readable → wake its reader"));
                waker.wake();
            }
            if writable && let Some(waker) = waiters.write.take() {
                self.trace
                    .say(|| format!("reactor: {token:?} writable → wake its writer"));
                waker.wake();
            }
        }
    }
}

/// A poll timeout as the trace prints it.
pub(crate) fn describe(timeout: Option<Duration>) -> String {
    match timeout {
        None => "none".to_string(),
        Some(Duration::ZERO) => "0 (tasks are ready: just look)".to_string(),
        Some(timeout) => format!("{timeout:.1?}"),
    }
}
