//! The benchmark's load generator: many connections from one thread, every byte verified.
//!
//! Each *active* connection plays ping-pong: it sends a message, waits for the whole echo,
//! checks every byte, records how long the round trip took, and sends the next one. *Idle*
//! connections are opened first, each proven served by a one-byte echo, then left silent: they
//! cost a `select` server work on every wakeup and a threaded server a thread each, which is
//! what the benchmark shows.
//!
//! The client must never be the bottleneck — on 2 cores it shares the machine with the server
//! it measures — so it is written the way the fast servers are: one thread, mio (epoll),
//! non-blocking sockets, edge-triggered, reads drained until `WouldBlock`, no allocation per
//! message. [`Window::client_cpu`] says how much CPU it took, so a reader can check that claim
//! in every run.
//!
//! ```text
//! let mut load = Load::open(addr, &shape, patience)?;  // idle connections, then active ones
//! load.run_for(warm_up)?;                             // discard: caches, accept, first reads
//! let window = load.run_for(measure)?;                // messages, latency, client CPU
//! ```

use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use fdio::{interrupted, would_block};
use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};
use nix::sys::resource::{UsageWho, getrusage};
use nix::sys::time::{TimeVal, TimeValLike};

use crate::latency::LatencyHistogram;

/// Idle connections are opened this many at a time, each batch answered before the next one:
/// 10,000 connects at once would overflow the accept queue of a server that accepts slowly
/// (one thread spawned per connection), and dropped handshakes are retried a second later.
const IDLE_BATCH: usize = 500;

/// Tokens from here on name idle connections (`FIRST_IDLE_TOKEN + index`); below, active ones.
const FIRST_IDLE_TOKEN: usize = 1 << 30;

/// The byte an idle connection sends once to prove the server serves it.
const PROBE: u8 = b'?';

/// How much one `read` takes: more than any message, so one read usually gets a whole echo.
const READ_CHUNK: usize = 64 * 1024;

/// What the load looks like.
#[derive(Debug, Clone, Copy)]
pub struct LoadShape {
    /// Connections playing ping-pong.
    pub active: usize,
    /// Connections opened, answered once, then left silent.
    pub idle: usize,
    /// Bytes per message of the active connections.
    pub message_size: usize,
}

/// What one call of [`Load::run_for`] saw.
#[derive(Debug, Default, Clone)]
pub struct Window {
    /// How long the window really lasted.
    pub elapsed: Duration,
    /// Whole echoes received and verified.
    pub messages: u64,
    /// Echoed bytes checked against what was sent (every byte that came back).
    pub bytes_verified: u64,
    /// Round trip of each message: first byte written to last byte of its echo read.
    pub latency: LatencyHistogram,
    /// CPU time (user + system) this client thread used during the window.
    pub client_cpu: Duration,
    /// Idle connections the server closed during the window.
    pub idle_lost: usize,
}

