//! The examples in `examples/`: each one is run, and what it prints is checked exactly.
//!
//! They are built once per run of this file (`cargo build --examples`, a no-op when
//! `cargo test` has just built them) and then run directly — not with `cargo run`, which
//! would take cargo's lock and a second or two per example.

mod common;

use std::fs;
use std::io::Read;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::thread;
use std::time::{Duration, Instant};

use common::{Closed, Process, run_with_a_closed};

/// How long building the examples may take: long, since on a busy machine it may compile.
const BUILD_PATIENCE: Duration = Duration::from_secs(600);

/// The sample log tree (see examples/logs/README.md).
const LOGS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/logs");

/// The directory the examples are built in, after making sure they are up to date.
fn examples_dir() -> &'static Path {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT.get_or_init(|| {
        // This test runs as target/<profile>/deps/examples-<hash>; the examples of the same
        // profile are in target/<profile>/examples.
        let exe = std::env::current_exe().expect("the test's own path");
        let profile_dir = exe
            .parent()
            .and_then(Path::parent)
            .expect("target/<profile>");
        let mut cargo = Command::new(env!("CARGO"));
        cargo.current_dir(env!("CARGO_MANIFEST_DIR")).args([
            "build",
            "--quiet",
            "--package",
            "async-ladder",
            "--examples",
        ]);
        match profile_dir.file_name().and_then(|name| name.to_str()) {
            Some("debug") => {}
            Some("release") => {
                cargo.arg("--release");
            }
            Some(profile) => {
                cargo.args(["--profile", profile]);
            }
            None => panic!("no profile directory in {}", exe.display()),
        }
        let mut build = cargo.spawn().expect("run cargo build --examples");
        let deadline = Instant::now() + BUILD_PATIENCE;
        loop {
            if let Some(status) = build.try_wait().expect("wait for cargo") {
                assert!(status.success(), "cargo build --examples failed");
                break;
            }
            if Instant::now() > deadline {
                let _ = build.kill();
                panic!("cargo build --examples took over {BUILD_PATIENCE:?}");
            }
            thread::sleep(Duration::from_millis(100));
        }
        profile_dir.join("examples")
    })
}

/// Runs example `name` with `args`, waits (bounded) for it to exit 0, and returns its stdout.
fn run(name: &str, args: &[&str]) -> String {
    let mut command = Command::new(examples_dir().join(name));
    command.args(args);
    let mut process = Process::spawn(command);
    drop(process.child.stdin.take());
    assert_eq!(
        process.wait_exit(),
        Some(0),
        "{name} {args:?}: {:?}",
        process.stderr()
    );
    let mut stdout = String::new();
    let mut pipe = process.child.stdout.take().expect("stdout is piped");
    pipe.read_to_string(&mut stdout).unwrap();
    stdout
}

/// Example `name` with `args`, stdin empty.
fn example(name: &str, args: &[&str]) -> Command {
    let mut command = Command::new(examples_dir().join(name));
    command.args(args).stdin(Stdio::null());
    command
}

/// Every example, with the arguments its other test gives it.
const EXAMPLES: [(&str, &[&str]); 6] = [
    ("countdown", &[]),
    ("countdown_send", &[]),
    ("up_and_down", &[]),
    ("log_pipeline", &[]),
    ("grep_broadcast", &[]),
    ("follow", &["--lines", "2", "--interval-ms", "10"]),
];

/// `example | head -1`: once nobody reads its stdout, every example ends quietly — exit 0,
/// or killed by `SIGPIPE` as `yes` is — with nothing on stderr but what it always says there
/// (`follow` names the file it follows). (`println!` panicked: exit 101 and a panic message;
/// `follow` said `follow: Broken pipe` and exited 1.)
#[test]
fn every_example_ends_quietly_when_nobody_reads_its_output() {
    for (name, args) in EXAMPLES {
        let (status, stderr) = run_with_a_closed(Closed::Stdout, example(name, args));
        let quiet_end = status.success() || status.signal() == Some(nix::libc::SIGPIPE);
        assert!(quiet_end, "{name}: {status}; stderr: {stderr}");
        let unexpected: Vec<&str> = stderr
            .lines()
            .filter(|line| !line.starts_with("following "))
            .collect();
        assert!(unexpected.is_empty(), "{name}: {status}; stderr: {stderr}");
    }
}

/// `example 2>&1 | head -1`-like: with stderr a pipe nobody reads, every example still
/// prints what it prints with a working stderr, and exits 0.
#[test]
fn every_example_runs_on_with_a_closed_stderr() {
    for (name, args) in EXAMPLES {
        let (status, stdout) = run_with_a_closed(Closed::Stderr, example(name, args));
        assert!(status.success(), "{name}: {status}");
        assert_eq!(stdout, run(name, args), "{name}");
    }
}

