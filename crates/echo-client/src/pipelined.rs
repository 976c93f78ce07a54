//! The pipelined client: a small receive buffer, every byte sent first, only then read.
//!
//! A client that pipelines (sends its requests before reading any answer) with a small receive
//! buffer fills its own socket at once. The server then has echo bytes it cannot write, and
//! must stop, wait for writability, and come back to reading later without losing a readiness
//! edge on the way. A server that forgets the edge stops echoing with bytes left unread in
//! its socket: the client gets part of its echo and then nothing, which this reports as
//! [`StreamError::Stalled`] with how many bytes came back.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::thread;
use std::time::{Duration, Instant};

use fdio::interrupted;

use crate::stream::{Pattern, StreamError, timed_out};

/// Names this connection in errors.
const ON: &str = "pipelined client";

/// What [`pipelined_client`] does. The default is the client of issue 9: 8 KiB receive
/// buffer, 4,000,000 bytes in 4000-byte writes 0.5 ms apart, 10 s patience.
#[derive(Debug, Clone, Copy)]
pub struct PipelinedPlan {
    /// The client's receive buffer (`SO_RCVBUF`), set before connecting so the window the
    /// client advertises is small from the start.
    pub receive_buffer: usize,
    /// Bytes sent in all, before any is read.
    pub bytes: usize,
    /// Bytes per write.
    pub write_size: usize,
    /// The pause between two writes.
    pub pause: Duration,
    /// How long one write or read may wait before it is a hang.
    pub patience: Duration,
}

impl Default for PipelinedPlan {
    fn default() -> PipelinedPlan {
        PipelinedPlan {
            receive_buffer: 8 * 1024,
            bytes: 4_000_000,
            write_size: 4000,
            pause: Duration::from_micros(500),
            patience: Duration::from_secs(10),
        }
    }
}

/// What [`pipelined_client`] saw.
#[derive(Debug, Clone, Copy)]
pub struct PipelinedReport {
    /// Bytes sent, echoed and checked.
    pub bytes: u64,
    /// From connecting to the last byte checked.
    pub elapsed: Duration,
}

/// Connects with a small receive buffer, sends `plan.bytes` of the [`Pattern`] in small
/// writes with pauses between them, and only then reads the echo, checking every byte.
/// A read or write that waits longer than `plan.patience` ends the run with a
/// [`StreamError::Stalled`] or [`StreamError::SendStalled`] that says how far it got.
pub fn pipelined_client(
    addr: SocketAddr,
    plan: &PipelinedPlan,
) -> Result<PipelinedReport, StreamError> {
    let started = Instant::now();
    let mut stream = crate::connect_with_receive_buffer(addr, plan.receive_buffer, plan.patience)
        .map_err(|err| io::Error::new(err.kind(), format!("{ON}: {err}")))?;
    let pattern = Pattern::new(3);

    let mut sent = 0;
    while sent < plan.bytes {
        let piece = pattern.at(sent as u64, plan.write_size.min(plan.bytes - sent));
        sent += write_or_stall(&mut stream, piece, sent, plan.patience)?;
        thread::sleep(plan.pause);
    }

    let mut received = 0;
    let mut buf = vec![0; 64 * 1024];
    while received < sent {
        let want = buf.len().min(sent - received);
        let n = match stream.read(&mut buf[..want]) {
            Ok(0) => {
                return Err(StreamError::Closed {
                    on: ON,
                    sent: sent as u64,
                    received: received as u64,
                });
            }
            Ok(n) => n,
            Err(err) if interrupted(&err) => continue,
            Err(err) if timed_out(&err) => {
                return Err(StreamError::Stalled {
                    on: ON,
                    sent: sent as u64,
                    received: received as u64,
                    waited: plan.patience,
                });
            }
            Err(err) => return Err(err.into()),
        };
        pattern.check(ON, received as u64, &buf[..n])?;
        received += n;
    }
    Ok(PipelinedReport {
        bytes: received as u64,
        elapsed: started.elapsed(),
    })
}

/// Writes all of `piece`, counting each byte the kernel takes; `sent_before` is for the error.
fn write_or_stall(
    stream: &mut TcpStream,
    piece: &[u8],
    sent_before: usize,
    patience: Duration,
) -> Result<usize, StreamError> {
    let mut written = 0;
    while written < piece.len() {
        match stream.write(&piece[written..]) {
            Ok(0) => return Err(io::Error::from(io::ErrorKind::WriteZero).into()),
            Ok(n) => written += n,
            Err(err) if interrupted(&err) => continue,
            Err(err) if timed_out(&err) => {
                return Err(StreamError::SendStalled {
                    on: ON,
                    sent: (sent_before + written) as u64,
                    waited: patience,
                });
            }
            Err(err) => return Err(err.into()),
        }
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stream::tests::{Fault, echo_server};

    /// Against a healthy server every byte comes back.
    #[test]
    fn every_byte_comes_back() {
        let addr = echo_server(Fault::None);
        let plan = PipelinedPlan {
            bytes: 400_000,
            ..PipelinedPlan::default()
        };
        let report = pipelined_client(addr, &plan).unwrap();
        assert_eq!(report.bytes, 400_000);
    }

    /// A server that stops echoing: the error says how many bytes came back.
    #[test]
    fn a_stall_says_how_many_bytes_came_back() {
        let addr = echo_server(Fault::StopAfter(100_000));
        let plan = PipelinedPlan {
            bytes: 400_000,
            patience: Duration::from_millis(500),
            ..PipelinedPlan::default()
        };
        let err = pipelined_client(addr, &plan).unwrap_err();
        assert!(err.is_hang(), "{err}");
        assert!(
            err.to_string().contains("100,000 of the 400,000 bytes"),
            "{err}"
        );
    }
}
