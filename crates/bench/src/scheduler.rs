//! `bench scheduler`: lesson 7's runtime against tokio's multi-thread runtime, with the same
//! number of workers, in the same run.
//!
//! Four of tokio's own scheduler micro-benchmarks (its `benches/rt_multi_threaded.rs`),
//! written once and run on both runtimes by the same macro, so the code is identical:
//! - `spawn_many`: one task spawns 10,000 tasks and awaits them all;
//! - `yield_many`: 200 tasks each yield 1,000 times;
//! - `chained_spawn`: each task spawns the next, 1,000 deep;
//! - `ping_pong`: 1,000 pairs of tasks wake each other through one-shot channels.
//!
//! Each is timed `rounds` times on each runtime, alternating; the table gives the medians
//! and their ratio (target: ≤ 1.25× tokio's time). Lesson 7's runtime runs with each of its
//! drivers (`--driver worker`: an idle worker waits in `epoll_wait`; `--driver thread`: the
//! reactor's own thread does), the default first. Then the echo rows: `work-stealing echo
//! --workers 2` with each driver and tokio's multi-thread echo (`bench tokio-echo
//! --multi-thread 2`) under 100 connections of 64 B ping-pong, alternating, median msgs/s
//! (target ≥ 0.90× tokio) and server CPU per message.
//! Nothing is pinned there: on 2 cores the load client shares them with the server's two
//! workers, so the CPU each side used is reported beside the rate.

use std::fmt::Write;
use std::future::Future;
use std::io;
use std::path::Path;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use lesson_work_stealing::DriverMode;

use crate::servers::{REFERENCE, Server, ServerSpec};

/// Lesson 7's drivers, the default first (its figures go to the plot and the summary).
fn drivers() -> [DriverMode; 2] {
    match DriverMode::default() {
        DriverMode::Worker => [DriverMode::Worker, DriverMode::Thread],
        DriverMode::Thread => [DriverMode::Thread, DriverMode::Worker],
    }
}

/// `--driver …` as typed.
fn driver_name(driver: DriverMode) -> &'static str {
    match driver {
        DriverMode::Worker => "worker",
        DriverMode::Thread => "thread",
    }
}

