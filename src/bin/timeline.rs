//! Draws a `--timeline` trace as an SVG. Its code is in `crates/timeline`.
fn main() -> std::process::ExitCode {
    timeline::main()
}
