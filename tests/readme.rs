//! Every transcript in the README, and in the lessons' `//!` texts, is run, and what it prints
//! is compared with what the text shows: the course cannot drift from the code.
//!
//! # What counts as a transcript
//! A fenced block with a line starting `$ ` is a *command transcript*. Each `$ ` line runs in
//! bash, in a fresh temporary directory, with a time bound, and its stdout and stderr
//! (together, as a terminal shows them) must match the lines below it, up to the next `$ `:
//! - `cargo run -q [--release] --bin NAME [--]` and `./target/debug/NAME` run the binary
//!   cargo built for these tests (a `cargo run` here would wait on cargo's build lock);
//! - `/tmp/` is the block's temporary directory (the output shows it back as `/tmp/`);
//! - a line starting `>>> ` is typed at a prompt: what follows it (up to a `#` comment) is
//!   written to the command's stdin, and the line is not part of the output;
//! - with `<!-- server: ARGS -->` on the line before the block, `ARGS --addr 127.0.0.1:0` runs
//!   first, as in another terminal, and `client` gets `--addr` with its address; the comment
//!   is invisible once rendered, so the paragraph above shows that command to the reader.
//!
//! A block with `<!-- session: NAME -->` on the line before it is an *interactive session*
//! (a server with `--trace`, `nc` in other terminals): `sessions::run(NAME)` performs the
//! steps the text describes and the lines shown must appear in what it printed, in order.
//! Its `$ ` lines are the commands a reader types, not output: in the README the first is
//! the server `sessions::SESSIONS` says the session starts, then come the clients'.
//!
//! In the README every fenced block without a language is one of those two; code, command
//! lists and listings say their language (`sh`, `rust`, `text`, …).
//!
//! # How lines match
//! Measured values vary from run to run, so both sides are normalized before they are
//! compared, by one rule ([`normalize`]): a duration (a number followed by `s`, `ms`, `µs` or
//! `seconds`, or bash's `0m3.001s`), a speed-up (`17.9×`) and the port of a `127.0.0.1:PORT`
//! address match any other. A line that is only `…` stands for any number of lines, and a
//! line ending in ` …` for any line that starts with the text before it. Everything else
//! must be equal. Timing decides some outputs (which line comes first when two sources are
//! 100 ms apart), so a block that does not match is run again, up to three times in all, and
//! only a few blocks run at once.
//!
//! The programs run with fds 0 to 2 only, as from a terminal, so the fd numbers they print
//! are the ones a reader sees. Each stage's `cargo lessonN` is run with `-- --list`.
//!
//! And the check checks itself: once a block matched, each of its lines is changed in turn,
//! and every changed version must fail to match what the run printed — no line is hidden
//! behind a `…` or a variable.

mod common;
#[path = "readme/sessions.rs"]
mod sessions;

use std::io::{Read, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::LazyLock;
use std::thread;
use std::time::{Duration, Instant};

use common::Server;
use regex::Regex;

/// How long one command may run.
const COMMAND_PATIENCE: Duration = Duration::from_secs(60);

/// Held by each test here while it runs programs: `cargo lessonN -- --list` must not build
/// anything, and if it did (its packages' features differing from the workspace's), the
/// binaries would change under the other tests' feet. With this, they would only fail here.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// How many command transcripts run at the same time.
const AT_ONCE: usize = 4;

/// How many times a block is run before its mismatch counts.
const ATTEMPTS: usize = 3;

/// Every binary [`binary`] knows.
const BINARIES: [&str; 11] = [
    "sync",
    "select",
    "selector",
    "generators",
    "coroutines",
    "async-await",
    "completion",
    "work-stealing",
    "green-threads",
    "client",
    "timeline",
];

/// The binaries a transcript may run, by name.
fn binary(name: &str) -> Option<&'static str> {
    Some(match name {
        "sync" => env!("CARGO_BIN_EXE_sync"),
        "select" => env!("CARGO_BIN_EXE_select"),
        "selector" => env!("CARGO_BIN_EXE_selector"),
        "generators" => env!("CARGO_BIN_EXE_generators"),
        "coroutines" => env!("CARGO_BIN_EXE_coroutines"),
        "async-await" => env!("CARGO_BIN_EXE_async-await"),
        "completion" => env!("CARGO_BIN_EXE_completion"),
        "work-stealing" => env!("CARGO_BIN_EXE_work-stealing"),
        "green-threads" => env!("CARGO_BIN_EXE_green-threads"),
        "client" => env!("CARGO_BIN_EXE_client"),
        "timeline" => env!("CARGO_BIN_EXE_timeline"),
        _ => return None,
    })
}

