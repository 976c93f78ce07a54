//! `async-await tasks`: a guided tour of the runtime, each step printed as it happens.

use std::cell::Cell;
use std::io::{self, Write};
use std::panic;
use std::rc::Rc;
use std::time::Duration;

use fdio::Trace;

use crate::blocking::resolve;
use crate::combinators::yield_now;
use crate::executor::{block_on, spawn};
use crate::sync::{Mutex, Semaphore};
use crate::task::panic_message;
use crate::time::{sleep, timeout};

/// Prints "dropped" when dropped: shows that `abort` really drops a task's future.
struct DropNotice(&'static str);

impl Drop for DropNotice {
    fn drop(&mut self) {
        // A destructor cannot return the error; if stdout is gone, the tour's next line
        // finds out and ends the tour.
        let _ = writeln!(io::stdout(), "   … {} was dropped", self.0);
    }
}

/// Runs the tour.
pub fn run() -> io::Result<()> {
    // Step 2 panics on purpose. Rust's own report takes three lines, and with
    // RUST_BACKTRACE=1 a backtrace too; the tour's panics take one line, everywhere.
    panic::set_hook(Box::new(|panic| {
        let message = panic_message(panic.payload());
        match panic.location() {
            Some(place) => fdio::log!("   panicked in {}: {message}", place.file()),
            None => fdio::log!("   panicked: {message}"),
        }
    }));
    match block_on(Trace::new(false), tour())? {
        // The reader went away (`tasks | head -3`): a normal way for the tour to end. Only
        // stdout fails so here; the tour's other errors are a task's and getaddrinfo's.
        Err(err) if fdio::reader_went_away(&err) => Ok(()),
        other => other,
    }
}

/// Each step writes with `writeln!(out, …)?` rather than `println!`, which panics when
/// stdout fails (a closed pipe, a full disk): the error ends the tour instead.
async fn tour() -> io::Result<()> {
    let mut out = io::stdout();
    writeln!(
        out,
        "1. spawn a task and await its result (asyncio.create_task, await task)"
    )?;
    let answer = spawn(async {
        sleep(Duration::from_millis(50)).await;
        6 * 7
    });
    writeln!(
        out,
        "   is_finished() right after spawn: {}",
        answer.is_finished()
    )?;
    writeln!(out, "   awaited: {:?}", answer.await)?;

    writeln!(
        out,
        "2. a task that panics: the panic becomes its result; the runtime goes on"
    )?;
    writeln!(
        out,
        "   (the panic hook prints it on stderr, where it happened)"
    )?;
    let failing = spawn(async {
        yield_now().await;
        panic!("something went wrong in a task");
    });
    writeln!(out, "   awaited: {:?}", failing.await)?;

    writeln!(out, "3. abort a task sleeping for an hour (task.cancel())")?;
    let sleeper = spawn(async {
        let _notice = DropNotice("the sleeping task's future");
        sleep(Duration::from_secs(3600)).await;
    });
    yield_now().await; // let it start sleeping
    sleeper.abort();
    writeln!(
        out,
        "   is_finished() after abort: {}",
        sleeper.is_finished()
    )?;
    writeln!(out, "   awaited: {:?}", sleeper.await)?;

    writeln!(
        out,
        "4. timeout: give a 1-hour sleep 100 ms (asyncio.wait_for)"
    )?;
    let timed_out = timeout(Duration::from_millis(100), async {
        let _notice = DropNotice("the timed-out future");
        sleep(Duration::from_secs(3600)).await;
    })
    .await;
    writeln!(out, "   result: {timed_out:?}")?;

    writeln!(
        out,
        "5. a semaphore of 3 permits and 10 tasks: at most 3 run at once (async with sem)"
    )?;
    let semaphore = Rc::new(Semaphore::new(3));
    let (running, most) = (Rc::new(Cell::new(0)), Rc::new(Cell::new(0)));
    let workers: Vec<_> = (0..10)
        .map(|_| {
            let (semaphore, running, most) =
                (Rc::clone(&semaphore), Rc::clone(&running), Rc::clone(&most));
            spawn(async move {
                let _permit = semaphore.acquire().await;
                running.set(running.get() + 1);
                most.set(most.get().max(running.get()));
                sleep(Duration::from_millis(20)).await;
                running.set(running.get() - 1);
            })
        })
        .collect();
    for worker in workers {
        worker.await.map_err(io::Error::other)?;
    }
    writeln!(
        out,
        "   10 tasks done; at most {} held a permit at the same time",
        most.get()
    )?;

    writeln!(
        out,
        "6. a mutex shared by 5 tasks, each adding 1 with an await inside the lock (async with lock)"
    )?;
    let counter = Rc::new(Mutex::new(0));
    let adders: Vec<_> = (0..5)
        .map(|_| {
            let counter = Rc::clone(&counter);
            spawn(async move {
                let mut value = counter.lock().await;
                let seen = *value;
                yield_now().await; // others run now, but cannot get in
                *value = seen + 1;
            })
        })
        .collect();
    for adder in adders {
        adder.await.map_err(io::Error::other)?;
    }
    writeln!(
        out,
        "   counter = {} (no update lost)",
        *counter.lock().await
    )?;

    writeln!(
        out,
        "7. resolve(\"localhost\", 80) on the blocking pool: getaddrinfo blocks, the loop does not"
    )?;
    let addresses = resolve("localhost", 80).await?;
    writeln!(out, "   {addresses:?}")?;
    writeln!(out, "tour done")?;
    Ok(())
}
