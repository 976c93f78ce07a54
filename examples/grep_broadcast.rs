//! Beazley's push-style coroutines ("A Curious Course on Coroutines and Concurrency"): data
//! is *sent* down a pipeline instead of pulled up it, so one source can feed several
//! consumers — a `broadcast` to three `grep`s, each feeding a `printer`.
//!
//! ```python
//! @coroutine
//! def grep(pattern, target):
//!     try:
//!         while True:
//!             line = (yield)
//!             if pattern in line:
//!                 target.send(line)
//!     except GeneratorExit:               # closing the pipeline closes what follows
//!         target.close()
//!
//! @coroutine
//! def broadcast(targets):
//!     try:
//!         while True:
//!             item = (yield)
//!             for target in targets:
//!                 target.send(item)
//!     except GeneratorExit:
//!         for target in targets:
//!             target.close()
//!
//! @coroutine
//! def printer(name):
//!     count = 0
//!     try:
//!         while True:
//!             line = (yield)
//!             count += 1
//!             print(f"{name}: {line}", end="")
//!     except GeneratorExit:
//!         print(f"{name}: {count} lines")
//!
//! def cat(lines, target):                 # the source pushes, then closes the pipeline
//!     for line in lines:
//!         target.send(line)
//!     target.close()
//!
//! cat(open("access-log"), broadcast([grep("python", printer("python")),
//!                                     grep("ply", printer("ply")),
//!                                     grep("swig", printer("swig"))]))
//! ```
//!
//! All three share one shape — prime, then `item = (yield)` in a loop until `GeneratorExit`
//! — so here that shape is one state enum, [`Consumer`], built on lesson 4's `Coroutine`;
//! `grep`, `broadcast` and `printer` are the loop bodies, each as short as in Python.
//! `send` is `resume(Some(line))`, `close` throws `GeneratorExit` in, and the
//! `@coroutine` decorator is lesson 4's `prime`.
//!
//! ```text
//! $ cargo run -q --example grep_broadcast      # or: -- FILE
//! swig: 71.201.176.194 - - [01/Nov/2009:19:58:56 -0600] "GET /swig/swig-1.3.40.tar.gz HTTP/1.1" 200 4831017
//! ply: 24.1.247.118 - - [02/Nov/2009:10:28:24 -0600] "GET /ply/ply-2.5.tar.gz HTTP/1.1" 200 113217
//! python: 128.135.11.173 - - [03/Nov/2009:03:06:26 -0600] "GET /python/tutorial.html HTTP/1.1" 200 24306
//! …
//! python: 3 lines
//! ply: 6 lines
//! swig: 1 line
//! ```

use std::fs::File;
use std::io::{self, BufRead, BufReader};
use std::mem;
use std::process::ExitCode;

use lesson_coroutines::coroutine::GENERATOR_EXIT;
use lesson_coroutines::{Coroutine, Error, Exception, GeneratorState, State, Step, prime};

/// Where a coroutine sends its lines: any coroutine that takes lines.
type Target = Box<dyn Coroutine<Option<String>, Yield = (), Return = ()>>;

/// The body of a `while True: line = (yield)` loop, and its `except GeneratorExit:`.
trait Receive {
    /// One pass of the loop, with the line just received.
    fn receive(&mut self, line: String) -> Result<(), Error>;
    /// The `except GeneratorExit:` block.
    fn closing(self) -> Result<(), Error>;
}

/// A primed consumer coroutine:
///
/// ```python
/// @coroutine
/// def consumer(...):
///     try:
///         while True:
///             line = (yield)              # Receiving
///             body.receive(line)
///     except GeneratorExit:
///         body.closing()                  # then it returns: closed
/// ```
enum Consumer<B> {
    /// Not primed yet.
    Created(B),
    /// At `line = (yield)`.
    Receiving(B),
    /// Closed.
    Closed,
}

impl<B: Receive + 'static> Consumer<B> {
    /// `@coroutine`: created and primed, boxed to be a `Target`.
    fn start(body: B) -> Result<Target, Error> {
        Ok(Box::new(prime(Consumer::Created(body))?))
    }
}

impl<B: Receive> Coroutine<Option<String>> for Consumer<B> {
    type Yield = ();
    type Return = ();