/// The texts whose transcripts are run: the README and each lesson's `//!` text.
fn texts() -> Vec<(&'static str, &'static str, &'static str)> {
    /// A lesson's `//!` text, by its crate's folder.
    macro_rules! lesson {
        ($folder:literal) => {
            (
                concat!("crates/", $folder, "/src/lib.rs"),
                include_str!(concat!("../crates/", $folder, "/src/lib.rs")),
                "//!",
            )
        };
    }
    vec![
        ("README.md", include_str!("../README.md"), ""),
        lesson!("0-sync"),
        lesson!("1-select"),
        lesson!("2-selector"),
        lesson!("3-generators"),
        lesson!("4-coroutines"),
        lesson!("5-async-await"),
        lesson!("6-completion"),
        lesson!("7-work-stealing"),
        lesson!("8-green-threads"),
    ]
}

/// One fenced block of a text.
#[derive(Debug, Clone)]
struct Block {
    /// `README.md:120`: where its opening fence is.
    place: String,
    /// The word after the opening fence (`rust`, `text`), or empty.
    language: String,
    /// The HTML comment on the line before the fence: `("session", "selector-trace")`.
    marker: Option<(String, String)>,
    lines: Vec<String>,
}

impl Block {
    fn is_command_transcript(&self) -> bool {
        self.lines.iter().any(|line| line.starts_with("$ "))
    }

    fn session(&self) -> Option<&str> {
        match &self.marker {
            Some((kind, name)) if kind == "session" => Some(name),
            _ => None,
        }
    }

    fn server(&self) -> Option<&str> {
        match &self.marker {
            Some((kind, args)) if kind == "server" => Some(args),
            _ => None,
        }
    }
}

/// The fenced blocks of `text`, whose lines start with `prefix` (`//!` for a crate's doc).
fn blocks(file: &str, text: &str, prefix: &str) -> Vec<Block> {
    let mut blocks = Vec::new();
    let mut open: Option<Block> = None;
    let mut previous = "";
    for (number, raw) in text.lines().enumerate() {
        let Some(line) = raw.strip_prefix(prefix) else {
            previous = "";
            continue;
        };
        // `//! text`: the space after the doc comment's marker is not part of the text.
        let line = match prefix {
            "" => line,
            _ => line.strip_prefix(' ').unwrap_or(line),
        };
        match (&mut open, line.strip_prefix("```")) {
            (None, Some(language)) => {
                let marker = previous
                    .trim()
                    .strip_prefix("<!--")
                    .and_then(|rest| rest.strip_suffix("-->"))
                    .and_then(|comment| comment.split_once(':'))
                    .map(|(kind, value)| (kind.trim().to_string(), value.trim().to_string()));
                open = Some(Block {
                    place: format!("{file}:{}", number + 1),
                    language: language.trim().to_string(),
                    marker,
                    lines: Vec::new(),
                });
            }
            (Some(_), Some(_)) => blocks.extend(open.take()),
            (Some(block), None) => block.lines.push(line.trim_end().to_string()),
            (None, None) => {}
        }
        previous = line;
    }
    blocks
}

fn all_blocks() -> Vec<Block> {
    texts()
        .into_iter()
        .flat_map(|(file, text, prefix)| blocks(file, text, prefix))
        .collect()
}

/// The one rule for values that vary: durations and ports match any other.
fn normalize(line: &str) -> String {
    static DURATION: LazyLock<Regex> = LazyLock::new(|| {
        Regex::new(
            r"\b\d+m\d+(\.\d+)?s\b|\b\d+(\.\d+)? ?(seconds|second|ms|µs|s)\b|\b\d+(\.\d+)? ?µs",
        )
        .unwrap()
    });
    static PORT: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"127\.0\.0\.1:\d+").unwrap());
    static SPEED_UP: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"\b\d+(\.\d+)?×").unwrap());
    let line = DURATION.replace_all(line.trim_end(), "<duration>");
    let line = SPEED_UP.replace_all(&line, "<ratio>×");
    PORT.replace_all(&line, "127.0.0.1:<port>").into_owned()
}

/// Whether one normalized line shows another: equal, or, for a shown line ending in ` …`,
/// the start of it.
fn shows(shown: &str, printed: &str) -> bool {
    match shown.strip_suffix(" …") {
        Some(start) => printed.starts_with(start),
        None => shown == printed,
    }
}

