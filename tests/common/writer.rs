//! Driving a lesson's `writer` program: type into its stdin, read its output file, check
//! which lines arrived, and whether it sits idle.

use std::fs::File;
use std::io::Write;
use std::process::{Command, Stdio};
use std::thread;
use std::time::Duration;

use super::{Process, TempFile, wait_until};

/// A running `writer`, appending to a temporary file.
pub struct Writer {
    pub process: Process,
    pub output: TempFile,
}

impl Writer {
    /// Runs `bin args… --output <temp> --interval-ms <interval_ms> --count <count>`.
    pub fn start(bin: &str, args: &[&str], interval_ms: u64, count: u32) -> Writer {
        Writer::start_command(bin, args, interval_ms, count, |_| {})
    }

    fn start_command(
        bin: &str,
        args: &[&str],
        interval_ms: u64,
        count: u32,
        adjust: impl FnOnce(&mut Command),
    ) -> Writer {
        let output = TempFile::new("output.txt");
        Writer::start_to(bin, args, output, interval_ms, count, adjust)
    }

    /// Like [`start`](Self::start), but stdin is the regular file `stdin_file` instead of a pipe.
    pub fn start_with_stdin_file(bin: &str, args: &[&str], stdin_file: &TempFile) -> Writer {
        let mut writer = Writer::start_command(bin, args, 20, 3, |command| {
            command.stdin(Stdio::from(
                File::open(&stdin_file.path).expect("open the stdin file"),
            ));
        });
        writer.process.child.stdin = None;
        writer
    }

    /// Writes `line` and a newline to the program's stdin.
    pub fn type_line(&mut self, line: &str) {
        let stdin = self
            .process
            .child
            .stdin
            .as_mut()
            .expect("stdin is still open");
        // One write of the whole line: `writeln!` would write the text and the newline
        // separately, and a program reading in between sees the line in two pieces.
        stdin
            .write_all(format!("{line}\n").as_bytes())
            .expect("write to the writer's stdin");
    }

    /// Closes the program's stdin: what Ctrl+D does in a terminal.
    pub fn close_stdin(&mut self) {
        drop(self.process.child.stdin.take());
    }

    /// The output file's lines.
    pub fn lines(&self) -> Vec<String> {
        self.output.read().lines().map(str::to_string).collect()
    }

    /// The numbers of the pipe messages in the file, in file order.
    pub fn pipe_numbers(&self) -> Vec<u32> {
        self.lines()
            .iter()
            .filter_map(|line| line.split_once(" pipe ] External message from pipe "))
            .map(|(_, number)| number.parse().expect("a message number"))
            .collect()
    }

    /// The index in the file of the first line ending with `text`.
    pub fn position(&self, text: &str) -> Option<usize> {
        self.lines().iter().position(|line| line.ends_with(text))
    }

    /// How many pipe messages the program says its ticker sent (from its last stderr line).
    pub fn messages_sent(&self) -> u32 {
        let done = self
            .process
            .stderr()
            .into_iter()
            .find(|line| line.starts_with("done: "));
        let done = done.expect("a `done:` summary on stderr");
        done["done: ".len()..]
            .split(' ')
            .next()
            .unwrap()
            .parse()
            .unwrap()
    }
}

/// Stdin lines and pipe lines reach the file tagged with their source; EOF on stdin stops
/// the ticker early (the run would take 20 s otherwise), the program exits 0, and every
/// message the ticker wrote is in the file exactly once, in order.
pub fn exits_on_eof_keeping_every_line(bin: &str, args: &[&str]) {
    let mut writer = Writer::start(bin, args, 20, 1000);
    assert!(
        wait_until(|| !writer.pipe_numbers().is_empty()),
        "no pipe line arrived"
    );
    writer.type_line("hello from stdin");
    writer.type_line("caf\u{e9} \u{2615}");
    thread::sleep(Duration::from_millis(200));
    writer.close_stdin();
    writer.process.expect_success();

    assert!(
        writer.position("s stdin ] hello from stdin").is_some(),
        "{:?}",
        writer.lines()
    );
    assert!(
        writer.position("s stdin ] caf\u{e9} \u{2615}").is_some(),
        "{:?}",
        writer.lines()
    );
    let sent = writer.messages_sent();
    assert!(sent < 1000, "the ticker was not stopped by EOF on stdin");
    assert_eq!(
        writer.pipe_numbers(),
        (1..=sent).collect::<Vec<_>>(),
        "pipe lines lost"
    );
}

