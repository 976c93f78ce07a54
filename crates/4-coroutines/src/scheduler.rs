//! A coroutine scheduler in the style of David Beazley's "A Curious Course on Coroutines and
//! Concurrency" (pyos): tasks are coroutines, and what they yield are *system calls* —
//! "park me until this fd is readable", "start this new task". The scheduler keeps a ready
//! queue and, for parked tasks, `to_read` / `to_write` maps from fd to task; it waits on
//! epoll (through mio) only when no task is ready.
//!
//! ```python
//! while tasks:
//!     while ready:
//!         task = ready.popleft()
//!         budget.set(task.budget)           # 32 when its turn begins
//!         call = task.send(None)            # run it to its next yield
//!         if isinstance(call, ReadWait): to_read[call.fd] = task
//!         if isinstance(call, BudgetSpent): next_turn.append(task)
//!         ...
//!     for fd in poll():                     # only when nothing is ready
//!         ready.append(to_read.pop(fd))
//!     ready.extend(next_turn)               # behind the ones epoll woke
//! ```
//!
//! epoll is told about an fd once, and again (with both directions) the first time a task
//! waits on it the other way: mio registrations are edge-triggered and stay. That is why
//! every task here parks only after the kernel said "nothing now" (`WouldBlock`, or a read
//! or write that came back short): data that came earlier made its edge earlier, and waiting
//! for it would wait forever. And why every event is written down in the [`readiness`]
//! table, also when no task is parked on its fd (its task may be busy writing): the
//! sub-coroutines ask the table before they try, so an edge that came while nobody waited is
//! not lost, and a socket the kernel already said is empty is not asked again.
//!
//! A task that never meets `WouldBlock` — its client never stops sending — would keep the
//! loop from ever getting back to epoll. The [`budget`] stops it: after 32
//! operations its next one yields `BudgetSpent`, and the task waits in `next_turn` while
//! epoll is asked (without sleeping) who else is ready. Those go first.

use std::collections::{HashMap, HashSet, VecDeque};
use std::io;
use std::os::fd::RawFd;
use std::time::{Duration, Instant};

use fdio::{FdList, Trace, epoll_refuses, epoll_refuses_line, interrupted};
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};

use crate::coroutine::{Coroutine, Exception, State, Step};
use crate::{budget, readiness};

/// What a task yields: a request to the scheduler (Beazley's system calls).
pub enum Syscall {
    /// Park me until `fd` is readable. Python: `yield ReadWait(sock)`.
    ReadWait(RawFd),
    /// Park me until `fd` is writable. Python: `yield WriteWait(sock)`.
    WriteWait(RawFd),
    /// Park me for a while (the server does, when it runs out of fds).
    Sleep(Duration),
    /// Start this task, and keep me running. Python: `yield NewTask(handle_client(…))`.
    NewTask(Task),
    /// My budget for this turn is spent: serve the others, then me again. The I/O
    /// sub-coroutines yield it, never a task's own code (see [`budget`]).
    BudgetSpent,
}

/// The coroutine inside a task: told only "go on" (`()`), it yields system calls.
pub type TaskCoroutine = Box<dyn Coroutine<(), Yield = Syscall, Return = ()>>;

/// A coroutine the scheduler runs, with a name for the trace and the logs.
pub struct Task {
    name: String,
    coroutine: TaskCoroutine,
    /// The fd it last parked on (each of our tasks uses one), forgotten when it finishes.
    fd: Option<RawFd>,
    /// What is left of its budget in this turn.
    budget: u32,
}

impl Task {
    /// A task named `name` (`client 127.0.0.1:4242`) running `coroutine`.
    pub fn new(
        name: impl Into<String>,
        coroutine: impl Coroutine<(), Yield = Syscall, Return = ()> + 'static,
    ) -> Task {
        Task {
            name: name.into(),
            coroutine: Box::new(coroutine),
            fd: None,
            budget: budget::PER_TURN,
        }
    }
}

/// The ready queue, the tasks parked on fds and timers, and epoll underneath.
pub struct Scheduler {
    poll: Poll,
    ready: VecDeque<Task>,
    to_read: HashMap<RawFd, Task>,
    to_write: HashMap<RawFd, Task>,
    sleeping: Vec<(Instant, Task)>,
    /// Tasks that spent their budget (or wait on an fd that is always ready): they run again
    /// after the next poll, behind the tasks it wakes.
    next_turn: Vec<Task>,
    /// What epoll watches each fd for. The token of an fd is the fd itself.
    watching: HashMap<RawFd, Interest>,
    /// fds epoll refused (regular files, `/dev/null`): always ready. They never say
    /// `WouldBlock`, though a read of a file can still wait for the disk, unseen by epoll.
    always_ready: HashSet<RawFd>,
    trace: Trace,
}

