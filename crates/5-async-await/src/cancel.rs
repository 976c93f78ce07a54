//! Cancellation, and what it can cost: `async-await cancel`.
//!
//! **In Rust, a future is cancelled by dropping it.** It stops at the `.await` where it last
//! returned `Pending` and never runs again: its locals are dropped (their `Drop` runs, there
//! and then) and that is all. There is no async clean-up, no `.await` after cancellation.
//! `race`, `timeout` and `JoinHandle::abort` all cancel this way.
//!
//! **asyncio cancels by throwing.** `task.cancel()` raises `CancelledError` inside the
//! coroutine at the `await` it is paused in — lesson 4's `throw`, and `close` is the same
//! with `GeneratorExit`. The coroutine runs on: it may catch the exception, clean up in a
//! `finally` (awaiting, even), and re-raise. A dropped Rust future gets no such turn.
//!
//! So a future is *cancel-safe* when dropping it at any `.await` loses nothing. What it has
//! done but not yet returned is lost if it lives in the future's own locals. Here, two line
//! readers are raced against a timer (the reader gives up waiting, then reads again):
//!
//! ```text
//! ForgetfulLines::read_line: the partial line is a local → dropped with the future: lost
//! BufferedLines::read_line:  the partial line is in the reader struct → kept for the next call
//! ```
//!
//! asyncio's `StreamReader.readline` is the second kind: its buffer is in the reader. tokio's
//! docs say of each method whether it is cancel-safe: `read_line` is not, for the first
//! reason; `Lines::next_line`, which keeps the partial line in the `Lines` struct, is.

use std::io::{self, PipeWriter, Write};
use std::thread;
use std::time::Duration;

use fdio::Trace;

use crate::combinators::{Either, race};
use crate::executor::block_on;
use crate::io::AsyncReader;
use crate::time::sleep;

/// The first part of the demonstration's line, sent at once.
const FIRST_PART: &str = "first half, ";
/// The rest, sent `GAP` later.
const SECOND_PART: &str = "second half\n";
const GAP: Duration = Duration::from_millis(300);
/// How long the reader waits for a line before it gives up on that read.
const PATIENCE: Duration = Duration::from_millis(200);

/// A reader of lines: the two kinds below.
pub(crate) trait ReadLine {
    /// The next line, `\n` included; the last bytes before EOF even without one; `None` at EOF.
    async fn read_line(&mut self) -> io::Result<Option<String>>;
}

/// Lines read with the partial line in each `read_line`'s future: **not cancel-safe**.
pub struct ForgetfulLines {
    reader: AsyncReader,
}

impl ForgetfulLines {
    /// Reads lines from `reader`.
    pub fn new(reader: AsyncReader) -> ForgetfulLines {
        ForgetfulLines { reader }
    }
}

impl ReadLine for ForgetfulLines {
    async fn read_line(&mut self) -> io::Result<Option<String>> {
        // The bytes of the line so far live here, in this call's future: if the future is
        // dropped at the `.await` below, they are dropped with it.
        let mut line = Vec::new();
        // One byte per read, so as never to read past the line's end: there would be
        // nowhere to keep the rest.
        let mut byte = [0];
        loop {
            if self.reader.read(&mut byte).await? == 0 {
                return Ok((!line.is_empty()).then(|| text(line)));
            }
            line.push(byte[0]);
            if byte[0] == b'\n' {
                return Ok(Some(text(line)));
            }
        }
    }
}

/// Lines read with the partial line kept in the reader, across calls: **cancel-safe**.
pub struct BufferedLines {
    reader: AsyncReader,
    /// Bytes read but not yet returned: a partial line, or more than one line.
    unread: Vec<u8>,
}

impl BufferedLines {
    /// Reads lines from `reader`.
    pub fn new(reader: AsyncReader) -> BufferedLines {
        BufferedLines {
            reader,
            unread: Vec::new(),
        }
    }
}

