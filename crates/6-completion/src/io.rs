//! Reading stdin, a pipe or a file through the ring: `IORING_OP_READ`.
//!
//! Lessons 2–5 could not wait for a regular file: epoll refuses it (`EPERM`), because a file
//! is "always ready" — even when the read will wait for the disk. A completion does not
//! care: "read this fd into this buffer, tell me when it is done" means the same for a
//! socket, a pipe, a terminal or a file on disk, so stdin from a file needs no special case.
//!
//! The read in flight belongs to the [`Reader`], not to the future that awaits it: when the
//! writer's `race` drops the losing `read()`, the request stays in flight, and whatever the
//! kernel puts in its buffer comes out at the next call. Dropping the request instead would
//! cancel it — and if the kernel had already read the bytes, they would be lost.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use io_uring::{opcode, types::Fd};

use crate::buf::{IoBuf, IoBufMut, request_len};
use crate::fd::RingFd;
use crate::op::Op;

/// The offset that means "the file's current position, and advance it", as `read(2)` does
/// (`IORING_FEAT_RW_CUR_POS`, Linux 5.6).
const CURRENT_POSITION: u64 = u64::MAX;

/// Reads one fd through the ring, one request at a time. Not `Send`: its request and its fd
/// belong to this thread's ring.
///
/// ```compile_fail,E0277
/// # use lesson_completion::io::Reader;
/// fn read_elsewhere(mut reader: Reader) {
///     std::thread::spawn(move || drop(reader)); // error: cannot be sent between threads
/// }
/// ```
pub struct Reader {
    capacity: usize,
    /// Dropped before `fd`: the request is cancelled, then the fd closed after it.
    in_flight: Option<Op<Vec<u8>>>,
    /// The request in flight is a poll for readability (the fd is non-blocking), not a read.
    polling: bool,
    fd: RingFd,
}

impl Reader {
    /// Reads `fd` in chunks of up to `capacity` bytes.
    ///
    /// # Panics
    /// Outside `block_on`.
    pub fn new(fd: OwnedFd, capacity: usize) -> Reader {
        Reader {
            capacity,
            in_flight: None,
            polling: false,
            fd: RingFd::new(fd),
        }
    }

    /// Reads stdin (a duplicate of fd 0, so stdin itself stays open when we drop ours).
    ///
    /// # Panics
    /// Outside `block_on`.
    pub fn stdin(capacity: usize) -> io::Result<Reader> {
        let fd = io::stdin().lock().as_raw_fd();
        // Safety: fd 0 is open for the whole process; `dup` makes an fd of our own.
        let fd = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) }.try_clone_to_owned()?;
        Ok(Reader::new(fd, capacity))
    }

    /// The next bytes; empty at EOF.
    pub async fn read(&mut self) -> io::Result<Vec<u8>> {
        std::future::poll_fn(|cx| self.poll_read(cx)).await
    }

    fn poll_read(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<Vec<u8>>> {
        loop {
            let fd = self.fd.number_for_request()?;
            let op = self.in_flight.get_or_insert_with(|| {
                if self.polling {
                    poll_readable(fd)
                } else {
                    read(fd, Vec::with_capacity(self.capacity))
                }
            });
            let (result, mut buf) = ready!(Pin::new(op).poll(cx));
            self.in_flight = None;
            if std::mem::take(&mut self.polling) {
                continue; // readable now (or an error the read will report): read
            }
            match result {
                Ok(n) => {
                    // Safety: the kernel wrote `n` bytes at the start of the buffer.
                    unsafe { buf.set_len(n as usize) };
                    return Poll::Ready(Ok(buf));
                }
                // An inherited non-blocking stdin: the ring does not wait for such an fd, it
                // says `EAGAIN`. Then wait for readability, with a request too, and read again.
                Err(err) if fdio::would_block(&err) => self.polling = true,
                Err(err) if fdio::interrupted(&err) => {}
                Err(err) => return Poll::Ready(Err(err)),
            }
        }
    }
}

/// Appends `bytes` to the file `fd` (opened with `O_APPEND`) in one write request. Returns
/// how many bytes the kernel wrote, and the buffer. (A [`RingFd`], not any fd: if this
/// future is dropped, its request may still wait in the ring, naming the fd's number.)
pub async fn append<B: IoBuf>(fd: &RingFd, bytes: B) -> (io::Result<usize>, B) {
    let fd = match fd.number_for_request() {
        Ok(fd) => fd,
        Err(err) => return (Err(err), bytes),
    };
    // Safety: the entry points into `bytes`' stable bytes (`IoBuf`), which the `Op` owns
    // until the request's last completion.
    let op = unsafe {
        Op::submit("write", bytes, |bytes| {
            opcode::Write::new(Fd(fd), bytes.stable_ptr(), request_len(bytes.len()))
                .offset(CURRENT_POSITION)
                .build()
        })
    };
    let (result, bytes) = op.await;
    (result.map(|n| n as usize), bytes)
}

/// One read of `fd` into `buf` (from its start, up to its capacity), at the file's position.
fn read(fd: RawFd, buf: Vec<u8>) -> Op<Vec<u8>> {
    // Safety: the entry points into `buf`'s heap bytes (`IoBufMut`), within its capacity;
    // the `Op` owns the buffer until the request's last completion.
    unsafe {
        Op::submit("read", buf, |buf| {
            opcode::Read::new(Fd(fd), buf.stable_mut_ptr(), request_len(buf.capacity()))
                .offset(CURRENT_POSITION)
                .build()
        })
    }
}

/// Waits until `fd` is readable (`IORING_OP_POLL_ADD`); the empty buffer is for the
/// [`Reader`]'s next read.
fn poll_readable(fd: RawFd) -> Op<Vec<u8>> {
    // Safety: a poll request points to no memory (the `Vec` is just carried along).
    unsafe {
        Op::submit("poll", Vec::new(), |_| {
            opcode::PollAdd::new(Fd(fd), libc::POLLIN as u32).build()
        })
    }
}
