//! Lesson 4: coroutines by hand. The lesson's code is in `crates/4-coroutines`.
fn main() -> std::process::ExitCode {
    lesson_coroutines::main()
}
