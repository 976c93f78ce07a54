//! stdin and pipes that look blocking: `Read` on a green thread parks only that green thread.
//!
//! A pipe is ours: it is made non-blocking and read like a socket (see `net`). stdin is shared
//! with the shell, so it stays blocking (making it non-blocking would change it for whoever
//! shares it: the shell we return to). Instead, before each read we ask the kernel with a
//! zero-timeout `poll` whether a read would return at once, and park on epoll if not. epoll
//! refuses a regular file (`cargo run … < file`): such a stdin is always ready, so it is read
//! directly, each read spending the budget like any I/O (or a big file would hold the OS
//! thread until its end).

use std::io::{self, Read};
use std::os::fd::OwnedFd;

use fdio::{epoll_refuses, epoll_refuses_line, read_fd, readable_now, set_nonblocking};

use crate::net::Registered;
use crate::reactor::{Direction, Interest};
use crate::runtime::spend_budget;

/// The read end of a pipe.
pub struct PipeReader {
    inner: Registered<OwnedFd>,
}

impl PipeReader {
    /// Takes over the read end of a pipe and makes it non-blocking.
    pub fn new(pipe: io::PipeReader) -> io::Result<PipeReader> {
        let pipe = OwnedFd::from(pipe);
        set_nonblocking(&pipe)?;
        Ok(PipeReader {
            inner: Registered::new(pipe, Interest::Read)?,
        })
    }
}

impl Read for PipeReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.inner.io(Direction::Read, |pipe| read_fd(pipe, buf))
    }
}

/// The process's stdin.
pub struct Stdin {
    /// `None`: epoll refused it (a regular file): read it directly.
    watched: Option<Registered<io::Stdin>>,
}

/// This process's stdin, for reads that park. If epoll refuses it, one line says so.
pub fn stdin() -> io::Result<Stdin> {
    let watched = match Registered::new(io::stdin(), Interest::Read) {
        Ok(registered) => Some(registered),
        Err(err) if epoll_refuses(&err) => {
            fdio::log!("{}", epoll_refuses_line("green-threads", 0, "reading"));
            None
        }
        Err(err) => return Err(err),
    };
    Ok(Stdin { watched })
}

impl Read for Stdin {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match &self.watched {
            Some(stdin) => stdin.io(Direction::Read, |stdin| {
                // "Not readable now" is a blocking fd's `WouldBlock`.
                if !readable_now(stdin)? {
                    return Err(io::ErrorKind::WouldBlock.into());
                }
                read_fd(stdin, buf)
            }),
            None => {
                spend_budget();
                read_fd(io::stdin(), buf)
            }
        }
    }
}
