//! `cargo run --release -p bench`: every lesson's echo server under the same load, beside a
//! tokio reference peer measured in the same run; a markdown report on stdout and in
//! `target/bench/benchmark.md`, SVG plots beside it. `--publish` writes them where the README
//! shows them instead: `docs/benchmark.md`, `imgs/bench-*.svg`, and the summary table between
//! the README's `bench-summary` markers — so a quick run never replaces the published figures.
//!
//! The lessons make claims with numbers behind them; this measures them:
//! - **ping-pong** on 1 to 1,000 connections, 64 B and 4 KiB messages: messages/s, p50/p99
//!   latency, the server's CPU — is our async runtime a real one?
//! - **idle scaling**: 10 busy connections while 0 to 1,000 idle ones are open — `select` and
//!   `poll` scan every fd on every wakeup, epoll does not (lessons 1 and 2).
//! - **memory**: peak RSS holding 1,000 and 10,000 idle connections — a thread per connection
//!   costs memory (lesson 0), a task or a callback almost none.
//! - **bulk**: one connection streams 1 GB while it reads the echo: MB/s and the server's CPU
//!   seconds per GB — what a byte costs each server.
//! - **fairness**: one connection floods while a quiet one pings every 10 ms: the worst and
//!   p99 ping — does one busy client starve the others?
//!
//! A bulk stream or a flood that hangs, or gets a byte back wrong, is a result, not a crash:
//! its table cell says `hang` or `lost bytes`, and the error is listed under the tables.
//!
//! Machines are noisy, so every number is also given as a ratio to tokio runs made right before
//! and after it (see `measure`). The load generator is `echo_client::load`: one mio thread,
//! every byte verified. Its own CPU is reported: on 2 cores a server as efficient as tokio and
//! the client both fill their core (loopback TCP costs the same on both sides), so the report
//! also gives each server's CPU time per message, which tells servers apart whoever set the pace.
//!
//! ```text
//! cargo run --release -p bench                        # everything: about 12 minutes on 2 cores
//! cargo run --release -p bench -- --quick             # a minute or two
//! cargo run --release -p bench -- --only selector,async-await
//! cargo run --release -p bench -- --publish           # a full run, for docs/ and imgs/
//! cargo run --release -p bench -- load --addr 127.0.0.1:5000   # load a server you started,
//!                                                     # e.g. to profile it with perf
//! ```
//!
//! # Layout
//! - [`cpus`]: the client on one core, the servers on another; how busy the machine was.
//! - [`servers`]: finding and building the lesson binaries, starting and killing servers,
//!   reading their CPU time and peak memory from `/proc`.
//! - [`tokio_echo`]: the reference peer, run as `bench tokio-echo --addr …` (hidden);
//!   `--multi-thread 2` makes it lesson 7's peer.
//! - [`monoio_echo`]: lesson 6's peer on io_uring, run as `bench monoio-echo --addr …`
//!   (hidden), measured beside the lessons where io_uring works.
//! - [`measure`]: the points, the A B A B order, one measurement.
//! - [`report`]: the markdown tables and the targets.
//! - [`plots`]: the SVG plots.
//! - [`publish`]: where the report and plots go, and the README's summary table.
//! - [`scheduler`]: `bench scheduler`, lesson 7 against tokio's multi-thread runtime: tokio's
//!   scheduler micro-benchmarks on both, and the two echo servers with 2 workers each.
//! - [`switches`]: `bench switches`, the cost of a hand-off between tasks: a green thread's
//!   switch (lesson 8), a future's wake and poll (lesson 5), an OS thread's context switch.

mod cpus;
mod measure;
mod monoio_echo;
mod plots;
mod publish;
mod report;
mod scheduler;
mod servers;
mod switches;
mod timeline;
mod tokio_echo;
mod user_time;

use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};

use crate::measure::Plan;
use crate::servers::{LESSONS, PEERS, REFERENCE, Server};

/// The most connections one measurement opens (memory, 10,000 idle), plus room.
const FDS_NEEDED: u64 = 10_100;

