//! How much of a server's CPU time is its own code: the user-space share, by sampling.
//!
//! `/proc/<pid>/stat` splits CPU time into user and system time, but only as the kernel's
//! timer tick saw it (250 ticks a second here, counted in units of 10 ms): a half-second
//! window in which a server spends 8 % of its time in user space holds about ten such
//! ticks, and the split moves by half from one window to the next. So the benchmark samples
//! the server instead, as `perf record -e cpu-clock` does: a timer per server thread that
//! fires every `period` of that thread's CPU time and writes a small record into a ring
//! buffer we map, marked with where the thread was when the timer fired — in its own code
//! (user space) or in the kernel — and at which instruction. About 2,000 samples per window
//! put the share within a few per cent; the exact total comes from `/proc`, the share from
//! the samples.
//!
//! One kind of sample is counted differently from perf: a sample *held back* behind another
//! interrupt. The timer's interrupt is taken only where interrupts are enabled. When another
//! interrupt — a reschedule IPI, which is how io_uring without `DEFER_TASKRUN` tells a
//! running thread it has completions to run (task work, `TWA_SIGNAL`) — stops the thread in
//! user space, the kernel handles it with interrupts off and enables them again in
//! `irqentry_exit_to_user_mode`, on its way back, before it runs any of the work. A timer that
//! came due meanwhile fires right there, and perf files the sample under that kernel
//! function; the thread was in user space when it was stopped. On this machine (a VM, where
//! delivering an interrupt costs microseconds) monoio's echo under 100 × 64 B ping-pong had
//! up to 7 % of its samples land there, and its user-space share read 1 % in some stretches
//! of a steady load and 5 % in others; with those samples counted as user space, 8 % and 7 %
//! (`perf record -e cpu-clock`, 100 ms windows). So a kernel sample whose instruction lies in
//! `irqentry_exit_to_user_mode` (its address from `/proc/kallsyms`) counts as user space —
//! and with it the delivery of the interrupt that stopped the thread, as for any interrupt
//! that stops user code while nothing holds the timer back. A kernel that does not show its
//! addresses leaves those samples in the kernel, as perf does — and so does one that turns
//! interrupts on again in another function (this one, 6.18, also has an out-of-line
//! `exit_to_user_mode_loop`): check with `perf report` where they land before trusting the
//! user-space column of a server that takes IPIs.
//!
//! Each sample interrupts the server for a moment, and every server pays the same.

use std::io;
use std::ops::Range;
use std::os::fd::{FromRawFd, OwnedFd};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::servers::{PERF_FLAG_FD_CLOEXEC, PerfEventAttr, threads_of};

/// Samples a server aims for in one window, at one core busy all along.
const SAMPLES_PER_WINDOW: u32 = 2_000;

/// Data pages per thread's ring: 64 KiB holds 4,096 records of 16 bytes, twice what one
/// thread busy for the whole window writes.
const DATA_PAGES: usize = 16;

const PERF_TYPE_SOFTWARE: u32 = 1;
const PERF_COUNT_SW_CPU_CLOCK: u64 = 0;
/// `sample_type`: each sample carries the instruction pointer, after the header.
const PERF_SAMPLE_IP: u64 = 1;
/// `struct perf_event_header.type` of a sample.
const PERF_RECORD_SAMPLE: u32 = 9;
/// `header.misc & PERF_RECORD_MISC_CPUMODE_MASK` of a sample taken in user space.
const PERF_RECORD_MISC_USER: u16 = 2;
const PERF_RECORD_MISC_CPUMODE_MASK: u16 = 7;
/// Where `data_head` sits in `struct perf_event_mmap_page` (the ring's first page).
const DATA_HEAD_OFFSET: usize = 1024;
/// The kernel function where a timer held back behind another interrupt from user space
/// fires (see the module doc).
const RETURN_TO_USER: &str = "irqentry_exit_to_user_mode";

/// One ring per server thread, counting from when it was attached.
pub struct UserTimeSampler {
    rings: Vec<Ring>,
    /// The addresses of [`RETURN_TO_USER`], if the kernel shows them.
    held_back: Option<Range<u64>>,
}

impl UserTimeSampler {
    /// Starts sampling every thread the server `pid` has now, so that about
    /// [`SAMPLES_PER_WINDOW`] samples fall in a `window` of one busy core. `Err` says why it
    /// cannot be done here.
    pub fn attach(pid: u32, window: Duration) -> Result<UserTimeSampler, String> {
        UserTimeSampler::attach_threads(&threads_of(pid)?, window)
    }

    /// Starts sampling the threads `tids` (of any process we may trace).
    fn attach_threads(tids: &[i32], window: Duration) -> Result<UserTimeSampler, String> {
        let period = (window / SAMPLES_PER_WINDOW).max(Duration::from_micros(50));
        let mut rings = Vec::new();
        for &tid in tids {
            rings.push(Ring::open(tid, period)?);
        }
        Ok(UserTimeSampler {
            rings,
            held_back: return_to_user(),
        })
    }

