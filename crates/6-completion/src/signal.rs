//! Signals (Ctrl+C is SIGINT) delivered safely to a task.
//!
//! A signal handler interrupts the thread wherever it is — maybe halfway through a `malloc`
//! or with a `RefCell` borrowed — so it may do almost nothing: only async-signal-safe calls.
//! The classic way out, the self-pipe trick (asyncio does it with `set_wakeup_fd`): the
//! handler writes the signal's number into a pipe, and the loop watches the pipe's read end
//! like any other fd. Here "watches"
//! means: a read of the pipe is in flight in the ring, and the handler's byte completes it. The task reading the pipe then does whatever it likes. The
//! handler and the pipe are `fdio::signal_pipe`, shared by lessons 5 to 7; what is this
//! lesson's is how the pipe is read.

use std::io;

use nix::sys::signal::Signal;

use crate::io::Reader;

/// Receives the given signals as an async stream. Create one per process.
pub struct Signals {
    pipe: Reader,
}

impl Signals {
    /// Installs the handler for `signals` and returns the receiver.
    pub fn new(signals: &[Signal]) -> io::Result<Signals> {
        let reader = fdio::signal_pipe(signals)?;
        Ok(Signals {
            pipe: Reader::new(reader.into(), 1),
        })
    }

    /// Waits for the next signal. The read of the pipe stays in flight in `self` if this
    /// future is dropped (the echo server races it against `accept`): no signal is lost.
    pub async fn recv(&mut self) -> io::Result<Signal> {
        match self.pipe.read().await?.first() {
            None => Err(io::ErrorKind::UnexpectedEof.into()),
            Some(&byte) => fdio::signal_of(byte),
        }
    }
}
