//! The writer program as two callbacks on one selector: one for stdin, one for the pipe.
//! Python original: `selector_async.py`.
//!
//! Each callback reads at most `ready.budget` times per call (once, level-triggered), so a
//! busy stdin — `yes | selector writer` — cannot keep the pipe's lines waiting: every turn,
//! each ready source gets its reads.
//!
//! An error in either callback — the disk is full, stdin is a directory — is returned, and
//! that ends the selector's loop: `run` returns it, and the program prints it and exits 1,
//! as every lesson does.

use std::cell::RefCell;
use std::io::{self, PipeReader, Read, Stdin};
use std::rc::Rc;

use fdio::{
    Source, Trace, WriterArgs, WriterSession, interrupted, read_fd, readable_now, set_nonblocking,
    would_block,
};

use crate::selector::{Interest, Ready, Selector, Trigger};

/// Runs until EOF on stdin (Ctrl+D) and on the pipe: the selector's loop ends when both
/// callbacks have unregistered themselves, or at the first error either of them returns.
pub fn run(args: &WriterArgs, trigger: Trigger) -> io::Result<()> {
    let (session, pipe) = WriterSession::start(args)?;
    // Both callbacks append to the same log, so they share it. This `Rc<RefCell<…>>` is the
    // price of the callback style: state that spans callbacks must live outside all of them.
    // (Lesson 3's tasks and lesson 5's `async fn`s keep such state in local variables.)
    let session = Rc::new(RefCell::new(session));
    let mut selector = Selector::new(trigger, Trace::new(args.trace))?;

    let stdin_session = Rc::clone(&session);
    selector.register(
        "stdin".to_string(),
        io::stdin(),
        Interest::READ,
        move |selector, stdin, ready| on_stdin(selector, stdin, ready, &stdin_session),
    )?;

    // The pipe is ours alone, so it may be non-blocking (unlike stdin, shared with the shell).
    set_nonblocking(&pipe)?;
    let pipe_session = Rc::clone(&session);
    selector.register(
        "pipe".to_string(),
        pipe,
        Interest::READ,
        move |selector, pipe, ready| on_pipe(selector, pipe, ready, &pipe_session),
    )?;

    // On an error, return it now: the summary below is for a run that ended well. (The
    // ticker is not waited for: its next write into the closed pipe just fails.)
    selector.run()?;
    let session =
        Rc::into_inner(session).ok_or_else(|| io::Error::other("a callback outlived the loop"))?;
    session.into_inner().finish()
}

/// stdin's callback. stdin stays blocking, so "read until `WouldBlock`" would block: after
/// the first read (which the event promised would not block), it reads again only while the
/// kernel says a read returns at once. Level-triggered, the budget is that first read.
fn on_stdin(
    selector: &mut Selector,
    stdin: &mut Stdin,
    ready: Ready,
    session: &RefCell<WriterSession>,
) -> io::Result<()> {
    let mut buf = [0; 1024];
    for reads in 0..ready.budget {
        if reads > 0 && !readable_now(&*stdin)? {
            return Ok(());
        }
        let n = read_fd(&*stdin, &mut buf)?;
        if !session.borrow_mut().on_read(Source::Stdin, &buf[..n])? {
            // EOF: stop watching stdin. Without this, epoll would report EOF forever.
            return selector.unregister(ready.token, stdin);
        }
    }
    selector.budget_spent(ready.token);
    Ok(())
}

/// The pipe's callback: read until `WouldBlock` or EOF, within the budget.
fn on_pipe(
    selector: &mut Selector,
    pipe: &mut PipeReader,
    ready: Ready,
    session: &RefCell<WriterSession>,
) -> io::Result<()> {
    let mut buf = [0; 1024];
    for _ in 0..ready.budget {
        let n = match pipe.read(&mut buf) {
            Ok(n) => n,
            Err(err) if would_block(&err) => return Ok(()),
            Err(err) if interrupted(&err) => continue,
            Err(err) => return Err(err),
        };
        if !session.borrow_mut().on_read(Source::Pipe, &buf[..n])? {
            // The pipe's writer closed it: stop watching it, or every wait returns at once.
            return selector.unregister(ready.token, pipe);
        }
    }
    selector.budget_spent(ready.token);
    Ok(())
}
