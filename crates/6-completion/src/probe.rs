//! Is io_uring usable here? Containers often forbid it (seccomp filters `io_uring_setup`,
//! or the sysctl `kernel.io_uring_disabled` is set), and multishot receive needs Linux 6.0.
//! The binary asks once at start and, if not, says why in one line and exits 1.

use std::io;

/// What the first line of the refusal says, for scripts and tests to look for.
pub const UNAVAILABLE: &str = "io_uring is unavailable here";

/// `Ok` if this kernel lets us set up a ring with what the lesson uses; else why not.
pub fn check() -> Result<(), String> {
    if let Some((major, minor)) = kernel_version()
        && (major, minor) < (6, 0)
    {
        return Err(format!(
            "{UNAVAILABLE}: Linux {major}.{minor} has no multishot receive (it needs 6.0 or later)"
        ));
    }
    match io_uring::IoUring::new(2) {
        Ok(_) => Ok(()),
        Err(err) => Err(format!("{UNAVAILABLE}: {}", explain(&err))),
    }
}

fn explain(err: &io::Error) -> String {
    let disabled = std::fs::read_to_string("/proc/sys/kernel/io_uring_disabled")
        .map(|value| value.trim().to_string())
        .unwrap_or_default();
    match err.raw_os_error() {
        Some(libc::ENOSYS) => "the kernel has no io_uring_setup (ENOSYS)".to_string(),
        Some(libc::EPERM) if !disabled.is_empty() && disabled != "0" => {
            format!("kernel.io_uring_disabled is {disabled} (EPERM)")
        }
        Some(libc::EPERM) => {
            "io_uring_setup is not permitted (EPERM: a seccomp filter, as in many containers?)"
                .to_string()
        }
        _ => format!("io_uring_setup failed: {err}"),
    }
}

/// The running kernel's `major.minor`, as `uname -r` prints it.
fn kernel_version() -> Option<(u32, u32)> {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").ok()?;
    let mut numbers = release
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|part| part.parse().ok());
    Some((numbers.next()?, numbers.next()?))
}