/// Once the pipe's writer has closed it, the program sits idle: its CPU time barely moves
/// over a second (the Python originals spin at 100% here).
pub fn idles_after_the_pipe_closes(bin: &str, args: &[&str]) {
    let mut writer = Writer::start(bin, args, 10, 3);
    // In lesson 0 the pipe is read only between stdin lines: feed a few until it closes.
    let closed = "the pipe's writer closed it";
    for n in 0..20 {
        if writer.process.count_stderr(closed) > 0 {
            break;
        }
        writer.type_line(&format!("line {n}"));
        thread::sleep(Duration::from_millis(100));
    }
    assert!(
        writer.process.wait_for_stderr(closed),
        "{:?}",
        writer.process.stderr()
    );
    assert_eq!(writer.pipe_numbers(), [1, 2, 3]);

    let ticks_before = writer.process.cpu_ticks();
    thread::sleep(Duration::from_millis(1500));
    let used = writer.process.cpu_ticks() - ticks_before;
    assert!(
        used <= 20,
        "after the pipe closed, {used}/100 s of CPU in 1.5 s: it spins"
    );

    writer.close_stdin();
    writer.process.expect_success();
}

/// With stdin a regular file (which epoll refuses to watch), the program says so in one
/// line, in the words every epoll lesson uses (`fdio::epoll_refuses_line`), reads the file
/// anyway, and ends with exit 0 once the file and the pipe are both drained.
pub fn works_with_stdin_from_a_file(bin: &str, args: &[&str]) {
    let input = TempFile::new("stdin.txt");
    std::fs::write(&input.path, "first line from a file\nsecond line\n").unwrap();
    let mut writer = Writer::start_with_stdin_file(bin, args, &input);
    writer.process.expect_success();
    assert!(
        writer
            .position("s stdin ] first line from a file")
            .is_some(),
        "{:?}",
        writer.lines()
    );
    assert!(
        writer.position("s stdin ] second line").is_some(),
        "{:?}",
        writer.lines()
    );
    assert_eq!(
        writer.pipe_numbers(),
        (1..=writer.messages_sent()).collect::<Vec<_>>()
    );
    let refusals = writer.process.count_stderr(
        ": epoll refuses stdin (a regular file, a directory or /dev/null): reading it without waiting",
    );
    assert_eq!(refusals, 1, "{:?}", writer.process.stderr());
}

/// Pipe lines reach the file while stdin stays silent: the loop waits on both sources at
/// once (every lesson but lesson 0).
pub fn pipe_lines_arrive_while_stdin_is_silent(bin: &str, args: &[&str]) {
    let mut writer = Writer::start(bin, args, 20, 5);
    assert!(
        wait_until(|| writer.pipe_numbers() == [1, 2, 3, 4, 5]),
        "{args:?}: {:?}",
        writer.lines()
    );
    writer.close_stdin();
    writer.process.expect_success();
}

/// How many lines the stdin flood of [`pipe_lines_on_time_while_stdin_floods`] holds: enough
/// to keep stdin busy while several pipe lines come due, and a bounded test. A release build
/// writes a line in well under a microsecond (lesson 6 wrote 200,000 in 0.06 s), so it gets
/// five times as many.
const FLOOD_LINES: usize = if cfg!(debug_assertions) {
    200_000
} else {
    1_000_000
};

/// The elapsed seconds a log line starts with: `[ 0.37s pipe ] …` gives 0.37.
fn logged_at(line: &str) -> f64 {
    let seconds = line
        .strip_prefix('[')
        .and_then(|rest| rest.split_once("s "))
        .map(|(seconds, _)| seconds.trim());
    seconds
        .and_then(|seconds| seconds.parse().ok())
        .unwrap_or_else(|| panic!("no elapsed time in {line:?}"))
}

