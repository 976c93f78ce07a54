//! The self-pipe trick, for the runtimes of lessons 5 to 7: signals (Ctrl+C is SIGINT)
//! turned into bytes on a pipe that an event loop watches like any other fd.
//!
//! A signal handler interrupts the thread wherever it is — maybe halfway through a `malloc`
//! or with a lock held — so it may do almost nothing: only async-signal-safe calls. So the
//! handler writes the signal's number into a pipe, and the loop reads the pipe's other end
//! (asyncio does the same with `set_wakeup_fd`). Each lesson reads that end its own way: a
//! readiness reactor waits until it is readable, the io_uring loop keeps a read in flight.

use std::io::{self, PipeReader};
use std::os::fd::{IntoRawFd, OwnedFd};
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::{Mutex, PoisonError};

use nix::errno::Errno;
use nix::libc;
use nix::sys::signal::{SaFlags, SigAction, SigHandler, SigSet, Signal, sigaction};

/// The write end of the self-pipe, for the handler (−1 until installed).
static SIGNAL_PIPE: AtomicI32 = AtomicI32::new(-1);

/// Whether the pipe has been made (and its read end handed out): once per process.
static MADE: Mutex<bool> = Mutex::new(false);

extern "C" fn on_signal(signal: libc::c_int) {
    // Only async-signal-safe work here: one write(2), with errno saved and restored so the
    // interrupted code never sees it change.
    let saved = Errno::last_raw();
    // Acquire, paired with the Release in `create_pipe`: see there.
    let fd = SIGNAL_PIPE.load(Ordering::Acquire);
    if fd >= 0 {
        let byte = signal as u8;
        // Safety: `fd` is the pipe's write end, open for the rest of the process; the buffer
        // is one valid byte. If the pipe is full, the signal is dropped: others are queued.
        unsafe { libc::write(fd, (&raw const byte).cast(), 1) };
    }
    Errno::set_raw(saved);
}

/// Installs the handler for `signals` and returns the pipe's read end (blocking: make it
/// non-blocking if the loop needs that). Each signal then arrives as one byte, its number
/// ([`signal_of`]). Once per process: a second call is an error.
pub fn signal_pipe(signals: &[Signal]) -> io::Result<PipeReader> {
    let mut made = MADE.lock().unwrap_or_else(PoisonError::into_inner);
    if *made {
        return Err(io::Error::other("signals are already being received"));
    }
    // Its own error if it fails — out of fds, say — so the message names the real cause.
    let reader = create_pipe()
        .map_err(|err| io::Error::new(err.kind(), format!("cannot make the signal pipe: {err}")))?;
    *made = true;
    catch_signals(signals)?;
    Ok(reader)
}

/// Installs the handler for `signals` too, after [`signal_pipe`]: their bytes come down the
/// same pipe. Installing it again for a signal it already catches changes nothing. For the
/// rest of the process, as with `signal_pipe`: the signals' default action (ending the
/// process) is never given back.
pub fn catch_signals(signals: &[Signal]) -> io::Result<()> {
    // SA_ONSTACK: on the thread's alternate signal stack if it has one (sigaltstack(2)). The
    // signal may come while lesson 8 runs a green thread near the end of its small stack;
    // without it the handler's frame would land in that stack's guard page, and the fault
    // would be reported as the green thread's overflow. Without an alternate stack the flag
    // changes nothing.
    let action = SigAction::new(
        SigHandler::Handler(on_signal),
        SaFlags::SA_RESTART | SaFlags::SA_ONSTACK,
        SigSet::empty(),
    );
    for &signal in signals {
        // Safety: the handler only calls async-signal-safe functions (see `on_signal`).
        unsafe { sigaction(signal, &action) }?;
    }
    Ok(())
}

/// The signal a byte read from the pipe stands for.
pub fn signal_of(byte: u8) -> io::Result<Signal> {
    Signal::try_from(i32::from(byte)).map_err(io::Error::from)
}

/// Creates the self-pipe and publishes its (non-blocking) write end to the handler.
fn create_pipe() -> io::Result<PipeReader> {
    let (reader, writer) = std::io::pipe()?;
    let writer = OwnedFd::from(writer);
    // Non-blocking: a handler must never block on a full pipe.
    crate::set_nonblocking(&writer)?;
    // The write end must stay open as long as a handler may run — for the whole process — so
    // its ownership is given up here.
    //
    // Release, and Acquire in the handler: a handler that finds the fd — on any thread —
    // also finds done what came before this store, the pipe made and made non-blocking, so
    // it can never block on it. Those are kernel state, and the kernel orders its own;
    // Release/Acquire makes the argument in the language's rules instead of the kernel's,
    // for nothing on x86 and little elsewhere. (A lock-free atomic is async-signal-safe.)
    SIGNAL_PIPE.store(writer.into_raw_fd(), Ordering::Release);
    Ok(reader)
}
