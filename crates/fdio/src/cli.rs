//! The command-line arguments shared by every lesson, so `--addr` means the same everywhere.

use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;

/// Arguments of every `echo` subcommand.
#[derive(Args, Debug, Clone)]
pub struct ServerArgs {
    /// Address to listen on; `127.0.0.1:0` picks a free port (the real one is printed).
    #[arg(long, default_value = "127.0.0.1:5000")]
    pub addr: SocketAddr,

    /// Narrate every event-loop decision on stderr, one line each.
    #[arg(long)]
    pub trace: bool,
}

/// Arguments of every `writer` subcommand: stdin and a pipe, appended to one file.
#[derive(Args, Debug, Clone)]
pub struct WriterArgs {
    /// File to append every line to (created if missing, never truncated).
    #[arg(long, default_value = "output.txt")]
    pub output: PathBuf,

    /// Milliseconds between two pipe messages.
    #[arg(long, default_value_t = 1000)]
    pub interval_ms: u64,

    /// How many pipe messages the background thread writes before closing the pipe.
    #[arg(long, default_value_t = 10)]
    pub count: u32,

    /// Narrate every event-loop decision on stderr, one line each.
    #[arg(long)]
    pub trace: bool,
}

impl WriterArgs {
    /// The time between two pipe messages.
    pub fn interval(&self) -> Duration {
        Duration::from_millis(self.interval_ms)
    }
}

/// `--timeline FILE`, on the programs of the runtimes (lessons 5 to 8).
#[derive(Args, Debug, Clone)]
pub struct TimelineArgs {
    /// Record every poll, wait and wake into FILE, in Chrome's trace format: open it in
    /// ui.perfetto.dev, or draw it with `cargo run --bin timeline -- FILE --svg out.svg`.
    #[arg(long, value_name = "FILE")]
    pub timeline: Option<PathBuf>,
}

impl TimelineArgs {
    /// Starts recording if `--timeline` was given; the file is written when the returned
    /// recording is dropped. `program` names the process in the viewer (`async-await echo`).
    pub fn record(&self, program: &str) -> io::Result<crate::timeline::Recording> {
        crate::timeline::record(self.timeline.as_deref(), program)
    }
}

/// Turns a lesson's result into its exit code, printing an error as one line:
/// `select: cannot listen on 127.0.0.1:5000: Address already in use (os error 98)`.
pub fn exit_code(program: &str, result: io::Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            crate::log!("{program}: {err}");
            ExitCode::FAILURE
        }
    }
}