impl Window {
    /// Messages per second over the window.
    pub fn messages_per_sec(&self) -> f64 {
        self.messages as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// The client's CPU time as a share of the window: 1.0 means one core fully busy.
    pub fn client_cpu_share(&self) -> f64 {
        self.client_cpu.as_secs_f64() / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// Open connections to one server, ready to run windows of ping-pong.
pub struct Load {
    poll: Poll,
    events: Events,
    active: Vec<ActiveConnection>,
    /// Every idle connection opened; `None` once refused or closed by the server.
    idle: Vec<Option<TcpStream>>,
    /// Where echoes are read into before they are compared with what was sent.
    scratch: Vec<u8>,
}

impl Load {
    /// Opens `shape.idle` idle connections (in batches, each proven with a one-byte echo) and
    /// then `shape.active` active ones, each with its first message sent. An idle connection
    /// the server refuses is counted, not an error (see [`Load::idle_held`]): `select` cannot
    /// hold 10,000. An active one that cannot connect within `patience` is an error.
    pub fn open(addr: SocketAddr, shape: &LoadShape, patience: Duration) -> io::Result<Load> {
        let mut load = Load {
            poll: Poll::new()?,
            events: Events::with_capacity(1024),
            active: Vec::with_capacity(shape.active),
            idle: Vec::with_capacity(shape.idle),
            scratch: vec![0; READ_CHUNK],
        };
        load.open_idle(addr, shape.idle, patience)?;
        load.open_active(addr, shape, patience)?;
        Ok(load)
    }

    /// How many idle connections the server holds: answered, and not closed since.
    pub fn idle_held(&self) -> usize {
        self.idle.iter().flatten().count()
    }

    /// Plays ping-pong on every active connection for `duration` and reports what it saw.
    /// Messages in flight at the end stay in flight: the next window picks them up.
    /// A wrong byte, or a server closing an active connection, is an error.
    pub fn run_for(&mut self, duration: Duration) -> io::Result<Window> {
        self.run_for_at_least(duration, 0, Duration::ZERO)
    }

    /// [`Load::run_for`], and past `duration` until at least `messages` echoes are verified:
    /// on a loaded machine a short window may end before the first echo comes, and a window
    /// without one measures nothing. Fewer than `messages` by `patience` after `duration` is
    /// a hang, reported as an error.
    pub fn run_for_at_least(
        &mut self,
        duration: Duration,
        messages: u64,
        patience: Duration,
    ) -> io::Result<Window> {
        let mut window = Window::default();
        let cpu_before = thread_cpu_time()?;
        let started = Instant::now();
        let deadline = started + duration;
        let give_up = deadline + patience;
        loop {
            let now = Instant::now();
            if now >= deadline && window.messages >= messages {
                break;
            }
            if now >= give_up {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!(
                        "only {} of {messages} messages answered in {:.1?}: the server hangs",
                        window.messages,
                        now - started
                    ),
                ));
            }
            let until = if now < deadline { deadline } else { give_up };
            wait(&mut self.poll, &mut self.events, until - now)?;
            for event in self.events.iter() {
                let token = event.token().0;
                if let Some(index) = token.checked_sub(FIRST_IDLE_TOKEN) {
                    if lose_if_closed(&mut self.poll, &mut self.idle[index])? {
                        window.idle_lost += 1;
                    }
                    continue;
                }
                let connection = &mut self.active[token];
                connection
                    .on_ready(&mut self.scratch, &mut window)
                    .map_err(|err| context(err, &format!("active connection {token}")))?;
            }
        }
        window.elapsed = started.elapsed();
        window.client_cpu = thread_cpu_time()?.saturating_sub(cpu_before);
        Ok(window)
    }

    /// Opens `count` idle connections, `IDLE_BATCH` at a time. A batch that is not fully
    /// answered within `patience` means the server has stopped keeping up: stop opening.
    fn open_idle(&mut self, addr: SocketAddr, count: usize, patience: Duration) -> io::Result<()> {
        while self.idle.len() < count {
            let first = self.idle.len();
            let batch = (count - first).min(IDLE_BATCH);
            let mut probes = Vec::with_capacity(batch);
            for index in first..first + batch {
                let mut stream = TcpStream::connect(addr)
                    .map_err(|err| context(err, &format!("idle connection {index}")))?;
                let token = Token(FIRST_IDLE_TOKEN + index);
                self.poll.registry().register(
                    &mut stream,
                    token,
                    Interest::READABLE | Interest::WRITABLE,
                )?;
                self.idle.push(Some(stream));
                probes.push(Probe::Connecting);
            }
            if !self.wait_for_probes(first, &mut probes, patience)? {
                // Unanswered connections are dropped (closed) and counted as not held.
                for (slot, probe) in self.idle[first..].iter_mut().zip(&probes) {
                    if *probe != Probe::Held {
                        *slot = None;
                    }
                }
                return Ok(());
            }
        }
        Ok(())
    }

    /// Drives the probes of one batch (idle connections `first..`) until each is held or
    /// refused; returns false if `patience` ran out first.
    fn wait_for_probes(
        &mut self,
        first: usize,
        probes: &mut [Probe],
        patience: Duration,
    ) -> io::Result<bool> {
        let deadline = Instant::now() + patience;
        let mut unresolved = probes.len();
        while unresolved > 0 {
            let now = Instant::now();
            if now >= deadline {
                return Ok(false);
            }
            wait(&mut self.poll, &mut self.events, deadline - now)?;
            for event in self.events.iter() {
                // Only idle connections exist yet: active ones are opened after them.
                let Some(index) = event.token().0.checked_sub(FIRST_IDLE_TOKEN) else {
                    continue;
                };
                let Some(probe) = index.checked_sub(first).map(|at| &mut probes[at]) else {
                    // An idle connection from an earlier batch: the server may have closed it.
                    lose_if_closed(&mut self.poll, &mut self.idle[index])?;
                    continue;
                };
                let slot = &mut self.idle[index];
                let Some(stream) = slot.as_mut() else {
                    continue;
                };
                if probe.is_resolved() {
                    lose_if_closed(&mut self.poll, slot)?;
                    continue;
                }
                *probe = probe.advance(stream);
                if probe.is_resolved() {
                    unresolved -= 1;
                }
                if *probe == Probe::Refused {
                    self.poll.registry().deregister(stream)?;
                    *slot = None;
                }
            }
        }
        Ok(true)
    }

    /// Connects every active connection, waits until all are established, then sends each
    /// its first message. Messages start only once all are connected, so no echo can arrive
    /// (and no readable edge be consumed) while this loop is still waiting.
    fn open_active(
        &mut self,
        addr: SocketAddr,
        shape: &LoadShape,
        patience: Duration,
    ) -> io::Result<()> {
        for index in 0..shape.active {
            let mut stream = TcpStream::connect(addr)
                .map_err(|err| context(err, &format!("active connection {index}")))?;
            self.poll.registry().register(
                &mut stream,
                Token(index),
                Interest::READABLE | Interest::WRITABLE,
            )?;
            let seed = index as u64 + 1;
            self.active
                .push(ActiveConnection::new(stream, shape.message_size, seed));
        }
        let mut connected = vec![false; shape.active];
        let mut waiting = shape.active;
        let deadline = Instant::now() + patience;
        while waiting > 0 {
            let now = Instant::now();
            if now >= deadline {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!(
                        "{waiting} of {} connections to {addr} not established within {patience:?}",
                        shape.active
                    ),
                ));
            }
            wait(&mut self.poll, &mut self.events, deadline - now)?;
            for event in self.events.iter() {
                let token = event.token().0;
                if let Some(index) = token.checked_sub(FIRST_IDLE_TOKEN) {
                    lose_if_closed(&mut self.poll, &mut self.idle[index])?;
                } else if !connected[token] && is_connected(&self.active[token].stream)? {
                    connected[token] = true;
                    waiting -= 1;
                }
            }
        }
        for (index, connection) in self.active.iter_mut().enumerate() {
            connection
                .start_next_message()
                .map_err(|err| context(err, &format!("active connection {index}")))?;
        }
        Ok(())
    }
}

