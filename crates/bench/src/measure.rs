//! What is measured, and in which order: the points of the benchmark, and the A B A B
//! pairing that makes its ratios trustworthy on a noisy machine.
//!
//! A *point* is one load shape (say 100 connections × 64 B of ping-pong). At each point the
//! reference peer (tokio) is measured first, then each lesson followed by tokio again:
//!
//! ```text
//! tokio  sync  tokio  select  tokio  …  async-await  tokio
//! ```
//!
//! so every lesson's number has a tokio number taken right before and right after it, and its
//! ratio "× tokio" divides by the mean of those two. A machine whose speed drifts (another
//! build starts on the second core) moves both sides of a ratio together; a drift that only
//! one tokio neighbour saw shows up as spread between tokio's own measurements, which the
//! report prints too.
//!
//! Two more defences against noise. Traffic points are measured in several rounds (3 by
//! default) and the report takes the median over the rounds, so one run that a passing burst
//! made fast or slow — on a VM a whole window sometimes runs 1.5× faster, on both sides — is
//! outvoted. And a measurement during which the rest of the machine was busy (`/proc/stat`,
//! see `cpus`) is taken again, at most twice.
//!
//! Every measurement starts a fresh server process, so none inherits another's state, and
//! every measurement is bounded in time (the windows, and a patience on each connect).

use std::io;
use std::time::Duration;

use echo_client::{Load, LoadShape};
use nix::sched::CpuSet;

use crate::cpus::{Pinning, machine_busy};
use crate::servers::{RunningServer, Server, ServerSpec};

/// A traffic measurement during which the rest of the machine (neither the server nor the
/// client: another build, say) kept more than this share of a core busy is taken again…
pub const NOISY: f64 = 0.2;

/// …at most this many times; the quietest attempt is kept. A run-wide budget (a quarter of
/// the measurements) keeps a machine that is busy all along from doubling the run time.
const MAX_RETRIES: usize = 2;

/// The longest wait for connections to be established or answered (per batch of idle ones).
const PATIENCE: Duration = Duration::from_secs(10);

/// What a point exercises.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scenario {
    /// Every connection plays ping-pong: messages/s, latency, CPU.
    PingPong,
    /// 10 connections play ping-pong while idle connections sit open beside them.
    IdleScaling,
    /// Only idle connections: the server's peak memory while holding them.
    Memory,
}

/// One load shape, measured on every server.
#[derive(Debug, Clone, Copy)]
pub struct Point {
    pub scenario: Scenario,
    pub shape: LoadShape,
}

impl Point {
    fn ping_pong(connections: usize, message_size: usize) -> Point {
        Point {
            scenario: Scenario::PingPong,
            shape: LoadShape {
                active: connections,
                idle: 0,
                message_size,
            },
        }
    }

    fn idle_scaling(idle: usize) -> Point {
        Point {
            scenario: Scenario::IdleScaling,
            shape: LoadShape {
                active: 10,
                idle,
                message_size: 64,
            },
        }
    }

    fn memory(idle: usize) -> Point {
        Point {
            scenario: Scenario::Memory,
            shape: LoadShape {
                active: 0,
                idle,
                message_size: 0,
            },
        }
    }

    /// `ping-pong 100 × 64 B`, `10 active + 250 idle`, `memory, 10,000 idle`.
    pub fn describe(&self) -> String {
        let LoadShape {
            active,
            idle,
            message_size,
        } = self.shape;
        match self.scenario {
            Scenario::PingPong => format!("ping-pong {active} × {}", size(message_size)),
            Scenario::IdleScaling => format!("{active} active + {} idle", thousands(idle)),
            Scenario::Memory => format!("memory, {} idle", thousands(idle)),
        }
    }
}

/// `64 B`, `4 KiB`.
pub fn size(bytes: usize) -> String {
    if bytes >= 1024 && bytes.is_multiple_of(1024) {
        format!("{} KiB", bytes / 1024)
    } else {
        format!("{bytes} B")
    }
}

/// `10,000`.
pub fn thousands(n: usize) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, digit) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(digit);
    }
    out
}

/// The points to measure and how long each measurement lasts.
#[derive(Debug, Clone)]
pub struct Plan {
    pub points: Vec<Point>,
    /// Ping-pong before the measured window, discarded: connections finish being accepted,
    /// caches and the allocator warm up.
    pub warm_up: Duration,
    pub window: Duration,
    /// How many times each traffic point is measured (memory points: once, it does not drift).
    pub rounds: usize,
}

