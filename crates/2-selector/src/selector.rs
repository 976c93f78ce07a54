//! A selector with a registry of callbacks — Python's `selectors.EpollSelector` plus the
//! `data=callback` convention, written straight on epoll's three system calls.
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
//!
//! A callback returns `io::Result<()>`. An error ends the loop: `run` returns it, as an
//! exception raised in a Python callback ends the `while True` above. So a callback decides
//! which errors are the program's (the writer's full disk) and which are only its source's
//! (one client's reset: the echo callback closes that client and returns `Ok`).
//!
//! Under it, epoll: `epoll_create1` makes the epoll instance, `epoll_ctl` adds, modifies and
//! deletes entries of its *interest list* (fd, the flags to watch, and 64 bits of our own data:
//! the token), and `epoll_wait` sleeps until some of them are ready and returns only those.
//!
//! The file reads in that order: `register`, then the loop — `run`, one `turn`, `dispatch`
//! to a callback and what it is told (`ready`) — then `modify` and `unregister`, and last
//! the cooperative budget and the wake-ups, which keep one busy source from starving the rest.

use std::collections::HashMap;
use std::fmt;
use std::io;
use std::os::fd::{AsFd, AsRawFd};
use std::time::{Duration, Instant};

use fdio::{Trace, epoll_refuses_line};
use nix::errno::Errno;
use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout};

pub use crate::ready::{EDGE_READS_PER_TURN, Interest, Ready, Token, Trigger};

type Callback = Box<dyn FnMut(&mut Selector, Ready) -> io::Result<()>>;

/// At most this many events per `epoll_wait`; any more wait for the next turn.
const EVENTS_PER_WAIT: usize = 1024;

/// The size of the shared read buffer.
const READ_BUFFER: usize = 64 * 1024;

struct Entry {
    /// Who this is, for the trace: `listener 127.0.0.1:5000`, `client 127.0.0.1:4242`.
    name: String,
    /// What epoll watches it for now; `None`: epoll refused it (a regular file), it runs on
    /// every turn.
    interest: Option<Interest>,
    /// Out of the map's hands while it runs (`None`), so it may use the selector freely.
    callback: Option<Callback>,
    /// Edge-triggered, it spent its budget: it still has reading to do, and no new edge will
    /// say so. Whatever runs it next tells it to read.
    read_again: bool,
}

/// The event loop: an epoll instance and, for each registered token, the callback to run.
pub struct Selector {
    epoll: Epoll,
    trigger: Trigger,
    entries: HashMap<Token, Entry>,
    /// Edge-triggered callbacks that spent their budget: they run again on the next turn.
    run_again: Vec<Token>,
    /// Callbacks asked to run again later, as if their source were readable.
    wakeups: Vec<(Instant, Token)>,
    next_token: u64,
    events: Vec<EpollEvent>,
    /// One read buffer for every callback (see [`Selector::read_buffer`]).
    read_buffer: Vec<u8>,
    trace: Trace,
}

