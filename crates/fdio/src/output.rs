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
        for line in self.complete_lines(source, bytes) {
            self.write_line(source, &line)?;
        }
        Ok(())
    }

    /// The source reached EOF: a last line without a newline is written too.
    pub fn finish(&mut self, source: Source) -> io::Result<()> {
        match self.take_unfinished(source) {
            Some(rest) => self.write_line(source, &rest),
            None => Ok(()),
        }
    }

    /// Like [`record`](Self::record), but the stamped lines are appended to `lines` instead
    /// of being written: for a program that submits the write itself (lesson 6 hands it to
    /// io_uring). Report how that write went with [`appended`](Self::appended).
    pub fn format(&mut self, source: Source, bytes: &[u8], lines: &mut Vec<u8>) {
        for line in self.complete_lines(source, bytes) {
            self.stamp(source, &line, lines);
        }
    }

    /// Like [`finish`](Self::finish), but the last line goes into `lines` (see [`format`](Self::format)).
    pub fn format_rest(&mut self, source: Source, lines: &mut Vec<u8>) {
        if let Some(rest) = self.take_unfinished(source) {
            self.stamp(source, &rest, lines);
        }
    }

    /// How the one write of `lines` (made by [`format`](Self::format)) went: `written` bytes
    /// of them reached the file, or an error. Counts the lines. A write that stopped in the
    /// middle of a line (the disk filled up) keeps the whole lines before that point and
    /// takes back the piece of the line it cut, as [`record`](Self::record) does; it is an
    /// error all the same.
    pub fn appended(&mut self, lines: &[u8], written: io::Result<usize>) -> io::Result<()> {
        let written = written.map_err(|err| self.cannot_append(err))?;
        let whole = lines[..written]
            .iter()
            .rposition(|&b| b == b'\n')
            .map_or(0, |at| at + 1);
        self.lines_written += lines[..whole].iter().filter(|&&b| b == b'\n').count();
        if written == lines.len() {
            return Ok(());
        }
        // A write request need not move the file position as `write(2)` does (an io_uring
        // write to an `O_APPEND` file leaves it). The limit stopped the write here, so
        // nobody appended after it: its end is the file's end.
        let _ = self.file.seek(io::SeekFrom::End(0));
        let cut = lines[whole..]
            .iter()
            .position(|&b| b == b'\n')
            .map_or(lines.len() - whole, |at| at + 1);
        let err = partial_write(&mut self.file, written - whole, cut);
        Err(self.cannot_append(err))
    }

    /// Adds `bytes` to what `source` left unfinished and takes out every complete line.
    fn complete_lines(&mut self, source: Source, bytes: &[u8]) -> Vec<Vec<u8>> {
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
            return Vec::new();
        };
        let complete: Vec<u8> = unfinished.drain(..=last_newline).collect();
        // `complete` ends with '\n': split what comes before it, keeping blank lines.
        complete[..last_newline]
            .split(|&b| b == b'\n')
            .map(<[u8]>::to_vec)
            .collect()
    }

    fn take_unfinished(&mut self, source: Source) -> Option<Vec<u8>> {
        let rest = match source {
            Source::Stdin => std::mem::take(&mut self.unfinished_stdin),
            Source::Pipe => std::mem::take(&mut self.unfinished_pipe),
        };
        (!rest.is_empty()).then_some(rest)
    }

    /// How many lines this log has written so far.
    pub fn lines_written(&self) -> usize {
        self.lines_written
    }

    /// Puts `[ 3.02s pipe ] text\n` at the end of `out`.
    fn stamp(&self, source: Source, text: &[u8], out: &mut Vec<u8>) {
        let elapsed = self.started.elapsed().as_secs_f64();
        // Writing into a `Vec` cannot fail.
        let _ = write!(out, "[{elapsed:5.2}s {source} ] ");
        // Bytes that are not UTF-8 become U+FFFD: the log stays text, and never crashes.
        out.extend_from_slice(String::from_utf8_lossy(text).as_bytes());
        out.push(b'\n');
    }

    fn write_line(&mut self, source: Source, text: &[u8]) -> io::Result<()> {
        let mut line = std::mem::take(&mut self.line);
        line.clear();
        self.stamp(source, text, &mut line);
        let written = append_whole(&mut self.file, &line).map_err(|err| self.cannot_append(err));
        self.line = line;
        written?;
        self.lines_written += 1;
        Ok(())
    }

    fn cannot_append(&self, err: io::Error) -> io::Error {
        io::Error::new(
            err.kind(),
            format!("cannot append to {}: {err}", self.path.display()),
        )
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
    Err(partial_write(file, written, line.len()))
}

/// The error for a write that took only `written` of `len` bytes, after taking them back.
fn partial_write(file: &mut File, written: usize, len: usize) -> io::Error {
    let removed = take_back(file, written).is_ok();
    io::Error::new(
        io::ErrorKind::WriteZero,
        format!(
            "only {written} of the {len} bytes of a line could be written (is the disk full, or \
             the file at its size limit?); {}",
            if removed {
                "they were removed again"
            } else {
                "they could not be removed"
            }
        ),
    )
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
