//! The reactor: the part of the runtime that talks to the kernel about I/O.
//!
//! It owns the mio `Poll` (epoll) and, for every registered source, what epoll said about it
//! and which task waits for it, per direction (read, write). I/O futures are *optimistic*:
//! they try the system call first; only if it says `WouldBlock` do they leave their waker
//! here and return `Pending`. When epoll reports the source ready, the reactor wakes that
//! waker, and the executor polls the task again, which tries the call again.
//!
//! ## The readiness bit
//! mio registers every source **edge-triggered** (`EPOLLET`): epoll reports a *change* to
//! "ready" once, then says nothing until the next change. So what epoll said must be kept
//! until someone uses it — a task may be busy writing when bytes arrive, with no reader
//! waker to wake. Each source therefore has a readiness bit per direction:
//!
//! - **set** by an event (whether or not a task waits), and at registration (we have not
//!   asked yet: try the call);
//! - **cleared** only by an operation that got `WouldBlock` — proof that the kernel has
//!   nothing more — or by one that brought its own proof: a TCP write that came back short
//!   (a TCP socket takes less than it is offered only when its send buffer is full, and it
//!   then flags itself, so that epoll reports the next room), or a TCP read that came back
//!   short (below). Each saves the call that would only say `WouldBlock`;
//! - a task waits only while the bit is clear.
//!
//! **A short read.** A TCP read copies until the buffer is full or the socket has nothing
//! more (`tcp_recvmsg`), so a read that returns fewer bytes than it asked for found the
//! socket empty — as tokio takes it, and in a ping-pong that saves the third system call
//! per message. Except twice, where the read leaves something behind and no new edge will
//! come for it: it stops at an **urgent byte**'s mark once it has copied anything, with
//! ordinary bytes already queued behind it; and the read that takes the last bytes takes
//! the peer's **FIN** with them (or meets the error of a reset), so the next read returns
//! at once. Both say so in their event: epoll reports `EPOLLPRI` while an urgent byte waits
//! (every TCP stream is registered for it), `EPOLLRDHUP` once the peer closed, `EPOLLERR` on an
//! error. Such an event marks the source for good: from then on a short read of it clears
//! nothing, and only `WouldBlock` does — which a read after the EOF never says (it returns
//! the EOF again), so the bit stays set. An urgent byte or a FIN that comes after the last
//! event was taken brings an event of its own, which wakes the read however the last one
//! ended. (tokio keeps "read closed" the same way, but does not ask for `EPOLLPRI`: it can
//! stall on an urgent byte.) Ordinary clients send no urgent byte, and a FIN only at the
//! end: they keep the two-call echo. Pipes and stdin read until `WouldBlock` (a terminal
//! gives one line per read).
//!
//! One case is left, and it costs only its own connection. The kernel reports `EPOLLPRI`
//! only once it holds the urgent byte itself (`TCP_URG_VALID`). A misbehaving sender can
//! point its urgent pointer at a byte that already came, out of order: the kernel then
//! never learns the byte (`TCP_URG_NOTYET`, see `tcp_check_urg`), no `EPOLLPRI` comes, yet
//! the read still stops at the mark, and the bytes behind it wait for the next edge that
//! client brings — its next bytes, or its FIN. (Only asking the kernel how many bytes it
//! still holds after each read, `TCP_INQ`, would close that gap; it takes `recvmsg` instead
//! of `recv`, which cost 0.2–0.3 µs more per 64-byte message: see docs/benchmark.md.)
//!
//! tokio's `ScheduledIo` also keeps a *tick* with the bit, because its reactor runs on
//! another thread: an event may arrive between a task's `WouldBlock` and its clear, and the
//! clear must not erase it. Here events are handled only between two polls, on the loop's
//! own thread, so a clear can never erase a newer event — on one condition, which every
//! caller keeps: **the clear happens in the same poll as the system call that justified
//! it** — in `Registered::io`'s loop for a `WouldBlock`, and right after the `.await` of a
//! read or write that brought its proof (code after an `.await` that was `Ready` runs in the
//! same poll). A clear made after another `.await` could erase an event the loop handled
//! meanwhile, and the task would wait for an edge that had already come.
//!
//! A source is registered for reading (a TCP stream for `EPOLLPRI` too) when it is created, and for writing
//! only when a write first says `WouldBlock`: stdin registered for writability would wake
//! the loop each time a line is printed to the terminal.

use std::io;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use fdio::timeline::{self, Args};
use fdio::{Trace, interrupted};
use mio::event::Source;
use mio::{Events, Interest, Registry, Token};

/// The token of the `mio::Waker` that lets other threads interrupt `poll`.
pub(crate) const WAKE_TOKEN: Token = Token(usize::MAX);

/// Which way a task waits on a source.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    Read,
    Write,
}

/// One direction of one source: is it worth trying the call, and who waits if not.
#[derive(Default)]
struct Way {
    ready: bool,
    waiter: Option<Waker>,
}

