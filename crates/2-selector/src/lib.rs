//! # Lesson 2 — a selector with callbacks, on epoll
//!
//! Lesson 1 rebuilt its list of fds before every `select` and the kernel scanned all of it on
//! every call: O(n) per wakeup, however few fds were ready. **epoll** keeps the list *in the
//! kernel*, and this lesson calls its three system calls itself (through nix's thin wrappers):
//!
//! - `epoll_create1` makes an epoll instance: one more fd, holding an *interest list*.
//! - `epoll_ctl(ADD | MOD | DEL, fd, flags + data)` edits that list once per change, not once
//!   per wait: `EPOLLIN` (tell me when it is readable), `EPOLLOUT` (writable), and 64 bits of
//!   our own — the [`Token`](ready::Token) that names the registration.
//! - `epoll_wait` sleeps until some registered fds are ready and returns only those, each with
//!   its token and what it is ready for.
//!
//! On top of it, Python's `selectors` idiom: register each fd with the *function that handles
//! it*, and make the loop nothing more than "wait, then call the callback of each ready fd".
//! The accept callback registers a callback per client; a client's callback echoes and, at
//! EOF, unregisters itself. The loop knows nothing about echo servers.
//!
//! A callback returns `io::Result<()>`, and an error ends the loop:
//! [`Selector::run`](selector::Selector::run) returns it, as an exception raised in a Python
//! callback ends the loop that called it. The writer's callbacks return theirs (a full disk
//! ends the program: one error line, exit 1); a client's callback closes its connection on an
//! error and returns `Ok`: the server goes on.
//!
//! ## Level-triggered (the default) and edge-triggered (`--edge`)
//! By default epoll is **level-triggered**, like `select` and `poll` (and like Python's
//! `selectors.EpollSelector`, which this lesson mirrors): every `epoll_wait` reports an fd for
//! as long as it is ready. So a callback may read *once* per event: if bytes are left, the
//! next wait reports the fd again.
//!
//! With the `EPOLLET` flag (`--edge`) it is **edge-triggered**: a wait reports an fd when it
//! *becomes* ready — when new bytes arrive — and then says nothing more about it. Bytes a
//! callback leaves behind are never mentioned again: callbacks must read (and accept, and
//! write) until the kernel says `WouldBlock`. That is what mio, and so tokio, always do: fewer
//! wakeups, and no `epoll_ctl` to stop hearing about a ready fd, at the price of that rule.
//! The unit tests in `selector.rs` show it with a callback that reads 8 bytes per event from a
//! pipe holding 64: level-triggered it gets all 64 in 8 wakeups; edge-triggered it gets 8, in
//! one wakeup, and then nothing — an echo server written that way stalls.
//!
//! ## The cooperative budget: fairness
//! A client that keeps sending always has bytes to read. Read it until `WouldBlock` and the
//! loop never gets back to the others (without a budget, a client flooding 1 MiB blobs held
//! a quiet client's `ping` for up to 3 s). So each callback gets a budget per turn, in
//! [`Ready::budget`](ready::Ready): **one read** (or accept) level-triggered, as in Python,
//! and [`EDGE_READS_PER_TURN`](ready::EDGE_READS_PER_TURN) (4) edge-triggered. Then it
//! returns, and every other ready callback runs before it runs again. Level-triggered, epoll
//! reports what it left behind; edge-triggered no new edge will come, so the callback calls
//! [`budget_spent`](selector::Selector::budget_spent) and the selector itself runs it again on
//! the next turn — or sooner, if an event for it comes first: that run is told to read too.
//!
//! ## What each client is watched for
//! A socket with room in its send buffer is always writable: level-triggered, `EPOLLOUT` would
//! wake the loop on every turn. So a client is watched for writing only while the server owes
//! it bytes its socket could not take yet. And a client that sends without reading its echo is
//! no longer watched for reading once it owes 256 KiB (backpressure): otherwise its unread
//! bytes would wake the loop forever, or fill our memory. Each callback says what it wants on
//! every call; the selector makes the `epoll_ctl(MOD)` call only when that changes.
//!
//! ## Run it
//! ```text
//! cargo run --bin selector -- echo --trace          # level-triggered
//! cargo run --bin selector -- echo --edge --trace   # EPOLLET
//! nc 127.0.0.1 5000                                 # in two or three more terminals
//! cargo run --bin selector -- writer                # stdin and the pipe, as in lesson 1
//! ```
//! `--trace` shows the system calls with their flags and each wakeup:
//! <!-- session: selector-echo-trace -->
//! ```text
//! selector: epoll_create1, Level-triggered
//! selector: register Token(0) (listener 127.0.0.1:5000): epoll_ctl(ADD, fd 3, EPOLLIN)
//! selector: epoll_wait with 1 registered, timeout=none
//! selector: woke up with 1 ready
//! selector: Token(0) (listener 127.0.0.1:5000): EPOLLIN → its callback
//! selector: register Token(1) (client 127.0.0.1:33278): epoll_ctl(ADD, fd 5, EPOLLIN)
//! ```
//! then `modify Token(1): epoll_ctl(MOD, fd 5, EPOLLIN|EPOLLOUT)` while a client is owed
//! bytes, and `unregister Token(1): epoll_ctl(DEL, fd 5)` when it leaves. With `--edge` every
//! registration carries `EPOLLIN|EPOLLET`, and a callback that ran out of budget shows as
//! `Token(0) (stdin) spent its budget of 4 reads: running it again next turn`, then
//! `Token(0) (stdin): budget spent last turn → its callback`.
//!
//! epoll refuses regular files (`EPERM`: they are always ready), so `selector writer < file`
//! says so in one line and reads the file on every turn instead. (Regular files never say
//! `EAGAIN`, but a read of one can still wait for the disk: readiness cannot express that,
//! which is why tokio and asyncio read files on threads, and why io_uring exists.)
//! epoll refuses a directory too; its first read then fails (`Is a directory`), and that
//! error ends the program at once.
//!
//! Python originals: `selector_async.py` (writer) and `3_async_with_callbacks/callbacks.py`
//! (server).
//!
//! # Layout
//! Read in this order:
//! 1. [`selector`]: the `Selector` — `register`, the loop (`run`, one `turn`, `dispatch` to
//!    each ready callback); then `modify` and `unregister`; then the budget and wake-ups.
//! 2. [`ready`]: the words it shares with the callbacks — `Token`, `Interest`, `Trigger`, `Ready`.
//! 3. [`echo`]: the accept callback and the client callback.
//! 4. [`writer`]: the stdin callback and the pipe callback.

