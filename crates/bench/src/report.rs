//! The report: markdown tables on stdout, one per scenario, then the targets the issue set,
//! each marked met or not with the number that decides it.
//!
//! Every lesson cell shows its absolute number and, in parentheses, the ratio to the tokio
//! runs right before and after it; the tokio row shows the median of all its runs and the
//! spread row how much those runs disagreed — the noise any ratio on that column carries.

use std::fmt::Write;
use std::time::Duration;

use crate::cpus::Pinning;
use crate::measure::{NOISY, Outcome, PointResult, Scenario, Traffic, in_megabytes, thousands};
use crate::scheduler::EchoRow;
use crate::servers::{LESSONS, PEERS, ServerSpec};

/// The 20 MB peak-RSS target for epoll lessons holding 10,000 idle connections.
pub const MEMORY_TARGET_BYTES: u64 = 20_000_000;

/// A non-blocking lesson's server CPU per GB of a bulk stream: at most this × tokio's.
const BULK_CPU_TARGET: f64 = 1.10;

/// A non-blocking lesson's worst ping beside a flood: at most this.
const WORST_PING_TARGET: Duration = Duration::from_millis(20);

/// The lessons the bulk and fairness targets are for: every one that does not block
/// (`sync --threads` keeps Python's `recv(4096)` and a thread per client: reported only).
const NON_BLOCKING: [&str; 7] = [
    "select",
    "select-poll",
    "selector",
    "generators",
    "coroutines",
    "async-await",
    "completion",
];

/// Lesson 6's bars (issue 21): server CPU per message at most this × tokio's, and at most
/// [`COMPLETION_CPU_PER_MESSAGE_VS_MONOIO`] × monoio's, at 100 and 1000 × 64 B. (Issue 11's
/// 0.80× tokio was below the kernel's floor: see the user-space table.)
const COMPLETION_CPU_PER_MESSAGE_TARGET: f64 = 1.0;
const COMPLETION_CPU_PER_MESSAGE_VS_MONOIO: f64 = 0.85;

/// Lesson 6's bulk server CPU per GB: at most this × tokio's.
const COMPLETION_BULK_CPU_TARGET: f64 = 0.80;

/// Lesson 4 at 64 B from 10 connections up (issue 21): msgs/s at least this × tokio's…
const COROUTINES_RATE_TARGET: f64 = 0.95;
/// …and server CPU per message at most this × tokio's.
const COROUTINES_CPU_TARGET: f64 = 1.05;

/// Lesson 8's bars (issue 22): msgs/s at least this × tokio's at 100 × 64 B…
const GREEN_THREADS_RATE_TARGET: f64 = 0.95;
/// … server CPU per message at most this × tokio's there…
const GREEN_THREADS_CPU_PER_MESSAGE_TARGET: f64 = 1.05;
/// … bulk server CPU per GB at most this × tokio's…
const GREEN_THREADS_BULK_CPU_TARGET: f64 = 1.0;
/// … and 10,000 idle connections in at most this × lesson 5's peak memory.
const GREEN_THREADS_MEMORY_TARGET: f64 = 2.0;

/// Where the run happened, for the report's header.
pub struct Machine {
    pub cores: usize,
    pub kernel: String,
    pub cpu: String,
}

impl Machine {
    /// Reads the core count, `/proc/sys/kernel/osrelease` and the CPU model from `/proc/cpuinfo`.
    pub fn describe_this_one() -> Machine {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu = cpuinfo
            .lines()
            .find_map(|line| line.strip_prefix("model name"))
            .and_then(|rest| rest.split_once(':'))
            .map(|(_, model)| model.trim().to_string())
            .unwrap_or_else(|| "unknown CPU".into());
        Machine {
            cores: std::thread::available_parallelism().map_or(0, |n| n.get()),
            kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
                .map(|release| release.trim().to_string())
                .unwrap_or_else(|_| "unknown".into()),
            cpu,
        }
    }
}

/// The whole report, in markdown.
pub fn markdown(
    results: &[PointResult],
    machine: &Machine,
    pinning: Option<Pinning>,
    command: &str,
    took: Duration,
) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "## Results\n");
    let pinned = match pinning {
        Some(pinning) => format!(
            "load client pinned to CPU {}, every server to CPU {}",
            pinning.client_cpu, pinning.server_cpu
        ),
        None => "client and servers share one CPU".into(),
    };
    let _ = writeln!(
        out,
        "Machine: {} cores, {}, Linux {}; {pinned}. Command: `{command}` ({:.0} s).\n",
        machine.cores,
        machine.cpu,
        machine.kernel,
        took.as_secs_f64()
    );
    let verified: u64 = results
        .iter()
        .flat_map(PointResult::outcomes)
        .map(Outcome::bytes_verified)
        .sum();
    let _ = writeln!(
        out,
        "Every echoed byte was checked against what was sent: {:.2} GB in the measured \
         windows, bulk streams and floods.\n",
        verified as f64 / 1e9
    );
    let traffic_runs = results
        .iter()
        .flat_map(PointResult::outcomes)
        .filter(|outcome| outcome.traffic().is_some());
    let (runs, noisy) = traffic_runs.fold((0, 0), |(runs, noisy), outcome| {
        (runs + 1, noisy + usize::from(outcome.is_noisy()))
    });
    let _ = writeln!(
        out,
        "Noise: {noisy} of {runs} traffic measurements ran while the rest of the machine kept \
         more than {:.0} % of a core busy, even after measuring again (see the CPU table).\n",
        NOISY * 100.0
    );
    let _ = writeln!(
        out,
        "Reference peer: tokio's current-thread runtime, a task per connection \
         reading into a 4 KiB buffer (`crates/bench/src/tokio_echo.rs`); for the bulk and \
         fairness tables, into 16 KiB (the peer of issue 9's targets). monoio, lesson 6's \
         peer (io_uring, one thread, owned buffers: `crates/bench/src/monoio_echo.rs`), reads \
         as much at a time and is measured like a lesson, between tokio runs. Load: \
         `echo_client::load`, one thread on mio, every message verified byte by byte; the \
         bulk stream and the flood from `echo_client::stream` and `echo_client::flood`, a \
         writer and a reader thread per connection, every byte verified.\n"
    );
    let rounds = results
        .iter()
        .map(|result| result.rounds.len())
        .max()
        .unwrap_or(0);
    let _ = writeln!(
        out,
        "Each traffic point was measured in {rounds} round(s) of `tokio L1 tokio L2 … tokio`. \
         Each lesson cell: the median over the rounds of the lesson's number (and of its ratio \
         to the tokio runs just before and after it). tokio row: median of all its runs; \
         spread: (max − min) ÷ median of those runs.\n"
    );
    ping_pong_tables(&mut out, results);
    idle_scaling_table(&mut out, results);
    memory_table(&mut out, results);
    bulk_table(&mut out, results);
    fairness_table(&mut out, results);
    failures(&mut out, results);
    targets(&mut out, results);
    out
}

