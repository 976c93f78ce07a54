//! Lesson 6: completion-based I/O with io_uring. The lesson's code is in `crates/6-completion`.
fn main() -> std::process::ExitCode {
    lesson_completion::main()
}
