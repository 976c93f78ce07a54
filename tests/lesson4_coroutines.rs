//! Lesson 4: coroutine tasks on a scheduler serve every client and both writer sources, and
//! `coroutines repl` replays the Python lesson's interpreter session line for line.

mod common;

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::process::Command;
use std::sync::mpsc;
use std::thread;

use common::writer;
use common::{PATIENCE, Process, Server, TempFile, conformance::round_trip, wait_until};
use echo_client::connect;

const COROUTINES: &str = env!("CARGO_BIN_EXE_coroutines");

/// The whole conformance suite against `coroutines echo`.
mod coroutines {
    crate::conformance_suite!(concurrent: super::COROUTINES, &["echo"]);
}

/// `coroutines echo` holds 10,000 connections at once and still echoes on them.
#[test]
fn serves_ten_thousand_connections() {
    common::conformance::holds_ten_thousand_connections(COROUTINES, &["echo"]);
}

/// `--trace` narrates the scheduler: tasks started, parked on an fd, woken, finished, and
/// each wait with its `to_read` / `to_write` lists.
#[test]
fn trace_shows_tasks_parking_and_waking() {
    let server = Server::start(COROUTINES, &["echo", "--trace"]);
    let client = connect(server.addr, PATIENCE).unwrap();
    // Send only once the client's task has parked: bytes already there when it first runs
    // would be echoed at once, and the task would never have to wait for them.
    let parked = |line: &String| {
        line.starts_with("scheduler: client ") && line.contains(" parks on read fd ")
    };
    assert!(
        wait_until(|| server.process.stderr().iter().any(parked)),
        "{:?}",
        server.process.stderr()
    );
    round_trip(&client, b"traced\n");
    drop(client);
    server.process.expect_stderr(&[
        "scheduler: listener 127.0.0.1:",
        " starts client 127.0.0.1:",
        "scheduler: waiting with to_read=[",
        "is READABLE → client 127.0.0.1:",
        "scheduler: resume client 127.0.0.1:",
        "finished",
    ]);
}

/// `--trace` shows a budget running out: with stdin a 300 KiB regular file, which never has
/// to wait, the stdin task gives the turn back after 32 reads, and the trace says so; the
/// file still arrives whole.
#[test]
fn trace_shows_a_spent_budget() {
    let input = TempFile::new("stdin.txt");
    std::fs::write(
        &input.path,
        "a line of a long file\n".repeat(300 * 1024 / 22),
    )
    .unwrap();
    let mut writer =
        writer::Writer::start_with_stdin_file(COROUTINES, &["writer", "--trace"], &input);
    writer.process.expect_success();
    writer.process.expect_stderr(&[
        "scheduler: stdin spent its budget of 32 operations: the others go first",
        "next_turn=1 timeout=0",
    ]);
    let from_stdin = writer
        .lines()
        .iter()
        .filter(|line| line.ends_with("s stdin ] a line of a long file"))
        .count();
    assert_eq!(from_stdin, 300 * 1024 / 22);
}

/// In `coroutines writer` pipe lines arrive while stdin stays silent.
#[test]
fn writer_pipe_lines_arrive_while_stdin_is_silent() {
    writer::pipe_lines_arrive_while_stdin_is_silent(COROUTINES, &["writer"]);
}

/// EOF on stdin ends `coroutines writer` with exit 0, losing no line.
#[test]
fn writer_exits_on_eof_keeping_every_line() {
    writer::exits_on_eof_keeping_every_line(COROUTINES, &["writer"]);
}

/// `coroutines writer`: a flood on stdin does not hold up the pipe lines — stdin's task gives
/// the turn back when its budget is spent.
#[test]
fn writer_pipe_lines_on_time_while_stdin_floods() {
    writer::pipe_lines_on_time_while_stdin_floods(COROUTINES, &["writer"]);
}

/// `coroutines writer`: a flood on the pipe does not hold up stdin's lines and its EOF — the
/// pipe's task gives the turn back when its budget is spent.
#[test]
fn writer_reads_stdin_eof_while_the_pipe_floods() {
    writer::eof_on_stdin_is_read_while_the_pipe_floods(COROUTINES, &["writer"]);
}

/// `coroutines writer` forgets the closed pipe and sits idle.
#[test]
fn writer_idles_after_the_pipe_closes() {
    writer::idles_after_the_pipe_closes(COROUTINES, &["writer"]);
}

