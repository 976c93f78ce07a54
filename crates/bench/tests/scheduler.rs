//! `bench scheduler` cannot rot: one tiny round of every micro-benchmark on both runtimes and
//! of the echo row, tables printed. No speed is asserted (see smoke.rs).

use std::path::Path;
use std::process::Command;

/// `bench scheduler --rounds 1 --seconds 0.05` prints both tables with every row, lesson 7
/// with each of its drivers. The echo
/// row needs `work-stealing` beside the benchmark (`cargo test --workspace` builds it);
/// without it the test says so and checks nothing.
#[test]
fn scheduler_prints_both_tables() {
    let bench = Path::new(env!("CARGO_BIN_EXE_bench"));
    let bin_dir = bench.parent().expect("the bench binary has a directory");
    if !bin_dir.join("work-stealing").is_file() {
        eprintln!("no work-stealing binary in {}: skipped", bin_dir.display());
        return;
    }
    let output = Command::new(bench)
        .args([
            "scheduler",
            "--no-build",
            "--rounds",
            "1",
            "--seconds",
            "0.05",
        ])
        .output()
        .expect("run bench scheduler");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stdout}\n{stderr}");
    for row in [
        "| `spawn_many` |",
        "| `yield_many` |",
        "| `chained_spawn` |",
        "| `ping_pong` |",
        "| work-stealing --workers 2 --driver worker |",
        "| work-stealing --workers 2 --driver thread |",
        "| tokio multi_thread, 2 workers |",
    ] {
        assert!(stdout.contains(row), "no {row:?} in:\n{stdout}");
    }
}