/// Benchmark every lesson's echo server against a tokio reference peer.
#[derive(Parser, Debug)]
#[command(name = "bench", version, args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(subcommand)]
    command: Option<Tool>,

    /// A short run (a minute or two): fewer points, shorter windows, no 10,000-connection
    /// point, a 256 MB bulk stream.
    #[arg(long)]
    quick: bool,

    /// Seconds each measured window lasts; a quarter of that is spent warming up before it.
    /// The flood beside the quiet client lasts four windows. Default: 0.5, or 0.25 with --quick.
    #[arg(long)]
    seconds: Option<f64>,

    /// How many times each traffic point is measured; each lesson's numbers are the median
    /// over the rounds, so one run that noise made fast or slow is outvoted.
    /// Default: 3, or 1 with --quick.
    #[arg(long, value_parser = clap::value_parser!(u8).range(1..=9))]
    rounds: Option<u8>,

    /// Only these servers (comma-separated): sync-threads, select, select-poll, selector,
    /// generators, coroutines, async-await, completion, green-threads, and monoio (lesson 6's
    /// peer). tokio is always measured; lesson 7's scheduler section and the switch costs are
    /// left out (`bench scheduler` and `bench switches` run them alone).
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,

    /// Megabytes (10⁶ bytes) the bulk stream sends to each server. Default: 1000, or 256
    /// with --quick.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    bulk_mb: Option<u64>,

    /// Where the lesson binaries are. Default: beside this binary (target/release), after
    /// `cargo build --release --bins` brought them up to date. Given, nothing is built.
    #[arg(long)]
    bin_dir: Option<PathBuf>,

    /// Do not run `cargo build --release --bins` first (benchmark the binaries as they are).
    #[arg(long)]
    no_build: bool,

    /// Where to write the report (`benchmark.md`) and the SVG plots. Default: target/bench.
    #[arg(long, conflicts_with = "publish")]
    out: Option<PathBuf>,

    /// Publish this run: write docs/benchmark.md, the plots in imgs/ and the README's summary
    /// table. Only for a full run (not with --quick or --only), so the figures the README
    /// shows all come from one complete run.
    #[arg(long, conflicts_with_all = ["quick", "only"])]
    publish: bool,
}

