//! Signals (Ctrl+C is SIGINT) for a green thread: a blocking read of the self-pipe.
//!
//! The handler and the pipe are `fdio::signal_pipe`, shared with lessons 5 to 7: the handler
//! writes the signal's number into a pipe, since a handler may do almost nothing else. What
//! is this lesson's is how the pipe is read: by a green thread that calls `recv`, which looks
//! like a blocking read and parks only that green thread until a signal comes.

use std::io::{self, Read};

use nix::sys::signal::Signal;

use crate::io::PipeReader;

/// The given signals, received one by one. Create one per process.
pub struct Signals {
    pipe: PipeReader,
}

impl Signals {
    /// Installs the handler for `signals` (from here on, they no longer end the process).
    pub fn new(signals: &[Signal]) -> io::Result<Signals> {
        Ok(Signals {
            pipe: PipeReader::new(fdio::signal_pipe(signals)?)?,
        })
    }

    /// Parks this green thread until the next signal.
    pub fn recv(&mut self) -> io::Result<Signal> {
        let mut byte = [0; 1];
        match self.pipe.read(&mut byte)? {
            0 => Err(io::ErrorKind::UnexpectedEof.into()),
            _ => fdio::signal_of(byte[0]),
        }
    }
}
