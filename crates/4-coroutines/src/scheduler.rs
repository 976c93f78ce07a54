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
//!         call = task.send(None)            # run it to its next yield
//!         if isinstance(call, ReadWait): to_read[call.fd] = task
//!         ...
//!     for fd in poll():                     # only when nothing is ready
//!         ready.append(to_read.pop(fd))
//! ```
//!
//! epoll is told about an fd once, and again only when a task waits on it the other way:
//! mio registrations are edge-triggered and stay. That is why every task here parks only
//! after the kernel said "nothing now" (`WouldBlock`): data that came earlier made its edge
//! earlier, and waiting for it would wait forever.

use std::collections::{HashMap, HashSet, VecDeque};
use std::io;
use std::os::fd::RawFd;
use std::time::{Duration, Instant};

use fdio::{FdList, Trace, epoll_refuses, interrupted};
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};

use crate::coroutine::{Coroutine, Exception, State, Step};

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
}

/// The coroutine inside a task: told only "go on" (`()`), it yields system calls.
pub type TaskCoroutine = Box<dyn Coroutine<(), Yield = Syscall, Return = ()>>;

/// A coroutine the scheduler runs, with a name for the trace and the logs.
pub struct Task {
    name: String,
    coroutine: TaskCoroutine,
    /// The fd it last parked on (each of our tasks uses one), forgotten when it finishes.
    fd: Option<RawFd>,
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
    /// What epoll watches each fd for. The token of an fd is the fd itself.
    watching: HashMap<RawFd, Interest>,
    /// fds epoll refused (regular files, `/dev/null`): they never block.
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
                let step = task.coroutine.resume(());
                self.handle(task, step)?;
            }
            if self.to_read.is_empty() && self.to_write.is_empty() && self.sleeping.is_empty() {
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
                if event.is_readable() || event.is_read_closed() || event.is_error() {
                    self.wake(Interest::READABLE, fd);
                }
                if event.is_writable() || event.is_write_closed() || event.is_error() {
                    self.wake(Interest::WRITABLE, fd);
                }
            }
            let now = Instant::now();
            let (due, later) = self.sleeping.drain(..).partition(|(when, _)| *when <= now);
            self.sleeping = later;
            self.ready.extend(due.into_iter().map(|(_, task)| task));
        }
    }

    /// Does what a task's step asks for.
    fn handle(&mut self, task: Task, step: Step<Syscall, ()>) -> io::Result<()> {
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
        // An fd epoll refuses never blocks: the task runs again right after the next poll
        // (which then does not sleep), as if asleep for no time. Not straight back to the
        // ready queue, where it could keep every parked task from ever being polled for.
        if self.always_ready.contains(&fd) {
            self.sleeping.push((Instant::now(), task));
            return Ok(());
        }
        match self.watch(fd, interest) {
            Ok(()) => {}
            Err(err) if epoll_refuses(&err) => {
                eprintln!(
                    "scheduler: epoll refuses fd {fd} of {} (a regular file or /dev/null): it never blocks, so it is read on every turn",
                    task.name
                );
                self.always_ready.insert(fd);
                self.sleeping.push((Instant::now(), task));
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

    /// Registers `fd` the first time, re-registers it when the direction changes, and
    /// otherwise leaves epoll alone.
    fn watch(&mut self, fd: RawFd, interest: Interest) -> io::Result<()> {
        let registry = self.poll.registry();
        let token = Token(fd as usize);
        match self.watching.get(&fd) {
            Some(&current) if current == interest => return Ok(()),
            Some(_) => registry.reregister(&mut SourceFd(&fd), token, interest)?,
            None => registry.register(&mut SourceFd(&fd), token, interest)?,
        }
        self.trace
            .say(|| format!("scheduler: epoll now watches fd {fd} for {interest:?}"));
        self.watching.insert(fd, interest);
        Ok(())
    }

    /// The fd is ready that way: its parked task, if any, goes back to the ready queue.
    fn wake(&mut self, interest: Interest, fd: RawFd) {
        if let Some(task) = self.waiting(interest).0.remove(&fd) {
            self.trace.say(|| {
                format!(
                    "scheduler: fd {fd} is {interest:?} → {} to the ready queue",
                    task.name
                )
            });
            self.ready.push_back(task);
        }
    }

    /// A task finished: drop it, and stop watching its fd. A socket or pipe closed with its
    /// task has already left epoll (closing an fd takes it out of every epoll set); stdin
    /// stays open, so it must be taken out by hand.
    fn forget(&mut self, task: Task) {
        let fd = task.fd;
        drop(task);
        let Some(fd) = fd else { return };
        self.always_ready.remove(&fd);
        if self.watching.remove(&fd).is_some() {
            // For an fd that closed with its task this fails (EBADF): nothing left to undo.
            let _ = self.poll.registry().deregister(&mut SourceFd(&fd));
        }
    }

    /// How long the next poll may sleep: until the earliest timer, or for as long as it takes.
    fn timeout(&self) -> Option<Duration> {
        let earliest = self.sleeping.iter().map(|(when, _)| *when).min()?;
        Some(earliest.saturating_duration_since(Instant::now()))
    }

    /// `scheduler: waiting with to_read=[5,7] to_write=[] sleeping=0 timeout=none`
    fn describe_wait(&self, timeout: Option<Duration>) -> String {
        let sorted = |map: &HashMap<RawFd, Task>| {
            let mut fds: Vec<RawFd> = map.keys().copied().collect();
            fds.sort_unstable();
            fds
        };
        let timeout = timeout.map_or("none".to_string(), |t| format!("{t:.1?}"));
        format!(
            "scheduler: waiting with to_read={} to_write={} sleeping={} timeout={timeout}",
            FdList(&sorted(&self.to_read)),
            FdList(&sorted(&self.to_write)),
            self.sleeping.len(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::coroutine::{Error, GeneratorState};
    use std::cell::RefCell;
    use std::collections::VecDeque;
    use std::io::Write;
    use std::os::fd::AsRawFd;
    use std::rc::Rc;

    /// A test task: each resume notes its name and yields the next system call of its
    /// script; with none left, it returns.
    struct Script {
        name: &'static str,
        calls: VecDeque<Syscall>,
        log: Rc<RefCell<Vec<&'static str>>>,
    }

    impl Coroutine<()> for Script {
        type Yield = Syscall;
        type Return = ();

        fn resume(&mut self, (): ()) -> Step<Syscall, ()> {
            self.log.borrow_mut().push(self.name);
            Ok(match self.calls.pop_front() {
                Some(call) => State::Yielded(call),
                None => State::Complete(()),
            })
        }

        fn throw(&mut self, exception: Exception) -> Step<Syscall, ()> {
            Err(Error::raised(exception))
        }

        fn state(&self) -> GeneratorState {
            GeneratorState::Suspended
        }
    }

    fn task(name: &'static str, calls: Vec<Syscall>, log: &Rc<RefCell<Vec<&'static str>>>) -> Task {
        let log = Rc::clone(log);
        Task::new(
            name,
            Script {
                name,
                calls: calls.into(),
                log,
            },
        )
    }

    /// `b` starts `a` and ends; `a` parks on an empty pipe, and runs again only once a
    /// thread has written to it; then nothing is left and `run` returns.
    #[test]
    fn starts_parks_and_wakes_tasks() {
        let (reader, mut writer) = std::io::pipe().unwrap();
        let log = Rc::new(RefCell::new(Vec::new()));
        let a = task("a", vec![Syscall::ReadWait(reader.as_raw_fd())], &log);
        let mut scheduler = Scheduler::new(Trace::new(false)).unwrap();
        scheduler.spawn(task("b", vec![Syscall::NewTask(a)], &log));
        let late_writer = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            writer.write_all(b"x")
        });
        scheduler.run().unwrap();
        late_writer.join().unwrap().unwrap();
        assert_eq!(*log.borrow(), ["b", "a", "b", "a"]);
    }

    /// A task parked on a regular file (which epoll refuses) is simply run again, every
    /// time, and `run` still returns.
    #[test]
    fn a_regular_file_is_always_ready() {
        let file = std::fs::File::open(concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml")).unwrap();
        let log = Rc::new(RefCell::new(Vec::new()));
        let fd = file.as_raw_fd();
        let calls = vec![Syscall::ReadWait(fd), Syscall::ReadWait(fd)];
        let mut scheduler = Scheduler::new(Trace::new(false)).unwrap();
        scheduler.spawn(task("reader", calls, &log));
        scheduler.run().unwrap();
        assert_eq!(*log.borrow(), ["reader"; 3]);
    }

    /// An exception escaping a task stops the scheduler with an error naming the task.
    #[test]
    fn an_escaping_exception_stops_the_scheduler() {
        let mut scheduler = Scheduler::new(Trace::new(false)).unwrap();
        scheduler.spawn(Task::new(
            "closed",
            crate::writer::Pump::<std::io::Stdin>::Closed,
        ));
        let err = scheduler.run().unwrap_err();
        assert_eq!(err.to_string(), "closed: StopIteration");
    }
}
