//! The servers under test: which lesson binaries exist, how to start each one's `echo` on a
//! free port, and what the kernel tells us about the process (CPU time, peak memory).
//!
//! Every server is a separate process started the same way — the tokio reference peer too
//! (it is this very binary, `bench tokio-echo`) — so all are measured alike from outside,
//! through `/proc/<pid>`. A [`RunningServer`] kills its process when dropped, also when the
//! benchmark fails or panics halfway: no server outlives the run.

use std::io::{self, BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use nix::sched::{CpuSet, sched_setaffinity};
use nix::unistd::Pid;

use crate::user_time::UserTimeSampler;

/// How long a server may take to print its `listening on` line.
const STARTUP_PATIENCE: Duration = Duration::from_secs(10);

/// One server the benchmark can run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerSpec {
    /// For `--only`: `sync-threads`, `select-poll`, …
    pub id: &'static str,
    /// For tables and plots: the command a reader would type, minus `echo`.
    pub label: &'static str,
    /// The binary's file name (for the reference peer: this benchmark's own binary).
    pub binary: &'static str,
    /// The arguments before `--addr`.
    pub args: &'static [&'static str],
    /// The arguments for the bulk and fairness loads, where they differ: the peers read
    /// 16 KiB at a time there, 4 KiB elsewhere (see [`REFERENCE`]).
    pub streaming_args: Option<&'static [&'static str]>,
    /// Waits with epoll: the servers the 20 MB memory target is about.
    pub uses_epoll: bool,
}

/// Every lesson's echo server, in lesson order. Plain `sync echo` is left out: it serves one
/// client at a time, so any load with two connections only measures how long it waits.
pub const LESSONS: [ServerSpec; 9] = [
    lesson(
        "sync-threads",
        "sync --threads",
        "sync",
        &["echo", "--threads"],
        false,
    ),
    lesson("select", "select", "select", &["echo"], false),
    lesson(
        "select-poll",
        "select --poll",
        "select",
        &["echo", "--poll"],
        false,
    ),
    lesson("selector", "selector", "selector", &["echo"], true),
    lesson("generators", "generators", "generators", &["echo"], true),
    lesson("coroutines", "coroutines", "coroutines", &["echo"], true),
    lesson("async-await", "async-await", "async-await", &["echo"], true),
    // io_uring, not epoll; the 20 MB target applies to it too (issue 11).
    lesson("completion", "completion", "completion", &["echo"], true),
    // Its targets are its own (issue 22): memory at most twice lesson 5's, among others.
    lesson(
        "green-threads",
        "green-threads",
        "green-threads",
        &["echo"],
        true,
    ),
];

/// The reference peer: a tokio current-thread echo server, run as `bench tokio-echo`.
///
/// For the bulk and fairness loads it reads into 16 KiB, the peer issue 9 set its targets
/// against. Per byte of a stream, the read size is most of the cost (a 4 KiB read is four
/// times the system calls of a 16 KiB one); per message of ping-pong, and per idle
/// connection, the 4 KiB peer the other tables were measured with stays the reference.
pub const REFERENCE: ServerSpec = ServerSpec {
    id: "tokio",
    label: "tokio (reference)",
    binary: "bench",
    args: &["tokio-echo"],
    streaming_args: Some(&["tokio-echo", "--read-buffer", "16384"]),
    uses_epoll: true,
};

/// The other runtimes measured beside the lessons, like a lesson (between tokio runs, with a
/// ratio to them), but held to no target: monoio, lesson 6's peer — io_uring, one thread,
/// owned buffers (`bench monoio-echo`, [`crate::monoio_echo`]) — reading as much at a time
/// as tokio's peer does. Measured only where io_uring works (see
/// [`crate::monoio_echo::unavailable`]).
pub const PEERS: [ServerSpec; 1] = [ServerSpec {
    id: "monoio",
    label: "monoio",
    binary: "bench",
    args: &["monoio-echo"],
    streaming_args: Some(&["monoio-echo", "--read-buffer", "16384"]),
    uses_epoll: false,
}];

const fn lesson(
    id: &'static str,
    label: &'static str,
    binary: &'static str,
    args: &'static [&'static str],
    uses_epoll: bool,
) -> ServerSpec {
    ServerSpec {
        id,
        label,
        binary,
        args,
        streaming_args: None,
        uses_epoll,
    }
}

/// A server spec and the executable that runs it.
#[derive(Debug, Clone)]
pub struct Server {
    pub spec: ServerSpec,
    pub executable: PathBuf,
}

impl Server {
    /// Starts the server on `127.0.0.1:0`, pinned to the CPUs in `pin` if given.
    pub fn start(&self, pin: Option<CpuSet>) -> io::Result<RunningServer> {
        RunningServer::start(self, pin)
    }

    /// The same server as run for the bulk and fairness loads (`streaming`), or for the
    /// others: the peers read more at a time there.
    pub fn for_streaming(&self, streaming: bool) -> Server {
        let mut server = self.clone();
        if let (true, Some(args)) = (streaming, self.spec.streaming_args) {
            server.spec.args = args;
        }
        server
    }
}

