//! # Lesson 5 — async/await on a runtime of our own
//!
//! Lessons 3 and 4 wrote state machines by hand and a scheduler that resumed them. Rust's
//! `async fn` *is* such a state machine, written by the compiler: each `.await` is a state,
//! and `Future::poll` resumes it. What `async`/`await` does not give you is the scheduler —
//! that is the runtime, and this lesson builds one, small enough to read:
//!
//! - the **executor** polls tasks that are ready, one after another, on one thread;
//! - a task that cannot go on returns `Pending` after leaving its **`Waker`** somewhere —
//!   with the **reactor** (mio/epoll) for I/O, with the **timers** for `sleep`, with a lock's
//!   queue, or with a thread of the **blocking** pool;
//! - whoever holds the waker calls `wake()` when the task can go on, which puts the task
//!   back on the executor's ready queue;
//! - a task that could always go on (a client that never stops sending) is stopped after a
//!   **budget** of operations per poll, so the others are served too.
//!
//! That is asyncio's design too (slides: the loop sleeps in `select`/`epoll` with the nearest
//! timer as its timeout; a coroutine awaiting a read is parked and its fd watched).
//!
//! ## Run it
//! ```text
//! cargo run --bin async-await -- echo          # Ctrl+C shuts it down gracefully
//! cargo run --bin async-await -- clock         # two coroutines printing side by side
//! cargo run --bin async-await -- clock --block-ms 800          # one blocks: the other freezes
//! cargo run --bin async-await -- clock --block-ms 800 --fixed  # spawn_blocking: both keep time
//! cargo run --bin async-await -- download      # 20 downloads, one by one, then at once
//! cargo run --bin async-await -- tasks         # a guided tour: spawn, panic, abort, locks…
//! cargo run --bin async-await -- writer        # stdin and the pipe, as in every lesson
//! cargo run --bin async-await -- handmade      # a future by hand: polled, Pending, woken, Ready
//! cargo run --bin async-await -- cancel        # a read cancelled mid-line: the part lost, or kept
//! ```
//! `--trace` (on `echo` and `writer`) shows the runtime at work: `executor: polling task 3`,
//! `reactor: waiting for I/O, timeout=none`, `reactor: Token(2) readable → wake its reader`.
//! `--timeline FILE` (on `echo`, `writer` and `tasks`) records the same as a picture: each
//! poll, each `epoll_wait` with what it found, each wake, on each thread, in Chrome's trace
//! format (open it in ui.perfetto.dev, or `cargo run --bin timeline -- FILE --svg out.svg`).
//!
//! # Layout
//! Read in this order:
//! 1. The ground under `async`/`await`: [`handmade`], a future written by hand and the
//!    waker contract it keeps; [`desugared`], an `async fn` written out as the enum the
//!    compiler makes, and why `poll` takes `Pin<&mut Self>`; [`cancel`], cancellation as a
//!    drop (asyncio throws instead) and a line reader that survives it.
//! 2. [`executor`]: `block_on`, the loop, `spawn`, the ready queue and the waker.
//! 3. [`reactor`]: epoll through mio; per source and direction, a readiness bit and a waker.
//!    Then [`net`] (`TcpListener`, `TcpStream`), where each I/O call meets it, and [`io`]
//!    (stdin and pipes).
//! 4. [`budget`]: the cooperative budget — 32 I/O operations per poll, then the others run.
//! 5. [`time`]: `sleep`, `sleep_until`, `timeout`, `interval`.
//! 6. [`combinators`]: `race`, `join_all`, `yield_now`.
//! 7. [`task`]: `JoinHandle` (await, `is_finished`, `abort`) and `JoinError`.
//! 8. [`sync`]: `Mutex`, `Semaphore`, `Event`. [`blocking`]: `spawn_blocking`, `resolve`.
//!    [`signal`]: signals through a self-pipe.
//! 9. [`runtime`]: what one loop owns, the thread-local through which a future finds it, and
//!    the guards that clean up however `block_on` ends.
//! 10. The programs: [`echo`], [`writer`], [`clock`], [`download`], [`tour`].

