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
use std::io::{self, Seek, Write};
use std::path::{Path, PathBuf};
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
///
/// Each line reaches the file in one `write(2)` of the whole line. In append mode the kernel
/// puts each such write at the end of the file in one piece, so another program appending
/// to the same file cannot land in the middle of our line, and a killed writer leaves no
/// stamp without its text.
pub struct OutputLog {
    file: File,
    path: PathBuf,
    started: Instant,
    unfinished_stdin: Vec<u8>,
    unfinished_pipe: Vec<u8>,
    /// The line being written: the stamp, the text and the newline, put together first.
    line: Vec<u8>,
    lines_written: usize,
}

impl OutputLog {
    /// Opens `path` for appending (creating it), like Python's `open(path, "a")`.
    /// Elapsed times are counted from now.
    pub fn open(path: &Path) -> io::Result<OutputLog> {
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        Ok(OutputLog {
            file,
            path: path.to_path_buf(),
            started: Instant::now(),
            unfinished_stdin: Vec::new(),
            unfinished_pipe: Vec::new(),
            line: Vec::new(),
            lines_written: 0,
        })
    }

    /// The open file, to compare it with stdin (see [`crate::session`]).
    pub fn file(&self) -> &File {
        &self.file
    }

    /// Records bytes just read from `source`: every complete line is written (and flushed)
    /// at once; a trailing partial line waits for the rest.
    pub fn record(&mut self, source: Source, bytes: &[u8]) -> io::Result<()> {
        let unfinished = match source {
            Source::Stdin => &mut self.unfinished_stdin,
            Source::Pipe => &mut self.unfinished_pipe,
        };
        // What was unfinished holds no newline (else it would have been written): look only
        // at the new bytes. Rescanning the whole unfinished line on every read would make a
        // 10 MB line without a newline cost 10,000 reads × megabytes: quadratic time.
        let scanned = unfinished.len();
        unfinished.extend_from_slice(bytes);
        let Some(last_newline) = unfinished[scanned..]
            .iter()
            .rposition(|&b| b == b'\n')
            .map(|at| scanned + at)
        else {
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

    fn write_line(&mut self, source: Source, text: &[u8]) -> io::Result<()> {
        let elapsed = self.started.elapsed().as_secs_f64();
        self.line.clear();
        // Writing into a `Vec` cannot fail.
        let _ = write!(self.line, "[{elapsed:5.2}s {source} ] ");
        // Bytes that are not UTF-8 become U+FFFD: the log stays text, and never crashes.
        self.line
            .extend_from_slice(String::from_utf8_lossy(text).as_bytes());
        self.line.push(b'\n');
        append_whole(&mut self.file, &self.line).map_err(|err| {
            io::Error::new(
                err.kind(),
                format!("cannot append to {}: {err}", self.path.display()),
            )
        })?;
        self.lines_written += 1;
        Ok(())
    }
}

/// Appends `line` in one `write(2)`. A write that takes only part of it (the disk filled up,
/// or the file reached its size limit) is an error, and the part it took is removed again,
/// so the file never ends in half a line that the next run would glue its first line onto.
fn append_whole(file: &mut File, line: &[u8]) -> io::Result<()> {
    let written = loop {
        match file.write(line) {
            Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
            result => break result?,
        }
    };
    if written == line.len() {
        return Ok(());
    }
    let removed = take_back(file, written).is_ok();
    Err(io::Error::new(
        io::ErrorKind::WriteZero,
        format!(
            "only {written} of the {} bytes of a line could be written (is the disk full, or \
             the file at its size limit?); {}",
            line.len(),
            if removed {
                "they were removed again"
            } else {
                "they could not be removed"
            }
        ),
    ))
}

/// Cuts the `written` bytes our last write appended off the end of `file` again — only if
/// they are still its last bytes: if another program appended after them, cutting would
/// destroy its lines too. (Fails, harmlessly, on what cannot be cut: a FIFO, a device.)
fn take_back(file: &mut File, written: usize) -> io::Result<()> {
    // In append mode the file offset is left at the end of what this write appended.
    let end = file.stream_position()?;
    if file.metadata()?.len() != end {
        return Err(io::Error::other("someone appended after us"));
    }
    file.set_len(end - written as u64)
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

    /// A write that took only part of a line is taken back: the file ends with the last
    /// whole line again. But bytes another program appended after ours are never cut.
    #[test]
    fn a_partial_line_is_taken_back_unless_someone_appended_after_it() {
        let path = temp_path("take-back");
        let mut file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .unwrap();
        file.write_all(b"whole line\n").unwrap();
        file.write_all(b"half a li").unwrap(); // as if the disk had filled up here
        take_back(&mut file, "half a li".len()).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "whole line\n");

        file.write_all(b"half a li").unwrap();
        let mut other = OpenOptions::new().append(true).open(&path).unwrap();
        other.write_all(b"another program's line\n").unwrap();
        assert!(take_back(&mut file, "half a li".len()).is_err());
        let text = std::fs::read_to_string(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        assert_eq!(text, "whole line\nhalf a lianother program's line\n");
    }

    /// A failed write (`/dev/full`: no space left) is an error naming the file, and the line
    /// is not counted.
    #[test]
    fn a_failed_write_is_an_error_naming_the_file() {
        let mut log = OutputLog::open(Path::new("/dev/full")).unwrap();
        let err = log.record(Source::Stdin, b"hello\n").unwrap_err();
        assert!(
            err.to_string()
                .starts_with("cannot append to /dev/full: No space left on device"),
            "{err}"
        );
        assert_eq!(log.lines_written(), 0);
    }
}
