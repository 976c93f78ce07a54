//! A flood beside a quiet client: is the server fair?
//!
//! One connection, the flood, writes the [`Pattern`] in large blobs without pause and reads
//! its echo at the same time, so the server can always read more from it. A second
//! connection, the quiet client, sends `ping\n` every so often and times each echo. A loop
//! that serves a connection for as long as its reads succeed never gets back to the quiet
//! one while the flood lasts: its pings wait for seconds. A loop with a fair budget answers
//! each ping within a few milliseconds.
//!
//! ```text
//! flood:  [1 MiB][1 MiB][1 MiB][1 MiB][1 MiB] …  (echo read and checked all along)
//! quiet:  ping ·········· ping ·········· ping    (each echo timed)
//! ```

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use crate::connect;
use crate::stream::{
    Pattern, Sending, StopSending, StreamError, connect_stream, send_and_check, timed_out,
};

/// What the quiet client sends.
const PING: &[u8] = b"ping\n";

/// What [`flood_beside_quiet_client`] does. The default: 1 MiB blobs, a ping every 100 ms
/// for 2 s, 10 s patience, no minimum number of pings.
#[derive(Debug, Clone, Copy)]
pub struct FloodPlan {
    /// Bytes per write of the flood.
    pub blob: usize,
    /// How often the quiet client pings.
    pub ping_every: Duration,
    /// How long the flood and the pings last, at least.
    pub duration: Duration,
    /// How many pings the quiet client sends at least: the flood lasts until they are all
    /// answered, however long a loaded machine makes that (a count, not a window, for a
    /// caller that needs that many).
    pub min_pings: usize,
    /// How long a ping may wait for its echo, or the flood for any byte, before it is a hang.
    pub patience: Duration,
}

impl Default for FloodPlan {
    fn default() -> FloodPlan {
        FloodPlan {
            blob: 1 << 20,
            ping_every: Duration::from_millis(100),
            duration: Duration::from_secs(2),
            min_pings: 0,
            patience: Duration::from_secs(10),
        }
    }
}

/// What [`flood_beside_quiet_client`] saw.
#[derive(Debug, Clone)]
pub struct FloodReport {
    /// Each ping's round trip, in the order they were sent.
    pub pings: Vec<Duration>,
    /// Bytes the flood sent, got back and checked.
    pub flood_bytes: u64,
    /// From the flood's start to its last byte checked.
    pub elapsed: Duration,
}

impl FloodReport {
    /// The slowest ping, or `None` if none was sent.
    pub fn worst_ping(&self) -> Option<Duration> {
        self.pings.iter().copied().max()
    }

    /// The ping time that `percent` % of the pings did not exceed (nearest rank), or `None`
    /// if none was sent.
    pub fn ping_percentile(&self, percent: f64) -> Option<Duration> {
        let mut sorted = self.pings.clone();
        sorted.sort();
        let rank = (percent / 100.0 * sorted.len() as f64).ceil() as usize;
        sorted.get(rank.clamp(1, sorted.len().max(1)) - 1).copied()
    }

