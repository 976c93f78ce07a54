//! A green thread that overflows its stack: the fault in its guard page is caught on another
//! stack and reported in one line, then the process aborts — never silent corruption.
//!
//! A green thread whose stack is full touches the guard page below it on its next call or
//! push (see [`crate::stack`]), and the kernel sends the OS thread `SIGSEGV`. The handler for
//! it cannot run on the stack that overflowed: there is no room there for its frame, and the
//! kernel, unable to push one, would kill the process without a word. So it runs on an
//! **alternate signal stack** (`sigaltstack(2)`, and `SA_ONSTACK` when it is installed), which
//! each runtime sets up for its OS thread while it runs. std does the same for the stacks of
//! its own threads: that is where `thread 'main' has overflowed its stack` comes from. Any
//! other handler must ask for that stack too: a signal may come while a green thread is a few
//! hundred bytes from its guard page, with no room for the 3.4 KiB the kernel pushes (with
//! AVX-512). `fdio::signal_pipe`'s SIGINT/SIGTERM handler does (`SA_ONSTACK`).
//!
//! The handler looks at what the fault was (`si_code`: an access to a page, not a `kill` or a
//! general protection fault) and where (`si_addr`). In the guard page of the green thread
//! running now, it writes one line and aborts:
//!
//! ```text
//! green thread 1 (recurse) has overflowed its 256 KiB stack (it touched its guard page): aborting
//! ```
//!
//! Any other fault is not ours: it goes to the handler that was there before ours (std's,
//! which reports its own threads' overflows and then lets the fault kill the process).
//!
//! A signal handler may interrupt anything, a `malloc` or a `RefCell` borrow half-way: it may
//! only do what is async-signal-safe. So this one allocates nothing and takes no lock: it
//! reads a thread-local pointer to the running green thread's `GuardInfo` (set at each
//! switch to it), formats its line into a buffer on its own stack, and calls `write(2)` and
//! `abort(3)`. Aborting is the only way on: the green thread cannot unwind (its stack is full)
//! and cannot be resumed.

use std::cell::Cell;
use std::fmt::Write as _;
use std::io;
use std::ops::Range;
use std::sync::OnceLock;

use nix::libc;
use nix::sys::signal::{SaFlags, SigAction, SigHandler, SigSet, Signal, sigaction};

use crate::stack::Stack;

/// The alternate signal stack's size: the handler needs little, but the kernel pushes the
/// whole register state first (several KiB with AVX-512).
const ALT_STACK_SIZE: usize = 64 * 1024;

/// `si_code`s of a `SIGSEGV` raised by an access to an address: none mapped there, or not
/// allowed (a `PROT_NONE` guard page). Linux's <asm-generic/siginfo.h>; the libc crate does
/// not name them for Linux.
const SEGV_MAPERR: libc::c_int = 1;
const SEGV_ACCERR: libc::c_int = 2;

/// What the handler needs to know about a green thread, readable from a signal handler.
pub(crate) struct GuardInfo {
    /// `green thread 3 (client 127.0.0.1:40212)`: how the trace and the report name it.
    pub(crate) label: Box<str>,
    guard: Range<usize>,
    stack_kib: usize,
}

impl GuardInfo {
    pub(crate) fn new(id: u64, name: Option<&str>, guard: Range<usize>, stack: usize) -> GuardInfo {
        let label = match name {
            Some(name) => format!("green thread {id} ({name})"),
            None => format!("green thread {id}"),
        };
        GuardInfo {
            label: label.into_boxed_str(),
            guard,
            stack_kib: stack / 1024,
        }
    }
}

thread_local! {
    /// The running green thread's guard, or null on the scheduler's own stack. A `const`
    /// thread-local without a destructor: reading it is a plain load, safe in a handler.
    static RUNNING: Cell<*const GuardInfo> = const { Cell::new(std::ptr::null()) };
}

/// The scheduler is about to switch to the green thread that `info` describes.
pub(crate) fn entering(info: &GuardInfo) {
    RUNNING.set(info);
}

/// The scheduler runs on its own stack again.
pub(crate) fn leaving() {
    RUNNING.set(std::ptr::null());
}

/// The SIGSEGV handler that was installed before ours, for faults that are not ours.
static PREVIOUS: OnceLock<SigAction> = OnceLock::new();

/// Installs the handler (once per process) and an alternate signal stack for this OS thread,
/// which stays until the returned value is dropped.
pub(crate) fn install() -> io::Result<AltStack> {
    static INSTALLED: OnceLock<Result<(), nix::Error>> = OnceLock::new();
    INSTALLED
        .get_or_init(install_handler)
        .map_err(io::Error::from)?;
    AltStack::new()
}

