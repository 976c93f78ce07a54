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

use std::cell::Cell;
use std::hint::black_box;
use std::io::{self, Write};
use std::rc::Rc;

use crate::runtime::yield_now;
use crate::spawn::{panic_message, spawn_named};
use crate::stack::{STACK_SIZE, page_size};
use crate::sync::Notify;

/// How deep each green thread recurses in the second step: 64 frames of at least 1 KiB.
const FRAMES: usize = 64;

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
    let depth = Rc::new(Cell::new(0));
    let mut green_threads = Vec::with_capacity(count);
    for n in 0..count {
        let (gate, depth) = (Rc::clone(&gate), Rc::clone(&depth));
        green_threads.push(spawn_named(format!("parked {n}"), move || {
            gate.wait();
            let here = 0u8;
            let top = black_box(&here) as *const u8 as usize;
            depth.set(top.saturating_sub(dig(FRAMES)));
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
    yield_now(); // each recurses, comes back, and parks at the gate again
    let deep = resident()?.saturating_sub(before);
    writeln!(
        out,
        "each went {} deep once, then parked again: {} per green thread: touched pages stay",
        kib(depth.get() as u64),
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

/// Recurses `frames` deep with a 1 KiB array in each frame; returns the address of the
/// deepest frame.
pub(crate) fn dig(frames: usize) -> usize {
    let frame = black_box([1u8; 1024]);
    let here = black_box(&frame) as *const [u8; 1024] as usize;
    if frames <= 1 {
        return here;
    }
    let deepest = dig(frames - 1);
    // Using the frame after the call keeps it alive: not a tail call.
    black_box(&frame);
    deepest
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
    let recurse = spawn_named("recurse", || dig(usize::MAX))?;
    recurse
        .join()
        .map_err(|panic| io::Error::other(panic_message(&*panic).to_string()))?;
    Err(io::Error::other("the recursion ended: it should not have"))
}