/// Whether `actual` is `expected` line by line, where an expected `…` line stands for any
/// number of lines and both sides are [`normalize`]d.
fn matches(expected: &[String], actual: &[String]) -> bool {
    let expected: Vec<String> = expected.iter().map(|line| normalize(line)).collect();
    let actual: Vec<String> = actual.iter().map(|line| normalize(line)).collect();
    fn from(expected: &[String], actual: &[String]) -> bool {
        match expected.split_first() {
            None => actual.is_empty(),
            Some((gap, rest)) if gap == "…" => {
                (0..=actual.len()).any(|skip| from(rest, &actual[skip..]))
            }
            Some((line, rest)) => actual
                .split_first()
                .is_some_and(|(first, others)| shows(line, first) && from(rest, others)),
        }
    }
    from(&expected, &actual)
}

/// Whether the `expected` lines appear in `actual` in that order (others may come between).
fn appear_in_order(expected: &[String], actual: &[String]) -> bool {
    let mut actual = actual.iter().map(|line| normalize(line));
    expected
        .iter()
        .filter(|line| line.as_str() != "…")
        .all(|line| {
            let line = normalize(line);
            actual.any(|candidate| shows(&line, &candidate))
        })
}

/// Each line of `expected` changed in turn (text appended, which no rule lets vary): every
/// version must fail `check` against the same output. Returns the lines that did not.
fn unchecked_lines(expected: &[String], check: impl Fn(&[String]) -> bool) -> Vec<String> {
    (0..expected.len())
        .filter(|&index| expected[index] != "…" && !expected[index].starts_with(">>> "))
        .filter_map(|index| {
            let mut changed = expected.to_vec();
            changed[index].push_str(" [changed]");
            check(&changed).then(|| expected[index].clone())
        })
        .collect()
}

/// A command of a transcript and the output shown under it.
struct Step {
    command: String,
    /// What is typed at the prompt (`>>> ` lines), one line each.
    input: String,
    expected: Vec<String>,
}

fn steps(block: &Block) -> Vec<Step> {
    let mut steps: Vec<Step> = Vec::new();
    for line in &block.lines {
        if let Some(command) = line.strip_prefix("$ ") {
            steps.push(Step {
                command: command.to_string(),
                input: String::new(),
                expected: Vec::new(),
            });
        } else if let Some(step) = steps.last_mut() {
            match line.strip_prefix(">>> ") {
                Some(typed) => {
                    let typed = typed.split_once('#').map_or(typed, |(typed, _)| typed);
                    step.input.push_str(typed.trim());
                    step.input.push('\n');
                }
                None => step.expected.push(line.clone()),
            }
        }
    }
    steps
}

/// `command` as the test runs it: the built binaries, the block's own temporary directory,
/// the server's address.
fn rewrite(command: &str, dir: &Path, server: Option<&str>) -> Result<String, String> {
    static CARGO_RUN: LazyLock<Regex> = LazyLock::new(|| {
        Regex::new(r"cargo run -q (--release )?--bin (\S+)( --)?|\./target/(debug|release)/(\S+)")
            .unwrap()
    });
    // `/tmp/` first: the binaries' own paths may be under /tmp.
    let command = command.replace("/tmp/", &format!("{}/", dir.display()));
    let mut unknown = None;
    let rewritten = CARGO_RUN.replace_all(&command, |captures: &regex::Captures| {
        let name = captures
            .get(2)
            .or_else(|| captures.get(5))
            .map_or("", |name| name.as_str());
        match binary(name) {
            None => {
                unknown = Some(name.to_string());
                String::new()
            }
            Some(path) => match server {
                Some(addr) if name == "client" => format!("'{path}' --addr {addr}"),
                _ => format!("'{path}'"),
            },
        }
    });
    if let Some(name) = unknown {
        return Err(format!(
            "`{command}` runs `{name}`, which tests/readme.rs does not know"
        ));
    }
    Ok(rewritten.into_owned())
}

/// Runs `command` in bash with `input` on stdin; returns what it printed (stdout and
/// stderr in one stream, as a terminal shows them), with `dir` written back as `/tmp`.
fn run(command: &str, input: &str, dir: &Path) -> Result<Vec<String>, String> {
    run_for(command, input, dir, COMMAND_PATIENCE)
}

