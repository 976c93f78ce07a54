//! The reactor: one mio `Poll` (epoll) and the timers, on a thread of their own.
//!
//! ## A dedicated thread, and what the other choice costs
//! tokio lets an idle worker "take the driver": the first worker with nothing to do sleeps
//! in `epoll_wait` instead of on its condvar, and the tasks it wakes go straight into its own
//! queue. That saves a thread and a hop — but parking gets two kinds of bed (a worker in
//! `epoll_wait` is woken through the epoll's eventfd, the others through their condvar),
//! and a busy runtime may have no idle worker to look at epoll at all, so tokio's workers
//! also poll the driver without blocking every so many ticks.
//!
//! Here one thread does nothing but wait in `epoll_wait` (with the nearest timer as the
//! timeout), record what is ready, and wake the tasks waiting for it; the workers only ever
//! sleep on their condvars. The cost: each I/O wake crosses threads — the tasks one
//! `epoll_wait` woke go to the injector (in one batch, under one lock) and a parked worker
//! is unparked (a futex wake), where tokio's would run on the worker that saw the event.
//! And the reactor thread itself sleeps and is woken once per round: under load it looks
//! again a few times before it sleeps (`SPINS`). The benchmark's echo row shows the cost.
//!
//! ## The readiness bit, now with a tick
//! As in lesson 5, each source keeps a readiness bit per direction: set by an event, cleared
//! only by an operation that said `WouldBlock`, or a TCP write that came back short (the
//! send buffer is full), or a TCP read that came back short (it took all there was). But now
//! the driver runs on another thread, so an event can arrive *between* a task's `WouldBlock`
//! and its clear — and the clear must not erase it, or the edge is lost for good (epoll will
//! not repeat it). So the bits share one atomic word with a `tick` that every event bumps:
//! an operation remembers the tick it saw when it found the bit set, and its clear succeeds
//! only if the tick has not moved (tokio's `ScheduledIo` does the same).
//!
//! A short read is lesson 5's rule, made atomic. It is wrong twice, and no new edge comes
//! for what the read left: a TCP read stops at an urgent byte's mark once it has copied
//! anything, with ordinary bytes queued behind it; and the read that takes the last bytes
//! takes the peer's FIN (or meets an error) with them. epoll tells both — `EPOLLPRI` while
//! an urgent byte waits (every TCP stream is registered for it), `EPOLLRDHUP`, `EPOLLHUP`,
//! `EPOLLERR` — and such an event sets a flag in the same word, in the same step as its
//! bits and its tick: `URGENT`, or `READ_CLOSED` (which also keeps reads worth trying for
//! good). The short read's clear is the tick's clear, skipped when a flag is set — one
//! atomic step: an event before the tick the read saw has set its flag by then, and one
//! after it has moved the tick. One gap is left, and it costs only its own connection: the
//! kernel reports `EPOLLPRI` only once it holds the urgent byte itself, and a misbehaving
//! sender can point its urgent pointer at a byte that already came, out of order
//! (`TCP_URG_NOTYET`, see `tcp_check_urg`): no `EPOLLPRI`, yet the read stops at the mark,
//! and the bytes behind it wait for that client's next edge.
//!
//! A task that finds the bit clear leaves its waker, then looks at the bit once more: the
//! reactor sets the bit *before* it takes the waker, so either the reactor finds our waker,
//! or we find its bit. No edge falls between.

use std::collections::BTreeMap;
use std::fmt;
use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Waker};
use std::thread;
use std::time::{Duration, Instant};

use fdio::{Trace, interrupted};
use mio::event::{Event, Source};
use mio::{Events, Interest, Registry, Token};

use crate::sync;

/// The token of the `mio::Waker` that interrupts `epoll_wait` (new timers, shutdown).
const WAKE_TOKEN: Token = Token(usize::MAX);

/// After a round that found events, how many times the reactor looks again (a zero
/// timeout, after letting other threads run) before it sleeps in `epoll_wait`. Under load
/// the next events come within microseconds: sleeping and being woken for each round cost
/// a third of the echo's throughput in context switches (`perf` showed the scheduler's
/// `try_to_wake_up` and `finish_task_switch` on top). Idle, it costs 8 empty polls once.
const SPINS: u32 = 8;