/// The ping-pong point of `active` connections × 64 B, if measured.
fn ping_pong_64(results: &[PointResult], active: usize) -> Option<&PointResult> {
    results.iter().find(|result| {
        result.point.scenario == Scenario::PingPong
            && result.point.shape.active == active
            && result.point.shape.message_size == 64
    })
}

/// The memory point of 10,000 idle connections, if measured.
fn memory_10k(results: &[PointResult]) -> Option<&PointResult> {
    results.iter().find(|result| {
        result.point.scenario == Scenario::Memory && result.point.shape.idle == 10_000
    })
}

/// The bulk stream, if measured.
fn bulk_point(results: &[PointResult]) -> Option<&PointResult> {
    results
        .iter()
        .find(|result| matches!(result.point.scenario, Scenario::Bulk { .. }))
}

/// The flood beside a quiet client, if measured.
fn fairness_point(results: &[PointResult]) -> Option<&PointResult> {
    results
        .iter()
        .find(|result| matches!(result.point.scenario, Scenario::Fairness { .. }))
}

fn of(results: &[PointResult], scenario: Scenario) -> Vec<&PointResult> {
    results
        .iter()
        .filter(|result| result.point.scenario == scenario)
        .collect()
}

/// The servers measured, in lesson order (the same at every point).
fn lessons_in(points: &[&PointResult]) -> Vec<ServerSpec> {
    points
        .first()
        .map(|result| result.lessons.clone())
        .unwrap_or_default()
}

fn rate(outcome: &Outcome) -> Option<f64> {
    outcome.traffic().map(|traffic| traffic.messages_per_sec)
}

fn p99(outcome: &Outcome) -> Option<f64> {
    outcome.traffic().map(|traffic| traffic.p99.as_secs_f64())
}

fn peak_rss(outcome: &Outcome) -> Option<f64> {
    outcome.memory().map(|memory| memory.peak_rss as f64)
}

/// A table with a header row and one row per server. `cell(result, Some(index))` renders a
/// lesson's cell, `cell(result, None)` the tokio cell.
fn table(
    out: &mut String,
    title: &str,
    points: &[&PointResult],
    heading: impl Fn(&PointResult) -> String,
    cell: impl Fn(&PointResult, Option<usize>) -> String,
    spread: Option<&dyn Fn(&PointResult) -> String>,
) {
    if points.is_empty() {
        return;
    }
    let _ = writeln!(out, "### {title}\n");
    let headings: Vec<String> = points.iter().map(|result| heading(result)).collect();
    let _ = writeln!(out, "| server | {} |", headings.join(" | "));
    let _ = writeln!(out, "|---|{}", "---:|".repeat(points.len()));
    let row = |name: &str, render: &dyn Fn(&PointResult) -> String| {
        let cells: Vec<String> = points.iter().map(|result| render(result)).collect();
        format!("| {name} | {} |\n", cells.join(" | "))
    };
    out.push_str(&row("tokio (reference)", &|result| cell(result, None)));
    if let Some(spread) = spread {
        out.push_str(&row("  tokio spread", spread));
    }
    for (index, spec) in lessons_in(points).iter().enumerate() {
        out.push_str(&row(spec.label, &|result| cell(result, Some(index))));
    }
    out.push('\n');
}

/// `84,211 (0.97×)`, or why there is no number.
fn lesson_cell(
    result: &PointResult,
    index: usize,
    value: fn(&Outcome) -> Option<f64>,
    show: fn(f64) -> String,
) -> String {
    match result.lesson_median(index, value) {
        None if result.all_failed(index) => "failed¹".into(),
        None => "—".into(),
        Some(number) => match result.ratio(index, value) {
            Some(ratio) => format!("{} ({ratio:.2}×)", show(number)),
            None => show(number),
        },
    }
}

fn reference_cell(
    result: &PointResult,
    value: fn(&Outcome) -> Option<f64>,
    show: fn(f64) -> String,
) -> String {
    result
        .reference_median(value)
        .map_or("failed¹".into(), show)
}

fn spread_cell(result: &PointResult, value: fn(&Outcome) -> Option<f64>) -> String {
    result
        .reference_spread(value)
        .map_or("—".into(), |spread| format!("{:.0} %", spread * 100.0))
}

fn messages(per_sec: f64) -> String {
    thousands(per_sec.round() as usize)
}

/// `21 µs`, `1.3 ms`.
fn latency(secs: f64) -> String {
    if secs < 1e-3 {
        format!("{:.0} µs", secs * 1e6)
    } else {
        format!("{:.1} ms", secs * 1e3)
    }
}

fn megabytes(bytes: f64) -> String {
    format!("{:.1} MB", bytes / 1e6)
}

