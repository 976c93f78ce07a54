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

use echo_client::{BulkPlan, FloodPlan, Load, LoadShape, StreamError};
use nix::sched::CpuSet;

use crate::cpus::{Pinning, machine_busy, machine_busy_outside_softirq, this_process_cpu_time};
use crate::servers::{RunningServer, Server, ServerSpec};

/// A traffic measurement during which the rest of the machine (neither the server nor the
/// client: another build, say) kept more than this share of a core busy is taken again…
pub const NOISY: f64 = 0.2;

/// …at most this many times; the quietest attempt is kept. A run-wide budget (a quarter of
/// the measurements) keeps a machine that is busy all along from doubling the run time.
const MAX_RETRIES: usize = 2;

/// The longest wait for connections to be established or answered (per batch of idle ones);
/// in the streaming loads, the longest wait for a byte or a ping's echo before it is a hang.
const PATIENCE: Duration = Duration::from_secs(10);

/// A bulk stream stops sending after this long even if not all its bytes are sent (a slow
/// server): its numbers are then for the bytes it did send.
const BULK_TIME_LIMIT: Duration = Duration::from_secs(20);

/// How often the quiet client pings beside the flood: 100 pings a second, so p99 means
/// something after a second or two.
const PING_EVERY: Duration = Duration::from_millis(10);

/// What a point exercises.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scenario {
    /// Every connection plays ping-pong: messages/s, latency, CPU.
    PingPong,
    /// 10 connections play ping-pong while idle connections sit open beside them.
    IdleScaling,
    /// Only idle connections: the server's peak memory while holding them.
    Memory,
    /// One connection streams `bytes` while it reads the echo: MB/s and server CPU per GB.
    Bulk { bytes: u64 },
    /// One connection floods (1 MiB writes, echo read all along) for `flood` while a quiet
    /// one pings every `ping_every`: how long the pings wait.
    Fairness {
        flood: Duration,
        ping_every: Duration,
    },
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

    fn bulk(bytes: u64) -> Point {
        Point {
            scenario: Scenario::Bulk { bytes },
            shape: LoadShape {
                active: 1,
                idle: 0,
                message_size: 0,
            },
        }
    }

    fn fairness(flood: Duration) -> Point {
        Point {
            scenario: Scenario::Fairness {
                flood,
                ping_every: PING_EVERY,
            },
            shape: LoadShape {
                active: 2,
                idle: 0,
                message_size: 0,
            },
        }
    }

    /// `ping-pong 100 × 64 B`, `10 active + 250 idle`, `memory, 10,000 idle`, `bulk 1,000 MB`,
    /// `flood 2.0 s + ping/10 ms`.
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
            Scenario::Bulk { bytes } => format!("bulk {}", in_megabytes(bytes)),
            Scenario::Fairness { flood, ping_every } => format!(
                "flood {:.1} s + ping/{} ms",
                flood.as_secs_f64(),
                ping_every.as_millis()
            ),
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

/// `1,000 MB` (10⁶ bytes).
pub fn in_megabytes(bytes: u64) -> String {
    format!("{} MB", thousands((bytes / 1_000_000) as usize))
}

