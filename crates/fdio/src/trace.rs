//! The `--trace` narrator: one stderr line per event-loop decision, so a learner can watch
//! the loop wait, wake up, and dispatch:
//!
//! ```text
//! select: waiting on read=[3,4,5] write=[] timeout=none
//! select: ready read=[5] write=[]
//! ```

use std::fmt;
use std::os::fd::RawFd;

/// Prints trace lines when `--trace` is on; costs one branch when it is off.
#[derive(Debug, Clone, Copy)]
pub struct Trace {
    enabled: bool,
}

impl Trace {
    /// A narrator that speaks only if `enabled`.
    pub fn new(enabled: bool) -> Trace {
        Trace { enabled }
    }

    /// Whether `--trace` is on: for a loop that collects what it will narrate.
    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// Prints the line `line()` returns; the closure runs only when tracing is on.
    pub fn say(&self, line: impl FnOnce() -> String) {
        if self.enabled {
            crate::log!("{}", line());
        }
    }
}

/// A list of fds printed as `[3,5,6]`, cut short after a dozen so a trace of 10,000
/// connections stays readable: `[3,4,5,6,7,8,9,10,11,12,13,14,… 9988 more]`.
pub struct FdList<'a>(pub &'a [RawFd]);

impl fmt::Display for FdList<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const SHOWN: usize = 12;
        f.write_str("[")?;
        for (i, fd) in self.0.iter().take(SHOWN).enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{fd}")?;
        }
        if self.0.len() > SHOWN {
            write!(f, ",… {} more", self.0.len() - SHOWN)?;
        }
        f.write_str("]")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Short lists print in full; long ones are cut after twelve with a count of the rest.
    #[test]
    fn fd_lists_are_cut_short() {
        assert_eq!(FdList(&[]).to_string(), "[]");
        assert_eq!(FdList(&[0, 3, 5]).to_string(), "[0,3,5]");
        let many: Vec<RawFd> = (0..20).collect();
        assert_eq!(
            FdList(&many).to_string(),
            "[0,1,2,3,4,5,6,7,8,9,10,11,… 8 more]"
        );
    }
}