fn install_handler() -> Result<(), nix::Error> {
    let ours = SigAction::new(
        SigHandler::SigAction(on_fault),
        SaFlags::SA_SIGINFO | SaFlags::SA_ONSTACK,
        SigSet::empty(),
    );
    // Safety: `on_fault` only does async-signal-safe things (see the module doc).
    let previous = unsafe { sigaction(Signal::SIGSEGV, &ours) }?;
    // A fault in the instant before this line finds no previous handler and gets the
    // default action, as it would from std's handler unless it was a std thread's overflow.
    let _ = PREVIOUS.set(previous);
    Ok(())
}

extern "C" fn on_fault(
    signal: libc::c_int,
    info: *mut libc::siginfo_t,
    context: *mut libc::c_void,
) {
    // Safety: the kernel passes a valid siginfo_t to an SA_SIGINFO handler. Only for a fault
    // at an address (`SEGV_MAPERR`, or `SEGV_ACCERR`: the guard page's) is `si_addr` the
    // address that faulted. Not for a `kill` or `sigqueue` (`si_code` ≤ 0: those bytes are
    // the sender's pid and uid), nor for `SI_KERNEL` (a general protection fault, such as a
    // non-canonical address: the kernel knows no address and sends 0).
    let address = unsafe {
        matches!((*info).si_code, SEGV_MAPERR | SEGV_ACCERR).then(|| (*info).si_addr() as usize)
    };
    let running = RUNNING.get();
    // Safety: set by the scheduler to the `GuardInfo` of the green thread it switched to,
    // which stays alive while that green thread runs, and reset when it switches back.
    if let Some(green) = unsafe { running.as_ref() }
        && address.is_some_and(|address| green.guard.contains(&address))
    {
        let mut line = LineBuffer::default();
        let _ = writeln!(
            line,
            "{} has overflowed its {} KiB stack (it touched its guard page): aborting",
            green.label, green.stack_kib
        );
        // Safety: write(2) and abort(3) are async-signal-safe; the buffer is ours.
        unsafe {
            libc::write(2, line.bytes.as_ptr().cast(), line.len);
            libc::abort();
        }
    }
    match PREVIOUS.get().map(SigAction::handler) {
        Some(SigHandler::SigAction(previous)) => previous(signal, info, context),
        Some(SigHandler::Handler(previous)) => previous(signal),
        // No handler before ours: the default one. Put it back and return: the faulting
        // instruction runs again, faults again, and the default action ends the process.
        _ => {
            let default = SigAction::new(SigHandler::SigDfl, SaFlags::empty(), SigSet::empty());
            // Safety: the default action runs no code of ours.
            let _ = unsafe { sigaction(Signal::SIGSEGV, &default) };
        }
    }
}

/// A line formatted without allocating: what fits in 512 bytes.
struct LineBuffer {
    bytes: [u8; 512],
    len: usize,
}

impl Default for LineBuffer {
    fn default() -> LineBuffer {
        LineBuffer {
            bytes: [0; 512],
            len: 0,
        }
    }
}

impl std::fmt::Write for LineBuffer {
    fn write_str(&mut self, text: &str) -> std::fmt::Result {
        let room = self.bytes.len() - self.len;
        let taken = text.len().min(room);
        self.bytes[self.len..self.len + taken].copy_from_slice(&text.as_bytes()[..taken]);
        self.len += taken;
        Ok(())
    }
}

/// An alternate signal stack installed for this OS thread; the one before it is put back
/// when this is dropped, then its memory unmapped.
pub(crate) struct AltStack {
    previous: libc::stack_t,
    /// A stack like a green thread's, guard page included; only the kernel uses it.
    _stack: Stack,
}

impl AltStack {
    fn new() -> io::Result<AltStack> {
        let stack = Stack::new(ALT_STACK_SIZE)?;
        let ours = libc::stack_t {
            ss_sp: stack.bottom().cast(),
            ss_flags: 0,
            ss_size: stack.usable(),
        };
        // Safety: an all-zero stack_t is a valid value for sigaltstack to overwrite.
        let mut previous: libc::stack_t = unsafe { std::mem::zeroed() };
        // Safety: `ours` describes memory we own and keep mapped until we have put the
        // previous alternate stack back (in `drop`).
        if unsafe { libc::sigaltstack(&ours, &mut previous) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(AltStack {
            previous,
            _stack: stack,
        })
    }
}

impl Drop for AltStack {
    fn drop(&mut self) {
        // Safety: `previous` is what sigaltstack gave us: a valid setting (or "none").
        // Only then is `self._stack` unmapped (fields drop after this).
        unsafe { libc::sigaltstack(&self.previous, std::ptr::null_mut()) };
    }
}
