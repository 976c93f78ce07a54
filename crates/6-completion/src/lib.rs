//! # Lesson 6 — completion: io_uring, "do this and tell me when it is done"
//!
//! (lesson text: written below)

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use fdio::{ServerArgs, Trace, WriterArgs};

pub mod budget;
pub mod bufring;
pub mod echo;
pub mod executor;
pub mod io;
pub mod net;
pub mod op;
pub mod probe;
pub mod ring;
pub mod signal;
pub mod sync;
pub mod time;
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
    Echo(ServerArgs),
    /// Read stdin and a pipe through the ring; append every line to --output with ring writes.
    Writer(WriterArgs),
    /// Say whether io_uring is usable here (exit 0) or why not (exit 1).
    Probe,
}

/// The `completion` binary: checks that io_uring is usable, then runs the chosen program.
pub fn main() -> ExitCode {
    let command = Cli::parse().command;
    if let Err(why) = probe::check() {
        eprintln!("completion: {why}");
        return ExitCode::FAILURE;
    }
    let result = match command {
        Command::Echo(server) => echo::run(&server),
        Command::Writer(args) => {
            executor::block_on(Trace::new(args.trace), writer::run(&args)).and_then(|r| r)
        }
        Command::Probe => {
            println!("io_uring is available: multishot accept and receive, provided buffers");
            Ok(())
        }
    };
    fdio::exit_code("completion", result)
}