    /// The share of the samples taken since [`attach`](Self::attach) that found the server
    /// in user space, held-back ones included; `None` if there was none.
    pub fn user_share(&self) -> Option<f64> {
        let (user, all) = self
            .rings
            .iter()
            .map(|ring| ring.count(self.held_back.as_ref()))
            .fold((0, 0), |(user, all), (u, a)| (user + u, all + a));
        (all > 0).then(|| user as f64 / all as f64)
    }
}

/// Where [`RETURN_TO_USER`] lies in the kernel, from `/proc/kallsyms`: from its address to
/// the next symbol's. Read once per run. `None` where the file hides addresses (they read
/// as 0 without privilege) or the kernel has no such function.
fn return_to_user() -> Option<Range<u64>> {
    static RANGE: OnceLock<Option<Range<u64>>> = OnceLock::new();
    RANGE
        .get_or_init(|| {
            let symbols = std::fs::read_to_string("/proc/kallsyms").ok()?;
            symbol_range(&symbols, RETURN_TO_USER)
        })
        .clone()
}

/// The addresses of the text symbol `name` in `kallsyms` (lines `ADDRESS TYPE NAME [MODULE]`,
/// sorted by address): from its own to the next higher one.
fn symbol_range(kallsyms: &str, name: &str) -> Option<Range<u64>> {
    let mut lines = kallsyms.lines().map(|line| {
        let mut fields = line.split_whitespace();
        let address = fields.next().and_then(|a| u64::from_str_radix(a, 16).ok());
        (address, fields.nth(1))
    });
    let start = lines.find_map(|(address, symbol)| (symbol == Some(name)).then_some(address))??;
    let end = lines.find_map(|(address, _)| address.filter(|&a| a > start))?;
    (start > 0).then_some(start..end)
}