const READ: usize = 1;
const WRITE: usize = 2;
/// The peer closed, or an error: reads are worth trying for good (they report it).
const READ_CLOSED: usize = 4;
/// An event said an urgent byte waits (`EPOLLPRI`): from now on a short read proves nothing.
const URGENT: usize = 8;
const TICK_SHIFT: usize = 4;

/// What epoll watches a TCP stream for from the start: reading, and urgent bytes
/// (`EPOLLPRI`, see the module's doc). Other sources (a listener, a pipe, stdin) have no
/// urgent byte: reading only.
const READ_AND_URGENT: Interest = Interest::READABLE.add(Interest::PRIORITY);

/// Which way a task waits on a source.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    Read,
    Write,
}

impl Direction {
    /// The readiness bits that make this direction worth trying.
    fn ready_bits(self) -> usize {
        match self {
            Direction::Read => READ | READ_CLOSED,
            Direction::Write => WRITE,
        }
    }
}

/// What the reactor knows about one source, shared by its I/O object and the reactor.
/// (Its atomic and its lock are `crate::sync`'s: loom checks the handshake below.)
pub(crate) struct ScheduledIo {
    /// `tick << TICK_SHIFT | URGENT | READ_CLOSED | WRITE | READ`.
    readiness: sync::AtomicUsize,
    waiters: sync::Mutex<Waiters>,
}

/// Who waits on a source, and what epoll watches it for.
struct Waiters {
    reader: Option<Waker>,
    writer: Option<Waker>,
    interest: Interest,
}

impl ScheduledIo {
    /// A new source: both directions ready (nothing is known yet, so the first call is
    /// simply tried), watched by epoll for `interest` (reading, and urgent bytes for a TCP
    /// stream).
    fn new(interest: Interest) -> ScheduledIo {
        ScheduledIo {
            readiness: sync::AtomicUsize::new(READ | WRITE),
            waiters: sync::Mutex::new(Waiters {
                reader: None,
                writer: None,
                interest,
            }),
        }
    }

    fn lock(&self) -> sync::MutexGuard<'_, Waiters> {
        self.waiters.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// `Ready(tick)` if `direction` is worth trying; otherwise leaves `waker` and returns
    /// `Pending`. `watch_writes` runs (under the lock) the first time a task waits to write:
    /// it asks epoll to watch for writability too.
    fn poll_ready(
        &self,
        direction: Direction,
        waker: &Waker,
        watch_writes: impl FnOnce(Interest) -> io::Result<()>,
    ) -> Poll<io::Result<usize>> {
        let word = self.readiness.load(sync::Ordering::Acquire);
        if word & direction.ready_bits() != 0 {
            return Poll::Ready(Ok(word >> TICK_SHIFT));
        }
        {
            let mut waiters = self.lock();
            if direction == Direction::Write && !waiters.interest.is_writable() {
                let interest = waiters.interest.add(Interest::WRITABLE);
                if let Err(err) = watch_writes(interest) {
                    return Poll::Ready(Err(err));
                }
                waiters.interest = interest;
            }
            let slot = match direction {
                Direction::Read => &mut waiters.reader,
                Direction::Write => &mut waiters.writer,
            };
            match slot {
                Some(old) if old.will_wake(waker) => {}
                _ => *slot = Some(waker.clone()),
            }
        }
        // The reactor sets the bit, then takes the waker: look again, now that ours is there.
        let word = self.readiness.load(sync::Ordering::Acquire);
        if word & direction.ready_bits() != 0 {
            return Poll::Ready(Ok(word >> TICK_SHIFT));
        }
        Poll::Pending
    }

    /// The kernel had nothing more for `direction` when we tried at `tick`: clears the bit,
    /// unless an event came since (then the call is worth trying again).
    fn clear_ready(&self, direction: Direction, tick: usize) {
        let bit = match direction {
            Direction::Read => READ,
            Direction::Write => WRITE,
        };
        let _ =
            self.readiness
                .fetch_update(sync::Ordering::AcqRel, sync::Ordering::Acquire, |word| {
                    (word >> TICK_SHIFT == tick).then_some(word & !bit)
                });
    }

