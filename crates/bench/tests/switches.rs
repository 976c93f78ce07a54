//! `bench switches` cannot rot: one tiny round of each hand-off, the table printed. No speed
//! is asserted (see smoke.rs).

use std::process::Command;

/// `bench switches --rounds 1 --scale 0.001` prints the switch-cost table with every row,
/// each with a number.
#[test]
fn switches_prints_every_row() {
    let output = Command::new(env!("CARGO_BIN_EXE_bench"))
        .args(["switches", "--rounds", "1", "--scale", "0.001"])
        .output()
        .expect("run bench switches");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stdout}\n{stderr}");
    for row in [
        "| green thread: `switch` alone (lesson 8) | ",
        "| the two floating-point control words alone: saved and loaded, as in every switch | ",
        "| green thread: `yield_now` among 100 ",
        "| future: `yield_now().await` among 100 tasks ",
        "| OS threads on one CPU: a pipe ping-pong ",
    ] {
        let line = stdout
            .lines()
            .find(|line| line.starts_with(row))
            .unwrap_or_else(|| panic!("no {row:?} in:\n{stdout}"));
        let nanos = line.split(" | ").nth(1).unwrap_or_default();
        assert!(nanos.parse::<f64>().is_ok(), "no number in {line:?}");
    }
}
