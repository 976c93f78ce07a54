//! The writer program as two tasks on the scheduler: one pumps stdin into the log, one the
//! pipe. Python original: the generator version of the writer (`generators_async.py`),
//! where each source is a generator that yields the fd it waits for.

use std::cell::RefCell;
use std::io;
use std::mem;
use std::os::fd::{AsFd, AsRawFd};
use std::rc::Rc;

use fdio::{Source, Trace, WriterArgs, WriterSession, read_fd, readable_now};

use crate::coroutine::{Coroutine, Error, Exception, GeneratorState, State, Step};
use crate::scheduler::{Scheduler, Syscall, Task};

/// Runs until EOF on stdin (Ctrl+D) and on the pipe: the scheduler returns once both tasks
/// have finished.
pub fn run(args: &WriterArgs) -> io::Result<()> {
    let (session, pipe) = WriterSession::start(args)?;
    // Both tasks append to the same log, so they share it (one thread: an Rc is enough).
    let session = Rc::new(RefCell::new(session));
    let mut scheduler = Scheduler::new(Trace::new(args.trace))?;
    let stdin = Input {
        file: io::stdin(),
        source: Source::Stdin,
        session: Rc::clone(&session),
    };
    let pipe = Input {
        file: pipe,
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
    pub file: F,
    pub source: Source,
    pub session: Rc<RefCell<WriterSession>>,
}

/// A task that appends everything `file` gives to the log, until EOF:
///
/// ```python
/// def pump(session, source, fd):
///     while True:
///         yield ReadWait(fd)                     # Parked
///         while readable_now(fd):                # drain it: epoll will not say it again
///             data = os.read(fd, 1024)
///             if not session.on_read(source, data):
///                 return                         # EOF: the scheduler forgets fd
/// ```
///
/// The fd is blocking, so "read until `WouldBlock`" would block: the pump asks the kernel
/// before each read instead, and parks only after it said "nothing now" — so no data ever
/// waits behind an edge that has passed. (Parking first is safe: epoll reports an fd that is
/// already readable as soon as it is registered.)
pub enum Pump<F> {
    /// Not started yet.
    Created(Input<F>),
    /// At `yield ReadWait(fd)`.
    Parked(Input<F>),
    /// Reached EOF; the pipe's read end is closed.
    Closed,
}

impl<F: AsFd> Pump<F> {
    /// Reads while a read returns at once. `Ok(true)` at EOF.
    fn drain(input: &Input<F>) -> io::Result<bool> {
        let mut buf = [0; 1024];
        while readable_now(&input.file)? {
            let n = read_fd(&input.file, &mut buf)?;
            if !input
                .session
                .borrow_mut()
                .on_read(input.source, &buf[..n])?
            {
                return Ok(true);
            }
        }
        Ok(false)
    }
}

impl<F: AsFd> Coroutine<()> for Pump<F> {
    type Yield = Syscall;
    type Return = ();

    fn resume(&mut self, (): ()) -> Step<Syscall, ()> {
        let input = match mem::replace(self, Pump::Closed) {
            Pump::Created(input) => input,
            Pump::Parked(input) => match Pump::drain(&input) {
                Ok(false) => input,
                Ok(true) => return Ok(State::Complete(())),
                // An exception escapes: the scheduler stops, and the program exits with it.
                Err(err) => return Err(Error::raised(Exception::from(err))),
            },
            Pump::Closed => return Err(Error::Closed),
        };
        let fd = input.file.as_fd().as_raw_fd();
        *self = Pump::Parked(input);
        Ok(State::Yielded(Syscall::ReadWait(fd)))
    }

    fn throw(&mut self, exception: Exception) -> Step<Syscall, ()> {
        match mem::replace(self, Pump::Closed) {
            Pump::Created(_) | Pump::Parked(_) => Err(Error::raised(exception)),
            Pump::Closed => Err(Error::Raised(exception)),
        }
    }

    fn state(&self) -> GeneratorState {
        match self {
            Pump::Created(_) => GeneratorState::Created,
            Pump::Parked(_) => GeneratorState::Suspended,
            Pump::Closed => GeneratorState::Closed,
        }
    }
}
