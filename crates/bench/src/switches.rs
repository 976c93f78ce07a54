//! `bench switches`: what it costs to hand the CPU from one task to the next, four ways,
//! measured in the same run:
//!
//! - **a green thread's switch alone** (lesson 8): two contexts switch back and forth with
//!   `lesson_green_threads::switch` — push six registers and two control words, swap the
//!   stack pointer, pop, return — and nothing else; and, apart, what saving and loading the
//!   two floating-point control words costs (`stmxcsr`, `fnstcw`, `ldmxcsr`, `fldcw`);
//! - **a green thread's `yield_now`**, among 100 green threads: a switch to the scheduler, its
//!   run queue, a switch to the next green thread, and one `epoll_wait(0)` per turn of all 100;
//! - **a future's wake and poll** (lesson 5): `yield_now().await` among 100 tasks — the waker
//!   pushes the task's id on the ready queue (behind a mutex), the executor polls the task's
//!   boxed future, which resumes its state machine; one `epoll_wait(0)` per turn of all 100;
//! - **an OS thread's context switch**: two threads on one CPU pass a byte back and forth
//!   through two pipes; each hand-off is a `write`, the kernel switching threads, and the
//!   `read` that had blocked returning.
//!
//! Each is timed `rounds` times, alternating, after one warm-up; the table gives the medians.
//! Run before the servers are pinned: the OS threads pin themselves, to one CPU.

use std::cell::Cell;
use std::fmt::Write as _;
use std::io::{self, Read, Write};
use std::thread;
use std::time::{Duration, Instant};

use fdio::Trace;
use lesson_green_threads::stack::Stack;
use lesson_green_threads::switch::{Context, switch};
use nix::sched::{CpuSet, sched_getaffinity, sched_setaffinity};
use nix::unistd::Pid;

/// How many tasks yield to each other in the scheduler rows.
const TASKS: usize = 100;

/// How much each measurement does; `scale` 1 is a full run (each takes 10–300 ms here).
struct Sizes {
    switches: u64,
    yields_each: u64,
    round_trips: u64,
}

impl Sizes {
    fn scaled(scale: f64) -> Sizes {
        let scaled = |n: f64| (n * scale).max(10.0) as u64;
        Sizes {
            switches: scaled(10_000_000.0),
            yields_each: scaled(10_000.0),
            round_trips: scaled(50_000.0),
        }
    }
}

thread_local! {
    /// The measuring side of the raw switch: the thread's own stack.
    static HOME: Context = const { Context::empty() };
    /// The other side, on a stack of its own.
    static AWAY: Cell<*const Context> = const { Cell::new(std::ptr::null()) };
}

/// The other side of the raw switch: switches straight back, for ever.
extern "C" fn bounce() -> ! {
    loop {
        let away = AWAY.get();
        // Safety: `raw_switches` set `AWAY` to this side's context and waits in `switch` for
        // us; it outlives every switch to this side.
        HOME.with(|home| unsafe { switch(&*away, home) });
    }
}

/// `switches` green-thread switches back and forth, nothing else; time per switch.
fn raw_switches(switches: u64) -> io::Result<f64> {
    let stack = Stack::new(64 * 1024)?;
    // Safety: the top of a fresh stack, which lives until the end of this function; the
    // other side is never resumed after it (it is suspended, then its stack unmapped).
    let away = unsafe { Context::new(stack.top(), bounce) };
    AWAY.set(&away);
    let started = Instant::now();
    for _ in 0..switches / 2 {
        // Safety: `away` was made for `bounce` or saved by it, and is not running.
        HOME.with(|home| unsafe { switch(home, &away) });
    }
    Ok(per(started.elapsed(), switches / 2 * 2))
}

/// The four control-word instructions of every switch, `switches` times; time per switch.
#[cfg(target_arch = "x86_64")]
fn control_words(switches: u64) -> io::Result<f64> {
    let mut saved = [0u32; 2];
    let started = Instant::now();
    for _ in 0..switches {
        // Safety: stores this thread's MXCSR and x87 control word into `saved` and loads them
        // back unchanged: nothing else changes.
        unsafe {
            std::arch::asm!(
                "stmxcsr [{0}]",
                "fnstcw [{0} + 4]",
                "ldmxcsr [{0}]",
                "fldcw [{0} + 4]",
                in(reg) saved.as_mut_ptr(),
                options(nostack),
            );
        }
    }
    Ok(per(started.elapsed(), switches))
}

/// Off x86-64 `section` returns before measuring anything: lesson 8 has no switch there.
#[cfg(not(target_arch = "x86_64"))]
fn control_words(_switches: u64) -> io::Result<f64> {
    unreachable!("no switch costs off x86-64")
}

/// `TASKS` green threads each yielding `yields_each` times; time per yield.
fn green_yields(yields_each: u64) -> io::Result<f64> {
    use lesson_green_threads::runtime::{run, yield_now};
    use lesson_green_threads::spawn::spawn;
    run(Trace::new(false), move || -> io::Result<f64> {
        let started = Instant::now();
        let tasks = (0..TASKS)
            .map(|_| {
                spawn(move || {
                    for _ in 0..yields_each {
                        yield_now();
                    }
                })
            })
            .collect::<io::Result<Vec<_>>>()?;
        for task in tasks {
            task.join()
                .map_err(|_| io::Error::other("a green thread panicked"))?;
        }
        Ok(per(started.elapsed(), TASKS as u64 * yields_each))
    })?
}

