//! The writer program with blocking reads: the pipe, then stdin, then the pipe again …

use std::io;

use fdio::{Source, Trace, WriterArgs, WriterSession, read_blocking};

/// Runs until EOF on stdin (Ctrl+D), then until the pipe is drained.
pub fn run(args: &WriterArgs) -> io::Result<()> {
    let trace = Trace::new(args.trace);
    let (mut session, pipe) = WriterSession::start(args)?;
    let stdin = io::stdin();

    let mut buf = [0; 1024];
    let (mut pipe_open, mut stdin_open) = (true, true);
    // In turn, like the Python original's `for fd in [pipe, stdin]: os.read(fd, 1024)`:
    // each read blocks until *its* source has something, whatever the other one has. (It
    // blocks even if the shell handed us a non-blocking stdin: see `read_blocking`.)
    while pipe_open || stdin_open {
        if pipe_open {
            trace.say(|| "sync: blocking in read() on the pipe".to_string());
            let n = read_blocking(&pipe, &mut buf)?;
            pipe_open = session.on_read(Source::Pipe, &buf[..n])?;
        }
        if stdin_open {
            trace.say(|| "sync: blocking in read() on stdin".to_string());
            let n = read_blocking(&stdin, &mut buf)?;
            stdin_open = session.on_read(Source::Stdin, &buf[..n])?;
        }
    }
    session.finish()
}
