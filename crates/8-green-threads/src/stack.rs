//! A green thread's stack: memory from `mmap`, a guard page below it, pages committed only
//! when touched.
//!
//! ```text
//!  high addresses  ┌───────────────────────────┐ ← top: the first frame goes here
//!                  │ touched: committed (RSS)  │   the stack grows downwards
//!                  ├───────────────────────────┤
//!                  │ never touched: reserved   │   address space only, no memory
//!                  │ address space, no memory  │
//!                  ├───────────────────────────┤ ← bottom
//!  low addresses   │ guard page: PROT_NONE     │   any access faults (see `overflow`)
//!                  └───────────────────────────┘
//! ```
//!
//! **Lazily committed.** `mmap` only reserves addresses; the kernel gives a page of memory the
//! first time it is touched (a page fault, about a microsecond). A green thread that never goes
//! deeper than a few frames costs a page or two of memory, however big its stack: a
//! 256 KiB stack is cheap to *have*. But a page once touched stays: a green thread that once
//! recursed deep keeps those pages until it ends (Go copies a goroutine's stack to a smaller
//! one when it shrinks; we do not).
//!
//! **The guard page.** A thread that goes deeper than its stack would write into whatever
//! lies below — another green thread's stack, the heap: silent corruption. The lowest page of
//! the mapping is made inaccessible (`PROT_NONE`), so the first access below the stack faults
//! instead. Rust touches every page of a frame bigger than a page in order (stack probes), so
//! no frame can jump over it. C code built without `-fstack-clash-protection` can: that is
//! one of the dangers of calling foreign code on a small stack.

use std::io;
use std::ops::Range;
use std::ptr;
use std::sync::OnceLock;

/// How much stack each green thread gets: reserved address space, committed as touched.
pub const STACK_SIZE: usize = 256 * 1024;

/// The size of a memory page, and of the guard page: 4 KiB on x86-64.
pub fn page_size() -> usize {
    static PAGE_SIZE: OnceLock<usize> = OnceLock::new();
    *PAGE_SIZE.get_or_init(|| {
        // Safety: sysconf only reads a system setting.
        let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
        usize::try_from(size).unwrap_or(4096)
    })
}

/// An `mmap`ed stack with a guard page at its low end; unmapped when dropped.
pub struct Stack {
    /// The lowest address of the mapping: the guard page.
    base: *mut u8,
    /// The whole mapping, guard page included.
    len: usize,
    /// What valgrind calls this stack (0 when not running under it).
    valgrind_id: usize,
}

impl Stack {
    /// Maps `size` bytes of stack (rounded up to whole pages) and a guard page below them.
    pub fn new(size: usize) -> io::Result<Stack> {
        let page = page_size();
        let len = size.div_ceil(page) * page + page;
        // Safety: a new anonymous mapping at an address the kernel picks touches no existing
        // memory. Its pages are committed only when touched, with or without flags.
        // MAP_NORESERVE (mmap(2): "do not reserve swap space for this mapping") keeps the
        // whole 256 KiB out of the kernel's commit accounting, so 10,000 stacks do not count
        // as 2.5 GB promised; the price, if memory runs out when a page is first touched, is
        // a signal or the OOM killer rather than an error from mmap. With strict accounting
        // (vm.overcommit_memory = 2, proc(5)) the flag is ignored and every stack counts.
        let base = unsafe {
            libc::mmap(
                ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE | libc::MAP_STACK,
                -1,
                0,
            )
        };
        if base == libc::MAP_FAILED {
            let err = io::Error::last_os_error();
            let message = format!("cannot map a {} KiB stack: {err}", size / 1024);
            return Err(io::Error::new(err.kind(), message));
        }
        // From here on, dropping `stack` unmaps it, also if the guard cannot be set.
        let mut stack = Stack {
            base: base.cast(),
            len,
            valgrind_id: 0,
        };
        // Safety: the first page of the mapping we just made, ours alone.
        if unsafe { libc::mprotect(base, page, libc::PROT_NONE) } != 0 {
            return Err(io::Error::last_os_error());
        }
        // valgrind.h: from "the lowest addressable stack byte" to "the highest" — the last
        // byte below `top`, not `top`.
        let highest = stack.top().wrapping_sub(1);
        stack.valgrind_id = valgrind_request(STACK_REGISTER, stack.bottom(), highest);
        Ok(stack)
    }

    /// The highest address: a new green thread's first frame goes right below it.
    /// Page-aligned, so 16-byte aligned as the ABI wants.
    pub fn top(&self) -> *mut u8 {
        self.base.wrapping_add(self.len)
    }

    /// The lowest address a green thread may use, right above the guard page.
    pub fn bottom(&self) -> *mut u8 {
        self.base.wrapping_add(page_size())
    }

    /// The addresses of the guard page.
    pub fn guard(&self) -> Range<usize> {
        let base = self.base as usize;
        base..base + page_size()
    }

    /// How many bytes of stack a green thread may use (the guard page not counted).
    pub fn usable(&self) -> usize {
        self.len - page_size()
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        valgrind_request(
            STACK_DEREGISTER,
            self.valgrind_id as *mut u8,
            ptr::null_mut(),
        );
        // Safety: our own mapping, and its owner (a finished green thread) runs on it no more.
        unsafe { libc::munmap(self.base.cast(), self.len) };
    }
}

/// valgrind's `VALGRIND_STACK_REGISTER(start, end)` request: returns the stack's id.
const STACK_REGISTER: u64 = 0x1501;

/// `VALGRIND_STACK_DEREGISTER(id)`.
const STACK_DEREGISTER: u64 = 0x1502;

/// A valgrind client request (valgrind.h, amd64): four rotations of rdi that add up to 128
/// bits, so leave it as it was, then `xchg rbx, rbx`: nothing at all on a real processor.
/// valgrind's CPU emulation recognises the sequence and answers in rdx. Not under valgrind,
/// rdx keeps its default, 0.
#[cfg(target_arch = "x86_64")]
fn valgrind_request(request: u64, first: *mut u8, second: *mut u8) -> usize {
    let arguments: [u64; 6] = [request, first as u64, second as u64, 0, 0, 0];
    let mut answer: u64 = 0;
    // Safety: no register or memory changes on a real CPU; under valgrind it reads the six
    // words of `arguments` and writes rdx.
    unsafe {
        std::arch::asm!(
            "rol rdi, 3",
            "rol rdi, 13",
            "rol rdi, 61",
            "rol rdi, 51",
            "xchg rbx, rbx",
            in("rax") arguments.as_ptr(),
            inout("rdx") answer,
            options(nostack),
        );
    }
    answer as usize
}

#[cfg(not(target_arch = "x86_64"))]
fn valgrind_request(_request: u64, _first: *mut u8, _second: *mut u8) -> usize {
    0
}