impl ReadLine for BufferedLines {
    async fn read_line(&mut self) -> io::Result<Option<String>> {
        let mut chunk = [0; 4096];
        loop {
            if let Some(end) = self.unread.iter().position(|&b| b == b'\n') {
                return Ok(Some(text(self.unread.drain(..=end).collect())));
            }
            // Dropped here, this future loses nothing: every byte earlier reads brought is
            // in `self.unread`, and a read dropped while `Pending` has read nothing.
            let read = self.reader.read(&mut chunk).await?;
            if read == 0 {
                let rest = std::mem::take(&mut self.unread);
                return Ok((!rest.is_empty()).then(|| text(rest)));
            }
            self.unread.extend_from_slice(&chunk[..read]);
        }
    }
}

fn text(bytes: Vec<u8>) -> String {
    String::from_utf8_lossy(&bytes).into_owned()
}

/// Runs the demonstration with each reader in turn and prints what each got.
pub fn run() -> io::Result<()> {
    match show() {
        // The reader went away (`cancel | head -3`): a normal way to end, as in `clock`.
        Err(err) if fdio::reader_went_away(&err) => Ok(()),
        other => other,
    }
}

fn show() -> io::Result<()> {
    let mut out = io::stdout();
    writeln!(
        out,
        "A line is sent in two parts, {GAP:?} apart: {FIRST_PART:?}, then {SECOND_PART:?}."
    )?;
    writeln!(
        out,
        "The reader races each read against a {PATIENCE:?} timer; the loser is dropped."
    )?;
    writeln!(
        out,
        "1. the partial line kept in the read's future (not cancel-safe)"
    )?;
    let got = block_on(Trace::new(false), async {
        read_all(ForgetfulLines::new(send_in_two_parts()?), &mut out).await
    })??;
    report(&got, &mut out)?;
    writeln!(out, "2. the partial line kept in the reader (cancel-safe)")?;
    let got = block_on(Trace::new(false), async {
        read_all(BufferedLines::new(send_in_two_parts()?), &mut out).await
    })??;
    report(&got, &mut out)
}

/// A pipe into which a thread writes `FIRST_PART`, then `SECOND_PART` after `GAP`, then
/// closes it.
fn send_in_two_parts() -> io::Result<AsyncReader> {
    let (reader, mut writer) = io::pipe()?;
    thread::Builder::new()
        .name("sender".into())
        .spawn(move || send(&mut writer))?;
    AsyncReader::pipe(reader)
}

fn send(writer: &mut PipeWriter) -> io::Result<()> {
    writer.write_all(FIRST_PART.as_bytes())?;
    thread::sleep(GAP);
    writer.write_all(SECOND_PART.as_bytes())
}

/// Reads lines until EOF; a read that takes longer than `PATIENCE` is given up (dropped) and
/// a new one started. Returns everything it got.
async fn read_all(mut lines: impl ReadLine, out: &mut impl Write) -> io::Result<String> {
    let mut got = String::new();
    loop {
        match race(lines.read_line(), sleep(PATIENCE)).await {
            Either::Left(line) => match line? {
                Some(line) => {
                    writeln!(out, "   got {line:?}")?;
                    got.push_str(&line);
                }
                None => return Ok(got),
            },
            Either::Right(()) => writeln!(
                out,
                "   no line after {PATIENCE:?}: the read is dropped, another one started"
            )?,
        }
    }
}

/// Says what, of the line sent, never arrived.
fn report(got: &str, out: &mut impl Write) -> io::Result<()> {
    let sent = format!("{FIRST_PART}{SECOND_PART}");
    match sent.strip_suffix(got) {
        Some("") => writeln!(out, "   nothing lost"),
        Some(lost) => writeln!(out, "   {lost:?} was lost with the dropped read"),
        None => writeln!(out, "   sent {sent:?}, got {got:?}"),
    }
}
