//! # Lesson 8 — green threads: lesson 0's program on lesson 5's mechanism
//!
//! Every runtime so far was *stackless*: a task that has to wait returns. Lesson 3 wrote its
//! state as an enum by hand, lesson 5 let the compiler write it (`async fn`); either way,
//! whatever the task needs later is moved into a struct before it gives the thread back.
//! There is an older road, the one Go's goroutines, Java's virtual threads and Python's
//! gevent take: give every task **a stack of its own**. A task that has to wait does not
//! return; it *stops* where it is, deep in its calls, and the runtime switches the CPU to
//! another task's stack. Later it switches back, and the call that waited returns, as if it
//! had blocked. The slides' «only the calling (OS) thread is blocked … but multiple green
//! threads may be blocked», run: many green threads blocked, one OS thread that never is.
//!
//! So this lesson's echo is lesson 0's loop, line for line:
//!
//! ```text
//! let mut buf = [0; 4096];
//! loop {
//!     let n = match stream.read(&mut buf) {
//!         Ok(0) => return Ok(()), // the client closed its side: we are done
//!         Ok(n) => n,
//!         Err(err) if interrupted(&err) => continue,
//!         Err(err) => return Err(err),
//!     };
//!     stream.write_all(&buf[..n])?;
//! }
//! ```
//!
//! and it serves 10,000 clients at once on one OS thread, because `stream` is this lesson's
//! [`net::TcpStream`]: its `read` tries the non-blocking socket and, on `WouldBlock`, parks
//! the green thread on epoll. The *program* is lesson 0's; the *mechanism* is lesson 5's.
//!
//! ## Run it
//! ```text
//! cargo run --bin green-threads -- echo      # lesson 0's echo, a green thread per client
//! cargo run --bin green-threads -- writer    # stdin and the pipe, a green thread each
//! cargo run --bin green-threads -- block     # read(2) freezes every green thread; parking not
//! cargo run --bin green-threads -- stacks    # what a parked green thread costs in memory
//! cargo run --bin green-threads -- overflow  # a green thread overflows its stack: one line
//! ```
//! `--trace` (on `echo` and `writer`) shows the scheduler switching, green threads parking
//! on an fd, and epoll waking them. Ctrl+C (or SIGTERM) shuts `echo` down gracefully.
//! `--timeline FILE` (on `echo` and `writer`) records each green thread's run, from the
//! switch to it to the switch back, each `epoll_wait`, and each unpark as an arrow to the run
//! it causes, in Chrome's trace format (`cargo run --bin timeline -- FILE --svg out.svg`).
//!
//! ## Read in this order
//! 1. [`switch`]: the context switch, 21 instructions of x86-64 assembly — and what a green
//!    thread is when it does not run: a stack, and where it ends.
//! 2. [`stack`]: that stack: `mmap`, a guard page below it, pages committed when touched.
//! 3. [`overflow`]: a green thread that runs off its stack hits the guard page; a `SIGSEGV`
//!    handler on an alternate signal stack names it in one line and aborts.
//! 4. [`runtime`]: the M:1 scheduler — park and unpark, `yield_now`, `sleep`, the loop
//!    around `epoll_wait`; then [`spawn`]: a new green thread, where it starts, `join`; a
//!    panic ends one green thread, and [`unwinding`]: while it unwinds, no other runs.
//! 5. [`reactor`]: epoll, and which green thread is parked on which fd: lesson 5's reactor,
//!    with green threads where it had wakers.
//! 6. [`net`] and [`io`]: I/O that looks blocking — `WouldBlock` parks; the cooperative
//!    budget; deadlines, which stop a green thread parked in a read from outside.
//! 7. [`sync`] (`Notify`) and [`signal`].
//! 8. The programs: [`echo`], [`writer`], [`block`], [`stacks`].
//!
//! ## What a stackful task costs
//! - **A stack each**, committed a page at a time as it is touched. A parked green thread
//!   that went a few calls deep costs one page (`green-threads stacks`: about 4.3 KiB with
//!   its bookkeeping); an idle echo connection costs two, since lesson 0's 4 KiB buffer lives
//!   on its stack all the while it waits: 10,000 idle connections held 90 MB in the
//!   benchmark, against lesson 5's 11 MB, whose tasks borrow a buffer only once bytes have
//!   arrived. A
//!   page is the floor: no task with a stack of its own costs less than 4 KiB. Go starts goroutines at
//!   2 KiB and grows them by copying the stack elsewhere — possible because Go knows every
//!   pointer into a stack; Rust does not, so its stacks can never move.
//! - **A size chosen in advance** (256 KiB here, reserved address space only). Too small
//!   and it overflows: here loudly, through the guard page. Foreign code is the danger: C
//!   expects megabytes of stack, and C built without stack probes can step over a guard page.
//! - **A switch**: 24 ns here for `switch` alone, 120 ns for a `yield_now` through the
//!   scheduler (two switches: green thread → scheduler → next one, as Go goes through its
//!   `g0` stack), against 62 ns for lesson 5's wake and poll and 5.7 µs for two OS threads
//!   passing a byte through pipes (`cargo run --release -p bench -- switches`; medians on
//!   this loaded 2-core machine).
//! - **Blocking calls it does not know**: a green thread that calls `read(2)` itself, or
//!   computes for a second, or waits on a `std::sync::Mutex` held by a parked green thread,
//!   stops every green thread on the OS thread (`green-threads block` shows it).
//!
//! ## What it buys
//! - **No function colour.** Any function may park, however deep, through code that knows
//!   nothing of it: std's `write_all` here, a `BufReader`, a parser written for blocking
//!   sockets. There is no `async` to spread up the call graph, no `.await`, no second copy of
//!   every library. A blocking library works unchanged, as long as its I/O goes through the
//!   runtime (gevent patches Python's `socket` module for exactly that).
//! - **Plain locals.** A waiting task keeps its locals where they are, on its stack, which
//!   never moves: no self-referential state machine, so no `Pin` (lesson 5's `desugared`
//!   shows why a future needs one), and a backtrace shows where a waiting task waits.
//!
//! ## Why Rust chose stackless
//! Rust had green threads before 1.0 (`libgreen`, removed in 2014 by RFC 230): every
//! program carried a runtime, every call into C had to be made on a big enough stack, and
//! `std::io` had to work both ways. Futures cost nothing that is not used: a task is a
//! struct whose size the compiler computes, holding only what lives across an `.await`; no
//! stack to guess, no allocator needed (embassy runs them on microcontrollers), no runtime
//! in the language. The price is the colour of functions, `Pin`, and runtimes outside std.
//!
//! ## Thread-locals and `Send` under M:1
//! All green threads of a runtime run on one OS thread, so they share its thread-locals: a
//! `thread_local!` is per OS thread, not per green thread — std's own too, such as the count
//! of panics unwinding, which is why no green thread runs while another one's panic unwinds
//! ([`unwinding`]). And nothing runs in parallel, so
//! an `Rc` or a `RefCell` may be held across a park (`writer` shares its log so), and
//! `spawn` asks for no `Send`. An M:N runtime — Go's, or a stackful twin of lesson 7 — moves
//! a parked green thread to whichever OS thread is free when it resumes. Then a thread-local
//! read before a park and after it may be two different ones, a `MutexGuard` may be unlocked
//! on another thread than the one that locked it, an `Rc` may be touched from two threads:
//! and the compiler sees none of it, since a park is a plain function call. A stackful M:N
//! runtime in Rust must ask for `Send` everywhere and trust its users not to hold such
//! things across a park; that is a reason libgreen went.
//!
//! ## greenlet and goroutines, side by side
//! | | this lesson | greenlet (gevent) | goroutines |
//! |---|---|---|---|
//! | threads | M:1: one OS thread | M:1: greenlets of one OS thread | M:N: all cores |
//! | preemption | none: a green thread runs until it parks | none | since Go 1.14, by a signal |
//! | stacks | 256 KiB mapped each, a guard page, fixed | all on the OS thread's stack: a switch copies the part in the way to the heap | 2 KiB to start, grown and shrunk by copying |
//! | a switch | `switch`, through the scheduler's stack | `greenlet.switch()`; gevent's hub | `gopark` → the `g0` stack → `gogo` |
//! | I/O | our `TcpStream` parks on epoll | gevent patches `socket` to park on its loop (libev) | the netpoller parks on epoll |
//! | an unknown blocking call | freezes every green thread | freezes every greenlet | the runtime gives the other goroutines a fresh thread |
//! | stopping one from outside | deadlines | `throw(GreenletExit)` | deadlines, `context` |
//!
//! ## `echo`'s shutdown, in blocking style
//! A parked `read` cannot also wait for Ctrl+C: a blocking call waits for one thing. So
//! blocking code is stopped from outside, with deadlines, as Go does: a green thread parked
//! in a read of the signal pipe wakes at SIGINT or SIGTERM and sets the listener's deadline
//! to *now*, which ends the accept loop; every connection then gets a read deadline of now
//! (it never reads a new chunk) and a write deadline 10 s away (it finishes the one in
//! hand). See [`echo`] for the rest: EOF, draining until the client has acknowledged every
//! byte, and the summary.
//!
//! Other architectures: the switch is x86-64 only; elsewhere every program says so in one
//! line and exits 1. (An aarch64 switch would save x19–x29, the link register, sp and
//! d8–d15 the same way; it is not written because it could not be tested here.)

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use fdio::{ServerArgs, TimelineArgs, Trace, WriterArgs};

