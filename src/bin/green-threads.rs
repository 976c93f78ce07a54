//! Lesson 8: green threads. The lesson's code is in `crates/8-green-threads`.
fn main() -> std::process::ExitCode {
    lesson_green_threads::main()
}
