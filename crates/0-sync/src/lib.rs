//! # Lesson 0 — blocking I/O: one thing at a time
//!
//! A blocking call (`read`, `accept`, `write`) does not return until it has something to
//! give: while it waits, the thread that made it can do nothing else. This lesson shows the
//! cost of that in two programs, and the classic way around it (one thread per client).
//!
//! ## `sync writer` — two sources, read in turn
//! A background thread writes `External message from pipe N` into a pipe every second.
//! The main thread reads the pipe, then stdin, then the pipe again, each with a blocking
//! `read`, and appends every line to `output.txt` with its arrival time:
//!
//! ```text
//! cargo run --bin sync -- writer        # type a line now and then; Ctrl+D to stop
//! tail -f output.txt                    # in another terminal
//! ```
//!
//! Observe: while you type nothing, no pipe line reaches the file — the thread is stuck in
//! `read(stdin)`. Each line you type releases what the pipe had meanwhile, all with the same
//! timestamp. (Python original: `sync_example.py`, which reads `[pipe, stdin]` in turn with
//! `os.read`.) Ctrl+D stops the pipe's writer and exits 0; unlike the original, every line
//! already written to the pipe still reaches the file.
//!
//! ## `sync echo` — a blocking server serves one client at a time
//! `accept`, then `read`/`write` that client until it leaves, then `accept` again. A second
//! `nc 127.0.0.1 5000` connects (the kernel completes the handshake and queues it in the
//! listen backlog) but gets no echo until the first one quits. (Python original:
//! `1_intro/original.py`.)
//!
//! `sync echo --threads` gives each client its own OS thread: everyone is served, each
//! thread may block as it likes. It works, and it is what many servers do; the price is a
//! thread (a stack, a kernel task, context switches) per connection, which the benchmark
//! measures against the event loops of the next lessons. Its peak RSS (`VmHWM`) counts user
//! pages only — the stack pages each thread touches, its share of the heap — not its kernel
//! stack (16 KiB on x86-64) or task struct, which are kernel memory.
//!
//! `--trace` prints each blocking call before it is made, so you see where the thread waits.
//!
//! # Layout
//! Read in this order:
//! 1. [`writer`]: two blocking reads in turn, the pipe and stdin — the whole lesson in a loop.
//! 2. [`echo`]: the blocking server, one client at a time; then `--threads`, one thread each.

use clap::{Parser, Subcommand};
use fdio::{ServerArgs, Trace, WriterArgs};
use std::process::ExitCode;

pub mod echo;
pub mod writer;

/// Lesson 0: blocking I/O — one thing at a time.
#[derive(Parser, Debug)]
#[command(name = "sync", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// A blocking TCP echo server: one client at a time (or one thread each with --threads).
    Echo {
        #[command(flatten)]
        server: ServerArgs,
        /// Serve each client on its own OS thread.
        #[arg(long)]
        threads: bool,
    },
    /// Read a pipe and stdin in turn with blocking reads; append every line to --output.
    Writer(WriterArgs),
}

/// The `sync` binary: parses the command line and runs the chosen program.
pub fn main() -> ExitCode {
    let result = match Cli::parse().command {
        Command::Echo { server, threads } => fdio::raise_fd_limit()
            .and_then(|_| fdio::listen(server.addr))
            .and_then(|listener| echo::serve(listener, threads, Trace::new(server.trace))),
        Command::Writer(args) => writer::run(&args),
    };
    fdio::exit_code("sync", result)
}
