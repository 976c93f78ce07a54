//! The reactor: epoll, and for each fd which green thread is parked on it.
//!
//! This is lesson 5's reactor with green threads where lesson 5 had wakers. I/O is
//! optimistic: a green thread tries the system call; only if it says `WouldBlock` does it
//! leave itself here as one of the fd's *waiters* and switch away. When `epoll_wait` reports
//! the fd, the scheduler makes every waiter of that direction runnable again, and each tries
//! its call again. Usually there is one; there are more when green threads share a stream
//! (`Read for &TcpStream`, as std allows): the first takes the bytes, the others find
//! `WouldBlock` and park again. Keeping only the latest would forget the others — a reader
//! that sleeps for ever beside bytes meant for it. (tokio's `ScheduledIo` keeps such a list.)
//!
//! Every fd is registered once, **edge-triggered** (`EPOLLET`), as mio does: epoll reports a
//! *change* to "ready" once. So what it said is kept in a **readiness bit** per direction,
//! set by an event (whether a green thread waits or not) and at registration (nothing is known
//! yet: try the call), and cleared only by a call that proved the kernel has nothing more: a
//! `WouldBlock`, a TCP write that came back short (the send buffer is full), or a TCP read
//! that came back short. A green thread parks only while the bit is clear.
//!
//! A TCP read copies until the buffer is full or the socket has nothing more
//! (`tcp_recvmsg`), so a short read found the socket empty — as tokio takes it, and it saves
//! the read that would say `WouldBlock` after each echoed message. Except twice, as in
//! lesson 5, where the read leaves something behind and no new edge will come for it: it
//! stops at an **urgent byte**'s mark once it has copied anything, with ordinary bytes
//! already queued behind it; and the read that takes the last bytes takes the peer's **FIN**
//! (or meets an error) with them. epoll tells both — `EPOLLPRI` while an urgent byte waits
//! (every fd is registered for it), `EPOLLRDHUP`, `EPOLLHUP`, `EPOLLERR` — and such an event
//! marks the fd for good: from then on a short read of it clears nothing, and only
//! `WouldBlock` does, which a read after the EOF or the error never says. One gap is left,
//! and it costs only its own connection: the kernel reports `EPOLLPRI` only once it holds
//! the urgent byte itself, and a misbehaving sender can point its urgent pointer at a byte
//! that already came, out of order (`TCP_URG_NOTYET`, see `tcp_check_urg`): no `EPOLLPRI`,
//! yet the read stops at the mark, and the bytes behind it wait for that client's next edge.
//!
//! No event can slip in between the call that cleared a bit and the park: events are read
//! only by the scheduler, and the scheduler runs only when the green thread has switched
//! away. (Lesson 7's reactor, on its own thread, needs a tick per bit for that.)

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, RawFd};
use std::rc::Rc;
use std::time::Duration;

use fdio::Trace;
use fdio::timeline::{self, Args};
use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout};

use crate::runtime::Green;

/// At most this many events per `epoll_wait`; any more wait for the next call.
const EVENTS_PER_WAIT: usize = 1024;

/// Which way a green thread waits on an fd.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    Read,
    Write,
}

/// What an fd is watched for: sockets both ways; pipes and stdin only for reading (a terminal
/// watched for writing would wake the loop each time a line is printed to it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Interest {
    Read,
    ReadWrite,
}

/// One direction of one fd: is the call worth trying, and who is parked until it is.
struct Way {
    ready: bool,
    waiters: Vec<Rc<Green>>,
}

impl Way {
    /// Registration: nothing is known yet, so the call is worth trying.
    fn new() -> Way {
        Way {
            ready: true,
            waiters: Vec::new(),
        }
    }
}

/// What the reactor knows about one registered fd.
struct Source {
    fd: RawFd,
    read: Way,
    write: Way,
    /// Whether a read that comes back short proves the fd empty: until an event said an
    /// urgent byte waits, or the peer closed, or an error (see the module's doc).
    short_read_drains: bool,
}

impl Source {
    fn way(&mut self, direction: Direction) -> &mut Way {
        match direction {
            Direction::Read => &mut self.read,
            Direction::Write => &mut self.write,
        }
    }
}