/// What the reactor knows about one source.
struct IoState {
    read: Way,
    write: Way,
    /// Whether a read that comes back short proves the source empty: until an event said an
    /// urgent byte waits, or the peer closed, or an error (see the module's doc).
    short_read_drains: bool,
    /// What epoll watches this source for.
    interest: Interest,
}

impl IoState {
    fn way(&mut self, direction: Direction) -> &mut Way {
        match direction {
            Direction::Read => &mut self.read,
            Direction::Write => &mut self.write,
        }
    }
}

/// Owns the `Poll` and a slab of sources, indexed by token.
pub(crate) struct Reactor {
    poll: mio::Poll,
    events: Events,
    sources: Vec<Option<IoState>>,
    free: Vec<usize>,
    trace: Trace,
}

impl Reactor {
    pub(crate) fn new(trace: Trace) -> io::Result<Reactor> {
        Ok(Reactor {
            poll: mio::Poll::new()?,
            events: Events::with_capacity(1024),
            sources: Vec::new(),
            free: Vec::new(),
            trace,
        })
    }

    pub(crate) fn registry(&self) -> &Registry {
        self.poll.registry()
    }

    /// Registers `source` for reading (and, if `urgent`, for an urgent byte: see the module's
    /// doc) and returns its token. Both directions start ready: nothing is known yet, so the
    /// first call is simply tried.
    pub(crate) fn register(&mut self, source: &mut impl Source, urgent: bool) -> io::Result<Token> {
        let index = match self.free.pop() {
            Some(index) => index,
            None => {
                self.sources.push(None);
                self.sources.len() - 1
            }
        };
        let token = Token(index);
        let interest = if urgent {
            Interest::READABLE | Interest::PRIORITY
        } else {
            Interest::READABLE
        };
        if let Err(err) = self.registry().register(source, token, interest) {
            self.free.push(index);
            return Err(err);
        }
        let ready = || Way {
            ready: true,
            waiter: None,
        };
        self.sources[index] = Some(IoState {
            read: ready(),
            write: ready(),
            short_read_drains: true,
            interest,
        });
        Ok(token)
    }

    /// Forgets `source`; its waiters are dropped without being woken.
    pub(crate) fn deregister(&mut self, token: Token, source: &mut impl Source) {
        // Deregistering only fails if the fd is already gone: nothing to do about an error
        // here. Deregistering before the close matters: closing an fd removes it from epoll
        // only when it is the last descriptor of its open file (not after a `dup` or `fork`).
        let _ = self.registry().deregister(source);
        if let Some(slot) = self.sources.get_mut(token.0)
            && slot.take().is_some()
        {
            self.free.push(token.0);
        }
    }

