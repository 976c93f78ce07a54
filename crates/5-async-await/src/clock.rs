//! The Python lesson's two coroutines, side by side on one thread:
//!
//! ```python
//! async def print_nums():            async def print_time():
//!     num = 0                            count = 0
//!     while True:                        while True:
//!         print(num)                         if count % 3 == 0:
//!         num += 1                               print(f"{count} seconds passed.")
//!         await asyncio.sleep(1)             count += 1
//!                                            await asyncio.sleep(1)
//! ```
//!
//! Each `await` on a timer hands the thread back to the loop, which runs the other one.
//!
//! **A blocked loop.** Only an `await` hands the thread back. `--block-ms N` gives
//! `print_nums` N ms of blocking work after each number (`std::thread::sleep` stands for a
//! heavy computation, or a library call with no async form): while it works, nothing else
//! runs, and `print_time`'s report comes N ms late. `--fixed` runs the same work with
//! `spawn_blocking`, on a thread of the pool, and `await`s it: `print_nums` still waits for
//! its work, but the loop does not, and the report is on time.
//!
//! ```python
//! print(num)
//! time.sleep(n)                                      # --block-ms: the loop stops
//! await loop.run_in_executor(None, time.sleep, n)    # --fixed: only this coroutine waits
//! ```

use std::io::{self, Write};
use std::thread;
use std::time::{Duration, Instant};

use fdio::Trace;

use crate::blocking::spawn_blocking;
use crate::combinators::{Either, race};
use crate::executor::{block_on, spawn};
use crate::time::{Interval, interval, sleep};

/// The blocking work `print_nums` does after each number (`--block-ms`).
#[derive(Debug, Clone, Copy)]
pub struct Work {
    /// How long the work keeps its thread busy.
    pub blocks_for: Duration,
    /// Run it on the blocking pool (`--fixed`) rather than on the loop's own thread.
    pub on_pool: bool,
}

impl Work {
    async fn run(self) -> io::Result<()> {
        let blocks_for = self.blocks_for;
        if self.on_pool {
            // This coroutine waits for the pool's thread; the loop runs the others meanwhile.
            spawn_blocking(move || thread::sleep(blocks_for))
                .await
                .map_err(io::Error::other)
        } else {
            // No `.await`: the loop's only thread sleeps, and every other task with it.
            thread::sleep(blocks_for);
            Ok(())
        }
    }
}

/// Prints 0, 1, 2 … one per tick, doing `work` after each. Ends only if stdout fails (say,
/// `| head` closed it).
async fn print_nums(mut ticks: Interval, work: Option<Work>) -> io::Result<()> {
    for num in 0.. {
        ticks.tick().await;
        writeln!(io::stdout(), "{num}")?;
        if let Some(work) = work {
            work.run().await?;
        }
    }
    Ok(())
}

/// Prints `N seconds passed.` every third tick.
async fn print_time(mut ticks: Interval) -> io::Result<()> {
    for count in 0.. {
        ticks.tick().await;
        if count % 3 == 0 {
            writeln!(io::stdout(), "{count} seconds passed.")?;
        }
    }
    Ok(())
}

/// Runs both for `for_secs` "seconds" of `tick` each (or until Ctrl+C), `print_nums` doing
/// `work` after each number.
pub fn run(for_secs: Option<u32>, tick: Duration, work: Option<Work>) -> io::Result<()> {
    // Every deadline is `Instant::now()` plus a span, and an `Instant` that far out cannot
    // be represented (adding panics): refuse such a run in one line before it starts.
    let last_deadline = tick.checked_mul(for_secs.unwrap_or(0).saturating_add(1));
    if last_deadline
        .and_then(|span| Instant::now().checked_add(span))
        .is_none()
    {
        let secs = for_secs.map_or(String::new(), |secs| format!(" --for-secs {secs}"));
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "--tick-ms {}{secs} ends too far in the future to schedule: choose smaller numbers",
                tick.as_millis()
            ),
        ));
    }
    block_on(Trace::new(false), async {
        // Both intervals start now, so their ticks fall due together. Started inside the
        // tasks, `print_time`'s would start only after `print_nums` had first run: late by
        // a whole `--block-ms`, for ever.
        let mut nums = spawn(print_nums(interval(tick), work));
        let mut time = spawn(print_time(interval(tick)));
        let end = async {
            match for_secs {
                // Stop half a tick before the next second, so its prints never race the end.
                Some(secs) => sleep((tick * secs).saturating_sub(tick / 2)).await,
                None => std::future::pending().await,
            }
        };
        let ended = race(end, race(&mut nums, &mut time)).await;
        nums.abort();
        time.abort();
        match ended {
            Either::Left(()) => Ok(()),
            Either::Right(Either::Left(printer) | Either::Right(printer)) => {
                match printer.map_err(io::Error::other)? {
                    // The reader went away (`| head`): a normal way for a printer to end.
                    Err(err) if fdio::reader_went_away(&err) => Ok(()),
                    other => other,
                }
            }
        }
    })?
}