impl Scheduler {
    /// A scheduler with no task yet.
    pub fn new(trace: Trace) -> io::Result<Scheduler> {
        Ok(Scheduler {
            poll: Poll::new()?,
            ready: VecDeque::new(),
            to_read: HashMap::new(),
            to_write: HashMap::new(),
            sleeping: Vec::new(),
            next_turn: Vec::new(),
            watching: HashMap::new(),
            always_ready: HashSet::new(),
            trace,
        })
    }

    /// Adds a task to the ready queue.
    pub fn spawn(&mut self, task: Task) {
        self.ready.push_back(task);
    }

    /// Runs every task until none is left. An exception that escapes a task stops the
    /// scheduler with that error, as an uncaught exception stops a Python program; client
    /// handlers catch theirs.
    pub fn run(&mut self) -> io::Result<()> {
        let mut events = Events::with_capacity(1024);
        loop {
            while let Some(mut task) = self.ready.pop_front() {
                self.trace
                    .say(|| format!("scheduler: resume {}", task.name));
                budget::set(task.budget);
                let step = task.coroutine.resume(());
                task.budget = budget::left();
                self.handle(task, step)?;
            }
            if self.to_read.is_empty()
                && self.to_write.is_empty()
                && self.sleeping.is_empty()
                && self.next_turn.is_empty()
            {
                return Ok(());
            }
            let timeout = self.timeout();
            self.trace.say(|| self.describe_wait(timeout));
            match self.poll.poll(&mut events, timeout) {
                Err(err) if interrupted(&err) => continue,
                result => result?,
            }
            for event in events.iter() {
                let fd = event.token().0 as RawFd;
                // Readiness is a hint: the task's next read or write meets EOF or the error.
                let failed = event.is_error();
                let readable = event.is_readable() || event.is_read_closed() || failed;
                let writable = event.is_writable() || event.is_write_closed() || failed;
                // An urgent byte, the peer's FIN or an error: a short read may leave
                // something behind (see `readiness`).
                let keep_reading = event.is_priority() || event.is_read_closed() || failed;
                readiness::record(fd, readable, writable, keep_reading);
                if readable {
                    self.wake(Interest::READABLE, fd);
                }
                if writable {
                    self.wake(Interest::WRITABLE, fd);
                }
            }
            let now = Instant::now();
            let (due, later) = self.sleeping.drain(..).partition(|(when, _)| *when <= now);
            self.sleeping = later;
            self.ready.extend(due.into_iter().map(|(_, task)| task));
            self.ready.extend(self.next_turn.drain(..));
        }
    }

    /// Does what a task's step asks for.
    fn handle(&mut self, mut task: Task, step: Step<Syscall, ()>) -> io::Result<()> {
        // Unless it goes on at once (`NewTask`), the task's turn is over: the next one
        // starts with a full budget.
        if !matches!(step, Ok(State::Yielded(Syscall::NewTask(_)))) {
            task.budget = budget::PER_TURN;
        }
        match step {
            Ok(State::Yielded(Syscall::ReadWait(fd))) => self.park(task, Interest::READABLE, fd),
            Ok(State::Yielded(Syscall::WriteWait(fd))) => self.park(task, Interest::WRITABLE, fd),
            Ok(State::Yielded(Syscall::Sleep(delay))) => {
                self.trace
                    .say(|| format!("scheduler: {} sleeps {delay:?}", task.name));
                self.sleeping.push((Instant::now() + delay, task));
                Ok(())
            }
            Ok(State::Yielded(Syscall::NewTask(new))) => {
                self.trace
                    .say(|| format!("scheduler: {} starts {}", task.name, new.name));
                self.ready.push_back(new);
                self.ready.push_back(task);
                Ok(())
            }
            Ok(State::Yielded(Syscall::BudgetSpent)) => {
                self.trace.say(|| {
                    format!(
                        "scheduler: {} spent its budget of {} operations: the others go first",
                        task.name,
                        budget::PER_TURN
                    )
                });
                self.next_turn.push(task);
                Ok(())
            }
            Ok(State::Complete(())) => {
                self.trace
                    .say(|| format!("scheduler: {} finished", task.name));
                self.forget(task);
                Ok(())
            }
            Err(error) => {
                let message = format!("{}: {error}", task.name);
                self.forget(task);
                Err(io::Error::other(message))
            }
        }
    }

    /// Parks `task` in `to_read` or `to_write` under `fd`, and makes sure epoll watches `fd`
    /// that way. One task per fd and direction, as in the Python original's dicts.
    fn park(&mut self, mut task: Task, interest: Interest, fd: RawFd) -> io::Result<()> {
        task.fd = Some(fd);
        // An fd epoll refuses is always ready: the task runs again on the next turn, after the
        // next poll (which then does not sleep). Not straight back to the ready queue, where
        // it could keep every parked task from ever being polled for.
        if self.always_ready.contains(&fd) {
            self.next_turn.push(task);
            return Ok(());
        }
        match self.watch(fd, interest) {
            Ok(()) => {}
            Err(err) if epoll_refuses(&err) => {
                let doing = if interest == Interest::READABLE {
                    "reading"
                } else {
                    "writing"
                };
                fdio::log!("{}", epoll_refuses_line("coroutines", fd, doing));
                self.always_ready.insert(fd);
                self.next_turn.push(task);
                return Ok(());
            }
            // The task cannot wait: raise the error in it, at its `yield`, and let it decide.
            Err(err) => {
                let step = task.coroutine.throw(Exception::from(err));
                return self.handle(task, step);
            }
        }
        let trace = self.trace;
        let (waiting, direction) = self.waiting(interest);
        trace.say(|| format!("scheduler: {} parks on {direction} fd {fd}", task.name));
        waiting.insert(fd, task);
        Ok(())
    }

