//! Signals (Ctrl+C is SIGINT) delivered safely to a task.
//!
//! A signal handler interrupts the thread wherever it is — maybe halfway through a `malloc`
//! or with a `RefCell` borrowed — so it may do almost nothing: only async-signal-safe calls.
//! The classic way out, the self-pipe trick (asyncio does it with `set_wakeup_fd`): the
//! handler writes the signal's number into a pipe, and the loop watches the pipe's read end
//! like any other fd. The task reading the pipe then does whatever it likes. The
//! handler and the pipe are `fdio::signal_pipe`, shared by lessons 5 to 7; what is this
//! lesson's is how the pipe is read, and handed from one receiver to the next, so that
//! `ctrl_c()` can be awaited again for the next Ctrl+C.

use std::io::{self, PipeReader, Read};
use std::sync::{Mutex, PoisonError};

use nix::sys::signal::Signal;

use crate::io::AsyncReader;

/// The pipe's read end while no receiver holds it. fdio makes the pipe once per process;
/// each receiver takes it here, and puts it back when dropped, for the next one.
static IDLE_PIPE: Mutex<Option<PipeReader>> = Mutex::new(None);

/// Receives the given signals as an async stream. One at a time in the process (they would
/// take each other's bytes); drop it, and the next one can be made.
///
/// Like tokio's, a receiver gets the signals that come after it was made. The handler, once
/// installed, stays for the whole process: a signal that comes while no receiver exists, or
/// one this receiver did not ask for, no longer ends the process — it is dropped.
pub struct Signals {
    /// Always `Some` but in `drop`, which gives it back.
    pipe: Option<AsyncReader>,
    wanted: Vec<Signal>,
}

impl Signals {
    /// Installs the handler for `signals` and returns the receiver.
    pub fn new(signals: &[Signal]) -> io::Result<Signals> {
        let idle = IDLE_PIPE
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        let reader = match idle {
            Some(reader) => {
                fdio::catch_signals(signals)?;
                reader
            }
            // The first receiver makes the pipe; while one exists, fdio refuses another.
            None => fdio::signal_pipe(signals)?,
        };
        fdio::set_nonblocking(&reader)?;
        drop_pending(&reader)?; // signals that came while nobody listened
        Ok(Signals {
            pipe: Some(AsyncReader::pipe(reader)?),
            wanted: signals.to_vec(),
        })
    }

    /// Waits for the next signal.
    pub async fn recv(&mut self) -> io::Result<Signal> {
        let pipe = self.pipe.as_mut().expect("only `drop` takes the pipe");
        loop {
            let mut byte = [0; 1];
            let signal = match pipe.read(&mut byte).await? {
                0 => return Err(io::ErrorKind::UnexpectedEof.into()),
                _ => fdio::signal_of(byte[0])?,
            };
            if self.wanted.contains(&signal) {
                return Ok(signal);
            }
        }
    }
}

impl Drop for Signals {
    fn drop(&mut self) {
        if let Some(pipe) = self.pipe.take().and_then(AsyncReader::into_pipe) {
            *IDLE_PIPE.lock().unwrap_or_else(PoisonError::into_inner) = Some(pipe);
        }
    }
}

/// Reads and drops what the (non-blocking) pipe holds now.
fn drop_pending(mut reader: &PipeReader) -> io::Result<()> {
    let mut bytes = [0; 64];
    loop {
        match reader.read(&mut bytes) {
            Ok(0) => return Ok(()), // never: the write end stays open
            Ok(_) => {}
            Err(err) if err.kind() == io::ErrorKind::WouldBlock => return Ok(()),
            Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
            Err(err) => return Err(err),
        }
    }
}

/// Waits for the next Ctrl+C (SIGINT): `loop.add_signal_handler(signal.SIGINT, …)`, or
/// tokio's `signal::ctrl_c()`. Await it again for the one after. It ends on a SIGINT that
/// comes after it starts, not on one that came before.
pub async fn ctrl_c() -> io::Result<()> {
    Signals::new(&[Signal::SIGINT])?.recv().await.map(drop)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use fdio::Trace;
    use nix::sys::signal::{Signal, raise};

    use super::ctrl_c;
    use crate::combinators::yield_now;
    use crate::executor::{block_on, spawn};
    use crate::time::timeout;

    /// `ctrl_c()` can be awaited again and again, each time for the next Ctrl+C: three rounds
    /// of SIGINT to this process each end one call. (The second call failed, "signals are
    /// already being received", and every SIGINT after the first was swallowed unseen: the
    /// handler stayed, its pipe's read end was gone.) A SIGINT that came while no call was
    /// waiting does not end the next one: it waits for a Ctrl+C after it began.
    ///
    /// The only test of this crate that sends a signal: the handler is the whole process's.
    #[test]
    fn ctrl_c_fires_at_every_ctrl_c_after_it_is_called() {
        let result = block_on(Trace::new(false), async {
            for round in 0..3 {
                if round > 0 {
                    // Nobody waits for this one (the handler is in place since round 0): the
                    // next call must not take it.
                    raise(Signal::SIGINT).expect("raise SIGINT");
                }
                let waiting = spawn(ctrl_c());
                yield_now().await; // it starts: it reads the pipe, and waits
                if waiting.is_finished() {
                    let early = waiting.await.expect("the task");
                    panic!("round {round}: ended before its Ctrl+C: {early:?}");
                }
                raise(Signal::SIGINT).expect("raise SIGINT");
                let ended = timeout(Duration::from_secs(10), waiting).await;
                let received = ended.expect("no SIGINT within 10 s").expect("the task");
                received.unwrap_or_else(|err| panic!("round {round}: {err}"));
            }
        });
        result.expect("the runtime");
    }
}