fn ping_pong_tables(out: &mut String, results: &[PointResult]) {
    let points = of(results, Scenario::PingPong);
    let heading = |result: &PointResult| {
        let shape = result.point.shape;
        format!(
            "{} × {}",
            shape.active,
            crate::measure::size(shape.message_size)
        )
    };
    table(
        out,
        "Ping-pong: messages/s (× tokio)",
        &points,
        heading,
        |result, lesson| match lesson {
            None => reference_cell(result, rate, messages),
            Some(index) => lesson_cell(result, index, rate, messages),
        },
        Some(&|result| spread_cell(result, rate)),
    );
    table(
        out,
        "Ping-pong latency: p50 / p99 (p99 × tokio)",
        &points,
        heading,
        |result, lesson| {
            let p50 =
                |outcome: &Outcome| outcome.traffic().map(|traffic| traffic.p50.as_secs_f64());
            match lesson {
                None => format!(
                    "{} / {}",
                    result.reference_median(p50).map_or("—".into(), latency),
                    result.reference_median(p99).map_or("—".into(), latency)
                ),
                Some(index) => match result.lesson_median(index, p50) {
                    None => "—".into(),
                    Some(median) => format!(
                        "{} / {}",
                        latency(median),
                        lesson_cell(result, index, p99, latency)
                    ),
                },
            }
        },
        None,
    );
    table(
        out,
        "Server CPU time per message (× tokio; lower is better)",
        &points,
        heading,
        |result, lesson| match lesson {
            None => reference_cell(result, cpu_per_message, micros),
            Some(index) => lesson_cell(result, index, cpu_per_message, micros),
        },
        Some(&|result| spread_cell(result, cpu_per_message)),
    );
    table(
        out,
        "Server CPU time per message in user space (× tokio; lower is better)",
        &points,
        heading,
        |result, lesson| match lesson {
            None => result
                .reference_median(user_cpu_per_message)
                .map_or("n/a".into(), micros),
            Some(index) if result.lesson_median(index, user_cpu_per_message).is_none() => {
                "n/a".into()
            }
            Some(index) => lesson_cell(result, index, user_cpu_per_message, micros),
        },
        Some(&|result| spread_cell(result, user_cpu_per_message)),
    );
    kernel_floor(out, results);
    table(
        out,
        "Server system calls per message (× tokio)",
        &points,
        heading,
        |result, lesson| match lesson {
            None => result
                .reference_median(syscalls_per_message)
                .map_or("n/a".into(), calls),
            Some(index) if result.lesson_median(index, syscalls_per_message).is_none() => {
                "n/a".into()
            }
            Some(index) => lesson_cell(result, index, syscalls_per_message, calls),
        },
        None,
    );
    table(
        out,
        "CPU during ping-pong, % of one core: server / load client / rest of the machine",
        &points,
        heading,
        |result, lesson| {
            let shares = |traffic: &Traffic| {
                [
                    traffic.server_cpu,
                    traffic.client_cpu,
                    traffic.rest_of_machine_cpu(),
                ]
            };
            let shares = match lesson {
                // The run closest to the median rate stands for its server.
                None => result
                    .representative_reference(rate)
                    .and_then(Outcome::traffic)
                    .map(shares),
                Some(index) => result
                    .representative(index, rate)
                    .and_then(Outcome::traffic)
                    .map(shares),
            };
            shares.map_or("—".into(), |[server, client, rest]| {
                format!(
                    "{:.0} / {:.0} / {:.0}",
                    server * 100.0,
                    client * 100.0,
                    rest * 100.0
                )
            })
        },
        None,
    );
    let _ = writeln!(
        out,
        "On 2 cores the load client and the server each have one core (pinned). When both are \
         near 100 %, messages/s is the client's limit as much as the server's; the CPU time \
         per message still tells the servers apart. \"Rest\" is the kernel's deferred network \
         work (ksoftirqd) and whatever else ran on the machine: high values mean a noisy run. \
         User space is the share of the server's CPU time that perf's cpu-clock samples \
         (about 2,000 per window for a server keeping one core busy) found in the server's \
         own code rather than in the kernel (a sample held back behind an interrupt that \
         stopped the server in user space counts there; see \"How it measures\"). System calls are counted per server thread with perf on the \
         tracepoint raw_syscalls:sys_enter over the measurement window (n/a where perf may \
         not sample or count them): a readiness server makes at least a read and a write per \
         message, an io_uring server one io_uring_enter per turn of its loop, shared by every \
         message that turn carried.\n"
    );
}

/// The kernel's share of the server CPU per message at 100 × 64 B, from the same run: the
/// part no runtime's own code can save.
fn kernel_floor(out: &mut String, results: &[PointResult]) {
    let Some(point) = ping_pong_64(results, 100) else {
        return;
    };
    // The kernel's time per message, and its share of the whole.
    let kernel =
        |outcome: &Outcome| Some(cpu_per_message(outcome)? - user_cpu_per_message(outcome)?);
    let share = |outcome: &Outcome| Some(kernel(outcome)? / cpu_per_message(outcome)?);
    let (Some(tokio_kernel), Some(tokio_total), Some(tokio_share)) = (
        point.reference_median(kernel),
        point.reference_median(cpu_per_message),
        point.reference_median(share),
    ) else {
        return;
    };
    let shares: Vec<(f64, &str)> = point
        .lessons
        .iter()
        .enumerate()
        .filter_map(|(index, spec)| Some((point.lesson_median(index, share)?, spec.label)))
        .collect();
    let lowest = shares.iter().copied().min_by(|a, b| a.0.total_cmp(&b.0));
    let highest = shares.iter().copied().max_by(|a, b| a.0.total_cmp(&b.0));
    let others = match (lowest, highest) {
        (Some((low, low_label)), Some((high, high_label))) => format!(
            "; every other server's, from {:.0} % ({low_label}) to {:.0} % ({high_label})",
            low * 100.0,
            high * 100.0
        ),
        _ => String::new(),
    };
    let _ = writeln!(
        out,
        "**The kernel's floor.** At 100 × 64 B the kernel spent {} of tokio's {} per message \
         ({:.0} %){others}. That part is the system calls and the TCP work behind them — on \
         loopback, the server's `send` also delivers the echo into the client's socket — and \
         every server here moves the same bytes through the same sockets. A runtime's own \
         code is the user-space time above; beyond it, a runtime can only change the kernel's \
         part by the number and kind of system calls it makes (the next table).\n",
        micros(tokio_kernel),
        micros(tokio_total),
        tokio_share * 100.0
    );
}

fn user_cpu_per_message(outcome: &Outcome) -> Option<f64> {
    outcome
        .traffic()
        .and_then(|traffic| traffic.server_user_cpu_per_message())
        .map(|user| user.as_secs_f64())
}

fn syscalls_per_message(outcome: &Outcome) -> Option<f64> {
    outcome
        .traffic()
        .and_then(|traffic| traffic.syscalls_per_message)
}

/// `2.05`: system calls per message.
fn calls(per_message: f64) -> String {
    format!("{per_message:.2}")
}

fn cpu_per_message(outcome: &Outcome) -> Option<f64> {
    outcome
        .traffic()
        .map(|traffic| traffic.server_cpu_per_message().as_secs_f64())
}

/// `3.41 µs`.
fn micros(secs: f64) -> String {
    format!("{:.2} µs", secs * 1e6)
}

fn idle_scaling_table(out: &mut String, results: &[PointResult]) {
    let points = of(results, Scenario::IdleScaling);
    table(
        out,
        "Idle scaling: messages/s of 10 active connections × 64 B, with N idle connections open",
        &points,
        |result| format!("{} idle", thousands(result.point.shape.idle)),
        |result, lesson| match lesson {
            None => reference_cell(result, rate, messages),
            Some(index) => {
                let cell = lesson_cell(result, index, rate, messages);
                match result
                    .representative(index, rate)
                    .and_then(Outcome::traffic)
                {
                    Some(traffic) if traffic.idle_held < result.point.shape.idle => {
                        format!("{cell}, held {} idle²", thousands(traffic.idle_held))
                    }
                    _ => cell,
                }
            }
        },
        Some(&|result| spread_cell(result, rate)),
    );
}