use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use fdio::{ServerArgs, TimelineArgs, Trace, WriterArgs};

pub mod blocking;
pub mod budget;
pub mod cancel;
pub mod clock;
pub mod combinators;
pub mod desugared;
pub mod download;
pub mod echo;
pub mod executor;
pub mod handmade;
pub mod io;
pub mod net;
pub mod reactor;
pub mod runtime;
pub mod signal;
pub mod sync;
pub mod task;
pub mod time;
pub mod tour;
pub mod writer;

#[cfg(test)]
mod tests;

/// Lesson 5: async/await on a runtime of our own.
#[derive(Parser, Debug)]
#[command(name = "async-await", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// A TCP echo server: one task per connection; Ctrl+C or SIGTERM shuts it down gracefully.
    Echo {
        #[command(flatten)]
        server: ServerArgs,
        #[command(flatten)]
        timeline: TimelineArgs,
    },
    /// Read stdin and a pipe as async streams; append every line to --output as it arrives.
    Writer {
        #[command(flatten)]
        args: WriterArgs,
        #[command(flatten)]
        timeline: TimelineArgs,
    },
    /// Two coroutines side by side: one counts every second, one reports every 3 seconds.
    Clock {
        /// Stop after this many seconds (default: run until Ctrl+C).
        #[arg(long)]
        for_secs: Option<u32>,
        /// How long a "second" lasts, in milliseconds (to watch it faster).
        #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..))]
        tick_ms: u64,
        /// After each number, block the loop's thread this long (`std::thread::sleep`): the
        /// other coroutine freezes meanwhile.
        #[arg(long, value_parser = clap::value_parser!(u64).range(1..=60_000))]
        block_ms: Option<u64>,
        /// Run that blocking work with `spawn_blocking`, on the pool: nobody else waits.
        #[arg(long, requires = "block_ms")]
        fixed: bool,
    },
    /// Fetch --count resources from a slow local HTTP server: one by one, then all at once.
    Download {
        /// How many resources to fetch.
        #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..=1000))]
        count: u32,
        /// How long the server waits before each response, in milliseconds.
        #[arg(long, default_value_t = 300)]
        delay_ms: u64,
    },
    /// A guided tour of the runtime: spawn, results, panics, abort, timeout, locks, DNS.
    Tasks {
        #[command(flatten)]
        timeline: TimelineArgs,
    },
    /// A line reader cancelled mid-line by a timer: it loses the part it held, or does not.
    Cancel,
    /// A future written by hand, polled by a loop of our own: polled, Pending, woken, Ready.
    Handmade {
        /// How long the timer thread waits before it rings, in milliseconds.
        #[arg(long, default_value_t = 100)]
        delay_ms: u64,
    },
}

/// The `async-await` binary: parses the command line and runs the chosen program.
pub fn main() -> ExitCode {
    let result = match Cli::parse().command {
        Command::Echo { server, timeline } => timeline
            .record("async-await echo")
            .and_then(|_recording| echo::run(&server)),
        Command::Writer { args, timeline } => {
            timeline
                .record("async-await writer")
                .and_then(|_recording| {
                    executor::block_on(Trace::new(args.trace), writer::run(&args)).and_then(|r| r)
                })
        }
        Command::Clock {
            for_secs,
            tick_ms,
            block_ms,
            fixed,
        } => {
            let work = block_ms.map(|ms| clock::Work {
                blocks_for: Duration::from_millis(ms),
                on_pool: fixed,
            });
            clock::run(for_secs, Duration::from_millis(tick_ms), work)
        }
        Command::Download { count, delay_ms } => {
            download::run(count, Duration::from_millis(delay_ms))
        }
        Command::Tasks { timeline } => timeline
            .record("async-await tasks")
            .and_then(|_recording| tour::run()),
        Command::Cancel => cancel::run(),
        Command::Handmade { delay_ms } => handmade::run(Duration::from_millis(delay_ms)),
    };
    fdio::exit_code("async-await", result)
}
