//! The output log of the writer program. Each line says when it arrived and from where:
//!
//! ```text
//! [ 1.00s pipe ] External message from pipe 1
//! [ 1.73s stdin ] hello
//! ```
//!
//! so the file itself shows whether the pipe had to wait for stdin (lesson 0) or not.

use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::Path;
use std::time::Instant;

/// Where a line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Stdin,
    Pipe,
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Source::Stdin => "stdin",
            Source::Pipe => "pipe",
        })
    }
}

/// Appends timestamped lines to a file. A read returns whatever bytes were there — half a
/// line, or three lines — so each source keeps its unfinished line until the newline comes.
pub struct OutputLog {
    file: File,
    started: Instant,
    unfinished_stdin: Vec<u8>,
    unfinished_pipe: Vec<u8>,
    lines_written: usize,
}

impl OutputLog {
    /// Opens `path` for appending (creating it), like Python's `open(path, "a")`.
    /// Elapsed times are counted from now.
    pub fn open(path: &Path) -> io::Result<OutputLog> {
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        Ok(OutputLog {
            file,
            started: Instant::now(),
            unfinished_stdin: Vec::new(),
            unfinished_pipe: Vec::new(),
            lines_written: 0,
        })
    }

    /// Records bytes just read from `source`: every complete line is written (and flushed)
    /// at once; a trailing partial line waits for the rest.
    pub fn record(&mut self, source: Source, bytes: &[u8]) -> io::Result<()> {
        let unfinished = match source {
            Source::Stdin => &mut self.unfinished_stdin,
            Source::Pipe => &mut self.unfinished_pipe,
        };
        unfinished.extend_from_slice(bytes);
        let Some(last_newline) = unfinished.iter().rposition(|&b| b == b'\n') else {
            return Ok(());
        };
        let complete: Vec<u8> = unfinished.drain(..=last_newline).collect();
        // `complete` ends with '\n': split what comes before it, keeping blank lines.
        for line in complete[..last_newline].split(|&b| b == b'\n') {
            self.write_line(source, line)?;
        }
        Ok(())
    }

    /// The source reached EOF: a last line without a newline is written too.
    pub fn finish(&mut self, source: Source) -> io::Result<()> {
        let rest = match source {
            Source::Stdin => std::mem::take(&mut self.unfinished_stdin),
            Source::Pipe => std::mem::take(&mut self.unfinished_pipe),
        };
        if rest.is_empty() {
            return Ok(());
        }
        self.write_line(source, &rest)
    }

    /// How many lines this log has written so far.
    pub fn lines_written(&self) -> usize {
        self.lines_written
    }

    fn write_line(&mut self, source: Source, line: &[u8]) -> io::Result<()> {
        let elapsed = self.started.elapsed().as_secs_f64();
        // Bytes that are not UTF-8 become U+FFFD: the log stays text, and never crashes.
        let text = String::from_utf8_lossy(line);
        writeln!(self.file, "[{elapsed:5.2}s {source} ] {text}")?;
        self.file.flush()?;
        self.lines_written += 1;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_path(name: &str) -> std::path::PathBuf {
        std::env::temp_dir().join(format!("fdio-{}-{name}", std::process::id()))
    }

    /// Partial reads are joined into whole lines, each tagged with its source, and the
    /// file is appended to, never truncated.
    #[test]
    fn joins_partial_reads_and_appends() {
        let path = temp_path("joins");
        std::fs::write(&path, "earlier run\n").unwrap();
        let mut log = OutputLog::open(&path).unwrap();
        log.record(Source::Pipe, b"External mess").unwrap();
        log.record(Source::Stdin, b"hello\n\nwor").unwrap();
        log.record(Source::Pipe, b"age from pipe 1\n").unwrap();
        log.record(Source::Stdin, b"ld").unwrap();
        log.finish(Source::Stdin).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 5, "{text}");
        assert_eq!(lines[0], "earlier run");
        assert!(lines[1].ends_with("s stdin ] hello"), "{text}");
        assert!(
            lines[2].ends_with("s stdin ] "),
            "a blank line is kept: {text}"
        );
        assert!(lines[3].ends_with("s pipe ] External message from pipe 1"));
        assert!(lines[4].ends_with("s stdin ] world"));
        assert!(lines[1].starts_with("[ 0.0"), "{text}");
        assert_eq!(log.lines_written(), 4);
    }

    /// Invalid UTF-8 is written lossily instead of failing.
    #[test]
    fn invalid_utf8_is_written_lossily() {
        let path = temp_path("lossy");
        let mut log = OutputLog::open(&path).unwrap();
        log.record(Source::Stdin, b"caf\xff\n").unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        assert!(text.ends_with("stdin ] caf\u{FFFD}\n"), "{text}");
    }
}
