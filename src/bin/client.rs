//! The local echo client, for those without `nc`. Its code is in `crates/echo-client`.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use echo_client::{TimedPlan, run_interactive, run_timed};

/// The local echo client: like `nc`, or N timed clients at once.
#[derive(Parser, Debug)]
#[command(name = "client", version)]
struct Cli {
    /// The server to talk to.
    #[arg(long, default_value = "127.0.0.1:5000")]
    addr: SocketAddr,

    /// Run N clients at once, each sending a numbered line on schedule and printing how long
    /// each answer took (instead of the interactive mode).
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..))]
    clients: Option<u16>,

    /// With --clients: milliseconds between two messages of one client.
    #[arg(long, default_value_t = 1000, requires = "clients")]
    every_ms: u64,

    /// With --clients: how long each client sends for, in seconds (it sends for-secs×1000 /
    /// every-ms messages).
    #[arg(long, default_value_t = 5, requires = "clients")]
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
    fdio::exit_code("client", result)
}
