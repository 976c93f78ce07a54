//! `up_and_down(n)`: `yield from` on iterators is chaining them.
//!
//! ```python
//! def countup(stop):
//!     n = 1
//!     while n < stop:
//!         yield n
//!         n += 1
//!
//! def countdown(n):
//!     while n > 0:
//!         yield n
//!         n -= 1
//!
//! def up_and_down(n):
//!     yield from countup(n)       # everything countup yields, then…
//!     yield from countdown(n)     # …everything countdown yields
//!
//! for x in up_and_down(3):
//!     print(x)                    # 1 2 3 2 1
//! ```
//!
//! For a generator nobody sends anything to, `yield from` only passes values along, one
//! generator after the other: that is `Iterator::chain`. Ranges are Rust's ready-made
//! `countup` and `countdown`. (When values are *sent* in, `yield from` also forwards the
//! sends and the throws: see lesson 4's `Delegate`.)
//!
//! ```text
//! $ cargo run -q --example up_and_down        # or: -- 5
//! 1
//! 2
//! 3
//! 2
//! 1
//! ```

/// `countup(stop)`: 1, 2, … stop - 1.
fn countup(stop: u32) -> impl Iterator<Item = u32> {
    1..stop
}

/// `countdown(n)`: n, n - 1, … 1.
fn countdown(n: u32) -> impl Iterator<Item = u32> {
    (1..=n).rev()
}

/// `up_and_down(n)`: `yield from countup(n)`, then `yield from countdown(n)`.
fn up_and_down(n: u32) -> impl Iterator<Item = u32> {
    countup(n).chain(countdown(n))
}

fn main() -> Result<(), String> {
    fdio::let_sigpipe_end_the_program(); // `up_and_down | head -2` ends quietly
    let n = match std::env::args().nth(1) {
        None => 3,
        Some(arg) => arg
            .parse()
            .map_err(|_| format!("up_and_down: {arg:?} is not a count; try 3"))?,
    };
    for x in up_and_down(n) {
        println!("{x}");
    }
    Ok(())
}
