//! # Lesson 7 — work-stealing: many threads, one runtime
//!
//! Lesson 5's runtime runs every task on one thread: one core, however many the machine has.
//! This lesson runs them on N **worker** threads (`--workers N`, default: the number of CPUs)
//! — tokio's multi-thread scheduler, small enough to read. The programs do not change (the
//! echo is still one straight-line `async fn` per connection); the runtime under them does.
//!
//! ## Workers and their queues
//! Each worker has a **local run queue** of 256 tasks ([`queue`]): a ring its own thread
//! pushes to and pops from without a lock — the common case, a task woken or spawned by
//! another task on the same worker, costs two atomic operations and stays in that core's
//! cache. A task spawned or woken *outside* the workers (by `block_on`'s thread, by the
//! reactor's thread, by a timer) goes to the **injector**, one global queue behind a mutex;
//! so does half of a local queue that fills up, in one batch.
//!
//! A worker looks for its next task in this order:
//! 1. its own queue — except about every 200 µs of polling, when it looks at the injector
//!    first, so that tasks there cannot starve behind local ones that keep waking each
//!    other. The interval is counted in turns and tuned to the tasks, as tokio's is: every
//!    127th turn when polls are short, every 2nd when each takes a millisecond (tokio used
//!    to look every 61st turn, whatever a turn cost: a ping woken beside four flooding
//!    connections waited ~50 ms on one worker);
//! 2. the injector: it takes a fair share (the queue's length divided by the workers), one
//!    to run and the rest into its own queue;
//! 3. **stealing**: half of another worker's queue, starting at a random victim so that two
//!    thieves do not pick the same one — this is what keeps every core busy when one worker
//!    spawned everything;
//! 4. nothing anywhere: it **parks**.
//!
//! ## Parking, and not waking everyone
//! A parked worker sleeps on a condvar. On Linux std builds `Mutex` and `Condvar` on the
//! futex(2) system call: `FUTEX_WAIT` sleeps in the kernel only if the futex word still
//! holds the value the thread last saw, so a wake between the check and the sleep is not
//! lost, and `FUTEX_WAKE` wakes at most the given number of waiters — one here. A sleeping worker
//! costs no CPU.
//!
//! Whoever queues a task then wakes *one* parked worker — and only if no worker is already
//! **searching** (between "my queue is empty" and "parked"): a searcher will find the task.
//! Waking every worker for one task would have them all race for it and all but one go back
//! to sleep, a thundering herd. At most half the workers search at once. When the last
//! searcher finds work it wakes one more, so a burst of spawns spreads over the workers one
//! at a time. A worker about to park puts itself on the sleepers' list *first*, then looks at
//! every queue one last time: either a waker saw it on the list, or it sees the waker's task
//! (a `SeqCst` fence on each side makes one of the two true).
//!
//! ## The task's state machine
//! A waker may be woken on any thread at any moment: while its task is queued, while
//! another worker polls it, after it finished. One atomic word per task ([`state`]) decides
//! what each wake does — queue it (it was idle), note it (it is running: the worker queues
//! it again when the poll returns `Pending`), nothing (already queued, or complete) — so a
//! task is never queued twice, never polled on two threads at once, and a wake during a
//! poll is never lost. `abort` sets CANCELLED and queues an idle task, so the worker that
//! pops it drops its future.
//!
//! That is why a `Waker` is `Send + Sync`, and why `spawn` asks for `F: Future + Send +
//! 'static`: a task migrates between threads at every steal, so everything its future holds
//! across an `.await` must be `Send` — an `Rc` held across an `.await` does not compile
//! (see [`task`], whose doc-test shows the error). Lesson 5's `spawn` needed neither.
//!
//! ## I/O: a reactor thread
//! One mio `Poll` (epoll) serves all workers, on a thread of its own ([`reactor`]): it
//! sleeps in `epoll_wait` with the nearest timer as its timeout, and wakes the tasks whose
//! sources are ready. epoll_wait(2) allows it: "While one thread is blocked in a call to
//! epoll_wait(), it is possible for another thread to add a file descriptor to the
//! waited-upon epoll instance" — a worker registers a new connection while the reactor
//! waits. tokio instead lets an idle worker "take the driver" and sleep in `epoll_wait`
//! itself: no extra thread and no cross-thread hop per event, at the cost of two kinds of
//! parking and of busy workers polling epoll themselves now and then. Ours costs a hop:
//! the tasks each `epoll_wait` wakes go to the injector in one batch, and a worker is
//! unparked; and under load the reactor looks again a few times before it sleeps, as
//! sleeping and being woken for every round cost a third of the echo's throughput. `bench scheduler`'s echo
//! row measures it.
//!
//! mio registers sources edge-triggered: epoll(7) reports a change once, "edge-triggered
//! mode delivers events only when changes occur". So, as in lesson 5, each source keeps a
//! readiness bit per direction until an operation says `WouldBlock`. With the reactor on
//! another thread an event can now arrive between a task's `WouldBlock` and its clear, so
//! the bits carry a *tick* that every event bumps, and a clear only succeeds if the tick has
//! not moved (tokio's `ScheduledIo` does the same).
//!
//! The cooperative budget ([`budget`]) is lesson 5's: 32 I/O operations per poll.
//!
//! ## Written by hand, and checked by loom
//! The local queue and the task state are the lesson, so they are hand-written atomics, each
//! `unsafe` block with its `Safety:` comment. Atomics are easy to get subtly wrong, so every
//! place where threads race takes its atomics and locks from `sync.rs` — loom's
//! in a `--cfg loom` build — and is model-checked with [loom](https://docs.rs/loom): the
//! queue (push, pop and two thieves, a thief robbed while it copies, indexes that wrap past
//! `u32::MAX`), the task state (a wake or an abort racing a poll), parking (a task queued
//! while a worker goes to sleep, or while a searcher is about to), the reactor's readiness
//! (an event racing a clear), the join slot (a result racing the handle's poll):
//! ```sh
//! RUSTFLAGS="--cfg loom" CARGO_TARGET_DIR=target/loom \
//!     cargo test --release -p lesson-work-stealing --lib loom
//! ```
//! loom runs each model again and again, each time with another interleaving of its threads
//! at every atomic operation and lock, and another value where the memory model lets a load
//! return more than one, until it has run them all (about 40 s for all the models here, once
//! built). All of them, for every model but one: loom can bound the **preemptions** of a
//! run — the times a thread that could go on is stopped so that another runs
//! (`LOOM_MAX_PREEMPTIONS`, or the model's own `Builder`) — and then runs only the
//! interleavings with at most that many. The two-worker parking model has three threads and
//! bounds itself to 2 (at 3 it took five minutes here): loom's authors find that 2 or 3
//! catch most bugs, but a bug there that needs three preemptions would go unseen. Nor does
//! loom implement the whole C11 memory model: it treats `SeqCst` loads and stores as
//! `AcqRel` (which can only make it report a bug that cannot happen — so the handshakes
//! that need `SeqCst` use `SeqCst` fences, which it does model), and it does not try every
//! reordering `Relaxed` allows ("load buffering"), so such a bug could pass it.
//!
//! loom found a real bug while this lesson was written: a wake that found the task already
//! queued changed nothing — so wrote nothing, published nothing — and the poll that followed
//! could miss what the waker had done just before. Now every wake writes the word. The
//! injector is a `Mutex<VecDeque>`: used once per batch, it is not worth a lock-free queue.
//!
//! ## Run it
//! ```sh
//! cargo run --bin work-stealing -- tour --trace   # spawns, steals, parks, unparks
//! cargo run --bin work-stealing -- echo --workers 2   # Ctrl+C shuts it down gracefully
//! cargo run --bin work-stealing -- writer        # stdin and the pipe, as in every lesson
//! cargo run --bin work-stealing -- tour --timeline tour.json   # every poll, steal, park
//! cargo run --release -p bench -- scheduler      # against tokio's multi-thread runtime
//! ```
//! `--timeline FILE` (on `echo`, `writer` and `tour`) records a lane per thread — `main` in
//! `block_on`, each worker, the reactor — with each poll, each `epoll_wait`, each park, each
//! steal and each wake, in Chrome's trace format: open it in ui.perfetto.dev, or draw it with
//! `cargo run --bin timeline -- FILE --svg out.svg`.
//!
//! # Layout, in the order to read it
//! 1. [`echo`]: the program — lesson 5's, with `Arc` for `Rc`; then [`tour`], the runtime at
//!    work.
//! 2. [`worker`]: the workers' loop — own queue, the injector, stealing, parking.
//! 3. [`queue`]: the local run queue, a lock-free ring; steal-half.
//! 4. [`state`]: the task's atomic state: what a wake does, from any thread. Then [`task`]:
//!    the task, its waker, `JoinHandle`, and why `spawn` needs `Send`.
//! 5. [`idle`]: parking without losing a wake, and without waking everyone.
//! 6. [`runtime`]: `Runtime` (`new`, `block_on`, `spawn`), where a woken task goes;
//!    [`spawn`], [`yield_now`]. [`injector`]: the global queue.
//! 7. [`reactor`]: the reactor's thread, readiness with a tick, tokens with a generation,
//!    timers.
//! 8. Lesson 5's, made `Send`: [`net`] (`TcpListener`, `TcpStream`), [`io`] (stdin and
//!    pipes), [`time`] (`sleep`, `timeout`), [`budget`], [`signal`], [`future`] (`race`,
//!    `Event`); and [`writer`], the writer program.
//! 9. `sync.rs`: std's atomics and locks, or loom's for the model checks.

