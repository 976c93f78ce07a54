//! The writer program with every read and write a request in the ring: stdin and the pipe
//! are read by `IORING_OP_READ`, the output file is appended to by `IORING_OP_WRITE`.
//!
//! The slides called disks "the thorny issue": a file is always "ready", so no readiness API
//! can wait for one, and lessons 2–5 read a file-stdin without waiting (a page-cache miss
//! blocks the whole loop) and wrote the file with a blocking `write`. Here the write is a
//! request like any other: the loop goes on while the kernel writes.

use std::future::pending;
use std::io;

use fdio::{Source, WriterArgs, WriterSession};

use crate::executor::{Either, race};
use crate::fd::RingFd;
use crate::io::{Reader, append};

/// How much one read of stdin or the pipe may bring.
const CHUNK: usize = 4096;

/// Runs until EOF on stdin (Ctrl+D), then until the pipe is drained.
pub async fn run(args: &WriterArgs) -> io::Result<()> {
    let (mut session, pipe) = WriterSession::start(args)?;
    let output = RingFd::new(session.output().try_clone()?.into());
    let mut stdin = Reader::stdin(CHUNK)?;
    let mut pipe = Reader::new(pipe.into(), CHUNK);
    let (mut stdin_open, mut pipe_open) = (true, true);
    let mut lines = Vec::new();

    while stdin_open || pipe_open {
        // Both reads are in flight in the ring at once; the one that loses the race stays
        // in flight in its `Reader` (see `crate::io`), and its bytes win the next race. So
        // the two take turns by themselves: after stdin wins, its next read is submitted
        // anew, while the pipe's is already done and waiting.
        let stdin_read = async {
            if stdin_open {
                (Source::Stdin, stdin.read().await)
            } else {
                pending().await
            }
        };
        let pipe_read = async {
            if pipe_open {
                (Source::Pipe, pipe.read().await)
            } else {
                pending().await
            }
        };
        let (Either::Left((source, read)) | Either::Right((source, read))) =
            race(stdin_read, pipe_read).await;
        let bytes = read?;
        lines.clear();
        let still_open = session.on_read_formatted(source, &bytes, &mut lines);
        if !lines.is_empty() {
            // One write of every whole line this read completed.
            let (written, returned) = append(&output, lines).await;
            lines = returned;
            session.appended(&lines, written)?;
        }
        match source {
            Source::Stdin => stdin_open = still_open,
            Source::Pipe => pipe_open = still_open,
        }
    }
    session.finish()
}
