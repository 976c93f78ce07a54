//! # Lesson 2 — a selector with callbacks, on epoll
//!
//! Lesson 1 rebuilt its list of fds before every `select` and the kernel scanned all of it on
//! every call: O(n) per wakeup, however few fds were ready. **epoll** keeps the interest list
//! *in the kernel*: you `register` an fd once, and each wait returns only the fds that are
//! ready. We use it through **mio**, the small crate under tokio.
//!
//! On top of it, Python's `selectors` idiom: register each fd with the *function that handles
//! it*, and make the loop nothing more than "wait, then call the callback of each ready fd".
//! The accept callback registers a callback per client; a client's callback echoes and, at
//! EOF, unregisters itself. The loop knows nothing about echo servers.
//!
//! ## Edge-triggered: drain until `WouldBlock`
//! mio registers fds edge-triggered: epoll reports a *change* to ready, once. So every
//! callback reads (and accepts, and writes) until the kernel says `WouldBlock`; whatever it
//! leaves behind, epoll will not mention again. `select` and `poll` (level-triggered) would
//! simply have reported the fd again.
//!
//! ## Run it
//! ```text
//! cargo run --bin selector -- echo --trace
//! nc 127.0.0.1 5000                          # in two or three more terminals
//! cargo run --bin selector -- writer         # stdin and the pipe, as in lesson 1
//! ```
//! `--trace` shows each turn: `selector: polling with 3 registered, timeout=none`, then each
//! event `selector: Token(2) (client 127.0.0.1:4242) is readable → its callback`, and the
//! registrations as they change (`register`, `modify … READABLE | WRITABLE` while a client is
//! owed bytes, `unregister`).
//!
//! epoll refuses regular files (`EPERM`: they are always ready), so `selector writer < file`
//! says so in one line and reads the file on every turn instead.
//!
//! Python originals: `selector_async.py` (writer) and `3_async_with_callbacks/callbacks.py`
//! (server).
//!
//! # Layout
//! - [`selector`]: the `Selector` — register, modify, unregister, and the loop.
//! - [`echo`]: the accept callback and the client callback.
//! - [`writer`]: the stdin callback and the pipe callback.

use clap::{Parser, Subcommand};
use fdio::{ServerArgs, Trace, WriterArgs};
use std::process::ExitCode;

pub mod echo;
pub mod selector;
pub mod writer;

/// Lesson 2: epoll through mio, with a registry of callbacks.
#[derive(Parser, Debug)]
#[command(name = "selector", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// A TCP echo server: an accept callback and a callback per client, on one selector.
    Echo(ServerArgs),
    /// Watch stdin and a pipe with callbacks; append every line to --output as it arrives.
    Writer(WriterArgs),
}

/// The `selector` binary: parses the command line and runs the chosen program.
pub fn main() -> ExitCode {
    let result = match Cli::parse().command {
        Command::Echo(server) => serve(&server),
        Command::Writer(args) => writer::run(&args),
    };
    fdio::exit_code("selector", result)
}

fn serve(args: &ServerArgs) -> std::io::Result<()> {
    fdio::raise_fd_limit()?;
    let listener = fdio::listen(args.addr)?;
    let mut selector = selector::Selector::new(Trace::new(args.trace))?;
    echo::start(&mut selector, listener)?;
    selector.run()
}
