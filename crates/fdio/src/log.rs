//! One line on stderr that never takes the program down, and never stops it.
//!
//! `eprintln!` panics when stderr cannot take the line: a closed pipe
//! (`server 2>&1 | head -1`, then a client connects), a full disk. And a plain `write` to a
//! pipe that is full waits until its reader reads: `server 2>&1 | less` with nobody
//! scrolling, a terminal paused with Ctrl+S — the whole loop stops there, signals included.
//! A server must serve on whatever happens to its log, so every lesson logs with
//! [`log!`](crate::log!) instead: the line is formatted first, `poll` asks whether stderr can
//! take more right now, and it is written with one `write`, so lines from several threads
//! never mix. A line stderr refuses, or has no room for, is dropped.

use std::fmt;
use std::io::{self, Write};
use std::os::fd::AsFd;

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};

/// Writes one line to stderr, as `eprintln!` does, but drops it if stderr refuses it or is
/// full.
///
/// ```
/// fdio::log!("connection from {}", "127.0.0.1:40212");
/// ```
#[macro_export]
macro_rules! log {
    ($($arg:tt)*) => {
        $crate::log::line(::std::format_args!($($arg)*))
    };
}

/// What [`log!`](crate::log!) calls: formats `args` and a newline; writes them with one
/// `write_all` if stderr has room now.
///
/// "Room" is what `poll(2)` calls `POLLOUT`: a file always has it; a pipe has it while one of
/// its buffers (a page each) is free, and a line of up to `PIPE_BUF` (4,096) bytes then goes
/// in at once, whole (pipe(7)); a terminal has it while its output buffer is not full. So a
/// stalled reader costs us lines, never time. (A longer line, or another process writing to
/// the same pipe between our `poll` and our `write`, can still wait: log lines are short and
/// our own threads take turns under stderr's lock.)
pub fn line(args: fmt::Arguments<'_>) {
    let mut text = args.to_string();
    text.push('\n');
    let mut stderr = io::stderr().lock();
    if has_room(&stderr) {
        // Dropped on error: there is nowhere left to report it.
        let _ = stderr.write_all(text.as_bytes());
    }
}

/// Whether `fd` can take a write now without waiting: `poll` with a zero timeout. An error
/// (a closed stderr, say) answers yes: the write then fails, and the line is dropped.
fn has_room(fd: &impl AsFd) -> bool {
    let mut fds = [PollFd::new(fd.as_fd(), PollFlags::POLLOUT)];
    match poll(&mut fds, PollTimeout::ZERO) {
        Ok(0) => false,
        Ok(_) => fds[0].revents().is_none_or(|revents| !revents.is_empty()),
        Err(_) => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A pipe whose reader never reads says "no room" once full, and before that, "room":
    /// what lets `log!` drop a line instead of waiting for ever.
    #[test]
    fn a_full_pipe_has_no_room() {
        let (reader, mut writer) = io::pipe().expect("pipe");
        assert!(has_room(&writer), "an empty pipe has room");
        nix::fcntl::fcntl(
            &writer,
            nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK),
        )
        .expect("nonblocking, to fill it");
        let page = [b'x'; 4096];
        let mut filled = 0;
        while writer.write(&page).is_ok() {
            filled += 1;
            assert!(filled < 100_000, "the pipe never filled");
        }
        assert!(!has_room(&writer), "a full pipe has no room");
        drop(reader);
    }
}