/// `work-stealing echo --workers 2 --driver …`, as a server of the benchmark.
fn work_stealing_echo(bin_dir: &Path, driver: DriverMode) -> Server {
    let (label, args): (&'static str, &'static [&'static str]) = match driver {
        DriverMode::Worker => (
            "work-stealing --workers 2 --driver worker",
            &["echo", "--workers", "2", "--driver", "worker"],
        ),
        DriverMode::Thread => (
            "work-stealing --workers 2 --driver thread",
            &["echo", "--workers", "2", "--driver", "thread"],
        ),
    };
    Server {
        spec: ServerSpec {
            id: "work-stealing",
            label,
            binary: "work-stealing",
            args,
            streaming_args: None,
            uses_epoll: true,
        },
        executable: bin_dir.join("work-stealing"),
    }
}

/// How many tasks `spawn_many` spawns, as in tokio's benchmark.
const SPAWN_MANY: usize = 10_000;
/// `yield_many`: tasks, and yields each.
const YIELD_TASKS: usize = 200;
const YIELDS: usize = 1_000;
/// `chained_spawn`: how deep the chain goes.
const CHAIN: usize = 1_000;
/// `ping_pong`: how many pairs.
const PAIRS: usize = 1_000;

/// A one-shot channel both runtimes can use (tokio's own would favour tokio).
fn oneshot<T>() -> (Sender<T>, Receiver<T>) {
    let slot = Arc::new(Mutex::new((None, None::<Waker>)));
    (Sender(Arc::clone(&slot)), Receiver(slot))
}

type Slot<T> = Arc<Mutex<(Option<T>, Option<Waker>)>>;

struct Sender<T>(Slot<T>);
struct Receiver<T>(Slot<T>);

impl<T> Sender<T> {
    fn send(self, value: T) {
        let waker = {
            let mut slot = self.0.lock().unwrap();
            slot.0 = Some(value);
            slot.1.take()
        };
        if let Some(waker) = waker {
            waker.wake();
        }
    }
}

impl<T> Future for Receiver<T> {
    type Output = T;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<T> {
        let mut slot = self.0.lock().unwrap();
        match slot.0.take() {
            Some(value) => Poll::Ready(value),
            None => {
                slot.1 = Some(cx.waker().clone());
                Poll::Pending
            }
        }
    }
}

/// The four benchmarks, written once for a runtime's `spawn` and `yield_now`.
macro_rules! benchmarks {
    ($module:ident, $spawn:path, $yield_now:path) => {
        mod $module {
            use super::*;

            pub async fn spawn_many() {
                let handles: Vec<_> = (0..SPAWN_MANY).map(|_| $spawn(async {})).collect();
                for handle in handles {
                    handle.await.unwrap();
                }
            }

            pub async fn yield_many() {
                let handles: Vec<_> = (0..YIELD_TASKS)
                    .map(|_| {
                        $spawn(async {
                            for _ in 0..YIELDS {
                                $yield_now().await;
                            }
                        })
                    })
                    .collect();
                for handle in handles {
                    handle.await.unwrap();
                }
            }

            fn chain(left: usize, done: Sender<()>) {
                if left == 0 {
                    done.send(());
                } else {
                    drop($spawn(async move { chain(left - 1, done) }));
                }
            }

            pub async fn chained_spawn() {
                let (done, finished) = oneshot();
                drop($spawn(async move { chain(CHAIN, done) }));
                finished.await;
            }

            pub async fn ping_pong() {
                let (done, finished) = oneshot();
                let left = Arc::new(AtomicUsize::new(PAIRS));
                let done = Arc::new(Mutex::new(Some(done)));
                for _ in 0..PAIRS {
                    let (left, done) = (Arc::clone(&left), Arc::clone(&done));
                    drop($spawn(async move {
                        let (ping, pinged) = oneshot();
                        let (pong, ponged) = oneshot();
                        drop($spawn(async move {
                            pinged.await;
                            pong.send(());
                        }));
                        ping.send(());
                        ponged.await;
                        if left.fetch_sub(1, Ordering::Relaxed) == 1
                            && let Some(done) = done.lock().unwrap().take()
                        {
                            done.send(());
                        }
                    }));
                }
                finished.await;
            }
        }
    };
}

benchmarks!(
    ours,
    lesson_work_stealing::spawn,
    lesson_work_stealing::yield_now
);
benchmarks!(theirs, tokio::spawn, tokio::task::yield_now);

/// One benchmark's medians on both runtimes (ours: with each of [`drivers`]).
struct Timing {
    name: &'static str,
    ours: [Duration; 2],
    tokio: Duration,
}

/// The median of some durations.
fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

/// Runs the micro-benchmarks, `rounds` times each on each runtime (after one warm-up).
fn micro_benchmarks(workers: usize, rounds: usize) -> io::Result<Vec<Timing>> {
    let build =
        |driver| lesson_work_stealing::Runtime::build(workers, driver, fdio::Trace::new(false));
    let [default, other] = drivers();
    let ours = [build(default)?, build(other)?];
    let theirs = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build()?;
    // Each is started from inside a task, as tokio's benchmarks do: spawns go to a worker's
    // own queue, not through the injector.
    macro_rules! time_both {
        ($name:literal, $bench:ident) => {{
            let time_ours = |ours: &lesson_work_stealing::Runtime| {
                let started = Instant::now();
                ours.block_on(async { lesson_work_stealing::spawn(ours::$bench()).await })
                    .unwrap();
                started.elapsed()
            };
            let time_theirs = || {
                let started = Instant::now();
                theirs
                    .block_on(async { tokio::spawn(theirs::$bench()).await })
                    .unwrap();
                started.elapsed()
            };
            for runtime in &ours {
                time_ours(runtime);
            }
            time_theirs();
            let (mut a, mut b, mut c) = (Vec::new(), Vec::new(), Vec::new());
            for _ in 0..rounds {
                a.push(time_ours(&ours[0]));
                b.push(time_ours(&ours[1]));
                c.push(time_theirs());
            }
            Timing {
                name: $name,
                ours: [median(a), median(b)],
                tokio: median(c),
            }
        }};
    }
    Ok(vec![
        time_both!("spawn_many", spawn_many),
        time_both!("yield_many", yield_many),
        time_both!("chained_spawn", chained_spawn),
        time_both!("ping_pong", ping_pong),
    ])
}

/// One echo server's numbers under the 100 × 64 B load.
pub(crate) struct EchoRun {
    pub(crate) messages_per_sec: f64,
    /// Share of one core: the server's (all its threads), and the load client's.
    pub(crate) server_cpu: f64,
    client_cpu: f64,
    /// The part of `server_cpu` in user space, where it could be sampled.
    server_user_cpu: Option<f64>,
}

impl EchoRun {
    fn cpu_per_message(&self) -> Duration {
        Duration::from_secs_f64(self.server_cpu / self.messages_per_sec.max(1e-9))
    }

    fn user_cpu_per_message(&self) -> Option<Duration> {
        let user = self.server_user_cpu?;
        Some(Duration::from_secs_f64(
            user / self.messages_per_sec.max(1e-9),
        ))
    }
}

/// One multi-threaded echo server in the summary: 100 × 64 B on 2 workers, nothing pinned.
pub struct EchoRow {
    pub label: &'static str,
    pub messages_per_sec: f64,
    pub cpu_per_message: Duration,
    pub user_cpu_per_message: Option<Duration>,
    /// Its msgs/s and CPU per message ÷ tokio multi_thread's (`None` for tokio's own row).
    pub ratios: Option<(f64, f64)>,
}

/// One window of 100 × 64 B ping-pong against `server`.
pub(crate) fn echo_window(server: &Server, window: Duration) -> io::Result<EchoRun> {
    let running = server.start(None)?;
    let shape = echo_client::LoadShape {
        active: 100,
        idle: 0,
        message_size: 64,
    };
    let mut load = echo_client::Load::open(running.addr, &shape, Duration::from_secs(10))?;
    load.run_for(window / 4)?; // warm-up
    let sampler = running.sample_user_time(window).ok();
    let cpu_before = running.cpu_time()?;
    let measured = load.run_for(window)?;
    let server_cpu = (running.cpu_time()? - cpu_before).as_secs_f64();
    let elapsed = measured.elapsed.as_secs_f64();
    let user_share = sampler.and_then(|sampler| sampler.user_share());
    Ok(EchoRun {
        messages_per_sec: measured.messages_per_sec(),
        server_cpu: server_cpu / elapsed,
        client_cpu: measured.client_cpu_share(),
        server_user_cpu: user_share.map(|share| share * server_cpu / elapsed),
    })
}

/// The median run (by msgs/s) of several.
pub(crate) fn median_run(mut runs: Vec<EchoRun>) -> EchoRun {
    runs.sort_by(|a, b| a.messages_per_sec.total_cmp(&b.messages_per_sec));
    runs.swap_remove(runs.len() / 2)
}

/// What the scheduler section measured, for the report, the plot and the README's summary.
#[derive(Default)]
pub struct Section {
    /// The micro-benchmarks' table and the echo row, as markdown (`bench scheduler` prints
    /// it; a full run adds it to its report).
    pub markdown: String,
    /// Each benchmark's time on lesson 7's runtime (its default driver) as a multiple of
    /// tokio's (for the echo: the time per message, tokio's msgs/s over ours), for
    /// `bench-scheduler.svg`.
    pub versus_tokio: Vec<(&'static str, f64)>,
    /// lesson 7's echo with each driver (the default first), then tokio multi_thread's (the
    /// median run of each), for the README's summary table.
    pub echo: Vec<EchoRow>,
}

/// Runs the scheduler section: the micro-benchmarks and the echo row.
pub fn section(
    bin_dir: &Path,
    workers: usize,
    rounds: usize,
    window: Duration,
) -> io::Result<Section> {
    let mut versus_tokio = Vec::new();
    let mut out = String::new();
    let _ = writeln!(
        out,
        "## Scheduler: lesson 7 (work-stealing) and tokio multi_thread, {workers} workers"
    );
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "Median of {rounds} runs each, alternating; lower is better."
    );
    let _ = writeln!(out);
    let [default, other] = drivers().map(driver_name);
    let _ = writeln!(
        out,
        "| benchmark | work-stealing, `--driver {default}` (default) | `--driver {other}` | \
         tokio multi_thread | ratio, `{default}` | ratio, `{other}` | target ≤ 1.25× |"
    );
    let _ = writeln!(out, "|---|---:|---:|---:|---:|---:|---|");
    for timing in micro_benchmarks(workers, rounds)? {
        let [ratio, other_ratio] = timing
            .ours
            .map(|ours| ours.as_secs_f64() / timing.tokio.as_secs_f64());
        versus_tokio.push((timing.name, ratio));
        let _ = writeln!(
            out,
            "| `{}` | {:.2?} | {:.2?} | {:.2?} | {ratio:.2}× | {other_ratio:.2}× | {} |",
            timing.name,
            timing.ours[0],
            timing.ours[1],
            timing.tokio,
            if ratio <= 1.25 { "met" } else { "missed" }
        );
    }
    let work_stealing = drivers().map(|driver| work_stealing_echo(bin_dir, driver));
    let tokio = Server {
        spec: ServerSpec {
            label: "tokio multi_thread, 2 workers",
            args: &["tokio-echo", "--multi-thread", "2"],
            ..REFERENCE
        },
        executable: std::env::current_exe()?,
    };
    let (mut ours, mut theirs) = ([Vec::new(), Vec::new()], Vec::new());
    for _ in 0..rounds {
        for (runs, server) in ours.iter_mut().zip(&work_stealing) {
            runs.push(echo_window(server, window)?);
        }
        theirs.push(echo_window(&tokio, window)?);
    }
    let (ours, theirs) = (ours.map(median_run), median_run(theirs));
    let ratios = |ours: &EchoRun| {
        let rate = ours.messages_per_sec / theirs.messages_per_sec;
        let cpu = ours.cpu_per_message().as_secs_f64() / theirs.cpu_per_message().as_secs_f64();
        (rate, cpu)
    };
    versus_tokio.push(("echo, per message", 1.0 / ratios(&ours[0]).0));
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "Echo, 100 connections × 64 B ping-pong, {:.1} s windows, nothing pinned (server \
         CPU: all its threads, in cores; the client's, in cores):",
        window.as_secs_f64()
    );
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "| server | msgs/s | server CPU | client CPU | CPU per message | msgs/s ratio | \
         CPU per message ratio | target ≥ 0.90× |"
    );
    let _ = writeln!(out, "|---|---:|---:|---:|---:|---:|---:|---|");
    let rows = [
        (
            work_stealing[0].spec.label,
            &ours[0],
            Some(ratios(&ours[0])),
        ),
        (
            work_stealing[1].spec.label,
            &ours[1],
            Some(ratios(&ours[1])),
        ),
        (tokio.spec.label, &theirs, None),
    ];
    for (label, run, ratios) in rows {
        let (rate, cpu) = ratios.unwrap_or((1.0, 1.0));
        let _ = writeln!(
            out,
            "| {label} | {:.0} | {:.2} | {:.2} | {:.2?} | {rate:.2}× | {cpu:.2}× | {} |",
            run.messages_per_sec,
            run.server_cpu,
            run.client_cpu,
            run.cpu_per_message(),
            match ratios {
                Some(_) if rate >= 0.90 => "met",
                Some(_) => "missed",
                None => "",
            }
        );
    }
    let echo = rows
        .into_iter()
        .map(|(label, run, ratios)| EchoRow {
            label,
            messages_per_sec: run.messages_per_sec,
            cpu_per_message: run.cpu_per_message(),
            user_cpu_per_message: run.user_cpu_per_message(),
            ratios,
        })
        .collect();
    Ok(Section {
        markdown: out,
        versus_tokio,
        echo,
    })
}
