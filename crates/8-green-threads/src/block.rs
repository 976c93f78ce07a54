//! `green-threads block`: what parking buys, shown with a clock.
//!
//! A ticker green thread prints a line every 200 ms. A reader green thread reads a pipe that
//! an OS thread writes to 500 ms later. First the reader calls `read(2)` itself (std's
//! blocking `PipeReader::read`): the kernel blocks the OS thread, and with it every green
//! thread — the scheduler cannot run while its thread is stuck, and the ticker goes silent
//! for the whole 500 ms. Then the reader uses the runtime's read: `WouldBlock` parks it on
//! epoll, the scheduler runs the ticker meanwhile, and the ticker never misses a beat.
//!
//! The first half is every green-thread runtime's weak spot: one call it does not know about
//! (a blocking library, a `std::fs` read of a slow disk, a mutex held across a park) stalls
//! every green thread on the OS thread. gevent's answer is monkey-patching the standard
//! library; Go's is a runtime that sees every system call and hands its OS thread's other
//! goroutines to a fresh thread when one blocks.

use std::cell::{Cell, RefCell};
use std::io::{self, Read, Write};
use std::rc::Rc;
use std::thread;
use std::time::{Duration, Instant};

use crate::io::PipeReader;
use crate::runtime::{sleep_until, yield_now};
use crate::spawn::{panic_message, spawn_named};

/// How often the ticker ticks.
const TICK: Duration = Duration::from_millis(200);

/// When the OS thread writes into the pipe, after the start.
const WRITE_AT: Duration = Duration::from_millis(500);

/// How the reader reads the pipe.
#[derive(Clone, Copy, PartialEq, Eq)]
enum How {
    /// std's blocking read: `read(2)` waits in the kernel, holding the OS thread.
    Blocking,
    /// The runtime's read: on `WouldBlock`, park on epoll.
    Parking,
}

/// Runs both halves; prints what happened, and how long the ticker went silent.
pub fn run() -> io::Result<()> {
    match both_halves() {
        // The reader went away (`block | head -3`): a normal way to end.
        Err(err) if fdio::reader_went_away(&err) => Ok(()),
        other => other,
    }
}

/// Each line is written with `writeln!(…)?`: `println!` would panic if stdout failed.
fn both_halves() -> io::Result<()> {
    let mut out = io::stdout();
    writeln!(
        out,
        "1. the reader calls read(2) itself: the OS thread blocks, and every green thread with it"
    )?;
    let silence = race(How::Blocking)?;
    writeln!(
        out,
        "   the ticker was silent for {silence:.0?}: frozen while the reader waited"
    )?;
    writeln!(
        out,
        "2. the reader calls the runtime's read: WouldBlock parks it on epoll, the others run"
    )?;
    let silence = race(How::Parking)?;
    writeln!(
        out,
        "   the ticker was silent for {silence:.0?} at most: it kept its beat"
    )
}

/// One half: the ticker and the reader side by side; the ticker's longest silence.
fn race(how: How) -> io::Result<Duration> {
    let start = Instant::now();
    let say = move |line: &str| -> io::Result<()> {
        let at = start.elapsed().as_secs_f64();
        writeln!(io::stdout(), "   {at:.2}s {line}")
    };
    let (pipe, mut writer) = io::pipe()?;
    let writer = thread::spawn(move || {
        thread::sleep(WRITE_AT);
        writer.write_all(b"ping")
    });

    let reader_done = Rc::new(Cell::new(false));
    let ticks = Rc::new(RefCell::new(Vec::new()));
    let ticker = spawn_named("ticker", {
        let (reader_done, ticks) = (Rc::clone(&reader_done), Rc::clone(&ticks));
        move || -> io::Result<()> {
            for beat in 1.. {
                say("ticker: tick")?;
                ticks.borrow_mut().push(Instant::now());
                if reader_done.get() {
                    break;
                }
                sleep_until(start + TICK * beat);
            }
            Ok(())
        }
    })?;
    yield_now(); // the ticker ticks first

    // The reader is this green thread.
    let mut got = [0; 16];
    let n = match how {
        How::Blocking => {
            say("reader: read(2) on an empty pipe; a thread writes \"ping\" into it at 0.50s")?;
            let mut pipe = pipe;
            pipe.read(&mut got)?
        }
        How::Parking => {
            say("reader: read on an empty pipe; a thread writes \"ping\" into it at 0.50s")?;
            PipeReader::new(pipe)?.read(&mut got)?
        }
    };
    say(&format!(
        "reader: got {:?}",
        String::from_utf8_lossy(&got[..n])
    ))?;
    reader_done.set(true);
    ticker
        .join()
        .map_err(|panic| io::Error::other(panic_message(&*panic).to_string()))??;
    writer
        .join()
        .map_err(|_| io::Error::other("the pipe's writer panicked"))??;
    let ticks = ticks.borrow();
    let longest = ticks
        .windows(2)
        .map(|pair| pair[1] - pair[0])
        .max()
        .unwrap_or_default();
    Ok(longest)
}