impl Plan {
    /// Every point the issue asks for.
    pub fn full(window: Duration, rounds: usize) -> Plan {
        let mut points = Vec::new();
        for message_size in [64, 4096] {
            for connections in [1, 10, 100, 1000] {
                points.push(Point::ping_pong(connections, message_size));
            }
        }
        points.extend([0, 250, 500, 1000].map(Point::idle_scaling));
        points.extend([1000, 10_000].map(Point::memory));
        Plan::with(points, window, rounds)
    }

    /// A few points that still cover each scenario and each target's ping-pong point.
    pub fn quick(window: Duration, rounds: usize) -> Plan {
        let points = vec![
            Point::ping_pong(1, 64),
            Point::ping_pong(100, 64),
            Point::ping_pong(100, 4096),
            Point::idle_scaling(0),
            Point::idle_scaling(1000),
            Point::memory(1000),
        ];
        Plan::with(points, window, rounds)
    }

    fn with(points: Vec<Point>, window: Duration, rounds: usize) -> Plan {
        Plan {
            points,
            warm_up: window / 4,
            window,
            rounds: rounds.max(1),
        }
    }

    /// How many rounds `point` gets.
    fn rounds_of(&self, point: &Point) -> usize {
        match point.scenario {
            Scenario::Memory => 1,
            _ => self.rounds,
        }
    }
}

/// One server's measurement at one point.
#[derive(Debug, Clone)]
pub enum Outcome {
    Traffic(Traffic),
    Memory(Memory),
    /// The measurement could not be made: the error, for the report.
    Failed(String),
}

/// What a ping-pong window showed.
#[derive(Debug, Clone)]
pub struct Traffic {
    pub messages_per_sec: f64,
    pub p50: Duration,
    pub p99: Duration,
    /// The server's CPU time over the window ÷ the window: 1.0 = one core busy.
    pub server_cpu: f64,
    /// The load generator's, likewise.
    pub client_cpu: f64,
    /// All cores' busy time over the window ÷ the window: server + client + the kernel's
    /// deferred network work + anything else running on the machine.
    pub machine_cpu: f64,
    pub bytes_verified: u64,
    /// Idle connections the server still held at the end.
    pub idle_held: usize,
}

/// What holding idle connections cost.
#[derive(Debug, Clone)]
pub struct Memory {
    /// Peak resident memory (VmHWM), bytes.
    pub peak_rss: u64,
    /// Idle connections the server answered and kept.
    pub held: usize,
}

impl Traffic {
    /// The server's CPU time per message: its cost, whoever limited the rate. On 2 cores a
    /// fast server and the client can both saturate their core; then messages/s only says
    /// "as fast as the client", but this still tells the servers apart.
    pub fn server_cpu_per_message(&self) -> Duration {
        Duration::from_secs_f64(self.server_cpu / self.messages_per_sec.max(1e-9))
    }

    /// Busy CPU that was neither the server nor the client.
    pub fn rest_of_machine_cpu(&self) -> f64 {
        (self.machine_cpu - self.server_cpu - self.client_cpu).max(0.0)
    }
}

impl Outcome {
    pub fn traffic(&self) -> Option<&Traffic> {
        match self {
            Outcome::Traffic(traffic) => Some(traffic),
            _ => None,
        }
    }

    pub fn memory(&self) -> Option<&Memory> {
        match self {
            Outcome::Memory(memory) => Some(memory),
            _ => None,
        }
    }

    /// How busy the rest of the machine was during a traffic measurement (None otherwise).
    pub fn noise(&self) -> Option<f64> {
        self.traffic().map(Traffic::rest_of_machine_cpu)
    }

    /// Whether something else on the machine may have skewed this measurement.
    pub fn is_noisy(&self) -> bool {
        self.noise().is_some_and(|rest| rest > NOISY)
    }

    /// One line for the progress log.
    fn summary(&self) -> String {
        match self {
            Outcome::Traffic(traffic) => format!(
                "{:>7.0} msg/s, p99 {:>5.0} µs, CPU: server {:>3.0} %, client {:>3.0} %, rest {:>3.0} %",
                traffic.messages_per_sec,
                traffic.p99.as_secs_f64() * 1e6,
                traffic.server_cpu * 100.0,
                traffic.client_cpu * 100.0,
                traffic.rest_of_machine_cpu() * 100.0,
            ),
            Outcome::Memory(memory) => format!(
                "peak RSS {:.1} MB, holding {}",
                memory.peak_rss as f64 / 1e6,
                thousands(memory.held)
            ),
            Outcome::Failed(error) => format!("FAILED: {error}"),
        }
    }
}

