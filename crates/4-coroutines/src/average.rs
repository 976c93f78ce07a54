//! `average()`: a running mean, from the Python lesson (`5_coroutines/coroutines.py`). Each
//! number sent in comes back as the mean so far; throwing `StopIteration` in says "done",
//! and it returns the last mean.

use std::mem;

use crate::coroutine::{
    Coroutine, Error, Exception, GeneratorState, STOP_ITERATION, State, Step, prime, print,
};

/// `average()`, one variant per place it can be:
///
/// ```python
/// @coroutine                              # primes it: runs it to the first yield
/// def average():
///     count = 0
///     summ = 0
///     average = None
///     while True:
///         try:
///             x = yield average           # Averaging: paused here, with the totals
///         except StopIteration:
///             print('Done!')
///             break
///         else:
///             count += 1
///             summ += x
///             average = round(summ / count, 2)
///     return average
/// ```
#[derive(Debug, Default)]
pub enum Average {
    /// Not started: what the undecorated function returns, before `@coroutine` primes it.
    #[default]
    Created,
    /// Paused at `x = yield average`.
    Averaging {
        count: u32,
        sum: f64,
        average: Option<f64>,
    },
    /// Returned, or an exception went through it.
    Closed,
}

impl Average {
    /// `average()`: created and primed by the `@coroutine` decorator, so it is paused at
    /// its first `yield`, ready for numbers.
    pub fn new() -> Result<Average, Error> {
        prime(Average::Created)
    }
}

impl Coroutine<Option<f64>> for Average {
    /// The mean so far; `None` before the first number.
    type Yield = Option<f64>;
    /// The last mean, when `StopIteration` is thrown in.
    type Return = Option<f64>;

    fn resume(&mut self, sent: Option<f64>) -> Step<Option<f64>, Option<f64>> {
        match mem::replace(self, Average::Closed) {
            Average::Created if sent.is_some() => {
                *self = Average::Created;
                Err(Error::NotStarted)
            }
            Average::Created => {
                *self = Average::Averaging {
                    count: 0,
                    sum: 0.0,
                    average: None,
                };
                Ok(State::Yielded(None))
            }
            Average::Averaging { count, sum, .. } => {
                // `summ += None` raises in Python, and the exception closes the coroutine.
                let Some(x) = sent else {
                    return Err(Error::raised(Exception::with_message(
                        "TypeError",
                        "unsupported operand type(s) for +=: 'int' and 'NoneType'",
                    )));
                };
                let (count, sum) = (count + 1, sum + x);
                let average = Some(round2(sum / f64::from(count)));
                *self = Average::Averaging {
                    count,
                    sum,
                    average,
                };
                Ok(State::Yielded(average))
            }
            Average::Closed => Err(Error::Closed),
        }
    }

    fn throw(&mut self, exception: Exception) -> Step<Option<f64>, Option<f64>> {
        match mem::replace(self, Average::Closed) {
            // `except StopIteration: print('Done!'); break` … `return average`
            Average::Averaging { average, .. } if exception.is(STOP_ITERATION) => {
                print("Done!")?;
                Ok(State::Complete(average))
            }
            Average::Created | Average::Averaging { .. } => Err(Error::raised(exception)),
            Average::Closed => Err(Error::Raised(exception)),
        }
    }

    fn state(&self) -> GeneratorState {
        match self {
            Average::Created => GeneratorState::Created,
            Average::Averaging { .. } => GeneratorState::Suspended,
            Average::Closed => GeneratorState::Closed,
        }
    }
}

/// Python's `round(x, 2)`. Formatting with two decimals rounds the exact binary value
/// correctly, as Python's `round` does: `round(2.675, 2)` is 2.67, because 2.675 is
/// really 2.67499999…
fn round2(x: f64) -> f64 {
    format!("{x:.2}").parse().unwrap_or(x)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Sending 5, 10, 4 gives back 5.0, 7.5, 6.33 (rounded to two places).
    #[test]
    fn running_mean_rounded_to_two_places() {
        let mut avg = Average::new().unwrap();
        assert_eq!(avg.state(), GeneratorState::Suspended);
        assert_eq!(avg.resume(Some(5.0)), Ok(State::Yielded(Some(5.0))));
        assert_eq!(avg.resume(Some(10.0)), Ok(State::Yielded(Some(7.5))));
        assert_eq!(avg.resume(Some(4.0)), Ok(State::Yielded(Some(6.33))));
    }

    /// Throwing StopIteration in ends it with the last mean; afterwards it is closed.
    #[test]
    fn stop_iteration_returns_the_last_mean() {
        let mut avg = Average::new().unwrap();
        for x in [5.0, 10.0, 4.0] {
            avg.resume(Some(x)).unwrap();
        }
        assert_eq!(
            avg.throw(Exception::new(STOP_ITERATION)),
            Ok(State::Complete(Some(6.33)))
        );
        assert_eq!(avg.state(), GeneratorState::Closed);
        assert_eq!(avg.resume(Some(1.0)), Err(Error::Closed));
    }

    /// Any other exception is not caught: it escapes, and the coroutine is closed.
    #[test]
    fn other_exceptions_escape() {
        let mut avg = Average::new().unwrap();
        let err = avg.throw(Exception::new("ValueError")).unwrap_err();
        assert_eq!(err, Error::Raised(Exception::new("ValueError")));
        assert_eq!(avg.state(), GeneratorState::Closed);
    }

    /// `next(avg)` sends None, which `summ += x` cannot add: a TypeError closes it.
    #[test]
    fn none_is_a_type_error() {
        let mut avg = Average::new().unwrap();
        let err = avg.resume(None).unwrap_err();
        assert!(err.to_string().starts_with("TypeError: "), "{err}");
        assert_eq!(avg.state(), GeneratorState::Closed);
    }

    /// Rounding agrees with Python's `round(x, 2)`, including the binary surprises.
    #[test]
    fn rounds_like_python() {
        assert_eq!(round2(19.0 / 3.0), 6.33);
        assert_eq!(round2(2.675), 2.67);
        assert_eq!(round2(0.125), 0.12);
        assert_eq!(round2(7.5), 7.5);
    }
}
