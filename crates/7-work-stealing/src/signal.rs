//! Signals (Ctrl+C is SIGINT) delivered safely to a task.
//!
//! A signal handler interrupts the thread wherever it is — maybe halfway through a `malloc`
//! or with a `RefCell` borrowed — so it may do almost nothing: only async-signal-safe calls.
//! The classic way out, the self-pipe trick (asyncio does it with `set_wakeup_fd`): the
//! handler writes the signal's number into a pipe, and the loop watches the pipe's read end
//! like any other fd. The task reading the pipe then does whatever it likes.

use std::io;
use std::os::fd::{IntoRawFd, OwnedFd};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicI32, Ordering};

use nix::errno::Errno;
use nix::libc;
use nix::sys::signal::{SaFlags, SigAction, SigHandler, SigSet, Signal, sigaction};

use crate::io::AsyncReader;

/// The write end of the self-pipe, for the handler (−1 until installed).
static SIGNAL_PIPE: AtomicI32 = AtomicI32::new(-1);

/// The read end, taken by the one `Signals` of the process.
static PIPE_READER: OnceLock<std::sync::Mutex<Option<std::io::PipeReader>>> = OnceLock::new();

extern "C" fn on_signal(signal: libc::c_int) {
    // Only async-signal-safe work here: one write(2), with errno saved and restored so the
    // interrupted code never sees it change.
    let saved = Errno::last_raw();
    let fd = SIGNAL_PIPE.load(Ordering::Relaxed);
    if fd >= 0 {
        let byte = signal as u8;
        // Safety: `fd` is the pipe's write end, open for the rest of the process; the buffer
        // is one valid byte. If the pipe is full, the signal is dropped: others are queued.
        unsafe { libc::write(fd, (&raw const byte).cast(), 1) };
    }
    Errno::set_raw(saved);
}

/// Receives the given signals as an async stream. Create one per process.
pub struct Signals {
    pipe: AsyncReader,
}

impl Signals {
    /// Installs the handler for `signals` and returns the receiver.
    pub fn new(signals: &[Signal]) -> io::Result<Signals> {
        let slot = PIPE_READER.get_or_init(|| std::sync::Mutex::new(create_pipe().ok()));
        let reader = slot
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take()
            .ok_or_else(|| {
                io::Error::other("signals are already being received (or the self-pipe failed)")
            })?;
        let action = SigAction::new(
            SigHandler::Handler(on_signal),
            SaFlags::SA_RESTART,
            SigSet::empty(),
        );
        for &signal in signals {
            // Safety: the handler only calls async-signal-safe functions (see `on_signal`).
            unsafe { sigaction(signal, &action) }?;
        }
        Ok(Signals {
            pipe: AsyncReader::pipe(reader)?,
        })
    }

    /// Waits for the next signal.
    pub async fn recv(&mut self) -> io::Result<Signal> {
        let mut byte = [0; 1];
        match self.pipe.read(&mut byte).await? {
            0 => Err(io::ErrorKind::UnexpectedEof.into()),
            _ => Signal::try_from(i32::from(byte[0])).map_err(io::Error::from),
        }
    }
}

/// Creates the self-pipe and publishes its (non-blocking) write end to the handler.
fn create_pipe() -> io::Result<std::io::PipeReader> {
    let (reader, writer) = std::io::pipe()?;
    let writer = OwnedFd::from(writer);
    // Non-blocking: a handler must never block on a full pipe.
    fdio::set_nonblocking(&writer)?;
    // The write end must stay open as long as a handler may run — for the whole process — so
    // its ownership is given up here.
    SIGNAL_PIPE.store(writer.into_raw_fd(), Ordering::Relaxed);
    Ok(reader)
}

/// Waits for Ctrl+C (SIGINT): `loop.add_signal_handler(signal.SIGINT, …)`.
pub async fn ctrl_c() -> io::Result<()> {
    Signals::new(&[Signal::SIGINT])?.recv().await.map(drop)
}
