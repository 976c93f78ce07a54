//! A selector with a registry of callbacks — Python's `selectors` module plus the
//! `data=callback` convention, on mio (which is epoll on Linux).
//!
//! ```python
//! selector.register(server_socket, selectors.EVENT_READ, data=accept_connection)
//! while True:
//!     for key, _ in selector.select():
//!         callback = key.data
//!         callback(key.fileobj)
//! ```
//!
//! Here `register` takes the source, what to wait for, and the callback; the callback *owns*
//! its source from then on and gets it back as `&mut` on every call. Unregistering drops the
//! callback, and with it the source: that is how a connection is closed.

use std::collections::HashMap;
use std::io;
use std::time::{Duration, Instant};

use fdio::{Trace, epoll_refuses, interrupted};
use mio::event::Source;
use mio::{Events, Interest, Poll, Token};

/// What the kernel said about a source. Hints, not promises: the callback must still treat
/// `WouldBlock` as "nothing after all" — and with epoll's edge-triggered mode it must read
/// (or write) until `WouldBlock`, or it may never be told again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ready {
    pub token: Token,
    pub readable: bool,
    pub writable: bool,
}

type Callback = Box<dyn FnMut(&mut Selector, Ready)>;

/// The size of the shared read buffer.
const READ_BUFFER: usize = 64 * 1024;

struct Entry {
    /// Who this is, for the trace: `listener 127.0.0.1:5000`, `client 127.0.0.1:4242`.
    name: String,
    callback: Callback,
}

/// The event loop: a mio `Poll` and, for each registered token, the callback to run.
pub struct Selector {
    poll: Poll,
    callbacks: HashMap<Token, Entry>,
    /// Sources epoll refused (regular files): they never block, so they run on every turn.
    always_ready: Vec<Token>,
    /// Callbacks asked to run again later, as if their source were readable.
    wakeups: Vec<(Instant, Token)>,
    /// Tokens are never reused, so a late event for a closed source can never reach a new one.
    next_token: usize,
    /// The callback running now, and whether it unregistered itself.
    running: Option<Token>,
    running_unregistered: bool,
    /// One read buffer for every callback (see [`Selector::read_buffer`]).
    read_buffer: Vec<u8>,
    trace: Trace,
}

impl Selector {
    /// A selector with nothing registered.
    pub fn new(trace: Trace) -> io::Result<Selector> {
        Ok(Selector {
            poll: Poll::new()?,
            callbacks: HashMap::new(),
            always_ready: Vec::new(),
            wakeups: Vec::new(),
            next_token: 0,
            running: None,
            running_unregistered: false,
            read_buffer: vec![0; READ_BUFFER],
            trace,
        })
    }

    /// Watches `source` for `interest`; `callback(selector, source, ready)` runs whenever it
    /// is ready. Returns the token that names this registration. A source epoll refuses
    /// (`EPERM`: a regular file, `/dev/null`) is said so on stderr and run on every turn.
    pub fn register<S, F>(
        &mut self,
        name: String,
        mut source: S,
        interest: Interest,
        mut callback: F,
    ) -> io::Result<Token>
    where
        S: Source + 'static,
        F: FnMut(&mut Selector, &mut S, Ready) + 'static,
    {
        let token = Token(self.next_token);
        self.next_token += 1;
        match self.poll.registry().register(&mut source, token, interest) {
            Ok(()) => self
                .trace
                .say(|| format!("selector: register {token:?} ({name}) for {interest:?}")),
            Err(err) if epoll_refuses(&err) => {
                eprintln!(
                    "selector: epoll refuses {name} (a regular file or /dev/null): reading it on every turn instead"
                );
                self.always_ready.push(token);
            }
            Err(err) => return Err(err),
        }
        let callback =
            Box::new(move |selector: &mut Selector, ready| callback(selector, &mut source, ready));
        self.callbacks.insert(token, Entry { name, callback });
        Ok(token)
    }

