//! `client [--addr A]`: like `nc`. What you type goes to the server; what the server sends
//! comes to your terminal. Ctrl+D half-closes the connection (we send EOF but keep reading),
//! so the rest of the echo still arrives before the client exits.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::thread;

/// Runs until the server closes the connection.
pub fn run_interactive(addr: SocketAddr) -> io::Result<()> {
    let stream = TcpStream::connect(addr)
        .map_err(|err| io::Error::new(err.kind(), format!("cannot connect to {addr}: {err}")))?;
    fdio::log!("connected to {addr}: type lines, Ctrl+D to finish");

    // stdin → server, on its own thread, because reading stdin blocks.
    let mut to_server = stream.try_clone()?;
    thread::spawn(move || {
        if let Err(err) = io::copy(&mut io::stdin().lock(), &mut to_server) {
            fdio::log!("client: sending: {err}");
        }
        // EOF on stdin: tell the server we are done sending; keep reading its answer.
        let _ = to_server.shutdown(Shutdown::Write);
    });

    // server → stdout, flushed at once so a reply without a newline shows up too.
    let mut from_server = &stream;
    let mut stdout = io::stdout().lock();
    let mut buf = [0; 16 * 1024];
    loop {
        let n = match from_server.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
            Err(err) => return Err(err),
        };
        stdout.write_all(&buf[..n])?;
        stdout.flush()?;
    }
    fdio::log!("the server closed the connection");
    Ok(())
}