/// The pieces of the benchmark, one at a time.
#[derive(Subcommand, Debug)]
enum Tool {
    /// The reference peer: a tokio current-thread echo server (what the benchmark runs).
    #[command(hide = true)]
    TokioEcho {
        #[arg(long, default_value = "127.0.0.1:5000")]
        addr: SocketAddr,
        /// Bytes each connection reads at a time.
        #[arg(long, default_value_t = 4096, value_parser = clap::value_parser!(u32).range(1..=16_777_216))]
        read_buffer: u32,
        /// Run tokio's multi-thread runtime with this many workers (lesson 7's peer), instead
        /// of its current-thread one.
        #[arg(long, value_parser = clap::value_parser!(u16).range(1..=1024))]
        multi_thread: Option<u16>,
    },
    /// Lesson 6's peer: a monoio echo server on io_uring (what the benchmark runs).
    #[command(hide = true)]
    MonoioEcho {
        #[arg(long, default_value = "127.0.0.1:5000")]
        addr: SocketAddr,
        /// Bytes each connection reads at a time.
        #[arg(long, default_value_t = 4096, value_parser = clap::value_parser!(u32).range(1..=16_777_216))]
        read_buffer: u32,
    },
    /// Lesson 7's runtime against tokio's multi-thread runtime: tokio's scheduler
    /// micro-benchmarks (spawn_many, yield_many, chained_spawn, ping_pong) on both, and
    /// `work-stealing echo --workers 2` against a tokio multi-thread echo with 2 workers.
    Scheduler {
        /// Worker threads of both runtimes in the micro-benchmarks.
        #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u16).range(1..=1024))]
        workers: u16,
        /// How many times each is measured (the median is shown).
        #[arg(long, default_value_t = 7, value_parser = clap::value_parser!(u8).range(1..=99))]
        rounds: u8,
        /// Seconds each echo window lasts.
        #[arg(long, default_value_t = 2.0)]
        seconds: f64,
        /// Do not run `cargo build --release --bins` first.
        #[arg(long)]
        no_build: bool,
    },
    /// What `--timeline` costs: each runtime's echo (lessons 5, 6, 7) under 100 × 64 B
    /// ping-pong without `--timeline` (the recorder off) and with it, alternating rounds.
    Timeline {
        /// How many times each is measured (the median is shown).
        #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u8).range(1..=99))]
        rounds: u8,
        /// Seconds each window lasts (short enough to stay under the recorder's limit).
        #[arg(long, default_value_t = 1.0)]
        seconds: f64,
        /// Do not run `cargo build --release --bins` first.
        #[arg(long)]
        no_build: bool,
    },
    /// The cost of handing the CPU from one task to the next: a green thread's switch and
    /// yield (lesson 8), a future's wake and poll (lesson 5), two OS threads on one CPU.
    Switches {
        /// How many times each is measured (the median is shown).
        #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u8).range(1..=99))]
        rounds: u8,
        /// Shrink every measurement by this factor (1: a full run; 0.01 for a quick look).
        #[arg(long, default_value_t = 1.0)]
        scale: f64,
    },
    /// Drive one running echo server with the benchmark's ping-pong load and print what the
    /// client saw: for profiling a server, e.g. `perf record -g -p <its pid>` meanwhile.
    Load {
        #[arg(long, default_value = "127.0.0.1:5000")]
        addr: SocketAddr,
        /// Connections playing ping-pong.
        #[arg(long, default_value_t = 100)]
        connections: usize,
        /// Idle connections held open beside them.
        #[arg(long, default_value_t = 0)]
        idle: usize,
        /// Bytes per message.
        #[arg(long, default_value_t = 64)]
        size: usize,
        /// How long to run.
        #[arg(long, default_value_t = 5.0)]
        seconds: f64,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Some(Tool::TokioEcho {
            addr,
            read_buffer,
            multi_thread,
        }) => fdio::exit_code(
            "bench tokio-echo",
            tokio_echo::run(addr, read_buffer as usize, multi_thread.map(usize::from)),
        ),
        Some(Tool::MonoioEcho { addr, read_buffer }) => fdio::exit_code(
            "bench monoio-echo",
            monoio_echo::run(addr, read_buffer as usize),
        ),
        Some(Tool::Scheduler {
            workers,
            rounds,
            seconds,
            no_build,
        }) => {
            if !no_build && !servers::build_lessons(&workspace_root()) {
                eprintln!("bench: warning: `cargo build --release --bins` failed (see above)");
            }
            let result = beside_this_binary().and_then(|bin_dir| {
                let section = scheduler::section(
                    &bin_dir,
                    usize::from(workers),
                    usize::from(rounds),
                    Duration::from_secs_f64(seconds.clamp(0.05, 60.0)),
                )?;
                print!("{}", section.markdown);
                Ok(())
            });
            fdio::exit_code("bench scheduler", result)
        }
        Some(Tool::Timeline {
            rounds,
            seconds,
            no_build,
        }) => {
            if !no_build && !servers::build_lessons(&workspace_root()) {
                eprintln!("bench: warning: `cargo build --release --bins` failed (see above)");
            }
            let window = Duration::from_secs_f64(seconds.clamp(0.05, 60.0));
            let result = beside_this_binary()
                .and_then(|bin_dir| timeline::table(&bin_dir, usize::from(rounds), window))
                .map(|table| print!("{table}"));
            fdio::exit_code("bench timeline", result)
        }
        Some(Tool::Switches { rounds, scale }) => {
            let result = switches::section(usize::from(rounds), scale.clamp(0.0001, 10.0))
                .map(|section| print!("{section}"));
            fdio::exit_code("bench switches", result)
        }
        Some(Tool::Load {
            addr,
            connections,
            idle,
            size,
            seconds,
        }) => {
            let shape = echo_client::LoadShape {
                active: connections,
                idle,
                message_size: size,
            };
            fdio::exit_code("bench load", load_one(addr, &shape, seconds))
        }
        None => match run(&cli) {
            Ok(0) => ExitCode::SUCCESS,
            Ok(failed) => {
                eprintln!(
                    "bench: {failed} measurements failed, hung or lost bytes (listed under the tables)"
                );
                ExitCode::FAILURE
            }
            Err(err) => {
                eprintln!("bench: {err}");
                ExitCode::FAILURE
            }
        },
    }
}

