//! The writer program as one `async fn`: stdin and the pipe are two async readers, and one
//! loop awaits whichever has something first. The state — the log, which sources are still
//! open — is plain local variables.

use std::future::pending;
use std::io;

use fdio::{Source, WriterArgs, WriterSession};

use crate::executor::{Either, race};
use crate::io::{AsyncReader, stdin};

/// Runs until EOF on stdin (Ctrl+D), then until the pipe is drained.
pub async fn run(args: &WriterArgs) -> io::Result<()> {
    let (mut session, pipe) = WriterSession::start(args)?;
    let mut stdin = stdin()?;
    let mut pipe = AsyncReader::pipe(pipe)?;
    let (mut stdin_open, mut pipe_open) = (true, true);
    let (mut stdin_buf, mut pipe_buf) = ([0; 1024], [0; 1024]);

    while stdin_open || pipe_open {
        // A source that is closed is replaced by a future that never completes. The read
        // that loses the race is dropped before it read anything: no bytes are lost.
        let stdin_read = async {
            if stdin_open {
                stdin.read(&mut stdin_buf).await
            } else {
                pending().await
            }
        };
        let pipe_read = async {
            if pipe_open {
                pipe.read(&mut pipe_buf).await
            } else {
                pending().await
            }
        };
        match race(stdin_read, pipe_read).await {
            Either::Left(read) => {
                stdin_open = session.on_read(Source::Stdin, &stdin_buf[..read?])?
            }
            Either::Right(read) => pipe_open = session.on_read(Source::Pipe, &pipe_buf[..read?])?,
        }
    }
    session.finish()
}