/// Everything measured at one point: one or more rounds of tokio around each lesson.
#[derive(Debug, Clone)]
pub struct PointResult {
    pub point: Point,
    /// The lessons measured, in order.
    pub lessons: Vec<ServerSpec>,
    pub rounds: Vec<Round>,
}

/// One pass over every server: `tokio L1 tokio L2 … Ln tokio`.
#[derive(Debug, Clone)]
pub struct Round {
    /// tokio before the first lesson and after each one: one more than `lessons`.
    pub reference: Vec<Outcome>,
    /// Each lesson's outcome, in the order of [`PointResult::lessons`].
    pub lessons: Vec<Outcome>,
}

impl Round {
    /// Lesson `index`'s `value` divided by the mean of the same value for the tokio
    /// measurements right before and right after it (or the one of them that succeeded).
    fn ratio(&self, index: usize, value: impl Fn(&Outcome) -> Option<f64>) -> Option<f64> {
        let lesson = value(&self.lessons[index])?;
        let neighbours: Vec<f64> = self.reference[index..=index + 1]
            .iter()
            .filter_map(&value)
            .collect();
        if neighbours.is_empty() {
            return None;
        }
        let reference = neighbours.iter().sum::<f64>() / neighbours.len() as f64;
        (reference > 0.0).then(|| lesson / reference)
    }
}

impl PointResult {
    /// Every outcome at this point, tokio's and the lessons', in every round.
    pub fn outcomes(&self) -> impl Iterator<Item = &Outcome> {
        self.rounds
            .iter()
            .flat_map(|round| round.reference.iter().chain(&round.lessons))
    }

    /// The index of lesson `id`, if it was measured.
    pub fn lesson(&self, id: &str) -> Option<usize> {
        self.lessons.iter().position(|spec| spec.id == id)
    }

    /// Whether every run of lesson `index` failed.
    pub fn all_failed(&self, index: usize) -> bool {
        self.rounds
            .iter()
            .all(|round| matches!(round.lessons[index], Outcome::Failed(_)))
    }

    /// The median over the rounds of lesson `index`'s `value`.
    pub fn lesson_median(
        &self,
        index: usize,
        value: impl Fn(&Outcome) -> Option<f64>,
    ) -> Option<f64> {
        median(
            self.rounds
                .iter()
                .filter_map(|round| value(&round.lessons[index]))
                .collect(),
        )
    }

    /// The median over the rounds of lesson `index`'s ratio to its tokio neighbours: a run
    /// that a passing burst of noise made fast or slow, on either side, is outvoted.
    pub fn ratio(&self, index: usize, value: impl Fn(&Outcome) -> Option<f64>) -> Option<f64> {
        median(
            self.rounds
                .iter()
                .filter_map(|round| round.ratio(index, &value))
                .collect(),
        )
    }

    /// The run of lesson `index` whose `value` is the median one: it stands for the lesson
    /// where a table shows several numbers of one run (CPU shares, idle connections held).
    pub fn representative(
        &self,
        index: usize,
        value: impl Fn(&Outcome) -> Option<f64>,
    ) -> Option<&Outcome> {
        closest_to_median(self.rounds.iter().map(|round| &round.lessons[index]), value)
    }

    /// Likewise for tokio: the run closest to the median of all its runs.
    pub fn representative_reference(
        &self,
        value: impl Fn(&Outcome) -> Option<f64>,
    ) -> Option<&Outcome> {
        closest_to_median(self.rounds.iter().flat_map(|round| &round.reference), value)
    }

    /// The median of `value` over every tokio measurement at this point.
    pub fn reference_median(&self, value: impl Fn(&Outcome) -> Option<f64>) -> Option<f64> {
        median(self.reference_values(value))
    }

    /// How far tokio's own measurements spread: (max − min) ÷ median. The noise floor of
    /// every ratio at this point.
    pub fn reference_spread(&self, value: impl Fn(&Outcome) -> Option<f64>) -> Option<f64> {
        let values = self.reference_values(value);
        let max = values.iter().copied().reduce(f64::max)?;
        let min = values.iter().copied().reduce(f64::min)?;
        let median = median(values)?;
        (median > 0.0).then(|| (max - min) / median)
    }