/// Runs the benchmark; returns how many measurements failed.
fn run(cli: &Cli) -> io::Result<usize> {
    let started = Instant::now();
    let fd_limit = fdio::raise_fd_limit()?;
    if fd_limit < FDS_NEEDED {
        eprintln!(
            "bench: warning: the fd limit is {fd_limit}; the 10,000-connection point needs \
             {FDS_NEEDED} (raise it with `ulimit -Hn`)"
        );
    }
    if cfg!(debug_assertions) {
        eprintln!(
            "bench: warning: built without --release: the load client is slow and the numbers \
             mean little (use `cargo run --release -p bench`)"
        );
    }
    let lessons = lessons_to_measure(cli)?;
    let reference = Server {
        spec: REFERENCE,
        executable: std::env::current_exe()?,
    };
    let plan = plan(cli)?;
    eprintln!(
        "bench: {} points × {} rounds × ({} lessons + tokio around each), {:.2} s windows",
        plan.points.len(),
        plan.rounds,
        lessons.len(),
        plan.window.as_secs_f64()
    );

    // Before pinning: a pinned thread sees one core, and so would the runtimes' workers.
    let machine = report::Machine::describe_this_one();
    let scheduler = scheduler_section(cli, &plan)?;
    let switches = switches_section(cli, &plan)?;
    let pinning = cpus::Pinning::choose();
    match pinning {
        Some(pinning) => eprintln!(
            "bench: load client on CPU {}, servers on CPU {}",
            pinning.client_cpu, pinning.server_cpu
        ),
        None => eprintln!("bench: warning: only one CPU allowed: client and server share it"),
    }
    let results = measure::run(&plan, &lessons, &reference, pinning)?;

    let args: Vec<String> = std::env::args().skip(1).collect();
    let command = if args.is_empty() {
        "cargo run --release -p bench".to_string()
    } else {
        format!("cargo run --release -p bench -- {}", args.join(" "))
    };
    let mut report = report::markdown(&results, &machine, pinning, &command, started.elapsed());
    report.push_str(&scheduler.markdown);
    report.push_str(&switches);
    print!("{report}");
    let destination = if cli.publish {
        publish::Destination::published(&workspace_root())
    } else {
        publish::Destination::local(
            cli.out
                .clone()
                .unwrap_or_else(|| workspace_root().join("target").join("bench")),
        )
    };
    for path in destination.write(&results, &scheduler.versus_tokio, &scheduler.echo, &report)? {
        eprintln!("bench: wrote {}", path.display());
    }
    eprintln!("bench: done in {:.0} s", started.elapsed().as_secs_f64());
    let failed = results
        .iter()
        .flat_map(measure::PointResult::outcomes)
        .filter(|outcome| outcome.error().is_some())
        .count();
    Ok(failed)
}

/// `bench load`: one window of ping-pong against a server someone else started.
fn load_one(addr: SocketAddr, shape: &echo_client::LoadShape, seconds: f64) -> io::Result<()> {
    if !addr.ip().is_loopback() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "--addr {addr}: the load goes only to servers on this machine (127.0.0.1, ::1)"
            ),
        ));
    }
    fdio::raise_fd_limit()?;
    let mut load = echo_client::Load::open(addr, shape, Duration::from_secs(10))?;
    let window = load.run_for(Duration::from_secs_f64(seconds.clamp(0.01, 600.0)))?;
    let percentile = |percent| {
        let latency = window.latency.percentile(percent).unwrap_or_default();
        format!("{:.0} µs", latency.as_secs_f64() * 1e6)
    };
    println!(
        "{:.0} messages/s, p50 {}, p99 {}, {} bytes verified, client CPU {:.0} %, {} idle held",
        window.messages_per_sec(),
        percentile(50.0),
        percentile(99.0),
        window.bytes_verified,
        window.client_cpu_share() * 100.0,
        load.idle_held()
    );
    Ok(())
}

/// Lesson 7's section (see [`scheduler`]): with 2 workers, as many rounds as the traffic
/// points but at least 5, windows four times theirs. Left out with `--only` (`bench
/// scheduler` runs it alone), or when the `work-stealing` binary is not built.
fn scheduler_section(cli: &Cli, plan: &Plan) -> io::Result<scheduler::Section> {
    if !cli.only.is_empty() {
        return Ok(scheduler::Section::default());
    }
    let bin_dir = match &cli.bin_dir {
        Some(dir) => dir.clone(),
        None => beside_this_binary()?,
    };
    if !bin_dir.join("work-stealing").is_file() {
        eprintln!(
            "bench: scheduler: no work-stealing binary in {} — skipped",
            bin_dir.display()
        );
        return Ok(scheduler::Section::default());
    }
    eprintln!("bench: scheduler: lesson 7 and tokio multi_thread, 2 workers each");
    scheduler::section(&bin_dir, 2, plan.rounds.max(5), plan.window * 4)
}