    /// Changes what `token`'s source is watched for.
    pub fn modify(
        &mut self,
        token: Token,
        source: &mut impl Source,
        interest: Interest,
    ) -> io::Result<()> {
        self.trace
            .say(|| format!("selector: modify {token:?} to {interest:?}"));
        if self.always_ready.contains(&token) {
            return Ok(());
        }
        self.poll.registry().reregister(source, token, interest)
    }

    /// Stops watching `token`'s source. Its callback — and the source it owns — is dropped as
    /// soon as it is not running: a socket is closed right after its last callback returns.
    pub fn unregister(&mut self, token: Token, source: &mut impl Source) -> io::Result<()> {
        self.trace.say(|| format!("selector: unregister {token:?}"));
        self.wakeups.retain(|&(_, waiting)| waiting != token);
        let result = match self.always_ready.iter().position(|&t| t == token) {
            Some(index) => {
                self.always_ready.swap_remove(index);
                Ok(())
            }
            None => self.poll.registry().deregister(source),
        };
        if self.running == Some(token) {
            self.running_unregistered = true;
        } else {
            self.callbacks.remove(&token);
        }
        result
    }

    /// A 64 KiB buffer for a callback to read into. Only one callback runs at a time, so they
    /// can all share it: 10,000 idle connections hold no read buffer, and no callback pays
    /// for zeroing a fresh one on every call.
    pub fn read_buffer(&mut self) -> &mut [u8] {
        &mut self.read_buffer
    }

    /// Runs `token`'s callback again after `delay`, as if its source were readable — for
    /// example to retry `accept` once file descriptors may have been freed.
    pub fn wake_after(&mut self, token: Token, delay: Duration) {
        self.wakeups.push((Instant::now() + delay, token));
    }

    /// The loop: wait for events, run the callback of each ready token, repeat — until
    /// nothing is registered any more.
    pub fn run(&mut self) -> io::Result<()> {
        let mut events = Events::with_capacity(1024);
        while !self.callbacks.is_empty() {
            let timeout = self.timeout();
            self.trace.say(|| {
                let timeout = timeout.map_or("none".to_string(), |t| format!("{t:.1?}"));
                let registered = self.callbacks.len();
                format!("selector: polling with {registered} registered, timeout={timeout}")
            });
            match self.poll.poll(&mut events, timeout) {
                Err(err) if interrupted(&err) => continue,
                result => result?,
            }
            for event in events.iter() {
                // "closed" and "error" are hints too: report them as readiness, and the
                // callback's next read or write meets the EOF or the error itself.
                self.dispatch(Ready {
                    token: event.token(),
                    readable: event.is_readable() || event.is_read_closed() || event.is_error(),
                    writable: event.is_writable() || event.is_error(),
                });
            }
            let now = Instant::now();
            let (due, later) = self.wakeups.drain(..).partition(|&(when, _)| when <= now);
            self.wakeups = later;
            let woken: Vec<Token> = due.into_iter().map(|(_, token)| token).collect();
            for token in woken.into_iter().chain(self.always_ready.clone()) {
                self.dispatch(Ready {
                    token,
                    readable: true,
                    writable: false,
                });
            }
        }
        Ok(())
    }

    /// How long the next poll may sleep: not at all while a source is always ready, until the
    /// earliest wake-up if there is one, else for as long as it takes.
    fn timeout(&self) -> Option<Duration> {
        if !self.always_ready.is_empty() {
            return Some(Duration::ZERO);
        }
        let earliest = self.wakeups.iter().map(|&(when, _)| when).min()?;
        Some(earliest.saturating_duration_since(Instant::now()))
    }