/// Runs `cargo build --release --bins` in the workspace, so the lessons benchmarked are the
/// code as it is now, not a stale build. A failed build is reported, not fatal: the binaries
/// already built are used (and may be stale: the caller says so).
pub fn build_lessons(workspace: &Path) -> bool {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    eprintln!("bench: building the lessons: cargo build --release --bins");
    Command::new(cargo)
        .args(["build", "--release", "--bins"])
        .current_dir(workspace)
        .stdin(Stdio::null())
        // Cargo's progress goes to our stderr; our stdout stays the report alone.
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|status| status.success())
}

/// The lessons whose binary is in `bin_dir`, and the ids of those that are not (not built
/// yet: lessons 3 and 4 may still be on their way).
pub fn find_lessons(bin_dir: &Path) -> (Vec<Server>, Vec<&'static str>) {
    let mut found = Vec::new();
    let mut missing = Vec::new();
    for spec in LESSONS {
        let executable = bin_dir.join(spec.binary);
        if executable.is_file() {
            found.push(Server { spec, executable });
        } else {
            missing.push(spec.id);
        }
    }
    (found, missing)
}

/// A server process on a free port. Killed and reaped on drop.
pub struct RunningServer {
    child: Child,
    pub addr: SocketAddr,
}

impl RunningServer {
    /// Spawns `executable args… --addr 127.0.0.1:0` and reads the `listening on <addr>` line.
    /// stderr goes to /dev/null: servers log a line per connection, and a pipe nobody reads
    /// would fill up and block the server mid-benchmark.
    fn start(server: &Server, pin: Option<CpuSet>) -> io::Result<RunningServer> {
        let mut command = Command::new(&server.executable);
        command
            .args(server.spec.args)
            .args(["--addr", "127.0.0.1:0"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        if let Some(cpus) = pin {
            // Safety: the closure runs in the child between fork and exec, where only
            // async-signal-safe calls are allowed: sched_setaffinity is a plain system call,
            // and `cpus` was built before the fork, so nothing here allocates or locks.
            unsafe {
                command.pre_exec(move || {
                    sched_setaffinity(Pid::from_raw(0), &cpus).map_err(io::Error::from)
                });
            }
        }
        let child = command.spawn().map_err(|err| {
            io::Error::new(
                err.kind(),
                format!("cannot start {}: {err}", server.executable.display()),
            )
        })?;
        // From here on, `running` kills the child if anything below fails.
        let mut running = RunningServer {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
        };
        running.addr = running.read_listening_line(server.spec.label)?;
        Ok(running)
    }

    /// Reads the first stdout line on a helper thread, so a server that never prints it
    /// costs a bounded wait, not a hang. The thread then keeps draining stdout until the
    /// server exits.
    fn read_listening_line(&mut self, label: &str) -> io::Result<SocketAddr> {
        let stdout = self.child.stdout.take().expect("stdout is piped");
        let (first_line, received) = mpsc::channel();
        thread::spawn(move || {
            let mut reader = BufReader::new(stdout);
            let mut line = String::new();
            let _ = reader.read_line(&mut line);
            let _ = first_line.send(line);
            let _ = reader.read_to_end(&mut Vec::new());
        });
        let line = received.recv_timeout(STARTUP_PATIENCE).map_err(|_| {
            io::Error::new(
                io::ErrorKind::TimedOut,
                format!("{label}: no `listening on` line within {STARTUP_PATIENCE:?}"),
            )
        })?;
        line.strip_prefix("listening on ")
            .and_then(|addr| addr.trim().parse().ok())
            .ok_or_else(|| {
                io::Error::other(format!(
                    "{label}: expected `listening on <addr>`, got {line:?}"
                ))
            })
    }

    /// CPU time (user + system, all threads) the server has used so far, from
    /// `/proc/<pid>/stat` (in clock ticks: 10 ms on Linux).
    pub fn cpu_time(&self) -> io::Result<Duration> {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.child.id()))?;
        // The command name may hold spaces; the fields after its closing ')' do not.
        let after_name = stat
            .rfind(')')
            .map(|at| &stat[at + 2..])
            .ok_or_else(|| io::Error::other("no (comm) in /proc/<pid>/stat"))?;
        let fields: Vec<&str> = after_name.split(' ').collect();
        // Fields 14 (utime) and 15 (stime) of proc(5); `after_name` starts at field 3.
        let ticks = |field: usize| -> io::Result<u64> {
            fields
                .get(field)
                .and_then(|text| text.parse().ok())
                .ok_or_else(|| io::Error::other("unexpected /proc/<pid>/stat layout"))
        };
        let total = ticks(11)? + ticks(12)?;
        Ok(Duration::from_secs_f64(
            total as f64 / clock_ticks_per_sec(),
        ))
    }

