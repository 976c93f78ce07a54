//! The writer program: stdin and the pipe, each read by a green thread of its own with a
//! blocking-looking `read` — lesson 0's loop, once per source.
//!
//! Lesson 0 read the two in turn on one thread, so a silent stdin held the pipe's lines back.
//! `sync echo --threads` would fix that with a thread per source; here a green thread per
//! source does, on one OS thread. The two share the output log through an `Rc<RefCell<…>>`:
//! no `Mutex`, no `Send`, since they never run at the same time.

use std::cell::RefCell;
use std::io::{self, Read};
use std::rc::Rc;

use fdio::{Source, WriterArgs, WriterSession};

use crate::io::{PipeReader, stdin};
use crate::spawn::{JoinHandle, panic_message, spawn_named};
use crate::sync::Notify;

/// Runs until EOF on stdin (Ctrl+D), then until the pipe is drained.
pub fn run(args: &WriterArgs) -> io::Result<()> {
    let (session, pipe) = WriterSession::start(args)?;
    let session = Rc::new(RefCell::new(session));
    let finished = Rc::new(Notify::new());
    let mut readers = vec![
        copy_in_green_thread(Source::Stdin, stdin()?, &session, &finished)?,
        copy_in_green_thread(Source::Pipe, PipeReader::new(pipe)?, &session, &finished)?,
    ];
    // Wait for both readers; the first error ends the program at once (the other one, parked
    // in its read, is abandoned).
    while !readers.is_empty() {
        match readers.iter().position(JoinHandle::is_finished) {
            Some(index) => readers
                .swap_remove(index)
                .join()
                .map_err(|panic| io::Error::other(panic_message(&*panic).to_string()))??,
            None => finished.wait(),
        }
    }
    let session = Rc::into_inner(session).expect("both readers have finished");
    session.into_inner().finish()
}

/// Starts a green thread that copies `input` into the log until its EOF, then says so.
fn copy_in_green_thread(
    source: Source,
    input: impl Read + 'static,
    session: &Rc<RefCell<WriterSession>>,
    finished: &Rc<Notify>,
) -> io::Result<JoinHandle<io::Result<()>>> {
    let (session, finished) = (Rc::clone(session), Rc::clone(finished));
    spawn_named(source.to_string(), move || {
        let copied = copy_lines(source, input, &session);
        finished.notify_all();
        copied
    })
}

/// Lesson 0's loop for one source: a blocking-looking read, then the log.
fn copy_lines(
    source: Source,
    mut input: impl Read,
    session: &RefCell<WriterSession>,
) -> io::Result<()> {
    let mut buf = [0; 1024];
    loop {
        let n = input.read(&mut buf)?;
        // The borrow ends before the next read: never hold one across a park.
        if !session.borrow_mut().on_read(source, &buf[..n])? {
            return Ok(());
        }
    }
}
