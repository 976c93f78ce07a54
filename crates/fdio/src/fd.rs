//! File descriptors: the non-blocking switch, the fd limit, and the errors a loop tells apart.

use std::io;
use std::os::fd::{AsFd, BorrowedFd, RawFd};

use nix::fcntl::{FcntlArg, OFlag, fcntl};
use nix::sys::resource::{Resource, getrlimit, setrlimit};

/// Switches `fd` to non-blocking mode: from now on a read or write that would have to wait
/// returns `WouldBlock` at once instead. Note that the flag belongs to the open file
/// *description*, which other processes may share: never do this to an inherited stdin,
/// or the shell you return to finds its terminal non-blocking.
pub fn set_nonblocking(fd: impl AsFd) -> io::Result<()> {
    let flags = OFlag::from_bits_retain(fcntl(fd.as_fd(), FcntlArg::F_GETFL)?);
    fcntl(fd.as_fd(), FcntlArg::F_SETFL(flags | OFlag::O_NONBLOCK))?;
    Ok(())
}

/// One `read(2)` straight on `fd`, retried if a signal interrupts it; `Ok(0)` means EOF.
///
/// For stdin, use this rather than `std::io::stdin()`: `Stdin` keeps its own 8 KiB buffer,
/// and bytes already pulled into a buffer the kernel does not know about never make
/// `select` or `poll` say "readable" again.
pub fn read_fd(fd: impl AsFd, buf: &mut [u8]) -> io::Result<usize> {
    loop {
        match nix::unistd::read(fd.as_fd(), buf) {
            Err(nix::errno::Errno::EINTR) => continue,
            result => return Ok(result?),
        }
    }
}

/// A blocking read of `fd`, even if it is in non-blocking mode. An inherited stdin can be:
/// `O_NONBLOCK` belongs to the open file *description*, shared with whoever gave it to us,
/// and a program before us may have left it set. Then a read with nothing to read says
/// `WouldBlock` instead of waiting; so wait in `poll(2)` until it is readable, and read again.
pub fn read_blocking(fd: impl AsFd, buf: &mut [u8]) -> io::Result<usize> {
    loop {
        match read_fd(fd.as_fd(), buf) {
            Err(err) if would_block(&err) => {
                poll_readable(fd.as_fd(), nix::poll::PollTimeout::NONE)?;
            }
            result => return result,
        }
    }
}

/// Raises this process's soft limit on open files to its hard limit and returns the new
/// soft limit. The default soft limit (often 1024) is far below what a server holding
/// 10,000 connections needs.
pub fn raise_fd_limit() -> io::Result<u64> {
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE)?;
    if soft < hard {
        setrlimit(Resource::RLIMIT_NOFILE, hard, hard)?;
    }
    Ok(hard)
}

/// The call would have had to wait: try again when the fd is ready.
pub fn would_block(err: &io::Error) -> bool {
    err.kind() == io::ErrorKind::WouldBlock
}

/// A signal arrived during the call: simply make the call again.
pub fn interrupted(err: &io::Error) -> bool {
    err.kind() == io::ErrorKind::Interrupted
}

/// A write failed because nobody reads the other end any more: `client … | head -1` got its
/// line and exited. For a program printing to stdout that is a normal way to end, quietly.
/// (Rust ignores `SIGPIPE`, so the write fails with `EPIPE` instead of the signal killing us.)
pub fn reader_went_away(err: &io::Error) -> bool {
    err.kind() == io::ErrorKind::BrokenPipe
}

/// Lets a write to a pipe nobody reads end this program on the spot, quietly, as it ends
/// `yes` in `yes | head -1`: the kernel's default for `SIGPIPE`. Rust's runtime ignores
/// `SIGPIPE`, so such a write fails with `EPIPE` instead — and `println!` panics on it.
///
/// For the examples, which print and have nothing left to do once nobody reads: one call at
/// the top of `main`, and `println!` stays as simple as Python's `print`. Never for a
/// server or a lesson program: there a write to a closed socket or log is an error to
/// handle (one client gone is not the end of the server), see [`reader_went_away`].
pub fn let_sigpipe_end_the_program() {
    // Safety: `SigDfl` installs no handler of ours, so no code can run at signal time.
    // signal(2) fails only for an invalid signal number, and SIGPIPE is valid: nothing to
    // report.
    let _ = unsafe {
        nix::sys::signal::signal(
            nix::sys::signal::Signal::SIGPIPE,
            nix::sys::signal::SigHandler::SigDfl,
        )
    };
}

/// `register` failed because epoll refuses this kind of fd (`EPERM`): regular files,
/// directories and `/dev/null` are "always ready" and epoll will not watch them. Such an fd
/// never says `WouldBlock`, so a loop can simply read it whenever it likes. A read of a file
/// can still wait for the disk (a page-cache miss), and no readiness API can say so: that is
/// why tokio and asyncio read files on threads, and why completion APIs (io_uring) exist.
pub fn epoll_refuses(err: &io::Error) -> bool {
    err.raw_os_error() == Some(nix::libc::EPERM)
}

