//! `countdown(10)`: a generator is a lazy iterator that runs its body a step at a time.
//!
//! ```python
//! def countdown(n):
//!     print("Counting down from", n)
//!     while n > 0:
//!         yield n
//!         n -= 1
//!     print("Done counting down")
//!
//! for x in countdown(10):
//!     print(x)
//! ```
//!
//! In Rust the generator becomes an `Iterator` written by hand: an enum of the places the
//! body can be paused at, and `next` runs it from one to the next — `yield n` is
//! `return Some(n)`, falling off the end is `return None` (Python: `StopIteration`). Note
//! *when* things print: calling `countdown(10)` runs nothing; the first `next` prints the
//! first line, and only the `next` after 1 prints the last.
//!
//! ```text
//! $ cargo run -q --example countdown
//! Counting down from 10
//! 10
//! 9
//! …
//! 1
//! Done counting down
//! ```

/// `countdown(n)`, paused at one of its places.
enum Countdown {
    /// `countdown(n)` was called; nothing has run yet.
    Created(u32),
    /// Paused at `yield n`, with `n` already yielded.
    Yielded(u32),
    /// Returned: `StopIteration` from now on.
    Done,
}

impl Iterator for Countdown {
    type Item = u32;

    fn next(&mut self) -> Option<u32> {
        let n = match *self {
            Countdown::Created(n) => {
                println!("Counting down from {n}");
                n
            }
            // After the `yield`: `n -= 1`, back to the loop's test.
            Countdown::Yielded(n) => n - 1,
            Countdown::Done => return None,
        };
        if n > 0 {
            *self = Countdown::Yielded(n);
            return Some(n);
        }
        println!("Done counting down");
        *self = Countdown::Done;
        None
    }
}

fn countdown(n: u32) -> Countdown {
    Countdown::Created(n)
}

fn main() {
    fdio::let_sigpipe_end_the_program(); // `countdown | head -2` ends quietly
    for x in countdown(10) {
        println!("{x}");
    }
}
