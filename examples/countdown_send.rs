//! The countdown that listens: `newvalue = (yield n)` makes a generator a coroutine, which
//! can be sent a new value half-way. Built on lesson 4's `Coroutine` trait.
//!
//! ```python
//! def countdown(n):
//!     print("Counting down from", n)
//!     while n >= 0:
//!         newvalue = (yield n)
//!         if newvalue is not None:    # a value was sent in: start again from it
//!             n = newvalue
//!         else:                       # plain next(): go on
//!             n -= 1
//!
//! c = countdown(5)
//! for n in c:
//!     print(n)
//!     if n == 5:
//!         c.send(3)
//! ```
//!
//! It prints 5, 2, 1, 0 — not 5, 3, 2, 1, 0. `c.send(3)` resumes the coroutine too: it
//! yields 3 *as the value of `send`*, which the loop ignores; the loop's next `next()` gets
//! 2. Beazley calls mixing iteration and `send` like this a bogus idea: one object with two
//! callers. In Rust it shows: a `for` loop would hold `c` for the whole loop, so the loop
//! must resume it by hand, `resume(None)` being Python's `next()`.
//!
//! ```text
//! $ cargo run -q --example countdown_send
//! Counting down from 5
//! 5
//! 2
//! 1
//! 0
//! ```

use std::mem;

use lesson_coroutines::{Coroutine, Error, Exception, GeneratorState, State, Step};

/// `countdown(n)`, paused at one of its places.
enum Countdown {
    /// `countdown(n)` was called; nothing has run yet.
    Created(i64),
    /// Paused at `newvalue = (yield n)`.
    Yielded(i64),
    /// Returned: the loop ended.
    Closed,
}

impl Coroutine<Option<i64>> for Countdown {
    type Yield = i64;
    type Return = ();

    fn resume(&mut self, newvalue: Option<i64>) -> Step<i64, ()> {
        let n = match mem::replace(self, Countdown::Closed) {
            Countdown::Created(n) if newvalue.is_some() => {
                *self = Countdown::Created(n);
                return Err(Error::NotStarted);
            }
            Countdown::Created(n) => {
                println!("Counting down from {n}");
                n
            }
            Countdown::Yielded(n) => newvalue.unwrap_or(n - 1),
            Countdown::Closed => return Err(Error::Closed),
        };
        if n >= 0 {
            *self = Countdown::Yielded(n);
            return Ok(State::Yielded(n));
        }
        Ok(State::Complete(()))
    }

    fn throw(&mut self, exception: Exception) -> Step<i64, ()> {
        match mem::replace(self, Countdown::Closed) {
            Countdown::Closed => Err(Error::Raised(exception)),
            _ => Err(Error::raised(exception)),
        }
    }

    fn state(&self) -> GeneratorState {
        match self {
            Countdown::Created(_) => GeneratorState::Created,
            Countdown::Yielded(_) => GeneratorState::Suspended,
            Countdown::Closed => GeneratorState::Closed,
        }
    }
}

fn main() -> Result<(), Error> {
    fdio::let_sigpipe_end_the_program(); // `countdown_send | head -2` ends quietly
    let mut c = Countdown::Created(5);
    // `for n in c:` is `next(c)` until StopIteration: `resume(None)` until `Complete`.
    while let State::Yielded(n) = c.resume(None)? {
        println!("{n}");
        if n == 5 {
            c.resume(Some(3))?; // c.send(3): yields 3, which nobody prints
        }
    }
    Ok(())
}
