//! What a task is: Python's generator protocol, written out by hand.
//!
//! A Python generator stops at each `yield` and hands the scheduler a value; `next(task)`
//! runs it again from there. Here a task is a struct whose state `enum` records where it
//! stopped; [`Task::resume`] runs it from there to its next stop, and the [`Step`] it returns
//! is the yielded value: "resume me when fd 7 is readable".
//!
//! ## The rule every task keeps: try first, wait second
//! The scheduler waits on epoll, and mio always asks epoll for *edge-triggered* events: epoll
//! says "fd 7 became readable" once, when bytes arrive — not "fd 7 is readable" on every call,
//! as `select` does. A task that parks on `Read(fd)` while bytes are still waiting in `fd` is
//! never told about them again. So:
//!
//! **Yield `Read(fd)` only right after a read of `fd` said `WouldBlock`, and `Write(fd)` only
//! right after a write did.** Then whatever the task waits for has not happened yet, and
//! epoll will report it. Python's generators yield *before* each call, which only works with
//! a level-triggered `select`.
//!
//! Two safe exceptions, both used: parking before the first call on a fresh fd (registering an
//! fd with epoll reports what is already waiting in it); and, for a blocking fd that never says
//! `WouldBlock` (stdin), asking [`fdio::readable_now`] instead.

use std::io;
use std::os::fd::RawFd;
use std::time::Instant;

use fdio::Trace;

/// What a task waits for when it gives control back: the value a Python generator yields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Resume me once `fd` is readable (Python: `yield "read", sock`). Only right after a read
    /// of `fd` said `WouldBlock`.
    Read(RawFd),
    /// Resume me once `fd` is writable (Python: `yield "write", sock`). Only right after a
    /// write to `fd` said `WouldBlock`.
    Write(RawFd),
    /// I have more to do, but let every other ready task go first (Python: a bare `yield`).
    Yield,
    /// Resume me at this instant.
    Sleep(Instant),
    /// I am finished: drop me, which closes my sockets (Python: `StopIteration`).
    Done,
}

/// A hand-written generator: `resume` runs the task until it must wait and says what for.
pub trait Task {
    /// Runs until the task must wait. An error ends the whole scheduler: a task that must
    /// not take the program down with it (an echo client) handles its own errors.
    fn resume(&mut self, ctx: &mut Context<'_>) -> io::Result<Step>;

    /// What the trace calls this task: `client 127.0.0.1:4242`.
    fn describe(&self) -> String;
}

/// What a running task may use besides itself.
pub struct Context<'a> {
    /// The `--trace` narrator.
    pub trace: Trace,
    /// One read buffer for every task: only one task runs at a time, so 10,000 idle
    /// connections cost no read buffer at all.
    pub buf: &'a mut [u8],
    spawned: &'a mut Vec<Box<dyn Task>>,
}

impl<'a> Context<'a> {
    pub(crate) fn new(
        trace: Trace,
        buf: &'a mut [u8],
        spawned: &'a mut Vec<Box<dyn Task>>,
    ) -> Context<'a> {
        Context {
            trace,
            buf,
            spawned,
        }
    }

    /// Adds a task; it first runs on the next turn. Python: `tasks.append(client(sock))`.
    pub fn spawn(&mut self, task: impl Task + 'static) {
        self.spawned.push(Box::new(task));
    }
}
