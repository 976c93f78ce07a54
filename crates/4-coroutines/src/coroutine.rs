//! The coroutine protocol: Python's generator methods as a Rust trait, on stable Rust.
//!
//! Nightly Rust has `std::ops::Coroutine`, written by the compiler from `yield` inside a
//! closure. Here we write the same thing by hand: each coroutine is an enum of the places it
//! can pause at, and `resume` runs it from one pause to the next.
//!
//! | Python                              | here                                          |
//! |-------------------------------------|-----------------------------------------------|
//! | `next(g)`, `g.send(None)`           | `g.resume(None)`                              |
//! | `g.send(value)`                     | `g.resume(Some(value))`                       |
//! | `yield x` hands `x` to the caller   | `Ok(State::Yielded(x))`                       |
//! | `return v`: `StopIteration(v)`      | `Ok(State::Complete(v))`                      |
//! | `g.throw(ValueError)`               | `g.throw(Exception::new("ValueError"))`       |
//! | `g.close()`                         | `g.close()`                                   |
//! | `inspect.getgeneratorstate(g)`      | `g.state()`                                   |
//! | an exception escapes the generator  | `Err(Error::Raised(exception))`, now closed   |
//! | `print(…)` in its body              | `print(…)?`: a failed write raises `OSError`  |
//!
//! Coroutines that take Python's `None` take an `Option`; the scheduler's tasks, which are
//! only ever told "go on", take `()`.

use std::fmt;
use std::io::{self, Write};

/// What one `resume` or `throw` did: the coroutine paused at a `yield`, or it finished.
/// (Nightly's `CoroutineState`.)
#[derive(Debug, Clone, PartialEq)]
pub enum State<Y, R> {
    /// Paused at `yield value`; resume it to go on.
    Yielded(Y),
    /// Ran to its end and returned this value (Python: `StopIteration(value)`).
    Complete(R),
}

/// The result of one step of a coroutine.
pub type Step<Y, R> = Result<State<Y, R>, Error>;

/// Python's `inspect.getgeneratorstate`.
///
/// Python has a fourth state, `GEN_RUNNING`, seen only by code that looks at a generator
/// while it runs — itself, or something it calls (resuming it then raises `ValueError:
/// generator already executing`). Here `resume` takes `&mut self`: while a coroutine runs,
/// nothing else can even look at it, and resuming it from inside does not compile.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GeneratorState {
    /// Created, not started: nothing of its body has run yet.
    Created,
    /// Paused at a `yield`, waiting to be resumed.
    Suspended,
    /// Finished: it returned, an exception went through it, or it was closed.
    Closed,
}

impl fmt::Display for GeneratorState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            GeneratorState::Created => "GEN_CREATED",
            GeneratorState::Suspended => "GEN_SUSPENDED",
            GeneratorState::Closed => "GEN_CLOSED",
        })
    }
}

/// A Python exception, as much of it as the lessons need: a class name and a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exception {
    name: String,
    message: Option<String>,
}

/// What `close()` throws in. A coroutine should let it pass (or return); never yield after it.
pub const GENERATOR_EXIT: &str = "GeneratorExit";
/// The "stop" signal the Python lesson throws into `average()`.
pub const STOP_ITERATION: &str = "StopIteration";

impl Exception {
    /// An exception of class `name`, without a message: `throw(ValueError)`.
    pub fn new(name: impl Into<String>) -> Exception {
        Exception {
            name: name.into(),
            message: None,
        }
    }

    /// An exception with a message: `TypeError: can't …`.
    pub fn with_message(name: impl Into<String>, message: impl Into<String>) -> Exception {
        Exception {
            name: name.into(),
            message: Some(message.into()),
        }
    }

    /// The class name, as `type(e).__name__` gives it.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether this is an exception of class `name`.
    pub fn is(&self, name: &str) -> bool {
        self.name == name
    }
}

/// An OS error becomes Python's `OSError`, with the system's message.
impl From<io::Error> for Exception {
    fn from(err: io::Error) -> Exception {
        Exception::with_message("OSError", err.to_string())
    }
}

/// The last line of a Python traceback: `ValueError` or `TypeError: can't …`.
impl fmt::Display for Exception {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.message {
            None => f.write_str(&self.name),
            Some(message) => write!(f, "{}: {message}", self.name),
        }
    }
}

