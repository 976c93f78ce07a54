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

use std::io::{self, Write};
use std::time::{Duration, Instant};

use fdio::Trace;

use crate::executor::{Either, block_on, race, spawn};
use crate::time::{interval, sleep};

/// Prints 0, 1, 2 … one per tick. Ends only if stdout fails (say, `| head` closed it).
async fn print_nums(tick: Duration) -> io::Result<()> {
    let mut ticks = interval(tick);
    for num in 0.. {
        ticks.tick().await;
        writeln!(io::stdout(), "{num}")?;
    }
    Ok(())
}

/// Prints `N seconds passed.` every third tick.
async fn print_time(tick: Duration) -> io::Result<()> {
    let mut ticks = interval(tick);
    for count in 0.. {
        ticks.tick().await;
        if count % 3 == 0 {
            writeln!(io::stdout(), "{count} seconds passed.")?;
        }
    }
    Ok(())
}

/// Runs both for `for_secs` "seconds" of `tick` each (or until Ctrl+C).
pub fn run(for_secs: Option<u32>, tick: Duration) -> io::Result<()> {
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
        let mut nums = spawn(print_nums(tick));
        let mut time = spawn(print_time(tick));
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
                    Err(err) if err.kind() == io::ErrorKind::BrokenPipe => Ok(()),
                    other => other,
                }
            }
        }
    })?
}
