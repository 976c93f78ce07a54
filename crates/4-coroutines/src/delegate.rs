//! `yield from`: delegation to an inner coroutine.
//!
//! `res = yield from inner` hands the caller everything `inner` yields, hands `inner`
//! everything the caller sends or throws, and when `inner` returns, its return value
//! becomes `res`. PEP 380 spells it out; simplified, with what each line becomes here:
//!
//! ```python
//! _y = next(_i)                     # the first resume is forwarded like any other
//! while True:
//!     try:
//!         _s = yield _y             # Yielded(y) from the inner one goes up unchanged
//!     except GeneratorExit:
//!         _i.close()                # close(): close the inner one, then let it pass
//!         raise
//!     except BaseException as _e:
//!         _y = _i.throw(_e)         # throw(e) → inner.throw(e)
//!     else:
//!         _y = _i.send(_s)          # resume(s) → inner.resume(s)
//! # _i raised StopIteration(v):     # Complete(v) from the inner one goes up unchanged,
//! res = v                           # and the outer coroutine takes v from there
//! ```
//!
//! So a `Delegate` is a coroutine that forwards everything. What makes it worth a type is
//! where it sits: the outer coroutine's state enum holds a `Delegate` in the variant where
//! Python has `yield from`, and reads the inner return value out of `Complete`.

use crate::coroutine::{Coroutine, Error, Exception, GENERATOR_EXIT, GeneratorState, Step};

/// `yield from inner`: forwards every resume and throw to `inner`, passes up what it
/// yields, and completes with its return value.
#[derive(Debug)]
pub struct Delegate<C> {
    inner: C,
}

impl<C> Delegate<C> {
    /// Delegates to `inner`. Nothing runs until the first `resume` (Python's `next(_i)`),
    /// which the outer coroutine makes as soon as it reaches its `yield from`.
    pub fn new(inner: C) -> Delegate<C> {
        Delegate { inner }
    }

    /// The inner coroutine, to look at (its state, say).
    pub fn inner(&self) -> &C {
        &self.inner
    }

    /// Resumes with `sent` — or, if the outer coroutine was itself thrown an exception,
    /// throws that in instead. For an outer coroutine whose `resume` and `throw` share code.
    pub fn step<R>(&mut self, sent: R, thrown: Option<Exception>) -> Step<C::Yield, C::Return>
    where
        C: Coroutine<R>,
    {
        match thrown {
            None => self.resume(sent),
            Some(exception) => self.throw(exception),
        }
    }
}

impl<R, C: Coroutine<R>> Coroutine<R> for Delegate<C> {
    type Yield = C::Yield;
    type Return = C::Return;

    /// `_y = _i.send(_s)`: what the caller sends goes to the inner coroutine, and what
    /// comes back — a yielded value, the return value, an exception — goes to the caller.
    /// (Delegating to a coroutine that has already finished gives `Err(Error::Closed)`;
    /// Python would hand back `None`.)
    fn resume(&mut self, sent: R) -> Step<C::Yield, C::Return> {
        self.inner.resume(sent)
    }

    /// `_i.throw(_e)`, except for `GeneratorExit`: closing the outer coroutine closes the
    /// inner one first, then the `GeneratorExit` goes on up.
    fn throw(&mut self, exception: Exception) -> Step<C::Yield, C::Return> {
        if exception.is(GENERATOR_EXIT) {
            self.inner.close()?;
            return Err(Error::Raised(exception));
        }
        self.inner.throw(exception)
    }

    /// The outer coroutine is paused exactly where the inner one is.
    fn state(&self) -> GeneratorState {
        self.inner.state()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::coroutine::State;

    /// `def inner(): total = 0; while True: x = yield total; if x is None: return total;
    /// total += x` — catches `ValueError` and returns -1 for it.
    #[derive(Debug)]
    enum Adder {
        Created,
        Adding(i32),
        Closed,
    }

    impl Coroutine<Option<i32>> for Adder {
        type Yield = i32;
        type Return = i32;

        fn resume(&mut self, sent: Option<i32>) -> Step<i32, i32> {
            match (std::mem::replace(self, Adder::Closed), sent) {
                (Adder::Created, _) => {
                    *self = Adder::Adding(0);
                    Ok(State::Yielded(0))
                }
                (Adder::Adding(total), Some(x)) => {
                    *self = Adder::Adding(total + x);
                    Ok(State::Yielded(total + x))
                }
                (Adder::Adding(total), None) => Ok(State::Complete(total)),
                (Adder::Closed, _) => Err(Error::Closed),
            }
        }

        fn throw(&mut self, exception: Exception) -> Step<i32, i32> {
            match std::mem::replace(self, Adder::Closed) {
                Adder::Adding(_) if exception.is("ValueError") => Ok(State::Complete(-1)),
                _ => Err(Error::raised(exception)),
            }
        }

        fn state(&self) -> GeneratorState {
            match self {
                Adder::Created => GeneratorState::Created,
                Adder::Adding(_) => GeneratorState::Suspended,
                Adder::Closed => GeneratorState::Closed,
            }
        }
    }

    /// Sends go through to the inner coroutine, its yields come back out, and its return
    /// value is what the delegate completes with.
    #[test]
    fn forwards_sends_and_returns_the_inner_value() {
        let mut delegate = Delegate::new(Adder::Created);
        assert_eq!(delegate.state(), GeneratorState::Created);
        assert_eq!(delegate.resume(None), Ok(State::Yielded(0)));
        assert_eq!(delegate.resume(Some(2)), Ok(State::Yielded(2)));
        assert_eq!(delegate.resume(Some(40)), Ok(State::Yielded(42)));
        assert_eq!(delegate.state(), GeneratorState::Suspended);
        assert_eq!(delegate.resume(None), Ok(State::Complete(42)));
        assert_eq!(delegate.state(), GeneratorState::Closed);
        assert_eq!(delegate.resume(Some(1)), Err(Error::Closed));
    }

    /// A throw reaches the inner coroutine: one it catches becomes its return value; one it
    /// does not comes back out as the error, and both are closed.
    #[test]
    fn forwards_throws() {
        let mut caught = Delegate::new(Adder::Created);
        caught.resume(None).unwrap();
        assert_eq!(
            caught.throw(Exception::new("ValueError")),
            Ok(State::Complete(-1))
        );

        let mut uncaught = Delegate::new(Adder::Created);
        uncaught.resume(None).unwrap();
        let err = uncaught.throw(Exception::new("KeyError")).unwrap_err();
        assert_eq!(err, Error::Raised(Exception::new("KeyError")));
        assert_eq!(uncaught.inner().state(), GeneratorState::Closed);
    }

    /// Closing the delegate closes the inner coroutine too.
    #[test]
    fn close_reaches_the_inner_coroutine() {
        let mut delegate = Delegate::new(Adder::Created);
        delegate.resume(None).unwrap();
        assert_eq!(delegate.close(), Ok(()));
        assert_eq!(delegate.inner().state(), GeneratorState::Closed);
    }
}
