//! The writer program's background thread: it plays "some other source of data" by writing
//! `External message from pipe N` into a pipe every interval, then closing its end.

use std::io::{self, PipeWriter, Write};
use std::sync::mpsc::{self, RecvTimeoutError, Sender};
use std::thread::{self, JoinHandle};
use std::time::Duration;

/// The text of pipe message `n` (counted from 1), with its newline.
pub fn message(n: u32) -> String {
    format!("External message from pipe {n}\n")
}

/// A running ticker thread. The pipe's write end belongs to the thread: the reader sees EOF
/// once the thread has written `count` messages or has been told to stop.
pub struct Ticker {
    stop: Sender<()>,
    thread: JoinHandle<io::Result<u32>>,
}

impl Ticker {
    /// Starts the thread: it waits `interval`, writes message 1, waits, writes message 2, …
    pub fn start(mut pipe: PipeWriter, interval: Duration, count: u32) -> Ticker {
        let (stop, stop_requested) = mpsc::channel::<()>();
        let thread = thread::spawn(move || {
            for n in 1..=count {
                // Sleeping on the channel rather than with `thread::sleep` lets `request_stop`
                // cut the wait short.
                match stop_requested.recv_timeout(interval) {
                    Err(RecvTimeoutError::Timeout) => pipe.write_all(message(n).as_bytes())?,
                    Ok(()) | Err(RecvTimeoutError::Disconnected) => return Ok(n - 1),
                }
            }
            Ok(count)
            // `pipe` is dropped here: its write end closes and the reader sees EOF.
        });
        Ticker { stop, thread }
    }

    /// Asks the thread to stop after the message it may be writing now. It does not wait:
    /// the caller keeps reading the pipe until EOF, so nothing already written is lost, and a
    /// writer blocked on a full pipe is never left waiting for a reader that stopped reading.
    pub fn request_stop(&self) {
        // An error only means the thread has already finished.
        let _ = self.stop.send(());
    }

    /// Waits for the thread and returns how many messages it wrote.
    pub fn join(self) -> io::Result<u32> {
        self.thread
            .join()
            .map_err(|_| io::Error::other("the ticker thread panicked"))?
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    /// The ticker writes exactly `count` numbered messages, then closes the pipe (EOF).
    #[test]
    fn writes_count_messages_then_closes() {
        let (mut reader, writer) = io::pipe().unwrap();
        let ticker = Ticker::start(writer, Duration::from_millis(1), 3);
        let mut text = String::new();
        reader.read_to_string(&mut text).unwrap();
        assert_eq!(text, [message(1), message(2), message(3)].concat());
        assert_eq!(ticker.join().unwrap(), 3);
    }

    /// A stop request ends a long wait at once and closes the pipe.
    #[test]
    fn stop_request_closes_the_pipe_early() {
        let (mut reader, writer) = io::pipe().unwrap();
        let ticker = Ticker::start(writer, Duration::from_secs(3600), 5);
        ticker.request_stop();
        let mut text = String::new();
        reader.read_to_string(&mut text).unwrap();
        assert_eq!(text, "");
        assert_eq!(ticker.join().unwrap(), 0);
    }
}