/// Where one idle connection's one-byte check stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Probe {
    /// The handshake has not finished yet.
    Connecting,
    /// The probe byte is written; its echo has not come back yet.
    Sent,
    /// The echo came back: the server serves this connection.
    Held,
    /// The server closed or reset the connection (`select` beyond FD_SETSIZE does).
    Refused,
}

impl Probe {
    fn is_resolved(self) -> bool {
        matches!(self, Probe::Held | Probe::Refused)
    }

    /// Moves the check forward as far as the kernel lets it now. Edge-triggered: every step
    /// is tried until it would block, or its event would never come again.
    fn advance(self, stream: &mut TcpStream) -> Probe {
        match self {
            Probe::Connecting => match is_connected(stream) {
                Ok(false) => Probe::Connecting,
                Ok(true) => match stream.write(&[PROBE]) {
                    Ok(1) => Probe::Sent.advance(stream),
                    Err(err) if would_block(&err) => Probe::Connecting,
                    _ => Probe::Refused,
                },
                Err(_) => Probe::Refused,
            },
            Probe::Sent => {
                let mut echoed = [0; 1];
                loop {
                    return match stream.read(&mut echoed) {
                        Ok(1) if echoed[0] == PROBE => Probe::Held,
                        Err(err) if would_block(&err) => Probe::Sent,
                        Err(err) if interrupted(&err) => continue,
                        _ => Probe::Refused,
                    };
                }
            }
            resolved => resolved,
        }
    }
}

/// One connection playing ping-pong. Its message is fixed random bytes (a different pattern
/// per connection, so a server mixing up two clients is caught) with a sequence number in the
/// first 8 bytes (so a stale or repeated echo is caught).
struct ActiveConnection {
    stream: TcpStream,
    message: Vec<u8>,
    sequence: u64,
    /// How much of the current message is written.
    written: usize,
    /// How much of its echo is back, and verified.
    received: usize,
    sent_at: Instant,
}

impl ActiveConnection {
    fn new(stream: TcpStream, message_size: usize, seed: u64) -> ActiveConnection {
        ActiveConnection {
            stream,
            message: pseudo_random_bytes(message_size.max(1), seed),
            sequence: 0,
            written: 0,
            received: 0,
            sent_at: Instant::now(),
        }
    }