/// `coroutines writer < file`: epoll refuses a regular file; the writer says so once and
/// reads it.
#[test]
fn writer_reads_stdin_from_a_regular_file() {
    writer::works_with_stdin_from_a_file(COROUTINES, &["writer"]);
}

/// Runs `coroutines repl` with `commands` piped into stdin until EOF; returns its stdout,
/// and the exited process (for its stderr).
fn repl(commands: impl AsRef<[u8]>) -> (String, Process) {
    let mut command = Command::new(COROUTINES);
    command.arg("repl");
    let mut process = Process::spawn(command);
    let mut stdin = process.child.stdin.take().expect("stdin is piped");
    stdin.write_all(commands.as_ref()).unwrap();
    drop(stdin);
    process.expect_success();
    let mut stdout = String::new();
    let mut pipe = process.child.stdout.take().expect("stdout is piped");
    pipe.read_to_string(&mut stdout).unwrap();
    (stdout, process)
}

/// Types the `>>> command  # Python` lines of a documented session, comments and all, and
/// checks the lines under each are exactly what the repl prints.
fn replay(session: &[&str]) {
    assert!(session.len() >= 20, "the documented session was not found");
    let mut commands = String::new();
    let mut expected = String::new();
    for line in session {
        match line.strip_prefix(">>> ") {
            Some(command) => commands.push_str(command),
            None => expected.push_str(line),
        }
        let target = if line.starts_with(">>> ") {
            &mut commands
        } else {
            &mut expected
        };
        target.push('\n');
    }
    let (stdout, process) = repl(&commands);
    assert_eq!(stdout, expected, "stderr: {:?}", process.stderr());
}

/// The lines of the code block that starts with the repl command, in `text`.
fn session_in(text: &str, strip: &str) -> Vec<String> {
    text.lines()
        .filter_map(|line| line.strip_prefix(strip))
        .map(|line| line.strip_prefix(' ').unwrap_or(line).to_string())
        .skip_while(|line| line != "$ cargo run -q --bin coroutines -- repl")
        .skip(1)
        .take_while(|line| line != "```")
        .collect()
}

/// The session in the lesson's `//!` doc (crates/4-coroutines/src/lib.rs), replayed as
/// written: the lesson text and the program cannot drift apart.
#[test]
fn repl_replays_the_session_in_the_lesson_text() {
    let session = session_in(include_str!("../crates/4-coroutines/src/lib.rs"), "//!");
    replay(&session.iter().map(String::as_str).collect::<Vec<_>>());
}

/// The session in the README, pasted as it is, prints what the README shows.
#[test]
fn repl_replays_the_session_in_the_readme() {
    let session = session_in(include_str!("../README.md"), "");
    replay(&session.iter().map(String::as_str).collect::<Vec<_>>());
}

/// Python's errors come out as a traceback's last line: a message before the first `yield`,
/// `next` on a finished coroutine, `next` into `average` (None cannot be added), a
/// `StopIteration` escaping `gen` (PEP 479), and `close()` on a coroutine that is already
/// closed, which says nothing.
#[test]
fn repl_prints_python_errors() {
    let (stdout, _) = repl(
        "next\nnew gen\nsend early\nstate\nnext\nthrow StopIteration\nstate\nnext\nclose\n\
         new average\nnext\nstate\n",
    );
    assert_eq!(
        stdout,
        "NameError: name 'g' is not defined\n\
         TypeError: can't send non-None value to a just-started generator\n\
         'GEN_CREATED'\n\
         'Ready to accept message.'\n\
         RuntimeError: generator raised StopIteration\n\
         'GEN_CLOSED'\n\
         StopIteration\n\
         TypeError: unsupported operand type(s) for +=: 'int' and 'NoneType'\n\
         'GEN_CLOSED'\n"
    );
}

/// `close()` on the delegator closes subgen through the `yield from`; a thrown exception
/// subgen does not catch (GeneratorExit is not an Exception) passes through both.
#[test]
fn repl_close_and_throw_go_through_the_delegator() {
    let (stdout, _) = repl(
        "new delegator\nsend hello\nnext\nclose\nstate\nnew delegator\nthrow GeneratorExit\nstate\n",
    );
    assert_eq!(
        stdout,
        ".......... hello\n\
         .......... None\n\
         'GEN_CLOSED'\n\
         GeneratorExit\n\
         'GEN_CLOSED'\n"
    );
}

