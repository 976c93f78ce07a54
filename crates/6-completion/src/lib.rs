//! # Lesson 6 — completion: io_uring, "do this and tell me when it is done"
//!
//! Every lesson so far was built on *readiness*: the kernel says "fd 7 can be read now"
//! (select, poll, epoll), and then the program makes the `read` itself. The slides name the
//! other model twice: Windows' asynchronous I/O ("the IO operation is directly issued, the
//! function returns immediately, and comes with a notification queue"), and disks, where
//! readiness has nothing to say ("a file is always ready"). On Linux that model is
//! **io_uring**: we do not ask *when can I read*, we ask *read this into that buffer*, and
//! later the kernel tells us it is done — and how many bytes it read.
//!
//! ## The rings
//! Two ring buffers in memory shared with the kernel (`io_uring_setup(2)`):
//! - the **submission ring** (SQ): we push requests — "receive from fd 7", "send these
//!   bytes to fd 9", "accept on fd 3", "wake me in 2 s" — each with a 64-bit `user_data`;
//! - the **completion ring** (CQ): the kernel pushes results — the `user_data` it was given,
//!   the result (a byte count, a new fd, or a negated errno) and flags.
//!
//! `user_data` is the token, as in lesson 2: ours is the index of a slot holding the
//! results and the waker of the task that waits for them ([`ring`]). Pushing and reaping
//! are plain memory accesses; the one system call, `io_uring_enter(2)`, is made **once
//! per turn** of the loop, and that one call does both jobs: with `to_submit` it hands the
//! kernel every request pushed during the turn, and with `IORING_ENTER_GETEVENTS` and
//! `min_complete = 1` it sleeps until at least one result is there. `--trace` prints each
//! turn: `ring: submitted [recv×1, send×2], waited → completed [send×2]; io_uring_enter
//! calls: 1 (total 57)`. A thousand connections echoing at once still make one call a turn —
//! until a turn pushes more than the submission ring holds (1024 entries): then one more
//! call each time it fills, which `--trace` counts too.
//!
//! ## Ownership: why the buffer must be *given* to the request
//! With readiness, `read(&mut buf)` borrowed the buffer only during the `read(2)` the
//! program itself made. With completions the kernel writes into the buffer *later*, at a
//! moment of its choosing. A future `read(&mut buf)` that submits a request and is then
//! dropped (it lost a `race`, a timeout fired) ends the borrow — but not the request: the
//! kernel would write into memory that is now someone else's. Safe Rust cannot forbid
//! dropping a future, and `Drop` cannot wait. So the async layer takes **owned buffers**:
//! `let (result, buf) = op.await` ([`op`]). A request dropped in flight leaves its buffer
//! in its slot and is cancelled with `IORING_OP_ASYNC_CANCEL`; a cancel is itself a
//! request, which may come too late (the original then completes with its data), so the
//! buffer can be freed or reused only after the request's **last completion**. And the
//! buffer's bytes must not move while the request moves it around: a `Vec`'s bytes stay on
//! the heap, an array's go wherever the array goes. That promise is a type, the `unsafe
//! trait` [`IoBuf`](buf::IoBuf) ([`buf`]); the requests take nothing else, and handing the
//! kernel an entry with a raw pointer in it is an `unsafe fn` whose contract is written down
//! ([`op::Op::submit`]). Safe code cannot make the kernel touch memory nobody owns.
//!
//! ## Closing is a request too
//! An entry names its file by fd *number*, and the kernel looks the number up when it
//! issues the request — during the `io_uring_enter` that submits it — not when we push it.
//! A stream dropped in between and closed with `close(2)` would free the number, and the
//! next socket the program opens (the lowest free number) would inherit the old entries: a
//! receive taking the new client's bytes, a send giving it ours. So every handle closes its
//! fd through the ring ([`fd`]): `IORING_OP_CLOSE` goes in after the entries that name the
//! number, and the kernel takes them in order.
//!
//! ## The modern echo
//! [`echo`] is lesson 5's program line for line, on this runtime:
//! - one **multishot accept** (Linux 5.19): submitted once, it completes once per new
//!   connection (`IORING_CQE_F_MORE` says it goes on);
//! - one **multishot receive** per connection (Linux 6.0) into a **provided-buffer ring**
//!   ([`bufring`], `IORING_REGISTER_PBUF_RING`): the kernel picks a buffer only when bytes
//!   arrive, so 10,000 idle connections hold no buffer at all;
//! - a **send** that owns the buffer it received ([`net`]); dropping it afterwards gives it
//!   back, and the next turn offers the buffers given back last first, keeping only a few
//!   more in the ring than one per receive: the same buffers come back while they are still
//!   in the cache;
//! - **re-arm** when a multishot ends: after an error, EOF, `ENOBUFS` (the ring ran dry:
//!   no byte is lost, they stay in the socket), or our own **pause**: a connection with
//!   [`SHARE`](net::SHARE) (8) filled buffers waiting untaken is cancelled, so one busy
//!   connection cannot fill the whole ring;
//! - and when the ring is empty — 2,000 clients that never read their echo want more
//!   buffers than it has, whatever each one's share — a connection receives into a **buffer
//!   of its own** instead of waiting for the ring: nobody ever waits for a buffer another
//!   client keeps, and a client that never reads costs only itself.
//!
//! The executor is lesson 5's — tasks, wakers, a ready queue, a budget of 32 operations per
//! poll ([`budget`]), a panic that ends only its task; `spawn` returns no `JoinHandle` here
//! — with the reactor swapped for the ring ([`executor`]); timers are
//! requests too (`IORING_OP_TIMEOUT`, [`time`]), and so is the signal pipe's read
//! ([`signal`]). A waker fired from another thread rings a [`doorbell`]: an eventfd whose
//! read is always in flight, so the loop asleep in `io_uring_enter` wakes up. Ctrl+C or
//! SIGTERM shuts the server down gracefully, as in lesson 5 — and since nothing completes
//! when a client acknowledges our bytes, a closing connection asks the socket how many it
//! has not (`SIOCOUTQ`, the kernel's count of bytes not yet acknowledged, our EOF as one
//! more) until none is left, then closes: no byte counted as echoed is lost.
//!
//! ## Disks, finally
//! [`writer`] reads stdin and the pipe with `IORING_OP_READ` and appends to the output file
//! with `IORING_OP_WRITE`. A regular file as stdin needs no special case (epoll refused it
//! with `EPERM`), and the file write no longer blocks the loop. Both reads are in flight at
//! once; the one that loses a race stays in flight in its reader ([`io`]).
//!
//! ## Run it
//! ```text
//! cargo run --bin completion -- probe           # is io_uring usable here?
//! cargo run --bin completion -- echo            # Ctrl+C shuts it down gracefully
//! cargo run --bin completion -- echo --trace    # one line per io_uring_enter
//! cargo run --bin completion -- writer          # stdin and the pipe, through the ring
//! cargo run --bin completion -- echo --timeline echo.json   # every poll, enter and wake
//! ```
//! `--timeline FILE` (on `echo` and `writer`) records each poll, each `io_uring_enter` with
//! what it submitted and what completed, and each wake, in Chrome's trace format: open it in
//! ui.perfetto.dev, or draw it with `cargo run --bin timeline -- FILE --svg out.svg`.
//! io_uring needs Linux 6.0 or later here (multishot receive), and much can stand in its
//! way: a seccomp filter (containers), `sysctl kernel.io_uring_disabled`, a small
//! locked-memory limit (`ulimit -l`). Each program sets up its ring — and `probe` the same
//! ring — before it prints anything, and what fails is said in one line with its likely
//! cause and fix, exit 1 ([`probe`]).
//!
//! Python's asyncio has the same split: its default loop is readiness-based (selectors),
//! and on Windows its *proactor* loop is completion-based (IOCP) — the loop this lesson is.
//!
//! # Read in this order
//! 1. [`op`] — a request as a future that owns its buffer; [`buf`] — the buffer contract;
//!    [`fd`] — why an fd is closed through the ring.
//! 2. [`ring`] — the two rings and one `io_uring_enter` per turn; [`slots`] — a request's
//!    life, one state at a time.
//! 3. [`bufring`] — the provided-buffer ring; [`net`] — multishot accept and receive, the
//!    share and the buffer of one's own, sends, the graceful close.
//! 4. [`executor`] — lesson 5's executor on the ring; [`doorbell`] — wakes from other
//!    threads; [`budget`] — fairness.
//! 5. The programs: [`echo`], then [`writer`] with [`io`] (reads and writes as requests).
//! 6. The small parts: [`time`] (timers as requests), [`signal`], [`sync`]; [`probe`] (is
//!    io_uring usable here?); `trace` (what `--trace` prints, kept off the loop's path).

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use fdio::{ServerArgs, TimelineArgs, Trace, WriterArgs};

