//! # Lesson 4 — coroutines: send, throw, close, and delegation (`yield from`)
//!
//! Lesson 3's state machines could only say what they wait for. A **coroutine** is a
//! state machine you can also *talk to*: in Python, a generator whose `yield` is an
//! expression (`x = yield y`) receives values with `send`, can have exceptions raised inside
//! it with `throw`, can be ended early with `close`, and reports where it is
//! (`GEN_CREATED`, `GEN_SUSPENDED`, `GEN_CLOSED`). And a coroutine can hand its work to
//! another with `res = yield from inner`: everything the caller sends or throws goes to
//! `inner`, everything `inner` yields goes back to the caller, and `inner`'s return value
//! becomes `res`.
//!
//! Rust's built-in `std::ops::Coroutine` is nightly-only, so this lesson builds the same
//! protocol on stable Rust, by hand: a [`Coroutine`] trait (`resume`, `throw`, `close`,
//! `state`), each coroutine an enum of the places it can pause at — with the Python it
//! stands for in a comment above it — and a [`Delegate`] type that *is* `yield from`.
//!
//! ## The Python session, in Rust
//! `coroutines repl` replays the Python lesson's interpreter session: each command is one
//! line of Python, and prints what the interpreter prints (a traceback shortened to its last
//! line). `help` lists the commands.
//!
//! ```text
//! $ cargo run -q --bin coroutines -- repl
//! >>> new gen                    # g = gen()
//! >>> state                      # inspect.getgeneratorstate(g)
//! 'GEN_CREATED'
//! >>> next                       # next(g), the same as g.send(None)
//! 'Ready to accept message.'
//! >>> state
//! 'GEN_SUSPENDED'
//! >>> send example               # g.send('example')
//! Gen received: example
//! StopIteration
//! >>> state
//! 'GEN_CLOSED'
//! >>> new average                # g = average(), primed by @coroutine
//! >>> send 5
//! 5.0
//! >>> send 10
//! 7.5
//! >>> send 4
//! 6.33
//! >>> throw StopIteration        # g.throw(StopIteration): the "done" signal
//! Done!
//! StopIteration: 6.33
//! >>> new delegator              # sg = subgen(); g = delegator(sg)
//! >>> send ok                    # g.send('ok') goes through g to sg
//! .......... ok
//! >>> throw BlaBlaException      # so does the throw; sg returns, and g prints res
//! res:  BlaBlaException raised.
//! StopIteration
//! >>> state
//! 'GEN_CLOSED'
//! ```
//!
//! What to notice:
//! - A new `gen` has run nothing: `next` runs it to its first `yield`. `average` and
//!   `delegator` are *primed* by the `@coroutine` decorator ([`prime`]), so they are
//!   suspended at once, ready for `send`.
//! - Returning is how a coroutine ends, and the caller sees it as `StopIteration` with the
//!   return value: here `Ok(State::Complete(value))`. Resuming it after that is an error
//!   value (`Err(Error::Closed)`), never a panic.
//! - `throw` raises an exception *at the paused `yield`*: `average` catches `StopIteration`
//!   and returns its last mean; `gen` catches nothing, so the exception comes back out and
//!   the coroutine is closed.
//! - The delegator never looks at what passes through it: `subgen` prints the message and
//!   catches the exception. Only the return value stops at the delegator, which prints it.
//! - `GEN_RUNNING` is missing: in Rust nothing can look at a coroutine while it runs
//!   (`resume` takes `&mut self`), see [`GeneratorState`].
//!
//! `imgs/coroutines-delegation.svg` draws it: who sends what to whom, what is yielded back
//! up, and where the return value goes.
//!
//! ## The echo server: `data = yield from recv(client)`
//! `coroutines echo` runs the echo server as coroutine tasks on a scheduler, after David
//! Beazley's coroutine operating system: a task yields *system calls* — `ReadWait(fd)`,
//! `WriteWait(fd)`, `NewTask(task)`, `Sleep(d)` — and the scheduler keeps a ready queue
//! and `to_read` / `to_write` maps, waiting on epoll only when no task is ready. Each client
//! task delegates to `recv` and `send_all` sub-coroutines, which try the operation, yield
//! `ReadWait` / `WriteWait` only once the kernel said there is nothing — `WouldBlock`, or a
//! read or write that came back short — and no event came since, and return the result.
//! epoll is edge-triggered: it will not repeat an edge that has passed, so the scheduler
//! writes every event down in a [`readiness`] table, also when no task waits for it, and the
//! sub-coroutines ask it before they try. (A short read proves the socket empty, except when
//! it stopped at an urgent byte or took the peer's FIN along: epoll reports both — but for
//! one hostile case, see [`readiness`] — and the table remembers that too.) The backpressure of the other lessons comes for free: a
//! client is not read again until `send_all` returned.
//!
//! **The cooperative budget.** A client that never stops sending never makes its socket say
//! `WouldBlock`, so its task would never yield, and the others would wait — a quiet client's
//! `ping` behind a flood, the writer's pipe lines behind a flood on stdin. Nothing can
//! interrupt a coroutine, so the scheduler gives each task a [`budget`] of 32 operations
//! per turn (tokio gives 128 smaller ones): every `accept`, `recv`, `read` and `send` that
//! gets something done spends one, and once it is spent the next operation yields
//! `BudgetSpent` instead of trying. The scheduler then asks epoll, without sleeping, who else
//! is ready, serves them, and only then gives the task its next turn, with a full budget.
//! The client's code says nothing about it: it is in the sub-coroutines and the scheduler,
//! as it is in tokio's sockets and executor.
//!
//! **No copy per read.** `recv` returns the read buffer itself ([`bytes::Bytes`]), lent by
//! a small pool, and `send_all` gives it back once it is sent: a bulk stream costs no
//! allocation and no copy in our code, only the kernel's two.
//!
//! ```text
//! cargo run --bin coroutines -- echo --trace
//! nc 127.0.0.1 5000                          # in two or three more terminals
//! cargo run --bin coroutines -- writer       # stdin and the pipe, as two tasks
//! ```
//! `--trace` shows the scheduler: `resume client 127.0.0.1:4242`, `client … parks on read
//! fd 7`, `listener … starts client …`, `waiting with to_read=[5,7] to_write=[] sleeping=0
//! next_turn=0 timeout=none`, `fd 7 is READABLE → client … to the ready queue`, `client …
//! finished`. Send it a big file (`nc -N 127.0.0.1 5000 < big.iso > /dev/null`) and the budget
//! shows: `client … spent its budget of 32 operations: the others go first`, then a wait
//! that does not sleep, `next_turn=1 timeout=0.0ns`.
//!
//! The writer's two tasks park on stdin and the pipe the same way, each reading through a
//! `read` sub-coroutine ([`fd::ReadFd`]) that spends the same budget: a flood on one source
//! (`yes | coroutines writer`) does not hold up the other's lines. epoll refuses regular
//! files (`EPERM`: they are always ready), so `coroutines writer < file` says so in one line,
//! and the stdin task simply runs on every turn. As in lesson 3, the two tasks share the log
//! through an `Rc<RefCell<…>>`; lesson 5's one `async fn` is what makes it a local variable.
//!
//! ## How it maps to the Python
//! | Python                                         | here                                        |
//! |------------------------------------------------|---------------------------------------------|
//! | `g.send(v)`, `next(g)`; `x = yield y`          | `resume(Some(v))`, `resume(None)`; `Ok(State::Yielded(y))` |
//! | `return v`, seen as `StopIteration(v)`         | `Ok(State::Complete(v))`                    |
//! | `g.throw(E)`, `g.close()`                      | `throw(Exception::new("E"))`, `close()`     |
//! | `inspect.getgeneratorstate(g)`                 | `state()`                                   |
//! | `@coroutine`                                   | [`prime`]                                   |
//! | `res = yield from sg`                          | a `Delegating(Delegate<Subgen>)` variant; `res` comes out of its `Complete` |
//! | `yield ReadWait(sock)`, `WriteWait`, `NewTask` | `Syscall::ReadWait(fd)`, `WriteWait`, `NewTask` |
//! | the task queue, `TO_READ`, `TO_WRITE`          | `ready`, `to_read`, `to_write`              |
//! | `select(TO_READ, TO_WRITE, [])`                | `Poll::poll` (epoll), only when no task is ready |
//! | (none: one busy task runs on and on)           | the budget, `Syscall::BudgetSpent`, `next_turn` |
//!
//! ## Python originals
//! `5_coroutines/coroutines.py` (`gen`, `@coroutine`, `average`) and
//! `5_coroutines/delegation.py` (`subgen`, `delegator`), for the interpreter session;
//! Beazley's "A Curious Course on Coroutines and Concurrency" (its `pyos` scheduler and
//! `Socket` wrapper), for the server. The generator examples before and around them
//! (`countdown`, `up_and_down`, the log pipeline, `follow`, `grep` and `broadcast`) are in
//! `examples/`: `cargo run --example countdown_send`, and so on.
//!
//! # Layout
//! Seventeen files, in two parts. Read in this order:
//! 1. [`coroutine`]: the protocol — [`Coroutine`], [`State`], [`GeneratorState`],
//!    [`Exception`], [`Error`], [`prime`]; and [`coroutine::print`], Python's `print`.
//! 2. [`one_message`] (`gen`) and [`average`]: the Python lesson's coroutines, one enum each.
//! 3. [`delegate`]: [`Delegate`], which is `yield from`; then [`delegation`] (`subgen`,
//!    `delegator`), which uses it.
//! 4. [`repl`] and [`value`]: the interpreter session that drives them, and the Python values
//!    it reads and prints. That is the first part, the session above.
//! 5. [`scheduler`]: the second part, the server — tasks, system calls, the ready queue and
//!    the waiting maps, on mio.
//! 6. [`socket`]: the `accept`, `recv` and `send_all` sub-coroutines a task delegates to;
//!    [`budget`]: how much work a task may do per turn, which they spend; [`readiness`]:
//!    what epoll said about each fd, kept until the kernel says "nothing more", which they
//!    look at before each system call; [`bytes`]: the pooled buffers `recv` returns.
//! 7. [`echo`]: the server task; [`client`]: a client's task.
//! 8. [`fd`]: `read` for stdin and the pipe; [`writer`]: the stdin task and the pipe task.

