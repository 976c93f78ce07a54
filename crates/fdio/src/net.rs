//! Listening, announcing the real address, and the one-line connection log every server keeps.

use std::io::{self, Write};
use std::net::{SocketAddr, TcpListener};

/// Binds `addr` and prints `listening on <real addr>` as the first line on stdout, so that
/// with `--addr 127.0.0.1:0` a script or test can read which port the kernel picked.
/// (`std` sets `SO_REUSEADDR`, so a restarted server can bind again at once.)
pub fn listen(addr: SocketAddr) -> io::Result<TcpListener> {
    let listener = TcpListener::bind(addr)
        .map_err(|err| io::Error::new(err.kind(), format!("cannot listen on {addr}: {err}")))?;
    let mut stdout = io::stdout().lock();
    writeln!(stdout, "listening on {}", listener.local_addr()?)?;
    stdout.flush()?;
    Ok(listener)
}

/// Logs a new connection on stderr.
pub fn log_connected(peer: SocketAddr) {
    eprintln!("connection from {peer}");
}

/// Logs the end of a connection on stderr, with the error that ended it, if any.
pub fn log_closed(peer: SocketAddr, error: Option<&io::Error>) {
    match error {
        None => eprintln!("connection {peer} closed"),
        Some(err) => eprintln!("connection {peer} closed: {err}"),
    }
}