fn memory_table(out: &mut String, results: &[PointResult]) {
    let points = of(results, Scenario::Memory);
    table(
        out,
        "Peak memory (VmHWM) holding N idle connections (× tokio)",
        &points,
        |result| format!("{} idle", thousands(result.point.shape.idle)),
        |result, lesson| match lesson {
            None => reference_cell(result, peak_rss, megabytes),
            Some(index) => {
                let cell = lesson_cell(result, index, peak_rss, megabytes);
                match result
                    .representative(index, peak_rss)
                    .and_then(Outcome::memory)
                {
                    Some(memory) if memory.held < result.point.shape.idle => {
                        format!("{cell}, held only {}²", thousands(memory.held))
                    }
                    _ => cell,
                }
            }
        },
        None,
    );
}

/// A table for one point with several numbers per server: one column per [`Column`].
struct Column {
    heading: &'static str,
    value: fn(&Outcome) -> Option<f64>,
    show: fn(f64) -> String,
    /// Whether the cell gives the ratio to tokio (the tokio row never does).
    ratio: bool,
}

fn columns_table(out: &mut String, title: &str, result: &PointResult, columns: &[Column]) {
    let _ = writeln!(out, "### {title}\n");
    let headings: Vec<&str> = columns.iter().map(|column| column.heading).collect();
    let _ = writeln!(out, "| server | {} |", headings.join(" | "));
    let _ = writeln!(out, "|---|{}", "---:|".repeat(columns.len()));
    let row = |name: &str, index: Option<usize>| {
        let cells: Vec<String> = columns
            .iter()
            .map(|column| stream_cell(result, index, column))
            .collect();
        format!("| {name} | {} |\n", cells.join(" | "))
    };
    out.push_str(&row("tokio (reference)", None));
    let spreads: Vec<String> = columns
        .iter()
        .map(|column| spread_cell(result, column.value))
        .collect();
    let _ = writeln!(out, "| tokio spread | {} |", spreads.join(" | "));
    for (index, spec) in result.lessons.iter().enumerate() {
        out.push_str(&row(spec.label, Some(index)));
    }
    out.push('\n');
}

/// A number (× tokio), and whether any run of this server hung or lost bytes: a hang in one
/// round of three is not outvoted by the median, it is shown.
fn stream_cell(result: &PointResult, index: Option<usize>, column: &Column) -> String {
    let (hangs, losses) = result.hangs_and_losses(index);
    let runs = match index {
        Some(_) => result.rounds.len(),
        None => result
            .rounds
            .iter()
            .map(|round| round.reference.len())
            .sum(),
    };
    let mut broken = Vec::new();
    if hangs > 0 {
        broken.push(format!("hang in {hangs} of {runs}¹"));
    }
    if losses > 0 {
        broken.push(format!("lost bytes in {losses} of {runs}¹"));
    }
    let number = match index {
        None => result.reference_median(column.value).map(column.show),
        Some(index) => result.lesson_median(index, column.value).map(|number| {
            match result.ratio(index, column.value).filter(|_| column.ratio) {
                Some(ratio) => format!("{} ({ratio:.2}×)", (column.show)(number)),
                None => (column.show)(number),
            }
        }),
    };
    match (number, broken.is_empty()) {
        (Some(number), true) => number,
        (Some(number), false) => format!("{number}, {}", broken.join(", ")),
        (None, false) => broken.join(", "),
        (None, true) => "failed¹".into(),
    }
}

fn megabytes_per_sec(outcome: &Outcome) -> Option<f64> {
    outcome.bulk().map(|bulk| bulk.megabytes_per_sec())
}

fn cpu_secs_per_gb(outcome: &Outcome) -> Option<f64> {
    outcome.bulk().map(|bulk| bulk.server_cpu_secs_per_gb())
}

fn worst_ping(outcome: &Outcome) -> Option<f64> {
    outcome
        .fairness()
        .map(|fairness| fairness.worst.as_secs_f64())
}

fn p99_ping(outcome: &Outcome) -> Option<f64> {
    outcome
        .fairness()
        .map(|fairness| fairness.p99.as_secs_f64())
}

fn flood_rate(outcome: &Outcome) -> Option<f64> {
    outcome
        .fairness()
        .map(|fairness| fairness.flood_megabytes_per_sec)
}

fn rate_mb(per_sec: f64) -> String {
    format!("{} MB/s", thousands(per_sec.round() as usize))
}

/// `0.42 s`.
fn seconds(secs: f64) -> String {
    format!("{secs:.2} s")
}

fn bulk_table(out: &mut String, results: &[PointResult]) {
    for result in results {
        let Scenario::Bulk { bytes } = result.point.scenario else {
            continue;
        };
        let title = format!(
            "Bulk stream: {} on one connection, read while it is sent (× tokio)",
            in_megabytes(bytes)
        );
        let columns = [
            Column {
                heading: "MB/s",
                value: megabytes_per_sec,
                show: rate_mb,
                ratio: true,
            },
            Column {
                heading: "server CPU per GB (lower is better)",
                value: cpu_secs_per_gb,
                show: seconds,
                ratio: true,
            },
        ];
        columns_table(out, &title, result, &columns);
        let _ = writeln!(
            out,
            "The server CPU per GB is what a byte costs each server, whoever set the pace; the \
             target for every non-blocking lesson is ≤ {BULK_CPU_TARGET:.2}× tokio's.\n"
        );
    }
}

fn fairness_table(out: &mut String, results: &[PointResult]) {
    for result in results {
        let Scenario::Fairness { flood, ping_every } = result.point.scenario else {
            continue;
        };
        let title = format!(
            "Fairness: a quiet client's ping (every {} ms) beside a flood of 1 MiB writes for \
             {:.1} s (× tokio)",
            ping_every.as_millis(),
            flood.as_secs_f64()
        );
        let columns = [
            Column {
                heading: "worst ping",
                value: worst_ping,
                show: latency,
                ratio: true,
            },
            Column {
                heading: "p99 ping",
                value: p99_ping,
                show: latency,
                ratio: true,
            },
            Column {
                heading: "flood echo",
                value: flood_rate,
                show: rate_mb,
                ratio: false,
            },
        ];
        columns_table(out, &title, result, &columns);
        let _ = writeln!(
            out,
            "A loop that serves one connection for as long as its reads succeed makes the quiet \
             client wait until the flood pauses; a fair one answers within milliseconds. The \
             target for every non-blocking lesson: worst ping ≤ {} ms.\n",
            WORST_PING_TARGET.as_millis()
        );
    }
}

