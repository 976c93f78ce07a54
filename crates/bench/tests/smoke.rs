//! The benchmark cannot rot: a tiny `--quick` run, every step of the real one — start the
//! servers and the tokio peer, load them, pair the runs, print the tables, draw the plots —
//! in a few seconds; and `bench load`, the command for profiling one server. Nothing here
//! asserts a speed: CI machines are noisy, and speed is the benchmark's business, not a test's.

use std::path::{Path, PathBuf};
use std::process::Command;

/// A folder for the plots, removed when the test ends.
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Kills the spawned process when the test ends, passed or not.
struct Killed(std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `bench --quick` with 50 ms windows, a 16 MB bulk stream and two rounds against `select`
/// and `selector` (when built beside the benchmark: `cargo test --workspace` builds them),
/// monoio (where io_uring works; elsewhere it is skipped with a printed reason) and tokio:
/// it succeeds, prints every table and the targets, writes three SVGs whose labels are real
/// text, and writes the report with those tables and links to those plots into `--out`
/// (never into `docs/` or `imgs/`).
#[test]
fn quick_run_prints_tables_and_writes_plots() {
    let bench = Path::new(env!("CARGO_BIN_EXE_bench"));
    let bin_dir = bench.parent().expect("the bench binary has a directory");
    let out = TempDir(std::env::temp_dir().join(format!("bench-smoke-{}", std::process::id())));
    let output = Command::new(bench)
        .args([
            "--quick",
            "--seconds",
            "0.05",
            "--rounds",
            "2",
            "--bulk-mb",
            "16",
        ])
        .args(["--only", "select,selector,monoio"])
        .arg("--bin-dir")
        .arg(bin_dir)
        .arg("--out")
        .arg(&out.0)
        .output()
        .expect("run the bench binary");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "stdout:\n{stdout}\nstderr:\n{stderr}"
    );

    for heading in [
        "### Ping-pong: messages/s",
        "### Server CPU time per message",
        "### Server CPU time per message in user space",
        "### Idle scaling",
        "### Peak memory",
        "### Bulk stream: 16 MB",
        "### Fairness",
        "### Targets",
    ] {
        assert!(stdout.contains(heading), "no {heading:?} in:\n{stdout}");
    }
    assert!(stdout.contains("| tokio (reference) |"), "{stdout}");
    for lesson in ["select", "selector"] {
        if bin_dir.join(lesson).is_file() {
            assert!(stdout.contains(&format!("| {lesson} |")), "{stdout}");
            let target = format!("- {lesson}: bulk server CPU per GB ≤ 1.10× tokio");
            assert!(stdout.contains(&target), "no {target:?} in:\n{stdout}");
        }
    }
    assert!(
        stdout.contains("| monoio |") || stderr.contains("bench: monoio: skipped: "),
        "monoio neither measured nor skipped with a reason:\n{stdout}\n{stderr}"
    );

    for (plot, label) in [
        ("bench-throughput.svg", "messages/s"),
        ("bench-idle-scaling.svg", "idle connections"),
        ("bench-memory.svg", "peak RSS"),
    ] {
        let svg = std::fs::read_to_string(out.0.join(plot)).expect("the plot was written");
        assert!(
            svg.contains("<text") && svg.contains(label),
            "{plot}: no {label:?} text"
        );
    }
    let report = std::fs::read_to_string(out.0.join("benchmark.md")).expect("the report");
    assert!(report.starts_with("# Benchmark\n"), "{report}");
    assert!(
        report.contains("![throughput](bench-throughput.svg)"),
        "{report}"
    );
    assert!(report.contains("### Targets"), "{report}");
    assert!(!report.contains("{{results}}"), "{report}");
}

/// `--publish` rewrites the README's figures, so it is refused for a quick or partial run:
/// clap's usage error, nothing measured.
#[test]
fn publish_refuses_a_quick_run() {
    let bench = Path::new(env!("CARGO_BIN_EXE_bench"));
    for partial in [&["--quick"][..], &["--only", "select"]] {
        let output = Command::new(bench)
            .arg("--publish")
            .args(partial)
            .output()
            .expect("run the bench binary");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{stderr}");
        assert!(stderr.contains("cannot be used with"), "{stderr}");
    }
}

/// `bench load` (the README's profiling command) drives a server started by hand — here the
/// tokio peer, `bench tokio-echo` — and reports verified messages; it refuses any address
/// that is not on this machine.
#[test]
fn load_drives_a_running_server_and_stays_on_this_machine() {
    use std::io::{BufRead, BufReader};
    use std::process::Stdio;

    let bench = env!("CARGO_BIN_EXE_bench");
    let mut server = Killed(
        Command::new(bench)
            .args(["tokio-echo", "--addr", "127.0.0.1:0"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start bench tokio-echo"),
    );
    let stdout = server.0.stdout.take().expect("stdout is piped");
    let mut first_line = String::new();
    BufReader::new(stdout)
        .read_line(&mut first_line)
        .expect("read the listening line");
    let addr = first_line
        .strip_prefix("listening on ")
        .expect("a `listening on` line")
        .trim();

    let output = Command::new(bench)
        .args(["load", "--addr", addr, "--connections", "2", "--idle", "3"])
        .args(["--seconds", "0.2"])
        .output()
        .expect("run bench load");
    let report = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{report}");
    assert!(
        report.contains("messages/s") && report.contains("3 idle held"),
        "{report}"
    );

    let refused = Command::new(bench)
        .args(["load", "--addr", "192.0.2.1:5000"])
        .output()
        .expect("run bench load");
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("only to servers on this machine"));
}
