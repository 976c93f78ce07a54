//! The provided-buffer ring: buffers we lend the kernel, which it picks from when data comes.
//!
//! With readiness (lessons 1–5) each connection reads into a buffer of its own, chosen when
//! it calls `read`. With completions, a receive must name its buffer when it is *submitted*
//! — long before any data comes — so 10,000 idle connections would pin 10,000 buffers.
//! A provided-buffer ring (`io_uring_register_buf_ring(3)`, Linux 5.19) turns that around:
//! we put buffers into one more ring shared with the kernel, and a receive submitted with
//! `IOSQE_BUFFER_SELECT` takes one only when data arrives. Its completion says which (the
//! buffer id in the upper 16 bits of its flags, `IORING_CQE_F_BUFFER`). The buffer is then
//! ours until we put it back; if the ring is empty, the receive fails with `ENOBUFS`.
//!
//! We do not put every buffer back at once. A buffer given back waits on a stack of spares,
//! and before each turn the driver tops the ring up from the top of that stack — the buffers
//! given back last — to one per receive in flight and a few more ([`offer`](BufRing::offer)):
//! so the same few buffers come back again and again while they are still in the cache.
//!
//! ```text
//!   entries: [ id 4 | id 5 | id 6 | … ]   the kernel takes from the head,
//!                ▲ head          ▲ tail    we add at the tail (and publish the new tail)
//! ```
//!
//! The ring is shared by every connection, so a connection must not be able to keep it: a
//! client that never reads its echo would keep the buffers its bytes are in. How the streams
//! make sure it cannot is in [`net`](crate::net) (a share per connection, and a buffer of its
//! own for a connection that finds the ring short).

use std::alloc::{Layout, alloc_zeroed, dealloc};
use std::cell::RefCell;
use std::io;
use std::ops::Deref;
use std::ptr::NonNull;
use std::rc::Rc;
use std::sync::atomic::{AtomicU16, Ordering};

use io_uring::Submitter;
use io_uring::types::BufRingEntry;

use crate::buf::IoBuf;

/// The buffer group id our receives name: we have just one group.
pub const GROUP: u16 = 0;

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
    /// Where each buffer is.
    places: Vec<Place>,
    /// The buffers that are ours and empty, the one given back last on top: the next to be
    /// offered (see [`offer`](Self::offer)).
    spare: Vec<u16>,
    /// How many are in the ring.
    offered: usize,
    lent_count: usize,
}

/// Where a buffer is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Place {
    /// In the ring: the kernel may fill it.
    Offered,
    /// Ours and empty, among the spares.
    Spare,
    /// Ours, holding bytes the kernel put there, until given back.
    Lent,
}

