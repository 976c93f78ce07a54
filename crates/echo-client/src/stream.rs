//! Streaming clients: what the tests and the benchmark use to check that an echo server
//! neither hangs, nor loses a byte, nor lets one client starve the others.
//!
//! Three loads, each bounded in bytes and in time, each checking every byte it gets back:
//! - [`bulk_stream`]: one connection sends a long stream and reads its echo at the same time.
//!   A server that forgets a readiness edge stops echoing halfway: that is a hang, reported
//!   as [`StreamError::Stalled`] once no byte came back for the plan's patience.
//! - [`pipelined_client`](crate::pipelined_client): a small receive buffer, everything
//!   sent first, then read back.
//! - [`flood_beside_quiet_client`](crate::flood_beside_quiet_client): one connection
//!   floods, another pings, each ping timed.
//!
//! What is sent is a [`Pattern`]: deterministic pseudo-random bytes covering all 256 values,
//! repeating with a prime period, so a chunk the server dropped, repeated or swapped lands on
//! different bytes and is caught, whatever read and write sizes the server uses.
//!
//! The bulk stream (and the flood) write from one thread and read from another, as a real
//! streaming client does, so the server always has bytes to read and room to write: the
//! client never gives it a pause it did not take itself.

use std::fmt;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use fdio::interrupted;

use crate::thousands;

/// Bytes in one period of the pattern: a prime, so no buffer size a server or the kernel
/// uses divides it (1,048,573 = 2²⁰ − 3).
const PATTERN_PERIOD: usize = 1_048_573;

/// How much one `read` of the bulk stream takes.
const READ_CHUNK: usize = 256 * 1024;

/// How much one `write` of the bulk stream offers (the kernel takes what fits).
const BULK_WRITE: usize = 256 * 1024;

/// How often a reader waiting for bytes looks up: is the writer done, is it a hang yet?
const READ_TICK: Duration = Duration::from_millis(10);

/// What went wrong with a streaming client: a hang, a wrong or missing byte, or an I/O error.
#[derive(Debug)]
pub enum StreamError {
    /// Nothing came back for `waited` while bytes were owed: the server stopped echoing.
    Stalled {
        /// Which connection: `bulk stream`, `flood`, `pipelined client`.
        on: &'static str,
        /// Bytes sent so far.
        sent: u64,
        /// Bytes that came back (and were checked) before the stall.
        received: u64,
        /// How long nothing came back.
        waited: Duration,
    },
    /// The server stopped taking bytes for `waited`: a client that sends and does not read
    /// yet (the pipelined client) could not send any more.
    SendStalled {
        /// Which connection.
        on: &'static str,
        /// Bytes the server took before it stopped.
        sent: u64,
        /// How long the last write waited.
        waited: Duration,
    },
    /// A ping got no echo within `waited`: the quiet client was starved (or the server hung).
    PingUnanswered {
        /// Which ping, counting from 1.
        ping: usize,
        /// How long it waited.
        waited: Duration,
    },
    /// A byte came back different from the byte sent at that place in the stream.
    WrongByte {
        /// Which connection.
        on: &'static str,
        /// The byte's position in the stream, from 0.
        offset: u64,
        /// What came back.
        got: u8,
        /// What was sent there.
        expected: u8,
    },
    /// The server closed the connection before echoing everything it was sent.
    Closed {
        /// Which connection.
        on: &'static str,
        /// Bytes sent.
        sent: u64,
        /// Bytes that came back before the close.
        received: u64,
    },
    /// Any other I/O error (refused, reset, …), with what was being done.
    Io(io::Error),
}

impl StreamError {
    /// Whether the server hung: it stopped echoing, taking bytes, or answering a ping.
    pub fn is_hang(&self) -> bool {
        matches!(
            self,
            StreamError::Stalled { .. }
                | StreamError::SendStalled { .. }
                | StreamError::PingUnanswered { .. }
        )
    }

    /// Whether bytes came back wrong, or too few before the server closed.
    pub fn is_lost_or_wrong_byte(&self) -> bool {
        matches!(
            self,
            StreamError::WrongByte { .. } | StreamError::Closed { .. }
        )
    }
}

