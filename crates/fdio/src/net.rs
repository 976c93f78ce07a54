//! Listening, announcing the real address, the one-line connection log every server keeps, and
//! how much a connection has not delivered yet.

use std::io::{self, Write};
use std::net::{SocketAddr, TcpListener};
use std::os::fd::{AsFd, AsRawFd};

use nix::libc;
use nix::sys::socket::{
    AddressFamily, Backlog, SockFlag, SockType, SockaddrStorage, bind, setsockopt, socket, sockopt,
};

/// How many finished handshakes the kernel queues for us before we `accept` them.
/// `std::net::TcpListener::bind` asks for 128; when 10,000 clients connect at once, a full
/// queue drops their SYNs and each retries a whole second later. The kernel caps this at
/// `net.core.somaxconn` (4096 on current Linux).
const BACKLOG: i32 = 4096;

/// Binds `addr` and prints `listening on <real addr>` as the first line on stdout, so that
/// with `--addr 127.0.0.1:0` a script or test can read which port the kernel picked. Fails
/// before printing it if not even one more fd can be opened beside the listener.
pub fn listen(addr: SocketAddr) -> io::Result<TcpListener> {
    let listener = bind_listener(addr)
        .map_err(|err| io::Error::new(err.kind(), format!("cannot listen on {addr}: {err}")))?;
    // A server with no fd left beside the listener could neither make its epoll nor accept
    // anyone: say so now, not after `listening on` (`ulimit -n 4`).
    listener.try_clone().map_err(|err| {
        io::Error::new(err.kind(), format!("no fd left beside the listener: {err}"))
    })?;
    let mut stdout = io::stdout().lock();
    writeln!(stdout, "listening on {}", listener.local_addr()?)?;
    stdout.flush()?;
    Ok(listener)
}

/// socket + bind + listen, as `TcpListener::bind` does, but with our own backlog.
fn bind_listener(addr: SocketAddr) -> io::Result<TcpListener> {
    let family = match addr {
        SocketAddr::V4(_) => AddressFamily::Inet,
        SocketAddr::V6(_) => AddressFamily::Inet6,
    };
    let socket = socket(family, SockType::Stream, SockFlag::SOCK_CLOEXEC, None)?;
    // A restarted server can bind again at once, even while old connections linger.
    setsockopt(&socket, sockopt::ReuseAddr, &true)?;
    bind(socket.as_raw_fd(), &SockaddrStorage::from(addr))?;
    nix::sys::socket::listen(&socket, Backlog::new(BACKLOG)?)?;
    Ok(TcpListener::from(socket))
}

/// Logs a new connection on stderr.
pub fn log_connected(peer: SocketAddr) {
    crate::log!("connection from {peer}");
}

/// Logs the end of a connection on stderr, with the error that ended it, if any.
pub fn log_closed(peer: SocketAddr, error: Option<&io::Error>) {
    match error {
        None => crate::log!("connection {peer} closed"),
        Some(err) => crate::log!("connection {peer} closed: {err}"),
    }
}

/// What has become of the bytes written to a TCP socket, as [`delivery`] finds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// The peer has acknowledged every byte, and our EOF if we sent one: closing loses nothing.
    Done,
    /// On their way: this many bytes of data the peer has not acknowledged yet (not sent, or
    /// sent and not yet acknowledged). 0 when only our EOF still waits for its acknowledgement.
    Pending(usize),
    /// The connection is over — the peer reset it, or stopped answering until the kernel gave
    /// up — with this many bytes never acknowledged: they are lost, and nothing will move
    /// again.
    Lost(usize),
}

impl Delivery {
    /// The bytes of data that have not reached the peer (0 when [`Done`](Delivery::Done)).
    pub fn undelivered(self) -> usize {
        match self {
            Delivery::Done => 0,
            Delivery::Pending(bytes) | Delivery::Lost(bytes) => bytes,
        }
    }
}