    /// A TCP read came back short at `tick`: it took all there was, so clear the read bit —
    /// unless an event came since (as `clear_ready`), or an event ever said an urgent byte
    /// waits, or the peer closed, or an error: then the read may have stopped at the urgent
    /// byte's mark, or left the EOF behind, and only `WouldBlock` clears. One atomic step
    /// checks both: the flag is set by the same step as the event's bits and tick, so an
    /// event before our tick is seen here, and one after it moved the tick.
    fn read_came_short(&self, tick: usize) {
        let _ =
            self.readiness
                .fetch_update(sync::Ordering::AcqRel, sync::Ordering::Acquire, |word| {
                    let proves_nothing = word & (URGENT | READ_CLOSED) != 0;
                    (word >> TICK_SHIFT == tick && !proves_nothing).then_some(word & !READ)
                });
    }

    /// Sets `bits` and bumps the tick: an event happened.
    fn record(&self, bits: usize) {
        let _ =
            self.readiness
                .fetch_update(sync::Ordering::AcqRel, sync::Ordering::Acquire, |word| {
                    Some((word + (1 << TICK_SHIFT)) | bits)
                });
    }

    /// Records an event's `bits` (set, tick bumped) and collects the wakers it releases.
    fn set_ready(&self, bits: usize, wakers: &mut Vec<Waker>) {
        self.record(bits);
        let mut waiters = self.lock();
        if bits & READ != 0 {
            wakers.extend(waiters.reader.take());
        }
        if bits & WRITE != 0 {
            wakers.extend(waiters.writer.take());
        }
    }
}

/// The readiness bits an event sets.
fn readiness_of(event: &Event) -> usize {
    // "closed" and "error" make the call worth trying too: it reports them.
    let failed = event.is_error();
    let mut bits = 0;
    if event.is_readable() || event.is_read_closed() || failed {
        bits |= READ;
    }
    if event.is_read_closed() || failed {
        bits |= READ_CLOSED;
    }
    if event.is_priority() {
        bits |= READ | URGENT;
    }
    if event.is_writable() || event.is_write_closed() || failed {
        bits |= WRITE;
    }
    bits
}

/// The reactor's shared half: the registry, the sources, the timers.
pub(crate) struct Reactor {
    registry: Registry,
    waker: mio::Waker,
    sources: Mutex<Slab>,
    timers: Mutex<Timers>,
    /// Set when the fd of a registered source is closed: a listener out of fds waits for it
    /// (see `TcpListener::accept`). An `Event` is set once, so a new wait after a close
    /// puts a fresh one here.
    fd_closed: Mutex<Arc<crate::future::Event>>,
    shutdown: AtomicBool,
    trace: Trace,
}

/// The waiting half of the reactor: the epoll instance, and what one wait fills. Only one
/// thread at a time holds it and sleeps in its `epoll_wait`: the reactor's own thread
/// (`--driver thread`), or an idle worker (`--driver worker`, behind a mutex that the others
/// only ever `try_lock`).
pub(crate) struct Driver {
    poll: mio::Poll,
    events: Events,
    /// The wakers the last turn released, for the holder to wake.
    pub(crate) woken: Vec<Waker>,
}

/// How long a turn of the driver may wait for an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Wait {
    /// Not at all: just collect what is ready (a busy worker looking in passing).
    No,
    /// Until an event, an interrupt, or the next timer is due.
    UntilTimer,
}

/// Who holds the driver, for the trace.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Holder {
    /// The reactor's own thread (`--driver thread`).
    Thread,
    /// Worker number n (`--driver worker`).
    Worker(usize),
}

impl fmt::Display for Holder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Holder::Thread => f.write_str("reactor"),
            Holder::Worker(index) => write!(f, "worker {index}"),
        }
    }
}

/// The sources by token. A token is a slot's index and that slot's generation: a freed slot
/// is reused with the next generation, so an event still in hand for the old source (read
/// by `epoll_wait` just before it was deregistered) names a token that matches nobody. With
/// the index alone it would reach the new source — and a stale "read closed" is never
/// cleared: every read of the new source would be tried forever.
#[derive(Default)]
struct Slab {
    slots: Vec<Slot>,
    free: Vec<usize>,
}

#[derive(Default)]
struct Slot {
    generation: usize,
    io: Option<Arc<ScheduledIo>>,
}