/// `10,000`.
pub fn thousands(n: usize) -> String {
    echo_client::thousands(n as u64)
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
    /// Every point the issues ask for. The bulk stream sends `bulk_bytes`; the flood lasts
    /// four windows.
    pub fn full(window: Duration, rounds: usize, bulk_bytes: u64) -> Plan {
        let mut points = Vec::new();
        for message_size in [64, 4096] {
            for connections in [1, 10, 100, 1000] {
                points.push(Point::ping_pong(connections, message_size));
            }
        }
        points.extend([0, 250, 500, 1000].map(Point::idle_scaling));
        points.extend([1000, 10_000].map(Point::memory));
        points.push(Point::bulk(bulk_bytes));
        points.push(Point::fairness(window * 4));
        Plan::with(points, window, rounds)
    }

    /// A few points that still cover each scenario and each target's ping-pong point.
    pub fn quick(window: Duration, rounds: usize, bulk_bytes: u64) -> Plan {
        let points = vec![
            Point::ping_pong(1, 64),
            Point::ping_pong(100, 64),
            Point::ping_pong(100, 4096),
            Point::idle_scaling(0),
            Point::idle_scaling(1000),
            Point::memory(1000),
            Point::bulk(bulk_bytes),
            Point::fairness(window * 4),
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
    Bulk(Bulk),
    Fairness(Fairness),
    /// The server stopped echoing (or answering a ping) for the whole patience: the error.
    Hang(String),
    /// The server echoed a wrong byte, or closed before echoing every byte: the error.
    LostBytes(String),
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
    /// The part of it spent in user space (the rest was the kernel's), likewise; `None`
    /// where the server cannot be sampled (see [`crate::user_time`]).
    pub server_user_cpu: Option<f64>,
    /// The load generator's, likewise.
    pub client_cpu: f64,
    /// All cores' busy time over the window ÷ the window: server + client + the kernel's
    /// deferred network work + anything else running on the machine.
    pub machine_cpu: f64,
    pub bytes_verified: u64,
    /// Idle connections the server still held at the end.
    pub idle_held: usize,
    /// The server's system calls over the window ÷ the messages answered; `None` where they
    /// cannot be counted (see [`crate::servers::SyscallCounter`]).
    pub syscalls_per_message: Option<f64>,
}

/// What a bulk stream showed.
#[derive(Debug, Clone)]
pub struct Bulk {
    /// Bytes sent, echoed and checked.
    pub bytes: u64,
    /// From the first byte sent to the last byte checked.
    pub elapsed: Duration,
    /// The server's CPU time over the stream ÷ its duration: 1.0 = one core busy.
    pub server_cpu: f64,
    /// The benchmark process's (the client's), likewise.
    pub client_cpu: f64,
    /// All cores' busy time outside soft interrupts, likewise: a stream keeps the network
    /// softirq busy whatever the server, so that is left out of the noise.
    pub machine_cpu: f64,
}

impl Bulk {
    /// Echoed megabytes (10⁶ bytes) per second.
    pub fn megabytes_per_sec(&self) -> f64 {
        self.bytes as f64 / 1e6 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// The server's CPU seconds per GB (10⁹ bytes) echoed: its cost per byte, whoever set
    /// the pace.
    pub fn server_cpu_secs_per_gb(&self) -> f64 {
        let server_secs = self.server_cpu * self.elapsed.as_secs_f64();
        server_secs / (self.bytes as f64 / 1e9).max(1e-12)
    }
}

/// What the quiet client saw beside a flood.
#[derive(Debug, Clone)]
pub struct Fairness {
    /// The slowest ping's round trip.
    pub worst: Duration,
    /// The round trip 99 % of the pings did not exceed.
    pub p99: Duration,
    /// How many pings were timed.
    pub pings: usize,
    /// Bytes the flood got back, checked.
    pub flood_bytes: u64,
    /// How fast the flood's echo came back meanwhile.
    pub flood_megabytes_per_sec: f64,
    /// The server's CPU time over the flood ÷ its duration, as in [`Bulk`].
    pub server_cpu: f64,
    /// The client's, likewise.
    pub client_cpu: f64,
    /// All cores' outside soft interrupts, likewise.
    pub machine_cpu: f64,
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

    /// The part of [`server_cpu_per_message`](Self::server_cpu_per_message) spent in user
    /// space: where runtimes can differ. The rest is the kernel's work for the message.
    pub fn server_user_cpu_per_message(&self) -> Option<Duration> {
        let user = self.server_user_cpu?;
        Some(Duration::from_secs_f64(
            user / self.messages_per_sec.max(1e-9),
        ))
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

    pub fn bulk(&self) -> Option<&Bulk> {
        match self {
            Outcome::Bulk(bulk) => Some(bulk),
            _ => None,
        }
    }

    pub fn fairness(&self) -> Option<&Fairness> {
        match self {
            Outcome::Fairness(fairness) => Some(fairness),
            _ => None,
        }
    }

    /// The error, if the measurement failed, hung or lost bytes.
    pub fn error(&self) -> Option<&str> {
        match self {
            Outcome::Hang(error) | Outcome::LostBytes(error) | Outcome::Failed(error) => {
                Some(error)
            }
            _ => None,
        }
    }

    /// How busy the rest of the machine was during a traffic, bulk or fairness measurement:
    /// busy CPU that was neither the server nor the client (None for the others).
    pub fn noise(&self) -> Option<f64> {
        let rest = |machine: f64, server: f64, client: f64| (machine - server - client).max(0.0);
        match self {
            Outcome::Traffic(traffic) => Some(traffic.rest_of_machine_cpu()),
            Outcome::Bulk(bulk) => Some(rest(bulk.machine_cpu, bulk.server_cpu, bulk.client_cpu)),
            Outcome::Fairness(fairness) => Some(rest(
                fairness.machine_cpu,
                fairness.server_cpu,
                fairness.client_cpu,
            )),
            _ => None,
        }
    }

    /// Echoed bytes this measurement checked against what was sent.
    pub fn bytes_verified(&self) -> u64 {
        match self {
            Outcome::Traffic(traffic) => traffic.bytes_verified,
            Outcome::Bulk(bulk) => bulk.bytes,
            Outcome::Fairness(fairness) => fairness.flood_bytes,
            _ => 0,
        }
    }

    /// Whether something else on the machine may have skewed this measurement.
    pub fn is_noisy(&self) -> bool {
        self.noise().is_some_and(|rest| rest > NOISY)
    }

    /// One line for the progress log.
    fn summary(&self) -> String {
        match self {
            Outcome::Traffic(traffic) => format!(
                "{:>7.0} msg/s, p99 {:>5.0} µs, CPU: server {:>3.0} % (user {:>2.0} %), client {:>3.0} %, rest {:>3.0} %",
                traffic.messages_per_sec,
                traffic.p99.as_secs_f64() * 1e6,
                traffic.server_cpu * 100.0,
                traffic.server_user_cpu.unwrap_or(f64::NAN) * 100.0,
                traffic.client_cpu * 100.0,
                traffic.rest_of_machine_cpu() * 100.0,
            ),
            Outcome::Memory(memory) => format!(
                "peak RSS {:.1} MB, holding {}",
                memory.peak_rss as f64 / 1e6,
                thousands(memory.held)
            ),
            Outcome::Bulk(bulk) => format!(
                "{:>5.0} MB/s, server CPU {:.2} s/GB, client {:>3.0} %, rest {:>3.0} %",
                bulk.megabytes_per_sec(),
                bulk.server_cpu_secs_per_gb(),
                bulk.client_cpu * 100.0,
                self.noise().unwrap_or_default() * 100.0,
            ),
            Outcome::Fairness(fairness) => format!(
                "worst ping {:.1} ms, p99 {:.1} ms ({} pings), flood {:.0} MB/s, rest {:>3.0} %",
                fairness.worst.as_secs_f64() * 1e3,
                fairness.p99.as_secs_f64() * 1e3,
                fairness.pings,
                fairness.flood_megabytes_per_sec,
                self.noise().unwrap_or_default() * 100.0,
            ),
            Outcome::Hang(error) => format!("HANG: {error}"),
            Outcome::LostBytes(error) => format!("LOST BYTES: {error}"),
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
            .all(|round| round.lessons[index].error().is_some())
    }

    /// In how many rounds lesson `index` (or tokio, for `None`) hung, and in how many it lost
    /// bytes.
    pub fn hangs_and_losses(&self, index: Option<usize>) -> (usize, usize) {
        let outcomes: Vec<&Outcome> = match index {
            Some(index) => self
                .rounds
                .iter()
                .map(|round| &round.lessons[index])
                .collect(),
            None => self
                .rounds
                .iter()
                .flat_map(|round| &round.reference)
                .collect(),
        };
        let count = |pick: fn(&Outcome) -> bool| outcomes.iter().filter(|o| pick(o)).count();
        (
            count(|outcome| matches!(outcome, Outcome::Hang(_))),
            count(|outcome| matches!(outcome, Outcome::LostBytes(_))),
        )
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
        // The peers read 16 KiB at a time for the bulk and fairness loads.
        let streaming = matches!(
            point.scenario,
            Scenario::Bulk { .. } | Scenario::Fairness { .. }
        );
        let reference = &reference.for_streaming(streaming);
        let lessons: Vec<Server> = lessons
            .iter()
            .map(|lesson| lesson.for_streaming(streaming))
            .collect();
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
            for lesson in &lessons {
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
    let result = match point.scenario {
        Scenario::Bulk { bytes } => stream_bulk(&running, bytes).map(|outcome| (outcome, None)),
        Scenario::Fairness { flood, ping_every } => {
            flood_and_ping(&running, flood, ping_every).map(|outcome| (outcome, None))
        }
        _ => load_and_measure(&running, point, plan).map(|(outcome, load)| (outcome, Some(load))),
    };
    let broken = match &result {
        Ok((outcome, _)) => outcome.error().map(str::to_string),
        Err(err) => Some(err.to_string()),
    };
    if let Some(error) = broken
        && !running.is_running()
    {
        return Err(io::Error::other(format!(
            "the server exited during the measurement ({error})"
        )));
    }
    let (outcome, load) = result?;
    // Kill the server before our side closes: its sockets then close first and the
    // TIME_WAIT state stays with its port, not with our ephemeral ports (10,000 per point).
    drop(running);
    drop(load);
    Ok(outcome)
}

/// A hang or a lost byte is a result of the measurement, reported in its table; any other
/// error means it could not be made.
fn broken(err: StreamError) -> io::Result<Outcome> {
    if err.is_hang() {
        Ok(Outcome::Hang(err.to_string()))
    } else if err.is_lost_or_wrong_byte() {
        Ok(Outcome::LostBytes(err.to_string()))
    } else {
        Err(err.into())
    }
}

/// CPU time of the server, of this process (the client) and of the whole machine, taken
/// before a load and subtracted after it.
struct CpuClock {
    server: Duration,
    client: Duration,
    machine: Duration,
}

impl CpuClock {
    fn start(running: &RunningServer) -> io::Result<CpuClock> {
        Ok(CpuClock {
            server: running.cpu_time()?,
            client: this_process_cpu_time()?,
            machine: machine_busy_outside_softirq()?,
        })
    }

    /// (server, client, machine) CPU since `start`, each as a share of `elapsed`.
    fn shares(&self, running: &RunningServer, elapsed: Duration) -> io::Result<(f64, f64, f64)> {
        let secs = elapsed.as_secs_f64().max(1e-9);
        let share =
            |now: Duration, before: Duration| now.saturating_sub(before).as_secs_f64() / secs;
        Ok((
            share(running.cpu_time()?, self.server),
            share(this_process_cpu_time()?, self.client),
            share(machine_busy_outside_softirq()?, self.machine),
        ))
    }
}

/// One bulk stream of `bytes`, every byte checked: MB/s and the server's CPU.
fn stream_bulk(running: &RunningServer, bytes: u64) -> io::Result<Outcome> {
    let plan = BulkPlan {
        bytes,
        time_limit: BULK_TIME_LIMIT,
        patience: PATIENCE,
    };
    let clock = CpuClock::start(running)?;
    let report = match echo_client::bulk_stream(running.addr, &plan) {
        Ok(report) => report,
        Err(err) => return broken(err),
    };
    let (server_cpu, client_cpu, machine_cpu) = clock.shares(running, report.elapsed)?;
    Ok(Outcome::Bulk(Bulk {
        bytes: report.bytes,
        elapsed: report.elapsed,
        server_cpu,
        client_cpu,
        machine_cpu,
    }))
}

/// A flood beside a quiet client for `flood`: how long the pings waited.
fn flood_and_ping(
    running: &RunningServer,
    flood: Duration,
    ping_every: Duration,
) -> io::Result<Outcome> {
    let plan = FloodPlan {
        ping_every,
        duration: flood,
        patience: PATIENCE,
        ..FloodPlan::default()
    };
    let clock = CpuClock::start(running)?;
    let report = match echo_client::flood_beside_quiet_client(running.addr, &plan) {
        Ok(report) => report,
        Err(err) => return broken(err),
    };
    let (server_cpu, client_cpu, machine_cpu) = clock.shares(running, report.elapsed)?;
    let (Some(worst), Some(p99)) = (report.worst_ping(), report.ping_percentile(99.0)) else {
        return Err(io::Error::other("no ping was sent beside the flood"));
    };
    Ok(Outcome::Fairness(Fairness {
        worst,
        p99,
        pings: report.pings.len(),
        flood_bytes: report.flood_bytes,
        flood_megabytes_per_sec: report.flood_megabytes_per_sec(),
        server_cpu,
        client_cpu,
        machine_cpu,
    }))
}

/// Prints, once per run, why the user-space CPU column says `n/a`.
fn say_once_why_user_time_is_not_sampled(why: &str) {
    static SAID: std::sync::Once = std::sync::Once::new();
    SAID.call_once(|| eprintln!("bench: user-space CPU per message: n/a: {why}"));
}

/// Prints, once per run, why the system calls column says `n/a`.
fn say_once_why_syscalls_are_not_counted(why: &str) {
    static SAID: std::sync::Once = std::sync::Once::new();
    SAID.call_once(|| eprintln!("bench: system calls per message: n/a: {why}"));
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
    let syscalls = running
        .count_syscalls()
        .inspect_err(|why| say_once_why_syscalls_are_not_counted(why))
        .ok();
    let syscalls_before = syscalls
        .as_ref()
        .map(|counter| counter.total())
        .transpose()?;
    let sampler = running
        .sample_user_time(plan.window)
        .inspect_err(|why| say_once_why_user_time_is_not_sampled(why))
        .ok();
    let server_cpu_before = running.cpu_time()?;
    let machine_before = machine_busy()?;
    // At least one message: on a loaded machine a short window can end before the first
    // echo comes (a window with none measures nothing); none within PATIENCE is a hang.
    let window = load.run_for_at_least(plan.window, 1, PATIENCE)?;
    let machine = machine_busy()?.saturating_sub(machine_before);
    let server_cpu = running.cpu_time()?.saturating_sub(server_cpu_before);
    let user_share = sampler.as_ref().and_then(|sampler| sampler.user_share());
    let syscalls_during = match (&syscalls, syscalls_before) {
        (Some(counter), Some(before)) => Some(counter.total()?.saturating_sub(before)),
        _ => None,
    };
    let elapsed = window.elapsed.as_secs_f64();
    let traffic = Traffic {
        messages_per_sec: window.messages_per_sec(),
        p50: window.latency.percentile(50.0).unwrap_or_default(),
        p99: window.latency.percentile(99.0).unwrap_or_default(),
        server_cpu: server_cpu.as_secs_f64() / elapsed,
        server_user_cpu: user_share.map(|share| share * server_cpu.as_secs_f64() / elapsed),
        client_cpu: window.client_cpu_share(),
        machine_cpu: machine.as_secs_f64() / elapsed,
        bytes_verified: window.bytes_verified,
        idle_held: load.idle_held(),
        syscalls_per_message: syscalls_during
            .map(|count| count as f64 / window.messages.max(1) as f64),
    };
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
            server_user_cpu: None,
            client_cpu: 0.0,
            machine_cpu: 0.0,
            bytes_verified: 0,
            idle_held: 0,
            syscalls_per_message: None,
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
        assert_eq!(Point::bulk(1_000_000_000).describe(), "bulk 1,000 MB");
        assert_eq!(
            Point::fairness(Duration::from_secs(2)).describe(),
            "flood 2.0 s + ping/10 ms"
        );
    }
}
