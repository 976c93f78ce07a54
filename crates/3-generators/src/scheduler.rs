//! The scheduler: Python's `event_loop()` from `4_generators/generators.py`, on epoll.
//!
//! ```python
//! def event_loop():
//!     while any([tasks, to_read, to_write]):
//!         while tasks:
//!             task = tasks.pop(0)
//!             try:
//!                 reason, sock = next(task)        # resume the task until it yields
//!                 if reason == "read":  to_read[sock] = task
//!                 if reason == "write": to_write[sock] = task
//!             except StopIteration:
//!                 pass                             # the task is finished
//!         ready_to_read, ready_to_write, _ = select(to_read, to_write, [])
//!         for sock in ready_to_read:  tasks.append(to_read.pop(sock))
//!         for sock in ready_to_write: tasks.append(to_write.pop(sock))
//! ```
//!
//! `next(task)` is [`Task::resume`], the yielded tuple is a [`Step`], and `select` is epoll
//! (through mio, see [`crate::epoll`]). Not `select`: its bitmap stops at fd 1023, and this
//! lesson serves 10,000 connections. Not `poll` either: it copies and scans every watched fd on
//! every call, where epoll keeps the watched fds in the kernel and hands back only the ready ones.
//!
//! Where this loop differs from the Python, and why:
//! - epoll is **edge-triggered**: it reports a change once, not a state on every call. So a
//!   task parks only after its call said `WouldBlock` (the rule in [`crate::task`]), and an
//!   event for an fd nobody is parked on can simply be dropped.
//! - A task with more to do yields [`Step::Yield`] (Python's bare `yield`) and goes to the back
//!   of the queue. Each turn runs every ready task once, then asks epoll — without sleeping while
//!   some task is still ready — so a client that never runs dry cannot starve the others.
//! - [`Step::Sleep`]: the listener's pause when the process runs out of fds.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fmt;
use std::io;
use std::os::fd::RawFd;
use std::time::{Duration, Instant};

use fdio::{FdList, Trace};

use crate::epoll::{Direction, Epoll};
use crate::task::{Context, Step, Task};

/// How much one read may take: the size of the shared buffer.
const READ_CHUNK: usize = 64 * 1024;

/// A task and the number the trace knows it by.
struct NumberedTask {
    id: usize,
    task: Box<dyn Task>,
}

impl fmt::Display for NumberedTask {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "task {} ({})", self.id, self.task.describe())
    }
}

/// The ready queue, the tasks parked on fds and on timers, and the epoll instance.
pub struct Scheduler {
    /// Tasks that can run now, in turn order. Python: `tasks`.
    ready_queue: VecDeque<NumberedTask>,
    /// Tasks waiting until their fd is readable. Python: `to_read`.
    to_read: HashMap<RawFd, NumberedTask>,
    /// Tasks waiting until their fd is writable. Python: `to_write`.
    to_write: HashMap<RawFd, NumberedTask>,
    /// Tasks waiting for an instant, earliest first (the id keeps equal instants apart).
    sleeping: BTreeMap<(Instant, usize), NumberedTask>,
    epoll: Epoll,
    spawned: Vec<Box<dyn Task>>,
    buf: Vec<u8>,
    next_id: usize,
    trace: Trace,
}

impl Scheduler {
    /// An empty scheduler with its own epoll instance.
    pub fn new(trace: Trace) -> io::Result<Scheduler> {
        Ok(Scheduler {
            ready_queue: VecDeque::new(),
            to_read: HashMap::new(),
            to_write: HashMap::new(),
            sleeping: BTreeMap::new(),
            epoll: Epoll::new()?,
            spawned: Vec::new(),
            buf: vec![0; READ_CHUNK],
            next_id: 1,
            trace,
        })
    }

    /// Adds a task to the ready queue.
    pub fn spawn(&mut self, task: impl Task + 'static) {
        self.add(Box::new(task));
    }

    fn add(&mut self, task: Box<dyn Task>) {
        let task = NumberedTask {
            id: self.next_id,
            task,
        };
        self.next_id += 1;
        self.trace.say(|| format!("spawned {task}"));
        self.ready_queue.push_back(task);
    }

    /// Runs until every task is finished (an echo server's listener never is).
    pub fn run(&mut self) -> io::Result<()> {
        loop {
            // 1. Resume every task that is ready now, once. Those that yield, and those
            //    spawned now, run on the next turn.
            for _ in 0..self.ready_queue.len() {
                if let Some(task) = self.ready_queue.pop_front() {
                    self.resume(task)?;
                }
            }
            let waiting = self.to_read.len() + self.to_write.len() + self.sleeping.len();
            if waiting == 0 && self.ready_queue.is_empty() {
                return Ok(());
            }
            // 2. Move the tasks whose fd or instant has come back to the ready queue.
            if waiting > 0 {
                self.wait()?;
            }
        }
    }