    /// The map of tasks parked for `interest`, and its name for the trace.
    fn waiting(&mut self, interest: Interest) -> (&mut HashMap<RawFd, Task>, &'static str) {
        if interest == Interest::READABLE {
            (&mut self.to_read, "read")
        } else {
            (&mut self.to_write, "write")
        }
    }

    /// Registers `fd` for `interest` the first time, for both directions the first time a
    /// task waits on it the other way, and otherwise leaves epoll alone: one `epoll_ctl`
    /// per direction and fd, not one per park. (Not both directions from the start: a
    /// terminal on stdin turns writable again after each trace line, and would wake us to
    /// print another.) Events nobody waits for are dropped in [`wake`](Self::wake).
    fn watch(&mut self, fd: RawFd, interest: Interest) -> io::Result<()> {
        let registry = self.poll.registry();
        let token = Token(fd as usize);
        // Reading, we also want to hear of an urgent byte (`EPOLLPRI`): see `readiness`.
        let interest = if interest.is_readable() {
            interest | Interest::PRIORITY
        } else {
            interest
        };
        let interest = match self.watching.get(&fd) {
            Some(&current) if current | interest == current => return Ok(()),
            Some(&current) => {
                registry.reregister(&mut SourceFd(&fd), token, current | interest)?;
                current | interest
            }
            None => {
                registry.register(&mut SourceFd(&fd), token, interest)?;
                interest
            }
        };
        self.trace
            .say(|| format!("scheduler: epoll now watches fd {fd} for {interest:?}"));
        self.watching.insert(fd, interest);
        Ok(())
    }

    /// The fd is ready that way: its parked task, if any, goes back to the ready queue. If
    /// none waits, the readiness table keeps the news for the task's next try.
    fn wake(&mut self, interest: Interest, fd: RawFd) {
        match self.waiting(interest).0.remove(&fd) {
            Some(task) => {
                self.trace.say(|| {
                    format!(
                        "scheduler: fd {fd} is {interest:?} → {} to the ready queue",
                        task.name
                    )
                });
                self.ready.push_back(task);
            }
            None => self.trace.say(|| {
                format!("scheduler: fd {fd} is {interest:?}, nobody waits: kept for later")
            }),
        }
    }

    /// A task finished: drop it, stop watching its fd, and forget what the readiness table
    /// knew about it (a later fd may get the same number). A socket or pipe closed with its
    /// task has already left epoll (closing the last descriptor of an open file takes it out
    /// of every epoll set, and nothing here `dup`s or `fork`s); stdin stays open, so it must
    /// be taken out by hand.
    fn forget(&mut self, task: Task) {
        let fd = task.fd;
        drop(task);
        let Some(fd) = fd else { return };
        readiness::forget(fd);
        self.always_ready.remove(&fd);
        if self.watching.remove(&fd).is_some() {
            // For an fd that closed with its task this fails (EBADF): nothing left to undo.
            let _ = self.poll.registry().deregister(&mut SourceFd(&fd));
        }
    }

    /// How long the next poll may sleep: not at all while a task waits for its next turn;
    /// else until the earliest timer, or for as long as it takes.
    fn timeout(&self) -> Option<Duration> {
        if !self.next_turn.is_empty() {
            return Some(Duration::ZERO);
        }
        let earliest = self.sleeping.iter().map(|(when, _)| *when).min()?;
        Some(earliest.saturating_duration_since(Instant::now()))
    }

    /// `scheduler: waiting with to_read=[5,7] to_write=[] sleeping=0 next_turn=0 timeout=none`
    fn describe_wait(&self, timeout: Option<Duration>) -> String {
        let sorted = |map: &HashMap<RawFd, Task>| {
            let mut fds: Vec<RawFd> = map.keys().copied().collect();
            fds.sort_unstable();
            fds
        };
        let timeout = timeout.map_or("none".to_string(), |t| format!("{t:.1?}"));
        format!(
            "scheduler: waiting with to_read={} to_write={} sleeping={} next_turn={} timeout={timeout}",
            FdList(&sorted(&self.to_read)),
            FdList(&sorted(&self.to_write)),
            self.sleeping.len(),
            self.next_turn.len(),
        )
    }
}

#[cfg(test)]
mod tests;