    fn reference_values(&self, value: impl Fn(&Outcome) -> Option<f64>) -> Vec<f64> {
        self.rounds
            .iter()
            .flat_map(|round| &round.reference)
            .filter_map(value)
            .collect()
    }
}

fn median(mut values: Vec<f64>) -> Option<f64> {
    values.sort_by(f64::total_cmp);
    let middle = values.len() / 2;
    match values.len() {
        0 => None,
        n if n % 2 == 1 => Some(values[middle]),
        _ => Some((values[middle - 1] + values[middle]) / 2.0),
    }
}

/// The outcome whose `value` is closest to the median of them all.
fn closest_to_median<'a>(
    outcomes: impl Iterator<Item = &'a Outcome> + Clone,
    value: impl Fn(&Outcome) -> Option<f64>,
) -> Option<&'a Outcome> {
    let median = median(outcomes.clone().filter_map(&value).collect())?;
    let distance = |outcome: &Outcome| value(outcome).map_or(f64::MAX, |v| (v - median).abs());
    outcomes.min_by(|a, b| distance(a).total_cmp(&distance(b)))
}

/// Runs the plan: every point, `plan.rounds` rounds of every server with tokio around each
/// lesson, on the calling thread (pinned to its core if `pinning` says so). Progress goes to
/// stderr, one line per measurement.
pub fn run(
    plan: &Plan,
    lessons: &[Server],
    reference: &Server,
    pinning: Option<Pinning>,
) -> io::Result<Vec<PointResult>> {
    let server_cpus = match pinning {
        Some(pinning) => {
            pinning.pin_this_thread()?;
            Some(pinning.server_set()?)
        }
        None => None,
    };
    let per_round = 2 * lessons.len() + 1;
    let total: usize = plan
        .points
        .iter()
        .map(|point| plan.rounds_of(point) * per_round)
        .sum();
    let mut retry_budget = total / 4;
    let mut done = 0;
    let mut measure_logged = |server: &Server, point: &Point, round: &str| {
        done += 1;
        let log = |outcome: &Outcome, note: &str| {
            eprintln!(
                "[{done:>3}/{total}] {:<26}{round:<4} {:<18} {}{note}",
                point.describe(),
                server.spec.label,
                outcome.summary()
            )
        };
        let mut outcome = measure(server, point, plan, server_cpus);
        let mut retries = 0;
        while retries < MAX_RETRIES && retry_budget > 0 && outcome.is_noisy() {
            log(&outcome, " — noisy, measuring again");
            retries += 1;
            retry_budget -= 1;
            let again = measure(server, point, plan, server_cpus);
            let quieter = |outcome: &Outcome| outcome.noise().unwrap_or(f64::INFINITY);
            if quieter(&again) < quieter(&outcome) {
                outcome = again;
            }
        }
        log(&outcome, "");
        outcome
    };
    let mut results = Vec::new();
    for point in &plan.points {
        let rounds = plan.rounds_of(point);
        let mut result = PointResult {
            point: *point,
            lessons: lessons.iter().map(|lesson| lesson.spec).collect(),
            rounds: Vec::new(),
        };
        for round in 1..=rounds {
            let label = if rounds > 1 {
                format!("{round}/{rounds}")
            } else {
                String::new()
            };
            let mut this_round = Round {
                reference: vec![measure_logged(reference, point, &label)],
                lessons: Vec::new(),
            };
            for lesson in lessons {
                this_round
                    .lessons
                    .push(measure_logged(lesson, point, &label));
                this_round
                    .reference
                    .push(measure_logged(reference, point, &label));
            }
            result.rounds.push(this_round);
        }
        results.push(result);
    }
    Ok(results)
}

/// One measurement on a fresh server; an error becomes [`Outcome::Failed`].
fn measure(server: &Server, point: &Point, plan: &Plan, cpus: Option<CpuSet>) -> Outcome {
    measure_or_fail(server, point, plan, cpus)
        .unwrap_or_else(|err| Outcome::Failed(err.to_string()))
}

