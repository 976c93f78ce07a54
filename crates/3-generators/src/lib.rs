//! # Lesson 3 — generators: tasks that say what they wait for
//!
//! Lesson 2 handed the event loop one callback per fd, and each callback had to remember by
//! hand where its connection stood. Here every connection is a **task**: a piece of code that
//! runs until it would block, then stops and *says what it waits for* — "resume me when fd 7
//! is readable". A **scheduler** keeps the tasks that can run in a ready queue and parks the
//! others in `to_read` / `to_write` maps, keyed by fd. It waits on epoll only when no task
//! is ready, and puts the tasks whose fd became ready back in the queue.
//!
//! Python writes such tasks as generators: `yield ("read", sock)` stops the function right
//! there, and `next(task)` later resumes it on the line after (David Beazley's "Concurrency
//! from the ground up"). Stable Rust has no generators, so each task here is written the way
//! a compiler writes one: an `enum` of the places it can stop at, and a `resume` method that
//! runs from the current place to the next. That enum is exactly what an `async fn` becomes
//! (lesson 5); the Python generator each one stands for is in a comment above it.
//!
//! ## `generators echo` — a server task and one task per client
//! ```text
//! cargo run --bin generators -- echo --trace
//! nc 127.0.0.1 5000                     # in two or three more terminals
//! ```
//! Observe: every client gets its echo at once. `--trace` narrates the scheduler; here one
//! client connects and sends `hi`:
//! <!-- session: generators-echo-trace -->
//! ```text
//! parked task 1 (server 127.0.0.1:5000) on read fd 3
//! waiting: 0 ready, to_read=[3] to_write=[]
//! epoll: ready read=[3] write=[]: back to the ready queue
//! resumed task 1 (server 127.0.0.1:5000)
//! connection from 127.0.0.1:34390
//! spawned task 2 (client 127.0.0.1:34390)
//! task 1 (server 127.0.0.1:5000) yields: back of the ready queue
//! resumed task 2 (client 127.0.0.1:34390)
//! parked task 2 (client 127.0.0.1:34390) on read fd 5
//! resumed task 1 (server 127.0.0.1:5000)
//! parked task 1 (server 127.0.0.1:5000) on read fd 3
//! waiting: 0 ready, to_read=[3,5] to_write=[]
//! epoll: ready read=[5] write=[]: back to the ready queue
//! resumed task 2 (client 127.0.0.1:34390)
//! task 2 (client 127.0.0.1:34390) yields: back of the ready queue
//! checking (not sleeping): 1 ready, to_read=[3] to_write=[]
//! resumed task 2 (client 127.0.0.1:34390)
//! parked task 2 (client 127.0.0.1:34390) on read fd 5
//! ```
//! Task 1 is the server task, parked on the listener (fd 3; fd 4 is epoll itself) between
//! connections. Each task runs until its next read would block, and only then parks: task 2
//! echoed `hi`, yielded in case more was coming, found nothing, and parked again. The loop
//! sleeps (`waiting`) only when no task is ready. A client task sits in `to_write` only while
//! it owes its client bytes that the client has not read yet.
//!
//! ## `generators writer` — stdin and the pipe as two tasks
//! ```text
//! cargo run --bin generators -- writer  # type now and then; Ctrl+D to stop
//! tail -f output.txt                    # in another terminal
//! ```
//! Observe: pipe lines arrive every second while you type nothing, as in lessons 1 and 2.
//! When the pipe's writer closes it, the pipe task finishes and nothing wakes the loop any
//! more. `generators writer < notes.txt` works too: epoll refuses to watch a regular file
//! (a read of one never says `WouldBlock`, though it can still wait for the disk: readiness
//! cannot express that), the program says so in one line, and the scheduler puts the stdin
//! task straight back in the ready queue instead of parking it. The two tasks are two values
//! the scheduler owns, so the log they both append to is still shared through an
//! `Rc<RefCell<…>>`, as in lesson 2; only lesson 5's writer, one `async fn`, keeps it in a
//! local variable.
//!
//! ## From the Python original to this lesson
//! | Python (`4_generators/generators.py`)        | here                                            |
//! |----------------------------------------------|-------------------------------------------------|
//! | a generator function                         | a struct, a state `enum`, and [`task::Task`]    |
//! | `yield "read", sock` / `yield "write", sock` | `return Ok(Step::Read(fd))` / `Step::Write(fd)` |
//! | `next(task)`                                 | `task.resume(ctx)`                              |
//! | `StopIteration`                              | `Step::Done`                                    |
//! | `tasks`, `to_read`, `to_write`               | `ready_queue`, `to_read`, `to_write`            |
//! | `select(to_read, to_write, [])`              | mio's `Poll::poll` (epoll)                      |
//! | `tasks.append(client(sock))`                 | `ctx.spawn(ClientTask::new(stream, peer))`      |
//!
//! Two things Python's level-triggered `select` lets it skip. From here on we use epoll through
//! mio, and mio chose for us: it registers every fd edge-triggered (`EPOLLET`), where epoll's
//! own default — lesson 2's — is level-triggered. So a task yields `Read(fd)` only after a read
//! said `WouldBlock`: it tries first and waits second, where the Python waits first. And a task
//! that still has work yields `Step::Yield` to go to the back of the queue, so one busy client
//! never starves the rest.
//! The picture of it all: `imgs/generators-scheduler.svg`.
//!
//! # Layout
//! Read in this order:
//! 1. [`task`]: what a task is — `Task`, `Step`, `Context` — and the rule every task keeps.
//! 2. [`scheduler`]: the ready queue, `to_read`, `to_write`, and the loop that runs them.
//! 3. [`epoll`]: the scheduler's `select`: which fds epoll watches, for which task.
//! 4. [`echo`]: the server task and the client task.
//! 5. [`writer`]: the stdin task and the pipe task.

use clap::{Parser, Subcommand};
use fdio::{ServerArgs, Trace, WriterArgs};
use std::process::ExitCode;

pub mod echo;
pub mod epoll;
pub mod scheduler;
pub mod task;
pub mod writer;

/// Lesson 3: hand-written state machines and a scheduler.
#[derive(Parser, Debug)]
#[command(name = "generators", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// A TCP echo server: a server task and one task per client, run by one scheduler on epoll.
    Echo {
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Read stdin and a pipe as two tasks; append every line to --output as it arrives.
    Writer {
        #[command(flatten)]
        writer: WriterArgs,
    },
}

/// The `generators` binary: parses the command line and runs the chosen program.
pub fn main() -> ExitCode {
    let result = match Cli::parse().command {
        Command::Echo { server } => fdio::raise_fd_limit()
            .and_then(|_| fdio::listen(server.addr))
            .and_then(|listener| echo::serve(listener, Trace::new(server.trace))),
        Command::Writer { writer } => writer::run(&writer),
    };
    fdio::exit_code("generators", result)
}