    /// Looks up the callback of `ready.token` and runs it.
    fn dispatch(&mut self, ready: Ready) {
        // Taken out of the map while it runs, so that it may register and unregister
        // through `&mut self` — including unregistering itself.
        let Some(mut entry) = self.callbacks.remove(&ready.token) else {
            // Unregistered earlier in this same batch of events: mio may still report it.
            self.trace.say(|| {
                format!(
                    "selector: {:?} is no longer registered: ignored",
                    ready.token
                )
            });
            return;
        };
        self.trace.say(|| {
            let what = match (ready.readable, ready.writable) {
                (true, true) => "readable+writable",
                (true, false) => "readable",
                _ => "writable",
            };
            format!(
                "selector: {:?} ({}) is {what} → its callback",
                ready.token, entry.name
            )
        });
        self.running = Some(ready.token);
        self.running_unregistered = false;
        (entry.callback)(self, ready);
        self.running = None;
        if !self.running_unregistered {
            self.callbacks.insert(ready.token, entry);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;
    use std::io::{ErrorKind, Write};
    use std::os::fd::OwnedFd;
    use std::rc::Rc;

    fn pipe_receiver() -> (mio::unix::pipe::Receiver, std::io::PipeWriter) {
        let (reader, writer) = std::io::pipe().unwrap();
        let reader = OwnedFd::from(reader);
        fdio::set_nonblocking(&reader).unwrap();
        (mio::unix::pipe::Receiver::from(reader), writer)
    }

    /// The callback of a readable source runs; when it unregisters itself it is dropped at
    /// once — closing the source it owns — and `run` returns since nothing is registered.
    #[test]
    fn unregistering_drops_the_callback_and_its_source() {
        let (receiver, mut writer) = pipe_receiver();
        writer.write_all(b"ping").unwrap();
        let calls = Rc::new(Cell::new(0));
        let mut selector = Selector::new(Trace::new(false)).unwrap();
        let seen = Rc::clone(&calls);
        selector
            .register(
                "pipe".into(),
                receiver,
                Interest::READABLE,
                move |selector, pipe, ready| {
                    seen.set(seen.get() + 1);
                    assert!(ready.readable);
                    selector.unregister(ready.token, pipe).unwrap();
                },
            )
            .unwrap();
        selector.run().unwrap();
        assert_eq!(calls.get(), 1);
        // The read end was closed with the callback: writing now fails with a broken pipe.
        let err = writer.write_all(b"more").unwrap_err();
        assert_eq!(err.kind(), ErrorKind::BrokenPipe);
    }

    /// `wake_after` runs a callback again after the delay, even though its source never
    /// became ready (this is how `accept` is retried after running out of fds).
    #[test]
    fn wake_after_calls_back_without_an_event() {
        let (receiver, _writer) = pipe_receiver();
        let mut selector = Selector::new(Trace::new(false)).unwrap();
        let calls = Rc::new(Cell::new(0));
        let seen = Rc::clone(&calls);
        let token = selector
            .register(
                "idle pipe".into(),
                receiver,
                Interest::READABLE,
                move |selector, pipe, ready| {
                    seen.set(seen.get() + 1);
                    selector.unregister(ready.token, pipe).unwrap();
                },
            )
            .unwrap();
        selector.wake_after(token, Duration::from_millis(10));
        selector.run().unwrap();
        assert_eq!(calls.get(), 1);
    }

    /// An event for a token that is no longer registered reaches no callback.
    #[test]
    fn events_for_unregistered_tokens_are_ignored() {
        let (receiver, mut writer) = pipe_receiver();
        writer.write_all(b"x").unwrap();
        let mut selector = Selector::new(Trace::new(false)).unwrap();
        let calls = Rc::new(Cell::new(0));
        let seen = Rc::clone(&calls);
        let token = selector
            .register(
                "pipe".into(),
                receiver,
                Interest::READABLE,
                move |_, _, _| seen.set(seen.get() + 1),
            )
            .unwrap();
        selector.dispatch(Ready {
            token: Token(token.0 + 1),
            readable: true,
            writable: false,
        });
        assert_eq!(calls.get(), 0);
        selector.dispatch(Ready {
            token,
            readable: true,
            writable: false,
        });
        assert_eq!(calls.get(), 1);
    }
}