/// An epoll instance and a slab of the fds it watches; an fd's token is its index.
pub(crate) struct Reactor {
    epoll: Epoll,
    events: Vec<EpollEvent>,
    sources: Vec<Option<Source>>,
    free: Vec<usize>,
    /// How many green threads are parked here: none, with no timer and nothing runnable,
    /// means no one will ever run again (a deadlock).
    parked: usize,
    trace: Trace,
}

impl Reactor {
    pub(crate) fn new(trace: Trace) -> io::Result<Reactor> {
        Ok(Reactor {
            // CLOEXEC: a program we might start must not inherit our epoll instance.
            epoll: Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC)?,
            events: vec![EpollEvent::empty(); EVENTS_PER_WAIT],
            sources: Vec::new(),
            free: Vec::new(),
            parked: 0,
            trace,
        })
    }

    /// Watches `fd` (`epoll_ctl(ADD)`) and returns its token. Both directions start ready.
    /// `EPERM` means epoll refuses this kind of fd: a regular file, which is always ready.
    pub(crate) fn register(&mut self, fd: BorrowedFd<'_>, interest: Interest) -> io::Result<usize> {
        let token = self.free.pop().unwrap_or(self.sources.len());
        // EPOLLPRI: an urgent byte waits (see the module's doc).
        let mut flags = EpollFlags::EPOLLIN
            | EpollFlags::EPOLLPRI
            | EpollFlags::EPOLLRDHUP
            | EpollFlags::EPOLLET;
        if interest == Interest::ReadWrite {
            flags |= EpollFlags::EPOLLOUT;
        }
        if let Err(err) = self.epoll.add(fd, EpollEvent::new(flags, token as u64)) {
            self.free.push(token);
            return Err(err.into());
        }
        let source = Source {
            fd: fd.as_raw_fd(),
            read: Way::new(),
            write: Way::new(),
            short_read_drains: true,
        };
        match self.sources.get_mut(token) {
            Some(slot) => *slot = Some(source),
            None => self.sources.push(Some(source)),
        }
        Ok(token)
    }

    /// Stops watching `token`'s fd (`epoll_ctl(DEL)`), before its owner closes it: epoll
    /// forgets a closed fd only when it was the last descriptor of its open file.
    pub(crate) fn deregister(&mut self, token: usize, fd: BorrowedFd<'_>) {
        // Only fails if the fd is not watched: nothing to undo then.
        let _ = self.epoll.delete(fd);
        if let Some(slot) = self.sources.get_mut(token)
            && let Some(source) = slot.take()
        {
            self.parked -= source.read.waiters.len() + source.write.waiters.len();
            self.free.push(token);
        }
    }

    /// Whether the call is worth trying for `direction`.
    pub(crate) fn is_ready(&mut self, token: usize, direction: Direction) -> bool {
        match self.sources.get_mut(token).and_then(Option::as_mut) {
            Some(source) => source.way(direction).ready,
            None => true, // not watched: let the call itself say what is wrong
        }
    }

    /// The kernel has nothing more for `direction` (`WouldBlock`, or a short write):
    /// park until the next event before trying again.
    pub(crate) fn clear_ready(&mut self, token: usize, direction: Direction) {
        if let Some(Some(source)) = self.sources.get_mut(token) {
            source.way(direction).ready = false;
        }
    }

    /// A TCP read came back short: it took all there was, so park at the next read until
    /// the next event — unless an event said an urgent byte waits, the peer closed, or an
    /// error: then the read may have stopped at the urgent byte's mark or left the EOF
    /// behind (see the module's doc), and the bit stays set.
    pub(crate) fn read_came_short(&mut self, token: usize) {
        if let Some(Some(source)) = self.sources.get_mut(token)
            && source.short_read_drains
        {
            source.read.ready = false;
        }
    }

    /// Leaves `green` among the waiters of `token`'s `direction`.
    pub(crate) fn add_waiter(&mut self, token: usize, direction: Direction, green: Rc<Green>) {
        if let Some(Some(source)) = self.sources.get_mut(token) {
            source.way(direction).waiters.push(green);
            self.parked += 1;
        }
    }

    /// Removes `green` from the waiters of `token`'s `direction`, if it is still there.
    pub(crate) fn forget_waiter(&mut self, token: usize, direction: Direction, green: &Rc<Green>) {
        if let Some(Some(source)) = self.sources.get_mut(token) {
            let waiters = &mut source.way(direction).waiters;
            if let Some(index) = waiters.iter().position(|waiter| Rc::ptr_eq(waiter, green)) {
                waiters.swap_remove(index);
                self.parked -= 1;
            }
        }
    }

    /// Takes the waiters of `token`'s `direction`, for the runtime to wake: a deadline changed.
    pub(crate) fn take_waiters(&mut self, token: usize, direction: Direction) -> Vec<Rc<Green>> {
        let Some(Some(source)) = self.sources.get_mut(token) else {
            return Vec::new();
        };
        let waiters = std::mem::take(&mut source.way(direction).waiters);
        self.parked -= waiters.len();
        waiters
    }

    /// Whether `green` is among the waiters of some fd.
    pub(crate) fn is_waiting(&self, green: &Rc<Green>) -> bool {
        let waits_on = |way: &Way| way.waiters.iter().any(|waiter| Rc::ptr_eq(waiter, green));
        (self.sources.iter().flatten())
            .any(|source| waits_on(&source.read) || waits_on(&source.write))
    }

    /// How many green threads are parked on an fd.
    pub(crate) fn parked(&self) -> usize {
        self.parked
    }

    /// Waits for events for at most `timeout` (`None`: no limit), records them, and puts
    /// every green thread parked on a direction that became ready into `woken`.
    pub(crate) fn wait(
        &mut self,
        timeout: Option<Duration>,
        woken: &mut Vec<Rc<Green>>,
    ) -> io::Result<()> {
        self.trace.say(|| {
            format!(
                "reactor: epoll_wait, {} parked on I/O, timeout={}",
                self.parked,
                describe(timeout)
            )
        });
        let span = timeline::begin();
        let ready = match self.epoll.wait(&mut self.events, epoll_timeout(timeout)) {
            Ok(ready) => ready,
            // A signal ended the wait early (its handler wrote to the self-pipe): no events.
            Err(nix::errno::Errno::EINTR) => 0,
            Err(err) => return Err(err.into()),
        };
        span.wait("epoll_wait", || {
            Args::new()
                .text("timeout", describe(timeout))
                .number("events", ready as i64)
        });
        for event in &self.events[..ready] {
            let token = event.data() as usize;
            // An fd deregistered while its event was on the way: no one waits any more.
            let Some(Some(source)) = self.sources.get_mut(token) else {
                continue;
            };
            let flags = event.events();
            let closed = EpollFlags::EPOLLRDHUP | EpollFlags::EPOLLHUP | EpollFlags::EPOLLERR;
            let failed = EpollFlags::EPOLLHUP | EpollFlags::EPOLLERR;
            // An urgent byte, the peer's FIN or an error: from now on a short read may leave
            // something behind.
            if flags.intersects(EpollFlags::EPOLLPRI | closed) {
                source.short_read_drains = false;
            }
            for (direction, ready) in [
                (
                    Direction::Read,
                    flags.intersects(EpollFlags::EPOLLIN | EpollFlags::EPOLLPRI | closed),
                ),
                (
                    Direction::Write,
                    flags.intersects(EpollFlags::EPOLLOUT | failed),
                ),
            ] {
                if !ready {
                    continue;
                }
                let fd = source.fd;
                let way = source.way(direction);
                way.ready = true;
                for green in way.waiters.drain(..) {
                    self.parked -= 1;
                    let now = match direction {
                        Direction::Read => "readable",
                        Direction::Write => "writable",
                    };
                    self.trace
                        .say(|| format!("reactor: fd {fd} {now} → wake {green}"));
                    woken.push(green);
                }
            }
        }
        Ok(())
    }
}

/// `epoll_wait`'s timeout is in whole milliseconds: round up, or a timer due in 0.4 ms
/// would make the loop spin with a timeout of 0 until it is due.
fn epoll_timeout(timeout: Option<Duration>) -> EpollTimeout {
    match timeout {
        None => EpollTimeout::NONE,
        Some(timeout) => {
            let millis = timeout.as_nanos().div_ceil(1_000_000);
            EpollTimeout::try_from(millis).unwrap_or(EpollTimeout::MAX)
        }
    }
}

/// A timeout as the trace prints it.
fn describe(timeout: Option<Duration>) -> String {
    match timeout {
        None => "none".to_string(),
        Some(Duration::ZERO) => "0 (green threads are runnable: just look)".to_string(),
        Some(timeout) => format!("{timeout:.1?}"),
    }
}