impl fmt::Display for StreamError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StreamError::Stalled {
                on,
                sent,
                received,
                waited,
            } => write!(
                f,
                "{on}: hang: no byte came back for {waited:.1?}; {} of the {} bytes sent \
                 were echoed",
                thousands(*received),
                thousands(*sent)
            ),
            StreamError::SendStalled { on, sent, waited } => write!(
                f,
                "{on}: hang: the server took no byte for {waited:.1?} after {} bytes",
                thousands(*sent)
            ),
            StreamError::PingUnanswered { ping, waited } => {
                write!(
                    f,
                    "quiet client: hang: ping {ping} got no echo in {waited:.1?}"
                )
            }
            StreamError::WrongByte {
                on,
                offset,
                got,
                expected,
            } => write!(
                f,
                "{on}: wrong echo: byte {} is {got:#04x}, sent {expected:#04x}",
                thousands(*offset)
            ),
            StreamError::Closed { on, sent, received } => write!(
                f,
                "{on}: the server closed the connection after echoing {} of {} bytes",
                thousands(*received),
                thousands(*sent)
            ),
            StreamError::Io(err) => err.fmt(f),
        }
    }
}

impl std::error::Error for StreamError {}

impl From<io::Error> for StreamError {
    fn from(err: io::Error) -> StreamError {
        StreamError::Io(err)
    }
}

impl From<StreamError> for io::Error {
    fn from(err: StreamError) -> io::Error {
        match err {
            StreamError::Io(err) => err,
            StreamError::Stalled { .. }
            | StreamError::SendStalled { .. }
            | StreamError::PingUnanswered { .. } => {
                io::Error::new(io::ErrorKind::TimedOut, err.to_string())
            }
            other => io::Error::other(other.to_string()),
        }
    }
}

/// The bytes a streaming client sends: byte `offset` of the stream is always the same, so the
/// echo can be checked without keeping what was sent.
pub struct Pattern {
    /// Two periods back to back, so any `PATTERN_PERIOD` bytes from any offset are one slice.
    twice: Vec<u8>,
}

impl Pattern {
    /// The pattern for `seed`: each seed gives different bytes (a server mixing up two
    /// clients is caught).
    pub fn new(seed: u64) -> Pattern {
        let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        let period: Vec<u8> = (0..PATTERN_PERIOD)
            .map(|_| {
                // xorshift64*: the top byte of the product is well mixed.
                state ^= state >> 12;
                state ^= state << 25;
                state ^= state >> 27;
                state.wrapping_mul(0x2545_F491_4F6C_DD1D).to_be_bytes()[0]
            })
            .collect();
        Pattern {
            twice: [period.as_slice(), period.as_slice()].concat(),
        }
    }

    /// Up to `max_len` bytes of the stream from `offset` (fewer past one period).
    pub fn at(&self, offset: u64, max_len: usize) -> &[u8] {
        let start = (offset % PATTERN_PERIOD as u64) as usize;
        &self.twice[start..start + max_len.min(PATTERN_PERIOD)]
    }

    /// Checks that `echoed` is the stream's bytes from `offset` on; `on` names the connection
    /// in the error.
    pub fn check(&self, on: &'static str, offset: u64, echoed: &[u8]) -> Result<(), StreamError> {
        let mut checked = 0;
        while checked < echoed.len() {
            let got = &echoed[checked..];
            let expected = self.at(offset + checked as u64, got.len());
            let got = &got[..expected.len()];
            if got != expected {
                let at = got.iter().zip(expected).position(|(a, b)| a != b);
                let at = at.unwrap_or(0);
                return Err(StreamError::WrongByte {
                    on,
                    offset: offset + (checked + at) as u64,
                    got: got[at],
                    expected: expected[at],
                });
            }
            checked += got.len();
        }
        Ok(())
    }
}

/// What [`bulk_stream`] does.
#[derive(Debug, Clone, Copy)]
pub struct BulkPlan {
    /// Bytes to send; every one must come back.
    pub bytes: u64,
    /// Stop sending after this long even if not every byte is sent yet (a slow server); the
    /// echo of what was sent is still awaited and checked.
    pub time_limit: Duration,
    /// This long without a byte coming back, while bytes are owed, is a hang.
    pub patience: Duration,
}

