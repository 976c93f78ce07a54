//! `green-threads stacks` and `green-threads overflow`: what a green thread's stack costs,
//! and what happens when one runs out.
//!
//! `stacks` parks `--count` green threads and reads the process's resident memory (RSS,
//! `/proc/self/statm`) before and after: a parked green thread costs the pages its frames
//! touched, not its 256 KiB. Then each uses 64 KiB of its stack once and parks again: those
//! pages stay. When they finish, their stacks are unmapped and the memory goes back.
//!
//! `overflow` runs a green thread that recurses without end: it hits its guard page, and the
//! handler in [`crate::overflow`] names it and aborts the process.

use std::hint::black_box;
use std::io::{self, Write};
use std::rc::Rc;

use crate::runtime::{panic_message, spawn_named, yield_now};
use crate::stack::{STACK_SIZE, page_size};
use crate::sync::Notify;

/// How much stack each green thread uses in the second step.
const DEEP: usize = 64 * 1024;

/// Runs `stacks`.
pub fn run(count: usize) -> io::Result<()> {
    match measure(count) {
        Err(err) if fdio::reader_went_away(&err) => Ok(()),
        other => other,
    }
}

fn measure(count: usize) -> io::Result<()> {
    let mut out = io::stdout();
    let reserved = count * (STACK_SIZE + page_size());
    writeln!(
        out,
        "{count} green threads, each with {} KiB of stack: {} of addresses reserved",
        STACK_SIZE / 1024,
        mib(reserved as u64)
    )?;
    let before = resident()?;
    let gate = Rc::new(Notify::new());
    let mut green_threads = Vec::with_capacity(count);
    for n in 0..count {
        let gate = Rc::clone(&gate);
        green_threads.push(spawn_named(format!("parked {n}"), move || {
            gate.wait();
            use_stack(DEEP);
            gate.wait();
        })?);
    }
    yield_now(); // each runs until it parks at the gate
    let parked = resident()?.saturating_sub(before);
    writeln!(
        out,
        "parked: memory (RSS) grew by {}, {} per green thread: the pages their frames touched",
        mib(parked),
        kib(parked / count as u64)
    )?;
    gate.notify_all();
    yield_now(); // each uses 64 KiB of its stack and parks at the gate again
    let deep = resident()?.saturating_sub(before);
    writeln!(
        out,
        "each used {} KiB of its stack once, then parked again: {} per green thread",
        DEEP / 1024,
        kib(deep / count as u64)
    )?;
    gate.notify_all();
    for green in green_threads {
        green
            .join()
            .map_err(|panic| io::Error::other(panic_message(&*panic).to_string()))?;
    }
    let after = resident()?.saturating_sub(before);
    writeln!(out, "all finished, stacks unmapped: {} left", mib(after))
}

/// Touches `bytes` of stack, one 1 KiB frame at a time.
pub(crate) fn use_stack(bytes: usize) -> u8 {
    let frame = black_box([1u8; 1024]);
    if bytes <= frame.len() {
        return frame[0];
    }
    // Using the result after the call keeps it from being a tail call.
    use_stack(bytes - frame.len()).wrapping_add(frame[1023])
}

/// The process's resident memory in bytes: `/proc/self/statm`'s second field, in pages.
fn resident() -> io::Result<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm")?;
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|field| field.parse().ok())
        .ok_or_else(|| io::Error::other("unexpected /proc/self/statm"))?;
    Ok(pages * page_size() as u64)
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}

fn kib(bytes: u64) -> String {
    format!("{:.1} KiB", bytes as f64 / 1024.0)
}

/// Runs `overflow`: a green thread recurses until it hits its guard page. Never returns:
/// the handler aborts the process.
pub fn overflow() -> io::Result<()> {
    writeln!(
        io::stdout(),
        "a green thread recurses without end on its {} KiB stack…",
        STACK_SIZE / 1024
    )?;
    let recurse = spawn_named("recurse", || use_stack(usize::MAX))?;
    recurse
        .join()
        .map_err(|panic| io::Error::other(panic_message(&*panic).to_string()))?;
    Err(io::Error::other("the recursion ended: it should not have"))
}