/// `countdown`: the lines printed before, between and after the yields, in that order.
#[test]
fn countdown_counts_down_from_ten() {
    let numbers: String = (1..=10).rev().map(|n| format!("{n}\n")).collect();
    let expected = format!("Counting down from 10\n{numbers}Done counting down\n");
    assert_eq!(run("countdown", &[]), expected);
}

/// `up_and_down(3)` is 1 2 3 2 1: countup(3), then countdown(3).
#[test]
fn up_and_down_chains_up_then_down() {
    assert_eq!(run("up_and_down", &[]), "1\n2\n3\n2\n1\n");
    assert_eq!(run("up_and_down", &["5"]), "1\n2\n3\n4\n5\n4\n3\n2\n1\n");
}

/// `countdown_send`: sending 3 at 5 resets the count, and the 3 it yields back goes to
/// the `send`, not the loop: 5 2 1 0, as Python prints.
#[test]
fn countdown_send_jumps_when_sent_a_value() {
    assert_eq!(
        run("countdown_send", &[]),
        "Counting down from 5\n5\n2\n1\n0\n"
    );
}

/// `log_pipeline` over the sample tree gives the total a plain loop computes from the same
/// files — and that Beazley's Python pipeline printed for them (1466259).
#[test]
fn log_pipeline_totals_the_bytes_column() {
    let expected = total_by_loop(Path::new(LOGS), "access-log", r"ply-.*\.gz");
    assert_eq!(expected, 1_466_259);
    assert_eq!(run("log_pipeline", &[]), format!("Total {expected}\n"));

    let python = total_by_loop(Path::new(LOGS), "access-log", "python");
    assert_eq!(
        run("log_pipeline", &[LOGS, "access-log*", "python"]),
        format!("Total {python}\n")
    );
}

/// The bytes column summed the simple way: every file under `dir` whose name starts with
/// `prefix`, read whole, decompressed by its extension, line by line.
fn total_by_loop(dir: &Path, prefix: &str, pattern: &str) -> u64 {
    let pattern = regex::Regex::new(pattern).unwrap();
    let mut total = 0;
    for entry in fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            total += total_by_loop(&path, prefix, pattern.as_str());
            continue;
        }
        let name = path.file_name().unwrap().to_string_lossy();
        if !name.starts_with(prefix) {
            continue;
        }
        let file = fs::File::open(&path).unwrap();
        let mut text = String::new();
        match path.extension().and_then(|ext| ext.to_str()) {
            Some("gz") => flate2::read::GzDecoder::new(file).read_to_string(&mut text),
            Some("bz2") => bzip2::read::BzDecoder::new(file).read_to_string(&mut text),
            _ => (&file).read_to_string(&mut text),
        }
        .unwrap();
        for line in text.lines().filter(|line| pattern.is_match(line)) {
            let bytes = line.split(' ').next_back().unwrap();
            if bytes != "-" {
                total += bytes.parse::<u64>().unwrap();
            }
        }
    }
    total
}

/// `follow` skips what was in the file before it started, then prints each line the
/// writer thread appends, and stops after `--lines`.
#[test]
fn follow_prints_the_appended_lines() {
    assert_eq!(
        run("follow", &["--lines", "3", "--interval-ms", "20"]),
        "appended line 1 of 3\nappended line 2 of 3\nappended line 3 of 3\n"
    );
}

/// `grep_broadcast`: every line of the access log goes to the three greps in turn, each
/// printing its matches; closing the pipeline makes each printer print its count.
#[test]
fn grep_broadcast_sends_each_line_to_every_grep() {
    let log = fs::read_to_string(format!("{LOGS}/access-log")).unwrap();
    let patterns = ["python", "ply", "swig"];
    let mut expected = String::new();
    for line in log.lines() {
        for pattern in patterns.iter().filter(|pattern| line.contains(*pattern)) {
            expected.push_str(&format!("{pattern}: {line}\n"));
        }
    }
    for pattern in patterns {
        let count = log.lines().filter(|line| line.contains(pattern)).count();
        assert!(count > 0, "the sample log has no {pattern} line");
        let count = fdio::count(count as u64, "line");
        expected.push_str(&format!("{pattern}: {count}\n"));
    }
    assert_eq!(run("grep_broadcast", &[]), expected);
}

/// Each printer's count agrees with its number: `1 line`, `0 lines` (it said `1 lines`).
#[test]
fn grep_broadcast_counts_one_line_in_the_singular() {
    let log = common::TempFile::new("one-python-line.log");
    fs::write(&log.path, "GET /python.html\n").unwrap();
    let path = log.path.to_str().expect("a UTF-8 temporary path");
    assert_eq!(
        run("grep_broadcast", &[path]),
        "python: GET /python.html\npython: 1 line\nply: 0 lines\nswig: 0 lines\n"
    );
}