fn failures(out: &mut String, results: &[PointResult]) {
    let mut lines = Vec::new();
    for result in results {
        for round in &result.rounds {
            let reference = round.reference.iter().map(|outcome| ("tokio", outcome));
            let labels = result.lessons.iter().map(|spec| spec.label);
            for (label, outcome) in reference.chain(labels.zip(&round.lessons)) {
                let what = match outcome {
                    Outcome::Hang(_) => "hang",
                    Outcome::LostBytes(_) => "lost bytes",
                    _ => "failed",
                };
                if let Some(error) = outcome.error() {
                    lines.push(format!(
                        "- {label} at {} ({what}): {error}",
                        result.point.describe()
                    ));
                }
            }
        }
    }
    let _ = writeln!(
        out,
        "² a server that cannot hold that many connections (`select`: FD_SETSIZE is 1024) is \
         marked, not failed: its number is for the connections it held.\n"
    );
    if !lines.is_empty() {
        let _ = writeln!(
            out,
            "¹ measurements that failed, hung or lost bytes:\n\n{}\n",
            lines.join("\n")
        );
    }
}

/// The targets, each with the number that decides it.
fn targets(out: &mut String, results: &[PointResult]) {
    let _ = writeln!(out, "### Targets\n");
    let target_point = ping_pong_64(results, 100);
    let throughput = |id: &str, at_least: f64| -> String {
        let Some(result) = target_point else {
            return "not measured".into();
        };
        let Some(index) = result.lesson(id) else {
            return "not built".into();
        };
        let cost = result
            .ratio(index, cpu_per_message)
            .map(|ratio| format!(" (server CPU per message {ratio:.2}× tokio's)"))
            .unwrap_or_default();
        match result.ratio(index, rate) {
            Some(ratio) => format!("{} {ratio:.2}× tokio{cost}", met(ratio >= at_least)),
            None => "failed".into(),
        }
    };
    let async_p99 = match target_point.and_then(|result| result.lesson("async-await")) {
        Some(index) => match target_point.and_then(|result| result.ratio(index, p99)) {
            Some(ratio) => format!("{} p99 {ratio:.2}× tokio's", met(ratio <= 1.0)),
            None => "p99 failed".into(),
        },
        None => String::new(),
    };
    let _ = writeln!(
        out,
        "- async-await ≥ 1.0× tokio msgs/s at 100 × 64 B, p99 no worse: {}; {async_p99}",
        throughput("async-await", 1.0)
    );
    completion_targets(out, results, &throughput);
    coroutines_targets(out, results);
    green_threads_targets(out, results);
    // Every non-blocking lesson keeps ping-pong speed while gaining fairness (issue 9);
    // async-await, completion and green-threads have their own bars above.
    let non_blocking = LESSONS.iter().filter(|spec| {
        !matches!(
            spec.id,
            "sync-threads" | "async-await" | "completion" | "green-threads"
        )
    });
    for spec in non_blocking {
        let _ = writeln!(
            out,
            "- {} ≥ 0.95× tokio at 100 × 64 B: {}",
            spec.label,
            throughput(spec.id, 0.95)
        );
    }
    let memory_point = memory_10k(results);
    // Lesson 8's memory target is its own (see `green_threads_targets`).
    let epoll = LESSONS
        .iter()
        .filter(|spec| spec.uses_epoll && spec.id != "green-threads");
    for spec in epoll {
        let verdict = match memory_point {
            None => "not measured (the full run measures it)".into(),
            Some(result) => match result.lesson(spec.id) {
                None => "not built".into(),
                Some(index) => match result
                    .representative(index, peak_rss)
                    .and_then(Outcome::memory)
                {
                    None => "failed".into(),
                    Some(memory) => format!(
                        "{} {} holding {}",
                        met(memory.peak_rss < MEMORY_TARGET_BYTES && memory.held == 10_000),
                        megabytes(memory.peak_rss as f64),
                        thousands(memory.held)
                    ),
                },
            },
        };
        let _ = writeln!(
            out,
            "- {} holds 10,000 idle connections under 20 MB: {verdict}",
            spec.label
        );
    }
    streaming_targets(out, results);
    out.push('\n');
}

/// Lesson 6's targets (issues 11 and 21): CPU per message at 100 and 1000 × 64 B against
/// tokio and against monoio, msgs/s at 100 × 64 B, bulk CPU per GB.
fn completion_targets(
    out: &mut String,
    results: &[PointResult],
    throughput: &dyn Fn(&str, f64) -> String,
) {
    let cpu_at = |active: usize| -> String {
        let point = ping_pong_64(results, active);
        match point.map(|result| (result, result.lesson("completion"))) {
            None => "not measured".into(),
            Some((_, None)) => "not built".into(),
            Some((result, Some(index))) => match result.ratio(index, cpu_per_message) {
                Some(ratio) => {
                    // Both are divided by the same tokio runs: their quotient is the ratio
                    // of the two, with the machine's drift taken out.
                    let monoio = match result.lesson("monoio") {
                        None => ", × monoio: not measured".into(),
                        Some(peer) => match result.ratio(peer, cpu_per_message) {
                            Some(peer_ratio) if peer_ratio > 0.0 => {
                                let versus = ratio / peer_ratio;
                                format!(
                                    ", {} {versus:.2}× monoio",
                                    met(versus <= COMPLETION_CPU_PER_MESSAGE_VS_MONOIO)
                                )
                            }
                            _ => ", × monoio: failed".into(),
                        },
                    };
                    format!(
                        "{} {ratio:.2}× tokio{monoio}",
                        met(ratio <= COMPLETION_CPU_PER_MESSAGE_TARGET)
                    )
                }
                None => "failed".into(),
            },
        }
    };
    let bulk = bulk_point(results);
    let bulk_cpu = match bulk.map(|result| (result, result.lesson("completion"))) {
        None => "not measured".into(),
        Some((_, None)) => "not built".into(),
        Some((result, Some(index))) => match result.ratio(index, cpu_secs_per_gb) {
            Some(ratio) => format!("{} {ratio:.2}×", met(ratio <= COMPLETION_BULK_CPU_TARGET)),
            None => "failed".into(),
        },
    };
    let _ = writeln!(
        out,
        "- completion: server CPU per message ≤ {COMPLETION_CPU_PER_MESSAGE_TARGET:.2}× tokio \
         and ≤ {COMPLETION_CPU_PER_MESSAGE_VS_MONOIO:.2}× monoio at 100 × 64 B: {}; at \
         1000 × 64 B: {}; msgs/s ≥ 1.0× tokio at 100 × 64 B: {}; bulk server CPU per GB ≤ \
         {COMPLETION_BULK_CPU_TARGET:.2}× tokio: {bulk_cpu}",
        cpu_at(100),
        cpu_at(1000),
        throughput("completion", 1.0)
    );
}