    /// Stamps the next sequence number into the message and starts writing it.
    fn start_next_message(&mut self) -> io::Result<()> {
        self.sequence += 1;
        let stamp = self.sequence.to_le_bytes();
        let stamped = stamp.len().min(self.message.len());
        self.message[..stamped].copy_from_slice(&stamp[..stamped]);
        self.written = 0;
        self.received = 0;
        self.sent_at = Instant::now();
        self.write_rest()
    }

    /// Writes what is left of the message until done or `WouldBlock` (a writable edge brings
    /// us back for the rest).
    fn write_rest(&mut self) -> io::Result<()> {
        while self.written < self.message.len() {
            match self.stream.write(&self.message[self.written..]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => self.written += n,
                Err(err) if would_block(&err) => break,
                Err(err) if interrupted(&err) => continue,
                Err(err) => return Err(err),
            }
        }
        Ok(())
    }

    /// Acts on an event (readable, writable or both: either way, try both).
    fn on_ready(&mut self, scratch: &mut [u8], window: &mut Window) -> io::Result<()> {
        self.write_rest()?;
        loop {
            let n = match self.stream.read(scratch) {
                Ok(0) => {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the server closed the connection",
                    ));
                }
                Ok(n) => n,
                Err(err) if would_block(&err) => return Ok(()),
                Err(err) if interrupted(&err) => continue,
                Err(err) => return Err(err),
            };
            self.verify(&scratch[..n])?;
            window.bytes_verified += n as u64;
            if self.received == self.message.len() {
                window.latency.record(self.sent_at.elapsed());
                window.messages += 1;
                // An echo server sends only what it was sent, and this whole message is back:
                // nothing more can be waiting, so we skip the read that would only say
                // `WouldBlock`. The next message's echo brings a new readable edge.
                return self.start_next_message();
            }
        }
    }

    /// Checks echoed bytes against the part of the message they must be.
    fn verify(&mut self, echoed: &[u8]) -> io::Result<()> {
        let end = self.received + echoed.len();
        if end > self.written {
            return Err(io::Error::other(format!(
                "the server sent {} bytes of message {} but only {} were written",
                end, self.sequence, self.written
            )));
        }
        let expected = &self.message[self.received..end];
        if let Some(at) = expected.iter().zip(echoed).position(|(a, b)| a != b) {
            return Err(io::Error::other(format!(
                "wrong echo: byte {} of message {} is {:#04x}, sent {:#04x}",
                self.received + at,
                self.sequence,
                echoed[at],
                expected[at]
            )));
        }
        self.received = end;
        Ok(())
    }
}

/// Waits for events, at most `timeout`; a signal interrupting the wait is not an error.
fn wait(poll: &mut Poll, events: &mut Events, timeout: Duration) -> io::Result<()> {
    match poll.poll(events, Some(timeout)) {
        Err(err) if interrupted(&err) => {
            events.clear();
            Ok(())
        }
        result => result,
    }
}

/// mio's non-blocking connect is done when the socket is writable and has a peer; an error
/// parked on the socket means it failed.
fn is_connected(stream: &TcpStream) -> io::Result<bool> {
    if let Some(err) = stream.take_error()? {
        return Err(err);
    }
    match stream.peer_addr() {
        Ok(_) => Ok(true),
        Err(err) if err.kind() == io::ErrorKind::NotConnected => Ok(false),
        Err(err) => Err(err),
    }
}

/// An event on a held idle connection: the server has nothing to say on it, so the event
/// means it closed (or reset) the connection. Returns whether the connection was lost.
fn lose_if_closed(poll: &mut Poll, slot: &mut Option<TcpStream>) -> io::Result<bool> {
    let Some(stream) = slot.as_mut() else {
        return Ok(false);
    };
    let mut byte = [0; 1];
    let lost = loop {
        match stream.read(&mut byte) {
            Ok(0) => break true,
            Ok(_) => {
                return Err(io::Error::other(
                    "the server sent bytes on an idle connection",
                ));
            }
            Err(err) if would_block(&err) => break false,
            Err(err) if interrupted(&err) => continue,
            Err(_) => break true,
        }
    };
    if lost {
        poll.registry().deregister(stream)?;
        *slot = None;
    }
    Ok(lost)
}