impl Selector {
    /// A selector with nothing registered: `epoll_create1`.
    pub fn new(trigger: Trigger, trace: Trace) -> io::Result<Selector> {
        trace.say(|| format!("selector: epoll_create1, {trigger:?}-triggered"));
        Ok(Selector {
            // CLOEXEC: a program we might start must not inherit our epoll instance.
            epoll: Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC)?,
            trigger,
            entries: HashMap::new(),
            run_again: Vec::new(),
            wakeups: Vec::new(),
            next_token: 0,
            events: vec![EpollEvent::empty(); EVENTS_PER_WAIT],
            read_buffer: vec![0; READ_BUFFER],
            trace,
        })
    }

    /// Watches `source` for `interest` (`epoll_ctl(ADD)`); `callback(selector, source, ready)`
    /// runs whenever it is ready; an error it returns ends [`run`](Self::run). Returns the
    /// token that names this registration. A source epoll refuses (`EPERM`: a regular file,
    /// `/dev/null`) is said so on stderr and run on every turn instead.
    pub fn register<S, F>(
        &mut self,
        name: String,
        mut source: S,
        interest: Interest,
        mut callback: F,
    ) -> io::Result<Token>
    where
        S: AsFd + 'static,
        F: FnMut(&mut Selector, &mut S, Ready) -> io::Result<()> + 'static,
    {
        let token = Token(self.next_token);
        self.next_token += 1;
        let flags = self.flags(interest);
        let fd = source.as_fd().as_raw_fd();
        let watched = match self.epoll.add(&source, EpollEvent::new(flags, token.0)) {
            Ok(()) => {
                self.trace.say(|| {
                    format!(
                        "selector: register {token:?} ({name}): epoll_ctl(ADD, fd {fd}, {})",
                        Flags(flags)
                    )
                });
                Some(interest)
            }
            Err(Errno::EPERM) => {
                let doing = if interest.read { "reading" } else { "writing" };
                fdio::log!("{}", epoll_refuses_line("selector", fd, doing));
                None
            }
            Err(err) => return Err(err.into()),
        };
        let callback =
            Box::new(move |selector: &mut Selector, ready| callback(selector, &mut source, ready));
        let entry = Entry {
            name,
            interest: watched,
            callback: Some(callback),
            read_again: false,
        };
        self.entries.insert(token, entry);
        Ok(token)
    }

    /// The loop: turn after turn, until nothing is registered any more, or until a callback
    /// returns an error: then the rest of that turn is skipped and `run` returns the error.
    pub fn run(&mut self) -> io::Result<()> {
        while !self.entries.is_empty() {
            self.turn(None)?;
        }
        Ok(())
    }

    /// One turn: wait for events (`epoll_wait`, at most `longest_wait`), then run the callback
    /// of each ready token: those epoll reports, those whose budget ran out last turn (unless
    /// an event already ran them), those whose wake-up is due, and those epoll refused.
    fn turn(&mut self, longest_wait: Option<Duration>) -> io::Result<()> {
        let timeout = match (self.timeout(), longest_wait) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        self.trace.say(|| {
            let timeout = timeout.map_or("none".to_string(), |t| format!("{t:.1?}"));
            let registered = self.entries.len();
            format!("selector: epoll_wait with {registered} registered, timeout={timeout}")
        });
        // Taken now: callbacks that spend their budget during this turn run in the next.
        let run_again = std::mem::take(&mut self.run_again);
        let ready = match self.epoll.wait(&mut self.events, epoll_timeout(timeout)) {
            Ok(ready) => ready,
            // A signal arrived: just wait again. On Linux, Ctrl+Z and `fg` alone do this to
            // `epoll_wait`, handler or not (`select` and `poll` are restarted; signal(7)).
            Err(Errno::EINTR) => 0,
            Err(err) => return Err(err.into()),
        };
        self.trace
            .say(|| format!("selector: woke up with {ready} ready"));
        for index in 0..ready {
            let event = self.events[index];
            self.dispatch(Token(event.data()), Cause::Epoll(event.events()))?;
        }
        for token in run_again {
            if self
                .entries
                .get(&token)
                .is_some_and(|entry| entry.read_again)
            {
                self.dispatch(token, Cause::BudgetSpent)?;
            }
        }
        let now = Instant::now();
        let (due, later) = self.wakeups.drain(..).partition(|&(when, _)| when <= now);
        self.wakeups = later;
        for (_, token) in due {
            self.dispatch(token, Cause::WakeUp)?;
        }
        // (Unless they spent their budget: then they are in the next turn's `run_again`.)
        let always_ready: Vec<Token> = (self.entries.iter())
            .filter(|(_, entry)| entry.interest.is_none() && !entry.read_again)
            .map(|(&token, _)| token)
            .collect();
        for token in always_ready {
            self.dispatch(token, Cause::AlwaysReady)?;
        }
        Ok(())
    }

    /// Runs `token`'s callback, unless it is gone, and returns what the callback returned.
    fn dispatch(&mut self, token: Token, cause: Cause) -> io::Result<()> {
        let Some(entry) = self.entries.get_mut(&token) else {
            // Unregistered earlier in this same turn: epoll may still report it.
            self.trace
                .say(|| format!("selector: {token:?} is no longer registered: {cause} ignored"));
            return Ok(());
        };
        let Some(mut callback) = entry.callback.take() else {
            return Ok(());
        };
        // This run does the reading it still owed, whatever woke it.
        let read_again = std::mem::take(&mut entry.read_again);
        self.trace.say(|| {
            let name = &self.entries[&token].name;
            format!("selector: {token:?} ({name}): {cause} → its callback")
        });
        let mut ready = self.ready(token, cause);
        ready.readable |= read_again;
        let result = callback(self, ready);
        // Put it back, unless it unregistered itself: then it drops here, and its source too.
        if let Some(entry) = self.entries.get_mut(&token) {
            entry.callback = Some(callback);
        }
        result
    }

    /// What the callback is told: `EPOLLHUP` and `EPOLLERR` (reported whether asked for or
    /// not) count as both readable and writable, so that whichever the callback tries next
    /// meets the EOF or the error itself, instead of epoll reporting them again and again.
    fn ready(&self, token: Token, cause: Cause) -> Ready {
        let (readable, writable) = match cause {
            Cause::Epoll(flags) => {
                let trouble = flags.intersects(EpollFlags::EPOLLHUP | EpollFlags::EPOLLERR);
                let readable = flags.intersects(EpollFlags::EPOLLIN | EpollFlags::EPOLLRDHUP);
                (
                    readable || trouble,
                    flags.contains(EpollFlags::EPOLLOUT) || trouble,
                )
            }
            Cause::BudgetSpent | Cause::WakeUp | Cause::AlwaysReady => (true, false),
        };
        let budget = match self.trigger {
            Trigger::Level => 1,
            Trigger::Edge => EDGE_READS_PER_TURN,
        };
        Ready {
            token,
            readable,
            writable,
            budget,
        }
    }

    /// Changes what `token`'s source is watched for (`epoll_ctl(MOD)`). Callbacks may say what
    /// they want on every call: the system call is made only when it changes.
    pub fn modify(
        &mut self,
        token: Token,
        source: &impl AsFd,
        interest: Interest,
    ) -> io::Result<()> {
        let Some(entry) = self.entries.get_mut(&token) else {
            return Ok(());
        };
        match entry.interest {
            Some(current) if current != interest => entry.interest = Some(interest),
            // Unchanged, or not watched by epoll at all.
            _ => return Ok(()),
        }
        let flags = self.flags(interest);
        self.trace.say(|| {
            format!(
                "selector: modify {token:?}: epoll_ctl(MOD, fd {}, {})",
                source.as_fd().as_raw_fd(),
                Flags(flags)
            )
        });
        let mut event = EpollEvent::new(flags, token.0);
        Ok(self.epoll.modify(source, &mut event)?)
    }

    /// Stops watching `token`'s source (`epoll_ctl(DEL)`). Its callback — and the source it
    /// owns — is dropped as soon as it is not running: a socket is closed right after its
    /// last callback returns.
    ///
    /// Why not simply close the fd? The kernel drops an fd from the interest list only when
    /// the last descriptor of its open file closes: after a `dup` or a `fork`, a closed fd may
    /// keep reporting events. Python's `selectors` asks the same: unregister, then close.
    pub fn unregister(&mut self, token: Token, source: &impl AsFd) -> io::Result<()> {
        self.trace.say(|| {
            format!(
                "selector: unregister {token:?}: epoll_ctl(DEL, fd {})",
                source.as_fd().as_raw_fd()
            )
        });
        self.wakeups.retain(|&(_, waiting)| waiting != token);
        // A running callback is not in its entry: dropping the entry now drops nothing else,
        // and `dispatch` drops the callback once it returns.
        match self.entries.remove(&token) {
            Some(Entry {
                interest: Some(_), ..
            }) => Ok(self.epoll.delete(source)?),
            _ => Ok(()),
        }
    }

    /// The cooperative budget ran out: `token`'s callback stopped with work perhaps left.
    ///
    /// Level-triggered, there is nothing to do: if bytes are left, the next `epoll_wait`
    /// reports the fd again by itself. Edge-triggered, no new edge will come for bytes that
    /// are already there, so the selector remembers and runs the callback on the next turn.
    pub fn budget_spent(&mut self, token: Token) {
        if self.trigger == Trigger::Level {
            return;
        }
        self.trace.say(|| {
            format!(
                "selector: {token:?} ({}) spent its budget of {EDGE_READS_PER_TURN} reads: \
                 running it again next turn (no new edge will come for what is left)",
                self.name(token)
            )
        });
        if let Some(entry) = self.entries.get_mut(&token) {
            entry.read_again = true;
            self.run_again.push(token);
        }
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

    /// How long the next wait may sleep: not at all while a callback has work left or a
    /// source is always ready, until the earliest wake-up if there is one, else for as long
    /// as it takes.
    fn timeout(&self) -> Option<Duration> {
        let always_ready = self.entries.values().any(|entry| entry.interest.is_none());
        if always_ready || !self.run_again.is_empty() {
            return Some(Duration::ZERO);
        }
        let earliest = self.wakeups.iter().map(|&(when, _)| when).min()?;
        Some(earliest.saturating_duration_since(Instant::now()))
    }

    /// The epoll flags for `interest`: `EPOLLIN`, `EPOLLOUT`, and `EPOLLET` if edge-triggered.
    fn flags(&self, interest: Interest) -> EpollFlags {
        let mut flags = EpollFlags::empty();
        if interest.read {
            flags |= EpollFlags::EPOLLIN;
        }
        if interest.write {
            flags |= EpollFlags::EPOLLOUT;
        }
        if self.trigger == Trigger::Edge {
            flags |= EpollFlags::EPOLLET;
        }
        flags
    }

    fn name(&self, token: Token) -> String {
        self.entries
            .get(&token)
            .map_or_else(|| "unregistered".to_string(), |entry| entry.name.clone())
    }
}