/// A token's low half is the index, its high half the generation.
const INDEX_BITS: u32 = usize::BITS / 2;
const INDEX_MASK: usize = (1 << INDEX_BITS) - 1;

fn token(index: usize, generation: usize) -> Token {
    Token((generation << INDEX_BITS) | index)
}

impl Slab {
    /// The source `token` names, if it is still registered.
    fn get(&self, token: Token) -> Option<&Arc<ScheduledIo>> {
        let (index, generation) = (token.0 & INDEX_MASK, token.0 >> INDEX_BITS);
        let slot = self.slots.get(index)?;
        (slot.generation == generation).then_some(slot.io.as_ref()?)
    }

    /// An event for `token`: sets the bits of its source and collects the wakers it releases.
    fn dispatch(&self, token: Token, bits: usize, wakers: &mut Vec<Waker>) {
        // A stale token, or the reactor's own `WAKE_TOKEN`: nobody waits.
        if let Some(io) = self.get(token) {
            io.set_ready(bits, wakers);
        }
    }
}

impl Reactor {
    /// Creates the reactor, and the driver that waits for it: whoever holds the [`Driver`]
    /// sleeps in its `epoll_wait` (`--driver thread`: the reactor's thread; `--driver
    /// worker`: an idle worker).
    pub(crate) fn new(trace: Trace) -> io::Result<(Arc<Reactor>, Driver)> {
        let poll = mio::Poll::new()?;
        let reactor = Arc::new(Reactor {
            registry: poll.registry().try_clone()?,
            waker: mio::Waker::new(poll.registry(), WAKE_TOKEN)?,
            sources: Mutex::default(),
            timers: Mutex::default(),
            fd_closed: Mutex::default(),
            shutdown: AtomicBool::new(false),
            trace,
        });
        let driver = Driver {
            poll,
            events: Events::with_capacity(1024),
            woken: Vec::new(),
        };
        Ok((reactor, driver))
    }

    /// The epoll instance's fd (a `dup` of the driver's), for tests that read its fdinfo.
    #[cfg(all(test, not(loom), not(miri)))]
    pub(crate) fn epoll_fd(&self) -> std::os::fd::RawFd {
        std::os::fd::AsRawFd::as_raw_fd(&self.registry)
    }

    /// Starts the reactor's own thread (`--driver thread`), which holds the driver for good.
    pub(crate) fn start_thread(
        self: &Arc<Self>,
        driver: Driver,
    ) -> io::Result<thread::JoinHandle<()>> {
        let reactor = Arc::clone(self);
        thread::Builder::new()
            .name("reactor".to_string())
            .spawn(move || crate::runtime::or_exit(|| reactor.run(driver)))
    }

    /// Interrupts the `epoll_wait` of whoever holds the driver (or makes the next one return
    /// at once): a new earliest timer, a worker to unpark, the shutdown.
    pub(crate) fn interrupt(&self) {
        // If this fails the eventfd's counter is full: a wake is pending anyway.
        let _ = self.waker.wake();
    }

    /// Stops the reactor's thread (at its next wake), if it has one.
    pub(crate) fn shut_down(&self) {
        self.shutdown.store(true, Ordering::SeqCst);
        self.interrupt();
    }

    /// The reactor's thread (`--driver thread`): waits for I/O and timers, and sends the
    /// tasks they wake to the injector, one batch per wait.
    fn run(&self, mut driver: Driver) {
        // Looks left before sleeping again (see `SPINS`).
        let mut spins = 0;
        while !self.shutdown.load(Ordering::SeqCst) {
            let wait = if spins > 0 {
                spins -= 1;
                thread::yield_now();
                Wait::No
            } else {
                Wait::UntilTimer
            };
            if self.turn(&mut driver, wait, Holder::Thread) > 0 {
                spins = SPINS;
            }
            // Woken with no lock held: a wake may run a lot (queue, unpark a worker).
            crate::runtime::wake_in_one_batch(driver.woken.drain(..));
        }
    }

