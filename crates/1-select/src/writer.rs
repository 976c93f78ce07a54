//! The writer program with `select`: stdin and the pipe are watched together, so each line
//! is written the moment it arrives, whichever source it comes from.

use std::io;
use std::os::fd::{AsFd, AsRawFd};

use fdio::{Source, Trace, WriterArgs, WriterSession, read_fd, set_nonblocking, would_block};

use crate::wait::{Backend, Watch};

/// Runs until EOF on stdin (Ctrl+D), then until the pipe is drained.
pub fn run(args: &WriterArgs, backend: Backend) -> io::Result<()> {
    let trace = Trace::new(args.trace);
    let (mut session, pipe) = WriterSession::start(args)?;
    // The pipe is ours alone, so it may be non-blocking. stdin stays as it is: its flags are
    // shared with the shell, and "readable" from select already means one read won't block.
    set_nonblocking(&pipe)?;
    let stdin = io::stdin();

    let mut buf = [0; 1024];
    let (mut stdin_open, mut pipe_open) = (true, true);
    while stdin_open || pipe_open {
        let mut watches = Vec::new();
        if stdin_open {
            watches.push(Watch {
                fd: stdin.as_fd(),
                read: true,
                write: false,
            });
        }
        // A pipe whose writer has closed is readable forever (every read returns EOF): the
        // Python originals keep watching it and spin at 100% CPU. We stop watching it.
        if pipe_open {
            watches.push(Watch {
                fd: pipe.as_fd(),
                read: true,
                write: false,
            });
        }
        for ready in backend.wait(&watches, None, trace)? {
            let (source, fd) = if ready.fd == stdin.as_raw_fd() {
                (Source::Stdin, stdin.as_fd())
            } else {
                (Source::Pipe, pipe.as_fd())
            };
            let n = match read_fd(fd, &mut buf) {
                Ok(n) => n,
                // Readiness can be spurious — or stdin was left non-blocking by whoever gave
                // it to us, and someone sharing it read the bytes first. Wait again.
                Err(err) if would_block(&err) => continue,
                Err(err) => return Err(err),
            };
            let open = session.on_read(source, &buf[..n])?;
            match source {
                Source::Stdin => stdin_open = open,
                Source::Pipe => pipe_open = open,
            }
        }
    }
    session.finish()
}
