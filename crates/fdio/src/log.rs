//! One line on stderr that never takes the program down.
//!
//! `eprintln!` panics when stderr cannot take the line: a closed pipe
//! (`server 2>&1 | head -1`, then a client connects), a full disk. A server must serve on
//! whatever happens to its log, so every lesson logs with [`log!`](crate::log!) instead: the
//! line is formatted first and written with one `write`, so lines from several threads never
//! mix, and a line stderr refuses is dropped.

use std::fmt;
use std::io::{self, Write};

/// Writes one line to stderr, as `eprintln!` does, but drops it if stderr refuses it.
///
/// ```
/// fdio::log!("connection from {}", "127.0.0.1:40212");
/// ```
#[macro_export]
macro_rules! log {
    ($($arg:tt)*) => {
        $crate::log::line(::std::format_args!($($arg)*))
    };
}

/// What [`log!`](crate::log!) calls: formats `args` and a newline, then one `write_all`.
pub fn line(args: fmt::Arguments<'_>) {
    let mut text = args.to_string();
    text.push('\n');
    // Dropped on error: there is nowhere left to report it.
    let _ = io::stderr().lock().write_all(text.as_bytes());
}