impl BufRing {
    /// Allocates `count` buffers of `size` bytes (`count` a power of two), registers them
    /// with the ring as buffer group [`GROUP`], and offers them all to the kernel (later, only
    /// as many as [`offer`](Self::offer) is asked for).
    ///
    /// # Safety
    /// The kernel keeps the addresses of the entries and of the buffers: the returned
    /// `BufRing` must not be dropped while the registration lasts and a request that selects
    /// buffers from [`GROUP`] may run. The caller keeps that by closing the io_uring (or
    /// unregistering the group) only after every such request has completed, and dropping
    /// the `BufRing` only after that — or by never dropping it. ([`Driver`] does both: it
    /// closes the ring before it frees the buffers, and leaks them if a request would not
    /// stop.)
    ///
    /// [`Driver`]: crate::ring::Driver
    pub unsafe fn register(
        submitter: &Submitter<'_>,
        count: u16,
        size: u32,
    ) -> io::Result<BufRing> {
        if !count.is_power_of_two() {
            return Err(io::Error::other("the buffer count must be a power of two"));
        }
        // The ring's memory must start on a page (`io_uring_register_buf_ring(3)`).
        let layout =
            Layout::from_size_align(usize::from(count) * size_of::<BufRingEntry>(), page_size())
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
            places: vec![Place::Spare; usize::from(count)],
            spare: (0..count).rev().collect(),
            offered: 0,
            lent_count: 0,
        };
        // Safety: `entries` is page-aligned and holds `count` entries; the caller keeps them
        // (and the buffers they will point to) alive while the registration may be used.
        unsafe {
            submitter.register_buf_ring_with_flags(entries.as_ptr() as u64, count, GROUP, 0)?;
        }
        ring.offer(usize::from(count));
        Ok(ring)
    }

    /// The kernel filled buffer `id`: it is ours until [`give_back`](Self::give_back).
    /// Returns where it starts; the completion said how many bytes it holds.
    ///
    /// # Safety
    /// A completion of a request that selects from this ring named buffer `id`
    /// (`IORING_CQE_F_BUFFER`), and this is the one take for that completion. Taken while
    /// still in the ring, the kernel could fill it under whoever reads it — and giving it
    /// back would put it in the ring twice.
    ///
    /// # Panics
    /// If buffer `id` is not in the ring: the kernel hands out only buffers we offered, and
    /// never one twice.
    pub(crate) unsafe fn take(&mut self, id: u16) -> NonNull<u8> {
        let place = &mut self.places[usize::from(id)];
        assert!(
            *place == Place::Offered,
            "buffer {id} taken twice, or never offered"
        );
        *place = Place::Lent;
        self.offered -= 1;
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

    /// Buffer `id` is empty again: it goes on top of the spares, the first to be offered
    /// again (at the next [`offer`](Self::offer)).
    ///
    /// # Safety
    /// Nobody reads or writes buffer `id`'s bytes any more (the [`RingBuf`] that held it is
    /// being dropped, or there never was one): once offered, the kernel may write into them.
    ///
    /// # Panics
    /// If buffer `id` is not lent (it would be in the ring twice).
    pub(crate) unsafe fn give_back(&mut self, id: u16) {
        let place = &mut self.places[usize::from(id)];
        assert!(*place == Place::Lent, "buffer {id} given back twice");
        *place = Place::Spare;
        self.lent_count -= 1;
        self.spare.push(id);
    }

    /// Puts spare buffers at the tail of the ring, the one given back last first, until
    /// `target` are in the ring or no spare is left.
    ///
    /// Why not all of them: the kernel takes buffers from the head of the ring in turn, so
    /// with all 1,024 offered a stream walks through all of them (32 MiB, more than the
    /// caches hold), and each byte the kernel copies in, and the send copies out, misses the
    /// cache. Keeping only a few more in the ring than the next turn needs, the same few
    /// buffers come back again and again, and stay in the cache.
    pub fn offer(&mut self, target: usize) {
        let mask = self.places.len() - 1;
        let before = self.tail;
        while self.offered < target {
            let Some(id) = self.spare.pop() else { break };
            self.places[usize::from(id)] = Place::Offered;
            self.offered += 1;
            let start = self.start_of(id);
            // Safety: the index is masked into the ring; the kernel reads only entries
            // between its head and the tail we publish below, and this one is past that
            // tail. One caveat: the shared tail lives inside entry 0 (`struct
            // io_uring_buf_ring` overlays it on `bufs[0].resv`, the last 2 of the entry's 16
            // bytes), so the `&mut` to entry 0 also covers the tail, which the kernel reads at
            // any moment. Nothing writes it through this reference — `set_addr`, `set_len`
            // and `set_bid` write the other fields — and the kernel never writes it; it is
            // stored below, atomically, through a pointer of its own. The buffer is a spare:
            // given back, so nobody uses its bytes (`give_back`'s contract).
            let entry = unsafe { &mut *self.entries.as_ptr().add(usize::from(self.tail) & mask) };
            entry.set_addr(start.as_ptr() as u64);
            entry.set_len(self.size);
            entry.set_bid(id);
            self.tail = self.tail.wrapping_add(1);
        }
        if self.tail == before {
            return;
        }
        // Safety: the tail field lives inside the first entry, which the allocation holds;
        // the kernel reads it concurrently, so it is written atomically, with Release order
        // so that the entries written above are visible before the new tail.
        unsafe {
            let tail = BufRingEntry::tail(self.entries.as_ptr()).cast::<AtomicU16>();
            (*tail).store(self.tail, Ordering::Release);
        }
    }

    /// A buffer the kernel filled for a result nobody will read (its request was abandoned):
    /// taken and given back at once.
    ///
    /// # Safety
    /// As for [`take`](Self::take): a completion named buffer `id`, and nobody else took it.
    pub(crate) unsafe fn recycle(&mut self, id: u16) {
        // Safety: as our caller promises; nobody sees the buffer between the two.
        unsafe {
            self.take(id);
            self.give_back(id);
        }
    }

    /// How many buffers are ours (not in the ring) now.
    pub fn lent(&self) -> usize {
        self.lent_count
    }

    /// How many buffers the kernel may pick from: those in the ring, and the spares that
    /// the next [`offer`](Self::offer) may put there.
    pub fn available(&self) -> usize {
        self.places.len() - self.lent_count
    }

    /// How many buffers are in the ring now.
    pub fn offered(&self) -> usize {
        self.offered
    }
}

impl Drop for BufRing {
    fn drop(&mut self) {
        // Safety: allocated and mapped in `register` with this layout and length; by its
        // contract the kernel no longer uses them.
        unsafe {
            dealloc(self.entries.as_ptr().cast(), self.layout);
            libc::munmap(self.memory.as_ptr().cast(), self.memory_len);
        }
    }
}

/// The system's page size (`sysconf(_SC_PAGESIZE)`: 4 KiB on x86-64, up to 64 KiB on some
/// ARM and POWER machines).
fn page_size() -> usize {
    // Safety: sysconf reads a constant of the system; no pointer is involved.
    match unsafe { libc::sysconf(libc::_SC_PAGESIZE) } {
        n if n > 0 => n as usize,
        _ => 4096,
    }
}

/// A provided buffer the kernel filled: ours until dropped, then back in the ring.
pub struct RingBuf {
    id: u16,
    start: NonNull<u8>,
    len: usize,
    ring: Rc<RefCell<BufRing>>,
}

impl RingBuf {
    /// Takes buffer `id` out of `ring`, holding the `len` bytes the kernel put there.
    ///
    /// # Safety
    /// As for [`BufRing::take`]: a completion named buffer `id`, with `len` bytes in it, and
    /// this is the one take for it.
    pub(crate) unsafe fn take(ring: &Rc<RefCell<BufRing>>, id: u16, len: usize) -> RingBuf {
        // Safety: as our caller promises.
        let start = unsafe { ring.borrow_mut().take(id) };
        RingBuf {
            id,
            start,
            len,
            ring: Rc::clone(ring),
        }
    }
}

impl Deref for RingBuf {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        self.bytes()
    }
}

// Safety: the bytes are in the ring's mapping, which the `Rc` keeps alive as long as this
// value; moving a `RingBuf` does not move them. The buffer is out of the ring (`take`), so
// the kernel does not write into it until `drop` gives it back, and nothing else does.
unsafe impl IoBuf for RingBuf {
    fn stable_ptr(&self) -> *const u8 {
        self.start.as_ptr()
    }

    fn len(&self) -> usize {
        self.len
    }
}

impl Drop for RingBuf {
    fn drop(&mut self) {
        // Safety: this `RingBuf` was the buffer's only holder, and it is going away.
        unsafe { self.ring.borrow_mut().give_back(self.id) };
    }
}