/// While stdin floods — it is a file of `FLOOD_LINES` lines, so it never runs dry until its
/// end — the pipe lines (one every 20 ms) still reach the file on time: each one due in the
/// flood's first half is written before the flood's last line, and every one less than half
/// the flood's duration after it was due. A loop that serves a busy source until it runs dry
/// writes them all after the flood; a fair one is off by about one turn. The bounds are
/// generous: they only catch starvation. A flood too short for any pipe line to come due in
/// its first half proves nothing, and fails as such.
pub fn pipe_lines_on_time_while_stdin_floods(bin: &str, args: &[&str]) {
    let flood = TempFile::new("flood.txt");
    std::fs::write(&flood.path, "flood line\n".repeat(FLOOD_LINES)).unwrap();
    let mut writer = Writer::start_with_stdin_file(bin, args, &flood);
    writer.process.expect_success();

    let lines = writer.lines();
    let is_flood = |line: &String| line.ends_with("s stdin ] flood line");
    let last_flood_line = lines.iter().rfind(|line| is_flood(line));
    let flood_seconds = logged_at(last_flood_line.expect("the flood reached the file"));
    let mut flood_before = 0;
    let mut due_in_the_flood = 0;
    for line in &lines {
        if is_flood(line) {
            flood_before += 1;
            continue;
        }
        let Some((_, number)) = line.split_once(" pipe ] External message from pipe ") else {
            continue;
        };
        let due = number.parse::<f64>().expect("a message number") * 0.020;
        let late = logged_at(line) - due;
        if due < flood_seconds / 2.0 {
            due_in_the_flood += 1;
            assert!(
                flood_before < FLOOD_LINES,
                "pipe line {number}, due at {due:.2}s, came after all {FLOOD_LINES} stdin lines \
                 of a {flood_seconds:.2}s flood: the flood on stdin starved the pipe"
            );
        }
        assert!(
            late < flood_seconds / 2.0,
            "pipe line {number} was written {late:.2}s after it was due, in a {flood_seconds:.2}s \
             flood: the flood on stdin starved the pipe"
        );
    }
    assert_eq!(flood_before, FLOOD_LINES, "stdin lines lost");
    assert_eq!(writer.pipe_numbers(), [1, 2, 3], "pipe lines lost");
    assert!(
        due_in_the_flood > 0,
        "the {flood_seconds:.2}s flood ended before a pipe line came due in its first half: \
         it proves nothing; make FLOOD_LINES larger"
    );
}

/// With the pipe flooding (a message every 0 ms, without end), a line typed on stdin and its
/// EOF are still read within a turn: the program stops the ticker and exits 0 with every line
/// kept, having written fewer than 50,000 more pipe lines after stdin closed. A loop that
/// serves the pipe until it runs dry reads stdin only when the pipe happens to be empty: when
/// writing the log is slower than the ticker, hundreds of thousands of lines later, or never.
pub fn eof_on_stdin_is_read_while_the_pipe_floods(bin: &str, args: &[&str]) {
    let mut writer = Writer::start(bin, args, 0, u32::MAX);
    assert!(
        wait_until(|| writer.pipe_numbers().len() >= 1000),
        "the pipe flood did not start: {:?}",
        writer.process.stderr()
    );
    writer.type_line("typed during the flood");
    let before_eof = writer.pipe_numbers().len();
    writer.close_stdin();
    writer.process.expect_success();
    // The process has exited; its last stderr line may still be on its way to us.
    assert!(writer.process.wait_for_stderr("done: "), "no `done:` line");

    assert!(
        writer
            .position("s stdin ] typed during the flood")
            .is_some(),
        "the stdin line is missing"
    );
    let sent = writer.messages_sent();
    assert_eq!(
        writer.pipe_numbers(),
        (1..=sent).collect::<Vec<_>>(),
        "pipe lines lost"
    );
    let after_eof = sent as usize - before_eof;
    assert!(
        after_eof < 50_000,
        "{after_eof} pipe lines were written after stdin closed: the flood on the pipe kept \
         stdin's EOF waiting"
    );
}