/// Lesson 4's target (issue 21): at 64 B, from 10 connections up, msgs/s and server CPU per
/// message against tokio's.
fn coroutines_targets(out: &mut String, results: &[PointResult]) {
    let verdicts: Vec<String> = [10, 100, 1000]
        .into_iter()
        .filter_map(|active| {
            let result = ping_pong_64(results, active)?;
            let verdict = match result.lesson("coroutines") {
                None => "not built".into(),
                Some(index) => match (
                    result.ratio(index, rate),
                    result.ratio(index, cpu_per_message),
                ) {
                    (Some(rate), Some(cpu)) => format!(
                        "{} {rate:.2}× msgs/s, {cpu:.2}× CPU",
                        met(rate >= COROUTINES_RATE_TARGET && cpu <= COROUTINES_CPU_TARGET)
                    ),
                    _ => "failed".into(),
                },
            };
            Some(format!("{active} × 64 B: {verdict}"))
        })
        .collect();
    let verdicts = match verdicts.is_empty() {
        true => "not measured".to_string(),
        false => verdicts.join("; "),
    };
    let _ = writeln!(
        out,
        "- coroutines at 64 B from 10 connections up: msgs/s ≥ {COROUTINES_RATE_TARGET:.2}× and \
         server CPU per message ≤ {COROUTINES_CPU_TARGET:.2}× tokio: {verdicts}"
    );
}

/// Lesson 8's targets (issue 22), from the tables of the same run: msgs/s and server CPU per
/// message at 100 × 64 B, bulk server CPU per GB, the worst ping beside a flood, and the
/// peak memory with 10,000 idle connections against lesson 5's.
fn green_threads_targets(out: &mut String, results: &[PointResult]) {
    const ID: &str = "green-threads";
    let ratio_to_tokio = |point: Option<&PointResult>,
                          value: fn(&Outcome) -> Option<f64>,
                          good: &dyn Fn(f64) -> bool| {
        match point.map(|result| (result, result.lesson(ID))) {
            None => "not measured".to_string(),
            Some((_, None)) => "not built".to_string(),
            Some((result, Some(index))) => match result.ratio(index, value) {
                Some(ratio) => format!("{} {ratio:.2}×", met(good(ratio))),
                None => "failed".to_string(),
            },
        }
    };
    let ping_pong = ping_pong_64(results, 100);
    let rate_verdict = ratio_to_tokio(ping_pong, rate, &|ratio| ratio >= GREEN_THREADS_RATE_TARGET);
    let cpu_verdict = ratio_to_tokio(ping_pong, cpu_per_message, &|ratio| {
        ratio <= GREEN_THREADS_CPU_PER_MESSAGE_TARGET
    });
    let bulk_verdict = ratio_to_tokio(bulk_point(results), cpu_secs_per_gb, &|ratio| {
        ratio <= GREEN_THREADS_BULK_CPU_TARGET
    });
    let ping_verdict = match fairness_point(results).map(|result| (result, result.lesson(ID))) {
        None => "not measured".to_string(),
        Some((_, None)) => "not built".to_string(),
        Some((result, Some(index))) => match result.lesson_median(index, worst_ping) {
            Some(worst) => format!(
                "{} {}",
                met(worst <= WORST_PING_TARGET.as_secs_f64()),
                latency(worst)
            ),
            None => "failed".to_string(),
        },
    };
    let (mut hangs, mut losses) = (0, 0);
    for point in [bulk_point(results), fairness_point(results)]
        .into_iter()
        .flatten()
    {
        if let Some(index) = point.lesson(ID) {
            let (point_hangs, point_losses) = point.hangs_and_losses(Some(index));
            (hangs, losses) = (hangs + point_hangs, losses + point_losses);
        }
    }
    let intact = match (hangs, losses) {
        (0, 0) => format!("{} (none)", met(true)),
        _ => format!("{} ({hangs} hangs, {losses} with lost bytes)", met(false)),
    };
    let peak = |result: &PointResult, id: &str| -> Option<u64> {
        let index = result.lesson(id)?;
        let memory = result
            .representative(index, peak_rss)
            .and_then(Outcome::memory)?;
        (memory.held == 10_000).then_some(memory.peak_rss)
    };
    let memory_verdict = match memory_10k(results) {
        None => "not measured (the full run measures it)".to_string(),
        Some(result) => match (peak(result, ID), peak(result, "async-await")) {
            (Some(ours), Some(lesson_5)) => {
                let ratio = ours as f64 / lesson_5 as f64;
                format!(
                    "{} {} against {}: {ratio:.1}×",
                    met(ratio <= GREEN_THREADS_MEMORY_TARGET),
                    megabytes(ours as f64),
                    megabytes(lesson_5 as f64)
                )
            }
            _ => "not measured for both".to_string(),
        },
    };
    let _ = writeln!(
        out,
        "- green-threads: msgs/s ≥ {GREEN_THREADS_RATE_TARGET:.2}× tokio at 100 × 64 B: \
         {rate_verdict}; server CPU per message ≤ {GREEN_THREADS_CPU_PER_MESSAGE_TARGET:.2}× \
         there: {cpu_verdict}; bulk server CPU per GB ≤ {GREEN_THREADS_BULK_CPU_TARGET:.2}× \
         tokio: {bulk_verdict}; worst ping beside a flood ≤ {} ms: {ping_verdict}; 10,000 \
         idle connections ≤ {GREEN_THREADS_MEMORY_TARGET:.0}× async-await's memory: \
         {memory_verdict}; no hang, no byte lost: {intact}",
        WORST_PING_TARGET.as_millis()
    );
}

