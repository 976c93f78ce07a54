//! `coroutines repl`: the Python lesson's interpreter session as a small console. Each
//! command is one line of that session, and prints what the interpreter prints:
//!
//! | command                      | Python                                        |
//! |------------------------------|-----------------------------------------------|
//! | `new gen`                    | `g = gen()`                                   |
//! | `new average`                | `g = average()` (primed by `@coroutine`)      |
//! | `new delegator`              | `sg = subgen(); g = delegator(sg)` (primed)   |
//! | `send 5`, `send 'x'`, `send x` | `g.send(5)`, `g.send('x')`                  |
//! | `next`                       | `next(g)`                                     |
//! | `throw ValueError`           | `g.throw(ValueError)`                         |
//! | `close`                      | `g.close()`                                   |
//! | `state`                      | `inspect.getgeneratorstate(g)`                |
//!
//! A traceback is shortened to its last line (`StopIteration: 6.33`). Everything Python would
//! print goes to stdout; a command this console does not understand, or a line that is not
//! UTF-8, gets one `error:` line on stderr, and the session goes on. With stdin not a
//! terminal there is no prompt, so a script of commands can be piped in.
//!
//! If stdout fails, the session ends: quietly when its reader went away
//! (`coroutines repl < script | head -1`), with one error line and exit 1 on a full disk.

use std::io::{self, BufRead, IsTerminal, Write};

use crate::average::Average;
use crate::coroutine::{Coroutine, Error, Exception, State, Step};
use crate::delegation::{Delegator, Subgen};
use crate::one_message::Gen;
use crate::value::Value;

const HELP: &str = "\
commands (each is one line of the Python session):
  new gen|average|delegator   g = gen() / g = average() / g = delegator(subgen())
  send VALUE                  g.send(VALUE): 5, 4.5, None, 'text' or bare text
  next                        next(g), the same as g.send(None)
  throw NAME                  g.throw(NAME), e.g. throw StopIteration
  close                       g.close()
  state                       inspect.getgeneratorstate(g)
  help, quit                  (Ctrl+D quits too)";

/// Runs the console on stdin until EOF or `quit`.
pub fn run() -> io::Result<()> {
    match session(&mut io::stdout().lock()) {
        // The reader went away (`repl < script | head -1`): a normal way for the session to
        // end, as in lesson 5's `clock`. Only stdout fails so: reading stdin never does.
        Err(err) if fdio::reader_went_away(&err) => Ok(()),
        other => other,
    }
}

/// Reads commands, one a line, and prints to `out` what Python would. Every line goes out
/// with `writeln!(out, …)?`, not `println!`, which panics when stdout fails (a closed pipe,
/// a full disk): the error ends the session instead. A coroutine whose own `print` fails
/// raises `OSError`, which comes out here as its step's error; writing that line to the same
/// stdout fails too, and ends the session the same way.
fn session(out: &mut impl Write) -> io::Result<()> {
    let interactive = io::stdin().is_terminal();
    let mut current: Option<Current> = None;
    // Lines as bytes, not `lines()`, whose error for a line that is not UTF-8 would end the
    // session: such a line is one more bad line, refused on its own.
    let mut lines = io::stdin().lock().split(b'\n');
    let mut line_number: u64 = 0;
    loop {
        if interactive {
            write!(out, ">>> ")?;
            out.flush()?;
        }
        let Some(bytes) = lines.next().transpose()? else {
            return Ok(());
        };
        line_number += 1;
        let Ok(line) = str::from_utf8(&bytes) else {
            fdio::log!("error: line {line_number} is not valid UTF-8; skipped");
            continue;
        };
        let line = without_comment(line).trim();
        let (command, argument) = match line.split_once(char::is_whitespace) {
            Some((command, argument)) => (command, argument.trim()),
            None => (line, ""),
        };
        match (command, &mut current) {
            ("", _) => {}
            ("quit" | "exit", _) => return Ok(()),
            ("help", _) => writeln!(out, "{HELP}")?,
            ("new", _) => match Current::new(argument) {
                Ok(Some(coroutine)) => current = Some(coroutine),
                Ok(None) => fdio::log!("error: new what? new gen, new average or new delegator"),
                Err(error) => writeln!(out, "{error}")?,
            },
            ("send" | "next" | "throw" | "close" | "state", None) => {
                writeln!(out, "NameError: name 'g' is not defined")?;
            }
            ("send", Some(_)) if argument.is_empty() => {
                fdio::log!("error: send what? for example: send 5, send 'hello'");
            }
            ("send", Some(g)) => g.send(Value::parse(argument), out)?,
            ("next", Some(g)) => g.send(Value::None, out)?,
            ("throw", Some(g)) if is_identifier(argument) => {
                g.throw(Exception::new(argument), out)?;
            }
            ("throw", Some(_)) => fdio::log!("error: throw an exception by name: throw ValueError"),
            ("close", Some(g)) => g.close(out)?,
            ("state", Some(g)) => writeln!(out, "'{}'", g.state())?,
            (other, _) => fdio::log!("error: unknown command {other:?}; type help"),
        }
    }
}

