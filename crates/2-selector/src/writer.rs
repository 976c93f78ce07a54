//! The writer program as two callbacks on one selector: one for stdin, one for the pipe.
//! Python original: `selector_async.py`.

use std::cell::RefCell;
use std::io::{self, Read};
use std::os::fd::{OwnedFd, RawFd};
use std::rc::Rc;

use fdio::{
    Source, Trace, WriterArgs, WriterSession, read_fd, readable_now, set_nonblocking, would_block,
};
use mio::unix::SourceFd;
use mio::unix::pipe::Receiver;
use mio::{Interest, Token};

use crate::selector::Selector;

/// stdin's fd number, in a `static` so that a `SourceFd` borrowing it lives as long as the
/// callback that owns it.
static STDIN_FD: RawFd = 0;

/// Runs until EOF on stdin (Ctrl+D) and on the pipe: the selector's loop ends when both
/// callbacks have unregistered themselves.
pub fn run(args: &WriterArgs) -> io::Result<()> {
    let (session, pipe) = WriterSession::start(args)?;
    // Both callbacks append to the same log, so they share it. This `Rc<RefCell<…>>` is the
    // price of the callback style: state that spans callbacks must live outside all of them.
    // (Lesson 3's tasks and lesson 5's `async fn`s keep such state in local variables.)
    let session = Rc::new(RefCell::new(session));
    let mut selector = Selector::new(Trace::new(args.trace))?;

    let stdin_session = Rc::clone(&session);
    selector.register(
        "stdin".to_string(),
        SourceFd(&STDIN_FD),
        Interest::READABLE,
        move |selector, stdin, ready| {
            if let Err(err) = on_stdin(selector, stdin, ready.token, &stdin_session) {
                eprintln!("stdin: {err}");
                let _ = selector.unregister(ready.token, stdin);
            }
        },
    )?;

    // The pipe is ours alone, so it may be non-blocking (unlike stdin, shared with the shell).
    let pipe = OwnedFd::from(pipe);
    set_nonblocking(&pipe)?;
    let pipe_session = Rc::clone(&session);
    selector.register(
        "pipe".to_string(),
        Receiver::from(pipe),
        Interest::READABLE,
        move |selector, pipe, ready| {
            if let Err(err) = on_pipe(selector, pipe, ready.token, &pipe_session) {
                eprintln!("pipe: {err}");
                let _ = selector.unregister(ready.token, pipe);
            }
        },
    )?;

    selector.run()?;
    let session =
        Rc::into_inner(session).ok_or_else(|| io::Error::other("a callback outlived the loop"))?;
    session.into_inner().finish()
}

/// stdin's callback. stdin is blocking, so "read until WouldBlock" would block: instead,
/// read while the kernel says a read returns at once.
fn on_stdin(
    selector: &mut Selector,
    stdin: &mut SourceFd<'_>,
    token: Token,
    session: &RefCell<WriterSession>,
) -> io::Result<()> {
    let mut buf = [0; 1024];
    loop {
        let n = read_fd(io::stdin(), &mut buf)?;
        if !session.borrow_mut().on_read(Source::Stdin, &buf[..n])? {
            // EOF: stop watching stdin. Without this, epoll would report EOF forever.
            return selector.unregister(token, stdin);
        }
        if !readable_now(io::stdin())? {
            return Ok(());
        }
    }
}

/// The pipe's callback: read until `WouldBlock` (edge-triggered), or until EOF.
fn on_pipe(
    selector: &mut Selector,
    pipe: &mut Receiver,
    token: Token,
    session: &RefCell<WriterSession>,
) -> io::Result<()> {
    let mut buf = [0; 1024];
    loop {
        let n = match pipe.read(&mut buf) {
            Ok(n) => n,
            Err(err) if would_block(&err) => return Ok(()),
            Err(err) => return Err(err),
        };
        if !session.borrow_mut().on_read(Source::Pipe, &buf[..n])? {
            // The pipe's writer closed it: stop watching it, or every poll returns at once.
            return selector.unregister(token, pipe);
        }
    }
}
