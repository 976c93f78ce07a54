//! The local echo client, for people without `nc`, for the tests and for the benchmark.
//!
//! # Layout
//! - [`interactive`]: `client [--addr A]`, like `nc`: stdin to the server, the server to stdout.
//! - [`timed`]: `client --clients N --every-ms M --for-secs S`: N clients at once, each
//!   timing every answer, so you *see* whether a server serves everyone or one at a time.
//! - [`load`]: the benchmark's load generator: ping-pong on many connections from one mio
//!   thread, idle connections beside them, every byte verified, latency and its own CPU measured.
//! - [`latency`]: the latency histogram [`load`] records into.
//! - [`stream`], [`pipelined`], [`flood`]: the streaming clients of the conformance tests and
//!   the benchmark — a bulk stream read while it is sent, a pipelined client with a small
//!   receive buffer, a flood beside a quiet client that times its pings. Each checks every
//!   byte and turns a hang into an error after a patience.
//! - this file: small blocking helpers the tests and the benchmark share.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::{AsRawFd, OwnedFd};
use std::thread;
use std::time::Duration;

use nix::sys::socket::{
    AddressFamily, SockFlag, SockType, SockaddrStorage, connect as connect_fd, setsockopt, socket,
    sockopt,
};

pub mod flood;
pub mod interactive;
pub mod latency;
pub mod load;
pub mod pipelined;
pub mod stream;
pub mod timed;

pub use flood::{FloodPlan, FloodReport, flood_beside_quiet_client};
pub use interactive::run_interactive;
pub use latency::LatencyHistogram;
pub use load::{Load, LoadShape, Window};
pub use pipelined::{PipelinedPlan, PipelinedReport, pipelined_client};
pub use stream::{BulkPlan, BulkReport, StreamError, bulk_stream};
pub use timed::{TimedPlan, run_timed};

/// Connects to `addr` with `timeout` on the connect and on every later read and write, so a
/// server that stops answering makes a call fail instead of hanging.
pub fn connect(addr: SocketAddr, timeout: Duration) -> io::Result<TcpStream> {
    let stream = TcpStream::connect_timeout(&addr, timeout)?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// A blocking connection whose receive buffer (`SO_RCVBUF`) is set before the handshake (afterwards the
/// window it advertised would already be the default one), with `patience` as the timeout of
/// the connect and of every read and write.
pub fn connect_with_receive_buffer(
    addr: SocketAddr,
    receive_buffer: usize,
    patience: Duration,
) -> io::Result<TcpStream> {
    let family = match addr {
        SocketAddr::V4(_) => AddressFamily::Inet,
        SocketAddr::V6(_) => AddressFamily::Inet6,
    };
    let socket: OwnedFd = socket(family, SockType::Stream, SockFlag::SOCK_CLOEXEC, None)?;
    setsockopt(&socket, sockopt::RcvBuf, &receive_buffer)?;
    let stream = TcpStream::from(socket);
    // On Linux a blocking connect gives up after the send timeout: the connect is bounded too.
    stream.set_write_timeout(Some(patience))?;
    stream.set_read_timeout(Some(patience))?;
    connect_fd(stream.as_raw_fd(), &SockaddrStorage::from(addr)).map_err(|errno| {
        let err = io::Error::from(errno);
        io::Error::new(err.kind(), format!("connect to {addr}: {err}"))
    })?;
    Ok(stream)
}

/// Sends `payload` in writes of at most `chunk` bytes from a second thread while this one
/// reads, and returns the first `payload.len()` bytes that came back. Writing and reading at
/// once matters: an echo server stops reading from a client that does not read its echo.
pub fn exchange(stream: &TcpStream, payload: &[u8], chunk: usize) -> io::Result<Vec<u8>> {
    thread::scope(|scope| {
        let sender = scope.spawn(|| -> io::Result<()> {
            let mut writer = stream;
            for piece in payload.chunks(chunk.max(1)) {
                writer.write_all(piece)?;
            }
            Ok(())
        });
        let mut received = vec![0; payload.len()];
        let read = (&mut &*stream).read_exact(&mut received);
        let sent = sender
            .join()
            .unwrap_or_else(|_| Err(io::Error::other("sender thread panicked")));
        read.and(sent).map(|()| received)
    })
}

/// A count with thousands separators: `1,048,576`.
pub fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, digit) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(digit);
    }
    out
}

/// A duration the way a person reads it: `0.21 ms`, `12.3 ms`, `5.00 s`.
pub fn human(duration: Duration) -> String {
    let secs = duration.as_secs_f64();
    if secs >= 1.0 {
        format!("{secs:.2} s")
    } else if secs >= 0.01 {
        format!("{:.1} ms", secs * 1e3)
    } else {
        format!("{:.2} ms", secs * 1e3)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Durations print in the unit a person would pick.
    #[test]
    fn human_durations() {
        assert_eq!(human(Duration::from_micros(210)), "0.21 ms");
        assert_eq!(human(Duration::from_micros(12_340)), "12.3 ms");
        assert_eq!(human(Duration::from_millis(5_004)), "5.00 s");
    }
}