/// Why a `resume` or `throw` did not give a [`State`]. Displayed as the last line of the
/// traceback Python would print.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    /// The coroutine had already finished. Python: `StopIteration`. An error value, never a
    /// panic: a scheduler can drop the task and go on.
    Closed,
    /// A value other than `None` was sent to a coroutine that has not started: there is no
    /// `yield` yet to receive it. The coroutine is left as it was (still created).
    NotStarted,
    /// An exception escaped the coroutine — one thrown in that it did not catch, or its own.
    /// Like a Python generator, the coroutine is closed from then on.
    Raised(Exception),
}

impl Error {
    /// `exception` escapes a coroutine's body. PEP 479: a `StopIteration` escaping a
    /// generator would look like a normal end to whoever iterates it, so Python turns it
    /// into a `RuntimeError`.
    pub fn raised(exception: Exception) -> Error {
        if exception.is(STOP_ITERATION) {
            return Error::Raised(Exception::with_message(
                "RuntimeError",
                "generator raised StopIteration",
            ));
        }
        Error::Raised(exception)
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Closed => f.write_str(STOP_ITERATION),
            Error::NotStarted => {
                f.write_str("TypeError: can't send non-None value to a just-started generator")
            }
            Error::Raised(exception) => exception.fmt(f),
        }
    }
}

impl std::error::Error for Error {}

/// A coroutine: something that can be resumed with a value of type `R`, pauses by yielding
/// a `Yield`, and finally completes with a `Return` — Python's generator protocol.
pub trait Coroutine<R = ()> {
    /// What each `yield` hands to the caller.
    type Yield;
    /// What the coroutine returns when it finishes.
    type Return;

    /// Runs the coroutine until its next `yield` or its end; `sent` becomes the value of
    /// the `yield` it was paused at. Python: `g.send(sent)`.
    fn resume(&mut self, sent: R) -> Step<Self::Yield, Self::Return>;

    /// Raises `exception` at the `yield` the coroutine is paused at. It may catch it and
    /// yield or return; if it does not, the exception comes back as `Err(Error::Raised)`.
    /// Thrown into a coroutine that has not started, it escapes at once; thrown into a
    /// closed one, it comes straight back. Python: `g.throw(exception)`.
    fn throw(&mut self, exception: Exception) -> Step<Self::Yield, Self::Return>;

    /// Where the coroutine is: created, suspended or closed.
    fn state(&self) -> GeneratorState;

    /// Finishes the coroutine early: throws `GeneratorExit` in, which it should let pass.
    /// Python: `g.close()`.
    fn close(&mut self) -> Result<(), Error> {
        match self.throw(Exception::new(GENERATOR_EXIT)) {
            Ok(State::Complete(_)) => Ok(()),
            Err(Error::Raised(exception)) if exception.is(GENERATOR_EXIT) => Ok(()),
            Ok(State::Yielded(_)) => Err(Error::Raised(Exception::with_message(
                "RuntimeError",
                "generator ignored GeneratorExit",
            ))),
            Err(error) => Err(error),
        }
    }
}

/// Python's `@coroutine` decorator: runs a new coroutine to its first `yield` (`next(g)`),
/// so it is ready to receive values. The value yielded there is thrown away, as in Python.
pub fn prime<T, C: Coroutine<Option<T>>>(mut coroutine: C) -> Result<C, Error> {
    match coroutine.resume(None)? {
        State::Yielded(_) => Ok(coroutine),
        // It finished before its first yield: Python's `g.send(None)` raises StopIteration.
        State::Complete(_) => Err(Error::Closed),
    }
}

/// Python's `print`, for a coroutine's body: writes `line` and a newline to stdout.
///
/// `println!` would panic when stdout fails (its reader went away, the disk is full). Here,
/// as in Python, the failed `print` raises `OSError` inside the coroutine, and since our
/// coroutines do not catch it, it escapes with `?`: the coroutine is closed, and its caller
/// gets `Err(Error::Raised(OSError: …))` to deal with.
pub fn print(line: impl fmt::Display) -> Result<(), Error> {
    writeln!(io::stdout(), "{line}").map_err(|err| Error::raised(err.into()))
}
