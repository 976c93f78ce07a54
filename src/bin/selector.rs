//! Lesson 2: epoll by hand, level- or edge-triggered, with a registry of callbacks. The lesson's code is in
//! `crates/2-selector`.
fn main() -> std::process::ExitCode {
    lesson_selector::main()
}