pub mod block;
pub mod echo;
pub mod io;
pub mod net;
pub mod overflow;
pub mod reactor;
pub mod runtime;
pub mod signal;
pub mod spawn;
pub mod stack;
pub mod stacks;
pub mod switch;
pub mod sync;
pub mod unwinding;
pub mod writer;

// The runtime refuses to start off x86-64 (see `switch`): nothing to test there.
#[cfg(all(test, target_arch = "x86_64"))]
mod tests;

/// Lesson 8: green threads.
#[derive(Parser, Debug)]
#[command(name = "green-threads", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// A TCP echo server: lesson 0's program, a green thread per connection; Ctrl+C or
    /// SIGTERM shuts it down gracefully.
    Echo {
        #[command(flatten)]
        server: ServerArgs,
        #[command(flatten)]
        timeline: TimelineArgs,
    },
    /// Read stdin and a pipe, a green thread each; append every line to --output.
    Writer {
        #[command(flatten)]
        args: WriterArgs,
        #[command(flatten)]
        timeline: TimelineArgs,
    },
    /// A green thread blocks in read(2): every green thread freezes. Then it parks instead.
    Block,
    /// Park many green threads and show the memory their stacks take.
    Stacks {
        /// How many green threads.
        #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..=20_000))]
        count: u32,
    },
    /// A green thread recurses without end: its guard page stops it, and the process.
    Overflow,
}

/// The `green-threads` binary: parses the command line and runs the chosen program.
pub fn main() -> ExitCode {
    let result = match Cli::parse().command {
        Command::Echo { server, timeline } => {
            timeline
                .record("green-threads echo")
                .and_then(|_recording| {
                    runtime::run(Trace::new(server.trace), move || echo::run(&server))
                })
        }
        Command::Writer { args, timeline } => {
            timeline
                .record("green-threads writer")
                .and_then(|_recording| {
                    runtime::run(Trace::new(args.trace), move || writer::run(&args))
                })
        }
        Command::Block => runtime::run(Trace::new(false), block::run),
        Command::Stacks { count } => {
            runtime::run(Trace::new(false), move || stacks::run(count as usize))
        }
        Command::Overflow => runtime::run(Trace::new(false), stacks::overflow),
    };
    fdio::exit_code("green-threads", result.and_then(|result| result))
}
