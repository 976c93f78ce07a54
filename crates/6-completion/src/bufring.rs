//! The provided-buffer ring: buffers we lend the kernel, which it picks from when data comes.
//!
//! With readiness (lessons 1–5) each connection reads into a buffer of its own, chosen when
//! it calls `read`. With completions, a receive must name its buffer when it is *submitted*
//! — long before any data comes — so 10,000 idle connections would pin 10,000 buffers.
//! A provided-buffer ring (`io_uring_register_buf_ring`, Linux 5.19) turns that around: we
//! put buffers into one more ring shared with the kernel, and a receive submitted with
//! `IOSQE_BUFFER_SELECT` takes one only when data arrives. Its completion says which (the
//! buffer id in the upper 16 bits of its flags, `IORING_CQE_F_BUFFER`). The buffer is then
//! ours until we put it back; if the ring is empty, the receive fails with `ENOBUFS`.
//!
//! ```text
//!   entries: [ id 4 | id 5 | id 6 | … ]   the kernel takes from the head,
//!                ▲ head          ▲ tail    we add at the tail (and publish the new tail)
//! ```

use std::alloc::{Layout, alloc_zeroed, dealloc};
use std::io;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU16, Ordering};
use std::task::{Context, Poll, Waker};

use io_uring::Submitter;
use io_uring::types::BufRingEntry;

/// The buffer group id our receives name: we have just one group.
pub const GROUP: u16 = 0;

/// The ring's memory must start on a page (`io_uring_register_buf_ring(3)`).
const PAGE: usize = 4096;

/// The buffers, the ring of entries that offers them to the kernel, and who has which.
pub struct BufRing {
    entries: NonNull<BufRingEntry>,
    layout: Layout,
    /// Where the buffers are: `count` × `size` bytes of anonymous memory (`mmap`), which
    /// the kernel backs with real pages only where something is written: a buffer that held
    /// 64 bytes costs one page. (An aligned Rust allocation would zero it all at once.) A
    /// raw pointer, not a slice: the kernel writes into it behind Rust's back.
    memory: NonNull<u8>,
    memory_len: usize,
    size: u32,
    /// Our tail: the next entry we fill. The kernel reads it through the shared tail field.
    tail: u16,
    /// `lent[id]`: the buffer is ours now (the kernel put data in it), not in the ring.
    lent: Vec<bool>,
    lent_count: usize,
    /// Tasks whose receive found the ring empty, waiting for a buffer to come back.
    waiters: Vec<Waker>,
}

impl BufRing {
    /// Allocates `count` buffers of `size` bytes (`count` a power of two), registers them
    /// with the ring, and offers them all to the kernel.
    pub fn register(submitter: &Submitter<'_>, count: u16, size: u32) -> io::Result<BufRing> {
        if !count.is_power_of_two() {
            return Err(io::Error::other("the buffer count must be a power of two"));
        }
        let layout = Layout::from_size_align(usize::from(count) * size_of::<BufRingEntry>(), PAGE)
            .map_err(io::Error::other)?;
        let memory_len = usize::from(count) * size as usize;
        // Safety: a fresh private anonymous mapping, no fd, no fixed address.
        let memory = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                memory_len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if memory == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let memory = NonNull::new(memory.cast::<u8>()).expect("mmap never maps address 0");
        // Safety: the layout has a non-zero size (count ≥ 1).
        let Some(entries) = NonNull::new(unsafe { alloc_zeroed(layout) }.cast::<BufRingEntry>())
        else {
            // Safety: mapped just above, with this length, and used by nobody yet.
            unsafe { libc::munmap(memory.as_ptr().cast(), memory_len) };
            return Err(io::Error::other("cannot allocate the buffer ring"));
        };
        let mut ring = BufRing {
            entries,
            layout,
            memory,
            memory_len,
            size,
            tail: 0,
            lent: vec![true; usize::from(count)],
            lent_count: usize::from(count),
            waiters: Vec::new(),
        };
        // Safety: `entries` is page-aligned, holds `count` entries, and lives as long as the
        // ring does (the driver drops the io_uring before its `BufRing`).
        unsafe {
            submitter.register_buf_ring_with_flags(entries.as_ptr() as u64, count, GROUP, 0)?;
        }
        for id in 0..count {
            ring.give_back(id);
        }
        Ok(ring)
    }

    /// The kernel filled buffer `id`: it is ours until [`give_back`](Self::give_back).
    /// Returns where it starts; the completion said how many bytes it holds.
    ///
    /// # Panics
    /// If buffer `id` is already ours: the kernel never hands out a buffer twice.
    pub fn take(&mut self, id: u16) -> NonNull<u8> {
        let lent = &mut self.lent[usize::from(id)];
        assert!(!*lent, "buffer {id} taken twice");
        *lent = true;
        self.lent_count += 1;
        self.start_of(id)
    }

    fn start_of(&self, id: u16) -> NonNull<u8> {
        // Safety: `id` < count, so the offset stays inside the allocation.
        unsafe { self.memory.add(usize::from(id) * self.size as usize) }
    }

    /// The size of each buffer.
    pub fn buffer_size(&self) -> u32 {
        self.size
    }

    /// Puts buffer `id` back at the tail of the ring: the kernel may fill it again.
    ///
    /// # Panics
    /// If buffer `id` is not ours (it would be in the ring twice).
    pub fn give_back(&mut self, id: u16) {
        let lent = &mut self.lent[usize::from(id)];
        assert!(*lent, "buffer {id} given back twice");
        *lent = false;
        self.lent_count -= 1;
        let mask = self.lent.len() - 1;
        let start = self.start_of(id);
        // Safety: the index is masked into the ring; the kernel reads only entries between
        // its head and the tail we publish below, and this one is past that tail.
        let entry = unsafe { &mut *self.entries.as_ptr().add(usize::from(self.tail) & mask) };
        entry.set_addr(start.as_ptr() as u64);
        entry.set_len(self.size);
        entry.set_bid(id);
        self.tail = self.tail.wrapping_add(1);
        // Safety: the tail field lives inside the first entry, which the allocation holds;
        // the kernel reads it concurrently, so it is written atomically, with Release order
        // so that the entry written above is visible before the new tail.
        unsafe {
            let tail = BufRingEntry::tail(self.entries.as_ptr()).cast::<AtomicU16>();
            (*tail).store(self.tail, Ordering::Release);
        }
        for waker in self.waiters.drain(..) {
            waker.wake();
        }
    }

    /// A buffer the kernel filled for a result nobody will read (its request was abandoned):
    /// taken and given back at once.
    pub fn recycle(&mut self, id: u16) {
        self.take(id);
        self.give_back(id);
    }

    /// Ready when the ring holds at least one buffer; else the task is woken when one comes
    /// back. A receive that ended with `ENOBUFS` waits here before it is submitted again,
    /// so it does not fail again at once, in a loop.
    pub fn poll_available(&mut self, cx: &Context<'_>) -> Poll<()> {
        if self.lent_count < self.lent.len() {
            return Poll::Ready(());
        }
        self.waiters.push(cx.waker().clone());
        Poll::Pending
    }

    /// How many buffers are ours (not in the ring) now.
    pub fn lent(&self) -> usize {
        self.lent_count
    }
}

impl Drop for BufRing {
    fn drop(&mut self) {
        // Safety: allocated and mapped in `register` with this layout and length. The
        // io_uring is closed by now.
        unsafe {
            dealloc(self.entries.as_ptr().cast(), self.layout);
            libc::munmap(self.memory.as_ptr().cast(), self.memory_len);
        }
    }
}
