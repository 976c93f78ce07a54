//! The buffer contract, in a type: what a buffer must promise before a request may own it.
//!
//! A request's buffer is read or written by the kernel *after* the submission, at moments no
//! `poll` controls, and the [`Op`](crate::op::Op) that owns it is moved around meanwhile
//! (returned, pinned, parked in a slot). So the bytes the kernel was told about must not
//! move when the buffer moves, and must stay valid until the request's last completion. A
//! `Vec<u8>` keeps its bytes on the heap: moving the `Vec` moves three words, not the bytes.
//! A `[u8; 16]` *is* its bytes: moving it moves them, and the kernel would read the old place.
//! A borrowed `&[u8]` may end while the request runs. The compiler cannot see any of this in
//! a raw pointer, so the promise is an `unsafe trait` (tokio-uring's `IoBuf` is the model):
//! only types whose bytes are stable implement it, and the requests that move bytes
//! ([`TcpStream::write_all`](crate::net::TcpStream::write_all), [`Reader`](crate::io::Reader),
//! [`append`](crate::io::append)) take nothing else.
//!
//! An array does not qualify; neither does a borrowed slice:
//!
//! ```compile_fail,E0277
//! # use lesson_completion::net::TcpStream;
//! async fn send(stream: &mut TcpStream) {
//!     let bytes = [b'x'; 16]; // moving the array moves its bytes
//!     let _ = stream.write_all(bytes).await;
//! }
//! ```
//!
//! ```compile_fail,E0521
//! # use lesson_completion::net::TcpStream;
//! async fn send(stream: &mut TcpStream, bytes: &[u8]) {
//!     let _ = stream.write_all(bytes).await; // the borrow may end while the kernel reads
//! }
//! ```
//!
//! while the same bytes in a `Vec` (or a `Box<[u8]>`) do:
//!
//! ```no_run
//! # use lesson_completion::net::TcpStream;
//! async fn send(stream: &mut TcpStream, bytes: &[u8]) {
//!     let array = [b'x'; 16];
//!     let (sent, _array) = stream.write_all(array.to_vec()).await;
//!     let (sent, _bytes) = stream.write_all(bytes.to_vec()).await;
//! }
//! ```

/// A buffer whose bytes stay where they are while the value is moved, for as long as it
/// lives: a request may own it while the kernel reads from it.
///
/// # Safety
/// For as long as the value exists, however it is moved, `stable_ptr()` must point to
/// `len()` initialized bytes that stay valid and at the same address, that nothing but the
/// holder of the value changes (no interior mutability, no second owner), and that `len()`
/// does not change unless the holder changes it through [`IoBufMut`]. The type must own its
/// bytes or borrow them for `'static` (a borrow that may end is not stable).
pub unsafe trait IoBuf: Unpin + 'static {
    /// Where the bytes start.
    fn stable_ptr(&self) -> *const u8;

    /// How many bytes hold data: what a send sends.
    fn len(&self) -> usize;

    /// Whether there are no bytes at all.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The bytes, to look at.
    fn bytes(&self) -> &[u8] {
        // Safety: the trait promises `len()` initialized bytes at `stable_ptr()`.
        unsafe { std::slice::from_raw_parts(self.stable_ptr(), self.len()) }
    }
}

/// A buffer the kernel may also write into: a read fills it from its start.
///
/// # Safety
/// As for [`IoBuf`], and in addition `stable_mut_ptr()` must point to `capacity()` writable
/// bytes, stable in the same way, of which the first `len()` are the initialized ones.
pub unsafe trait IoBufMut: IoBuf {
    /// Where the kernel may write.
    fn stable_mut_ptr(&mut self) -> *mut u8;

    /// How many bytes the kernel may write.
    fn capacity(&self) -> usize;

    /// The kernel wrote the first `len` bytes: they are the buffer's data now.
    ///
    /// # Safety
    /// The first `len` bytes (`len ≤ capacity()`) must be initialized.
    unsafe fn set_len(&mut self, len: usize);
}

// Safety: a `Vec`'s bytes live in its heap allocation, which moving the `Vec` does not move;
// the allocation lives until the `Vec` is dropped or grown, and only its owner can grow it.
unsafe impl IoBuf for Vec<u8> {
    fn stable_ptr(&self) -> *const u8 {
        self.as_ptr()
    }

    fn len(&self) -> usize {
        Vec::len(self)
    }
}

// Safety: as for `IoBuf`: the spare capacity is part of the same stable allocation.
unsafe impl IoBufMut for Vec<u8> {
    fn stable_mut_ptr(&mut self) -> *mut u8 {
        self.as_mut_ptr()
    }

    fn capacity(&self) -> usize {
        Vec::capacity(self)
    }

    unsafe fn set_len(&mut self, len: usize) {
        // Safety: the caller promises the first `len` bytes are initialized (≤ capacity).
        unsafe { Vec::set_len(self, len) }
    }
}

// Safety: a boxed slice's bytes live in its heap allocation, which never moves or grows.
unsafe impl IoBuf for Box<[u8]> {
    fn stable_ptr(&self) -> *const u8 {
        self.as_ptr()
    }

    fn len(&self) -> usize {
        <[u8]>::len(self)
    }
}

// Safety: bytes borrowed for `'static` (a string literal, a leaked buffer) live for the rest
// of the process and, being shared, are never changed.
unsafe impl IoBuf for &'static [u8] {
    fn stable_ptr(&self) -> *const u8 {
        self.as_ptr()
    }

    fn len(&self) -> usize {
        <[u8]>::len(self)
    }
}

/// How many bytes of a buffer of `len` bytes one request asks the kernel to move. A
/// request's length field has 32 bits: `len as u32` would make a buffer of exactly 4 GiB a
/// request for 0 bytes — a read that says EOF, a send that says it wrote nothing. And the
/// kernel moves at most 0x7ffff000 bytes per read or write anyway (read(2), NOTES), so
/// that is what a request asks for at most; a longer buffer's rest goes in the next.
pub(crate) fn request_len(len: usize) -> u32 {
    const MOST_PER_REQUEST: u32 = 0x7fff_f000;
    u32::try_from(len).map_or(MOST_PER_REQUEST, |len| len.min(MOST_PER_REQUEST))
}