    /// Echoed megabytes (10⁶ bytes) per second of the flood.
    pub fn flood_megabytes_per_sec(&self) -> f64 {
        self.flood_bytes as f64 / 1e6 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// Runs the flood and the quiet client side by side for `plan.duration` (and until
/// `plan.min_pings` pings are answered) and returns every ping's round trip. The quiet client
/// connects and is answered once before the flood starts, so its first timed ping is not a
/// connect; the flood stops once the quiet client is done, so every ping is beside it. Fails
/// if a ping or the flood waits longer than `plan.patience` (a hang), or a byte comes back
/// wrong on either connection.
pub fn flood_beside_quiet_client(
    addr: SocketAddr,
    plan: &FloodPlan,
) -> Result<FloodReport, StreamError> {
    let mut quiet = Quiet {
        stream: connect(addr, plan.patience)?,
        pings_sent: 0,
    };
    quiet.ping(plan.patience)?;

    let pattern = Pattern::new(2);
    let flood = connect_stream("flood", addr, plan.patience)?;
    let started = Instant::now();
    let until = started + plan.duration;
    let quiet_is_done = AtomicBool::new(false);
    let sending = Sending {
        bytes: u64::MAX,
        stop_sending: StopSending::When(&quiet_is_done),
        write_size: plan.blob,
        patience: plan.patience,
    };
    thread::scope(|scope| {
        let flooding = scope.spawn(|| send_and_check("flood", &flood, &pattern, &sending));
        let pinged = quiet.ping_until(until, plan);
        quiet_is_done.store(true, Ordering::Release);
        let flooded = flooding
            .join()
            .unwrap_or_else(|_| Err(std::io::Error::other("the flood thread panicked").into()));
        // A starved ping is what this load is about: its error comes first.
        let pings = pinged?;
        Ok(FloodReport {
            pings,
            flood_bytes: flooded?,
            elapsed: started.elapsed(),
        })
    })
}

/// The quiet client: one blocking connection that pings and waits for each echo.
struct Quiet {
    stream: std::net::TcpStream,
    pings_sent: usize,
}

impl Quiet {
    /// Pings every `plan.ping_every` until `until`, and at least `plan.min_pings` times;
    /// returns each round trip. A ping answered late is followed by the next one at once,
    /// never by a burst to catch up.
    fn ping_until(
        &mut self,
        until: Instant,
        plan: &FloodPlan,
    ) -> Result<Vec<Duration>, StreamError> {
        let mut pings = Vec::new();
        let mut next = Instant::now() + plan.ping_every;
        while next < until || pings.len() < plan.min_pings {
            thread::sleep(next.saturating_duration_since(Instant::now()));
            pings.push(self.ping(plan.patience)?);
            next = (next + plan.ping_every).max(Instant::now());
        }
        Ok(pings)
    }

    /// Sends `ping\n`, waits for exactly that back (at most `patience`), returns how long it took.
    fn ping(&mut self, patience: Duration) -> Result<Duration, StreamError> {
        self.pings_sent += 1;
        let sent_at = Instant::now();
        self.stream.write_all(PING)?;
        let mut echoed = [0; PING.len()];
        if let Err(err) = self.stream.read_exact(&mut echoed) {
            let sent = (self.pings_sent * PING.len()) as u64;
            return Err(match err.kind() {
                _ if timed_out(&err) => StreamError::PingUnanswered {
                    ping: self.pings_sent,
                    waited: patience,
                },
                std::io::ErrorKind::UnexpectedEof => StreamError::Closed {
                    on: "quiet client",
                    sent,
                    received: sent - PING.len() as u64,
                },
                _ => err.into(),
            });
        }
        let took = sent_at.elapsed();
        if let Some(at) = echoed.iter().zip(PING).position(|(got, sent)| got != sent) {
            return Err(StreamError::WrongByte {
                on: "quiet client",
                offset: ((self.pings_sent - 1) * PING.len() + at) as u64,
                got: echoed[at],
                expected: PING[at],
            });
        }
        Ok(took)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stream::tests::{Fault, echo_server};

    /// A fair server (a thread per connection): the quiet client gets the ten pings it asked
    /// for however slow a loaded machine makes them (a count, not a window), every one is
    /// answered, the flood's bytes all come back, and the percentiles read the pings.
    #[test]
    fn pings_are_timed_beside_the_flood() {
        let addr = echo_server(Fault::None);
        let plan = FloodPlan {
            ping_every: Duration::from_millis(20),
            duration: Duration::ZERO,
            min_pings: 10,
            ..FloodPlan::default()
        };
        let report = flood_beside_quiet_client(addr, &plan).unwrap();
        assert_eq!(report.pings.len(), 10, "{report:?}");
        assert!(report.flood_bytes > 0);
        let worst = report.worst_ping().unwrap();
        assert_eq!(report.ping_percentile(100.0), Some(worst));
        assert!(report.ping_percentile(50.0).unwrap() <= worst);
    }

    /// Percentiles by nearest rank, and none without pings.
    #[test]
    fn ping_percentiles() {
        let report = FloodReport {
            pings: (1..=100).rev().map(Duration::from_millis).collect(),
            flood_bytes: 0,
            elapsed: Duration::from_secs(1),
        };
        assert_eq!(
            report.ping_percentile(99.0),
            Some(Duration::from_millis(99))
        );
        assert_eq!(
            report.ping_percentile(50.0),
            Some(Duration::from_millis(50))
        );
        assert_eq!(report.worst_ping(), Some(Duration::from_millis(100)));
        let none = FloodReport {
            pings: Vec::new(),
            ..report
        };
        assert_eq!(none.ping_percentile(99.0), None);
    }

    /// A server that stops echoing the flood is a hang of the flood, reported, not a hung test.
    #[test]
    fn a_stalled_flood_is_reported() {
        let addr = echo_server(Fault::StopAfter(3_000_000));
        let plan = FloodPlan {
            ping_every: Duration::from_millis(50),
            duration: Duration::from_millis(200),
            patience: Duration::from_millis(500),
            ..FloodPlan::default()
        };
        let err = flood_beside_quiet_client(addr, &plan).unwrap_err();
        assert!(err.is_hang(), "{err}");
        assert!(err.to_string().starts_with("flood: hang"), "{err}");
    }
}