/// A command the console does not know, or one missing its argument, gets one `error:`
/// line on stderr, and the session goes on to the next command.
#[test]
fn repl_bad_commands_get_one_line_and_the_session_goes_on() {
    let (stdout, process) =
        repl("frobnicate\nnew\nnew average\nsend\nsend ten\nthrow 42\nsend 3\nquit\nsend 4\n");
    assert_eq!(stdout, "3.0\n", "quit ends the session");
    assert!(
        wait_until(|| process.count_stderr("error: ") == 5),
        "{:?}",
        process.stderr()
    );
    assert_eq!(process.stderr().len(), 5, "{:?}", process.stderr());
}

/// Reads the first line `process` prints (waiting at most [`PATIENCE`]), then closes its
/// stdout, as `| head -1` does.
fn read_one_line_then_close_stdout(process: &mut Process) -> String {
    let stdout = process.child.stdout.take().expect("stdout is piped");
    let (sender, receiver) = mpsc::channel();
    // Reading blocks until the repl prints: a thread does it, so the wait can be bounded.
    thread::spawn(move || {
        let mut reader = BufReader::new(stdout);
        let mut line = String::new();
        let _ = sender.send(reader.read_line(&mut line).map(|_| (line, reader)));
    });
    let (line, reader) = receiver
        .recv_timeout(PATIENCE)
        .expect("a first line on stdout")
        .expect("read stdout");
    drop(reader); // closes the read end: the repl's next write fails with EPIPE
    line
}

/// `coroutines repl < script | head -1`: when the reader closes stdout mid-session, the
/// session ends quietly, exit 0 and nothing on stderr — whether the next line is the repl's
/// own (average's mean) or one a coroutine prints (subgen's `.......... 2`).
#[test]
fn repl_ends_quietly_when_the_reader_goes_away() {
    for (first, expected) in [
        ("new average", "1.0\n"),
        ("new delegator", ".......... 1\n"),
    ] {
        let mut command = Command::new(COROUTINES);
        command.arg("repl");
        let mut process = Process::spawn(command);
        let mut stdin = process.child.stdin.take().expect("stdin is piped");
        stdin
            .write_all(format!("{first}\nsend 1\n").as_bytes())
            .unwrap();
        assert_eq!(read_one_line_then_close_stdout(&mut process), expected);
        // The rest of the script: its first line makes the repl write into the closed pipe.
        // Once the repl has exited, writing to its stdin fails, and the script stops there.
        for number in 2..2_000 {
            if stdin
                .write_all(format!("send {number}\n").as_bytes())
                .is_err()
            {
                break;
            }
        }
        drop(stdin);
        let code = process.wait_exit();
        assert_eq!(code, Some(0), "{first}: stderr: {:?}", process.stderr());
        assert_eq!(process.stderr(), Vec::<String>::new(), "{first}");
    }
}

/// `coroutines repl > /dev/full`: a failed write is one error line and exit 1, not a panic —
/// whether the repl writes the line or a coroutine prints it.
#[test]
fn repl_on_a_full_disk_is_one_error_line() {
    for script in ["new average\nsend 1\n", "new delegator\nsend 1\n"] {
        let mut command = Command::new(COROUTINES);
        command.arg("repl");
        let full = File::options().write(true).open("/dev/full").unwrap();
        let mut process = Process::spawn_adjusted(command, |command| {
            command.stdout(full);
        });
        let mut stdin = process.child.stdin.take().expect("stdin is piped");
        stdin.write_all(script.as_bytes()).unwrap();
        drop(stdin);
        let code = process.wait_exit();
        let stderr = process.stderr();
        assert_eq!(code, Some(1), "{script:?}: stderr: {stderr:?}");
        assert_eq!(stderr.len(), 1, "{script:?}: {stderr:?}");
        assert!(
            stderr[0].starts_with("coroutines: ") && stderr[0].contains("(os error 28)"),
            "{script:?}: {stderr:?}"
        );
    }
}

/// A line that is not UTF-8 gets one `error:` line saying which line it is, and the session
/// goes on: the commands after it still run.
#[test]
fn repl_refuses_a_line_that_is_not_utf8_and_goes_on() {
    let (stdout, process) = repl(b"new average\nsend 5\nsend caf\xe9\nsend 10\nstate\n");
    assert_eq!(stdout, "5.0\n7.5\n'GEN_SUSPENDED'\n");
    assert_eq!(
        process.stderr(),
        ["error: line 3 is not valid UTF-8; skipped"]
    );
}
