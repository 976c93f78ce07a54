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

/// The longest part of a line kept in memory: a longer line goes out in parts this long.
const PIECE: usize = 64 * 1024;

/// Appends timestamped lines to a file. A read returns whatever bytes were there — half a
/// line, or three lines — so each source keeps its unfinished line until the newline comes.
///
/// Each line reaches the file in one `write(2)` of the whole line. In append mode the kernel
/// puts each such write at the end of the file in one piece, so another program appending
/// to the same file cannot land in the middle of our line, and a killed writer leaves no
/// stamp without its text.
///
/// But a line may never end (`cat /dev/zero | writer`, a binary file), and keeping it whole
/// would take all the memory there is. So once more than 64 KiB of a line are waiting, its
/// stamp and those bytes go out, and the rest follows 64 KiB at a time, never cutting a
/// UTF-8 character: still one line in the file, but written in parts, so the promises above
/// hold only for lines up to 64 KiB. While such a line is open, the other source's lines
/// wait for its end, as they must not land inside it — unless more than 64 KiB of them
/// wait: then the open line is ended there, and goes on as a new line.
pub struct OutputLog {
    file: File,
    path: PathBuf,
    started: Instant,
    unfinished_stdin: Unfinished,
    unfinished_pipe: Unfinished,
    /// The source whose line is partly written: its stamp and start are in the file.
    open: Option<Source>,
    /// The line being written: the stamp, the text and the newline, put together first.
    line: Vec<u8>,
    lines_written: usize,
}

/// What a source has read but not yet written.
#[derive(Default)]
struct Unfinished {
    bytes: Vec<u8>,
    /// How many of the first `bytes` are known to hold no newline: only what comes after
    /// them is searched. Searching the whole unfinished line on every read would make a long
    /// line cost quadratic time.
    scanned: usize,
}