/// (samples in user space, all samples) among the records in `data` (what the kernel wrote
/// into a ring, from its start): a user-space sample, or a kernel sample whose instruction
/// lies in `held_back`, counts as user space.
fn count_samples(data: &[u8], held_back: Option<&Range<u64>>) -> (u64, u64) {
    let word = |at: usize| -> Option<[u8; 8]> { data.get(at..at + 8)?.try_into().ok() };
    let (mut user, mut all, mut at) = (0, 0, 0);
    while let Some(header) = word(at) {
        let kind = u32::from_ne_bytes([header[0], header[1], header[2], header[3]]);
        let misc = u16::from_ne_bytes([header[4], header[5]]);
        let length = usize::from(u16::from_ne_bytes([header[6], header[7]]));
        if kind == PERF_RECORD_SAMPLE
            && let Some(ip) = word(at + 8).filter(|_| length >= 16)
        {
            all += 1;
            let in_user_space = misc & PERF_RECORD_MISC_CPUMODE_MASK == PERF_RECORD_MISC_USER;
            if in_user_space
                || held_back.is_some_and(|range| range.contains(&u64::from_ne_bytes(ip)))
            {
                user += 1;
            }
        }
        if length < 8 {
            break; // not a record: stop rather than loop
        }
        at += length;
    }
    (user, all)
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
            // The header (its `misc` says user space or kernel) and the instruction.
            sample_type: PERF_SAMPLE_IP,
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

    /// (samples in user space, all samples) written so far; see [`count_samples`].
    fn count(&self, held_back: Option<&Range<u64>>) -> (u64, u64) {
        // Safety: `map` is page-aligned and mapped for as long as `self` lives, so the
        // `data_head` field is an aligned u64 in it; the kernel writes it, so it is read
        // atomically. Acquire: the records it counts are visible after this load
        // (perf_event_open(2): "an rmb() after reading data_head").
        let head =
            unsafe { &*self.map.add(DATA_HEAD_OFFSET).cast::<AtomicU64>() }.load(Ordering::Acquire);
        // Nothing was read (`data_tail` stays 0), so the kernel never wrote past the ring's
        // end: it drops the samples that do not fit rather than overwrite one.
        let written = usize::try_from(head).map_or(0, |head| head.min(DATA_PAGES * self.page));
        // Safety: the data pages start one page into the mapping and stay mapped while
        // `self` lives; the first `written` bytes of them are records the kernel finished
        // before it published `head` (acquired above) and never writes again.
        let data = unsafe { std::slice::from_raw_parts(self.map.add(self.page), written) };
        count_samples(data, held_back)
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;
    use std::time::Instant;

    /// One ring record: a header and, for a sample, its instruction pointer.
    fn record(kind: u32, misc: u16, ip: u64, length: u16) -> Vec<u8> {
        let mut bytes = Vec::new();
        bytes.extend(kind.to_ne_bytes());
        bytes.extend(misc.to_ne_bytes());
        bytes.extend(length.to_ne_bytes());
        bytes.extend(ip.to_ne_bytes());
        bytes.resize(usize::from(length), 0);
        bytes
    }

    const KERNEL: u16 = 1;
    const LOST: u32 = 2;

    /// A sample counts as user space when taken there, or when taken in the kernel inside the
    /// held-back range; a kernel sample elsewhere and a record that is not a sample do not.
    #[test]
    fn a_sample_held_back_in_the_return_to_user_space_counts_as_user_space() {
        let held_back = 0xffff_0100..0xffff_0200;
        let ring: Vec<u8> = [
            record(PERF_RECORD_SAMPLE, PERF_RECORD_MISC_USER, 0x5555_1000, 16),
            record(PERF_RECORD_SAMPLE, KERNEL, 0xffff_0150, 16),
            record(PERF_RECORD_SAMPLE, KERNEL, 0xffff_0200, 16),
            record(LOST, 0, 0, 24),
            record(PERF_RECORD_SAMPLE, KERNEL, 0xffff_00ff, 16),
        ]
        .concat();
        assert_eq!(count_samples(&ring, Some(&held_back)), (2, 4));
        assert_eq!(
            count_samples(&ring, None),
            (1, 4),
            "without the range, as perf counts"
        );
        assert_eq!(
            count_samples(&ring[..40], Some(&held_back)),
            (2, 2),
            "a record cut short is not counted"
        );
    }

    /// The range of a function in /proc/kallsyms runs to the next higher address; hidden
    /// addresses (all 0) give none.
    #[test]
    fn finds_a_function_in_kallsyms() {
        let kallsyms = "ffffffff82244440 T __pfx_irqentry_exit_to_user_mode\n\
                        ffffffff82244450 T irqentry_exit_to_user_mode\n\
                        ffffffff82244450 t alias_at_the_same_address\n\
                        ffffffff82244600 T __pfx_irqentry_exit\n";
        assert_eq!(
            symbol_range(kallsyms, RETURN_TO_USER),
            Some(0xffff_ffff_8224_4450..0xffff_ffff_8224_4600)
        );
        let hidden = "0000000000000000 T irqentry_exit_to_user_mode\n\
                      0000000000000000 T __pfx_irqentry_exit\n";
        assert_eq!(symbol_range(hidden, RETURN_TO_USER), None);
        assert_eq!(symbol_range(kallsyms, "no_such_function"), None);
    }

    /// Runs `work` on a new thread until `window` has passed, sampling that thread alone;
    /// `None` where perf may not sample here (the test then proves nothing and says so).
    fn user_share_of(window: Duration, work: fn()) -> Option<f64> {
        let (tid_sender, tid) = mpsc::channel();
        let (start_sender, start) = mpsc::channel::<()>();
        let worker = std::thread::spawn(move || {
            // Safety: gettid has no memory effects.
            let _ = tid_sender.send(unsafe { libc::gettid() });
            if start.recv().is_ok() {
                let begun = Instant::now();
                while begun.elapsed() < window {
                    work();
                }
            }
        });
        let sampler = tid.recv().ok().and_then(|tid| {
            UserTimeSampler::attach_threads(&[tid], window)
                .inspect_err(|why| eprintln!("skipped: {why}"))
                .ok()
        });
        let _ = start_sender.send(());
        worker.join().expect("the worker thread panicked");
        sampler.and_then(|sampler| sampler.user_share())
    }

    /// A thread that only computes is found in user space (nearly) every time.
    #[test]
    fn a_busy_loop_reads_as_user_space() {
        let spin = || {
            let mut x = 0u64;
            for i in 0..10_000 {
                x = std::hint::black_box(x.wrapping_add(i));
            }
        };
        if let Some(share) = user_share_of(Duration::from_millis(300), spin) {
            assert!(
                share > 0.9,
                "a busy loop read {:.0} % user space",
                share * 100.0
            );
        }
    }

    /// A thread that spends its time in system calls (each clearing 64 KiB for a read from
    /// /dev/zero) is found mostly in the kernel.
    #[test]
    fn a_system_call_loop_reads_as_the_kernel() {
        let read_zeros = || {
            let mut buffer = vec![0u8; 64 * 1024];
            if let Ok(mut zero) = std::fs::File::open("/dev/zero") {
                for _ in 0..100 {
                    let _ = std::io::Read::read(&mut zero, &mut buffer);
                }
            }
        };
        if let Some(share) = user_share_of(Duration::from_millis(300), read_zeros) {
            assert!(
                share < 0.5,
                "a system call loop read {:.0} % user space",
                share * 100.0
            );
        }
    }
}