use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use fdio::{ServerArgs, TimelineArgs, WriterArgs};

pub mod budget;
pub mod echo;
pub mod future;
pub mod idle;
pub mod injector;
pub mod io;
pub mod net;
pub mod queue;
pub mod reactor;
pub mod runtime;
pub mod signal;
pub mod state;
mod sync;
pub mod task;
pub mod time;
pub mod tour;
pub mod worker;
pub mod writer;

// The runtime's stress tests (a million tasks, watchdogs on the clock) are left out under
// Miri, which would take hours over them: it checks the unsafe parts through the tests of
// `queue`, `state` and `task`, which run the same code on a small scale.
#[cfg(all(test, not(loom), not(miri)))]
mod tests;

pub use future::{Either, Event, race};
pub use net::{TcpListener, TcpStream};
pub use runtime::{Runtime, spawn, spawn_named, yield_now};
pub use task::{JoinError, JoinHandle};
pub use time::{sleep, timeout};

/// Lesson 7: a multi-threaded, work-stealing runtime.
#[derive(Parser, Debug)]
#[command(name = "work-stealing", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// How many worker threads to run.
#[derive(Args, Debug, Clone)]
struct Workers {
    /// Worker threads (default: the number of CPUs).
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..=1024))]
    workers: Option<u16>,
}