pub mod budget;
pub mod buf;
pub mod bufring;
pub mod doorbell;
pub mod echo;
pub mod executor;
pub mod fd;
pub mod io;
pub mod net;
pub mod op;
pub mod probe;
pub mod ring;
pub mod signal;
pub mod slots;
pub mod sync;
pub mod time;
mod trace;
pub mod writer;

#[cfg(test)]
mod tests;

/// Lesson 6: completion-based I/O with io_uring.
#[derive(Parser, Debug)]
#[command(name = "completion", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// A TCP echo server on io_uring: multishot accept and receive; Ctrl+C or SIGTERM shuts
    /// it down gracefully.
    Echo {
        #[command(flatten)]
        server: ServerArgs,
        #[command(flatten)]
        timeline: TimelineArgs,
    },
    /// Read stdin and a pipe through the ring; append every line to --output with ring writes.
    Writer {
        #[command(flatten)]
        args: WriterArgs,
        #[command(flatten)]
        timeline: TimelineArgs,
    },
    /// Say whether io_uring is usable here (exit 0) or why not (exit 1).
    Probe,
}

/// The `completion` binary: checks the kernel, then runs the chosen program (which sets up
/// its ring first, and says in one line why not if it cannot).
pub fn main() -> ExitCode {
    let command = Cli::parse().command;
    let result = probe::check_kernel().and_then(|()| match command {
        Command::Echo { server, timeline } => {
            let _recording = timeline.record("completion echo")?;
            echo::run(&server)
        }
        Command::Writer { args, timeline } => {
            let _recording = timeline.record("completion writer")?;
            executor::block_on(Trace::new(args.trace), writer::run(&args)).and_then(|r| r)
        }
        Command::Probe => probe::check().map(|said| println!("{said}")),
    });
    fdio::exit_code("completion", result)
}
