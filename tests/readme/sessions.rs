//! The interactive sessions the README shows: each function performs the steps its text
//! describes — start the server, connect the clients, type the lines — and returns what the
//! programs printed (a server's stdout, then its stderr), for `tests/readme.rs` to find the
//! shown lines in, in order.

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::os::fd::BorrowedFd;
use std::sync::Once;
use std::thread;
use std::time::{Duration, Instant};

use crate::common::{PATIENCE, Server, wait_until};
use echo_client::{connect, exchange};
use nix::fcntl::{FcntlArg, FdFlag, fcntl};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// Every session a text may name, and the server it starts: the command a block must show as
/// its first `$ ` line (`cargo run -q --bin select -- echo --trace`, or
/// `./target/debug/select echo --trace`), so the reader sees what is run.
pub const SESSIONS: &[(&str, &str)] = &[
    ("select-echo", "select echo"),
    ("sync-echo-trace", "sync echo --trace"),
    ("select-echo-trace", "select echo --trace"),
    ("select-echo-slow-reader", "select echo --trace"),
    ("poll-echo-2000-clients", "select echo --poll --trace"),
    ("selector-echo-trace", "selector echo --trace"),
    ("generators-echo-trace", "generators echo --trace"),
    ("async-await-shutdown", "async-await echo"),
    ("async-await-echo-trace", "async-await echo --trace"),
    (
        "async-await-timeline",
        "async-await echo --timeline /tmp/async-await.json",
    ),
    (
        "completion-timeline",
        "completion echo --timeline /tmp/completion.json",
    ),
    ("green-threads-echo-trace", "green-threads echo --trace"),
];

/// The server session `name` starts (see [`SESSIONS`]), on `127.0.0.1:0`.
fn start(name: &str) -> Result<Server, String> {
    let (_, command) = SESSIONS
        .iter()
        .find(|(session, _)| *session == name)
        .ok_or(format!("no session named {name}"))?;
    let mut words = command.split_whitespace();
    let binary = words.next().unwrap_or_default();
    let path = crate::binary(binary).ok_or(format!("no binary {binary}"))?;
    let args: Vec<&str> = words.collect();
    Ok(Server::start(path, &args))
}

/// Performs session `name`; what the programs printed, line by line.
pub fn run(name: &str) -> Result<Vec<String>, String> {
    start_like_a_terminal();
    match name {
        "select-echo" => select_echo(),
        "sync-echo-trace" => sync_echo_trace(),
        "select-echo-trace" => select_echo_trace(),
        "select-echo-slow-reader" => select_echo_slow_reader(),
        "poll-echo-2000-clients" => poll_echo_2000_clients(),
        "selector-echo-trace" => selector_echo_trace(),
        "generators-echo-trace" => generators_echo_trace(),
        "async-await-shutdown" => async_await_shutdown(),
        "async-await-echo-trace" => async_await_echo_trace(),
        "async-await-timeline" => timeline_session(
            "async-await-timeline",
            two_clients,
            "async-await",
            &["--busiest-ms", "1"],
        ),
        "completion-timeline" => timeline_session(
            "completion-timeline",
            eight_timed_clients,
            "completion",
            &["--busiest-ms", "0.4"],
        ),
        "green-threads-echo-trace" => green_threads_echo_trace(),
        _ => Err(format!("no session named {name}")),
    }
}

/// `select echo`: one client connects and leaves.
fn select_echo() -> Result<Vec<String>, String> {
    let mut server = start("select-echo")?;
    let client = connect(server.addr, PATIENCE).map_err(|err| err.to_string())?;
    drop(client);
    wait_until(|| server.process.count_stderr("closed") == 1);
    Ok(printed(&mut server))
}

