//! `read(fd)` for stdin and the pipe: the writer's counterpart of [`Recv`](crate::socket::Recv).
//!
//! Both fds stay *blocking* (stdin is shared with the shell, and switching it to non-blocking
//! would switch the shell's terminal too), so a read never says `WouldBlock`: it would block
//! the whole scheduler instead. So `read` asks the kernel first ([`fdio::readable_now`]) and
//! parks only when it said "nothing now" — the same try-first rule as the sockets', since
//! epoll is edge-triggered.

use std::io;
use std::mem;
use std::os::fd::{AsFd, AsRawFd};
use std::rc::Rc;

use fdio::{read_fd, readable_now};

use crate::budget;
use crate::bytes::Bytes;
use crate::coroutine::{Coroutine, Error, Exception, GeneratorState, State, Step};
use crate::scheduler::Syscall;

/// How much one `read` takes, as in the Python original (`os.read(fd, 1024)`).
pub const READ_SIZE: usize = 1024;

/// `read(fd)`: one read of up to [`READ_SIZE`] bytes; empty at EOF.
///
/// ```python
/// def read(fd):
///     while not readable_now(fd):       # nothing there: only now park
///         yield ReadWait(fd)
///     return os.read(fd, 1024)          # costs one from the budget
/// ```
///
/// (Before each try, as in the socket sub-coroutines: `if budget spent: yield BudgetSpent`.)
pub enum ReadFd<F> {
    /// Not started yet.
    Created(Rc<F>),
    /// Parked until the fd is readable, or with the budget spent until the task's next turn.
    Parked(Rc<F>),
    /// Returned its result.
    Closed,
}

impl<F> ReadFd<F> {
    /// `read(fd)`: nothing runs until the first resume.
    pub fn new(file: Rc<F>) -> ReadFd<F> {
        ReadFd::Created(file)
    }
}

impl<F: AsFd> Coroutine<()> for ReadFd<F> {
    type Yield = Syscall;
    type Return = io::Result<Bytes>;

    fn resume(&mut self, (): ()) -> Step<Syscall, Self::Return> {
        let (ReadFd::Created(file) | ReadFd::Parked(file)) = mem::replace(self, ReadFd::Closed)
        else {
            return Err(Error::Closed);
        };
        if !budget::has_left() {
            *self = ReadFd::Parked(file);
            return Ok(State::Yielded(Syscall::BudgetSpent));
        }
        match readable_now(&*file) {
            Ok(true) => {}
            Ok(false) => {
                let fd = file.as_fd().as_raw_fd();
                *self = ReadFd::Parked(file);
                return Ok(State::Yielded(Syscall::ReadWait(fd)));
            }
            Err(err) => return Ok(State::Complete(Err(err))),
        }
        let read = Bytes::read_with(READ_SIZE, |buf| read_fd(&*file, buf));
        budget::spend();
        Ok(State::Complete(read))
    }

    fn throw(&mut self, exception: Exception) -> Step<Syscall, Self::Return> {
        match mem::replace(self, ReadFd::Closed) {
            ReadFd::Created(_) | ReadFd::Parked(_) => Err(Error::raised(exception)),
            ReadFd::Closed => Err(Error::Raised(exception)),
        }
    }

    fn state(&self) -> GeneratorState {
        match self {
            ReadFd::Created(_) => GeneratorState::Created,
            ReadFd::Parked(_) => GeneratorState::Suspended,
            ReadFd::Closed => GeneratorState::Closed,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    /// On an empty pipe `read` parks on its fd; once bytes are there it returns them; with
    /// its budget spent it yields `BudgetSpent` without reading, and reads on the next turn.
    #[test]
    fn parks_reads_and_gives_way_when_the_budget_is_spent() {
        let (reader, mut writer) = io::pipe().unwrap();
        let reader = Rc::new(reader);
        budget::set(budget::PER_TURN);
        let mut read = ReadFd::new(Rc::clone(&reader));
        let parked = read.resume(());
        assert!(matches!(parked, Ok(State::Yielded(Syscall::ReadWait(_)))));

        writer.write_all(b"line\n").unwrap();
        budget::set(0);
        let gave_way = read.resume(());
        assert!(matches!(gave_way, Ok(State::Yielded(Syscall::BudgetSpent))));

        budget::set(budget::PER_TURN);
        let Ok(State::Complete(Ok(bytes))) = read.resume(()) else {
            panic!("read the line");
        };
        assert_eq!(&*bytes, b"line\n");
        assert_eq!(budget::left(), budget::PER_TURN - 1, "a read costs one");
    }
}
