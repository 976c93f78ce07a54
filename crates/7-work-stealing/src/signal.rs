//! Signals (Ctrl+C is SIGINT) delivered safely to a task.
//!
//! A signal handler interrupts the thread wherever it is — maybe halfway through a `malloc`
//! or with a `RefCell` borrowed — so it may do almost nothing: only async-signal-safe calls.
//! The classic way out, the self-pipe trick (asyncio does it with `set_wakeup_fd`): the
//! handler writes the signal's number into a pipe, and the loop watches the pipe's read end
//! like any other fd. The task reading the pipe then does whatever it likes. The
//! handler and the pipe are `fdio::signal_pipe`, shared by lessons 5 to 7; what is this
//! lesson's is how the pipe is read.

use std::io;

use nix::sys::signal::Signal;

use crate::io::AsyncReader;

/// Receives the given signals as an async stream. Create one per process.
pub struct Signals {
    pipe: AsyncReader,
}

impl Signals {
    /// Installs the handler for `signals` and returns the receiver.
    pub fn new(signals: &[Signal]) -> io::Result<Signals> {
        let reader = fdio::signal_pipe(signals)?;
        Ok(Signals {
            pipe: AsyncReader::pipe(reader)?,
        })
    }

    /// Waits for the next signal.
    pub async fn recv(&mut self) -> io::Result<Signal> {
        let mut byte = [0; 1];
        match self.pipe.read(&mut byte).await? {
            0 => Err(io::ErrorKind::UnexpectedEof.into()),
            _ => fdio::signal_of(byte[0]),
        }
    }
}

/// Waits for Ctrl+C (SIGINT): `loop.add_signal_handler(signal.SIGINT, …)`.
pub async fn ctrl_c() -> io::Result<()> {
    Signals::new(&[Signal::SIGINT])?.recv().await.map(drop)
}
