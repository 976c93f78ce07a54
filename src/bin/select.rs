//! Lesson 1: readiness with select(2). The lesson's code is in `crates/1-select`.
fn main() -> std::process::ExitCode {
    lesson_select::main()
}