    /// One wait for I/O: `epoll_wait` (for `wait`, and never past the next timer), then the
    /// wakers of every source it found ready and of every timer due, left in
    /// `driver.woken` for the caller to wake once it holds no lock. Returns how many events
    /// it read.
    pub(crate) fn turn(&self, driver: &mut Driver, wait: Wait, who: Holder) -> usize {
        let timeout = match wait {
            Wait::No => Some(Duration::ZERO),
            Wait::UntilTimer => {
                let timeout = self
                    .lock_timers()
                    .next_deadline()
                    .map(|deadline| deadline.saturating_duration_since(Instant::now()));
                self.trace.say(|| {
                    format!(
                        "{who}: waiting for I/O, timeout={}",
                        timeout.map_or("none".to_string(), |t| format!("{t:.1?}"))
                    )
                });
                timeout
            }
        };
        let waited = fdio::timeline::begin();
        let polled = driver.poll.poll(&mut driver.events, timeout);
        if wait == Wait::No && driver.events.is_empty() {
            // A busy worker's look in passing that found nothing: not worth a slice.
            drop(waited);
        } else {
            waited.wait("epoll_wait", || ready_args(&driver.events, timeout));
        }
        match polled {
            Ok(()) => {}
            // A signal: the caller turns again.
            Err(err) if interrupted(&err) => return 0,
            Err(err) => {
                // No way to go on: every task waiting for I/O would hang. Say it loudly.
                fdio::log!("{who}: epoll_wait failed: {err}");
                std::process::abort();
            }
        }
        {
            let sources = self.lock_sources();
            for event in driver.events.iter() {
                sources.dispatch(event.token(), readiness_of(event), &mut driver.woken);
            }
        }
        let fired = self
            .lock_timers()
            .fire_due(Instant::now(), &mut driver.woken);
        let events = driver.events.iter().count();
        if !driver.woken.is_empty() {
            self.trace.say(|| {
                format!(
                    "{who}: {} ready, {fired} timer(s) due → wake {}",
                    fdio::count(events as u64, "event"),
                    fdio::count(driver.woken.len() as u64, "task")
                )
            });
        }
        events
    }

    /// At shutdown, once no thread waits in the driver: every waker left with a source or a
    /// timer, which nothing will wake now (the runtime wakes them, so that their tasks are
    /// queued, and drops those).
    pub(crate) fn take_waiters(&self) -> Vec<Waker> {
        let sources = std::mem::take(&mut *self.lock_sources());
        let mut wakers = Vec::new();
        for io in sources.slots.into_iter().filter_map(|slot| slot.io) {
            let mut waiters = io.lock();
            wakers.extend(waiters.reader.take());
            wakers.extend(waiters.writer.take());
        }
        let timers = std::mem::take(&mut *self.lock_timers());
        wakers.extend(timers.wakers.into_values());
        wakers
    }

    fn lock_sources(&self) -> MutexGuard<'_, Slab> {
        self.sources.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn lock_timers(&self) -> MutexGuard<'_, Timers> {
        self.timers.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Registers `source` for reading, and for urgent bytes if `urgent` (a TCP stream); both
    /// directions start ready (nothing is known yet, so the first call is simply tried).
    pub(crate) fn register(
        &self,
        source: &mut impl Source,
        urgent: bool,
    ) -> io::Result<(Token, Arc<ScheduledIo>)> {
        let interest = if urgent {
            READ_AND_URGENT
        } else {
            Interest::READABLE
        };
        let io = Arc::new(ScheduledIo::new(interest));
        let mut sources = self.lock_sources();
        let index = match sources.free.pop() {
            Some(index) => index,
            None if sources.slots.len() < INDEX_MASK => {
                sources.slots.push(Slot::default());
                sources.slots.len() - 1
            }
            None => return Err(io::Error::other("too many sources for one reactor")),
        };
        let token = token(index, sources.slots[index].generation);
        if let Err(err) = self.registry.register(source, token, interest) {
            sources.free.push(index);
            return Err(err);
        }
        sources.slots[index].io = Some(Arc::clone(&io));
        Ok((token, io))
    }

    /// Forgets `source`; its waiters are dropped without being woken.
    pub(crate) fn deregister(&self, token: Token, source: &mut impl Source) {
        // Fails only if the fd is gone already: nothing to do about it.
        let _ = self.registry.deregister(source);
        let mut sources = self.lock_sources();
        if sources.get(token).is_some() {
            let index = token.0 & INDEX_MASK;
            let slot = &mut sources.slots[index];
            slot.io = None;
            slot.generation = (slot.generation + 1) & INDEX_MASK;
            sources.free.push(index);
        }
    }

