//! Listening, announcing the real address, and the one-line connection log every server keeps.

use std::io::{self, Write};
use std::net::{SocketAddr, TcpListener};
use std::os::fd::AsRawFd;

use nix::sys::socket::{
    AddressFamily, Backlog, SockFlag, SockType, SockaddrStorage, bind, setsockopt, socket, sockopt,
};

/// How many finished handshakes the kernel queues for us before we `accept` them.
/// `std::net::TcpListener::bind` asks for 128; when 10,000 clients connect at once, a full
/// queue drops their SYNs and each retries a whole second later. The kernel caps this at
/// `net.core.somaxconn` (4096 on current Linux).
const BACKLOG: i32 = 4096;

/// Binds `addr` and prints `listening on <real addr>` as the first line on stdout, so that
/// with `--addr 127.0.0.1:0` a script or test can read which port the kernel picked.
pub fn listen(addr: SocketAddr) -> io::Result<TcpListener> {
    let listener = bind_listener(addr)
        .map_err(|err| io::Error::new(err.kind(), format!("cannot listen on {addr}: {err}")))?;
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