impl Writer {
    /// Like [`start`](Self::start), but appending to `output` (which may already hold
    /// something, or be a FIFO), with `adjust` applied to the command last: a file or a
    /// non-blocking pipe as stdin, a resource limit, …
    pub fn start_to(
        bin: &str,
        args: &[&str],
        output: TempFile,
        interval_ms: u64,
        count: u32,
        adjust: impl FnOnce(&mut Command),
    ) -> Writer {
        let mut command = Command::new(bin);
        command.args(args).arg("--output").arg(&output.path);
        let (interval_ms, count) = (interval_ms.to_string(), count.to_string());
        command.args(["--interval-ms", &interval_ms, "--count", &count]);
        let process = Process::spawn_adjusted(command, adjust);
        Writer { process, output }
    }
}

/// Limits the size of any file the command's process writes to `bytes` (`ulimit -f`): a
/// small full disk, for one process.
pub fn limit_file_size(command: &mut Command, bytes: u64) {
    use std::os::unix::process::CommandExt;
    // Safety: the closure runs in the child between fork and exec, where only
    // async-signal-safe calls are allowed; setrlimit is one, and nothing here allocates.
    unsafe {
        command.pre_exec(move || {
            use nix::sys::resource::{Resource, setrlimit};
            setrlimit(Resource::RLIMIT_FSIZE, bytes, bytes).map_err(Into::into)
        });
    }
}

/// Writes `lines` to the program's stdin from a thread, then closes it (EOF). A write that
/// fails because the program has exited ends the thread quietly.
fn feed_stdin(writer: &mut Writer, lines: impl Iterator<Item = String> + Send + 'static) {
    let mut stdin = writer.process.child.stdin.take().expect("stdin is piped");
    thread::spawn(move || {
        for line in lines {
            if stdin.write_all(line.as_bytes()).is_err() {
                return;
            }
        }
    });
}

/// The text of `line` if it is a whole log line from stdin, `[ 1.23s stdin ] <text>`.
fn whole_stdin_line(line: &str) -> Option<&str> {
    let (stamp, text) = line.split_once("s stdin ] ")?;
    let seconds = stamp.strip_prefix('[')?.trim();
    seconds.parse::<f64>().ok().map(|_| text)
}

/// Two writers appending 20,000 stdin lines each to one file at the same time leave 40,000
/// whole lines: each line goes out in one `write`, which append mode puts at the end of the
/// file in one piece. (Written in pieces, `[ [ 0.00s stdin ] BBBB…` lines appear.)
pub fn two_writers_appending_to_one_file_keep_lines_whole(bin: &str, args: &[&str]) {
    const LINES: usize = 20_000;
    let mut first = Writer::start(bin, args, 1000, 0);
    let shared = TempFile {
        path: first.output.path.clone(),
    };
    let mut second = Writer::start_to(bin, args, shared, 1000, 0, |_| {});
    let text_a = "A".repeat(60);
    let text_b = "B".repeat(60);
    let (a, b) = (format!("{text_a}\n"), format!("{text_b}\n"));
    feed_stdin(&mut first, std::iter::repeat_n(a, LINES));
    feed_stdin(&mut second, std::iter::repeat_n(b, LINES));
    first.process.expect_success();
    second.process.expect_success();

    let lines = first.lines();
    let mangled: Vec<&String> = lines
        .iter()
        .filter(|line| !matches!(whole_stdin_line(line), Some(text) if text == text_a || text == text_b))
        .collect();
    assert!(
        mangled.is_empty(),
        "{} of {} lines mangled, e.g. {:?}",
        mangled.len(),
        lines.len(),
        &mangled[..mangled.len().min(3)]
    );
    assert_eq!(lines.len(), 2 * LINES, "lines lost");
}