    /// What a wait for the next close of a registered source's fd waits on.
    pub(crate) fn next_fd_close(&self) -> Arc<crate::future::Event> {
        let mut closed = self
            .fd_closed
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if closed.is_set() {
            *closed = Arc::default();
        }
        Arc::clone(&closed)
    }

    /// The fd of a registered source was closed: one more is free.
    pub(crate) fn fd_was_closed(&self) {
        let closed = Arc::clone(
            &self
                .fd_closed
                .lock()
                .unwrap_or_else(PoisonError::into_inner),
        );
        closed.set();
    }

    /// `Ready(tick)` if `direction` is worth trying (remember the tick for `clear_ready`);
    /// otherwise leaves `cx`'s waker and returns `Pending`. Watching a direction for the
    /// first time registers it with epoll.
    pub(crate) fn poll_ready(
        &self,
        token: Token,
        io: &ScheduledIo,
        source: &mut impl Source,
        direction: Direction,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<usize>> {
        io.poll_ready(direction, cx.waker(), |interest| {
            self.registry.reregister(source, token, interest)
        })
    }

    /// The kernel had nothing more for `direction` when we tried at `tick`: clear the bit,
    /// unless an event came since (then the call is worth trying again).
    pub(crate) fn clear_ready(io: &ScheduledIo, direction: Direction, tick: usize) {
        io.clear_ready(direction, tick);
    }

    /// A TCP read came back short at `tick`: clear the read bit, unless an event came since
    /// or one said a short read proves nothing (see the module's doc).
    pub(crate) fn read_came_short(io: &ScheduledIo, tick: usize) {
        io.read_came_short(tick);
    }

    /// Adds a timer; wakes the reactor's thread if it is now the earliest.
    pub(crate) fn add_timer(&self, deadline: Instant, waker: &Waker) -> TimerKey {
        let mut timers = self.lock_timers();
        let earliest = timers.next_deadline().is_none_or(|next| deadline < next);
        let key = timers.insert(deadline, waker);
        drop(timers);
        if earliest {
            // Whoever waits in the driver computes its timeout again.
            self.interrupt();
        }
        key
    }
}

/// A timer's place: its deadline, then a sequence number for equal deadlines.
pub(crate) type TimerKey = (Instant, u64);

/// The pending timers, earliest first (lesson 5's, behind a mutex).
#[derive(Default)]
pub(crate) struct Timers {
    wakers: BTreeMap<TimerKey, Waker>,
    next_sequence: u64,
}

impl Timers {
    fn insert(&mut self, deadline: Instant, waker: &Waker) -> TimerKey {
        let key = (deadline, self.next_sequence);
        self.next_sequence += 1;
        self.wakers.insert(key, waker.clone());
        key
    }

    pub(crate) fn remove(&mut self, key: &TimerKey) {
        self.wakers.remove(key);
    }

    fn next_deadline(&self) -> Option<Instant> {
        self.wakers.keys().next().map(|&(deadline, _)| deadline)
    }