/// The line without its `# comment`, as Python reads it: a `#` outside quotes starts one,
/// so the README's annotated session can be pasted as it is.
fn without_comment(line: &str) -> &str {
    let mut quote = None;
    for (at, c) in line.char_indices() {
        match (quote, c) {
            (None, '#') => return &line[..at],
            (None, '\'' | '"') => quote = Some(c),
            (Some(open), _) if c == open => quote = None,
            _ => {}
        }
    }
    line
}

/// The coroutine the session is driving: Python's `g`.
enum Current {
    Gen(Gen),
    Average(Average),
    Delegator(Delegator<Subgen>),
}

impl Current {
    /// `new gen|average|delegator`; `Ok(None)` for any other name.
    fn new(name: &str) -> Result<Option<Current>, Error> {
        Ok(Some(match name {
            "gen" => Current::Gen(Gen::new()),
            "average" => Current::Average(Average::new()?),
            "delegator" => Current::Delegator(Delegator::new(Subgen::new())?),
            _ => return Ok(None),
        }))
    }

    /// `g.send(value)` (and `next(g)`, which sends `None`), printing what Python prints.
    fn send(&mut self, value: Value, out: &mut impl Write) -> io::Result<()> {
        match self {
            Current::Gen(g) => show(out, g.resume(value.into_text())),
            Current::Delegator(g) => show(out, g.resume(value.into_text())),
            // average() adds what it gets: its resume takes Option<f64>, so where Python
            // raises TypeError inside the coroutine, here a string cannot even be sent.
            Current::Average(g) => match value {
                Value::None => show(out, g.resume(None)),
                Value::Int(x) => show(out, g.resume(Some(x as f64))),
                Value::Float(x) => show(out, g.resume(Some(x))),
                Value::Str(_) => {
                    fdio::log!(
                        "error: average() takes numbers (its resume takes Option<f64>; Python would raise TypeError inside it)"
                    );
                    Ok(())
                }
            },
        }
    }

    /// `g.throw(exception)`.
    fn throw(&mut self, exception: Exception, out: &mut impl Write) -> io::Result<()> {
        match self {
            Current::Gen(g) => show(out, g.throw(exception)),
            Current::Average(g) => show(out, g.throw(exception)),
            Current::Delegator(g) => show(out, g.throw(exception)),
        }
    }

    /// `g.close()`: silent, unless the coroutine refuses to close.
    fn close(&mut self, out: &mut impl Write) -> io::Result<()> {
        let closed = match self {
            Current::Gen(g) => g.close(),
            Current::Average(g) => g.close(),
            Current::Delegator(g) => g.close(),
        };
        if let Err(error) = closed {
            writeln!(out, "{error}")?;
        }
        Ok(())
    }

    fn state(&self) -> crate::coroutine::GeneratorState {
        match self {
            Current::Gen(g) => g.state(),
            Current::Average(g) => g.state(),
            Current::Delegator(g) => g.state(),
        }
    }
}

/// Prints a step as the interpreter would: a yielded value is echoed (unless it is `None`);
/// a return ends in `StopIteration`, with the value; an exception, as its traceback's last line.
fn show<Y: Into<Value>, R: Into<Value>>(out: &mut impl Write, step: Step<Y, R>) -> io::Result<()> {
    match step {
        Ok(State::Yielded(value)) => match value.into() {
            Value::None => Ok(()),
            value => writeln!(out, "{}", value.repr()),
        },
        Ok(State::Complete(value)) => match value.into() {
            Value::None => writeln!(out, "StopIteration"),
            value => writeln!(out, "StopIteration: {}", value.str()),
        },
        Err(error) => writeln!(out, "{error}"),
    }
}

fn is_identifier(name: &str) -> bool {
    name.chars()
        .next()
        .is_some_and(|c| c.is_alphabetic() || c == '_')
        && name.chars().all(|c| c.is_alphanumeric() || c == '_')
}