/// The one stderr line every epoll lesson prints when epoll refuses `fd` (see
/// [`epoll_refuses`]), so that the lessons say it in the same words:
/// `selector: epoll refuses stdin (a regular file, a directory or /dev/null): reading it
/// without waiting`. `doing` is `"reading"` or `"writing"`. In practice only stdin can be
/// such an fd (the lessons' own fds are pipes and sockets), so fd 0 is named `stdin`.
pub fn epoll_refuses_line(lesson: &str, fd: RawFd, doing: &str) -> String {
    let what = match fd {
        0 => "stdin".to_string(),
        fd => format!("fd {fd}"),
    };
    format!(
        "{lesson}: epoll refuses {what} (a regular file, a directory or /dev/null): {doing} it without waiting"
    )
}

/// Asks the kernel, without waiting, whether a read of `fd` would return at once (data, EOF
/// or an error). An edge-triggered loop must read until nothing is left; on a *blocking*
/// fd such as an inherited stdin, "until `WouldBlock`" would block instead, so it asks this
/// before each further read.
pub fn readable_now(fd: impl AsFd) -> io::Result<bool> {
    poll_readable(fd.as_fd(), nix::poll::PollTimeout::ZERO)
}

/// `poll(2)` on one fd for reading: whether it became readable within `timeout`.
fn poll_readable(fd: BorrowedFd<'_>, timeout: nix::poll::PollTimeout) -> io::Result<bool> {
    use nix::poll::{PollFd, PollFlags, poll};
    let mut poll_fd = [PollFd::new(fd, PollFlags::POLLIN)];
    loop {
        match poll(&mut poll_fd, timeout) {
            Ok(ready) => return Ok(ready > 0),
            Err(nix::errno::Errno::EINTR) => continue,
            Err(err) => return Err(err.into()),
        }
    }
}

/// `accept` failed because this process (`EMFILE`) or the whole system (`ENFILE`) has no
/// file descriptor left. The pending connection stays in the backlog, so the listener stays
/// readable: a loop that simply retries spins the CPU. Stop accepting for a moment instead.
pub fn out_of_fds(err: &io::Error) -> bool {
    matches!(err.raw_os_error(), Some(code) if code == nix::libc::EMFILE || code == nix::libc::ENFILE)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    /// A fresh pipe blocks on read; after `set_nonblocking` an empty read says `WouldBlock`.
    #[test]
    fn nonblocking_read_of_empty_pipe_would_block() {
        let (mut reader, _writer) = io::pipe().unwrap();
        set_nonblocking(&reader).unwrap();
        let err = reader.read(&mut [0; 8]).unwrap_err();
        assert!(would_block(&err), "{err}");
    }

    /// The refusal line names fd 0 `stdin` and any other fd by number, in the same words.
    #[test]
    fn epoll_refuses_line_names_stdin() {
        assert_eq!(
            epoll_refuses_line("selector", 0, "reading"),
            "selector: epoll refuses stdin (a regular file, a directory or /dev/null): reading it without waiting"
        );
        assert!(epoll_refuses_line("generators", 7, "writing").contains(" fd 7 ("));
    }

    /// `EMFILE` and `ENFILE` are recognised as running out of fds; other errors are not.
    #[test]
    fn out_of_fds_matches_emfile_and_enfile_only() {
        assert!(out_of_fds(&io::Error::from_raw_os_error(nix::libc::EMFILE)));
        assert!(out_of_fds(&io::Error::from_raw_os_error(nix::libc::ENFILE)));
        assert!(!out_of_fds(&io::Error::from_raw_os_error(
            nix::libc::ECONNABORTED
        )));
    }

    /// Writing into a pipe whose reader is gone fails with an error `reader_went_away`
    /// recognises; other write errors are not that.
    #[test]
    fn reader_went_away_is_a_write_to_a_closed_pipe() {
        use std::io::Write;
        let (reader, mut writer) = io::pipe().unwrap();
        drop(reader);
        let err = writer.write_all(b"anyone there?").unwrap_err();
        assert!(reader_went_away(&err), "{err}");
        let full = io::Error::from_raw_os_error(nix::libc::ENOSPC);
        assert!(!reader_went_away(&full));
    }

    /// `readable_now` is false on an empty pipe, true once a byte is in it, and true at EOF.
    #[test]
    fn readable_now_tells_without_blocking() {
        use std::io::Write;
        let (reader, mut writer) = io::pipe().unwrap();
        assert!(!readable_now(&reader).unwrap());
        writer.write_all(b"x").unwrap();
        assert!(readable_now(&reader).unwrap());
        drop(writer);
        assert!(readable_now(&reader).unwrap());
    }

    /// `read_blocking` on a non-blocking pipe waits for the bytes instead of failing with
    /// `WouldBlock`.
    #[test]
    fn read_blocking_waits_on_a_nonblocking_fd() {
        use std::io::Write;
        let (reader, mut writer) = io::pipe().unwrap();
        set_nonblocking(&reader).unwrap();
        let late_writer = std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(50));
            writer.write_all(b"late").unwrap();
        });
        let mut buf = [0; 8];
        let n = read_blocking(&reader, &mut buf).unwrap();
        assert_eq!(&buf[..n], b"late");
        late_writer.join().unwrap();
    }

    /// The soft fd limit ends up equal to the hard limit.
    #[test]
    fn fd_limit_is_raised_to_the_hard_limit() {
        let raised = raise_fd_limit().unwrap();
        let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
        assert_eq!((soft, hard), (raised, raised));
    }
}
