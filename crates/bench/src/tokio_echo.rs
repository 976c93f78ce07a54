//! The reference peer: an echo server on tokio's current-thread runtime, as its tutorial
//! writes one — a task per connection, `read` into a 4 KiB buffer, `write_all` it back.
//! `--read-buffer 16384` gives the peer of the bulk and fairness loads (issue 9's).
//!
//! Why this peer: it is what a Rust programmer would reach for, and it is single-threaded
//! like every lesson after lesson 0, so "× tokio" compares event loops, not core counts.
//! It runs as its own process (`bench tokio-echo --addr 127.0.0.1:0`) so it is measured
//! exactly like the lessons: same listen backlog (`fdio::listen`), same `listening on` line,
//! same `/proc` readings. Like the lessons it raises its fd limit and, out of fds, pauses
//! accepting instead of spinning. Unlike them it logs nothing per connection.
//!
//! Note for the memory table: each connection's task owns its 4 KiB buffer while idle
//! (the lessons read into a stack buffer and hold none), so tokio's RSS per idle connection
//! is higher than what a leaner tokio server could reach.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// How long to stop accepting after running out of file descriptors.
const OUT_OF_FDS_PAUSE: Duration = Duration::from_millis(500);

/// Binds `addr`, prints `listening on <addr>`, and echoes forever (until killed), each
/// connection reading into `read_buffer` bytes. With `multi_thread: Some(n)`, on tokio's
/// multi-thread runtime with `n` workers (lesson 7's peer), as `#[tokio::main]` builds it.
pub fn run(addr: SocketAddr, read_buffer: usize, multi_thread: Option<usize>) -> io::Result<()> {
    fdio::raise_fd_limit()?;
    let listener = fdio::listen(addr)?;
    listener.set_nonblocking(true)?;
    // What `#[tokio::main(flavor = "current_thread")]` builds, or `#[tokio::main]`.
    let runtime = match multi_thread {
        None => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?,
        Some(workers) => tokio::runtime::Builder::new_multi_thread()
            .worker_threads(workers)
            .enable_all()
            .build()?,
    };
    runtime.block_on(serve(listener, read_buffer))
}

async fn serve(listener: std::net::TcpListener, read_buffer: usize) -> io::Result<()> {
    let listener = TcpListener::from_std(listener)?;
    loop {
        match listener.accept().await {
            Ok((stream, _peer)) => {
                tokio::spawn(echo(stream, read_buffer));
            }
            Err(err) if fdio::out_of_fds(&err) => {
                eprintln!("accept: {err}; pausing for {OUT_OF_FDS_PAUSE:?}");
                tokio::time::sleep(OUT_OF_FDS_PAUSE).await;
            }
            Err(err) => eprintln!("accept: {err}"),
        }
    }
}

/// Echoes until EOF; an error ends only this connection.
async fn echo(mut stream: TcpStream, read_buffer: usize) {
    let mut buf = vec![0; read_buffer];
    loop {
        let n = match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        if stream.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}
