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
use std::time::Duration;

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
