//! Waiting for readiness: the one place this lesson calls `select(2)` — or `poll(2)`.
//!
//! Both take "these fds, for reading; these, for writing", put the thread to sleep until at
//! least one is ready (or the timeout passes), and say which are ready. They differ in shape:
//!
//! - `select` takes two fixed-size bitmaps (`fd_set`) and overwrites them with the answer,
//!   so they are rebuilt before every call. A bitmap has `FD_SETSIZE` (1024) bits: an fd
//!   numbered 1024 or more cannot be watched at all (writing its bit would corrupt memory,
//!   which is why nix asserts).
//! - `poll` takes an array of `{fd, events}` and fills in `revents`: no limit on fd numbers.
//!
//! Both cost O(watched fds) per call, in the kernel and in our loop. Lesson 2's epoll keeps
//! the list in the kernel and returns only the ready fds.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, RawFd};
use std::time::Duration;

use fdio::{FdList, Trace};
use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::select::{FD_SETSIZE, FdSet, select};
use nix::sys::time::TimeVal;

/// The system call that waits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Select,
    Poll,
}

/// One fd and what we wait for on it.
pub struct Watch<'fd> {
    pub fd: BorrowedFd<'fd>,
    pub read: bool,
    pub write: bool,
}

/// One fd the kernel says is ready. `readable` also covers EOF and errors: the next `read`
/// will tell which.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ready {
    pub fd: RawFd,
    pub readable: bool,
    pub writable: bool,
}

impl Backend {
    /// The name the trace and the errors use.
    pub fn name(self) -> &'static str {
        match self {
            Backend::Select => "select",
            Backend::Poll => "poll",
        }
    }

    /// The first fd number this backend cannot watch, if there is one.
    pub fn fd_limit(self) -> Option<RawFd> {
        match self {
            Backend::Select => Some(FD_SETSIZE as RawFd),
            Backend::Poll => None,
        }
    }

    /// Sleeps until something in `watches` is ready or `timeout` passes (`None`: no timeout),
    /// and returns what is ready — nothing if the timeout passed or a signal woke us.
    pub fn wait(
        self,
        watches: &[Watch<'_>],
        timeout: Option<Duration>,
        trace: Trace,
    ) -> io::Result<Vec<Ready>> {
        trace.say(|| {
            let (read, write) = split(watches.iter().map(|w| (w.fd.as_raw_fd(), w.read, w.write)));
            let timeout = timeout.map_or("none".to_string(), |t| format!("{t:.1?}"));
            let (name, read, write) = (self.name(), FdList(&read), FdList(&write));
            format!("{name}: waiting on read={read} write={write} timeout={timeout}")
        });
        let result = match self {
            Backend::Select => wait_select(watches, timeout),
            Backend::Poll => wait_poll(watches, timeout),
        };
        let ready = match result {
            // A signal whose handler ran ends the wait early: the caller's loop simply builds
            // its lists again and waits again. Ctrl+Z then `fg` does not: with no handler
            // installed, Linux restarts `select` and `poll` (only `epoll_wait` and a few
            // others fail with EINTR then; see signal(7)).
            Err(Errno::EINTR) => Vec::new(),
            result => result?,
        };
        trace.say(|| {
            let (read, write) = split(ready.iter().map(|r| (r.fd, r.readable, r.writable)));
            let (name, read, write) = (self.name(), FdList(&read), FdList(&write));
            format!("{name}: ready read={read} write={write}")
        });
        Ok(ready)
    }
}