    /// Moves the wakers of every timer due at `now` into `wakers`; returns how many.
    fn fire_due(&mut self, now: Instant, wakers: &mut Vec<Waker>) -> usize {
        let later = self.wakers.split_off(&(now, u64::MAX));
        let due = std::mem::replace(&mut self.wakers, later);
        let fired = due.len();
        wakers.extend(due.into_values());
        fired
    }
}

/// What `--timeline` shows of one `epoll_wait`: its timeout and what it found ready.
fn ready_args(events: &Events, timeout: Option<Duration>) -> fdio::timeline::Args {
    let ready: Vec<String> = events
        .iter()
        .map(|event| match event.token() {
            WAKE_TOKEN => "a wake from another thread".to_string(),
            token if event.is_readable() && event.is_writable() => format!("{token:?} read write"),
            token if event.is_writable() => format!("{token:?} write"),
            token => format!("{token:?} read"),
        })
        .collect();
    let timeout = timeout.map_or("none".to_string(), |t| format!("{t:.1?}"));
    fdio::timeline::Args::new()
        .text("timeout", timeout)
        .number("events", ready.len() as i64)
        .text("ready", ready.join(", "))
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    fn fresh() -> ScheduledIo {
        ScheduledIo::new(READ_AND_URGENT)
    }

    fn tick_and_readable(io: &ScheduledIo) -> (usize, bool) {
        let word = io.readiness.load(sync::Ordering::Acquire);
        (word >> TICK_SHIFT, word & READ != 0)
    }

    /// A `WouldBlock` seen at the current tick clears the bit: the task will wait.
    #[test]
    fn a_clear_at_the_current_tick_clears() {
        let io = fresh();
        let (tick, _) = tick_and_readable(&io);
        Reactor::clear_ready(&io, Direction::Read, tick);
        assert_eq!(tick_and_readable(&io), (tick, false));
    }

    /// An event that came between the task's `WouldBlock` (at the old tick) and its clear
    /// survives the clear: the edge is not lost, the task tries the call again.
    #[test]
    fn a_clear_after_a_newer_event_keeps_the_bit() {
        let io = fresh();
        let (seen, _) = tick_and_readable(&io);
        Reactor::clear_ready(&io, Direction::Read, seen);
        io.record(READ); // the reactor's thread, meanwhile
        Reactor::clear_ready(&io, Direction::Read, seen); // a stale clear
        assert_eq!(tick_and_readable(&io), (seen + 1, true));
    }

    /// An event read by `epoll_wait` for a source that is deregistered before the reactor
    /// looks at it, while a new source took its place (and its token's slot): the stale
    /// readiness must not reach the new source — a stale "read closed" would never be
    /// cleared, and every read of the new source would be tried forever.
    #[test]
    fn a_stale_event_for_a_reused_token_reaches_nobody() {
        let (reactor, _driver) = Reactor::new(Trace::new(false)).unwrap();
        let (old_pipe, _old_writer) = std::io::pipe().unwrap();
        let old_fd = std::os::fd::AsRawFd::as_raw_fd(&old_pipe);
        let mut old = mio::unix::SourceFd(&old_fd);
        let (old_token, _) = reactor.register(&mut old, false).unwrap();
        reactor.deregister(old_token, &mut old);
        let (new_pipe, _new_writer) = std::io::pipe().unwrap();
        let new_fd = std::os::fd::AsRawFd::as_raw_fd(&new_pipe);
        let mut new = mio::unix::SourceFd(&new_fd);
        let (new_token, io) = reactor.register(&mut new, false).unwrap();
        // The new source waits for bytes: its bit is clear, its waker is left.
        let (tick, _) = tick_and_readable(&io);
        Reactor::clear_ready(&io, Direction::Read, tick);
        let waker = std::task::Waker::noop();
        let mut cx = Context::from_waker(waker);
        assert!(
            reactor
                .poll_ready(new_token, &io, &mut new, Direction::Read, &mut cx)
                .is_pending()
        );

        let mut wakers = Vec::new();
        reactor
            .lock_sources()
            .dispatch(old_token, READ | READ_CLOSED, &mut wakers);
        assert!(wakers.is_empty(), "the stale event woke the new source");
        assert_eq!(tick_and_readable(&io), (tick, false));

        reactor.deregister(new_token, &mut new);
    }

    /// A short read at the current tick clears the bit: it took all there was.
    #[test]
    fn a_short_read_clears_at_the_current_tick() {
        let io = fresh();
        io.record(READ);
        let (tick, _) = tick_and_readable(&io);
        Reactor::read_came_short(&io, tick);
        assert_eq!(tick_and_readable(&io), (tick, false));
    }

    /// Once an event said an urgent byte waits, a short read clears nothing: it may have
    /// stopped at the mark, with bytes behind it.
    #[test]
    fn a_short_read_after_an_urgent_event_keeps_the_bit() {
        let io = fresh();
        io.record(READ | URGENT);
        io.record(READ); // later events leave the flag
        let (tick, _) = tick_and_readable(&io);
        Reactor::read_came_short(&io, tick);
        assert_eq!(tick_and_readable(&io), (tick, true));
    }

    /// The peer's close stays: reads are tried until they see the EOF.
    #[test]
    fn read_closed_is_not_cleared() {
        let io = fresh();
        io.record(READ | READ_CLOSED);
        let (tick, _) = tick_and_readable(&io);
        Reactor::clear_ready(&io, Direction::Read, tick);
        let word = io.readiness.load(sync::Ordering::Acquire);
        assert!(word & Direction::Read.ready_bits() != 0);
    }
}

#[cfg(all(test, loom))]
mod loom_tests {
    use super::*;
    use loom::sync::atomic::AtomicBool;

