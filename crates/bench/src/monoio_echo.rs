//! Lesson 6's peer: an echo server on monoio, the io_uring runtime a Rust programmer would
//! pick, written as its examples write one — one thread, its io_uring driver, a task per
//! connection, and *owned* buffers: `read` hands its `Vec` to the kernel and gets it back with
//! the result (`(result, buf) = stream.read(buf).await`), `write_all` likewise.
//!
//! Like tokio's peer ([`crate::tokio_echo`]) it reads 4 KiB at a time, 16 KiB for the bulk and
//! fairness loads (`--read-buffer 16384`), so the two peers differ only in their runtime. It
//! runs as its own process (`bench monoio-echo --addr 127.0.0.1:0`), measured exactly like the
//! lessons: same listen backlog (`fdio::listen`), same `listening on` line, same `/proc`
//! readings; out of fds it pauses accepting; it logs nothing per connection.
//!
//! Note for the memory table: an idle connection keeps a read in flight, and its buffer is
//! the kernel's until bytes come — 4 KiB per idle connection, where `completion echo` lends
//! buffers from one shared ring only when data arrives.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use monoio::io::{AsyncReadRent, AsyncWriteRentExt};
use monoio::net::{TcpListener, TcpStream};
use monoio::{IoUringDriver, RuntimeBuilder};

/// How long to stop accepting after running out of file descriptors.
const OUT_OF_FDS_PAUSE: Duration = Duration::from_millis(500);

/// Why monoio cannot run here (no io_uring, or one without the operations it uses), or
/// `None`: it can. The benchmark asks before it measures monoio, and skips it with this
/// reason otherwise.
pub fn unavailable() -> Option<String> {
    if let Err(err) = RuntimeBuilder::<IoUringDriver>::new().build() {
        return Some(format!("cannot set up an io_uring: {err}"));
    }
    // The same probe monoio's own "fusion" driver makes before it picks io_uring.
    if !monoio::utils::detect_uring() {
        return Some(
            "this kernel's io_uring lacks operations monoio uses (or \
             MONOIO_FORCE_LEGACY_DRIVER is set)"
                .into(),
        );
    }
    None
}

/// Builds the runtime, binds `addr`, prints `listening on <addr>`, and echoes forever (until
/// killed), each connection reading into `read_buffer` bytes.
pub fn run(addr: SocketAddr, read_buffer: usize) -> io::Result<()> {
    fdio::raise_fd_limit()?;
    // Built before the listener, so a machine without io_uring fails before `listening on`.
    let mut runtime = RuntimeBuilder::<IoUringDriver>::new()
        .enable_timer()
        .build()?;
    let listener = fdio::listen(addr)?;
    runtime.block_on(serve(listener, read_buffer))
}

async fn serve(listener: std::net::TcpListener, read_buffer: usize) -> io::Result<()> {
    let listener = TcpListener::from_std(listener)?;
    loop {
        match listener.accept().await {
            Ok((stream, _peer)) => {
                monoio::spawn(echo(stream, read_buffer));
            }
            Err(err) if fdio::out_of_fds(&err) => {
                eprintln!("accept: {err}; pausing for {OUT_OF_FDS_PAUSE:?}");
                monoio::time::sleep(OUT_OF_FDS_PAUSE).await;
            }
            Err(err) => eprintln!("accept: {err}"),
        }
    }
}

/// Echoes until EOF; an error ends only this connection. The buffer travels: to the kernel
/// with each operation, back with its result.
async fn echo(mut stream: TcpStream, read_buffer: usize) {
    let mut buf = Vec::with_capacity(read_buffer);
    loop {
        let (read, returned) = stream.read(buf).await;
        buf = returned;
        match read {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        let (written, returned) = stream.write_all(buf).await;
        buf = returned;
        if written.is_err() {
            return;
        }
        buf.clear();
    }
}
