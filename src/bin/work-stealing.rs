//! Lesson 7: a work-stealing runtime. The lesson's code is in `crates/7-work-stealing`.
fn main() -> std::process::ExitCode {
    lesson_work_stealing::main()
}
