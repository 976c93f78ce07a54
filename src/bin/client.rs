//! The local echo client, for those without `nc`. Its code is in `crates/echo-client`.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use echo_client::{TimedPlan, run_interactive, run_timed};

/// At most this many timed clients, each a thread and a connection: enough to pass lesson 1's
/// FD_SETSIZE wall (1,024 fds) many times over, and few enough for the threads to start.
const MAX_CLIENTS: i64 = 10_000;

/// The longest `--every-ms`: an hour.
const MAX_EVERY_MS: u64 = 3_600_000;

/// The longest `--for-secs`: a day.
const MAX_FOR_SECS: u64 = 86_400;

/// The local echo client: like `nc`, or N timed clients at once.
#[derive(Parser, Debug)]
#[command(name = "client", version)]
struct Cli {
    /// The server to talk to.
    #[arg(long, default_value = "127.0.0.1:5000")]
    addr: SocketAddr,

    /// Run N clients at once (1 to 10000), each sending a numbered line on schedule and
    /// printing how long each answer took (instead of the interactive mode).
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..=MAX_CLIENTS))]
    clients: Option<u16>,

    /// With --clients: milliseconds between two messages of one client (at most an hour).
    #[arg(long, default_value_t = 1000, requires = "clients")]
    #[arg(value_parser = clap::value_parser!(u64).range(..=MAX_EVERY_MS))]
    every_ms: u64,

    /// With --clients: how long each client sends for, in seconds, at most a day (it sends
    /// for-secs×1000 / every-ms messages).
    #[arg(long, default_value_t = 5, requires = "clients")]
    #[arg(value_parser = clap::value_parser!(u64).range(..=MAX_FOR_SECS))]
    for_secs: u64,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Each timed client is one connection, one fd: allow more than the usual 1024.
    let result = fdio::raise_fd_limit().and_then(|_| match cli.clients {
        None => run_interactive(cli.addr),
        Some(clients) => run_timed(&TimedPlan {
            addr: cli.addr,
            clients: clients.into(),
            every: Duration::from_millis(cli.every_ms),
            duration: Duration::from_secs(cli.for_secs),
        })
        .map(drop),
    });
    let result = match result {
        // stdout's reader went away (`client … | head -1`): a normal way to stop printing.
        Err(err) if fdio::reader_went_away(&err) => Ok(()),
        other => other,
    };
    fdio::exit_code("client", result)
}
