//! Lesson 0: blocking I/O. The lesson's code is in `crates/0-sync`.
fn main() -> std::process::ExitCode {
    lesson_sync::main()
}
