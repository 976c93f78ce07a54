//! `fdio`: the small helpers every lesson shares, so each lesson's code is only about its lesson.
//!
//! # Layout
//! - [`cli`]: the clap arguments every lesson takes (`--addr`, `--trace`, `--output`, …).
//! - [`fd`]: reading an fd directly (or blocking even if it is non-blocking), the
//!   non-blocking switch, the fd limit, and names for the I/O errors a loop must tell apart
//!   (`would_block`, `interrupted`, `out_of_fds`, `reader_went_away`, …), and
//!   [`let_sigpipe_end_the_program`] for the examples that only print.
//!   Pipes themselves are `std::io::pipe()`.
//! - [`ticker`]: the writer program's background thread that writes into a pipe.
//! - [`output`]: the output log, `[ 3.02s pipe ] External message from pipe 3`.
//! - [`session`]: the writer program's log, ticker and EOF handling, shared by every lesson.
//! - [`net`]: binding and announcing a listener, the one-line connection log, and what a TCP
//!   socket has not delivered yet ([`delivery`]: delivered, on its way, or lost to a reset;
//!   [`unsent_bytes`], [`all_acknowledged`]: `SIOCOUTQ`).
//! - [`pending`]: the unsent tail of a non-blocking echo (what a slow reader still owes us).
//! - [`trace`]: the `--trace` narrator: one stderr line per event-loop decision.
//! - [`timeline`]: the `--timeline` recorder: polls, waits and wakes on each thread, as a
//!   trace file Perfetto opens (lessons 5 to 8).
//! - [`log`](mod@log): [`log!`], one stderr line that is dropped, never a panic, if stderr is gone.
//! - [`signal`]: the self-pipe trick: signals as bytes on a pipe (lessons 5 to 7).
//! - [`count`]: a number and its noun, `1 connection` or `2 connections`.

pub mod cli;
pub mod fd;
pub mod log;
pub mod net;
pub mod output;
pub mod pending;
pub mod session;
pub mod signal;
pub mod ticker;
pub mod timeline;
pub mod trace;

pub use cli::{ServerArgs, TimelineArgs, WriterArgs, exit_code};
pub use fd::{
    epoll_refuses, epoll_refuses_line, interrupted, let_sigpipe_end_the_program, out_of_fds,
    raise_fd_limit, read_blocking, read_fd, readable_now, reader_went_away, set_nonblocking,
    would_block,
};
pub use net::{
    Delivery, all_acknowledged, delivery, listen, log_closed, log_connected, unsent_bytes,
};
pub use output::{OutputLog, Source};
pub use pending::PendingWrite;
pub use session::WriterSession;
pub use signal::{catch_signals, signal_of, signal_pipe};
pub use ticker::Ticker;
pub use trace::{FdList, Trace};

/// `n` and `noun` as a person writes them: `1 connection`, `0 connections`, `2 connections`.
/// `noun` is the singular; every noun our summaries count takes an `s`.
pub fn count(n: u64, noun: &str) -> String {
    match n {
        1 => format!("1 {noun}"),
        n => format!("{n} {noun}s"),
    }
}

#[cfg(test)]
mod tests {
    /// One takes the singular, zero and many the plural.
    #[test]
    fn count_agrees_with_its_number() {
        assert_eq!(super::count(1, "connection"), "1 connection");
        assert_eq!(super::count(0, "connection"), "0 connections");
        assert_eq!(super::count(2, "pipe message"), "2 pipe messages");
    }
}
