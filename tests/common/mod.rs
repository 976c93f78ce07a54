//! Helpers for the integration tests: start a lesson binary, read its `listening on` line,
//! collect its stderr, and kill it when the test ends; temporary files; CPU time.
//!
//! Every wait here is bounded: a broken server fails a test, it never hangs the suite.

// Each test binary uses its own part of these helpers; the rest would warn as unused.
#![allow(dead_code)]

pub mod conformance;
pub mod shutdown;
pub mod writer;

use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// How long any single step may take before the test calls it a hang.
pub const PATIENCE: Duration = Duration::from_secs(10);

/// Raises the test process's own fd limit (tests that open thousands of connections).
pub fn raise_fd_limit() {
    fdio::raise_fd_limit().expect("raise the fd limit");
}

/// Waits for this test binary's turn at a heavy check (thousands of clients, hundreds of MiB
/// in the kernel's socket buffers) and holds it while the guard lives. Two such checks at once
/// (lesson 7 runs two servers in one test binary) would come near the kernel's TCP memory
/// limit (`net.ipv4.tcp_mem`), which resets unrelated connections. One at a time, then.
pub fn heavy_turn() -> std::sync::MutexGuard<'static, ()> {
    static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());
    ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A spawned lesson process. Its stderr is collected line by line; it is killed on drop.
pub struct Process {
    pub child: Child,
    stderr: Arc<Mutex<Vec<String>>>,
    /// The thread collecting stderr; joined once the process has exited, so the last lines
    /// it printed are in `stderr` before anyone looks.
    stderr_reader: Option<thread::JoinHandle<()>>,
}

impl Process {
    /// Spawns `command` with stdin, stdout and stderr piped (never the test's own stdin).
    pub fn spawn(command: Command) -> Process {
        Process::spawn_adjusted(command, |_| {})
    }