/// `sync echo --trace`: the first client's line is echoed; the second client's line is not,
/// until the first leaves.
fn sync_echo_trace() -> Result<Vec<String>, String> {
    let mut server = start("sync-echo-trace")?;
    settle(&server, &["sync: blocking in accept()"])?;
    let first = connect(server.addr, PATIENCE).map_err(text)?;
    round_trip(&first, b"hello\n")?;
    let second = connect(server.addr, PATIENCE).map_err(text)?;
    (&second).write_all(b"world\n").map_err(text)?;
    // Nothing comes back while the server is blocked reading from the first client.
    second
        .set_read_timeout(Some(Duration::from_millis(200)))
        .map_err(text)?;
    match (&second).read(&mut [0; 1]) {
        Err(err) if matches!(err.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
        other => {
            return Err(format!(
                "the second client got an echo too early: {other:?}"
            ));
        }
    }
    second.set_read_timeout(Some(PATIENCE)).map_err(text)?;
    drop(first);
    let mut echo = [0; 6];
    (&second).read_exact(&mut echo).map_err(text)?;
    if &echo != b"world\n" {
        return Err(format!("the second client got {echo:?}"));
    }
    settle(
        &server,
        &["closed", "connection from", "blocking in write()"],
    )?;
    Ok(printed(&mut server))
}

/// `select echo --trace`: two clients connect, one after the other, then each sends a line.
fn select_echo_trace() -> Result<Vec<String>, String> {
    let mut server = start("select-echo-trace")?;
    settle(&server, &["select: waiting on read=[3]"])?;
    let first = connect_nth(&server, 1)?;
    let second = connect_nth(&server, 2)?;
    round_trip(&first, b"hello\n")?;
    round_trip(&second, b"world\n")?;
    settle(
        &server,
        &["select: ready read=[4]", "select: ready read=[5]"],
    )?;
    Ok(printed(&mut server))
}

/// `select echo --trace`: one client sends megabytes without reading, until the server stops
/// reading from it.
fn select_echo_slow_reader() -> Result<Vec<String>, String> {
    let mut server = start("select-echo-slow-reader")?;
    let client = connect_nth(&server, 1)?;
    client.set_nonblocking(true).map_err(text)?;
    let chunk = vec![b'x'; 64 << 10];
    let left_the_read_list = "select: waiting on read=[3] write=[4]";
    let deadline = Instant::now() + PATIENCE;
    while server.process.count_stderr(left_the_read_list) == 0 {
        if Instant::now() >= deadline {
            return Err("the server never stopped reading from the client".to_string());
        }
        match (&client).write(&chunk) {
            Ok(_) => {}
            Err(err) if err.kind() == ErrorKind::WouldBlock => {
                thread::sleep(Duration::from_millis(10));
            }
            Err(err) => return Err(err.to_string()),
        }
    }
    Ok(printed(&mut server))
}

/// `select echo --poll --trace` with 2,000 clients connected; the last one sends a line.
fn poll_echo_2000_clients() -> Result<Vec<String>, String> {
    let mut server = start("poll-echo-2000-clients")?;
    let clients = (0..2000)
        .map(|_| connect(server.addr, PATIENCE).map_err(text))
        .collect::<Result<Vec<TcpStream>, String>>()?;
    if !wait_until(|| server.process.count_stderr("connection from") == clients.len()) {
        return Err("the server did not accept 2,000 clients".to_string());
    }
    let last = &clients[clients.len() - 1];
    round_trip(last, b"hello\n")?;
    // The server's fd for that client: 3 (the listener) + 2,000.
    settle(&server, &["poll: ready read=[2003]"])?;
    Ok(printed(&mut server))
}

/// `selector echo --trace`: two clients connect, each sends a line, then the first leaves.
fn selector_echo_trace() -> Result<Vec<String>, String> {
    let mut server = start("selector-echo-trace")?;
    settle(&server, &["epoll_wait with 1 registered"])?;
    let first = connect_nth(&server, 1)?;
    let second = connect_nth(&server, 2)?;
    round_trip(&first, b"hello\n")?;
    round_trip(&second, b"world\n")?;
    drop(first);
    settle(&server, &["closed", "epoll_wait with 2 registered"])?;
    drop(second);
    Ok(printed(&mut server))
}

/// `generators echo --trace`: one client connects and sends `hi`.
fn generators_echo_trace() -> Result<Vec<String>, String> {
    let mut server = start("generators-echo-trace")?;
    settle(&server, &["waiting: 0 ready"])?;
    let client = connect_nth(&server, 1)?;
    round_trip(&client, b"hi\n")?;
    // The client task parks again once it finds nothing more to read.
    settle(
        &server,
        &["parked task 2", "resumed task 2", "parked task 2"],
    )?;
    Ok(printed(&mut server))
}

/// `async-await echo`, Ctrl+C: one client has sent 10 MiB and read its echo; SIGINT; the
/// server closes the connection and prints its summary.
fn async_await_shutdown() -> Result<Vec<String>, String> {
    let mut server = start("async-await-shutdown")?;
    let client = connect_nth(&server, 1)?;
    let payload: Vec<u8> = (0..10 << 20).map(|i: u32| (i % 251) as u8).collect();
    let echo = exchange(&client, &payload, 64 << 10).map_err(text)?;
    if echo != payload {
        return Err("the echo differs from what was sent".to_string());
    }
    let pid = Pid::from_raw(server.process.child.id() as i32);
    kill(pid, Signal::SIGINT).map_err(text)?;
    // The server sends EOF; the client reads it, then sends its own.
    let mut rest = Vec::new();
    (&client).read_to_end(&mut rest).map_err(text)?;
    client.shutdown(Shutdown::Write).map_err(text)?;
    if server.process.wait_exit() != Some(0) {
        return Err(format!("the server failed: {:?}", server.process.stderr()));
    }
    Ok(printed(&mut server))
}

/// `async-await echo --trace`: one client connects and sends a line.
fn async_await_echo_trace() -> Result<Vec<String>, String> {
    let mut server = start("async-await-echo-trace")?;
    settle(&server, &["reactor: waiting for I/O, timeout=none"])?;
    let client = connect_nth(&server, 1)?;
    round_trip(&client, b"hello\n")?;
    settle(&server, &["Token(2) readable", "polling task 0"])?;
    Ok(printed(&mut server))
}

/// A `--timeline` session: the server session `name` starts, with its `/tmp/` in a temporary
/// directory; `drive` plays the clients; Ctrl+C; then `timeline /tmp/FILE.json --svg
/// /tmp/FILE.svg DRAW…` draws what was recorded. What the server printed, then what the
/// drawing tool printed (the directory shown as `/tmp`).
fn timeline_session(
    name: &str,
    drive: fn(&Server) -> Result<(), String>,
    file: &str,
    draw: &[&str],
) -> Result<Vec<String>, String> {
    let dir = crate::TempDir::new(name);
    let tmp = format!("{}/", dir.0.display());
    let (_, command) = SESSIONS
        .iter()
        .find(|(session, _)| *session == name)
        .ok_or(format!("no session named {name}"))?;
    let command = command.replace("/tmp/", &tmp);
    let mut words = command.split_whitespace();
    let binary = words.next().unwrap_or_default();
    let path = crate::binary(binary).ok_or(format!("no binary {binary}"))?;
    let args: Vec<&str> = words.collect();
    let mut server = Server::start(path, &args);
    drive(&server)?;
    let pid = Pid::from_raw(server.process.child.id() as i32);
    kill(pid, Signal::SIGINT).map_err(text)?;
    if server.process.wait_exit() != Some(0) {
        return Err(format!("the server failed: {:?}", server.process.stderr()));
    }
    let mut printed = printed(&mut server);
    let json = format!("{tmp}{file}.json");
    let svg = format!("{tmp}{file}.svg");
    let drawn = std::process::Command::new(crate::binary("timeline").unwrap_or_default())
        .args([json.as_str(), "--svg", svg.as_str()])
        .args(draw)
        .output()
        .map_err(text)?;
    let said = String::from_utf8_lossy(&drawn.stdout).replace(&tmp, "/tmp/");
    printed.extend(said.lines().map(String::from));
    printed.extend(
        String::from_utf8_lossy(&drawn.stderr)
            .lines()
            .map(String::from),
    );
    if !std::path::Path::new(&svg).is_file() {
        return Err(format!("no {svg} drawn: {printed:?}"));
    }
    Ok(printed
        .into_iter()
        .map(|line| line.replace(&tmp, "/tmp/"))
        .collect())
}

/// Two clients, as two `nc`: each sends a line and reads its echo, one after the other,
/// then both leave.
fn two_clients(server: &Server) -> Result<(), String> {
    let first = connect_nth(server, 1)?;
    let second = connect_nth(server, 2)?;
    round_trip(&first, b"hello\n")?;
    round_trip(&second, b"world\n")?;
    drop((first, second));
    wait_until(|| server.process.count_stderr("closed") == 2);
    Ok(())
}

/// `client --clients 8 --every-ms 20 --for-secs 1`: eight clients sending at once.
fn eight_timed_clients(server: &Server) -> Result<(), String> {
    let client = crate::binary("client").unwrap_or_default();
    let addr = server.addr.to_string();
    let args = [
        "--addr",
        addr.as_str(),
        "--clients",
        "8",
        "--every-ms",
        "20",
        "--for-secs",
        "1",
    ];
    let output = std::process::Command::new(client)
        .args(args)
        .output()
        .map_err(text)?;
    if !output.status.success() {
        return Err(format!("client failed: {output:?}"));
    }
    wait_until(|| server.process.count_stderr("closed") == 8);
    Ok(())
}

/// `green-threads echo --trace`: one client connects; once its green thread has parked on its
/// socket, the client sends a line.
fn green_threads_echo_trace() -> Result<Vec<String>, String> {
    let mut server = start("green-threads-echo-trace")?;
    settle(
        &server,
        &["reactor: epoll_wait, 2 parked on I/O, timeout=none"],
    )?;
    let client = connect_nth(&server, 1)?;
    settle(
        &server,
        &["(client 127.0.0.1:", "read on fd 7 would block → park"],
    )?;
    round_trip(&client, b"hello\n")?;
    settle(&server, &["fd 7 readable → wake green thread 2"])?;
    Ok(printed(&mut server))
}

/// From now on, programs this process starts get fds 0 to 2 only (see
/// [`pass_on_only_stdio`]); done once.
pub fn start_like_a_terminal() {
    static TERMINAL_FDS: Once = Once::new();
    TERMINAL_FDS.call_once(pass_on_only_stdio);
}

/// Marks every fd above 2 of this process close-on-exec: a test runner may leak some into it
/// without `FD_CLOEXEC` (fd 10 has been seen), and a server that inherited them would number
/// its clients differently. So a server starts with fds 0 to 2 only, as from a terminal.
fn pass_on_only_stdio() {
    let Ok(entries) = std::fs::read_dir("/proc/self/fd") else {
        return;
    };
    for entry in entries.flatten() {
        let Some(fd) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<i32>().ok())
        else {
            continue;
        };
        if fd > 2 {
            // Safety: the fd is only borrowed for this call. One closed meanwhile (read_dir's
            // own) makes it fail with EBADF; one reopened meanwhile was opened close-on-exec
            // anyway (Rust opens every fd so).
            let fd = unsafe { BorrowedFd::borrow_raw(fd) };
            let _ = fcntl(fd, FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC));
        }
    }
}