fn wait_select(watches: &[Watch<'_>], timeout: Option<Duration>) -> Result<Vec<Ready>, Errno> {
    let mut read_set = FdSet::new();
    let mut write_set = FdSet::new();
    for watch in watches {
        // The caller refuses such fds; never let a bad one reach the bitmap.
        if watch.fd.as_raw_fd() >= FD_SETSIZE as RawFd {
            return Err(Errno::EINVAL);
        }
        if watch.read {
            read_set.insert(watch.fd);
        }
        if watch.write {
            write_set.insert(watch.fd);
        }
    }
    let mut timeout = timeout.map(|t| TimeVal::new(t.as_secs() as _, t.subsec_micros() as _));
    // nfds = None: nix passes the highest fd in the sets + 1, as select(2) wants.
    select(None, &mut read_set, &mut write_set, None, timeout.as_mut())?;
    // The sets now hold only the ready fds: ask each watch whether its bit survived.
    Ok(watches
        .iter()
        .map(|watch| Ready {
            fd: watch.fd.as_raw_fd(),
            readable: watch.read && read_set.contains(watch.fd),
            writable: watch.write && write_set.contains(watch.fd),
        })
        .filter(|ready| ready.readable || ready.writable)
        .collect())
}

fn wait_poll(watches: &[Watch<'_>], timeout: Option<Duration>) -> Result<Vec<Ready>, Errno> {
    let mut poll_fds: Vec<PollFd<'_>> = watches
        .iter()
        .map(|watch| {
            let mut events = PollFlags::empty();
            events.set(PollFlags::POLLIN, watch.read);
            events.set(PollFlags::POLLOUT, watch.write);
            PollFd::new(watch.fd, events)
        })
        .collect();
    // poll counts in whole milliseconds: round up, or we would wake just before the deadline.
    let timeout = match timeout {
        None => PollTimeout::NONE,
        Some(t) => PollTimeout::try_from(t.as_micros().div_ceil(1000)).unwrap_or(PollTimeout::MAX),
    };
    poll(&mut poll_fds, timeout)?;
    // POLLHUP and POLLERR come whether asked for or not; report them as the readiness we
    // wait for, so the next read or write meets the EOF or the error and the loop closes it.
    let done = PollFlags::POLLHUP | PollFlags::POLLERR;
    Ok(watches
        .iter()
        .zip(&poll_fds)
        .map(|(watch, poll_fd)| {
            let revents = poll_fd.revents().unwrap_or(PollFlags::empty());
            Ready {
                fd: watch.fd.as_raw_fd(),
                readable: watch.read && revents.intersects(PollFlags::POLLIN | done),
                writable: watch.write && revents.intersects(PollFlags::POLLOUT | done),
            }
        })
        .filter(|ready| ready.readable || ready.writable)
        .collect())
}

/// Splits `(fd, read, write)` triples into the read list and the write list, for the trace.
fn split(fds: impl Iterator<Item = (RawFd, bool, bool)>) -> (Vec<RawFd>, Vec<RawFd>) {
    let (mut read, mut write) = (Vec::new(), Vec::new());
    for (fd, wants_read, wants_write) in fds {
        if wants_read {
            read.push(fd);
        }
        if wants_write {
            write.push(fd);
        }
    }
    (read, write)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::os::fd::AsFd;

    /// Both backends report a pipe readable only once something was written into it, and
    /// its write end writable at once; with nothing ready they return empty after the timeout.
    #[test]
    fn both_backends_report_readiness_of_a_pipe() {
        for backend in [Backend::Select, Backend::Poll] {
            let (reader, mut writer) = io::pipe().unwrap();
            let trace = Trace::new(false);
            let short = Some(Duration::from_millis(10));
            let read_watch = [Watch {
                fd: reader.as_fd(),
                read: true,
                write: false,
            }];
            assert_eq!(
                backend.wait(&read_watch, short, trace).unwrap(),
                [],
                "{backend:?}"
            );

            writer.write_all(b"x").unwrap();
            let ready = backend.wait(&read_watch, short, trace).unwrap();
            let expected = Ready {
                fd: reader.as_raw_fd(),
                readable: true,
                writable: false,
            };
            assert_eq!(ready, [expected], "{backend:?}");

            let write_watch = [Watch {
                fd: writer.as_fd(),
                read: false,
                write: true,
            }];
            let ready = backend.wait(&write_watch, short, trace).unwrap();
            assert!(
                ready.len() == 1 && ready[0].writable,
                "{backend:?}: {ready:?}"
            );
        }
    }
}