    /// The server's peak resident memory so far (`VmHWM` in `/proc/<pid>/status`), in bytes.
    pub fn peak_rss(&self) -> io::Result<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))?;
        status
            .lines()
            .find_map(|line| line.strip_prefix("VmHWM:"))
            .and_then(|value| value.trim().strip_suffix("kB"))
            .and_then(|kib| kib.trim().parse::<u64>().ok())
            .map(|kib| kib * 1024)
            .ok_or_else(|| io::Error::other("no VmHWM in /proc/<pid>/status"))
    }

    /// Starts counting the system calls of every thread the server has now (the threads of
    /// a loaded server are all there before a measurement window opens). `Err` says why
    /// they cannot be counted here.
    pub fn count_syscalls(&self) -> Result<SyscallCounter, String> {
        SyscallCounter::attach(self.child.id())
    }

    /// Starts sampling every thread the server has now, to tell its user-space time from the
    /// kernel's over a window of about `window` (see [`crate::user_time`]). `Err` says why
    /// it cannot be done here.
    pub fn sample_user_time(&self, window: Duration) -> Result<UserTimeSampler, String> {
        UserTimeSampler::attach(self.child.id(), window)
    }

    /// Whether the server process is still running (it may have crashed under load).
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for RunningServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `sysconf(_SC_CLK_TCK)`: the unit of the CPU times in `/proc/<pid>/stat` (100 on Linux).
pub fn clock_ticks_per_sec() -> f64 {
    use nix::unistd::{SysconfVar, sysconf};
    match sysconf(SysconfVar::CLK_TCK) {
        Ok(Some(ticks)) if ticks > 0 => ticks as f64,
        _ => 100.0,
    }
}

/// Counts a process's system calls: one perf counter per thread on the tracepoint
/// `raw_syscalls:sys_enter`, which fires on every system call entry (`perf stat -e
/// raw_syscalls:sys_enter -p PID` does the same). In counting mode the kernel only adds one
/// to a number, so the server pays next to nothing for being counted.
pub struct SyscallCounter {
    counters: Vec<std::os::fd::OwnedFd>,
}

/// The leading fields of `struct perf_event_attr` (perf_event_open(2)) that we set; the rest
/// stays zero. 112 bytes: `PERF_ATTR_SIZE_VER5`.
#[repr(C)]
pub(crate) struct PerfEventAttr {
    pub kind: u32,
    pub size: u32,
    pub config: u64,
    pub sample_period: u64,
    pub sample_type: u64,
    pub read_format: u64,
    pub flags: u64,
    pub rest: [u64; 8],
}

const PERF_TYPE_TRACEPOINT: u32 = 2;
pub(crate) const PERF_FLAG_FD_CLOEXEC: libc::c_ulong = 8;

/// The thread ids of process `pid` now, from `/proc/<pid>/task`.
pub(crate) fn threads_of(pid: u32) -> Result<Vec<i32>, String> {
    let threads = std::fs::read_dir(format!("/proc/{pid}/task"))
        .map_err(|err| format!("cannot list the server's threads: {err}"))?;
    Ok(threads
        .flatten()
        .filter_map(|thread| thread.file_name().to_str()?.parse().ok())
        .collect())
}

impl SyscallCounter {
    fn attach(pid: u32) -> Result<SyscallCounter, String> {
        let id = ["/sys/kernel/tracing", "/sys/kernel/debug/tracing"]
            .iter()
            .find_map(|root| {
                std::fs::read_to_string(format!("{root}/events/raw_syscalls/sys_enter/id")).ok()
            })
            .and_then(|id| id.trim().parse::<u64>().ok())
            .ok_or("no tracepoint raw_syscalls:sys_enter (is tracefs mounted?)")?;
        let mut counters = Vec::new();
        for tid in threads_of(pid)? {
            let attr = PerfEventAttr {
                kind: PERF_TYPE_TRACEPOINT,
                size: size_of::<PerfEventAttr>() as u32,
                config: id,
                sample_period: 0,
                sample_type: 0,
                read_format: 0,
                flags: 0, // enabled from the start; counts kernel-side events (the tracepoint)
                rest: [0; 8],
            };
            // Safety: `attr` is a valid, fully initialised perf_event_attr of the size it
            // declares; the other arguments are plain integers.
            let fd = unsafe {
                libc::syscall(
                    libc::SYS_perf_event_open,
                    &raw const attr,
                    tid,
                    -1,
                    -1,
                    PERF_FLAG_FD_CLOEXEC,
                )
            };
            if fd < 0 {
                return Err(format!(
                    "perf_event_open on raw_syscalls:sys_enter: {} (perf_event_paranoid, or no \
                     CAP_PERFMON?)",
                    io::Error::last_os_error()
                ));
            }
            // Safety: a new fd, ours alone.
            counters.push(unsafe { std::os::fd::FromRawFd::from_raw_fd(fd as i32) });
        }
        Ok(SyscallCounter { counters })
    }

    /// The system calls counted so far, all threads together.
    pub fn total(&self) -> io::Result<u64> {
        let mut total = 0;
        for counter in &self.counters {
            let mut value = [0u8; 8];
            std::fs::File::from(counter.try_clone()?).read_exact(&mut value)?;
            total += u64::from_ne_bytes(value);
        }
        Ok(total)
    }
}
