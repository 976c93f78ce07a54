//! `bench timeline`: what recording a `--timeline` costs an echo server. Each runtime's echo
//! (lessons 5, 6 and 7) runs the scheduler section's load — 100 connections of 64 B
//! ping-pong — without `--timeline`, where every poll, wait and wake pays one branch of the
//! recorder, and with it, recording into memory; rounds alternate, the median of each is
//! shown. Windows are short (1 s) so that a recording stays under its event limit.

use std::fmt::Write;
use std::io;
use std::path::Path;
use std::time::Duration;

use crate::scheduler::{EchoRun, echo_window, median_run};
use crate::servers::{Server, ServerSpec};

/// The three runtimes' echo commands (lesson 7 with 2 workers, as in its scheduler row).
const RUNTIMES: [(&str, &[&str]); 3] = [
    ("async-await", &["echo"]),
    ("completion", &["echo"]),
    ("work-stealing", &["echo", "--workers", "2"]),
];

/// Measures each runtime off and on; a markdown table.
pub fn table(bin_dir: &Path, rounds: usize, window: Duration) -> io::Result<String> {
    let trace = std::env::temp_dir().join(format!("bench-timeline-{}.json", std::process::id()));
    let mut table = String::from(
        "| echo | msgs/s without --timeline | with it | server CPU per message without | with it | change |\n|---|---|---|---|---|---|\n",
    );
    for (binary, args) in RUNTIMES {
        let executable = bin_dir.join(binary);
        if !executable.is_file() {
            let _ = writeln!(table, "| {binary} | not built | | | | |");
            continue;
        }
        let mut with: Vec<&'static str> = args.to_vec();
        // Leaked: a spec's arguments are 'static, and this runs three times per process.
        let path: &'static str = Box::leak(trace.display().to_string().into_boxed_str());
        with.extend(["--timeline", path]);
        let server = |args: &'static [&'static str]| Server {
            spec: ServerSpec {
                id: binary,
                label: binary,
                binary,
                args,
                streaming_args: None,
                uses_epoll: true,
            },
            executable: executable.clone(),
        };
        let (off, on) = (server(args), server(Box::leak(with.into_boxed_slice())));
        let (mut offs, mut ons) = (Vec::new(), Vec::new());
        for _ in 0..rounds {
            offs.push(echo_window(&off, window)?);
            ons.push(echo_window(&on, window)?);
        }
        let (off, on) = (median_run(offs), median_run(ons));
        // The load is ping-pong, so msgs/s also moves with the client and the machine; the
        // server's CPU time per message is what recording adds to.
        let per_message = |run: &EchoRun| run.server_cpu / run.messages_per_sec * 1e6;
        let _ = writeln!(
            table,
            "| {binary} | {:.0} | {:.0} | {:.2} µs | {:.2} µs | {:+.0} % |",
            off.messages_per_sec,
            on.messages_per_sec,
            per_message(&off),
            per_message(&on),
            (per_message(&on) / per_message(&off) - 1.0) * 100.0
        );
    }
    let _ = std::fs::remove_file(&trace);
    Ok(table)
}
