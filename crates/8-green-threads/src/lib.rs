//! # Lesson 8 — green threads (WIP)

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use fdio::{ServerArgs, Trace, WriterArgs};

pub mod block;
pub mod echo;
pub mod io;
pub mod net;
pub mod overflow;
pub mod reactor;
pub mod runtime;
pub mod signal;
pub mod stack;
pub mod stacks;
pub mod switch;
pub mod sync;
pub mod writer;

#[cfg(test)]
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
    Echo(ServerArgs),
    /// Read stdin and a pipe, a green thread each; append every line to --output.
    Writer(WriterArgs),
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
        Command::Echo(server) => runtime::run(Trace::new(server.trace), move || echo::run(&server)),
        Command::Writer(args) => runtime::run(Trace::new(args.trace), move || writer::run(&args)),
        Command::Block => runtime::run(Trace::new(false), block::run),
        Command::Stacks { count } => {
            runtime::run(Trace::new(false), move || stacks::run(count as usize))
        }
        Command::Overflow => runtime::run(Trace::new(false), stacks::overflow),
    };
    fdio::exit_code("green-threads", result.and_then(|result| result))
}
