//! # Lesson 7 — work-stealing: many threads, one runtime
//!
//! TODO lesson text

use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use fdio::{ServerArgs, WriterArgs};

pub mod budget;
pub mod echo;
pub mod future;
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
pub mod writer;

#[cfg(all(test, not(loom)))]
mod tests;

pub use future::{Either, Event, race};
pub use net::{TcpListener, TcpStream};
pub use runtime::{Runtime, spawn, yield_now};
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
    },
    /// Read stdin and a pipe as async streams; append every line to --output as it arrives.
    Writer {
        #[command(flatten)]
        args: WriterArgs,
        #[command(flatten)]
        workers: Workers,
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
    },
}

/// The `work-stealing` binary: parses the command line and runs the chosen program.
pub fn main() -> ExitCode {
    let result = match Cli::parse().command {
        Command::Echo { server, workers } => echo::run(&server, workers.count()),
        Command::Writer { args, workers } => {
            runtime::Runtime::with_trace(workers.count(), fdio::Trace::new(args.trace))
                .and_then(|runtime| runtime.block_on(writer::run(&args)))
        }
        Command::Tour { trace, workers } => tour::run(usize::from(workers), trace),
    };
    fdio::exit_code("work-stealing", result)
}