/// What [`bulk_stream`] saw.
#[derive(Debug, Clone, Copy)]
pub struct BulkReport {
    /// Bytes sent, echoed and checked.
    pub bytes: u64,
    /// From the first byte sent to the last byte of the echo checked.
    pub elapsed: Duration,
}

impl BulkReport {
    /// Echoed megabytes (10⁶ bytes) per second.
    pub fn megabytes_per_sec(&self) -> f64 {
        self.bytes as f64 / 1e6 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// One connection sends `plan.bytes` of the [`Pattern`] from a second thread while this one
/// reads the echo, and checks every byte. Fails with [`StreamError::Stalled`] if nothing
/// comes back for `plan.patience` while bytes are owed, and with the first wrong byte if one
/// is wrong.
pub fn bulk_stream(addr: SocketAddr, plan: &BulkPlan) -> Result<BulkReport, StreamError> {
    let on = "bulk stream";
    let stream = connect_stream(on, addr, plan.patience)?;
    let pattern = Pattern::new(1); // made before the clock starts: it takes a while
    let started = Instant::now();
    let sending = Sending {
        bytes: plan.bytes,
        stop_sending: StopSending::At(started + plan.time_limit),
        write_size: BULK_WRITE,
        patience: plan.patience,
    };
    let bytes = send_and_check(on, &stream, &pattern, &sending)?;
    Ok(BulkReport {
        bytes,
        elapsed: started.elapsed(),
    })
}

/// Connects (at most `patience`); `on` names the connection in the error.
pub(crate) fn connect_stream(
    on: &'static str,
    addr: SocketAddr,
    patience: Duration,
) -> Result<TcpStream, StreamError> {
    let stream = TcpStream::connect_timeout(&addr, patience)
        .map_err(|err| io::Error::new(err.kind(), format!("{on}: connect to {addr}: {err}")))?;
    Ok(stream)
}

/// What the writing side of [`send_and_check`] does.
pub(crate) struct Sending<'a> {
    /// Bytes to send at most.
    pub(crate) bytes: u64,
    /// When no more writes start, except the first: something is always sent.
    pub(crate) stop_sending: StopSending<'a>,
    /// Bytes offered per `write`.
    pub(crate) write_size: usize,
    /// How long without progress, either way, is a hang.
    pub(crate) patience: Duration,
}

/// When the writing side of [`send_and_check`] stops starting writes.
pub(crate) enum StopSending<'a> {
    /// At this instant: a stream that lasts a given time.
    At(Instant),
    /// Once this is set, by whoever decides that the load is over (the flood ends when the
    /// quiet client has had its pings, however long they took).
    When(&'a AtomicBool),
}

impl StopSending<'_> {
    fn now(&self) -> bool {
        match self {
            StopSending::At(at) => Instant::now() >= *at,
            StopSending::When(flag) => flag.load(Ordering::Acquire),
        }
    }
}

/// Writes the pattern on `stream` from a second thread while this one reads the echo and
/// checks it; returns once every byte written is back and checked, with how many there were.
///
/// Two threads, as a real streaming client has: the writer blocks in `write` while the server
/// is not reading, the reader in `read` while it is not echoing, and each goes on the moment
/// its side can. So the server always has bytes to read and room to write to: it is never
/// the client that sets the pace, and never the client that gives a server a pause.
pub(crate) fn send_and_check(
    on: &'static str,
    stream: &TcpStream,
    pattern: &Pattern,
    sending: &Sending,
) -> Result<u64, StreamError> {
    // The reader wakes up every tick while nothing arrives, to see whether the writer is done
    // and how long nothing has come; the writer's timeout is the patience itself.
    stream.set_read_timeout(Some(READ_TICK))?;
    stream.set_write_timeout(Some(sending.patience))?;
    let writer = Writer {
        sent: AtomicU64::new(0),
        done: AtomicBool::new(false),
    };
    thread::scope(|scope| {
        let writing = scope.spawn(|| writer.write_pattern(on, stream, pattern, sending));
        let read = read_and_check(on, stream, pattern, &writer, sending.patience);
        if read.is_err() {
            // Wakes the writer if it is blocked: the run is over.
            let _ = stream.shutdown(Shutdown::Both);
        }
        let written = writing
            .join()
            .unwrap_or_else(|_| Err(io::Error::other("the writer thread panicked").into()));
        // A stall or a wrong byte seen by the reader says more than the writer's error.
        let received = read?;
        written.map(|()| received)
    })
}

