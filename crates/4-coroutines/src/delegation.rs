//! `subgen()` and `delegator(g)`, from the Python lesson (`5_coroutines/delegation.py`): the
//! caller talks to `delegator`, which passes everything on to `subgen` with `yield from`,
//! and prints what `subgen` returns.

use std::fmt::Display;
use std::mem;

use crate::coroutine::{
    Coroutine, Error, Exception, GENERATOR_EXIT, GeneratorState, State, Step, prime, print,
};
use crate::delegate::Delegate;

/// `subgen()`, one variant per place it can be:
///
/// ```python
/// def subgen():
///     while True:
///         try:
///             message = yield               # AwaitingMessage
///         except Exception as e:            # anything thrown in but GeneratorExit
///             return f'{type(e).__name__} raised.'
///         else:
///             print('..........', message)
/// ```
#[derive(Debug, Default)]
pub enum Subgen {
    /// `sg = subgen()`: nothing has run yet.
    #[default]
    Created,
    /// Paused at `message = yield`.
    AwaitingMessage,
    /// Returned, or an exception went through it.
    Closed,
}

impl Subgen {
    /// `subgen()`: a new, unstarted coroutine.
    pub fn new() -> Subgen {
        Subgen::Created
    }
}

impl Coroutine<Option<String>> for Subgen {
    /// A bare `yield` yields `None`.
    type Yield = ();
    /// `'<ExceptionName> raised.'`
    type Return = String;

    fn resume(&mut self, sent: Option<String>) -> Step<(), String> {
        match mem::replace(self, Subgen::Closed) {
            Subgen::Created if sent.is_some() => {
                *self = Subgen::Created;
                Err(Error::NotStarted)
            }
            Subgen::Created => {
                *self = Subgen::AwaitingMessage;
                Ok(State::Yielded(()))
            }
            Subgen::AwaitingMessage => {
                let message = sent.as_deref().unwrap_or("None");
                print(format_args!(".......... {message}"))?;
                *self = Subgen::AwaitingMessage;
                Ok(State::Yielded(()))
            }
            Subgen::Closed => Err(Error::Closed),
        }
    }

    fn throw(&mut self, exception: Exception) -> Step<(), String> {
        match mem::replace(self, Subgen::Closed) {
            // GeneratorExit is a BaseException, not an Exception: `close()` gets through.
            Subgen::AwaitingMessage if !exception.is(GENERATOR_EXIT) => {
                Ok(State::Complete(format!("{} raised.", exception.name())))
            }
            Subgen::Created | Subgen::AwaitingMessage => Err(Error::raised(exception)),
            Subgen::Closed => Err(Error::Raised(exception)),
        }
    }

    fn state(&self) -> GeneratorState {
        match self {
            Subgen::Created => GeneratorState::Created,
            Subgen::AwaitingMessage => GeneratorState::Suspended,
            Subgen::Closed => GeneratorState::Closed,
        }
    }
}

/// `delegator(g)`, one variant per place it can be:
///
/// ```python
/// @coroutine                              # primes it: runs it into the `yield from`
/// def delegator(g):
///     res = yield from g                  # Delegating: sends and throws go to g
///     print('res: ', res)                 # then it ends, returning None
/// ```
#[derive(Debug)]
pub enum Delegator<C> {
    /// Not started: what the undecorated function returns, before `@coroutine` primes it.
    Created(C),
    /// Inside `res = yield from g`.
    Delegating(Delegate<C>),
    /// Returned, or an exception went through it.
    Closed,
}

impl<C> Delegator<C> {
    /// `delegator(g)`: created and primed, so `g` has started too and both are paused.
    pub fn new<T>(inner: C) -> Result<Delegator<C>, Error>
    where
        C: Coroutine<Option<T>>,
        C::Return: Display,
    {
        prime(Delegator::Created(inner))
    }

