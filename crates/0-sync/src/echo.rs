//! The blocking echo server: `accept`, then echo that one client until it leaves.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::thread;
use std::time::Duration;

use fdio::{Trace, interrupted, log_closed, log_connected, out_of_fds};

/// How long to stop accepting after the process ran out of file descriptors.
const OUT_OF_FDS_PAUSE: Duration = Duration::from_millis(500);

/// Accepts clients forever. Without `threads`, each client is served to the end before the
/// next `accept`: that is the lesson. With `threads`, each client gets its own thread.
pub fn serve(listener: TcpListener, threads: bool, trace: Trace) -> io::Result<()> {
    loop {
        trace.say(|| "sync: blocking in accept()".to_string());
        let (stream, peer) = match listener.accept() {
            Ok(connection) => connection,
            Err(err) if interrupted(&err) => continue,
            Err(err) if out_of_fds(&err) => {
                // The connection stays queued, so retrying at once would spin: wait instead.
                fdio::log!("accept: {err}; pausing for {OUT_OF_FDS_PAUSE:?}");
                thread::sleep(OUT_OF_FDS_PAUSE);
                continue;
            }
            // For example ECONNABORTED: that one connection is gone, the listener is fine.
            Err(err) => {
                fdio::log!("accept: {err}");
                continue;
            }
        };
        log_connected(peer);
        if threads {
            let spawned = thread::Builder::new()
                .name(format!("client {peer}"))
                .spawn(move || serve_client(stream, peer, trace));
            if let Err(err) = spawned {
                log_closed(peer, Some(&err));
            }
        } else {
            serve_client(stream, peer, trace);
        }
    }
}

/// Echoes one client until it closes; an error ends only this client.
fn serve_client(mut stream: TcpStream, peer: SocketAddr, trace: Trace) {
    let result = echo_until_eof(&mut stream, peer, trace);
    log_closed(peer, result.err().as_ref());
}

fn echo_until_eof(stream: &mut TcpStream, peer: SocketAddr, trace: Trace) -> io::Result<()> {
    // Python's `recv(4096)`.
    let mut buf = [0; 4096];
    loop {
        trace.say(|| format!("sync: blocking in read() from {peer}"));
        let n = match stream.read(&mut buf) {
            Ok(0) => return Ok(()), // the client closed its side: we are done
            Ok(n) => n,
            Err(err) if interrupted(&err) => continue,
            Err(err) => return Err(err),
        };
        trace.say(|| format!("sync: blocking in write() of {n} bytes to {peer}"));
        // If the client does not read, this blocks until it does — and so does everyone else.
        stream.write_all(&buf[..n])?;
    }
}
