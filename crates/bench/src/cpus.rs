//! Who runs on which core, and how busy the whole machine was.
//!
//! **Pinning.** On 2 cores the load client and the server each need one. Left to the
//! scheduler, they sometimes share a core and sometimes not, and a one-connection round trip
//! is about 4 µs on one core (a direct hand-off) but about 17 µs across two (a wake-up on
//! the other core): the same server measured twice differed by 2.5×. So the client thread is
//! pinned to the first allowed CPU and every server (tokio included, all its threads) to the
//! second: each side has exactly one core, in every run, for every server. `sync --threads`
//! too: its threads share that one core, as every other server's single thread has it alone.
//!
//! **The rest of the machine.** `/proc/stat` counts the busy time of all cores. What is
//! busy beyond the server and the client is the kernel's own deferred network work
//! (ksoftirqd) and whatever else runs on the machine (another build): the report prints it
//! so a noisy run is visible as such.

use std::io;
use std::time::Duration;

use nix::sched::{CpuSet, sched_getaffinity, sched_setaffinity};
use nix::sys::resource::{UsageWho, getrusage};
use nix::sys::time::{TimeVal, TimeValLike};
use nix::unistd::Pid;

/// The client's core and the servers' core.
#[derive(Debug, Clone, Copy)]
pub struct Pinning {
    pub client_cpu: usize,
    pub server_cpu: usize,
}

impl Pinning {
    /// The first two CPUs this process may run on, or `None` if it may run on only one.
    pub fn choose() -> Option<Pinning> {
        let allowed = sched_getaffinity(Pid::from_raw(0)).ok()?;
        let mut cpus = (0..CpuSet::count()).filter(|&cpu| allowed.is_set(cpu).unwrap_or(false));
        Some(Pinning {
            client_cpu: cpus.next()?,
            server_cpu: cpus.next()?,
        })
    }

    /// Pins the calling thread (the load client) to its core.
    pub fn pin_this_thread(&self) -> io::Result<()> {
        sched_setaffinity(Pid::from_raw(0), &only(self.client_cpu)?)?;
        Ok(())
    }

    /// The set a server process is pinned to (inherited by every thread it starts).
    pub fn server_set(&self) -> io::Result<CpuSet> {
        only(self.server_cpu)
    }
}

fn only(cpu: usize) -> io::Result<CpuSet> {
    let mut set = CpuSet::new();
    set.set(cpu)?;
    Ok(set)
}

/// Busy time of all cores together, from the first line of `/proc/stat`.
pub fn machine_busy() -> io::Result<Duration> {
    busy_except(&[])
}

/// Like [`machine_busy`], without the time spent in soft interrupts: moving a stream of
/// bytes through loopback TCP keeps the kernel's network softirq busy for a good part of a
/// core, whoever the server is, and that is not another program disturbing the run.
pub fn machine_busy_outside_softirq() -> io::Result<Duration> {
    busy_except(&[SOFTIRQ])
}

/// The `softirq` column of a `/proc/stat` cpu line, counting from 0 after the name.
const SOFTIRQ: usize = 6;

/// Busy time of all cores from `/proc/stat`, leaving out idle, iowait and the `skipped`
/// columns.
fn busy_except(skipped: &[usize]) -> io::Result<Duration> {
    let stat = std::fs::read_to_string("/proc/stat")?;
    let ticks: Vec<u64> = stat
        .lines()
        .next()
        .and_then(|line| line.strip_prefix("cpu "))
        .ok_or_else(|| io::Error::other("no cpu line in /proc/stat"))?
        .split_whitespace()
        .filter_map(|field| field.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal …: busy is everything but idle and iowait.
    let busy: u64 = ticks
        .iter()
        .take(8)
        .enumerate()
        .filter(|&(field, _)| field != 3 && field != 4 && !skipped.contains(&field))
        .map(|(_, &ticks)| ticks)
        .sum();
    Ok(Duration::from_secs_f64(
        busy as f64 / crate::servers::clock_ticks_per_sec(),
    ))
}

/// CPU time (user + system, every thread) this process — the load client — has used so far.
pub fn this_process_cpu_time() -> io::Result<Duration> {
    let usage = getrusage(UsageWho::RUSAGE_SELF)?;
    let micros = |time: TimeVal| u64::try_from(time.num_microseconds()).unwrap_or(0);
    Ok(Duration::from_micros(
        micros(usage.user_time()) + micros(usage.system_time()),
    ))
}
