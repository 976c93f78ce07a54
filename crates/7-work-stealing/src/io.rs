//! Async reads of stdin and pipes: lesson 5's, made `Send` (the reader holds the shared
//! reactor), each read spending the budget of the worker it runs on.
//!
//! A pipe is ours: it is made non-blocking and read optimistically, like a socket. stdin is
//! shared with the shell, so it stays blocking; before each read we ask the kernel (a
//! zero-timeout `poll`) whether a read would return at once, and wait for the reactor if not.
//! epoll refuses regular files (`EPERM`); such a stdin never says `WouldBlock`, so it is read
//! directly (each read still spends the task's budget, like every I/O operation). A read that
//! misses the page cache still waits for the disk, on a worker's thread, and readiness cannot
//! say so: that is why tokio and asyncio read files on threads (and why io_uring exists).

use std::future::poll_fn;
use std::io::{self, PipeReader};
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::task::Poll;

use fdio::{epoll_refuses, epoll_refuses_line, read_fd, readable_now, set_nonblocking};
use mio::unix::SourceFd;

use crate::budget;
use crate::net::Registered;
use crate::reactor::Direction;

/// An fd as a mio source (mio's `SourceFd` borrows; this owns the number).
pub(crate) struct Fd(RawFd);

impl mio::event::Source for Fd {
    fn register(
        &mut self,
        registry: &mio::Registry,
        token: mio::Token,
        interests: mio::Interest,
    ) -> io::Result<()> {
        SourceFd(&self.0).register(registry, token, interests)
    }
    fn reregister(
        &mut self,
        registry: &mio::Registry,
        token: mio::Token,
        interests: mio::Interest,
    ) -> io::Result<()> {
        SourceFd(&self.0).reregister(registry, token, interests)
    }
    fn deregister(&mut self, registry: &mio::Registry) -> io::Result<()> {
        SourceFd(&self.0).deregister(registry)
    }
}

/// Where the bytes come from, and how we learn they are there.
enum Input {
    /// A non-blocking pipe: read until `WouldBlock`, then wait.
    ///
    /// Fields drop in the order written: `registration` leaves epoll while `pipe` is still
    /// open. The other way round the removal fails (`EBADF`), and epoll, which forgets a
    /// file only when its last descriptor closes, would watch it on while a `dup` of it
    /// lives (or a child after `fork`).
    Pipe {
        registration: Registered<Fd>,
        pipe: OwnedFd,
    },
    /// A blocking stdin epoll accepted: check `readable_now`, then read or wait.
    BlockingStdin { registration: Registered<Fd> },
    /// A stdin epoll refused (a regular file, `/dev/null`): reads never say `WouldBlock`.
    PlainFile,
}

/// An async reader of stdin or of a pipe.
pub struct AsyncReader {
    input: Input,
}

/// The process's stdin, for async reads. If epoll refuses it, one line on stderr says so.
pub fn stdin() -> io::Result<AsyncReader> {
    let stdin = io::stdin().as_raw_fd();
    let input = match Registered::new(Fd(stdin), false) {
        Ok(registration) => Input::BlockingStdin { registration },
        Err(err) if epoll_refuses(&err) => {
            fdio::log!("{}", epoll_refuses_line("work-stealing", stdin, "reading"));
            Input::PlainFile
        }
        Err(err) => return Err(err),
    };
    Ok(AsyncReader { input })
}

impl AsyncReader {
    /// The read end of a pipe, made non-blocking.
    pub fn pipe(pipe: PipeReader) -> io::Result<AsyncReader> {
        let pipe = OwnedFd::from(pipe);
        set_nonblocking(&pipe)?;
        let registration = Registered::new(Fd(pipe.as_raw_fd()), false)?;
        Ok(AsyncReader {
            input: Input::Pipe { registration, pipe },
        })
    }

    /// The pipe again, no longer watched by the reactor (still non-blocking); `None` for
    /// stdin.
    pub fn into_pipe(self) -> Option<PipeReader> {
        match self.input {
            Input::Pipe { registration, pipe } => {
                drop(registration); // deregistered while its fd is still open
                Some(PipeReader::from(pipe))
            }
            Input::BlockingStdin { .. } | Input::PlainFile => None,
        }
    }

    /// Reads what is there (at least one byte), or `Ok(0)` at EOF.
    pub async fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match &mut self.input {
            Input::Pipe { pipe, registration } => {
                let fd = pipe.as_fd();
                poll_fn(|cx| registration.io(cx, Direction::Read, |_| read_fd(fd, buf)))
                    .await
                    .map(|done| done.result)
            }
            Input::BlockingStdin { registration } => {
                poll_fn(|cx| {
                    registration.io(cx, Direction::Read, |_| {
                        // "Not readable now" is our WouldBlock: wait for the reactor.
                        if !readable_now(io::stdin())? {
                            return Err(io::ErrorKind::WouldBlock.into());
                        }
                        read_fd(io::stdin(), buf)
                    })
                })
                .await
                .map(|done| done.result)
            }
            // Never `Pending` for lack of bytes: only the budget can make it wait. Without it,
            // a loop reading a big file would never give the other tasks — or the reactor,
            // which learns that the pipe has a line — a turn until the file's end.
            Input::PlainFile => {
                poll_fn(|cx| {
                    if budget::spend(cx) {
                        Poll::Ready(read_fd(io::stdin(), &mut *buf))
                    } else {
                        Poll::Pending
                    }
                })
                .await
            }
        }
    }
}