/// CPU time (user + system) used so far by the calling thread: the load generator's cost.
fn thread_cpu_time() -> io::Result<Duration> {
    let usage = getrusage(UsageWho::RUSAGE_THREAD)?;
    let micros = |time: TimeVal| u64::try_from(time.num_microseconds()).unwrap_or(0);
    Ok(Duration::from_micros(
        micros(usage.user_time()) + micros(usage.system_time()),
    ))
}

/// `len` bytes from xorshift64, seeded: cheap, and different for every connection.
fn pseudo_random_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state.to_le_bytes()[0]
        })
        .collect()
}

/// Prefixes an error with which connection it happened on.
fn context(err: io::Error, what: &str) -> io::Error {
    io::Error::new(err.kind(), format!("{what}: {err}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{TcpListener, TcpStream as StdStream};
    use std::thread;

    /// A thread-per-connection echo server in this test process, changing every byte at
    /// offset `corrupt_at` of the stream (if any). Its threads end when the clients close.
    fn echo_server(corrupt_at: Option<usize>) -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { return };
                thread::spawn(move || echo(&mut stream, corrupt_at));
            }
        });
        addr
    }

    fn echo(stream: &mut StdStream, corrupt_at: Option<usize>) {
        let mut buf = [0; 4096];
        let mut offset = 0;
        while let Ok(n @ 1..) = stream.read(&mut buf) {
            if let Some(at) = corrupt_at.filter(|at| (offset..offset + n).contains(at)) {
                buf[at - offset] ^= 0xff;
            }
            offset += n;
            if stream.write_all(&buf[..n]).is_err() {
                return;
            }
        }
    }

    /// Ping-pong with small and large messages and idle connections beside: 100 messages
    /// flow (a count, however slow a loaded machine is), every echoed byte is verified, the
    /// idle connections are held, latencies are recorded.
    #[test]
    fn ping_pong_verifies_every_byte() {
        let addr = echo_server(None);
        for message_size in [64, 4096] {
            let shape = LoadShape {
                active: 4,
                idle: 3,
                message_size,
            };
            let mut load = Load::open(addr, &shape, Duration::from_secs(10)).unwrap();
            assert_eq!(load.idle_held(), 3);
            let window = load
                .run_for_at_least(Duration::ZERO, 100, Duration::from_secs(10))
                .unwrap();
            assert!(window.messages >= 100, "{window:?}");
            assert!(window.bytes_verified >= window.messages * message_size as u64);
            assert_eq!(window.latency.count(), window.messages);
            assert!(window.latency.percentile(99.0).is_some());
            assert_eq!(window.idle_lost, 0);
        }
    }

    /// A server that stops answering makes a window that waits for messages an error once
    /// its patience is spent, not a hang.
    #[test]
    fn a_window_waiting_for_messages_from_a_silent_server_gives_up() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        // Accepts one connection and holds it open, never answering.
        let held = thread::spawn(move || listener.incoming().take(1).collect::<Vec<_>>());
        let shape = LoadShape {
            active: 1,
            idle: 0,
            message_size: 64,
        };
        let mut load = Load::open(addr, &shape, Duration::from_secs(10)).unwrap();
        let err = load
            .run_for_at_least(Duration::ZERO, 1, Duration::from_millis(200))
            .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut, "{err}");
        assert!(err.to_string().starts_with("only 0 of 1 messages"), "{err}");
        drop(held);
    }

    /// One changed byte in the echo fails the run, naming the byte.
    #[test]
    fn a_wrong_byte_is_an_error() {
        let addr = echo_server(Some(1000));
        let shape = LoadShape {
            active: 1,
            idle: 0,
            message_size: 64,
        };
        let mut load = Load::open(addr, &shape, Duration::from_secs(10)).unwrap();
        let err = load.run_for(Duration::from_secs(5)).unwrap_err();
        assert!(
            err.to_string()
                .contains("wrong echo: byte 40 of message 16"),
            "{err}"
        );
    }

    /// A server that closes idle connections at once: none is held, and that is a count,
    /// not an error (this is what `select` does beyond FD_SETSIZE).
    #[test]
    fn refused_idle_connections_are_counted() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        thread::spawn(move || {
            for stream in listener.incoming().take(5) {
                drop(stream);
            }
        });
        let shape = LoadShape {
            active: 0,
            idle: 5,
            message_size: 64,
        };
        let load = Load::open(addr, &shape, Duration::from_secs(10)).unwrap();
        assert_eq!(load.idle_held(), 0);
    }
}