    /// `Ready` if the call is worth trying for `direction`; otherwise leaves `cx`'s waker to
    /// be woken by the next event — only the latest waker is kept, since a task polled again
    /// may come with a different one — and returns `Pending`. Watching a direction for the
    /// first time registers it with epoll, which reports it at once if it is ready already.
    pub(crate) fn poll_ready(
        &mut self,
        token: Token,
        source: &mut impl Source,
        direction: Direction,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<()>> {
        let Some(Some(state)) = self.sources.get_mut(token.0) else {
            return Poll::Ready(Err(io::Error::other("this I/O source is not registered")));
        };
        if state.way(direction).ready {
            return Poll::Ready(Ok(()));
        }
        let (watched, wanted) = match direction {
            Direction::Read => (state.interest.is_readable(), Interest::READABLE),
            Direction::Write => (state.interest.is_writable(), Interest::WRITABLE),
        };
        if !watched {
            let interest = state.interest.add(wanted);
            if let Err(err) = self.poll.registry().reregister(source, token, interest) {
                return Poll::Ready(Err(err));
            }
            state.interest = interest;
            self.trace
                .say(|| format!("reactor: {token:?} now watched for {interest:?}"));
        }
        let way = state.way(direction);
        match &way.waiter {
            Some(old) if old.will_wake(cx.waker()) => {}
            _ => way.waiter = Some(cx.waker().clone()),
        }
        Poll::Pending
    }

    /// The kernel has nothing more for `direction` (it said `WouldBlock`, or a TCP write came
    /// back short): wait for the next event before trying again. Call it in the same poll as
    /// that system call (see the module's doc), or a newer event may be erased.
    pub(crate) fn clear_ready(&mut self, token: Token, direction: Direction) {
        if let Some(Some(state)) = self.sources.get_mut(token.0) {
            state.way(direction).ready = false;
        }
    }

    /// A TCP read came back short: it took all there was, so wait for the next event — unless
    /// an event said an urgent byte waits, the peer closed, or an error, since then the read
    /// may have stopped at the urgent byte's mark or left the EOF behind (see the module's
    /// doc). In the same poll as the read, like `clear_ready`.
    pub(crate) fn read_came_short(&mut self, token: Token) {
        if let Some(Some(state)) = self.sources.get_mut(token.0)
            && state.short_read_drains
        {
            state.read.ready = false;
        }
    }

    /// Waits for I/O events for at most `timeout` (`None`: no limit).
    pub(crate) fn wait(&mut self, timeout: Option<Duration>) -> io::Result<()> {
        self.trace
            .say(|| format!("reactor: waiting for I/O, timeout={}", describe(timeout)));
        let span = timeline::begin();
        let waited = match self.poll.poll(&mut self.events, timeout) {
            // A signal ended the wait early: no events, the loop goes round again.
            Err(err) if interrupted(&err) => {
                self.events.clear();
                Ok(())
            }
            result => result,
        };
        span.wait("epoll_wait", || self.timeline_args(timeout));
        waited
    }

    /// What `--timeline` shows of a wait: its timeout and what it found ready.
    fn timeline_args(&self, timeout: Option<Duration>) -> Args {
        let ready: Vec<String> = self
            .events
            .iter()
            .map(|event| match event.token() {
                WAKE_TOKEN => "a wake from another thread".to_string(),
                token if event.is_readable() && event.is_writable() => {
                    format!("{token:?} read write")
                }
                token if event.is_writable() => format!("{token:?} write"),
                token => format!("{token:?} read"),
            })
            .collect();
        Args::new()
            .text("timeout", describe(timeout))
            .number("events", ready.len() as i64)
            .text("ready", ready.join(", "))
    }

    /// Records what the last `wait` found ready, and wakes the tasks waiting for it.
    pub(crate) fn wake_ready(&mut self) {
        for event in self.events.iter() {
            let token = event.token();
            if token == WAKE_TOKEN {
                self.trace
                    .say(|| "reactor: woken by another thread".to_string());
                continue;
            }
            // A token deregistered while its events were queued: nobody waits any more.
            let Some(Some(state)) = self.sources.get_mut(token.0) else {
                continue;
            };
            // "closed" and "error" make the call worth trying too: it reports them.
            let failed = event.is_error();
            // An urgent byte, the peer's FIN or an error: from now on a short read may leave
            // something behind.
            if event.is_priority() || event.is_read_closed() || failed {
                state.short_read_drains = false;
            }
            if event.is_readable() || event.is_read_closed() || failed {
                state.read.ready = true;
                if let Some(waker) = state.read.waiter.take() {
                    self.trace
                        .say(|| format!("reactor: {token:?} readable → wake its reader"));
                    waker.wake();
                }
            }
            if event.is_writable() || event.is_write_closed() || failed {
                state.write.ready = true;
                if let Some(waker) = state.write.waiter.take() {
                    self.trace
                        .say(|| format!("reactor: {token:?} writable → wake its writer"));
                    waker.wake();
                }
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    /// A source is watched only for the directions someone waited on: a socket with room
    /// to write (always "writable") wakes nobody until a write has said `WouldBlock`.
    /// (stdin on a terminal registered for writing woke the loop after every trace line.)
    #[test]
    fn a_source_is_watched_only_for_reading_until_a_write_waits() {
        let mut reactor = Reactor::new(Trace::new(false)).unwrap();
        let (ours, mut theirs) = std::os::unix::net::UnixStream::pair().unwrap();
        ours.set_nonblocking(true).unwrap();
        let mut ours = mio::net::UnixStream::from_std(ours);
        let token = reactor.register(&mut ours, false).unwrap();
        reactor.wait(Some(Duration::from_millis(50))).unwrap();
        assert!(
            reactor.events.is_empty(),
            "an idle, writable socket woke the loop"
        );
        theirs.write_all(b"x").unwrap();
        reactor.wait(Some(Duration::from_secs(5))).unwrap();
        let event = reactor.events.iter().next().expect("no readable event");
        assert_eq!(event.token(), token);
        assert!(event.is_readable());
    }

    /// An event that arrives while nobody waits sets the readiness bit; a wait after it ends
    /// at once. A `WouldBlock` clears the bit, and the task waits for the next event.
    #[test]
    fn readiness_is_kept_until_an_operation_says_would_block() {
        let mut reactor = Reactor::new(Trace::new(false)).unwrap();
        let (ours, mut theirs) = std::os::unix::net::UnixStream::pair().unwrap();
        ours.set_nonblocking(true).unwrap();
        let mut ours = mio::net::UnixStream::from_std(ours);
        let token = reactor.register(&mut ours, false).unwrap();
        let mut cx = Context::from_waker(Waker::noop());
        let mut poll_read =
            |reactor: &mut Reactor| reactor.poll_ready(token, &mut ours, Direction::Read, &mut cx);
        reactor.clear_ready(token, Direction::Read); // as after a WouldBlock
        assert!(poll_read(&mut reactor).is_pending());
        theirs.write_all(b"x").unwrap();
        reactor.wait(Some(Duration::from_secs(5))).unwrap();
        reactor.wake_ready();
        assert!(matches!(poll_read(&mut reactor), Poll::Ready(Ok(()))));
        assert!(
            matches!(poll_read(&mut reactor), Poll::Ready(Ok(()))),
            "kept, not consumed"
        );
        reactor.clear_ready(token, Direction::Read);
        assert!(poll_read(&mut reactor).is_pending());
    }
}