    /// What the delegator does after each step of `g`: while `g` yields, pass the value up
    /// and stay in the `yield from`; when `g` returns, `res` is its return value, printed.
    /// An exception out of `g` is not caught here either: `?` lets it escape.
    fn after<Y, R: Display>(&mut self, delegate: Delegate<C>, step: Step<Y, R>) -> Step<Y, ()> {
        match step? {
            State::Yielded(value) => {
                *self = Delegator::Delegating(delegate);
                Ok(State::Yielded(value))
            }
            State::Complete(res) => {
                print(format_args!("res:  {res}"))?;
                Ok(State::Complete(()))
            }
        }
    }
}

impl<T, C> Coroutine<Option<T>> for Delegator<C>
where
    C: Coroutine<Option<T>>,
    C::Return: Display,
{
    type Yield = C::Yield;
    type Return = ();

    fn resume(&mut self, sent: Option<T>) -> Step<C::Yield, ()> {
        match mem::replace(self, Delegator::Closed) {
            Delegator::Created(inner) if sent.is_some() => {
                *self = Delegator::Created(inner);
                Err(Error::NotStarted)
            }
            // Reaching `yield from g` starts g at once: `next(g)`.
            Delegator::Created(inner) => {
                let mut delegate = Delegate::new(inner);
                let step = delegate.resume(None);
                self.after(delegate, step)
            }
            Delegator::Delegating(mut delegate) => {
                let step = delegate.resume(sent);
                self.after(delegate, step)
            }
            Delegator::Closed => Err(Error::Closed),
        }
    }

    fn throw(&mut self, exception: Exception) -> Step<C::Yield, ()> {
        match mem::replace(self, Delegator::Closed) {
            Delegator::Delegating(mut delegate) => {
                let step = delegate.throw(exception);
                self.after(delegate, step)
            }
            Delegator::Created(_) => Err(Error::raised(exception)),
            Delegator::Closed => Err(Error::Raised(exception)),
        }
    }

    fn state(&self) -> GeneratorState {
        match self {
            Delegator::Created(_) => GeneratorState::Created,
            Delegator::Delegating(_) => GeneratorState::Suspended,
            Delegator::Closed => GeneratorState::Closed,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Through a `Delegate`, sends reach `subgen`, and an exception thrown in comes back as
    /// its return value, `'<Name> raised.'`.
    #[test]
    fn delegate_hands_back_what_subgen_returns() {
        let mut delegate = Delegate::new(Subgen::new());
        assert_eq!(delegate.resume(None), Ok(State::Yielded(())));
        assert_eq!(delegate.resume(Some("ok".into())), Ok(State::Yielded(())));
        assert_eq!(delegate.state(), GeneratorState::Suspended);
        assert_eq!(
            delegate.throw(Exception::new("BlaBlaException")),
            Ok(State::Complete("BlaBlaException raised.".to_string()))
        );
        assert_eq!(delegate.inner().state(), GeneratorState::Closed);
    }

    /// The primed delegator is suspended inside `yield from`; a send keeps it there; a
    /// throw makes `subgen` return, and the delegator finishes after printing it.
    #[test]
    fn delegator_forwards_until_subgen_returns() {
        let mut g = Delegator::new(Subgen::new()).unwrap();
        assert_eq!(g.state(), GeneratorState::Suspended);
        let Delegator::Delegating(delegate) = &g else {
            panic!("a primed delegator is inside its yield from: {g:?}");
        };
        assert_eq!(delegate.inner().state(), GeneratorState::Suspended);
        assert_eq!(g.resume(Some("ok".into())), Ok(State::Yielded(())));
        assert_eq!(
            g.throw(Exception::new("BlaBlaException")),
            Ok(State::Complete(()))
        );
        assert_eq!(g.state(), GeneratorState::Closed);
        assert_eq!(g.resume(None), Err(Error::Closed));
    }

    /// `close()` on the delegator closes `subgen` (GeneratorExit is not caught by its
    /// `except Exception`) and ends quietly.
    #[test]
    fn close_goes_through_both() {
        let mut g = Delegator::new(Subgen::new()).unwrap();
        assert_eq!(g.close(), Ok(()));
        assert_eq!(g.state(), GeneratorState::Closed);
        let mut sg = Subgen::new();
        sg.resume(None).unwrap();
        assert_eq!(sg.close(), Ok(()));
        assert_eq!(sg.state(), GeneratorState::Closed);
    }
}