/// The bulk and fairness targets, one line per lesson: its CPU per GB against tokio's, its
/// worst ping, and whether any stream hung or lost a byte.
fn streaming_targets(out: &mut String, results: &[PointResult]) {
    let bulk = bulk_point(results);
    let fairness = fairness_point(results);
    let (Some(bulk), Some(fairness)) = (bulk, fairness) else {
        let _ = writeln!(out, "- bulk and fairness: not measured");
        return;
    };
    // Lesson 8's streaming targets are in its own line (`green_threads_targets`).
    for spec in LESSONS.iter().filter(|spec| spec.id != "green-threads") {
        let (Some(bulk_index), Some(fairness_index)) =
            (bulk.lesson(spec.id), fairness.lesson(spec.id))
        else {
            continue;
        };
        let targeted = NON_BLOCKING.contains(&spec.id);
        let cpu = match bulk.ratio(bulk_index, cpu_secs_per_gb) {
            Some(ratio) if targeted => format!("{} {ratio:.2}×", met(ratio <= BULK_CPU_TARGET)),
            Some(ratio) => format!("{ratio:.2}×"),
            None => "no number (see ¹)".into(),
        };
        let worst_runs: Vec<f64> = fairness
            .rounds
            .iter()
            .filter_map(|round| worst_ping(&round.lessons[fairness_index]))
            .collect();
        let ping = match fairness.lesson_median(fairness_index, worst_ping) {
            Some(median) => {
                let highest = worst_runs.iter().copied().fold(0.0, f64::max);
                let verdict = if targeted {
                    format!("{} ", met(median <= WORST_PING_TARGET.as_secs_f64()))
                } else {
                    String::new()
                };
                format!(
                    "{verdict}{} (median of {} runs; highest {})",
                    latency(median),
                    worst_runs.len(),
                    latency(highest)
                )
            }
            None => "no number (see ¹)".into(),
        };
        let (bulk_hangs, bulk_losses) = bulk.hangs_and_losses(Some(bulk_index));
        let (flood_hangs, flood_losses) = fairness.hangs_and_losses(Some(fairness_index));
        let (hangs, losses) = (bulk_hangs + flood_hangs, bulk_losses + flood_losses);
        let intact = match (hangs, losses) {
            (0, 0) => "none".to_string(),
            _ => format!("{hangs} hangs, {losses} with lost bytes"),
        };
        if targeted {
            let _ = writeln!(
                out,
                "- {}: bulk server CPU per GB ≤ {BULK_CPU_TARGET:.2}× tokio: {cpu}; worst ping \
                 beside a flood ≤ {} ms: {ping}; no hang, no byte lost: {} ({intact})",
                spec.label,
                WORST_PING_TARGET.as_millis(),
                met(hangs + losses == 0)
            );
        } else {
            let _ = writeln!(
                out,
                "- {} (reported, not targeted): bulk server CPU per GB {cpu} tokio's; worst \
                 ping beside a flood {ping}; hangs or lost bytes: {intact}",
                spec.label
            );
        }
    }
}

fn met(yes: bool) -> &'static str {
    if yes { "**met**" } else { "**not met**" }
}

/// The README's one summary table: per server, the numbers each lesson's story rests on —
/// messages/s and CPU per message at 100 × 64 B (and the part of it in user space), CPU per
/// GB of a bulk stream, the worst ping beside a flood, the memory to hold 10,000 idle
/// connections — each with its ratio to tokio; then monoio, lesson 6's peer, likewise; then
/// lesson 7 and its peer, tokio multi_thread, from the scheduler section (`multi_threaded`:
/// 2 workers each, nothing pinned, lesson 7's ratios to tokio multi_thread). The full tables
/// are in the report ([`markdown`]).
pub fn summary(results: &[PointResult], multi_threaded: &[EchoRow]) -> String {
    let ping_pong = ping_pong_64(results, 100);
    let memory = memory_10k(results);
    let bulk = bulk_point(results);
    let fairness = fairness_point(results);
    type Cell = fn(&PointResult, Option<usize>) -> String;
    let columns: [(&str, Option<&PointResult>, Cell); 6] = [
        ("msgs/s, 100 × 64 B", ping_pong, |result, index| {
            cell(result, index, rate, messages)
        }),
        ("server CPU per message", ping_pong, |result, index| {
            cell(result, index, cpu_per_message, micros)
        }),
        ("of which user space", ping_pong, |result, index| {
            let sampled = match index {
                None => result.reference_median(user_cpu_per_message),
                Some(index) => result.lesson_median(index, user_cpu_per_message),
            };
            match sampled {
                Some(_) => cell(result, index, user_cpu_per_message, micros),
                None => "n/a".into(),
            }
        }),
        ("server CPU per GB, bulk", bulk, |result, index| {
            cell(result, index, cpu_secs_per_gb, seconds)
        }),
        ("worst ping beside a flood", fairness, |result, index| {
            cell(result, index, worst_ping, latency)
        }),
        ("memory, 10,000 idle", memory, |result, index| {
            cell(result, index, peak_rss, megabytes)
        }),
    ];
    let mut out = String::new();
    let headings: Vec<&str> = columns.iter().map(|(heading, _, _)| *heading).collect();
    let _ = writeln!(out, "| server | {} |", headings.join(" | "));
    let _ = writeln!(out, "|---|{}", "---:|".repeat(columns.len()));
    let row = |name: &str, id: Option<&str>| {
        let cells: Vec<String> = columns
            .iter()
            .map(|(_, point, render)| match (point, id) {
                (None, _) => "—".into(),
                (Some(result), None) => render(result, None),
                (Some(result), Some(id)) => result
                    .lesson(id)
                    .map_or("—".into(), |index| render(result, Some(index))),
            })
            .collect();
        format!("| {name} | {} |\n", cells.join(" | "))
    };
    out.push_str(&row("tokio (reference)", None));
    for spec in LESSONS.iter().chain(&PEERS) {
        let measured = columns
            .iter()
            .any(|(_, point, _)| point.is_some_and(|result| result.lesson(spec.id).is_some()));
        if measured {
            out.push_str(&row(spec.label, Some(spec.id)));
        }
    }
    for echo in multi_threaded {
        let (rate_ratio, cpu_ratio) = match echo.ratios {
            Some((rate, cpu)) => (format!(" ({rate:.2}× mt)"), format!(" ({cpu:.2}× mt)")),
            None => (String::new(), String::new()),
        };
        let user = echo
            .user_cpu_per_message
            .map_or("n/a".into(), |user| micros(user.as_secs_f64()));
        let _ = writeln!(
            out,
            "| {} | {}{rate_ratio} | {}{cpu_ratio} | {user} | — | — | — |",
            echo.label,
            messages(echo.messages_per_sec),
            micros(echo.cpu_per_message.as_secs_f64()),
        );
    }
    out
}