/// With the file's size limited (`ulimit -f`: a disk that fills up in the middle of a line),
/// the program stops with one `cannot append to …` line, its last (no summary, no error from
/// tearing down after it), and exit 1, and the file holds only whole lines: the piece of the
/// line that fit was taken back. No signal kills it either.
pub fn a_full_disk_leaves_no_half_line(bin: &str, args: &[&str]) {
    // 16-byte stamps + `line 00001` + newline: 27 bytes, so 10,000 falls inside a line.
    const LIMIT: u64 = 10_000;
    let output = TempFile::new("output.txt");
    let mut writer = Writer::start_to(bin, args, output, 1000, 0, |command| {
        limit_file_size(command, LIMIT)
    });
    feed_stdin(&mut writer, (1..=1000).map(|n| format!("line {n:05}\n")));
    let code = writer.process.wait_exit();
    writer.process.wait_for_stderr("cannot append to");
    let stderr = writer.process.stderr();
    assert_eq!(code, Some(1), "{stderr:?}");
    let errors: Vec<&String> = stderr
        .iter()
        .filter(|line| line.contains("cannot append to"))
        .collect();
    assert_eq!(errors.len(), 1, "{stderr:?}");
    assert_eq!(
        stderr.last(),
        errors.first().copied(),
        "the error is not the last line: {stderr:?}"
    );

    let text = writer.output.read();
    assert!(
        text.len() as u64 <= LIMIT && text.len() > 9_000,
        "{}",
        text.len()
    );
    assert!(
        text.ends_with('\n'),
        "a half line at the end: {:?}",
        text.lines().last()
    );
    for (n, line) in text.lines().enumerate() {
        assert_eq!(whole_stdin_line(line), Some(&*format!("line {:05}", n + 1)));
    }
}

/// `writer --output f < f` is refused in one line, as `cat` does (`input file is output
/// file`), with exit 1 and the file untouched. (Without the check it reads back its own
/// lines forever; the test caps the file at 1 MB.)
pub fn refuses_to_read_its_own_output(bin: &str, args: &[&str]) {
    let output = TempFile::new("output.txt");
    std::fs::write(&output.path, "a line already there\n").unwrap();
    let same_file = File::open(&output.path).expect("open the output as stdin");
    let mut writer = Writer::start_to(bin, args, output, 20, 3, |command| {
        command.stdin(Stdio::from(same_file));
        limit_file_size(command, 1_000_000);
    });
    let code = writer.process.wait_exit();
    writer.process.wait_for_stderr("input file is output file");
    let stderr = writer.process.stderr();
    assert_eq!(code, Some(1), "{stderr:?}");
    assert_eq!(
        stderr
            .iter()
            .filter(|line| line.ends_with(": input file is output file"))
            .count(),
        1,
        "{stderr:?}"
    );
    assert_eq!(writer.output.read(), "a line already there\n");
}

/// An 8 MB line whose newline comes last costs linear time: the program is done well within
/// the test's patience (rescanning the unfinished line on every 1 KiB read took minutes),
/// and the line reaches the file whole, as one line, with every pipe message sent meanwhile.
pub fn a_long_line_costs_linear_time(bin: &str, args: &[&str]) {
    const LENGTH: usize = 8 << 20;
    let mut writer = Writer::start(bin, args, 20, 3);
    let chunk = "x".repeat(64 * 1024);
    let chunks = std::iter::repeat_n(chunk, LENGTH / (64 * 1024));
    feed_stdin(&mut writer, chunks.chain(std::iter::once("\n".to_string())));
    writer.process.expect_success();
    let lines = writer.lines();
    let long: Vec<usize> = lines
        .iter()
        .filter_map(|line| whole_stdin_line(line))
        .map(str::len)
        .collect();
    assert_eq!(long, [LENGTH]);
    // Every pipe message the ticker sent (it stops at stdin's EOF: on a busy machine the
    // 8 MB may all arrive before its third) reaches the file, after the long line's end.
    assert_eq!(
        writer.pipe_numbers(),
        (1..=writer.messages_sent()).collect::<Vec<_>>()
    );
}