/// `TASKS` tasks of lesson 5 each yielding `yields_each` times; time per yield.
fn future_yields(yields_each: u64) -> io::Result<f64> {
    use lesson_async_await::combinators::yield_now;
    use lesson_async_await::executor::{block_on, spawn};
    block_on(Trace::new(false), async move {
        let started = Instant::now();
        let tasks: Vec<_> = (0..TASKS)
            .map(|_| {
                spawn(async move {
                    for _ in 0..yields_each {
                        yield_now().await;
                    }
                })
            })
            .collect();
        for task in tasks {
            task.await
                .map_err(|err| io::Error::other(format!("a task failed: {err:?}")))?;
        }
        Ok(per(started.elapsed(), TASKS as u64 * yields_each))
    })?
}

/// Two OS threads on one CPU pass a byte back and forth `round_trips` times through two
/// pipes; time per hand-off (half a round trip).
fn thread_ping_pong(round_trips: u64) -> io::Result<f64> {
    let this_cpu = sched_getaffinity(Pid::from_raw(0))?;
    let cpu = (0..CpuSet::count())
        .find(|&cpu| this_cpu.is_set(cpu).unwrap_or(false))
        .ok_or_else(|| io::Error::other("this thread may run on no CPU"))?;
    let mut one_cpu = CpuSet::new();
    one_cpu.set(cpu)?;
    let (mut ping_reader, mut ping_writer) = io::pipe()?;
    let (mut pong_reader, mut pong_writer) = io::pipe()?;
    let echo = thread::spawn(move || -> io::Result<()> {
        sched_setaffinity(Pid::from_raw(0), &one_cpu)?;
        let mut byte = [0];
        for _ in 0..round_trips {
            ping_reader.read_exact(&mut byte)?;
            pong_writer.write_all(&byte)?;
        }
        Ok(())
    });
    let timer = thread::spawn(move || -> io::Result<f64> {
        sched_setaffinity(Pid::from_raw(0), &one_cpu)?;
        let mut byte = [1];
        let started = Instant::now();
        for _ in 0..round_trips {
            ping_writer.write_all(&byte)?;
            pong_reader.read_exact(&mut byte)?;
        }
        Ok(per(started.elapsed(), 2 * round_trips))
    });
    let elapsed = timer
        .join()
        .map_err(|_| io::Error::other("the timing thread panicked"))??;
    echo.join()
        .map_err(|_| io::Error::other("the echoing thread panicked"))??;
    Ok(elapsed)
}

/// Seconds per hand-off.
fn per(elapsed: Duration, hand_offs: u64) -> f64 {
    elapsed.as_secs_f64() / hand_offs.max(1) as f64
}

/// The median of some measurements.
fn median(mut samples: Vec<f64>) -> f64 {
    samples.sort_by(f64::total_cmp);
    samples[samples.len() / 2]
}

/// The switch-cost section of the report, as markdown. `scale` shrinks every measurement
/// (1.0: a full run).
pub fn section(rounds: usize, scale: f64) -> io::Result<String> {
    if !lesson_green_threads::switch::SUPPORTED {
        return Ok(
            "## Switch cost\n\nNot measured: lesson 8's context switch is x86-64 \
                   assembly, and this is not an x86-64 machine.\n\n"
                .to_string(),
        );
    }
    let sizes = Sizes::scaled(scale);
    type Measure<'a> = Box<dyn Fn() -> io::Result<f64> + 'a>;
    let rows: [(&str, Measure); 5] = [
        (
            "green thread: `switch` alone (lesson 8)",
            Box::new(|| raw_switches(sizes.switches)),
        ),
        (
            "the two floating-point control words alone: saved and loaded, as in every switch",
            Box::new(|| control_words(sizes.switches)),
        ),
        (
            "green thread: `yield_now` among 100 (lesson 8: two switches and the run queue)",
            Box::new(|| green_yields(sizes.yields_each)),
        ),
        (
            "future: `yield_now().await` among 100 tasks (lesson 5: a wake and a poll)",
            Box::new(|| future_yields(sizes.yields_each)),
        ),
        (
            "OS threads on one CPU: a pipe ping-pong (a write, a context switch, a read)",
            Box::new(|| thread_ping_pong(sizes.round_trips)),
        ),
    ];
    let mut samples: Vec<Vec<f64>> = vec![Vec::new(); rows.len()];
    for (_, measure) in &rows {
        measure()?; // warm-up
    }
    for _ in 0..rounds {
        for ((_, measure), samples) in rows.iter().zip(&mut samples) {
            samples.push(measure()?);
        }
    }
    let medians: Vec<f64> = samples.into_iter().map(median).collect();
    let switch = medians[0].max(1e-12);
    let mut out = String::new();
    let _ = writeln!(
        out,
        "\n## Switch cost: green threads, futures, OS threads\n"
    );
    let _ = writeln!(
        out,
        "Handing the CPU from one task to the next; median of {rounds} runs each, \
         alternating ({} switches, 100 × {} yields, {} round trips).\n",
        sizes.switches, sizes.yields_each, sizes.round_trips
    );
    let _ = writeln!(out, "| hand-off | ns | × a green-thread switch |");
    let _ = writeln!(out, "|---|---:|---:|");
    for ((label, _), median) in rows.iter().zip(&medians) {
        let nanos = median * 1e9;
        let times = median / switch;
        let _ = writeln!(out, "| {label} | {nanos:.1} | {times:.1}× |");
    }
    Ok(out)
}
