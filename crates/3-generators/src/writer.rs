//! The writer program as two tasks, one reading stdin and one reading the pipe: the scheduler
//! resumes whichever has something, so each line is written the moment it arrives.

use std::cell::RefCell;
use std::io::{self, PipeReader, Stdin};
use std::os::fd::AsRawFd;
use std::rc::Rc;

use fdio::{
    Source, Trace, WriterArgs, WriterSession, read_fd, readable_now, set_nonblocking, would_block,
};

use crate::scheduler::Scheduler;
use crate::task::{Context, Step, Task};

/// Runs until EOF on stdin (Ctrl+D), then until the pipe is drained.
pub fn run(args: &WriterArgs) -> io::Result<()> {
    let (session, pipe) = WriterSession::start(args)?;
    // The pipe is ours alone, so it may be non-blocking. stdin is not: see `StdinTask`.
    set_nonblocking(&pipe)?;
    // Both tasks append to one log. Only one task runs at a time, so a `RefCell` is all the
    // sharing they need (Python's generators would share a global).
    let session = Rc::new(RefCell::new(session));
    let mut scheduler = Scheduler::new(Trace::new(args.trace))?;
    scheduler.spawn(StdinTask {
        stdin: io::stdin(),
        session: Rc::clone(&session),
        state: StdinState::Starting,
    });
    scheduler.spawn(PipeTask {
        pipe,
        session: Rc::clone(&session),
    });
    scheduler.run()?;
    // Both tasks have finished and been dropped: the session is ours alone again.
    let session =
        Rc::into_inner(session).ok_or_else(|| io::Error::other("a task outlived the scheduler"))?;
    session.into_inner().finish()
}

// The Python generator:
//
//     def read_stdin():
//         while True:
//             yield "read", stdin
//             data = os.read(stdin, 1024)
//             if not data:
//                 break                     # Ctrl+D
//             log(data)
//
/// Where the stdin task stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StdinState {
    /// Nothing read yet: wait until stdin is readable. Parking before any read is safe this
    /// once: registering an fd with epoll reports the readiness it already has.
    Starting,
    /// Reading, once per turn.
    Reading,
}

/// Reads stdin and logs it; EOF (Ctrl+D) asks the pipe's writer to stop.
///
/// stdin stays blocking: its flags belong to the open file description, which the shell
/// shares. A blocking read never says `WouldBlock`, so before parking the task asks
/// [`readable_now`] instead: parking while bytes are still waiting would leave them there,
/// unannounced by edge-triggered epoll, until the next key press.
struct StdinTask {
    stdin: Stdin,
    session: Rc<RefCell<WriterSession>>,
    state: StdinState,
}

impl Task for StdinTask {
    fn resume(&mut self, ctx: &mut Context<'_>) -> io::Result<Step> {
        let fd = self.stdin.as_raw_fd();
        if self.state == StdinState::Starting {
            self.state = StdinState::Reading;
            return Ok(Step::Read(fd));
        }
        // epoll or `readable_now` said stdin is readable: this read returns at once.
        let n = read_fd(&self.stdin, ctx.buf)?;
        let open = self
            .session
            .borrow_mut()
            .on_read(Source::Stdin, &ctx.buf[..n])?;
        if !open {
            return Ok(Step::Done);
        }
        // A file is always readable: it is read to its end one turn at a time.
        Ok(if readable_now(&self.stdin)? {
            Step::Yield
        } else {
            Step::Read(fd)
        })
    }

    fn describe(&self) -> String {
        "stdin".to_string()
    }
}

// The Python generator:
//
//     def read_pipe():
//         while True:
//             yield "read", pipe
//             data = os.read(pipe, 1024)
//             if not data:
//                 break      # the originals keep watching here: a closed pipe is readable
//             log(data)      # forever, and they spin at 100% CPU
//
// It has one place to stop at, so its task needs no state enum.
//
/// Reads the non-blocking pipe until its writer closes it, then finishes: the closed pipe is
/// dropped, and the scheduler is never woken by it again.
struct PipeTask {
    pipe: PipeReader,
    session: Rc<RefCell<WriterSession>>,
}

impl Task for PipeTask {
    fn resume(&mut self, ctx: &mut Context<'_>) -> io::Result<Step> {
        match read_fd(&self.pipe, ctx.buf) {
            Ok(n) => {
                let open = self
                    .session
                    .borrow_mut()
                    .on_read(Source::Pipe, &ctx.buf[..n])?;
                // More may be waiting: read it on the next turn.
                Ok(if open { Step::Yield } else { Step::Done })
            }
            Err(err) if would_block(&err) => Ok(Step::Read(self.pipe.as_raw_fd())),
            Err(err) => Err(err),
        }
    }

    fn describe(&self) -> String {
        "pipe".to_string()
    }
}
