//! The report: markdown tables on stdout, one per scenario, then the targets the issue set,
//! each marked met or not with the number that decides it.
//!
//! Every lesson cell shows its absolute number and, in parentheses, the ratio to the tokio
//! runs right before and after it; the tokio row shows the median of all its runs and the
//! spread row how much those runs disagreed — the noise any ratio on that column carries.

use std::fmt::Write;
use std::time::Duration;

use crate::cpus::Pinning;
use crate::measure::{NOISY, Outcome, PointResult, Scenario, Traffic, thousands};
use crate::servers::{LESSONS, ServerSpec};

/// The 20 MB peak-RSS target for epoll lessons holding 10,000 idle connections.
pub const MEMORY_TARGET_BYTES: u64 = 20_000_000;

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
    let _ = writeln!(out, "## Benchmark results\n");
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
        .filter_map(|outcome| outcome.traffic().map(|traffic| traffic.bytes_verified))
        .sum();
    let _ = writeln!(
        out,
        "Every echoed byte was checked against what was sent: {:.2} GB in the measured windows.\n",
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
         reading into a 4 KiB buffer (`crates/bench/src/tokio_echo.rs`). Load: \
         `echo_client::load`, one thread on mio, every message verified byte by byte.\n"
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
    failures(&mut out, results);
    targets(&mut out, results);
    out
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
         work (ksoftirqd) and whatever else ran on the machine: high values mean a noisy run.\n"
    );
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

fn failures(out: &mut String, results: &[PointResult]) {
    let mut lines = Vec::new();
    for result in results {
        for round in &result.rounds {
            let reference = round.reference.iter().map(|outcome| ("tokio", outcome));
            let labels = result.lessons.iter().map(|spec| spec.label);
            for (label, outcome) in reference.chain(labels.zip(&round.lessons)) {
                if let Outcome::Failed(error) = outcome {
                    lines.push(format!("- {label} at {}: {error}", result.point.describe()));
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
        let _ = writeln!(out, "¹ failed measurements:\n\n{}\n", lines.join("\n"));
    }
}

/// The targets, each with the number that decides it.
fn targets(out: &mut String, results: &[PointResult]) {
    let _ = writeln!(out, "### Targets\n");
    let target_point = results.iter().find(|result| {
        result.point.scenario == Scenario::PingPong
            && result.point.shape.active == 100
            && result.point.shape.message_size == 64
    });
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
    for id in ["selector", "generators", "coroutines"] {
        let _ = writeln!(
            out,
            "- {id} ≥ 0.95× tokio at 100 × 64 B: {}",
            throughput(id, 0.95)
        );
    }
    let memory_point = results.iter().find(|result| {
        result.point.scenario == Scenario::Memory && result.point.shape.idle == 10_000
    });
    for spec in LESSONS.iter().filter(|spec| spec.uses_epoll) {
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
    out.push('\n');
}

fn met(yes: bool) -> &'static str {
    if yes { "**met**" } else { "**not met**" }
}