/// `--output` naming a FIFO nobody reads yet: opening it waits for a reader, and the
/// program says so first (instead of hanging silently in `open`); once a reader comes, the
/// lines flow to it and the program ends normally.
pub fn says_it_waits_for_a_fifo_reader(bin: &str, args: &[&str]) {
    let output = TempFile::new("output.fifo");
    let made = Command::new("mkfifo").arg(&output.path).status();
    assert!(made.is_ok_and(|status| status.success()), "mkfifo failed");
    let path = output.path.clone();
    let mut writer = Writer::start_to(bin, args, output, 20, 3, |_| {});
    assert!(
        writer.process.wait_for_stderr("is a FIFO: waiting"),
        "nothing said while waiting for the FIFO's reader: {:?}",
        writer.process.stderr()
    );
    let reader = thread::spawn(move || std::fs::read_to_string(path));
    writer.type_line("through the FIFO");
    writer.close_stdin();
    writer.process.expect_success();
    let text = reader
        .join()
        .expect("the reader thread")
        .expect("read the FIFO");
    assert!(text.contains("s stdin ] through the FIFO\n"), "{text:?}");
}

/// A stdin left non-blocking (`O_NONBLOCK` belongs to the open file, shared with whoever
/// started us) is read like any other: a read that finds nothing waits instead of failing
/// with `Resource temporarily unavailable`; a line typed later arrives; EOF ends with exit 0.
pub fn reads_a_nonblocking_stdin(bin: &str, args: &[&str]) {
    let (stdin, mut typist) = std::io::pipe().expect("a pipe");
    fdio::set_nonblocking(&stdin).expect("make it non-blocking");
    let output = TempFile::new("output.txt");
    let mut writer = Writer::start_to(bin, args, output, 20, 3, |command| {
        command.stdin(Stdio::from(stdin));
    });
    // Every lesson has read the pipe by now, and found stdin empty at least once.
    assert!(
        wait_until(|| !writer.pipe_numbers().is_empty()),
        "{:?}",
        writer.process.stderr()
    );
    thread::sleep(Duration::from_millis(100));
    // Fails only if the program has already exited: `expect_success` then shows why.
    let _ = typist.write_all(b"typed later\n");
    drop(typist);
    writer.process.expect_success();
    assert!(
        writer.position("s stdin ] typed later").is_some(),
        "{:?}",
        writer.lines()
    );
}

/// The peak resident memory of process `pid` so far (`VmHWM` of /proc/PID/status), in KiB.
fn peak_memory_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read status");
    let line = status
        .lines()
        .find(|line| line.starts_with("VmHWM:"))
        .expect("a VmHWM line");
    line.split_whitespace()
        .nth(1)
        .and_then(|kib| kib.parse().ok())
        .expect("VmHWM in kB")
}

/// 128 MiB on stdin that never end their line (`cat /dev/zero | writer`, a binary file)
/// cost bounded memory: the program's peak resident memory stays under 64 MiB (keeping the
/// unfinished line whole until its newline grows without end, and runs a machine out of
/// memory), and it ends with exit 0 once stdin closes.
pub fn a_line_without_end_costs_bounded_memory(bin: &str, args: &[&str]) {
    const LENGTH: usize = 128 << 20;
    let mut writer = Writer::start(bin, args, 20, 3);
    let mut stdin = writer.process.child.stdin.take().expect("stdin is piped");
    let chunk = vec![b'z'; 64 * 1024];
    for _ in 0..LENGTH / chunk.len() {
        if stdin.write_all(&chunk).is_err() {
            break; // it exited: `expect_success` says why
        }
    }
    // All but the pipe's last 64 KiB has been read by now; let it take those too.
    thread::sleep(Duration::from_millis(300));
    let peak = peak_memory_kib(writer.process.child.id());
    drop(stdin);
    writer.process.expect_success();
    assert!(
        peak < 64 << 10,
        "a {} MiB line without a newline took {} MiB of memory",
        LENGTH >> 20,
        peak >> 10
    );
}
