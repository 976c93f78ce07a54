//! The parts of the writer program that are the same in every lesson: the output log, the
//! ticker thread, and what happens at EOF. Each lesson only decides *how it waits* for
//! stdin and the pipe — which is the lesson.

use std::fs;
use std::io::{self, PipeReader};
use std::os::fd::AsFd;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use nix::sys::signal::{SigHandler, Signal, signal};

use crate::cli::WriterArgs;
use crate::output::{OutputLog, Source};
use crate::ticker::Ticker;

/// A running writer program: lines go to the log; EOF on stdin stops the ticker.
pub struct WriterSession {
    log: OutputLog,
    ticker: Ticker,
    output: PathBuf,
    pipe_open: bool,
}

impl WriterSession {
    /// Opens the output, starts the ticker, and returns the pipe's read end to watch.
    pub fn start(args: &WriterArgs) -> io::Result<(WriterSession, PipeReader)> {
        let output = &args.output;
        // Opening a FIFO for writing waits until some program opens it for reading: say so,
        // or the program would seem to hang before it has printed anything.
        if fs::metadata(output).is_ok_and(|meta| meta.file_type().is_fifo()) {
            crate::log!(
                "{} is a FIFO: waiting for a program to open it for reading",
                output.display()
            );
        }
        let log = OutputLog::open(output).map_err(|err| {
            io::Error::new(
                err.kind(),
                format!("cannot open {}: {err}", output.display()),
            )
        })?;
        refuse_stdin_as_output(&log, output)?;
        ignore_file_size_signal()?;
        let (pipe, pipe_writer) = io::pipe()?;
        let ticker = Ticker::start(pipe_writer, args.interval(), args.count);
        crate::log!(
            "appending to {}: type lines, Ctrl+D to stop",
            args.output.display()
        );
        let output = args.output.clone();
        let session = WriterSession {
            log,
            ticker,
            output,
            pipe_open: true,
        };
        Ok((session, pipe))
    }

    /// Takes what one read from `source` returned. Returns whether the source is still open:
    /// an empty read is EOF. EOF on stdin asks the ticker to stop; the caller keeps reading
    /// the pipe until its EOF, so every line already written to it reaches the file.
    pub fn on_read(&mut self, source: Source, bytes: &[u8]) -> io::Result<bool> {
        if !bytes.is_empty() {
            self.log.record(source, bytes)?;
            return Ok(true);
        }
        self.log.finish(source)?;
        Ok(self.on_eof(source))
    }

    /// Like [`on_read`](Self::on_read), but the stamped lines are put into `lines` for the
    /// caller to write to [`output`](Self::output) itself, in one write, then to report with
    /// [`appended`](Self::appended). Lesson 6 submits that write to io_uring.
    pub fn on_read_formatted(&mut self, source: Source, bytes: &[u8], lines: &mut Vec<u8>) -> bool {
        if !bytes.is_empty() {
            self.log.format(source, bytes, lines);
            return true;
        }
        self.log.format_rest(source, lines);
        self.on_eof(source)
    }

    /// The output file, open for appending.
    pub fn output(&self) -> &fs::File {
        self.log.file()
    }

    /// How the write of `lines` from [`on_read_formatted`](Self::on_read_formatted) went.
    pub fn appended(&mut self, lines: &[u8], written: io::Result<usize>) -> io::Result<()> {
        self.log.appended(lines, written)
    }

    /// EOF on `source`: says so, and stops the ticker if it was stdin. Always `false`.
    fn on_eof(&mut self, source: Source) -> bool {
        match source {
            Source::Stdin if self.pipe_open => {
                crate::log!("EOF on stdin: stopping the pipe's writer, keeping what it wrote");
                self.ticker.request_stop();
            }
            Source::Stdin => crate::log!("EOF on stdin"),
            Source::Pipe => {
                self.pipe_open = false;
                crate::log!("the pipe's writer closed it: no longer reading the pipe");
            }
        }
        false
    }

    /// Waits for the ticker thread and prints a summary.
    pub fn finish(self) -> io::Result<()> {
        let sent = self.ticker.join()?;
        let lines = self.log.lines_written();
        crate::log!(
            "done: {} sent, {} appended to {}",
            crate::count(sent.into(), "pipe message"),
            crate::count(lines as u64, "line"),
            self.output.display()
        );
        Ok(())
    }
}

/// `writer --output f < f` would read its own lines back and append them again, forever,
/// until the disk is full. Like `cat` ("input file is output file"), refuse: the two are the
/// same file if they have the same device and inode. Only a regular file can loop like
/// that; `--output /dev/null < /dev/null` is fine.
fn refuse_stdin_as_output(log: &OutputLog, output: &Path) -> io::Result<()> {
    let stdin = io::stdin().as_fd().try_clone_to_owned().map(fs::File::from);
    let Ok(stdin) = stdin.and_then(|stdin| stdin.metadata()) else {
        return Ok(()); // no stdin at all: it reads as EOF, nothing to compare
    };
    let out = log.file().metadata()?;
    if stdin.is_file() && (stdin.dev(), stdin.ino()) == (out.dev(), out.ino()) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{}: input file is output file", output.display()),
        ));
    }
    Ok(())
}

/// A file-size limit (`ulimit -f`) stops a write with the signal SIGXFSZ, whose default is
/// to kill the process on the spot. Ignored, the write fails with `EFBIG` instead: one
/// error line, like a full disk.
fn ignore_file_size_signal() -> io::Result<()> {
    // Safety: `SigIgn` installs no handler of ours, so no code can run at signal time.
    unsafe { signal(Signal::SIGXFSZ, SigHandler::SigIgn) }?;
    Ok(())
}