use clap::{Parser, Subcommand};
use fdio::{ServerArgs, WriterArgs};
use std::process::ExitCode;

pub mod average;
pub mod budget;
pub mod bytes;
pub mod client;
pub mod coroutine;
pub mod delegate;
pub mod delegation;
pub mod echo;
pub mod fd;
pub mod one_message;
pub mod readiness;
pub mod repl;
pub mod scheduler;
pub mod socket;
pub mod value;
pub mod writer;

pub use coroutine::{Coroutine, Error, Exception, GeneratorState, State, Step, prime};
pub use delegate::Delegate;

/// Lesson 4: coroutines — send, throw, close, and delegation (yield from).
#[derive(Parser, Debug)]
#[command(name = "coroutines", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// A TCP echo server: a coroutine task per client, delegating to recv and send_all.
    Echo(ServerArgs),
    /// Watch stdin and a pipe with two coroutine tasks; append every line to --output.
    Writer(WriterArgs),
    /// Replay the Python lesson's interpreter session: new, send, next, throw, close, state.
    Repl,
}

/// The `coroutines` binary: parses the command line and runs the chosen program.
pub fn main() -> ExitCode {
    let result = match Cli::parse().command {
        Command::Echo(server) => echo::serve(&server),
        Command::Writer(args) => writer::run(&args),
        Command::Repl => repl::run(),
    };
    fdio::exit_code("coroutines", result)
}