impl Workers {
    fn count(&self) -> usize {
        self.workers
            .map_or_else(runtime::Runtime::default_workers, usize::from)
    }
}

#[derive(Subcommand, Debug)]
enum Command {
    /// A TCP echo server: one task per connection, on every worker; Ctrl+C or SIGTERM shuts
    /// it down gracefully.
    Echo {
        #[command(flatten)]
        server: ServerArgs,
        #[command(flatten)]
        workers: Workers,
        #[command(flatten)]
        timeline: TimelineArgs,
    },
    /// Read stdin and a pipe as async streams; append every line to --output as it arrives.
    Writer {
        #[command(flatten)]
        args: WriterArgs,
        #[command(flatten)]
        workers: Workers,
        #[command(flatten)]
        timeline: TimelineArgs,
    },
    /// A guided run: tasks spawned on one worker and stolen by another, parked and woken
    /// workers, a CPU-bound task beside an echo that keeps answering.
    Tour {
        /// Narrate spawns, steals, parks and wakes on stderr.
        #[arg(long)]
        trace: bool,
        /// Worker threads (at least 2).
        #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u16).range(2..=1024))]
        workers: u16,
        #[command(flatten)]
        timeline: TimelineArgs,
    },
}

/// The `work-stealing` binary: parses the command line and runs the chosen program.
pub fn main() -> ExitCode {
    let result = match Cli::parse().command {
        Command::Echo {
            server,
            workers,
            timeline,
        } => timeline
            .record("work-stealing echo")
            .and_then(|_recording| echo::run(&server, workers.count())),
        Command::Writer {
            args,
            workers,
            timeline,
        } => timeline
            .record("work-stealing writer")
            .and_then(|_recording| {
                runtime::Runtime::with_trace(workers.count(), fdio::Trace::new(args.trace))
                    .and_then(|runtime| runtime.block_on(writer::run(&args)))
            }),
        Command::Tour {
            trace,
            workers,
            timeline,
        } => timeline
            .record("work-stealing tour")
            .and_then(|_recording| tour::run(usize::from(workers), trace)),
    };
    fdio::exit_code("work-stealing", result)
}
