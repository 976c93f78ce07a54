//! Lesson 3: hand-written state machines and a scheduler. The lesson's code is in
//! `crates/3-generators`.
fn main() -> std::process::ExitCode {
    lesson_generators::main()
}
