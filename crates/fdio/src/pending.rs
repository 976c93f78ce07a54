//! The unsent tail of a non-blocking echo.
//!
//! A non-blocking `write` may take only part of what we give it (the peer's receive window
//! and our send buffer are full). Whatever it did not take must be kept, in order, and sent
//! when the socket is writable again: that is this buffer. While it is not empty the loop
//! watches the socket for writability; once it is empty, the loop stops watching (a socket
//! with room in its send buffer is *always* writable: watching it would wake the loop forever).

use std::io::{self, Write};

use crate::fd::{interrupted, would_block};

/// Bytes accepted from a peer but not yet written back to it.
#[derive(Debug, Default)]
pub struct PendingWrite {
    bytes: Vec<u8>,
    /// How much of `bytes` has been written already.
    offset: usize,
}

impl PendingWrite {
    /// An empty buffer; it allocates nothing until something is left unsent.
    pub fn new() -> PendingWrite {
        PendingWrite::default()
    }

    /// No unsent bytes: stop watching for writability.
    pub fn is_empty(&self) -> bool {
        self.unsent().is_empty()
    }

    /// How many bytes are waiting to be sent.
    pub fn len(&self) -> usize {
        self.unsent().len()
    }

    /// The bytes still to send, oldest first.
    pub fn unsent(&self) -> &[u8] {
        &self.bytes[self.offset..]
    }

    /// Sends `data` after whatever is already waiting. Most of the time nothing is waiting and
    /// the socket has room, so `data` goes straight out and nothing is copied; whatever the
    /// socket does not take is kept for [`flush_to`](Self::flush_to).
    pub fn write_or_keep(&mut self, writer: &mut impl Write, data: &[u8]) -> io::Result<()> {
        if !self.is_empty() {
            self.bytes.extend_from_slice(data);
            return self.flush_to(writer);
        }
        let written = write_until_blocked(writer, data)?;
        self.bytes.clear();
        self.offset = 0;
        self.bytes.extend_from_slice(&data[written..]);
        self.release_if_empty();
        Ok(())
    }

    /// Writes as much of the unsent bytes as the socket takes now. Returns `Ok` when it
    /// would block; check [`is_empty`](Self::is_empty) to know whether all went out.
    pub fn flush_to(&mut self, writer: &mut impl Write) -> io::Result<()> {
        self.offset += write_until_blocked(writer, self.unsent())?;
        self.release_if_empty();
        Ok(())
    }

    /// An idle connection should cost no buffer: free the allocation once all is sent.
    /// A peer that always stays a little behind never lets it empty, so the sent prefix is
    /// also dropped once it is more than half the buffer: memory stays proportional to
    /// what is unsent, at an amortized cost of one copy per byte.
    fn release_if_empty(&mut self) {
        if self.is_empty() {
            self.bytes = Vec::new();
            self.offset = 0;
        } else if self.offset > self.bytes.len() / 2 {
            self.bytes.drain(..self.offset);
            self.offset = 0;
        }
    }
}

/// Writes `data` until it is all written or the writer is full; returns how much went.
/// A socket's `write` takes less than it was given only when its send buffer is full, so a
/// short write ends the attempt: writing again at once would only say `WouldBlock` (one
/// system call for nothing). The socket becomes writable again when the peer has read.
fn write_until_blocked(writer: &mut impl Write, data: &[u8]) -> io::Result<usize> {
    loop {
        match writer.write(data) {
            Ok(0) if !data.is_empty() => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => return Ok(n),
            Err(err) if interrupted(&err) => continue,
            Err(err) if would_block(&err) => return Ok(0),
            Err(err) => return Err(err),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A socket-like writer: takes at most `room` more bytes, then says `WouldBlock`.
    struct Choked {
        taken: Vec<u8>,
        room: usize,
    }

    impl Write for Choked {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            if self.room == 0 {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            let n = buf.len().min(self.room);
            self.taken.extend_from_slice(&buf[..n]);
            self.room -= n;
            Ok(n)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    /// What the writer does not take is kept in order and sent on the next flush;
    /// nothing is lost or reordered across partial writes.
    #[test]
    fn keeps_the_unsent_tail_in_order() {
        let mut peer = Choked {
            taken: Vec::new(),
            room: 4,
        };
        let mut pending = PendingWrite::new();
        pending.write_or_keep(&mut peer, b"hello ").unwrap();
        assert_eq!(pending.unsent(), b"o ");
        pending.write_or_keep(&mut peer, b"world").unwrap();
        assert_eq!(pending.len(), 7);
        peer.room = 100;
        pending.flush_to(&mut peer).unwrap();
        assert!(pending.is_empty());
        assert_eq!(peer.taken, b"hello world");
    }

    /// A peer that is always one write behind never empties the buffer; still, the buffer
    /// holds only about what is unsent, not everything ever sent through it.
    #[test]
    fn stays_small_when_the_peer_stays_behind() {
        let mut peer = Choked {
            taken: Vec::new(),
            room: 0,
        };
        let mut pending = PendingWrite::new();
        for n in 0..1000_u32 {
            peer.room = 90; // takes 90 of the 100 bytes we give it each round
            pending.write_or_keep(&mut peer, &[n as u8; 100]).unwrap();
            pending.flush_to(&mut peer).unwrap();
            assert!(
                pending.bytes.len() <= 2 * pending.len() + 100,
                "{} held for {} unsent",
                pending.bytes.len(),
                pending.len()
            );
        }
        assert!(!pending.is_empty());
    }

    /// A short write means the send buffer is full: the tail is kept without a second
    /// `write` that could only say `WouldBlock`.
    #[test]
    fn a_short_write_is_not_followed_by_a_useless_one() {
        struct Counting(Choked, usize);
        impl Write for Counting {
            fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
                self.1 += 1;
                self.0.write(buf)
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let choked = Choked {
            taken: Vec::new(),
            room: 10,
        };
        let mut peer = Counting(choked, 0);
        let mut pending = PendingWrite::new();
        pending.write_or_keep(&mut peer, &[1; 100]).unwrap();
        assert_eq!((peer.1, pending.len()), (1, 90));
    }

    /// Once everything is sent the buffer holds no allocation (idle connections stay small).
    #[test]
    fn frees_its_memory_when_drained() {
        let mut peer = Choked {
            taken: Vec::new(),
            room: 1,
        };
        let mut pending = PendingWrite::new();
        pending.write_or_keep(&mut peer, &[7; 1000]).unwrap();
        assert!(pending.bytes.capacity() >= 999);
        peer.room = usize::MAX;
        pending.flush_to(&mut peer).unwrap();
        assert_eq!(pending.bytes.capacity(), 0);
    }
}