    /// A waker that raises a flag.
    #[derive(Default)]
    struct Flag(AtomicBool);

    impl std::task::Wake for Flag {
        fn wake(self: Arc<Self>) {
            self.0.store(true, sync::Ordering::Release);
        }
    }

    /// Bytes arrive and the reactor's thread records the event and wakes whoever waits,
    /// while a task reads: its read says `WouldBlock`, it clears the bit with the tick it saw
    /// and waits. In every interleaving the task gets the bytes, or finds the bit set
    /// again, or is woken: the edge is never lost — even when the event falls between the
    /// read and the clear.
    #[test]
    fn loom_an_event_racing_a_clear_is_never_lost() {
        loom::model(|| {
            let io = loom::sync::Arc::new(ScheduledIo::new(READ_AND_URGENT));
            let bytes = loom::sync::Arc::new(AtomicBool::new(false));
            let reactor = {
                let (io, bytes) = (loom::sync::Arc::clone(&io), loom::sync::Arc::clone(&bytes));
                loom::thread::spawn(move || {
                    bytes.store(true, sync::Ordering::Release); // the kernel's side
                    let mut wakers = Vec::new();
                    io.set_ready(READ, &mut wakers);
                    wakers.into_iter().for_each(Waker::wake);
                })
            };
            let flag = Arc::new(Flag::default());
            let waker = Waker::from(Arc::clone(&flag));
            let never_writes = |_| unreachable!("a reader never watches writes");
            let mut got_bytes = false;
            // `Registered::io`'s loop: try while the bit says so, clear on `WouldBlock`.
            let waiting = loop {
                let Poll::Ready(Ok(tick)) = io.poll_ready(Direction::Read, &waker, never_writes)
                else {
                    break true;
                };
                if bytes.load(sync::Ordering::Acquire) {
                    got_bytes = true;
                    break false;
                }
                io.clear_ready(Direction::Read, tick);
            };
            reactor.join().unwrap();
            assert!(
                got_bytes || (waiting && flag.0.load(sync::Ordering::Acquire)),
                "the task waits, and nobody will wake it"
            );
        });
    }

    /// An urgent byte arrives with bytes behind it, and the driver records its event
    /// (`READ | URGENT`), while a task's read comes back short — stopped at the mark — and
    /// clears the read bit with the tick it saw. (A plain clear, blind to the flag, fails
    /// here: the event first, then the task's tick.) In every interleaving the read bit
    /// survives: either the event came before the task's tick, and the clear sees the flag,
    /// or after it, and the tick has moved. Never "flag set, bit cleared": the bytes behind
    /// the mark would wait for an edge that never comes.
    #[test]
    fn loom_an_urgent_event_racing_a_short_read_keeps_the_bit() {
        loom::model(|| {
            let io = loom::sync::Arc::new(ScheduledIo::new(READ_AND_URGENT));
            let reactor = {
                let io = loom::sync::Arc::clone(&io);
                loom::thread::spawn(move || {
                    let mut wakers = Vec::new();
                    io.set_ready(READ | URGENT, &mut wakers);
                    wakers.into_iter().for_each(Waker::wake);
                })
            };
            // The task on a thread of its own too, so that loom runs either side first.
            let task = {
                let io = loom::sync::Arc::clone(&io);
                loom::thread::spawn(move || {
                    let never_writes = |_| unreachable!("a reader never watches writes");
                    let Poll::Ready(Ok(tick)) =
                        io.poll_ready(Direction::Read, Waker::noop(), never_writes)
                    else {
                        unreachable!("the read bit is set from the start");
                    };
                    io.read_came_short(tick);
                })
            };
            reactor.join().unwrap();
            task.join().unwrap();
            let word = io.readiness.load(sync::Ordering::Acquire);
            assert!(
                word & URGENT == 0 || word & READ != 0,
                "an urgent byte waits, and the read bit is clear"
            );
        });
    }
}
