//! How much of a server's CPU time is its own code: the user-space share, by sampling.
//!
//! `/proc/<pid>/stat` splits CPU time into user and system time, but only as the kernel's
//! timer tick saw it (250 ticks a second here, counted in units of 10 ms): a half-second
//! window in which a server spends 8 % of its time in user space holds about ten such
//! ticks, and the split moves by half from one window to the next. So the benchmark samples
//! the server instead, as `perf record -e cpu-clock` does: a timer per server thread that
//! fires every `period` of that thread's CPU time and writes a small record into a ring
//! buffer we map, marked with where the thread was when the timer fired — in its own code
//! (user space) or in the kernel. About 2,000 samples per window put the share within a few
//! per cent; the exact total comes from `/proc`, the share from the samples.
//!
//! Each sample interrupts the server for a moment, and every server pays the same.

use std::io;
use std::os::fd::{FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::servers::{PERF_FLAG_FD_CLOEXEC, PerfEventAttr, threads_of};

/// Samples a server aims for in one window, at one core busy all along.
const SAMPLES_PER_WINDOW: u32 = 2_000;

/// Data pages per thread's ring: 32 KiB holds 4,096 records of 8 bytes, twice what one
/// thread busy for the whole window writes.
const DATA_PAGES: usize = 8;

const PERF_TYPE_SOFTWARE: u32 = 1;
const PERF_COUNT_SW_CPU_CLOCK: u64 = 0;
/// `struct perf_event_header.type` of a sample.
const PERF_RECORD_SAMPLE: u32 = 9;
/// `header.misc & PERF_RECORD_MISC_CPUMODE_MASK` of a sample taken in user space.
const PERF_RECORD_MISC_USER: u16 = 2;
const PERF_RECORD_MISC_CPUMODE_MASK: u16 = 7;
/// Where `data_head` sits in `struct perf_event_mmap_page` (the ring's first page).
const DATA_HEAD_OFFSET: usize = 1024;

/// One ring per server thread, counting from when it was attached.
pub struct UserTimeSampler {
    rings: Vec<Ring>,
}

impl UserTimeSampler {
    /// Starts sampling every thread the server `pid` has now, so that about
    /// [`SAMPLES_PER_WINDOW`] samples fall in a `window` of one busy core. `Err` says why it
    /// cannot be done here.
    pub fn attach(pid: u32, window: Duration) -> Result<UserTimeSampler, String> {
        let period = (window / SAMPLES_PER_WINDOW).max(Duration::from_micros(50));
        let mut rings = Vec::new();
        for tid in threads_of(pid)? {
            rings.push(Ring::open(tid, period)?);
        }
        Ok(UserTimeSampler { rings })
    }

    /// The share of the samples taken since [`attach`](Self::attach) that found the server
    /// in user space; `None` if there was none.
    pub fn user_share(&self) -> Option<f64> {
        let (user, all) = self
            .rings
            .iter()
            .map(Ring::count)
            .fold((0, 0), |(user, all), (u, a)| (user + u, all + a));
        (all > 0).then(|| user as f64 / all as f64)
    }
}

/// A cpu-clock sampling event on one thread, and its ring buffer mapped into our memory.
struct Ring {
    /// The first of `1 + DATA_PAGES` pages mapped; the kernel writes them, we only read.
    map: *mut u8,
    page: usize,
    _event: OwnedFd,
}

impl Ring {
    fn open(tid: i32, period: Duration) -> Result<Ring, String> {
        let attr = PerfEventAttr {
            kind: PERF_TYPE_SOFTWARE,
            size: size_of::<PerfEventAttr>() as u32,
            config: PERF_COUNT_SW_CPU_CLOCK,
            sample_period: period.as_nanos() as u64,
            // Nothing but the header: its `misc` says user space or kernel.
            sample_type: 0,
            read_format: 0,
            flags: 0, // enabled from the start, user space and kernel both sampled
            rest: [0; 8],
        };
        // Safety: `attr` is a valid, fully initialised perf_event_attr of the size it
        // declares; the other arguments are plain integers.
        let fd = unsafe {
            libc::syscall(
                libc::SYS_perf_event_open,
                &raw const attr,
                tid,
                -1,
                -1,
                PERF_FLAG_FD_CLOEXEC,
            )
        };
        if fd < 0 {
            return Err(format!(
                "perf_event_open on cpu-clock: {} (perf_event_paranoid, or no CAP_PERFMON?)",
                io::Error::last_os_error()
            ));
        }
        // Safety: a new fd, ours alone.
        let event = unsafe { OwnedFd::from_raw_fd(fd as i32) };
        // Safety: sysconf has no memory effects.
        let page = usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).unwrap_or(4096);
        // Safety: a fresh shared mapping of the event's ring (perf_event_open(2): one
        // header page and a power of two of data pages); nothing else is at that address,
        // and `Drop` unmaps exactly this length. Read-write, so the kernel never overwrites
        // records we have not read (the ring holds more than a window writes).
        let map = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                (1 + DATA_PAGES) * page,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd as i32,
                0,
            )
        };
        if map == libc::MAP_FAILED {
            return Err(format!(
                "mmap of a perf ring: {}",
                io::Error::last_os_error()
            ));
        }
        Ok(Ring {
            map: map.cast(),
            page,
            _event: event,
        })
    }

    /// (samples in user space, all samples) written so far.
    fn count(&self) -> (u64, u64) {
        // Safety: `map` is page-aligned and mapped for as long as `self` lives, so the
        // `data_head` field is an aligned u64 in it; the kernel writes it, so it is read
        // atomically. Acquire: the records it counts are visible after this load
        // (perf_event_open(2): "an rmb() after reading data_head").
        let head =
            unsafe { &*self.map.add(DATA_HEAD_OFFSET).cast::<AtomicU64>() }.load(Ordering::Acquire);
        let size = (DATA_PAGES * self.page) as u64;
        // Nothing was read before (`data_tail` stays 0), so the kernel has written the
        // records 0..head and dropped any that did not fit.
        let (mut user, mut all, mut at) = (0, 0, 0);
        while at < head {
            // Safety: `at % size` is inside the data pages, which start one page in; a
            // record header is 8 bytes at an 8-aligned offset, so it never crosses the end.
            let header = unsafe {
                self.map
                    .add(self.page + (at % size) as usize)
                    .cast::<[u8; 8]>()
                    .read_volatile()
            };
            let kind = u32::from_ne_bytes([header[0], header[1], header[2], header[3]]);
            let misc = u16::from_ne_bytes([header[4], header[5]]);
            let length = u16::from_ne_bytes([header[6], header[7]]);
            if kind == PERF_RECORD_SAMPLE {
                all += 1;
                if misc & PERF_RECORD_MISC_CPUMODE_MASK == PERF_RECORD_MISC_USER {
                    user += 1;
                }
            }
            if length < 8 {
                break; // not a record: stop rather than loop
            }
            at += u64::from(length);
        }
        (user, all)
    }
}

impl Drop for Ring {
    fn drop(&mut self) {
        // Safety: unmaps exactly the mapping `open` made; nothing refers to it after this.
        unsafe {
            libc::munmap(self.map.cast(), (1 + DATA_PAGES) * self.page);
        }
    }
}