use clap::{Args, Parser, Subcommand};
use fdio::{ServerArgs, Trace, WriterArgs};
use std::process::ExitCode;

use selector::Trigger;

pub mod echo;
pub mod ready;
pub mod selector;
pub mod writer;

/// Lesson 2: epoll by hand, level- or edge-triggered, with a registry of callbacks.
#[derive(Parser, Debug)]
#[command(name = "selector", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// A TCP echo server: an accept callback and a callback per client, on one selector.
    Echo {
        #[command(flatten)]
        server: ServerArgs,
        #[command(flatten)]
        trigger: TriggerArgs,
    },
    /// Watch stdin and a pipe with callbacks; append every line to --output as it arrives.
    Writer {
        #[command(flatten)]
        args: WriterArgs,
        #[command(flatten)]
        trigger: TriggerArgs,
    },
}

/// How the selector asks epoll to report ready fds.
#[derive(Args, Debug)]
struct TriggerArgs {
    /// Register every fd edge-triggered (EPOLLET, as mio does): callbacks then read until
    /// WouldBlock, within a budget per turn. Default: level-triggered, one read per event.
    #[arg(long)]
    edge: bool,
}

impl TriggerArgs {
    fn trigger(&self) -> Trigger {
        if self.edge {
            Trigger::Edge
        } else {
            Trigger::Level
        }
    }
}

/// The `selector` binary: parses the command line and runs the chosen program.
pub fn main() -> ExitCode {
    let result = match Cli::parse().command {
        Command::Echo { server, trigger } => serve(&server, trigger.trigger()),
        Command::Writer { args, trigger } => writer::run(&args, trigger.trigger()),
    };
    fdio::exit_code("selector", result)
}

fn serve(args: &ServerArgs, trigger: Trigger) -> std::io::Result<()> {
    fdio::raise_fd_limit()?;
    let listener = fdio::listen(args.addr)?;
    let mut selector = selector::Selector::new(trigger, Trace::new(args.trace))?;
    echo::start(&mut selector, listener)?;
    selector.run()
}