    fn resume(&mut self, line: Option<String>) -> Step<(), ()> {
        match (mem::replace(self, Consumer::Closed), line) {
            (Consumer::Created(body), Some(_)) => {
                *self = Consumer::Created(body);
                Err(Error::NotStarted)
            }
            (Consumer::Created(body), None) => {
                *self = Consumer::Receiving(body);
                Ok(State::Yielded(()))
            }
            (Consumer::Receiving(mut body), Some(line)) => {
                body.receive(line)?;
                *self = Consumer::Receiving(body);
                Ok(State::Yielded(()))
            }
            (Consumer::Receiving(_), None) => Err(Error::raised(Exception::with_message(
                "TypeError",
                "expected a line, got None",
            ))),
            (Consumer::Closed, _) => Err(Error::Closed),
        }
    }

    fn throw(&mut self, exception: Exception) -> Step<(), ()> {
        match mem::replace(self, Consumer::Closed) {
            Consumer::Receiving(body) if exception.is(GENERATOR_EXIT) => {
                body.closing()?;
                Ok(State::Complete(()))
            }
            Consumer::Created(_) | Consumer::Receiving(_) => Err(Error::raised(exception)),
            Consumer::Closed => Err(Error::Raised(exception)),
        }
    }

    fn state(&self) -> GeneratorState {
        match self {
            Consumer::Created(_) => GeneratorState::Created,
            Consumer::Receiving(_) => GeneratorState::Suspended,
            Consumer::Closed => GeneratorState::Closed,
        }
    }
}

/// `grep(pattern, target)`
struct Grep {
    pattern: String,
    target: Target,
}

impl Receive for Grep {
    fn receive(&mut self, line: String) -> Result<(), Error> {
        if line.contains(&self.pattern) {
            self.target.resume(Some(line))?;
        }
        Ok(())
    }

    fn closing(mut self) -> Result<(), Error> {
        self.target.close()
    }
}

/// `broadcast(targets)`
struct Broadcast {
    targets: Vec<Target>,
}

impl Receive for Broadcast {
    fn receive(&mut self, item: String) -> Result<(), Error> {
        for target in &mut self.targets {
            target.resume(Some(item.clone()))?;
        }
        Ok(())
    }

    fn closing(self) -> Result<(), Error> {
        self.targets
            .into_iter()
            .try_for_each(|mut target| target.close())
    }
}

/// `printer(name)`
struct Printer {
    name: &'static str,
    count: usize,
}

impl Receive for Printer {
    fn receive(&mut self, line: String) -> Result<(), Error> {
        self.count += 1;
        print!("{}: {line}", self.name);
        Ok(())
    }

    fn closing(self) -> Result<(), Error> {
        println!("{}: {}", self.name, fdio::count(self.count as u64, "line"));
        Ok(())
    }
}

/// `grep(pattern, printer(pattern))`
fn grep_printer(pattern: &'static str) -> Result<Target, Error> {
    let printer = Consumer::start(Printer {
        name: pattern,
        count: 0,
    })?;
    Consumer::start(Grep {
        pattern: pattern.to_string(),
        target: printer,
    })
}

/// `cat(lines, target)`: the source. It pushes each line (with its newline), then closes.
fn cat(lines: impl BufRead, mut target: Target) -> Result<(), Box<dyn std::error::Error>> {
    for line in lines.split(b'\n') {
        let mut line = String::from_utf8_lossy(&line?).into_owned();
        line.push('\n');
        target.resume(Some(line))?;
    }
    target.close()?;
    Ok(())
}

fn run(path: &str) -> Result<(), Box<dyn std::error::Error>> {
    let file =
        File::open(path).map_err(|err| io::Error::new(err.kind(), format!("{path}: {err}")))?;
    let targets = vec![
        grep_printer("python")?,
        grep_printer("ply")?,
        grep_printer("swig")?,
    ];
    cat(
        BufReader::new(file),
        Consumer::start(Broadcast { targets })?,
    )
}

fn main() -> ExitCode {
    fdio::let_sigpipe_end_the_program(); // `grep_broadcast | head -2` ends quietly
    let default = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/logs/access-log");
    let path = std::env::args().nth(1).unwrap_or(default.to_string());
    match run(&path) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            fdio::log!("grep_broadcast: {err}");
            ExitCode::FAILURE
        }
    }
}
