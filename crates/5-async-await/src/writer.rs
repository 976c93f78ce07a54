//! The writer program as one `async fn`: stdin and the pipe are two async readers, and one
//! loop awaits whichever has something first. The state — the log, which sources are still
//! open — is plain local variables.

use std::future::pending;
use std::io;

use fdio::{Source, WriterArgs, WriterSession};

use crate::combinators::{Either, race};
use crate::io::{AsyncReader, stdin};

/// Runs until EOF on stdin (Ctrl+D), then until the pipe is drained.
pub async fn run(args: &WriterArgs) -> io::Result<()> {
    let (mut session, pipe) = WriterSession::start(args)?;
    let mut stdin = stdin()?;
    let mut pipe = AsyncReader::pipe(pipe)?;
    let (mut stdin_open, mut pipe_open) = (true, true);
    let (mut stdin_buf, mut pipe_buf) = ([0; 1024], [0; 1024]);
    let mut pipe_first = false;

    while stdin_open || pipe_open {
        // A source that is closed is replaced by a future that never completes. The read
        // that loses the race is dropped before it read anything: no bytes are lost.
        let stdin_read = async {
            let read = if stdin_open {
                stdin.read(&mut stdin_buf).await
            } else {
                pending().await
            };
            (Source::Stdin, read)
        };
        let pipe_read = async {
            let read = if pipe_open {
                pipe.read(&mut pipe_buf).await
            } else {
                pending().await
            };
            (Source::Pipe, read)
        };
        // `race` polls the future on its left first, so when both sources have bytes the
        // left one wins. Always stdin first, and a stdin that never runs dry (`yes | …`)
        // would win every race: the pipe's lines would wait for the end of the flood. So
        // the two take turns at going first.
        pipe_first = !pipe_first;
        let (Either::Left((source, read)) | Either::Right((source, read))) = if pipe_first {
            race(pipe_read, stdin_read).await
        } else {
            race(stdin_read, pipe_read).await
        };
        let bytes = match source {
            Source::Stdin => &stdin_buf[..read?],
            Source::Pipe => &pipe_buf[..read?],
        };
        let still_open = session.on_read(source, bytes)?;
        match source {
            Source::Stdin => stdin_open = still_open,
            Source::Pipe => pipe_open = still_open,
        }
    }
    session.finish()
}