/// The writing side's progress, shared with the reader.
struct Writer {
    /// Bytes written so far.
    sent: AtomicU64,
    /// Set once no more bytes will be written; `sent` is final then.
    done: AtomicBool,
}

impl Writer {
    /// Writes the pattern until `sending.bytes` are sent or `sending.stop_sending` says stop
    /// (after at least one write, however late this thread started).
    fn write_pattern(
        &self,
        on: &'static str,
        mut stream: &TcpStream,
        pattern: &Pattern,
        sending: &Sending,
    ) -> Result<(), StreamError> {
        let mut written = 0;
        let result = loop {
            if written >= sending.bytes || (written > 0 && sending.stop_sending.now()) {
                break Ok(());
            }
            let left = usize::try_from(sending.bytes - written).unwrap_or(usize::MAX);
            let chunk = pattern.at(written, left.min(sending.write_size));
            match stream.write(chunk) {
                Ok(0) => break Err(io::Error::from(io::ErrorKind::WriteZero).into()),
                Ok(n) => {
                    written += n as u64;
                    self.sent.store(written, Ordering::Release);
                }
                Err(err) if interrupted(&err) => continue,
                Err(err) if timed_out(&err) => {
                    break Err(StreamError::SendStalled {
                        on,
                        sent: written,
                        waited: sending.patience,
                    });
                }
                Err(err) => break Err(io_context(on, err, written)),
            }
        };
        self.done.store(true, Ordering::Release);
        result
    }
}

/// Reads the echo and checks every byte until the writer is done and all it wrote is back.
fn read_and_check(
    on: &'static str,
    mut stream: &TcpStream,
    pattern: &Pattern,
    writer: &Writer,
    patience: Duration,
) -> Result<u64, StreamError> {
    let mut buf = vec![0; READ_CHUNK];
    let mut received = 0;
    let mut last_progress = Instant::now();
    loop {
        // `done` first: once it is set, `sent` is final.
        let done = writer.done.load(Ordering::Acquire);
        let sent = writer.sent.load(Ordering::Acquire);
        if done && received >= sent {
            return Ok(received);
        }
        // Once the writer is done, never read past its last byte.
        let owed = usize::try_from(sent.saturating_sub(received)).unwrap_or(usize::MAX);
        let want = if done { owed.min(buf.len()) } else { buf.len() };
        match stream.read(&mut buf[..want]) {
            Ok(0) => return Err(StreamError::Closed { on, sent, received }),
            Ok(n) => {
                pattern.check(on, received, &buf[..n])?;
                received += n as u64;
                last_progress = Instant::now();
            }
            Err(err) if interrupted(&err) => {}
            Err(err) if timed_out(&err) => {
                let waited = last_progress.elapsed();
                if waited >= patience {
                    return Err(StreamError::Stalled {
                        on,
                        sent,
                        received,
                        waited,
                    });
                }
            }
            Err(err) => return Err(io_context(on, err, sent)),
        }
    }
}