    /// Like [`spawn`](Self::spawn), with `adjust` applied last (to give stdin a file, say).
    pub fn spawn_adjusted(mut command: Command, adjust: impl FnOnce(&mut Command)) -> Process {
        command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        adjust(&mut command);
        let mut child = command.spawn().expect("spawn the lesson binary");
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let lines = Arc::clone(&stderr);
        // Drain stderr for the whole life of the process: a full pipe would block a server
        // that logs every connection. (`adjust` may have sent stderr elsewhere.)
        let stderr_reader = child.stderr.take().map(|pipe| {
            thread::spawn(move || {
                for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                    lines.lock().unwrap().push(line);
                }
            })
        });
        Process {
            child,
            stderr,
            stderr_reader,
        }
    }

    /// Every stderr line so far.
    pub fn stderr(&self) -> Vec<String> {
        self.stderr.lock().unwrap().clone()
    }

    /// Waits (bounded) until some stderr line contains `text`; returns whether one did.
    pub fn wait_for_stderr(&self, text: &str) -> bool {
        wait_until(|| self.stderr().iter().any(|line| line.contains(text)))
    }

    /// Waits (bounded) until each of `texts` shows up on stderr; fails naming the first
    /// that does not.
    pub fn expect_stderr(&self, texts: &[&str]) {
        for text in texts {
            assert!(
                self.wait_for_stderr(text),
                "no {text:?} on stderr: {:?}",
                self.stderr()
            );
        }
    }

    /// How many stderr lines contain `text`.
    pub fn count_stderr(&self, text: &str) -> usize {
        self.stderr()
            .iter()
            .filter(|line| line.contains(text))
            .count()
    }

    /// CPU time (user + system) the process has used, in clock ticks (1/100 s on Linux).
    pub fn cpu_ticks(&self) -> u64 {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.child.id()))
            .expect("read /proc/<pid>/stat");
        // The command name may hold spaces; the fields after its closing ')' do not.
        let after_name = &stat[stat.rfind(')').expect("stat has (comm)") + 2..];
        let fields: Vec<&str> = after_name.split(' ').collect();
        // Fields 14 (utime) and 15 (stime) of proc(5); `after_name` starts at field 3.
        fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
    }

    /// Waits (bounded) for the process to exit and checks it exited 0; on failure the
    /// message shows its stderr.
    pub fn expect_success(&mut self) {
        let code = self.wait_exit();
        assert_eq!(
            code,
            Some(0),
            "exit code {code:?}; stderr: {:?}",
            self.stderr()
        );
    }

    /// Waits (bounded) for the process to exit and returns its exit code.
    pub fn wait_exit(&mut self) -> Option<i32> {
        self.wait_exit_within(PATIENCE)
    }

    /// Waits up to `limit` for the process to exit and returns its exit code (`None`: ended
    /// by a signal); panics if it is still running then.
    pub fn wait_exit_within(&mut self, limit: Duration) -> Option<i32> {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                // Its stderr is closed now: the reader ends once it has stored the last line.
                if let Some(reader) = self.stderr_reader.take() {
                    let _ = reader.join();
                }
                return status.code();
            }
            thread::sleep(Duration::from_millis(20));
        }
        panic!(
            "the process did not exit within {limit:?}; stderr: {:?}",
            self.stderr()
        );
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Polls `condition` every 20 ms for up to [`PATIENCE`]; returns whether it became true.
pub fn wait_until(mut condition: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + PATIENCE;
    loop {
        if condition() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// A lesson's echo server on a free port.
pub struct Server {
    pub process: Process,
    pub addr: SocketAddr,
}

impl Server {
    /// Runs `bin args… --addr 127.0.0.1:0` and reads the `listening on` line.
    pub fn start(bin: &str, args: &[&str]) -> Server {
        Server::start_command(server_command(bin, args))
    }

    /// Like [`start`](Self::start), but the server may open at most `max_fds` files
    /// (soft and hard limit), so the test can make it run out.
    pub fn start_with_fd_limit(bin: &str, args: &[&str], max_fds: u64) -> Server {
        Server::start_command(command_with_fd_limit(bin, args, max_fds))
    }

    /// Like [`start`](Self::start), but the server's stderr is a pipe nobody reads any more:
    /// every line it logs fails with `EPIPE` (as under `server 2>&1 | head -1`).
    pub fn start_with_broken_stderr(bin: &str, args: &[&str]) -> Server {
        let (reader, writer) = std::io::pipe().expect("a pipe for stderr");
        drop(reader);
        let process = Process::spawn_adjusted(server_command(bin, args), |command| {
            command.stderr(writer);
        });
        Server::from_process(process)
    }

    /// Like [`start`](Self::start), but the server's stderr is a pipe whose reader is alive
    /// and never reads (a pager nobody scrolls: `server 2>&1 | less`; a terminal paused with
    /// Ctrl+S), shrunk to one page: once a few dozen lines fill it, every further write to
    /// stderr would wait for ever. Returns the reader too: the pipe stalls only while it is
    /// held.
    pub fn start_with_stalled_stderr(bin: &str, args: &[&str]) -> (Server, std::io::PipeReader) {
        use nix::fcntl::{FcntlArg, fcntl};
        let (reader, writer) = std::io::pipe().expect("a pipe for stderr");
        // The smallest pipe the kernel makes (one page): it fills after a few dozen lines.
        fcntl(&writer, FcntlArg::F_SETPIPE_SZ(4096)).expect("shrink the pipe");
        let process = Process::spawn_adjusted(server_command(bin, args), |command| {
            command.stderr(writer);
        });
        (Server::from_process(process), reader)
    }

    fn start_command(command: Command) -> Server {
        Server::from_process(Process::spawn(command))
    }

    fn from_process(mut process: Process) -> Server {
        let line = first_stdout_line(&mut process)
            .unwrap_or_else(|| panic!("no `listening on` line; stderr: {:?}", process.stderr()));
        let addr = line
            .strip_prefix("listening on ")
            .and_then(|rest| rest.trim().parse().ok())
            .unwrap_or_else(|| panic!("first line {line:?}; stderr: {:?}", process.stderr()));
        Server { process, addr }
    }
}

/// The first line the process prints on stdout, or `None` if it prints none within
/// [`PATIENCE`] (it exited first, say). The rest of stdout is read and dropped by a thread
/// until the process exits, so the pipe stays open.
pub fn first_stdout_line(process: &mut Process) -> Option<String> {
    let mut stdout = process.child.stdout.take().expect("stdout is piped");
    let (first_line, received) = mpsc::channel();
    thread::spawn(move || {
        let mut reader = BufReader::new(&mut stdout);
        let mut line = String::new();
        let _ = reader.read_line(&mut line);
        let _ = first_line.send(line);
        let _ = reader.read_to_end(&mut Vec::new());
    });
    received
        .recv_timeout(PATIENCE)
        .ok()
        .filter(|line| !line.is_empty())
}

/// `bin args… --addr 127.0.0.1:0`, allowed at most `max_fds` open files (soft and hard limit).
pub fn command_with_fd_limit(bin: &str, args: &[&str], max_fds: u64) -> Command {
    let mut command = server_command(bin, args);
    // Safety: the closure runs in the child between fork and exec, where only
    // async-signal-safe calls are allowed; setrlimit is one, and nothing here allocates.
    unsafe {
        command.pre_exec(move || {
            use nix::sys::resource::{Resource, setrlimit};
            setrlimit(Resource::RLIMIT_NOFILE, max_fds, max_fds).map_err(Into::into)
        });
    }
    command
}

fn server_command(bin: &str, args: &[&str]) -> Command {
    let mut command = Command::new(bin);
    command.args(args).args(["--addr", "127.0.0.1:0"]);
    command
}

/// A path in the system's temporary folder, unique to this test, removed on drop.
pub struct TempFile {
    pub path: PathBuf,
}

impl TempFile {
    pub fn new(name: &str) -> TempFile {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let unique = NEXT.fetch_add(1, Ordering::Relaxed);
        let file = format!("async-ladder-{}-{unique}-{name}", std::process::id());
        TempFile {
            path: std::env::temp_dir().join(file),
        }
    }

    /// The file's text, or "" if it does not exist yet.
    pub fn read(&self) -> String {
        std::fs::read_to_string(&self.path).unwrap_or_default()
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Runs `bin args…` to its end (stdin empty), asserts it exited 0, and returns its stdout
/// and stderr.
pub fn run_to_end(bin: &str, args: &[&str]) -> (String, String) {
    let output = Command::new(bin)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run the lesson binary");
    assert!(
        output.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    (
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// Which output stream [`run_with_a_closed`] closes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Closed {
    Stdout,
    Stderr,
}

/// Runs `command` (stdin empty unless it says otherwise) with its stdout or stderr a pipe
/// whose reader has gone — `program | head -1` once `head` has its line — and waits (up to
/// [`PATIENCE`]) for it to end. Returns how it ended and what it wrote on the other stream.
pub fn run_with_a_closed(closed: Closed, mut command: Command) -> (ExitStatus, String) {
    let (reader, writer) = std::io::pipe().expect("a pipe");
    drop(reader);
    match closed {
        Closed::Stdout => command.stdout(writer).stderr(Stdio::piped()),
        Closed::Stderr => command.stderr(writer).stdout(Stdio::piped()),
    };
    let mut child = command.spawn().expect("run the program");
    let mut other: Box<dyn Read + Send> = match closed {
        Closed::Stdout => Box::new(child.stderr.take().expect("stderr is piped")),
        Closed::Stderr => Box::new(child.stdout.take().expect("stdout is piped")),
    };
    let reading = thread::spawn(move || {
        let mut text = String::new();
        let _ = other.read_to_string(&mut text);
        text
    });
    let deadline = Instant::now() + PATIENCE;
    let status = loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{command:?} ran longer than {PATIENCE:?}");
        }
        thread::sleep(Duration::from_millis(10));
    };
    (status, reading.join().expect("the reading thread"))
}
