//! # Lesson 1 — readiness with `select(2)`: one thread, many fds
//!
//! Lesson 0's thread could wait on only one thing at a time. `select` lets one thread wait on
//! *many* fds at once: "wake me when any of these can be read, or any of those written".
//! Then it reads exactly the fds that are ready — a read that will not block — and waits
//! again. That loop is an **event loop**; every later lesson is a refinement of it.
//!
//! ## `select writer` — stdin and the pipe, both at once
//! ```text
//! cargo run --bin select -- writer      # type now and then; Ctrl+D to stop
//! tail -f output.txt                    # in another terminal
//! ```
//! Observe: pipe lines now arrive every second while you type nothing. When the pipe's
//! writer closes, the loop stops watching the pipe and sleeps: the Python originals keep it
//! in the list and spin at 100% CPU (a closed pipe is "readable" forever).
//!
//! ## `select echo` — one loop serves every client
//! ```text
//! cargo run --bin select -- echo --trace
//! nc 127.0.0.1 5000                     # in two or three more terminals
//! ```
//! Observe: every client gets its echo at once. `--trace` shows each turn of the loop:
//! `select: waiting on read=[3,4,5] write=[] timeout=none` (fd 3 is the listener, 4 and 5
//! are clients), then `select: ready read=[5] write=[]` when client 5 sent something.
//! A client appears in `write=[…]` only while we owe it bytes it has not read yet.
//! (Python original: `2_event_loop/event_loop.py`.)
//!
//! `select echo --poll` runs the same loop on `poll(2)` (the slides' "alternatives to
//! select"). `select`'s bitmap has room for fds 0 to 1023 (`FD_SETSIZE`): a client whose fd
//! is 1024 or more is refused with one line on stderr, and everyone else keeps being served.
//! `poll` has no such limit and serves 10,000 connections — but both scan every watched fd
//! on every call. Lesson 2's epoll does not.
//!
//! # Layout
//! Read in this order:
//! 1. [`wait`]: `select` and `poll` behind one `wait(watches, timeout)` call.
//! 2. [`echo`]: the echo server's loop — what is ready, served in turn.
//! 3. [`writer`]: the writer program's loop: stdin and the pipe, whichever is ready.

use clap::{Parser, Subcommand};
use fdio::{ServerArgs, Trace, WriterArgs};
use std::process::ExitCode;

pub mod echo;
pub mod wait;
pub mod writer;

use wait::Backend;

/// Lesson 1: readiness with select(2) — one thread, many fds.
#[derive(Parser, Debug)]
#[command(name = "select", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// A TCP echo server: one select loop over the listener and every client.
    Echo {
        #[command(flatten)]
        server: ServerArgs,
        /// Wait with poll(2) instead of select(2): no FD_SETSIZE limit.
        #[arg(long)]
        poll: bool,
    },
    /// Watch stdin and a pipe with select; append every line to --output as it arrives.
    Writer {
        #[command(flatten)]
        writer: WriterArgs,
        /// Wait with poll(2) instead of select(2).
        #[arg(long)]
        poll: bool,
    },
}

fn backend(poll: bool) -> Backend {
    if poll { Backend::Poll } else { Backend::Select }
}

/// The `select` binary: parses the command line and runs the chosen program.
pub fn main() -> ExitCode {
    let result = match Cli::parse().command {
        Command::Echo { server, poll } => fdio::raise_fd_limit()
            .and_then(|_| fdio::listen(server.addr))
            .and_then(|listener| echo::serve(listener, backend(poll), Trace::new(server.trace))),
        Command::Writer { writer, poll } => writer::run(&writer, backend(poll)),
    };
    fdio::exit_code("select", result)
}
