//! The writer program as two tasks on the scheduler: one pumps stdin into the log, one the
//! pipe. Python original: the generator version of the writer (`generators_async.py`),
//! where each source is a generator that yields the fd it waits for.

use std::cell::RefCell;
use std::io;
use std::mem;
use std::os::fd::{AsFd, AsRawFd};
use std::rc::Rc;

use fdio::{Source, Trace, WriterArgs, WriterSession};

use crate::coroutine::{Coroutine, Error, Exception, GeneratorState, State, Step};
use crate::delegate::Delegate;
use crate::fd::ReadFd;
use crate::scheduler::{Scheduler, Syscall, Task};

/// Runs until EOF on stdin (Ctrl+D) and on the pipe: the scheduler returns once both tasks
/// have finished.
pub fn run(args: &WriterArgs) -> io::Result<()> {
    let (session, pipe) = WriterSession::start(args)?;
    // Both tasks append to the same log, so they share it (one thread: an Rc is enough).
    let session = Rc::new(RefCell::new(session));
    let mut scheduler = Scheduler::new(Trace::new(args.trace))?;
    let stdin = Input {
        file: Rc::new(io::stdin()),
        source: Source::Stdin,
        session: Rc::clone(&session),
    };
    let pipe = Input {
        file: Rc::new(pipe),
        source: Source::Pipe,
        session: Rc::clone(&session),
    };
    scheduler.spawn(Task::new("stdin", Pump::Created(stdin)));
    scheduler.spawn(Task::new("pipe", Pump::Created(pipe)));
    scheduler.run()?;
    let session =
        Rc::into_inner(session).ok_or_else(|| io::Error::other("a task outlived the loop"))?;
    session.into_inner().finish()
}

/// What a pump reads from, and where its lines go.
pub struct Input<F> {
    /// stdin, or the pipe's read end. Both stay blocking (stdin is shared with the shell).
    pub file: Rc<F>,
    pub source: Source,
    pub session: Rc<RefCell<WriterSession>>,
}

/// A task that appends everything `file` gives to the log, until EOF:
///
/// ```python
/// def pump(session, source, fd):
///     yield ReadWait(fd)                         # Created: epoll starts watching fd
///     while True:
///         data = yield from read(fd)             # Reading
///         if not session.on_read(source, data):
///             return                             # EOF: the scheduler forgets fd
/// ```
///
/// The first wait only tells epoll about the fd (registering an fd reports what is already
/// in it, so nothing is missed), and finds out whether epoll can watch it at all: it cannot
/// watch a regular file, and says so. From then on each [`read`](ReadFd) parks only when
/// nothing is there, and gives way to the other task when the budget runs out — a flood
/// on one source does not hold up the other's lines.
pub enum Pump<F> {
    /// Not started yet.
    Created(Input<F>),
    /// At the first `yield ReadWait(fd)`.
    Watching(Input<F>),
    /// Inside `data = yield from read(fd)`.
    Reading {
        input: Input<F>,
        read: Delegate<ReadFd<F>>,
    },
    /// Reached EOF; the pipe's read end is closed.
    Closed,
}

impl<F: AsFd> Pump<F> {
    /// `data = yield from read(fd)`, about to begin.
    fn reading(input: Input<F>) -> Pump<F> {
        let read = Delegate::new(ReadFd::new(Rc::clone(&input.file)));
        Pump::Reading { input, read }
    }
}

impl<F: AsFd> Coroutine<()> for Pump<F> {
    type Yield = Syscall;
    type Return = ();

    fn resume(&mut self, (): ()) -> Step<Syscall, ()> {
        loop {
            match mem::replace(self, Pump::Closed) {
                Pump::Created(input) => {
                    let fd = input.file.as_fd().as_raw_fd();
                    *self = Pump::Watching(input);
                    return Ok(State::Yielded(Syscall::ReadWait(fd)));
                }
                Pump::Watching(input) => *self = Pump::reading(input),
                Pump::Reading { input, mut read } => match read.resume(())? {
                    State::Yielded(call) => {
                        *self = Pump::Reading { input, read };
                        return Ok(State::Yielded(call));
                    }
                    State::Complete(data) => {
                        let more = data.and_then(|data| {
                            input.session.borrow_mut().on_read(input.source, &data)
                        });
                        match more {
                            Ok(true) => *self = Pump::reading(input),
                            Ok(false) => return Ok(State::Complete(())),
                            // An exception escapes: the scheduler stops, and the program
                            // exits with it.
                            Err(err) => return Err(Error::raised(Exception::from(err))),
                        }
                    }
                },
                Pump::Closed => return Err(Error::Closed),
            }
        }
    }

    fn throw(&mut self, exception: Exception) -> Step<Syscall, ()> {
        match mem::replace(self, Pump::Closed) {
            Pump::Created(_) | Pump::Watching(_) | Pump::Reading { .. } => {
                Err(Error::raised(exception))
            }
            Pump::Closed => Err(Error::Raised(exception)),
        }
    }

    fn state(&self) -> GeneratorState {
        match self {
            Pump::Created(_) => GeneratorState::Created,
            Pump::Watching(_) | Pump::Reading { .. } => GeneratorState::Suspended,
            Pump::Closed => GeneratorState::Closed,
        }
    }
}