/// The switch-cost section (see [`switches`]): as many rounds as the traffic points but at
/// least 5; a tenth of the work with `--quick`. Left out with `--only` (`bench switches`
/// runs it alone).
fn switches_section(cli: &Cli, plan: &Plan) -> io::Result<String> {
    if !cli.only.is_empty() {
        return Ok(String::new());
    }
    eprintln!("bench: switches: green threads, futures, OS threads");
    let scale = if cli.quick { 0.1 } else { 1.0 };
    switches::section(plan.rounds.max(5), scale)
}

/// The servers to measure: the lessons built (or found), then the peers that can run here,
/// filtered by `--only`.
fn lessons_to_measure(cli: &Cli) -> io::Result<Vec<Server>> {
    let known = || LESSONS.iter().chain(&PEERS).map(|spec| spec.id);
    for id in &cli.only {
        if !known().any(|known| known == id) {
            let ids: Vec<&str> = known().collect();
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "--only {id}: no such server; choose from {}",
                    ids.join(", ")
                ),
            ));
        }
    }
    let bin_dir = match &cli.bin_dir {
        Some(dir) => dir.clone(),
        None => {
            if !cli.no_build && !servers::build_lessons(&workspace_root()) {
                eprintln!(
                    "bench: warning: `cargo build --release --bins` failed (see above); \
                     benchmarking the binaries already built, which may be stale"
                );
            }
            beside_this_binary()?
        }
    };
    let (found, missing) = servers::find_lessons(&bin_dir);
    let wanted = |id: &str| cli.only.is_empty() || cli.only.iter().any(|only| only == id);
    for id in missing.into_iter().filter(|id| wanted(id)) {
        eprintln!(
            "bench: {id}: no binary in {} yet — skipped (run `cargo build --release --bins`)",
            bin_dir.display()
        );
    }
    let mut servers: Vec<Server> = found
        .into_iter()
        .filter(|server| wanted(server.spec.id))
        .collect();
    for spec in PEERS.into_iter().filter(|spec| wanted(spec.id)) {
        // The peer is this very binary (`bench monoio-echo`), like the tokio reference, and
        // needs io_uring.
        match monoio_echo::unavailable() {
            Some(why) => eprintln!("bench: {}: skipped: {why}", spec.id),
            None => servers.push(Server {
                spec,
                executable: std::env::current_exe()?,
            }),
        }
    }
    Ok(servers)
}

fn plan(cli: &Cli) -> io::Result<Plan> {
    let (default_seconds, default_rounds) = if cli.quick { (0.25, 1) } else { (0.5, 3) };
    let seconds = cli.seconds.unwrap_or(default_seconds);
    let rounds = cli.rounds.map_or(default_rounds, usize::from);
    if !(0.01..=60.0).contains(&seconds) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("--seconds {seconds}: choose between 0.01 and 60"),
        ));
    }
    let window = Duration::from_secs_f64(seconds);
    let bulk_bytes = cli.bulk_mb.unwrap_or(if cli.quick { 256 } else { 1000 }) * 1_000_000;
    Ok(if cli.quick {
        Plan::quick(window, rounds, bulk_bytes)
    } else {
        Plan::full(window, rounds, bulk_bytes)
    })
}

/// The workspace this benchmark was built from: where `cargo build` runs, `target/bench`,
/// `docs/` and `imgs/` are.
fn workspace_root() -> PathBuf {
    let bench_crate = Path::new(env!("CARGO_MANIFEST_DIR"));
    // crates/bench → crates → the workspace.
    bench_crate
        .ancestors()
        .nth(2)
        .unwrap_or(bench_crate)
        .to_path_buf()
}

/// The directory of this executable: `target/release` under `cargo run --release`, where
/// `cargo build --release --bins` puts the lesson binaries too (whatever CARGO_TARGET_DIR is).
fn beside_this_binary() -> io::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    exe.parent()
        .map(Path::to_path_buf)
        .ok_or_else(|| io::Error::other("this executable has no directory"))
}