/// Asks the kernel what has become of what we wrote to the TCP socket `socket`.
/// `eof_sent`: whether `shutdown(Write)` has queued our EOF on it (the caller knows; after a
/// reset the kernel no longer says).
///
/// Two numbers tell. The send queue, `ioctl(SIOCOUTQ)`: tcp(7) calls it "the amount of
/// unsent data", but the kernel's `tcp_ioctl` answers `write_seq - snd_una`, every byte
/// written and not yet acknowledged, sent or not — and our EOF takes one place in it, because
/// `tcp_send_fin` moves `write_seq` on by one. And the connection's state (`TCP_INFO`):
/// `CLOSE` with bytes still queued means a reset (or a peer that stopped answering), after
/// which the count never moves again; a connection that closed in order has nothing queued.
pub fn delivery(socket: &impl AsFd, eof_sent: bool) -> io::Result<Delivery> {
    // The state first: once it reads CLOSE, the count read after it is final.
    let closed = tcp_state(socket)? == TCP_CLOSE;
    let queued = send_queue(socket)?;
    // With bytes queued our EOF, if sent, is queued too (it is last): one place, not data.
    let data = if eof_sent {
        queued.saturating_sub(1)
    } else {
        queued
    };
    Ok(match queued {
        0 => Delivery::Done,
        _ if closed => Delivery::Lost(data),
        _ => Delivery::Pending(data),
    })
}

/// How many bytes written to the TCP socket `socket` have not left it yet: not sent, or sent
/// but not yet acknowledged by the peer. 0: the peer's kernel holds every byte we wrote.
///
/// The kernel's count (`ioctl(SIOCOUTQ)`: `write_seq - snd_una`, see [`delivery`]) also counts
/// our FIN, once `shutdown(Write)` has queued it, as one byte until the peer acknowledges it;
/// this counts bytes of data only. (After the peer resets the connection, the FIN's byte can
/// no longer be told apart: [`delivery`], told whether the EOF was sent, can.)
pub fn unsent_bytes(socket: &impl AsFd) -> io::Result<usize> {
    let queued = send_queue(socket)?;
    if queued > 0 && our_fin_is_unacknowledged(socket)? {
        return Ok(queued - 1);
    }
    Ok(queued)
}

/// Whether the peer has acknowledged everything we sent: every byte, and our FIN if
/// `shutdown(Write)` queued one. Then closing loses nothing on our side — even if the close
/// resets the connection (closing with unread input does), because a reset destroys only
/// what is still queued here. A Linux client then still reads what it holds, then the EOF
/// (its kernel keeps the received bytes, and our FIN came first); a client on another
/// system may throw away what it had not read yet when the reset arrives (Windows does).
pub fn all_acknowledged(socket: &impl AsFd) -> io::Result<bool> {
    Ok(send_queue(socket)? == 0)
}

/// `ioctl(SIOCOUTQ)`: the bytes in the socket's send queue, not yet acknowledged by the peer
/// (with our FIN counted as one, once queued).
fn send_queue(socket: &impl AsFd) -> io::Result<usize> {
    let mut queued: libc::c_int = 0;
    // Safety: SIOCOUTQ (= TIOCOUTQ) writes one `int` through the pointer, which points at
    // `queued`, alive for the call. On an fd that is not a TCP socket it fails, writing nothing.
    let result =
        unsafe { libc::ioctl(socket.as_fd().as_raw_fd(), libc::TIOCOUTQ, &raw mut queued) };
    if result < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(usize::try_from(queued).unwrap_or(0))
}

// The connection states `TCP_INFO` reports (RFC 9293's; the numbers are Linux's).
const FIN_WAIT1: u8 = 4;
const TCP_CLOSE: u8 = 7;
const LAST_ACK: u8 = 9;
const CLOSING: u8 = 11;

/// Whether the connection is in a state where our FIN is queued or sent but not acknowledged:
/// FIN-WAIT-1, CLOSING or LAST-ACK.
fn our_fin_is_unacknowledged(socket: &impl AsFd) -> io::Result<bool> {
    Ok(matches!(tcp_state(socket)?, FIN_WAIT1 | LAST_ACK | CLOSING))
}

/// The TCP connection's state: `tcpi_state`, the first byte of `TCP_INFO`.
fn tcp_state(socket: &impl AsFd) -> io::Result<u8> {
    // Only the first byte is read: the kernel copies as much of its `struct tcp_info` as the
    // length we pass allows.
    let mut state: u8 = 0;
    let mut len = size_of::<u8>() as libc::socklen_t;
    // Safety: the kernel writes at most `len` (1) bytes at the pointer, which points at
    // `state`, and writes the length it used into `len`; both live across the call.
    let result = unsafe {
        libc::getsockopt(
            socket.as_fd().as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            (&raw mut state).cast(),
            &raw mut len,
        )
    };
    if result < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(state)
}

#[cfg(test)]
mod tests {
    use std::io::Read;
    use std::net::{Shutdown, TcpStream};
    use std::time::{Duration, Instant};

    use super::*;

