//! `follow(f)`: `tail -f` as an iterator — an endless generator, fed by a file that grows.
//!
//! ```python
//! def follow(thefile):
//!     thefile.seek(0, os.SEEK_END)        # start at the end: old lines are not news
//!     while True:
//!         line = thefile.readline()
//!         if not line:
//!             time.sleep(0.1)             # nothing new yet: look again in a moment
//!             continue
//!         yield line
//!
//! for line in follow(open("access-log")):
//!     print(line, end="")
//! ```
//!
//! The Rust iterator is the same loop inside `next`: read a line, or sleep and read again.
//! One thing Python's version leaves out: a line can be read while it is still being
//! written, so a piece without its newline is kept until the rest arrives. The iterator
//! never ends by itself (`next` never returns `None`); `take(n)` is what ends the loop.
//!
//! Without a FILE, a thread plays the program writing the log: it appends a line every
//! `--interval-ms` to a temporary file, so there is something to watch without a second
//! terminal. The first line, on stderr, names that file (the number is the process id):
//!
//! ```text
//! $ cargo run -q --example follow -- --lines 3
//! following /tmp/follow-4242.log: a thread appends a line every 300 ms
//! appended line 1 of 3
//! appended line 2 of 3
//! appended line 3 of 3
//! ```
//!
//! With a FILE, it follows that file (which must exist) until `--lines` new lines arrive:
//! run `cargo run -q --example follow -- --lines 1 /tmp/notes.log` after `touch
//! /tmp/notes.log`, and `echo hello >> /tmp/notes.log` in another terminal. It prints
//! `following /tmp/notes.log: append lines to it` on stderr, then `hello`.

use std::fs::{File, OpenOptions};
use std::io::{self, BufRead, BufReader, Seek, SeekFrom, Write};
use std::mem;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::thread;
use std::time::Duration;

use clap::Parser;

/// `tail -f`: print the lines appended to FILE (by default, to a temporary file a thread
/// writes to), then stop after --lines of them.
#[derive(Parser)]
struct Args {
    /// The file to follow; without one, a thread appends lines to a temporary file.
    file: Option<PathBuf>,
    /// Stop after this many new lines.
    #[arg(long, default_value_t = 5)]
    lines: usize,
    /// Milliseconds between two lines of the built-in writer.
    #[arg(long, default_value_t = 300)]
    interval_ms: u64,
}

/// How long to sleep when the file has nothing new.
const NOTHING_NEW_PAUSE: Duration = Duration::from_millis(100);

/// `follow(thefile)`: the lines appended to a file from now on.
struct Follow {
    reader: BufReader<File>,
    /// A line read while it was still being written: the rest will follow.
    partial: String,
}

/// `thefile.seek(0, os.SEEK_END)`: only what is written from now on counts.
fn follow(mut file: File) -> io::Result<Follow> {
    file.seek(SeekFrom::End(0))?;
    Ok(Follow {
        reader: BufReader::new(file),
        partial: String::new(),
    })
}

impl Iterator for Follow {
    type Item = io::Result<String>;

    fn next(&mut self) -> Option<io::Result<String>> {
        loop {
            match self.reader.read_line(&mut self.partial) {
                Ok(0) => thread::sleep(NOTHING_NEW_PAUSE),
                Ok(_) if self.partial.ends_with('\n') => {
                    return Some(Ok(mem::take(&mut self.partial)));
                }
                // Half a line: keep it; the next read brings the rest (or sleeps first).
                Ok(_) => {}
                Err(err) => return Some(Err(err)),
            }
        }
    }
}

/// The built-in writer: appends `count` lines to `path`, one every `interval`.
fn append_lines(path: &Path, count: usize, interval: Duration) -> io::Result<()> {
    let mut log = OpenOptions::new().append(true).open(path)?;
    for n in 1..=count {
        thread::sleep(interval);
        writeln!(log, "appended line {n} of {count}")?;
    }
    Ok(())
}

fn run(args: &Args) -> io::Result<()> {
    let Some(path) = &args.file else {
        let path = std::env::temp_dir().join(format!("follow-{}.log", std::process::id()));
        std::fs::write(
            &path,
            "written before: follow starts at the end, so not shown\n",
        )?;
        let lines = follow(File::open(&path)?)?;
        fdio::log!(
            "following {}: a thread appends a line every {} ms",
            path.display(),
            args.interval_ms
        );
        let (count, interval) = (args.lines, Duration::from_millis(args.interval_ms));
        let writer_path = path.clone();
        let writer = thread::spawn(move || append_lines(&writer_path, count, interval));
        let printed = print_lines(lines, args.lines);
        let written = writer
            .join()
            .unwrap_or_else(|_| Err(io::Error::other("the writer thread panicked")));
        std::fs::remove_file(&path)?;
        return printed.and(written);
    };
    let file = File::open(path)
        .map_err(|err| io::Error::new(err.kind(), format!("{}: {err}", path.display())))?;
    fdio::log!("following {}: append lines to it", path.display());
    print_lines(follow(file)?, args.lines)
}

/// `for line in follow(f): print(line, end="")`, for the first `count` lines.
fn print_lines(lines: Follow, count: usize) -> io::Result<()> {
    let mut stdout = io::stdout();
    for line in lines.take(count) {
        stdout.write_all(line?.as_bytes())?;
        stdout.flush()?;
    }
    Ok(())
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        // `follow | head -1`: nobody reads any more, a normal way to end.
        Err(err) if fdio::reader_went_away(&err) => ExitCode::SUCCESS,
        Err(err) => {
            fdio::log!("follow: {err}");
            ExitCode::FAILURE
        }
    }
}