/// Why a callback runs this turn.
#[derive(Debug, Clone, Copy)]
enum Cause {
    /// `epoll_wait` reported these flags.
    Epoll(EpollFlags),
    /// Edge-triggered, it spent its budget last turn.
    BudgetSpent,
    /// Its [`Selector::wake_after`] is due.
    WakeUp,
    /// epoll refused its source: it runs on every turn.
    AlwaysReady,
}

impl fmt::Display for Cause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Cause::Epoll(flags) => write!(f, "{}", Flags(*flags)),
            Cause::BudgetSpent => f.write_str("budget spent last turn"),
            Cause::WakeUp => f.write_str("wake-up due"),
            Cause::AlwaysReady => f.write_str("always ready"),
        }
    }
}

/// Epoll flags as the man page writes them: `EPOLLIN|EPOLLET`.
struct Flags(EpollFlags);

impl fmt::Display for Flags {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            return f.write_str("0");
        }
        let names: Vec<&str> = self.0.iter_names().map(|(name, _)| name).collect();
        f.write_str(&names.join("|"))
    }
}

/// `epoll_wait` counts in whole milliseconds: round up, so a wake-up 0.4 ms away does not
/// turn into a busy loop of zero-timeout waits.
fn epoll_timeout(timeout: Option<Duration>) -> EpollTimeout {
    match timeout {
        None => EpollTimeout::NONE,
        Some(timeout) => {
            let millis = timeout.as_nanos().div_ceil(1_000_000);
            EpollTimeout::try_from(millis).unwrap_or(EpollTimeout::MAX)
        }
    }
}

#[cfg(test)]
mod tests;