/// Waits until a line containing each of `texts` is on the server's stderr, in that order.
fn settle(server: &Server, texts: &[&str]) -> Result<(), String> {
    let in_order = || {
        let stderr = server.process.stderr();
        let mut lines = stderr.iter();
        texts
            .iter()
            .all(|text| lines.any(|line| line.contains(text)))
    };
    if wait_until(in_order) {
        Ok(())
    } else {
        Err(format!(
            "no {texts:?} in order on stderr: {:?}",
            server.process.stderr()
        ))
    }
}

/// Connects a client and waits until the server has logged its `n`th connection, so each
/// client is accepted on its own, in order.
fn connect_nth(server: &Server, n: usize) -> Result<TcpStream, String> {
    let client = connect(server.addr, PATIENCE).map_err(text)?;
    if !wait_until(|| server.process.count_stderr("connection from") == n) {
        return Err(format!("the server did not accept client {n}"));
    }
    Ok(client)
}

/// Sends `line` and reads its echo.
fn round_trip(client: &TcpStream, line: &[u8]) -> Result<(), String> {
    (&*client).write_all(line).map_err(text)?;
    let mut echo = vec![0; line.len()];
    (&*client).read_exact(&mut echo).map_err(text)?;
    if echo != line {
        return Err(format!("sent {line:?}, got {echo:?} back"));
    }
    Ok(())
}

/// An error as the text a session's failure shows.
fn text(err: impl ToString) -> String {
    err.to_string()
}

/// The server's `listening on` line, then its stderr so far.
fn printed(server: &mut Server) -> Vec<String> {
    let mut lines = vec![format!("listening on {}", server.addr)];
    lines.extend(server.process.stderr());
    lines
}
