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
//! so does half of a local queue that fills up, in one batch. (A worker that waited in
//! `epoll_wait` itself queues the tasks it woke in its own queue: see I/O below.)
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
//! 4. nothing anywhere: it **parks** — in `epoll_wait`, if no other worker waits there.
//!
//! ## Parking, and not waking everyone
//! A parked worker sleeps on a condvar (or in `epoll_wait`: see I/O). On Linux std builds `Mutex` and `Condvar` on the
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
//! ## I/O: who waits in `epoll_wait` (`--driver worker|thread`)
//! One mio `Poll` (epoll) serves all workers ([`reactor`]). Whoever holds it — the
//! **driver** — sleeps in `epoll_wait` with the nearest timer as its timeout and wakes the
//! tasks whose sources are ready; epoll_wait(2) lets the others register meanwhile: "While
//! one thread is blocked in a call to epoll_wait(), it is possible for another thread to add
//! a file descriptor to the waited-upon epoll instance". Who holds it is a choice:
//! - `--driver worker` (the default; tokio's way): a worker with nothing to do takes the
//!   driver if it is free (a `try_lock`) and parks *in* `epoll_wait` instead of on its
//!   condvar. The tasks it wakes go to its own queue and it runs them at once: no other
//!   thread, no hop. A busy worker looks in passing, without waiting, about every 200 µs
//!   (when the driver is free), or with every worker busy no one would look. The price is
//!   two beds in [`idle`]: an unpark of a worker in the driver writes the reactor's eventfd
//!   to end its `epoll_wait`; and an `epoll_wait` may end by itself (I/O, a timer), so the
//!   worker must leave the sleepers — unless a waker just took it out, whose unpark it then
//!   waits for. And a worker that took one task out of the driver and computes for long
//!   leaves it free while the others sleep on their condvars: I/O waits until that poll
//!   returns (tokio's driver has the same weakness: never block a worker).
//! - `--driver thread`: the reactor has a thread of its own that holds the driver for good.
//!   Simpler, and I/O is seen while every worker computes; but every event costs a hop: the
//!   tasks each `epoll_wait` wakes go to the injector in one batch and a worker is unparked.
//!   Under load the reactor looks again a few times before it sleeps, as sleeping and being
//!   woken for every round cost a third of the echo's throughput.
//!
//! `bench scheduler` runs both (100 connections × 64 B ping-pong, 2 workers). Over ten runs
//! here, each alternating the servers seven times, on a 2-core machine loaded by other work,
//! the server's CPU per message was a median 0.93× tokio multi_thread's in the same run with
//! `--driver worker` (0.84× to 1.05×) and 0.99× with `--driver thread` (0.79× to 1.18×):
//! the worker driver was the cheaper in 7 of the 10 runs, so it is the default.
//!
//! mio registers sources edge-triggered: epoll(7) reports a change once, "edge-triggered
//! mode delivers events only when changes occur". So, as in lesson 5, each source keeps a
//! readiness bit per direction until an operation says `WouldBlock` (or a TCP read or write
//! comes back short, as in lesson 5's rule, see [`reactor`]). With the reactor on
//! another thread an event can now arrive between a task's `WouldBlock` and its clear, so
//! the bits carry a *tick* that every event bumps, and a clear only succeeds if the tick has
//! not moved (tokio's `ScheduledIo` does the same).
//!
//! The cooperative budget ([`budget`]) is lesson 5's: 32 I/O operations per poll.
//!
//! ## Written by hand, and checked by loom
//! The local queue and the task state are the lesson, so they are hand-written atomics, each
//! `unsafe` block with its `Safety:` comment. Atomics are easy to get subtly wrong, so these
//! parts take their atomics, locks and `UnsafeCell` from `sync.rs` — loom's in a `--cfg loom`
//! build — and are model-checked with [loom](https://docs.rs/loom):
//! - the local queue ([`queue`]), its own code: push, pop and two thieves, a thief robbed
//!   while it copies, indexes that wrap past `u32::MAX` (the ring holds 4 under loom);
//! - the task state ([`state`]): a wake or an abort racing a poll. `State`'s methods are the
//!   runtime's; the worker that calls them is the model's own few lines, a copy of what
//!   `Task::run` does with their answers;
//! - the join slot ([`task`]): a result racing the handle's poll, and `is_finished` racing
//!   the end of the task;
//! - parking ([`idle`]): `Idle` itself, driven by a model worker that copies `run_worker`'s
//!   loop, with every run queue reduced to one counter of tasks, and a stand-in for the
//!   driver an idle worker sleeps in (a worker in `epoll_wait` unparked, I/O meeting an
//!   unpark there);
//! - the reactor's readiness handshake (`ScheduledIo`): an event racing a clear, the
//!   reactor's and the task's steps written out in the model.
//!
//! ```sh
//! RUSTFLAGS="--cfg loom" CARGO_TARGET_DIR=target/loom \
//!     cargo test --release -p lesson-work-stealing --lib loom
//! ```
//! loom does not see what uses std's types directly: the injector (a `Mutex<VecDeque>` and
//! its length), the shutdown flags, the reactor's table of sources, its timers and its
//! driver's lock, [`Event`], `block_on`'s waker and `thread::park`, the `Arc`s that hold
//! the tasks and the queues, and the glue in `Task::run`, `wake` and `schedule`. Those are
//! plain locks and one-flag handshakes; the stress tests (a million tasks, 100,000
//! ping-pongs, under a watchdog) run them, and Miri runs the unsafe code of the queue and
//! the task (`.ci/run`).
//!
//! How far a model check goes: loom runs the model again and again, each time with another
//! interleaving of its threads at the atomic operations and locks, and, where a load may
//! return one of several earlier stores, another of those (4 to 5 minutes for all the
//! models here, once built, on a loaded machine). That is a large set of executions, not
//! all of them:
//! - it skips orders it judges equivalent to one it ran, and may misjudge: loom 0.7
//!   remembers only an atomic's last access, so a load on one thread followed by another
//!   thread's load-then-CAS is never tried the other way round (tokio-rs/loom#392).
//!   `loom_a_finished_task_has_its_result_in_place`, written with its threads the other
//!   way, ran once and passed on the buggy order; as it is, it fails on that order;
//! - it can bound the **preemptions** of a run — the times a thread that could go on is
//!   stopped so that another runs — and then runs only the interleavings with at most that
//!   many. The two-worker parking models have three threads and bound themselves to 2 (at 3
//!   one took five minutes here): loom's authors find that 2 or 3 catch most bugs, but a
//!   bug there that needs three preemptions would go unseen;
//! - it does not implement the whole C11 memory model: it treats `SeqCst` loads and stores
//!   as `AcqRel` (which can only make it report a bug that cannot happen — so the
//!   handshakes that need `SeqCst` use `SeqCst` fences, which it does model), it does not
//!   try every reordering `Relaxed` allows ("load buffering"), and it keeps only the last 7
//!   stores of each atomic for a load to choose from.
//!
//! So a model that passes is strong evidence, not a proof.
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
//! `block_on`, each worker, the reactor with `--driver thread` — with each poll, each `epoll_wait`, each park, each
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
//! 5. [`idle`]: parking without losing a wake, and without waking everyone; the two beds.
//! 6. [`runtime`]: `Runtime` (`new`, `block_on`, `spawn`), where a woken task goes;
//!    [`spawn`], [`yield_now`]. [`injector`]: the global queue.
//! 7. [`reactor`]: the driver (one turn of `epoll_wait`) and the reactor's thread,
//!    readiness with a tick, tokens with a generation, timers.
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
pub use runtime::{DriverMode, Runtime, spawn, spawn_named, yield_now};
pub use task::{JoinError, JoinHandle};
pub use time::{sleep, timeout};

/// Lesson 7: a multi-threaded, work-stealing runtime.
#[derive(Parser, Debug)]
#[command(name = "work-stealing", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// How many worker threads to run, and who waits for I/O.
#[derive(Args, Debug, Clone)]
struct Workers {
    /// Worker threads (default: the number of CPUs).
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..=1024))]
    workers: Option<u16>,
    /// Who waits in epoll_wait: an idle worker, or a reactor thread of its own.
    #[arg(long, value_enum, default_value_t = DriverMode::default())]
    driver: DriverMode,
}

impl Workers {
    fn count(&self) -> usize {
        self.workers
            .map_or_else(Runtime::default_workers, usize::from)
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
            .and_then(|_recording| echo::run(&server, workers.count(), workers.driver)),
        Command::Writer {
            args,
            workers,
            timeline,
        } => timeline
            .record("work-stealing writer")
            .and_then(|_recording| {
                let trace = fdio::Trace::new(args.trace);
                Runtime::build(workers.count(), workers.driver, trace)
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
