//! `gen()`: the first coroutine of the Python lesson (`5_coroutines/coroutines.py`). It
//! yields once, receives one message, prints it and ends.
//!
//! (The module is not called `gen`: Rust 2024 reserves that word for `gen` blocks, which
//! will one day write iterators the way Python writes generators.)

use std::mem;

use crate::coroutine::{Coroutine, Error, Exception, GeneratorState, State, Step, print};

/// What `gen()` yields when it starts.
pub const READY: &str = "Ready to accept message.";

/// `gen()`, one variant per place it can be:
///
/// ```python
/// def gen():
///     x = 'Ready to accept message.'
///     message = yield x                 # Created → AwaitingMessage
///     print('Gen received:', message)   # AwaitingMessage → Closed (returns None)
/// ```
#[derive(Debug, Default)]
pub enum Gen {
    /// `g = gen()`: nothing has run yet.
    #[default]
    Created,
    /// Paused at `message = yield x`.
    AwaitingMessage,
    /// Returned, or an exception went through it.
    Closed,
}

impl Gen {
    /// `gen()`: a new, unstarted coroutine.
    pub fn new() -> Gen {
        Gen::Created
    }
}

impl Coroutine<Option<String>> for Gen {
    type Yield = &'static str;
    type Return = ();

    fn resume(&mut self, sent: Option<String>) -> Step<&'static str, ()> {
        // Take the state out, leaving `Closed`: each path puts back where it paused, and a
        // path that does not (an exception, the end) leaves it closed, as in Python.
        match mem::replace(self, Gen::Closed) {
            Gen::Created if sent.is_some() => {
                *self = Gen::Created;
                Err(Error::NotStarted)
            }
            Gen::Created => {
                *self = Gen::AwaitingMessage;
                Ok(State::Yielded(READY))
            }
            Gen::AwaitingMessage => {
                // `print` shows a None as `None`.
                let message = sent.as_deref().unwrap_or("None");
                print(format_args!("Gen received: {message}"))?;
                Ok(State::Complete(()))
            }
            Gen::Closed => Err(Error::Closed),
        }
    }

    fn throw(&mut self, exception: Exception) -> Step<&'static str, ()> {
        match mem::replace(self, Gen::Closed) {
            // gen() catches nothing: whatever is thrown in escapes and closes it.
            Gen::Created | Gen::AwaitingMessage => Err(Error::raised(exception)),
            Gen::Closed => Err(Error::Raised(exception)),
        }
    }

    fn state(&self) -> GeneratorState {
        match self {
            Gen::Created => GeneratorState::Created,
            Gen::AwaitingMessage => GeneratorState::Suspended,
            Gen::Closed => GeneratorState::Closed,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// GEN_CREATED → (send None) → GEN_SUSPENDED with the ready message → (send a message)
    /// → complete and GEN_CLOSED, as in the Python session.
    #[test]
    fn goes_created_suspended_closed() {
        let mut g = Gen::new();
        assert_eq!(g.state(), GeneratorState::Created);
        assert_eq!(g.resume(None), Ok(State::Yielded(READY)));
        assert_eq!(g.state(), GeneratorState::Suspended);
        assert_eq!(g.resume(Some("example".into())), Ok(State::Complete(())));
        assert_eq!(g.state(), GeneratorState::Closed);
    }

    /// Resuming a closed coroutine is an error value (Python: StopIteration), not a panic.
    #[test]
    fn resuming_a_closed_coroutine_is_an_error() {
        let mut g = Gen::new();
        g.resume(None).unwrap();
        g.resume(None).unwrap();
        assert_eq!(g.resume(None), Err(Error::Closed));
        assert_eq!(g.resume(Some("again".into())), Err(Error::Closed));
        assert_eq!(Error::Closed.to_string(), "StopIteration");
    }

    /// A message sent before the first `yield` is refused, and the coroutine stays created.
    #[test]
    fn a_message_before_the_start_is_refused() {
        let mut g = Gen::new();
        assert_eq!(g.resume(Some("too early".into())), Err(Error::NotStarted));
        assert_eq!(g.state(), GeneratorState::Created);
    }

    /// An exception thrown in escapes and closes it; a StopIteration escaping becomes a
    /// RuntimeError (PEP 479); closing is quiet.
    #[test]
    fn exceptions_escape_and_close_it() {
        let mut g = Gen::new();
        g.resume(None).unwrap();
        let err = g.throw(Exception::new("ValueError")).unwrap_err();
        assert_eq!(err.to_string(), "ValueError");
        assert_eq!(g.state(), GeneratorState::Closed);

        let mut g = Gen::new();
        g.resume(None).unwrap();
        let err = g.throw(Exception::new("StopIteration")).unwrap_err();
        assert_eq!(
            err.to_string(),
            "RuntimeError: generator raised StopIteration"
        );

        let mut g = Gen::new();
        g.resume(None).unwrap();
        assert_eq!(g.close(), Ok(()));
        assert_eq!(g.state(), GeneratorState::Closed);
        assert_eq!(g.close(), Ok(()), "closing twice is fine, as in Python");
    }
}