/// A part of a line, as it goes to the file.
enum Part<'a> {
    /// A whole line: stamp, text, newline.
    Line(&'a [u8]),
    /// The start of a line too long to keep: stamp and text, the rest to follow.
    Start(&'a [u8]),
    /// More of the line started: text only.
    More(&'a [u8]),
    /// The end of the line started: text and newline.
    End(&'a [u8]),
}

/// Where parts go: straight to the file, or into bytes for the caller to write.
enum Sink<'a> {
    File,
    Bytes(&'a mut Vec<u8>),
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
            unfinished_stdin: Unfinished::default(),
            unfinished_pipe: Unfinished::default(),
            open: None,
            line: Vec::new(),
            lines_written: 0,
        })
    }

    /// The open file, to compare it with stdin (see [`crate::session`]).
    pub fn file(&self) -> &File {
        &self.file
    }

    /// Records bytes just read from `source`: every complete line is written at once; a
    /// trailing partial line waits for the rest (or goes out in parts if it is long).
    pub fn record(&mut self, source: Source, bytes: &[u8]) -> io::Result<()> {
        self.unfinished(source).bytes.extend_from_slice(bytes);
        self.write_out(source, &mut Sink::File)
    }

    /// The source reached EOF: a last line without a newline is written too — or waits, with
    /// the source's other lines, for the end of a long line the other source has open.
    pub fn finish(&mut self, source: Source) -> io::Result<()> {
        self.write_rest(source, &mut Sink::File)
    }

    /// Like [`record`](Self::record), but the stamped lines are appended to `lines` instead
    /// of being written: for a program that submits the write itself (lesson 6 hands it to
    /// io_uring). Report how that write went with [`appended`](Self::appended).
    pub fn format(&mut self, source: Source, bytes: &[u8], lines: &mut Vec<u8>) {
        self.unfinished(source).bytes.extend_from_slice(bytes);
        // Into bytes, nothing can fail.
        let _ = self.write_out(source, &mut Sink::Bytes(lines));
    }

    /// Like [`finish`](Self::finish), but the last line goes into `lines` (see [`format`](Self::format)).
    pub fn format_rest(&mut self, source: Source, lines: &mut Vec<u8>) {
        let _ = self.write_rest(source, &mut Sink::Bytes(lines));
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

    fn unfinished(&mut self, source: Source) -> &mut Unfinished {
        match source {
            Source::Stdin => &mut self.unfinished_stdin,
            Source::Pipe => &mut self.unfinished_pipe,
        }
    }

    /// Writes what `source` has that can go now; then, if no line is left open, what the
    /// other source's lines waited for.
    fn write_out(&mut self, source: Source, sink: &mut Sink<'_>) -> io::Result<()> {
        if let Some(open) = self.open
            && open != source
        {
            if self.unfinished(source).bytes.len() <= PIECE {
                return Ok(()); // they wait for the end of the open line
            }
            self.end_open_line(sink)?; // too many wait: it goes on as a new line
        }
        self.write_lines(source, sink)?;
        if self.open.is_none() {
            self.write_lines(other(source), sink)?;
        }
        Ok(())
    }

    /// At EOF on `source`: its lines and the rest after them, then the other source's.
    fn write_rest(&mut self, source: Source, sink: &mut Sink<'_>) -> io::Result<()> {
        if self.open.is_some_and(|open| open != source) {
            // Its rest is a line now, and waits with the others for the open line's end.
            let unfinished = self.unfinished(source);
            if unfinished.bytes.last().is_some_and(|&byte| byte != b'\n') {
                unfinished.bytes.push(b'\n');
            }
            if unfinished.bytes.len() <= PIECE {
                return Ok(());
            }
            self.end_open_line(sink)?;
        }
        self.write_lines(source, sink)?;
        let rest = std::mem::take(self.unfinished(source)).bytes;
        if self.open == Some(source) {
            self.open = None;
            self.emit(source, Part::End(&rest), sink)?;
        } else if !rest.is_empty() {
            self.emit(source, Part::Line(&rest), sink)?;
        }
        self.write_lines(other(source), sink)
    }

    /// Ends the line left open where it is; what comes after goes on as a new line.
    fn end_open_line(&mut self, sink: &mut Sink<'_>) -> io::Result<()> {
        if let Some(open) = self.open.take() {
            self.emit(open, Part::End(b""), sink)?;
        }
        Ok(())
    }

    /// Writes `source`'s complete lines, then, of its unfinished line, all but the last
    /// [`PIECE`] bytes or fewer. Only when no other source's line is open.
    fn write_lines(&mut self, source: Source, sink: &mut Sink<'_>) -> io::Result<()> {
        // Taken out for the while, so that `emit` can borrow `self`.
        let mut unfinished = std::mem::take(self.unfinished(source));
        let written = self.write_lines_of(source, &unfinished, sink);
        if let Ok(done) = written {
            unfinished.bytes.drain(..done);
            unfinished.scanned = unfinished.bytes.len(); // no newline left in it
        }
        *self.unfinished(source) = unfinished;
        written.map(drop)
    }

    /// [`write_lines`](Self::write_lines)'s work; returns how many bytes went out.
    fn write_lines_of(
        &mut self,
        source: Source,
        unfinished: &Unfinished,
        sink: &mut Sink<'_>,
    ) -> io::Result<usize> {
        let bytes = &unfinished.bytes;
        let (mut done, mut from) = (0, unfinished.scanned);
        while let Some(at) = bytes[from..].iter().position(|&b| b == b'\n') {
            let text = &bytes[done..from + at];
            let part = if self.open == Some(source) {
                self.open = None;
                Part::End(text)
            } else {
                Part::Line(text)
            };
            self.emit(source, part, sink)?;
            done = from + at + 1;
            from = done;
        }
        while bytes.len() - done > PIECE {
            let end = done + piece_end(&bytes[done..]);
            let part = if self.open == Some(source) {
                Part::More(&bytes[done..end])
            } else {
                self.open = Some(source);
                Part::Start(&bytes[done..end])
            };
            self.emit(source, part, sink)?;
            done = end;
        }
        Ok(done)
    }

    /// Sends `part` to `sink`; a line written to the file is counted when it ends.
    fn emit(&mut self, source: Source, part: Part<'_>, sink: &mut Sink<'_>) -> io::Result<()> {
        match sink {
            Sink::Bytes(out) => {
                self.render(source, &part, out);
                Ok(())
            }
            Sink::File => {
                let mut line = std::mem::take(&mut self.line);
                line.clear();
                self.render(source, &part, &mut line);
                let written =
                    append_whole(&mut self.file, &line).map_err(|err| self.cannot_append(err));
                self.line = line;
                written?;
                if let Part::Line(_) | Part::End(_) = part {
                    self.lines_written += 1;
                }
                Ok(())
            }
        }
    }

    /// How many lines this log has written so far.
    pub fn lines_written(&self) -> usize {
        self.lines_written
    }

    /// Puts `part` at the end of `out`: `[ 3.02s pipe ] text\n` for a whole line; a line's
    /// start has no newline, its middle neither stamp nor newline, its end no stamp.
    fn render(&self, source: Source, part: &Part<'_>, out: &mut Vec<u8>) {
        let (Part::Line(text) | Part::Start(text) | Part::More(text) | Part::End(text)) = *part;
        if let Part::Line(_) | Part::Start(_) = part {
            let elapsed = self.started.elapsed().as_secs_f64();
            // Writing into a `Vec` cannot fail.
            let _ = write!(out, "[{elapsed:5.2}s {source} ] ");
        }
        // Bytes that are not UTF-8 become U+FFFD: the log stays text, and never crashes.
        out.extend_from_slice(String::from_utf8_lossy(text).as_bytes());
        if let Part::Line(_) | Part::End(_) = part {
            out.push(b'\n');
        }
    }

    fn cannot_append(&self, err: io::Error) -> io::Error {
        io::Error::new(
            err.kind(),
            format!("cannot append to {}: {err}", self.path.display()),
        )
    }
}

/// The other source.
fn other(source: Source) -> Source {
    match source {
        Source::Stdin => Source::Pipe,
        Source::Pipe => Source::Stdin,
    }
}

/// Where the first part of `line` (longer than [`PIECE`]) ends: after [`PIECE`] bytes, or up
/// to 3 before, so as not to cut a UTF-8 character (a byte that continues one is `10xxxxxx`).
fn piece_end(line: &[u8]) -> usize {
    let mut end = PIECE;
    while end > PIECE - 3 && line[end] & 0b1100_0000 == 0b1000_0000 {
        end -= 1;
    }
    end
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

    /// The texts of the lines of `path` (after their stamps), and the file removed.
    fn texts_of(path: &Path) -> Vec<String> {
        let text = std::fs::read_to_string(path).unwrap();
        std::fs::remove_file(path).unwrap();
        text.lines()
            .map(|line| line.split_once(" ] ").unwrap().1.to_string())
            .collect()
    }

    /// A line far longer than 64 KiB, read 1,000 bytes at a time, goes to the file as it
    /// comes, in parts, keeping at most 64 KiB and a read of it — yet the file holds it as
    /// one line, whole, `é` included (a part never ends inside a character).
    #[test]
    fn a_long_line_goes_out_as_it_comes_and_stays_one_line() {
        let path = temp_path("long-line");
        let mut log = OutputLog::open(&path).unwrap();
        let mut line = "a".repeat(2 * PIECE - 1);
        line.push('é');
        line.push_str(&"b".repeat(PIECE + 10));
        for read in line.as_bytes().chunks(1000) {
            log.record(Source::Stdin, read).unwrap();
            assert!(log.unfinished_stdin.bytes.len() <= PIECE + 1000);
        }
        let before_its_end = std::fs::metadata(&path).unwrap().len();
        assert!(
            before_its_end > 2 * PIECE as u64,
            "only {before_its_end} bytes out"
        );
        log.record(Source::Stdin, b"\nnext\n").unwrap();
        assert_eq!(log.lines_written(), 2);
        assert_eq!(texts_of(&path), [line, "next".to_string()]);
    }

    /// While a long line is open in the file, the pipe's lines wait for its end rather than
    /// land inside it; more than 64 KiB of them end it there, and it goes on as a new line.
    #[test]
    fn the_other_sources_lines_wait_for_the_end_of_an_open_line() {
        let path = temp_path("open-line");
        let mut log = OutputLog::open(&path).unwrap();
        let long = "x".repeat(PIECE + 1);
        log.record(Source::Stdin, long.as_bytes()).unwrap();
        log.record(Source::Pipe, b"tick 1\n").unwrap();
        log.record(Source::Stdin, b"y\n").unwrap();
        // Open again, and then more than 64 KiB of the pipe's lines.
        log.record(Source::Stdin, long.as_bytes()).unwrap();
        let tick = format!("{}\n", "t".repeat(1023));
        for _ in 0..=PIECE / 1024 {
            log.record(Source::Pipe, tick.as_bytes()).unwrap();
        }
        log.record(Source::Stdin, b"z").unwrap();
        log.finish(Source::Stdin).unwrap();
        log.finish(Source::Pipe).unwrap();
        let texts = texts_of(&path);
        assert_eq!(texts[0], format!("{long}y"));
        assert_eq!(texts[1], "tick 1");
        assert_eq!(
            texts[2],
            "x".repeat(PIECE),
            "the open line was not ended there"
        );
        let ticks = texts.iter().filter(|text| text.starts_with('t')).count();
        assert_eq!(ticks, 1 + PIECE / 1024 + 1);
        assert_eq!(
            texts.last().unwrap(),
            "xz",
            "the rest went on as a new line"
        );
    }

    /// The pipe's EOF while a stdin line is open: its last line, newline or not, waits for
    /// the open line's end like the others, and nothing is lost.
    #[test]
    fn a_sources_last_line_waits_for_the_end_of_an_open_line() {
        let path = temp_path("eof-behind-open-line");
        let mut log = OutputLog::open(&path).unwrap();
        let long = "x".repeat(PIECE + 1);
        log.record(Source::Stdin, long.as_bytes()).unwrap();
        log.record(Source::Pipe, b"tick 1\ntick 2").unwrap();
        log.finish(Source::Pipe).unwrap();
        log.record(Source::Stdin, b"y").unwrap();
        log.finish(Source::Stdin).unwrap();
        assert_eq!(log.lines_written(), 3);
        assert_eq!(
            texts_of(&path),
            [format!("{long}y"), "tick 1".into(), "tick 2".into()]
        );
    }
}
