//! [`Bytes`]: what `recv` and `read` return — the read buffer itself, not a copy of it.
//!
//! Python's `sock.recv(65536)` hands back a new `bytes` object. Copying what the kernel just
//! put in a read buffer into a fresh allocation costs as much as the kernel's own copy: on a
//! bulk stream it was the largest part of the server's CPU time. So a read goes into a
//! 64 KiB buffer lent by a small pool, and that buffer *is* the `Bytes` that comes back;
//! dropping the `Bytes` — `send_all` does, once every byte is sent — gives the buffer back
//! for the next read. Only one coroutine runs at a time, so a pool of one buffer is enough
//! while clients echo as fast as they read; a client parked in `recv` holds none.

use std::cell::RefCell;
use std::io;
use std::mem;
use std::ops::Deref;

/// The size of a pooled read buffer: the most one read takes.
pub const BUFFER_SIZE: usize = 64 * 1024;

/// Free buffers kept for later reads; any more are freed.
const KEEP_FREE: usize = 16;

thread_local! {
    /// The free buffers, each `BUFFER_SIZE` long. Thread-local, because a coroutine cannot
    /// borrow from the scheduler that resumes it.
    static FREE: RefCell<Vec<Vec<u8>>> = const { RefCell::new(Vec::new()) };
}

/// Bytes read from an fd and not yet sent on: a slice of a buffer that goes back to the pool
/// when dropped.
#[derive(Debug)]
pub struct Bytes {
    buffer: Vec<u8>,
    start: usize,
    end: usize,
}

impl Bytes {
    /// Lends a buffer to `read` (one read call of at most `max` bytes) and keeps what it
    /// read; an error gives the buffer straight back.
    pub fn read_with(
        max: usize,
        read: impl FnOnce(&mut [u8]) -> io::Result<usize>,
    ) -> io::Result<Bytes> {
        let mut buffer = FREE
            .with_borrow_mut(Vec::pop)
            .unwrap_or_else(|| vec![0; BUFFER_SIZE]);
        match read(&mut buffer[..max.min(BUFFER_SIZE)]) {
            Ok(n) => Ok(Bytes {
                buffer,
                start: 0,
                end: n,
            }),
            Err(err) => {
                give_back(buffer);
                Err(err)
            }
        }
    }

    /// The first `n` bytes were sent: `data = data[n:]`.
    pub fn advance(&mut self, n: usize) {
        self.start = (self.start + n).min(self.end);
    }

    /// About to wait with these bytes unsent: if they are a small part of a pooled buffer,
    /// they move to a buffer of their own size and the big one goes back to the pool. A
    /// client that stopped reading then holds what it owes, not 64 KiB.
    pub fn shrink(&mut self) {
        if self.len() < self.buffer.len() / 4 {
            *self = Bytes::from(self.to_vec());
        }
    }
}

/// Bytes that come from elsewhere (a test's payload): sent the same way, never pooled.
impl From<Vec<u8>> for Bytes {
    fn from(buffer: Vec<u8>) -> Bytes {
        Bytes {
            end: buffer.len(),
            start: 0,
            buffer,
        }
    }
}

impl Deref for Bytes {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        &self.buffer[self.start..self.end]
    }
}

impl Drop for Bytes {
    fn drop(&mut self) {
        if self.buffer.len() == BUFFER_SIZE {
            give_back(mem::take(&mut self.buffer));
        }
    }
}

/// Puts a buffer back in the pool, unless the pool is full (or the thread is exiting).
fn give_back(buffer: Vec<u8>) {
    let _ = FREE.try_with(|free| {
        let mut free = free.borrow_mut();
        if free.len() < KEEP_FREE {
            free.push(buffer);
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A read's bytes come back as they were read; once dropped, the same buffer serves the
    /// next read: nothing is allocated or copied per read.
    #[test]
    fn reads_into_a_pooled_buffer_and_returns_it() {
        let first = Bytes::read_with(BUFFER_SIZE, |buf| {
            buf[..5].copy_from_slice(b"hello");
            Ok(5)
        })
        .unwrap();
        assert_eq!(&*first, b"hello");
        let address = first.buffer.as_ptr();
        drop(first);
        let second = Bytes::read_with(3, |buf| {
            assert_eq!(buf.len(), 3, "at most `max` bytes are offered");
            Ok(0)
        })
        .unwrap();
        assert!(second.is_empty());
        assert_eq!(second.buffer.as_ptr(), address, "the buffer was reused");
    }

    /// `advance` drops what was sent; `shrink` keeps the rest in a buffer its size.
    #[test]
    fn advances_and_shrinks_to_what_is_left() {
        let mut data = Bytes::read_with(BUFFER_SIZE, |buf| {
            buf[..6].copy_from_slice(b"abcdef");
            Ok(6)
        })
        .unwrap();
        data.advance(4);
        assert_eq!(&*data, b"ef");
        data.shrink();
        assert_eq!(&*data, b"ef");
        assert_eq!(data.buffer.len(), 2, "no longer holds 64 KiB");
        data.advance(10);
        assert!(data.is_empty());
    }
}