    /// A connected pair: a server side that never blocks, and its client.
    fn pair() -> (TcpStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, _) = listener.accept().unwrap();
        server.set_nonblocking(true).unwrap();
        (server, client)
    }

    /// Writes to `stream` until its send queue is full; returns how many bytes it took.
    fn fill(mut stream: &TcpStream) -> usize {
        let block = [7u8; 64 * 1024];
        let mut written = 0;
        loop {
            match stream.write(&block) {
                Ok(n) => written += n,
                Err(err) if crate::would_block(&err) => return written,
                Err(err) => panic!("write: {err}"),
            }
        }
    }

    /// Waits (5 s at most) until `unsent_bytes` says `expected`.
    fn wait_for_unsent(stream: &TcpStream, expected: usize) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while unsent_bytes(stream).unwrap() != expected {
            assert!(
                Instant::now() < deadline,
                "{} unsent",
                unsent_bytes(stream).unwrap()
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Beside a peer that does not read, some of what was written is unsent, and not all
    /// acknowledged; our FIN adds nothing to the count; once the peer reads everything (and
    /// sees the EOF), nothing is left unsent and everything, FIN too, is acknowledged.
    #[test]
    fn unsent_bytes_count_what_the_peer_has_not_received() {
        let (server, mut client) = pair();
        let written = fill(&server);
        let unsent = unsent_bytes(&server).unwrap();
        assert!(
            unsent > 0 && unsent < written,
            "{unsent} of {written} unsent"
        );
        server.shutdown(Shutdown::Write).unwrap();
        assert_eq!(
            unsent_bytes(&server).unwrap(),
            unsent,
            "the FIN was counted"
        );
        let mut received = Vec::new();
        client.read_to_end(&mut received).unwrap();
        assert_eq!(received.len(), written);
        wait_for_unsent(&server, 0);
        let deadline = Instant::now() + Duration::from_secs(5);
        while !all_acknowledged(&server).unwrap() {
            assert!(Instant::now() < deadline, "the FIN was never acknowledged");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Before the peer acknowledges: `Pending`, our EOF not counted as data. Once the peer
    /// resets the connection: `Lost`, for good, with the same bytes of data — the EOF, which
    /// the kernel still counts in its queue, told apart because we say we sent it.
    #[test]
    fn a_reset_loses_what_was_pending_and_the_eof_is_not_data() {
        let (server, client) = pair();
        fill(&server);
        server.shutdown(Shutdown::Write).unwrap();
        let queued = send_queue(&server).unwrap();
        assert_eq!(
            delivery(&server, true).unwrap(),
            Delivery::Pending(queued - 1)
        );
        assert_eq!(delivery(&server, false).unwrap(), Delivery::Pending(queued));
        // Closing with our bytes unread in its socket makes the client's kernel reset.
        drop(client);
        let deadline = Instant::now() + Duration::from_secs(5);
        while tcp_state(&server).unwrap() != TCP_CLOSE {
            assert!(Instant::now() < deadline, "the reset never came");
            std::thread::sleep(Duration::from_millis(5));
        }
        let lost = send_queue(&server).unwrap() - 1;
        assert!(lost > 0);
        assert_eq!(delivery(&server, true).unwrap(), Delivery::Lost(lost));
        assert_eq!(delivery(&server, true).unwrap().undelivered(), lost);
    }

    /// Once the peer has read everything and acknowledged our EOF: `Done`.
    #[test]
    fn delivery_is_done_once_the_peer_has_everything_and_the_eof() {
        let (server, mut client) = pair();
        (&server).write_all(b"hello").unwrap();
        server.shutdown(Shutdown::Write).unwrap();
        let mut received = Vec::new();
        client.read_to_end(&mut received).unwrap();
        assert_eq!(received, b"hello");
        let deadline = Instant::now() + Duration::from_secs(5);
        while delivery(&server, true).unwrap() != Delivery::Done {
            assert!(Instant::now() < deadline, "{:?}", delivery(&server, true));
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// An idle connection has nothing unsent, and a listening socket is refused with an error
    /// rather than a made-up count.
    #[test]
    fn unsent_bytes_of_an_idle_connection_is_zero_and_of_a_listener_an_error() {
        let (server, _client) = pair();
        assert_eq!(unsent_bytes(&server).unwrap(), 0);
        assert!(all_acknowledged(&server).unwrap());
        assert_eq!(delivery(&server, false).unwrap(), Delivery::Done);
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        assert!(unsent_bytes(&listener).is_err());
        assert!(delivery(&listener, false).is_err());
    }
}