/// A blocking read or write with a timeout reports the timeout as `WouldBlock` on Unix.
pub(crate) fn timed_out(err: &io::Error) -> bool {
    matches!(
        err.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

/// Names the connection and how far it got in an I/O error (a reset, say).
fn io_context(on: &'static str, err: io::Error, sent: u64) -> StreamError {
    let message = format!("{on}: {err} after {} bytes sent", thousands(sent));
    StreamError::Io(io::Error::new(err.kind(), message))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::net::TcpListener;
    use std::thread;

    /// How an echo server in this test process misbehaves, if at all.
    #[derive(Clone, Copy)]
    pub(crate) enum Fault {
        None,
        /// Flips the byte at this offset of the stream.
        CorruptAt(usize),
        /// Stops echoing (reads and drops everything) after this many bytes.
        StopAfter(usize),
    }

    /// A thread-per-connection echo server in this test process; its threads end when the
    /// clients close.
    pub(crate) fn echo_server(fault: Fault) -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { return };
                thread::spawn(move || echo(&mut stream, fault));
            }
        });
        addr
    }

    fn echo(stream: &mut TcpStream, fault: Fault) {
        let mut buf = [0; 16 * 1024];
        let mut offset = 0;
        while let Ok(n @ 1..) = stream.read(&mut buf) {
            let mut echo = &mut buf[..n];
            match fault {
                Fault::CorruptAt(at) if (offset..offset + n).contains(&at) => {
                    echo[at - offset] ^= 0xff
                }
                Fault::StopAfter(limit) => echo = &mut echo[..limit.saturating_sub(offset).min(n)],
                _ => {}
            }
            offset += n;
            if stream.write_all(echo).is_err() {
                return;
            }
        }
    }

    fn plan(bytes: u64) -> BulkPlan {
        BulkPlan {
            bytes,
            time_limit: Duration::from_secs(20),
            patience: Duration::from_secs(2),
        }
    }

    /// The pattern covers every byte value and repeats with its prime period.
    #[test]
    fn the_pattern_has_every_byte_and_a_prime_period() {
        let pattern = Pattern::new(1);
        let mut seen = [false; 256];
        for &byte in pattern.at(0, PATTERN_PERIOD) {
            seen[usize::from(byte)] = true;
        }
        assert!(seen.iter().all(|&seen| seen));
        assert_eq!(
            pattern.at(PATTERN_PERIOD as u64 + 5, 100),
            pattern.at(5, 100)
        );
        assert_ne!(Pattern::new(2).at(0, 100), pattern.at(0, 100));
        assert!((2..1024).all(|divisor| !PATTERN_PERIOD.is_multiple_of(divisor)));
    }

    /// A healthy server: every byte of a stream longer than the pattern comes back.
    #[test]
    fn bulk_stream_checks_every_byte() {
        let addr = echo_server(Fault::None);
        let bytes = 3 * PATTERN_PERIOD as u64 + 12_345;
        let report = bulk_stream(addr, &plan(bytes)).unwrap();
        assert_eq!(report.bytes, bytes);
        assert!(report.megabytes_per_sec() > 0.0);
    }

    /// One flipped byte far into the stream fails the run, naming it.
    #[test]
    fn bulk_stream_names_a_wrong_byte() {
        let addr = echo_server(Fault::CorruptAt(2_000_000));
        let err = bulk_stream(addr, &plan(4_000_000)).unwrap_err();
        assert!(err.is_lost_or_wrong_byte(), "{err}");
        assert!(
            err.to_string().contains("wrong echo: byte 2,000,000"),
            "{err}"
        );
    }

    /// A server that stops echoing is a hang after the patience, not a hung test, and the
    /// error says how far the echo got.
    #[test]
    fn bulk_stream_reports_a_hang() {
        let addr = echo_server(Fault::StopAfter(1_000_000));
        let plan = BulkPlan {
            patience: Duration::from_millis(500),
            ..plan(8_000_000)
        };
        let err = bulk_stream(addr, &plan).unwrap_err();
        assert!(err.is_hang(), "{err}");
        assert!(err.to_string().contains("1,000,000 of the"), "{err}");
    }

    /// A slow server ends the sending at the time limit; what was sent is still checked.
    #[test]
    fn bulk_stream_stops_sending_at_the_time_limit() {
        let addr = echo_server(Fault::None);
        let plan = BulkPlan {
            time_limit: Duration::from_millis(100),
            ..plan(u64::MAX)
        };
        let report = bulk_stream(addr, &plan).unwrap();
        assert!(report.bytes > 0);
        assert!(report.elapsed < Duration::from_secs(5), "{report:?}");
    }
}
