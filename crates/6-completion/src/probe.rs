//! Is io_uring usable here — for what the lesson does, not just in principle?
//!
//! Many things stand between a program and io_uring, and each fails differently:
//! - a kernel older than 6.0 has no multishot receive;
//! - `sysctl kernel.io_uring_disabled` switches it off (`EPERM` from `io_uring_setup`);
//! - a seccomp filter may forbid any of its three system calls (`EPERM`, or `ENOSYS`):
//!   container runtimes often do (Docker's default profile forbids all three);
//! - memory: for a user without `CAP_IPC_LOCK` the kernel may count the rings' memory, and
//!   the buffer ring's, against the locked-memory limit (`ulimit -l`, `RLIMIT_MEMLOCK`,
//!   shared by all of the user's rings; liburing's README warns of it). Linux 5.12 charged
//!   the rings to the memory cgroup instead; this machine's Linux 6.18 maps them through
//!   the code that counts against the limit (`io_create_region`), and there a ring of
//!   1,024 + 8,192 entries does not fit in the 64 KiB some systems still give by default:
//!   `io_uring_setup` fails with `ENOMEM`. Which rule a kernel follows is not guessed here:
//!   the probe tries.
//!
//! So `completion probe` does exactly what the programs do at start — the ring of their size
//! and flags, the opcodes they use (`IORING_REGISTER_PROBE`), the buffer ring, one
//! `io_uring_enter` — through the same code ([`Driver::new`]), and the programs do it before
//! they print `listening on`. Whatever fails is said in one line: what failed, the likely
//! cause, and what to do.
//!
//! [`Driver::new`]: crate::ring::Driver::new

use std::io;

use fdio::Trace;
use io_uring::{Probe, Submitter, opcode};

use crate::executor::{BUFFERS, Buffers};
use crate::ring::{CQ_ENTRIES, Driver, SQ_ENTRIES};

/// What the first line of the refusal says, for scripts and tests to look for.
pub const UNAVAILABLE: &str = "io_uring is unavailable here";

/// The check every command makes first: a kernel with multishot receive (Linux 6.0).
pub fn check_kernel() -> io::Result<()> {
    match kernel_version() {
        Some((major, minor)) if (major, minor) < (6, 0) => Err(io::Error::other(format!(
            "{UNAVAILABLE}: Linux {major}.{minor} has no multishot receive (it needs 6.0 or later)"
        ))),
        _ => Ok(()),
    }
}

/// `completion probe`: sets up what the programs set up, and says what it has.
pub fn check() -> io::Result<String> {
    check_kernel()?;
    drop(Driver::new(Trace::new(false), BUFFERS)?);
    Ok(format!(
        "io_uring is available: a ring of {SQ_ENTRIES} + {CQ_ENTRIES} entries, {} provided \
         buffers of {} KiB, multishot accept and receive",
        BUFFERS.count,
        BUFFERS.size / 1024
    ))
}

/// The requests the lessons make, by opcode.
const OPCODES: [(u8, &str); 9] = [
    (opcode::AcceptMulti::CODE, "ACCEPT"),
    (opcode::RecvMulti::CODE, "RECV"),
    (opcode::Send::CODE, "SEND"),
    (opcode::Read::CODE, "READ"),
    (opcode::Write::CODE, "WRITE"),
    (opcode::Timeout::CODE, "TIMEOUT"),
    (opcode::AsyncCancel::CODE, "ASYNC_CANCEL"),
    (opcode::Close::CODE, "CLOSE"),
    (opcode::PollAdd::CODE, "POLL_ADD"),
];

/// Asks the kernel which requests it knows (`IORING_REGISTER_PROBE`): all the lessons use.
pub(crate) fn check_opcodes(submitter: &Submitter<'_>) -> io::Result<()> {
    let mut probe = Probe::new();
    submitter
        .register_probe(&mut probe)
        .map_err(|err| unavailable("io_uring_register (the opcode probe)", &err))?;
    let missing: Vec<&str> = OPCODES
        .iter()
        .filter(|(code, _)| !probe.is_supported(*code))
        .map(|(_, name)| *name)
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    Err(io::Error::other(format!(
        "{UNAVAILABLE}: this kernel does not know IORING_OP_{} (the lessons need Linux 6.0 or later)",
        missing.join(", IORING_OP_")
    )))
}