    /// Python: `reason, sock = next(task)`, then file the task where its step says.
    fn resume(&mut self, mut entry: NumberedTask) -> io::Result<()> {
        self.trace.say(|| format!("resumed {entry}"));
        let mut ctx = Context::new(self.trace, &mut self.buf, &mut self.spawned);
        let step = entry.task.resume(&mut ctx)?;
        let mut spawned = std::mem::take(&mut self.spawned);
        for task in spawned.drain(..) {
            self.add(task);
        }
        self.spawned = spawned;
        match step {
            Step::Read(fd) => self.park(entry, fd, Direction::Read),
            Step::Write(fd) => self.park(entry, fd, Direction::Write),
            Step::Yield => {
                self.trace
                    .say(|| format!("{entry} yields: back of the ready queue"));
                self.ready_queue.push_back(entry);
            }
            Step::Sleep(until) => {
                let nap = until.saturating_duration_since(Instant::now());
                self.trace.say(|| format!("{entry} sleeps for {nap:.1?}"));
                self.sleeping.insert((until, entry.id), entry);
            }
            // Dropping the task closes its fds, and closing an fd takes it out of epoll: it is
            // the last descriptor of its open file (nothing here `dup`s or `fork`s).
            Step::Done => self.trace.say(|| format!("{entry} is done")),
        }
        Ok(())
    }

    /// Python: `to_read[sock] = task` (or `to_write`). One task per fd and direction.
    fn park(&mut self, entry: NumberedTask, fd: RawFd, direction: Direction) {
        let (to_wait_on, name) = match direction {
            Direction::Read => (&mut self.to_read, "read"),
            Direction::Write => (&mut self.to_write, "write"),
        };
        match self.epoll.watch(fd, entry.id, direction) {
            Ok(true) => {
                self.trace
                    .say(|| format!("parked {entry} on {name} fd {fd}"));
                to_wait_on.insert(fd, entry);
            }
            // epoll refuses the fd because it is always ready: the task may go on at once.
            Ok(false) => {
                self.trace.say(|| {
                    format!(
                        "{entry} waits on fd {fd}, which is always ready: back of the ready queue"
                    )
                });
                self.ready_queue.push_back(entry);
            }
            Err(err) => {
                fdio::log!("generators: cannot watch fd {fd} for {entry}: {err}; dropping it");
            }
        }
    }

    /// Python: `select(to_read, to_write, [])`, then every ready task back to `tasks`.
    fn wait(&mut self) -> io::Result<()> {
        // Sleep only when no task is ready; otherwise just collect what happened meanwhile.
        let timeout = if self.ready_queue.is_empty() {
            let next_instant = self.sleeping.keys().next();
            next_instant.map(|(until, _)| until.saturating_duration_since(Instant::now()))
        } else {
            Some(Duration::ZERO)
        };
        self.trace.say(|| {
            let (to_read, to_write) = (sorted_fds(&self.to_read), sorted_fds(&self.to_write));
            let sleeping = match self.sleeping.len() {
                0 => String::new(),
                n => format!(" sleeping={n}"),
            };
            let (to_read, to_write) = (FdList(&to_read), FdList(&to_write));
            let ready = self.ready_queue.len();
            let verb = if ready == 0 {
                "waiting"
            } else {
                "checking (not sleeping)"
            };
            format!("{verb}: {ready} ready, to_read={to_read} to_write={to_write}{sleeping}")
        });
        self.epoll.wait(timeout)?;

        let (mut woken_read, mut woken_write) = (Vec::new(), Vec::new());
        // An event for an fd nobody is parked on is dropped: the task that owns the fd has not
        // seen `WouldBlock` since, so it will try its call before it parks again.
        for (fd, direction) in self.epoll.ready() {
            let (parked, woken) = match direction {
                Direction::Read => (&mut self.to_read, &mut woken_read),
                Direction::Write => (&mut self.to_write, &mut woken_write),
            };
            if let Some(task) = parked.remove(&fd) {
                self.ready_queue.push_back(task);
                woken.push(fd);
            }
        }
        let now = Instant::now();
        while let Some(entry) = self.sleeping.first_entry()
            && entry.key().0 <= now
        {
            let task = entry.remove();
            self.trace
                .say(|| format!("{task} woke up: its time has come"));
            self.ready_queue.push_back(task);
        }
        if !(woken_read.is_empty() && woken_write.is_empty()) {
            self.trace.say(|| {
                let (read, write) = (FdList(&woken_read), FdList(&woken_write));
                format!("epoll: ready read={read} write={write}: back to the ready queue")
            });
        }
        Ok(())
    }
}

/// The fds of a `to_read` or `to_write` map, in order, for the trace.
fn sorted_fds(parked: &HashMap<RawFd, NumberedTask>) -> Vec<RawFd> {
    let mut fds: Vec<RawFd> = parked.keys().copied().collect();
    fds.sort_unstable();
    fds
}

#[cfg(test)]
mod tests;