/// [`run`], for at most `patience`.
fn run_for(
    command: &str,
    input: &str,
    dir: &Path,
    patience: Duration,
) -> Result<Vec<String>, String> {
    let (mut reader, writer) = std::io::pipe().map_err(|err| err.to_string())?;
    let mut child = Command::new("bash")
        .arg("-c")
        .arg(command)
        .current_dir(dir)
        .stdin(Stdio::piped())
        .stdout(writer.try_clone().map_err(|err| err.to_string())?)
        .stderr(writer)
        // Its own process group, so a timeout kills the whole pipeline.
        .process_group(0)
        .spawn()
        .map_err(|err| format!("bash: {err}"))?;
    let mut stdin = child.stdin.take().expect("stdin is piped");
    let input = input.to_string();
    thread::spawn(move || {
        let _ = stdin.write_all(input.as_bytes());
    });
    let output = thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = reader.read_to_end(&mut bytes);
        bytes
    });
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().map_err(|err| err.to_string())? {
            break status;
        }
        if started.elapsed() > patience {
            let group = nix::unistd::Pid::from_raw(-(child.id() as i32));
            let _ = nix::sys::signal::kill(group, nix::sys::signal::Signal::SIGKILL);
            let _ = child.wait();
            return Err(format!("`{command}` ran longer than {patience:?}"));
        }
        thread::sleep(Duration::from_millis(20));
    };
    let bytes = output.join().map_err(|_| "the output reader panicked")?;
    let text = String::from_utf8_lossy(&bytes).replace(&format!("{}", dir.display()), "/tmp");
    let _ = status; // the exit status shows in the transcript only when the text prints it
    Ok(text
        .lines()
        .map(|line| line.trim_end().to_string())
        .collect())
}

