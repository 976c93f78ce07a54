//! Lesson 5: our own async runtime. The lesson's code is in `crates/5-async-await`.
fn main() -> std::process::ExitCode {
    lesson_async_await::main()
}