/// The one-line error for system call `call` failing with `err`: what failed, the likely
/// cause, and what to do.
pub(crate) fn unavailable(call: &str, err: &io::Error) -> io::Error {
    if let Some(libc::EMFILE | libc::ENFILE) = err.raw_os_error() {
        // Not io_uring's refusal: a ring is one more open file.
        return io::Error::new(
            err.kind(),
            format!("cannot set up the ring: {call} failed: {err}; raise the limit (ulimit -n)"),
        );
    }
    let why = match err.raw_os_error() {
        Some(libc::EPERM) if call == "io_uring_setup" && disabled() > 0 => switched_off(disabled()),
        Some(libc::EPERM) => format!(
            "{call} is not permitted (EPERM): a seccomp filter? Container runtimes often \
             forbid io_uring (Docker's default profile does); run it outside the container, \
             or with a profile that allows io_uring_setup, io_uring_enter and io_uring_register"
        ),
        Some(libc::ENOSYS) => format!(
            "{call} does not exist here (ENOSYS): a kernel built without io_uring, or a seccomp \
             filter that hides it (as some container runtimes do)"
        ),
        Some(libc::ENOMEM) => format!("{call} failed: {err}: {}", short_of_memory()),
        _ => format!("{call} failed: {err}"),
    };
    io::Error::new(err.kind(), format!("{UNAVAILABLE}: {why}"))
}

/// What `kernel.io_uring_disabled` is (0 when it cannot be read).
fn disabled() -> u32 {
    std::fs::read_to_string("/proc/sys/kernel/io_uring_disabled")
        .ok()
        .and_then(|value| value.trim().parse().ok())
        .unwrap_or(0)
}

fn switched_off(disabled: u32) -> String {
    if disabled == 1 {
        "kernel.io_uring_disabled is 1 (EPERM): only members of kernel.io_uring_group may \
         use io_uring; as root, add this user to that group, or run \
         sysctl kernel.io_uring_disabled=0"
            .to_string()
    } else {
        format!(
            "kernel.io_uring_disabled is {disabled} (EPERM): io_uring is off for everyone; \
             as root, run sysctl kernel.io_uring_disabled=0"
        )
    }
}

/// Why memory ran out: the locked-memory limit, unless the user may lock any amount.
fn short_of_memory() -> String {
    let needed = locked_memory_needed(BUFFERS);
    match memlock_limit() {
        Some(limit) if !may_lock_any_amount() => format!(
            "for a user without CAP_IPC_LOCK the kernel counts the ring's memory as locked \
             memory, and this one may lock {} KiB (ulimit -l, shared by all its rings) where \
             the rings and the buffer ring need about {} KiB; raise it (ulimit -l {} where \
             allowed, LimitMEMLOCK= for a systemd service, memlock in \
             /etc/security/limits.conf)",
            limit / 1024,
            needed / 1024,
            (needed / 1024).next_power_of_two().max(1024),
        ),
        _ => "the system (or this process's memory cgroup) is short of memory".to_string(),
    }
}

/// About how much locked memory the rings and the buffer ring take: the completion ring
/// (16 bytes an entry) with the submission ring's index array (4), the submission entries
/// (64 each), the buffer ring (16 an entry), each rounded up to pages.
fn locked_memory_needed(buffers: Buffers) -> u64 {
    let page = 4096;
    let rings = u64::from(CQ_ENTRIES) * 16 + u64::from(SQ_ENTRIES) * 4 + page;
    let entries = u64::from(SQ_ENTRIES) * 64;
    let buffer_ring = u64::from(buffers.count) * 16;
    [rings, entries, buffer_ring]
        .iter()
        .map(|bytes| bytes.next_multiple_of(page))
        .sum()
}

/// `RLIMIT_MEMLOCK`'s soft limit in bytes; `None` when unlimited.
fn memlock_limit() -> Option<u64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // Safety: getrlimit writes one struct, into a live local.
    let read = unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &raw mut limit) };
    (read == 0 && limit.rlim_cur != libc::RLIM_INFINITY).then_some(limit.rlim_cur)
}

/// Whether this process has `CAP_IPC_LOCK` in its effective set (then the kernel counts
/// nothing against the limit).
fn may_lock_any_amount() -> bool {
    const CAP_IPC_LOCK: u32 = 14;
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            let hex = status
                .lines()
                .find_map(|line| line.strip_prefix("CapEff:"))?;
            u64::from_str_radix(hex.trim(), 16).ok()
        })
        .is_some_and(|caps| caps & (1 << CAP_IPC_LOCK) != 0)
}

/// The running kernel's `major.minor`, as `uname -r` prints it.
fn kernel_version() -> Option<(u32, u32)> {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").ok()?;
    let mut numbers = release
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|part| part.parse().ok());
    Some((numbers.next()?, numbers.next()?))
}