/// The tokio cell (`index` None) or a lesson's cell of one number.
fn cell(
    result: &PointResult,
    index: Option<usize>,
    value: fn(&Outcome) -> Option<f64>,
    show: fn(f64) -> String,
) -> String {
    match index {
        None => reference_cell(result, value, show),
        Some(index) => lesson_cell(result, index, value, show),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::measure::{Bulk, Fairness, Point, Round};
    use echo_client::LoadShape;

    fn point(scenario: Scenario) -> Point {
        Point {
            scenario,
            shape: LoadShape {
                active: 1,
                idle: 0,
                message_size: 0,
            },
        }
    }

    /// 1 GB in 1 s, the server busy `server_cpu` of a core: `server_cpu` seconds per GB.
    fn bulk(server_cpu: f64) -> Outcome {
        Outcome::Bulk(Bulk {
            bytes: 1_000_000_000,
            elapsed: Duration::from_secs(1),
            server_cpu,
            client_cpu: 0.5,
            machine_cpu: 1.5,
        })
    }

    fn fairness(worst_ms: u64) -> Outcome {
        Outcome::Fairness(Fairness {
            worst: Duration::from_millis(worst_ms),
            p99: Duration::from_millis(worst_ms),
            pings: 100,
            flood_bytes: 1_000_000,
            flood_megabytes_per_sec: 1.0,
            server_cpu: 1.0,
            client_cpu: 1.0,
            machine_cpu: 2.0,
        })
    }

    /// Three rounds of `tokio selector tokio`, the lesson's outcomes as given.
    fn rounds(reference: fn() -> Outcome, lesson: [Outcome; 3]) -> Vec<Round> {
        lesson
            .into_iter()
            .map(|outcome| Round {
                reference: vec![reference(), reference()],
                lessons: vec![outcome],
            })
            .collect()
    }

    /// A hang in one round of three is not outvoted by the median of the others: the cells
    /// say so, and the "no hang" target is not met though the numbers meet theirs.
    #[test]
    fn a_hang_in_one_round_shows_and_fails_its_target() {
        let selector = *LESSONS.iter().find(|spec| spec.id == "selector").unwrap();
        let hang = || Outcome::Hang("bulk stream: hang: no byte came back for 10.0s".into());
        let bulk_result = PointResult {
            point: point(Scenario::Bulk {
                bytes: 1_000_000_000,
            }),
            lessons: vec![selector],
            rounds: rounds(|| bulk(1.0), [bulk(1.05), hang(), bulk(1.05)]),
        };
        let fairness_result = PointResult {
            point: point(Scenario::Fairness {
                flood: Duration::from_secs(2),
                ping_every: Duration::from_millis(10),
            }),
            lessons: vec![selector],
            rounds: rounds(|| fairness(2), [fairness(5), fairness(4), fairness(30)]),
        };
        let results = [bulk_result, fairness_result];

        let mut tables = String::new();
        bulk_table(&mut tables, &results);
        fairness_table(&mut tables, &results);
        let row =
            "| selector | 1,000 MB/s (1.00×), hang in 1 of 3¹ | 1.05 s (1.05×), hang in 1 of 3¹ |";
        assert!(tables.contains(row), "{tables}");
        assert!(
            tables.contains("| selector | 5.0 ms (2.50×) | 5.0 ms (2.50×) | 1 MB/s |"),
            "{tables}"
        );

        let mut targets = String::new();
        streaming_targets(&mut targets, &results);
        for verdict in [
            "bulk server CPU per GB ≤ 1.10× tokio: **met** 1.05×",
            "worst ping beside a flood ≤ 20 ms: **met** 5.0 ms (median of 3 runs; highest 30.0 ms)",
            "no hang, no byte lost: **not met** (1 hangs, 0 with lost bytes)",
        ] {
            assert!(targets.contains(verdict), "no {verdict:?} in {targets}");
        }
    }

    /// 100 × 64 B ping-pong: `cpu` and `user` shares of a core at 100,000 msgs/s.
    fn traffic(cpu: f64, user: f64) -> Outcome {
        Outcome::Traffic(Traffic {
            messages_per_sec: 100_000.0,
            p50: Duration::from_micros(50),
            p99: Duration::from_micros(90),
            server_cpu: cpu,
            server_user_cpu: Some(user),
            client_cpu: 1.0,
            machine_cpu: 2.0,
            bytes_verified: 0,
            idle_held: 0,
            syscalls_per_message: None,
        })
    }

    /// monoio is a row of its own, beside the lessons: in the summary (with the user-space
    /// column), and in lesson 6's targets, where completion's CPU per message is divided by
    /// monoio's (both measured against the same tokio runs); lesson 7 and tokio
    /// multi_thread close the summary with lesson 7's ratios to its peer; and the report
    /// states the kernel's share of the CPU per message from the same run.
    #[test]
    fn monoio_and_the_multi_threaded_rows_and_the_kernel_floor() {
        let spec = |id| {
            *LESSONS
                .iter()
                .chain(&PEERS)
                .find(|spec| spec.id == id)
                .unwrap()
        };
        let round = || Round {
            reference: vec![traffic(0.8, 0.08); 3],
            lessons: vec![traffic(0.72, 0.06), traffic(0.88, 0.1)],
        };
        let results = [PointResult {
            point: Point {
                scenario: Scenario::PingPong,
                shape: LoadShape {
                    active: 100,
                    idle: 0,
                    message_size: 64,
                },
            },
            lessons: vec![spec("completion"), spec("monoio")],
            rounds: vec![round(), round(), round()],
        }];
        let multi_threaded = [
            EchoRow {
                label: "work-stealing --workers 2",
                messages_per_sec: 80_000.0,
                cpu_per_message: Duration::from_micros(12),
                user_cpu_per_message: Some(Duration::from_nanos(1_500)),
                ratios: Some((0.95, 1.19)),
            },
            EchoRow {
                label: "tokio multi_thread, 2 workers",
                messages_per_sec: 84_000.0,
                cpu_per_message: Duration::from_micros(10),
                user_cpu_per_message: None,
                ratios: None,
            },
        ];
        let summary = summary(&results, &multi_threaded);
        for row in [
            "| server | msgs/s, 100 × 64 B | server CPU per message | of which user space |",
            "| tokio (reference) | 100,000 | 8.00 µs | 0.80 µs | — | — | — |",
            "| completion | 100,000 (1.00×) | 7.20 µs (0.90×) | 0.60 µs (0.75×) | — | — | — |",
            "| monoio | 100,000 (1.00×) | 8.80 µs (1.10×) | 1.00 µs (1.25×) |",
            "| work-stealing --workers 2 | 80,000 (0.95× mt) | 12.00 µs (1.19× mt) | 1.50 µs |",
            "| tokio multi_thread, 2 workers | 84,000 | 10.00 µs | n/a | — | — | — |",
        ] {
            assert!(summary.contains(row), "no {row:?} in\n{summary}");
        }

        let mut targets = String::new();
        completion_targets(&mut targets, &results, &|_, _| String::new());
        let verdict = "at 100 × 64 B: **met** 0.90× tokio, **met** 0.82× monoio";
        assert!(targets.contains(verdict), "no {verdict:?} in {targets}");

        let mut floor = String::new();
        kernel_floor(&mut floor, &results);
        for said in [
            "the kernel spent 7.20 µs of tokio's 8.00 µs per message (90 %)",
            "from 89 % (monoio) to 92 % (completion)",
        ] {
            assert!(floor.contains(said), "no {said:?} in {floor}");
        }
    }
}