fn measure_or_fail(
    server: &Server,
    point: &Point,
    plan: &Plan,
    cpus: Option<CpuSet>,
) -> io::Result<Outcome> {
    let mut running = server.start(cpus)?;
    let result = load_and_measure(&running, point, plan);
    if result.is_err() && !running.is_running() {
        return Err(io::Error::other(format!(
            "the server exited during the measurement ({})",
            result.err().map(|err| err.to_string()).unwrap_or_default()
        )));
    }
    let (outcome, load) = result?;
    // Kill the server before our side closes: its sockets then close first and the
    // TIME_WAIT state stays with its port, not with our ephemeral ports (10,000 per point).
    drop(running);
    drop(load);
    Ok(outcome)
}

fn load_and_measure(
    running: &RunningServer,
    point: &Point,
    plan: &Plan,
) -> io::Result<(Outcome, Load)> {
    let mut load = Load::open(running.addr, &point.shape, PATIENCE)?;
    if point.scenario == Scenario::Memory {
        let memory = Memory {
            peak_rss: running.peak_rss()?,
            held: load.idle_held(),
        };
        return Ok((Outcome::Memory(memory), load));
    }
    load.run_for(plan.warm_up)?;
    let server_cpu_before = running.cpu_time()?;
    let machine_before = machine_busy()?;
    let window = load.run_for(plan.window)?;
    let machine = machine_busy()?.saturating_sub(machine_before);
    let server_cpu = running.cpu_time()?.saturating_sub(server_cpu_before);
    let elapsed = window.elapsed.as_secs_f64();
    let traffic = Traffic {
        messages_per_sec: window.messages_per_sec(),
        p50: window.latency.percentile(50.0).unwrap_or_default(),
        p99: window.latency.percentile(99.0).unwrap_or_default(),
        server_cpu: server_cpu.as_secs_f64() / elapsed,
        client_cpu: window.client_cpu_share(),
        machine_cpu: machine.as_secs_f64() / elapsed,
        bytes_verified: window.bytes_verified,
        idle_held: load.idle_held(),
    };
    if window.messages == 0 {
        return Err(io::Error::other("no message was answered in the window"));
    }
    Ok((Outcome::Traffic(traffic), load))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::servers::REFERENCE;

    fn traffic(messages_per_sec: f64) -> Outcome {
        Outcome::Traffic(Traffic {
            messages_per_sec,
            p50: Duration::ZERO,
            p99: Duration::ZERO,
            server_cpu: 0.0,
            client_cpu: 0.0,
            machine_cpu: 0.0,
            bytes_verified: 0,
            idle_held: 0,
        })
    }

    fn rate(outcome: &Outcome) -> Option<f64> {
        outcome.traffic().map(|traffic| traffic.messages_per_sec)
    }

    /// Each lesson is divided by the mean of the tokio runs on either side of it (a failed
    /// neighbour leaves the other one), and over rounds the median ratio wins: one odd round
    /// is outvoted.
    #[test]
    fn ratios_use_the_neighbouring_reference_runs() {
        let round = |lesson: f64, after: f64| Round {
            reference: vec![traffic(100.0), traffic(after), Outcome::Failed("x".into())],
            lessons: vec![traffic(lesson), traffic(lesson / 2.0)],
        };
        let result = PointResult {
            point: Point::ping_pong(1, 64),
            lessons: vec![REFERENCE, REFERENCE],
            rounds: vec![
                round(200.0, 300.0),
                round(900.0, 300.0),
                round(220.0, 300.0),
            ],
        };
        // Round 1: lesson 0 = 200 ÷ mean(100, 300) = 1.0; lesson 1 = 100 ÷ 300.
        assert_eq!(result.rounds[0].ratio(0, rate), Some(1.0));
        assert_eq!(result.rounds[0].ratio(1, rate), Some(100.0 / 300.0));
        // The 900 round is outvoted by the two others.
        assert_eq!(result.ratio(0, rate), Some(1.1));
        assert_eq!(result.lesson_median(0, rate), Some(220.0));
        assert_eq!(result.reference_median(rate), Some(200.0));
        assert_eq!(result.reference_spread(rate), Some(1.0));
        let representative = result.representative(0, rate).and_then(rate);
        assert_eq!(representative, Some(220.0));
    }

    /// Numbers read the way the report prints them.
    #[test]
    fn names_and_numbers() {
        assert_eq!(thousands(10_000), "10,000");
        assert_eq!(thousands(999), "999");
        assert_eq!(size(4096), "4 KiB");
        assert_eq!(Point::ping_pong(100, 64).describe(), "ping-pong 100 × 64 B");
        assert_eq!(Point::memory(10_000).describe(), "memory, 10,000 idle");
    }
}
