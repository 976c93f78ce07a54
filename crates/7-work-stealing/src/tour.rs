//! `work-stealing tour`: the runtime at work, in three steps. Run it with `--trace` to see
//! the workers spawn, steal, park and get unparked.
//!
//! 1. One task spawns 8 CPU-bound tasks, which land in its worker's queue, then holds that
//!    worker until they are done: the other worker, unparked by the first spawn, steals
//!    them, half of what is left at a time.
//! 2. Everything finished: the workers park, and a `sleep` wakes one of them through the
//!    reactor's thread and the injector.
//! 3. A task that computes for 600 ms without ever returning `Pending` holds its worker;
//!    the other worker keeps serving an echo server, whose pings come back at once. (With
//!    lesson 5's single thread those pings would wait the full 600 ms.)

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use fdio::Trace;

use crate::net::TcpListener;
use crate::runtime::{DriverMode, Runtime, spawn};
use crate::time::sleep;

/// How many CPU-bound tasks step 1 spawns.
const TASKS: usize = 8;

/// How long step 1's spawner holds its worker at most, waiting for thieves (a bound, so a
/// runtime that never steals ends the step instead of hanging).
const STEAL_PATIENCE: Duration = Duration::from_secs(10);

/// Runs the tour on `workers` workers (at least 2: the point is that there are several).
pub fn run(workers: usize, trace: bool) -> io::Result<()> {
    let workers = workers.max(2);
    let runtime = Runtime::build(workers, DriverMode::default(), Trace::new(trace))?;
    let tour = || -> io::Result<()> {
        writeln!(io::stdout(), "a runtime with {workers} workers")?;
        runtime.block_on(spawn_and_steal())?;
        runtime.block_on(park_and_wake())?;
        runtime.block_on(busy_worker_does_not_stop_the_others())
    };
    match tour() {
        // The reader went away (`tour | head -3`): a normal way for the tour to end. Each
        // line is written with `writeln!(…)?`, not `println!`, which would panic.
        Err(err) if fdio::reader_went_away(&err) => Ok(()),
        other => other,
    }
}

/// The name of the worker thread running this code ("worker-1").
fn worker_name() -> String {
    thread::current().name().unwrap_or("?").to_string()
}

/// Burns the CPU for `duration`, never yielding: a task that hogs its worker.
fn compute(duration: Duration) -> u64 {
    let start = Instant::now();
    let mut x: u64 = 1;
    while start.elapsed() < duration {
        for _ in 0..1000 {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
        }
    }
    x
}

async fn spawn_and_steal() -> io::Result<()> {
    writeln!(
        io::stdout(),
        "1. a task spawns {TASKS} tasks of 20 ms of computing, then holds its worker"
    )?;
    let parent = spawn(async {
        let done = Arc::new(AtomicUsize::new(0));
        let handles: Vec<_> = (0..TASKS)
            .map(|_| {
                let done = Arc::clone(&done);
                spawn(async move {
                    compute(Duration::from_millis(20));
                    done.fetch_add(1, Ordering::SeqCst);
                    worker_name()
                })
            })
            .collect();
        let spawned_on = worker_name();
        // They are all in this worker's queue, and this worker is busy here, without ever
        // returning `Pending` (never do this in real code): only a thief can run them.
        let started = Instant::now();
        while done.load(Ordering::SeqCst) < TASKS && started.elapsed() < STEAL_PATIENCE {
            std::hint::spin_loop();
        }
        let mut ran_on = Vec::new();
        for handle in handles {
            ran_on.push(handle.await.map_err(io::Error::other)?);
        }
        Ok::<_, io::Error>((spawned_on, ran_on))
    });
    let (spawned_on, ran_on) = parent.await.map_err(io::Error::other)??;
    let stolen = ran_on.iter().filter(|name| **name != spawned_on).count();
    writeln!(
        io::stdout(),
        "   {stolen} of the {TASKS} ran on other workers: stolen from its queue"
    )?;
    Ok(())
}

async fn park_and_wake() -> io::Result<()> {
    writeln!(
        io::stdout(),
        "2. nothing to do: the workers park; a timer wakes one"
    )?;
    let started = Instant::now();
    let woken = spawn(async {
        sleep(Duration::from_millis(50)).await;
    });
    woken.await.map_err(io::Error::other)?;
    writeln!(
        io::stdout(),
        "   the sleeping task woke up after {:.0?}",
        started.elapsed()
    )?;
    Ok(())
}

async fn busy_worker_does_not_stop_the_others() -> io::Result<()> {
    writeln!(
        io::stdout(),
        "3. one task computes for 600 ms without yielding; the other worker serves pings"
    )?;
    let mut listener = TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0)))?;
    let addr = listener.local_addr()?;
    let server = spawn(async move {
        let (mut stream, _) = listener.accept().await?;
        let mut buf = [0; 64];
        loop {
            let n = stream.read(&mut buf).await?;
            if n == 0 {
                return Ok::<(), io::Error>(());
            }
            stream.write_all(&buf[..n]).await?;
        }
    });
    let busy = spawn(async { compute(Duration::from_millis(600)) });
    // The client is a plain thread: it measures each round trip while the task computes.
    let client = thread::spawn(move || -> io::Result<Duration> {
        let mut stream = std::net::TcpStream::connect(addr)?;
        let mut slowest = Duration::ZERO;
        for _ in 0..5 {
            thread::sleep(Duration::from_millis(50));
            let sent = Instant::now();
            stream.write_all(b"ping")?;
            let mut echo = [0; 4];
            stream.read_exact(&mut echo)?;
            slowest = slowest.max(sent.elapsed());
        }
        stream.shutdown(Shutdown::Write)?;
        Ok(slowest)
    });
    let slowest = sleep_while(client).await??;
    server.await.map_err(io::Error::other)??;
    busy.await.map_err(io::Error::other)?;
    writeln!(
        io::stdout(),
        "   5 pings were echoed meanwhile; the slowest took {slowest:.1?}"
    )?;
    Ok(())
}

/// Waits for a thread without blocking `block_on`'s thread's own future for long.
async fn sleep_while<T>(thread: thread::JoinHandle<T>) -> io::Result<T> {
    while !thread.is_finished() {
        sleep(Duration::from_millis(10)).await;
    }
    thread
        .join()
        .map_err(|_| io::Error::other("the ping client panicked"))
}