/// A fresh temporary directory, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(label: &str) -> TempDir {
        static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let serial = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!(
            "readme-{}-{serial}-{}",
            std::process::id(),
            label.replace(['/', ':', '.'], "-")
        ));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).expect("create a temporary directory");
        TempDir(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Runs every step of a command transcript once; `Ok` if each printed what the block shows.
fn attempt(block: &Block) -> Result<(), String> {
    let dir = TempDir::new(&block.place);
    let server = match block.server() {
        None => None,
        Some(args) => {
            let mut words = args.split_whitespace();
            let name = words.next().unwrap_or_default();
            let path = binary(name).ok_or(format!("server `{name}` is not a known binary"))?;
            let args: Vec<&str> = words.collect();
            Some(Server::start(path, &args))
        }
    };
    let addr = server.as_ref().map(|server| server.addr.to_string());
    for step in steps(block) {
        let command = rewrite(&step.command, &dir.0, addr.as_deref())?;
        let actual = run(&command, &step.input, &dir.0)?;
        if !matches(&step.expected, &actual) {
            return Err(format!(
                "`$ {}` printed:\n{}\nand the text shows:\n{}",
                step.command,
                actual.join("\n"),
                step.expected.join("\n")
            ));
        }
        let unchecked = unchecked_lines(&step.expected, |changed| matches(changed, &actual));
        if !unchecked.is_empty() {
            return Err(format!(
                "`$ {}`: these lines still match when changed: {unchecked:?}",
                step.command
            ));
        }
    }
    Ok(())
}

/// Runs `check` up to [`ATTEMPTS`] times; the last error if none passed.
fn with_retries(check: impl Fn() -> Result<(), String>) -> Result<(), String> {
    let mut last = String::new();
    for _ in 0..ATTEMPTS {
        match check() {
            Ok(()) => return Ok(()),
            Err(err) => last = err,
        }
    }
    Err(last)
}

/// Every `$ ` command in the README and the lesson texts prints what the text shows under it
/// (by the rule above), and every line shown is one the comparison checks.
#[test]
fn every_command_prints_what_the_text_shows() {
    let _alone = one_at_a_time();
    common::raise_fd_limit();
    sessions::start_like_a_terminal();
    let blocks: Vec<Block> = all_blocks()
        .into_iter()
        .filter(|block| block.is_command_transcript() && block.session().is_none())
        .collect();
    assert!(
        blocks.len() >= 10,
        "found only {} transcripts",
        blocks.len()
    );
    // A few blocks at a time: many at once would load the 2 cores enough to move the
    // timings that some outputs show (a pipe line 100 ms before or after an EOF).
    let next = std::sync::atomic::AtomicUsize::new(0);
    let failures: Vec<String> = thread::scope(|scope| {
        let runners: Vec<_> = (0..AT_ONCE)
            .map(|_| {
                scope.spawn(|| {
                    let mut failures = Vec::new();
                    while let Some(block) =
                        blocks.get(next.fetch_add(1, std::sync::atomic::Ordering::Relaxed))
                    {
                        if let Err(err) = with_retries(|| attempt(block)) {
                            failures.push(format!("{}: {err}", block.place));
                        }
                    }
                    failures
                })
            })
            .collect();
        runners
            .into_iter()
            .flat_map(|runner| runner.join().expect("a transcript thread panicked"))
            .collect()
    });
    let commands: usize = blocks.iter().map(|block| steps(block).len()).sum();
    eprintln!(
        "ran {} transcript blocks, {commands} commands; {} failed",
        blocks.len(),
        failures.len()
    );
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

/// Every interactive session the texts show (`<!-- session: NAME -->`) is performed by
/// `sessions::run`, and the lines shown appear in what the programs printed, in order.
#[test]
fn every_session_prints_the_lines_the_text_shows() {
    let _alone = one_at_a_time();
    common::raise_fd_limit();
    let blocks: Vec<Block> = all_blocks()
        .into_iter()
        .filter(|block| block.session().is_some())
        .collect();
    let failures: Vec<String> = blocks
        .iter()
        .filter_map(|block| {
            let name = block.session().unwrap_or_default();
            let result = with_retries(|| {
                let actual = sessions::run(name)?;
                // A `$ ` line is the command the session runs, not output.
                let shown: Vec<String> = block
                    .lines
                    .iter()
                    .filter(|line| !line.starts_with("$ "))
                    .cloned()
                    .collect();
                if !appear_in_order(&shown, &actual) {
                    return Err(format!(
                        "printed:\n{}\nand the text shows:\n{}",
                        actual.join("\n"),
                        shown.join("\n")
                    ));
                }
                let unchecked =
                    unchecked_lines(&shown, |changed| appear_in_order(changed, &actual));
                if unchecked.is_empty() {
                    Ok(())
                } else {
                    Err(format!(
                        "these lines still match when changed: {unchecked:?}"
                    ))
                }
            });
            result
                .err()
                .map(|err| format!("{} (session {name}): {err}", block.place))
        })
        .collect();
    eprintln!("ran {} sessions; {} failed", blocks.len(), failures.len());
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

/// In the README, a fenced block without a language is a transcript (a `$ ` command or a
/// session): output cannot be shown without being run. Every session named exists.
#[test]
fn every_plain_block_in_the_readme_is_run() {
    let mut unrun = Vec::new();
    for block in all_blocks() {
        if let Some(name) = block.session() {
            if !sessions::SESSIONS
                .iter()
                .any(|(session, _)| *session == name)
            {
                unrun.push(format!("{}: no session named {name}", block.place));
            }
        } else if block.language.is_empty()
            && block.place.starts_with("README.md")
            && !block.is_command_transcript()
        {
            unrun.push(format!(
                "{}: a plain block that is neither a `$ ` transcript nor a session (give code \
                 a language: ```text, ```rust, ```sh)",
                block.place
            ));
        }
    }
    assert!(unrun.is_empty(), "{}", unrun.join("\n"));
}

/// A command as the README shows it, reduced to the binary and its arguments:
/// `cargo run -q --bin select -- echo --trace`, `./target/debug/select echo --trace` and
/// `cargo run --bin select -- echo --trace  # a comment` are all `select echo --trace`. The
/// `--addr 127.0.0.1:0` the tests add is left out. `None` if it runs none of our binaries.
fn lesson_command(shown: &str) -> Option<String> {
    static COMMAND: LazyLock<Regex> = LazyLock::new(|| {
        Regex::new(
            r"^(?:cargo run (?:-q )?(?:--release )?--bin (\S+)(?: --)?|\./target/(?:debug|release)/(\S+))(.*)$",
        )
        .unwrap()
    });
    let shown = shown.split(" #").next().unwrap_or_default().trim();
    let captures = COMMAND.captures(shown)?;
    let binary = captures.get(1).or_else(|| captures.get(2))?.as_str();
    let args = captures[3].replace(" --addr 127.0.0.1:0", "");
    Some(format!("{binary}{}", args.trim_end()))
}

/// Every demonstration in the README shows its commands. A session block (a server and
/// clients in other terminals) opens with the server's command, the one `sessions::run`
/// starts, and then shows a client's; a transcript run against a server (`<!-- server: ARGS
/// -->`, invisible once rendered) has that server's command, in backticks, in the paragraph
/// just above. (The lessons' `//!` texts list the commands in a block of their own.)
#[test]
fn every_demonstration_shows_its_server_and_its_clients() {
    let mut unshown = Vec::new();
    for block in all_blocks() {
        let Some(name) = block.session() else {
            continue;
        };
        if !block.place.starts_with("README.md") {
            continue;
        }
        let server = sessions::SESSIONS
            .iter()
            .find(|(session, _)| *session == name)
            .map(|(_, server)| server.to_string());
        let commands: Vec<&str> = block
            .lines
            .iter()
            .filter_map(|line| line.strip_prefix("$ "))
            .collect();
        if commands.first().and_then(|first| lesson_command(first)) != server {
            unshown.push(format!(
                "{} (session {name}): the first `$ ` line is not the server it runs, {server:?}",
                block.place
            ));
        }
        if commands.len() < 2 {
            unshown.push(format!(
                "{} (session {name}): no client command after the server's",
                block.place
            ));
        }
    }
    let readme = include_str!("../README.md");
    let lines: Vec<&str> = readme.lines().collect();
    for (index, line) in lines.iter().enumerate() {
        let Some(args) = line
            .strip_prefix("<!-- server:")
            .and_then(|rest| rest.strip_suffix("-->"))
            .map(str::trim)
        else {
            continue;
        };
        // The paragraph above the marker (and the blank line between them).
        let above = lines[..index]
            .iter()
            .rev()
            .skip_while(|line| line.trim().is_empty())
            .take_while(|line| !line.trim().is_empty())
            .copied()
            .collect::<Vec<_>>()
            .join(" ");
        let shown = above
            .split('`')
            .skip(1)
            .step_by(2)
            .any(|code| lesson_command(code).as_deref() == Some(args));
        if !shown {
            unshown.push(format!(
                "README.md:{}: the server `{args}` is not shown in the paragraph above \
                 (as `./target/debug/{args}`, say)",
                index + 1
            ));
        }
    }
    assert!(unshown.is_empty(), "{}", unshown.join("\n"));
}

/// The `--trace` paragraph names every lesson whose programs take `--trace` (each binary's
/// `echo --help` is asked).
#[test]
fn the_trace_paragraph_names_every_lesson_that_traces() {
    let readme = include_str!("../README.md");
    let paragraph: String = readme
        .lines()
        .skip_while(|line| !line.starts_with("**`--trace`**"))
        .take_while(|line| !line.trim().is_empty())
        .collect::<Vec<_>>()
        .join(" ");
    assert!(!paragraph.is_empty(), "no **`--trace`** paragraph");
    static ROW: LazyLock<Regex> =
        LazyLock::new(|| Regex::new(r"^\| (\d) \| `([a-z-]+)` \|").unwrap());
    let lessons: Vec<(String, String)> = readme
        .lines()
        .filter_map(|line| ROW.captures(line))
        .map(|row| (row[1].to_string(), row[2].to_string()))
        .collect();
    assert!(lessons.len() >= 8, "the lesson table: {lessons:?}");
    let mut unnamed = Vec::new();
    for (number, name) in &lessons {
        let path = binary(name).unwrap_or_else(|| panic!("no binary {name}"));
        let help = Command::new(path)
            .args(["echo", "--help"])
            .output()
            .expect("run --help");
        let traces = String::from_utf8_lossy(&help.stdout).contains("--trace");
        if traces && !paragraph.contains(&format!("lesson {number}")) {
            unnamed.push(format!("lesson {number} (`{name} echo --trace`)"));
        }
    }
    assert!(
        unnamed.is_empty(),
        "the --trace paragraph leaves out {unnamed:?}"
    );
}

/// The matching rule itself: durations and ports vary, `…` skips lines, anything else —
/// a word, a count, a byte total — must be equal.
#[test]
fn the_rule_lets_only_measured_values_vary() {
    let lines = |text: &str| -> Vec<String> { text.lines().map(String::from).collect() };
    let shown = lines("listening on 127.0.0.1:38299\n…\ndone in 0.48s, 3 lines\nreal\t0m3.001s");
    let printed = lines("listening on 127.0.0.1:5000\na\nb\ndone in 12.5s, 3 lines\nreal\t0m2.9s");
    assert!(matches(&shown, &printed));
    assert!(!matches(
        &shown,
        &lines("listening on 127.0.0.1:5000\ndone in 1s, 4 lines\nreal\t0m2.9s")
    ));
    assert!(!matches(
        &shown,
        &lines("listening on 127.0.0.2:5000\ndone in 1s, 3 lines\nreal\t0m2.9s")
    ));
    assert!(!matches(
        &shown,
        &lines("listening on 127.0.0.1:5000\ndone in 1s, 3 lines")
    ));
    assert_eq!(
        normalize("4 sent, 2 pipe messages, 20 images"),
        "4 sent, 2 pipe messages, 20 images"
    );
    assert_eq!(
        normalize("answered in 0.14 ms, 1.50 s, 21 µs"),
        "answered in <duration>, <duration>, <duration>"
    );
    assert!(appear_in_order(&lines("b\n…\nd"), &lines("a\nb\nc\nd")));
    assert!(matches(
        &lines("failed: …"),
        &lines("failed: reset by peer")
    ));
    assert!(!matches(
        &lines("failed: …"),
        &lines("refused: reset by peer")
    ));
    assert!(!appear_in_order(&lines("d\nb"), &lines("a\nb\nc\nd")));
    assert_eq!(
        unchecked_lines(&shown, |changed| matches(changed, &printed)),
        Vec::<String>::new()
    );
}

/// Each stage's one-word command (`cargo lesson2`, an alias in `.cargo/config.toml`) is shown
/// in the README with what it expands to, exactly as the config says, and every
/// `tests/lessonN_*.rs` has one. Each is run as the README shows it, with `-- --list` (the
/// tests themselves run in this very `cargo test`): it builds, and it runs that stage's test
/// file and its lesson crate's unit tests — nothing else, and neither without tests.
#[test]
fn every_stage_command_names_its_own_tests() {
    let _alone = one_at_a_time();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let config = std::fs::read_to_string(root.join(".cargo/config.toml")).expect("the config");
    let aliases: Vec<(String, String)> = config
        .lines()
        .filter_map(|line| line.split_once(" = \""))
        .filter(|(name, _)| name.starts_with("lesson"))
        .map(|(name, value)| (name.to_string(), value.trim_end_matches('"').to_string()))
        .collect();
    let readme = include_str!("../README.md");
    let mut problems = Vec::new();
    let lesson_files: Vec<String> = std::fs::read_dir(root.join("tests"))
        .expect("tests/")
        .filter_map(|entry| entry.ok()?.file_name().into_string().ok())
        .filter(|name| name.starts_with("lesson") && name.ends_with(".rs"))
        .collect();
    for file in &lesson_files {
        let stage = file
            .trim_start_matches("lesson")
            .split('_')
            .next()
            .unwrap_or("");
        if !aliases
            .iter()
            .any(|(name, _)| name == &format!("lesson{stage}"))
        {
            problems.push(format!("tests/{file} has no `cargo lesson{stage}` alias"));
        }
    }
    for (name, expansion) in &aliases {
        let stage = name.trim_start_matches("lesson");
        let shown = format!("cargo {name}    # = cargo {expansion}");
        if !readme.lines().any(|line| line == shown) {
            problems.push(format!("the README does not show `{shown}`"));
        }
        if !readme.contains(&format!("| `cargo {name}` |")) {
            problems.push(format!("the Tests table has no `cargo {name}` row"));
        }
        let words: Vec<&str> = expansion.split_whitespace().collect();
        let after = |flag: &str| -> Vec<&str> {
            words
                .windows(2)
                .filter(|pair| pair[0] == flag)
                .map(|pair| pair[1])
                .collect()
        };
        let tests = after("--test");
        let wanted_file = format!("lesson{stage}_");
        if tests.len() != 1 || !tests[0].starts_with(&wanted_file) {
            problems.push(format!(
                "{name} should run one tests/{wanted_file}*.rs: {tests:?}"
            ));
        }
        for test in tests {
            if !root.join("tests").join(format!("{test}.rs")).is_file() {
                problems.push(format!("{name}: no tests/{test}.rs"));
            }
        }
        let packages = after("-p");
        let lesson_crate = std::fs::read_dir(root.join("crates"))
            .expect("crates/")
            .filter_map(|entry| entry.ok())
            .find(|entry| {
                entry
                    .file_name()
                    .to_string_lossy()
                    .starts_with(&format!("{stage}-"))
            })
            .and_then(|entry| std::fs::read_to_string(entry.path().join("Cargo.toml")).ok())
            .and_then(|manifest| {
                manifest
                    .lines()
                    .find_map(|line| line.strip_prefix("name = \""))
                    .map(|name| name.trim_end_matches('"').to_string())
            });
        problems.extend(list_stage(name, stage, lesson_crate.as_deref(), root));
        match lesson_crate {
            None => problems.push(format!("{name}: no crates/{stage}-* package")),
            Some(package) => {
                if packages != ["async-ladder", package.as_str()] || !words.contains(&"--lib") {
                    problems.push(format!(
                        "{name} should test async-ladder's test file and {package}'s unit \
                         tests (`-p async-ladder -p {package} … --lib`): {expansion}"
                    ));
                }
            }
        }
    }
    assert!(aliases.len() >= 6, "aliases: {aliases:?}");
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// Each `cargo test -p PACKAGE --doc` a stage shows (the doc-tests, which `cargo lessonN`
/// cannot include: cargo does not mix `--doc` with `--test` and `--lib`) names a package of
/// ours, and run with `-- --list` it lists doc-tests.
#[test]
fn every_doc_test_command_lists_doc_tests() {
    let _alone = one_at_a_time();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let commands: Vec<&str> = include_str!("../README.md")
        .lines()
        .filter(|line| line.starts_with("cargo test -p ") && line.contains(" --doc"))
        .map(|line| line.split("  #").next().unwrap_or(line).trim_end())
        .collect();
    assert!(!commands.is_empty(), "the README shows no doc-test command");
    let mut problems = Vec::new();
    for command in commands {
        let shown = command.trim_start_matches("cargo ");
        match run_for(
            &format!("'{cargo}' {shown} -- --list"),
            "",
            root,
            Duration::from_secs(900),
        ) {
            Err(err) => problems.push(format!("{command}: {err}")),
            Ok(lines) => {
                let doc_tests = lines.iter().filter(|line| line.ends_with(": test")).count();
                let from_docs = lines.iter().any(|line| line.contains("Doc-tests "));
                if doc_tests == 0 || !from_docs {
                    problems.push(format!("{command} lists no doc-test: {lines:?}"));
                }
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// When each binary a transcript may run was last written.
fn binaries_built_at() -> Vec<Option<std::time::SystemTime>> {
    BINARIES
        .iter()
        .map(|name| {
            let path = binary(name)?;
            std::fs::metadata(path)
                .and_then(|meta| meta.modified())
                .ok()
        })
        .collect()
}

/// Runs `cargo NAME -- --list` and checks what it would run: `tests/lessonN_*.rs` and the
/// unit tests of the lesson's crate (`package`), each with at least one test, and nothing else.
fn list_stage(name: &str, stage: &str, package: Option<&str>, root: &Path) -> Vec<String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let built_before = binaries_built_at();
    // Building what `cargo test --workspace` has not built yet may take a while.
    let listed = match run_for(
        &format!("'{cargo}' {name} -- --list"),
        "",
        root,
        Duration::from_secs(900),
    ) {
        Ok(lines) => lines,
        Err(err) => return vec![format!("cargo {name} -- --list: {err}")],
    };
    let mut problems = Vec::new();
    // Building a test binary not built yet is fine; building the lesson binaries again means
    // this selection of packages gets other features than the workspace.
    if binaries_built_at() != built_before {
        problems.push(format!(
            "cargo {name} built the lesson binaries again: give the workspace dependency the \
             features its packages differ in (see Cargo.toml)"
        ));
    }
    static RUNNING: LazyLock<Regex> = LazyLock::new(|| {
        let binary = r"\(.*/deps/([a-z0-9_]+)-[0-9a-f]+\)";
        Regex::new(&format!(
            r"^\s*Running (tests/\S+\.rs|unittests src/lib\.rs) {binary}$"
        ))
        .unwrap()
    });
    let mut binaries: Vec<(String, usize)> = Vec::new();
    for line in &listed {
        if let Some(captures) = RUNNING.captures(line) {
            let what = match &captures[1] {
                "unittests src/lib.rs" => format!("unit tests of {}", &captures[2]),
                file => file.to_string(),
            };
            binaries.push((what, 0));
        } else if line.ends_with(": test")
            && let Some((_, tests)) = binaries.last_mut()
        {
            *tests += 1;
        }
    }
    let unit_tests = package.map(|package| format!("unit tests of {}", package.replace('-', "_")));
    let is_stage_file = |what: &str| what.starts_with(&format!("tests/lesson{stage}_"));
    if binaries.len() != 2
        || !binaries.iter().any(|(what, _)| is_stage_file(what))
        || !binaries
            .iter()
            .any(|(what, _)| Some(what) == unit_tests.as_ref())
    {
        problems.push(format!(
            "cargo {name} runs {binaries:?}, not its stage's tests"
        ));
    }
    if binaries
        .iter()
        .any(|(what, tests)| is_stage_file(what) && *tests == 0)
    {
        problems.push(format!("cargo {name}: its test file has no tests"));
    }
    problems
}
