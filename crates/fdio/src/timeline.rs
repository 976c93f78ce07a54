//! `--timeline FILE`: what a runtime did, when, and on which thread, written in Chrome's
//! Trace Event Format (JSON). ui.perfetto.dev and chrome://tracing open the file; `cargo run
//! --bin timeline -- FILE --svg out.svg` draws it without a browser.
//!
//! A runtime records four things, each at one place in its code:
//! - a **poll** of a task: a slice on the polling thread's lane, named for the task
//!   ([`TaskTag::poll`]);
//! - a **wait** (`epoll_wait`, `io_uring_enter`, a worker parked): a slice with what the wait
//!   returned as its args ([`Span::wait`]), and work done outside any task ([`Span::work`]);
//! - a **wake**: an arrow (a flow event) from where `wake()` was called to the next poll of the
//!   task it woke ([`TaskTag::woken`]);
//! - an **instant**: a steal, a signal ([`instant`]).
//!
//! Off — no `--timeline` — each of these costs one load and one compare: no clock is read,
//! nothing is allocated or locked. On, each thread appends to a buffer of its own (its lock is
//! contended only by the final write), and after [`EVENT_LIMIT`] events recording stops, with
//! a note in the file that says so: memory stays bounded however long the program runs. The
//! file is written when the [`Recording`] that [`record`] returns is dropped: when `main`
//! returns, after a graceful shutdown, or while a panic unwinds `main`.
//!
//! ```text
//! {"traceEvents":[
//! {"name":"epoll_wait","cat":"wait","ph":"X","ts":812.003,"dur":20031.118,"pid":7,"tid":7,"args":{"events":1,"ready":"Token(0) read"}},
//! {"name":"wake","cat":"wake","ph":"s","id":3,"ts":20843.301,"pid":7,"tid":7},
//! {"name":"conn 127.0.0.1:40212","cat":"poll","ph":"X","ts":20845.760,"dur":14.020,"pid":7,"tid":7},
//! {"name":"wake","cat":"wake","ph":"f","bp":"e","id":3,"ts":20852.770,"pid":7,"tid":7},
//! …
//! ```

use std::cell::{Cell, RefCell};
use std::collections::HashSet;
use std::fmt::{self, Display, Write as _};
use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::os::unix::fs::FileTypeExt as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::Instant;

/// How many events a recording keeps, at most: about 100 bytes each in memory (more for a
/// wait's args), and as much again in the file. Past it, recording stops with a note.
pub const EVENT_LIMIT: usize = 500_000;

/// The process's recorder, the one `--timeline` turns on.
static RECORDER: Recorder = Recorder::new();

/// Starts recording if `path` is given (the `--timeline` option), for `program` (the process
/// name the viewer shows: `async-await echo`). The file is created now, so a bad path (or a
/// FIFO) fails before the program runs; it is written when the returned [`Recording`] is
/// dropped.
/// Without a path this does nothing, and every recording call stays one branch.
pub fn record(path: Option<&Path>, program: &str) -> io::Result<Recording> {
    let Some(path) = path else {
        return Ok(Recording { active: false });
    };
    let failed = |err: &dyn Display| format!("--timeline {}: {err}", path.display());
    // The trace is written in one go at the end: to a FIFO, the open would wait for a reader
    // before the program starts, and a reader that stops would hold its end, deaf to signals.
    if std::fs::metadata(path).is_ok_and(|found| found.file_type().is_fifo()) {
        let why = "a FIFO: the trace is written in one go when the program ends, and a FIFO \
                   nobody reads would stop it there; give a file";
        return Err(io::Error::new(io::ErrorKind::InvalidInput, failed(&why)));
    }
    let file = File::create(path).map_err(|err| io::Error::new(err.kind(), failed(&err)))?;
    RECORDER.start(Box::new(file), path.to_path_buf(), program, EVENT_LIMIT);
    Ok(Recording { active: true })
}

/// A recording in progress; dropping it writes the file (and says so in one stderr line).
#[must_use = "the timeline is written when this is dropped"]
pub struct Recording {
    active: bool,
}

impl Drop for Recording {
    fn drop(&mut self) {
        if self.active {
            match RECORDER.finish() {
                Ok(Some(summary)) => crate::log!("{summary}"),
                Ok(None) => {}
                Err(err) => crate::log!("timeline: {err}"),
            }
        }
    }
}

/// Whether a timeline is being recorded: for work done only to be recorded.
pub fn enabled() -> bool {
    RECORDER.on()
}

/// Names the calling thread's lane (`loop`, `reactor`, `worker 2`). A thread never named
/// shows its std name (`main`, `worker-0`), or its id.
pub fn name_thread(name: &str) {
    RECORDER.name_thread(name);
}

/// Records a moment on the calling thread's lane: a steal, a signal.
pub fn instant(name: &'static str, args: impl FnOnce() -> Args) {
    RECORDER.instant(name, args);
}

/// Starts a slice on the calling thread's lane; [`Span::wait`] or [`Span::work`] ends it.
pub fn begin() -> Span {
    RECORDER.begin()
}

/// What the timeline knows of one task: its name, and the wake its next poll answers. A
/// runtime keeps one in each task, where both the poll and the waker reach it.
pub struct TaskTag {
    /// `None` when no timeline is being recorded: nothing was formatted.
    name: Option<Arc<str>>,
    /// The flow id of the wake not yet answered by a poll; 0 for none.
    wake: AtomicU64,
}

impl TaskTag {
    /// A task called `name` (`conn 127.0.0.1:40212`, `accept`); the name is formatted only
    /// while a timeline is being recorded.
    pub fn named(name: impl Display) -> TaskTag {
        TaskTag::of(RECORDER.on().then(|| Arc::from(name.to_string())))
    }

    /// A task with no name of its own: `task 3`.
    pub fn numbered(number: u64) -> TaskTag {
        TaskTag::of(RECORDER.on().then(|| Arc::from(format!("task {number}"))))
    }

    /// A tag whose first poll answers its spawn: a new task is ready, as if woken.
    fn of(name: Option<Arc<str>>) -> TaskTag {
        let tag = TaskTag {
            name,
            wake: AtomicU64::new(0),
        };
        tag.woken();
        tag
    }

    /// Runs `poll` (one poll of the task), recorded as a slice named for the task; the wake
    /// that came before it, if any, points here.
    pub fn poll<R>(&self, poll: impl FnOnce() -> R) -> R {
        RECORDER.poll(self, poll)
    }

    /// The task was woken: an arrow starts here and ends at its next poll. Wakes that come
    /// before that poll add nothing: it answers them all.
    pub fn woken(&self) {
        RECORDER.woken(self);
    }
}

/// A slice being timed: from [`begin`] to [`Span::wait`] or [`Span::work`] (or to
/// [`Span::stop`], when what the slice's args say is known only later).
#[must_use = "a span records nothing until it is ended"]
pub struct Span {
    recorder: &'static Recorder,
    /// When it began, in ns since the recording started; `None` when off.
    start: Option<u64>,
}

impl Span {
    /// Ends the slice as a wait (drawn grey): `epoll_wait`, `io_uring_enter`, `park`.
    pub fn wait(self, name: &'static str, args: impl FnOnce() -> Args) {
        self.stop().wait(name, args);
    }

    /// Ends the slice as work done outside any task (a job of the blocking pool).
    pub fn work(self, name: &'static str, args: impl FnOnce() -> Args) {
        self.stop().work(name, args);
    }

    /// Ends the slice now, to be recorded later with [`Stopped::wait`] or [`Stopped::work`]:
    /// an `io_uring_enter` whose completions are read after it returns.
    pub fn stop(mut self) -> Stopped {
        let times = self.start.take().map(|start| {
            leave_slice();
            (start, self.recorder.now())
        });
        Stopped {
            recorder: self.recorder,
            times,
        }
    }
}

impl Drop for Span {
    fn drop(&mut self) {
        if self.start.is_some() {
            leave_slice(); // dropped without being ended (a panic): recorded as nothing
        }
    }
}

/// A slice that has ended and is not yet recorded ([`Span::stop`]).
#[must_use = "a stopped span records nothing until it is given a name"]
pub struct Stopped {
    recorder: &'static Recorder,
    /// Its start and end, in ns since the recording started; `None` when off.
    times: Option<(u64, u64)>,
}

impl Stopped {
    /// Records the slice as a wait (drawn grey).
    pub fn wait(self, name: &'static str, args: impl FnOnce() -> Args) {
        self.record(name, "wait", args);
    }

    /// Records the slice as work done outside any task.
    pub fn work(self, name: &'static str, args: impl FnOnce() -> Args) {
        self.record(name, "work", args);
    }

    fn record(self, name: &'static str, cat: &'static str, args: impl FnOnce() -> Args) {
        if let Some((start, end)) = self.times {
            self.recorder
                .slice(Name::Static(name), cat, start, end, args().0);
        }
    }
}

/// An event's args, as a JSON object: `Args::new().number("events", 2).text("ready", …)`.
#[derive(Default)]
pub struct Args(String);

impl Args {
    pub fn new() -> Args {
        Args::default()
    }

    /// Adds `"key":value`.
    pub fn number(self, key: &str, value: impl Into<i64>) -> Args {
        self.field(key, format_args!("{}", value.into()))
    }

    /// Adds `"key":"text"`, escaped.
    pub fn text(self, key: &str, text: impl Display) -> Args {
        self.field(key, format_args!("\"{}\"", Escaped(&text.to_string())))
    }

    fn field(mut self, key: &str, value: fmt::Arguments<'_>) -> Args {
        let separator = if self.0.is_empty() { "" } else { "," };
        let _ = write!(self.0, "{separator}\"{}\":{value}", Escaped(key));
        self
    }
}

/// The recorder: per-thread buffers, the limit, the clock. One per process ([`record`]);
/// tests make their own.
pub(crate) struct Recorder {
    on: AtomicBool,
    /// Tells recorders apart in the threads' `LOCAL` (0 until first used).
    id: AtomicUsize,
    limit: AtomicUsize,
    /// Events offered so far, kept or not.
    offered: AtomicUsize,
    next_flow: AtomicU64,
    epoch: OnceLock<Instant>,
    threads: Mutex<Vec<Arc<ThreadBuffer>>>,
    output: Mutex<Option<Output>>,
}

/// Where and for whom the file is written.
struct Output {
    sink: Box<dyn Write + Send>,
    path: PathBuf,
    program: String,
}

/// One thread's lane: its events, appended by that thread only.
struct ThreadBuffer {
    tid: i32,
    /// Lanes are drawn in the order threads first recorded something.
    order: usize,
    name: Mutex<String>,
    /// In chunks of [`CHUNK`]: a buffer that grows is never copied to a larger one (a
    /// recording near its limit would copy tens of megabytes at a time).
    events: Mutex<Vec<Vec<Event>>>,
}

/// Events per chunk of a thread's buffer.
const CHUNK: usize = 4096;

impl ThreadBuffer {
    fn push(&self, event: Event) {
        let mut chunks = lock(&self.events);
        match chunks.last_mut() {
            Some(chunk) if chunk.len() < CHUNK => chunk.push(event),
            _ => {
                let mut chunk = Vec::with_capacity(CHUNK);
                chunk.push(event);
                chunks.push(chunk);
            }
        }
    }
}

struct Event {
    phase: Phase,
    name: Name,
    cat: &'static str,
    /// ns since the recording started.
    ts: u64,
    /// ns; complete events only.
    dur: u64,
    /// Flow events only.
    flow: u64,
    /// A JSON object's inside, or empty.
    args: String,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Phase {
    Complete,
    Instant,
    /// Global scope: the note that recording stopped.
    Note,
    FlowStart,
    FlowEnd,
}

enum Name {
    Static(&'static str),
    Shared(Arc<str>),
}

impl Name {
    fn as_str(&self) -> &str {
        match self {
            Name::Static(name) => name,
            Name::Shared(name) => name,
        }
    }
}

thread_local! {
    /// This thread's buffer, and the recorder it belongs to.
    static LOCAL: RefCell<Option<(usize, Arc<ThreadBuffer>)>> = const { RefCell::new(None) };
    /// Slices open on this thread (a poll, a span): a wake with none gets a slice of its own,
    /// so its arrow has somewhere to start.
    static OPEN_SLICES: Cell<usize> = const { Cell::new(0) };
}

fn enter_slice() {
    let _ = OPEN_SLICES.try_with(|open| open.set(open.get() + 1));
}

fn leave_slice() {
    let _ = OPEN_SLICES.try_with(|open| open.set(open.get().saturating_sub(1)));
}

fn in_a_slice() -> bool {
    OPEN_SLICES.try_with(|open| open.get() > 0).unwrap_or(false)
}

/// Leaves the slice when dropped: a poll that unwinds leaves it too.
struct SliceGuard;

impl Drop for SliceGuard {
    fn drop(&mut self) {
        leave_slice();
    }
}

impl Recorder {
    pub(crate) const fn new() -> Recorder {
        Recorder {
            on: AtomicBool::new(false),
            id: AtomicUsize::new(0),
            limit: AtomicUsize::new(0),
            offered: AtomicUsize::new(0),
            next_flow: AtomicU64::new(1),
            epoch: OnceLock::new(),
            threads: Mutex::new(Vec::new()),
            output: Mutex::new(None),
        }
    }

    /// The one check every recording call makes first.
    #[inline]
    fn on(&self) -> bool {
        self.on.load(Ordering::Relaxed)
    }

    pub(crate) fn start(
        &self,
        sink: Box<dyn Write + Send>,
        path: PathBuf,
        program: &str,
        limit: usize,
    ) {
        self.epoch.get_or_init(Instant::now);
        self.limit.store(limit, Ordering::Relaxed);
        *lock(&self.output) = Some(Output {
            sink,
            path,
            program: program.to_string(),
        });
        self.on.store(true, Ordering::Release);
    }

    /// ns since the recording started.
    fn now(&self) -> u64 {
        let epoch = self.epoch.get_or_init(Instant::now);
        epoch.elapsed().as_nanos() as u64
    }

    fn poll<R>(&self, tag: &TaskTag, poll: impl FnOnce() -> R) -> R {
        if !self.on() {
            return poll();
        }
        let wake = tag.wake.swap(0, Ordering::AcqRel);
        let start = self.now();
        enter_slice();
        let guard = SliceGuard;
        let output = poll();
        drop(guard);
        let end = self.now();
        let name = match &tag.name {
            Some(name) => Name::Shared(Arc::clone(name)),
            None => Name::Static("task"),
        };
        self.push(Event {
            phase: Phase::Complete,
            name,
            cat: "poll",
            ts: start,
            dur: end - start,
            flow: 0,
            args: String::new(),
        });
        if wake != 0 {
            // Inside the poll's slice (bp "e" binds a flow's end to the enclosing slice).
            self.push(flow(Phase::FlowEnd, wake, start + (end - start) / 2));
        }
        output
    }

    fn woken(&self, tag: &TaskTag) {
        if !self.on() || tag.wake.load(Ordering::Acquire) != 0 {
            return;
        }
        let id = self.next_flow.fetch_add(1, Ordering::Relaxed);
        if tag
            .wake
            .compare_exchange(0, id, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            return; // another thread woke it first: that wake is the one answered
        }
        let now = self.now();
        if in_a_slice() {
            self.push(flow(Phase::FlowStart, id, now));
        } else {
            // A wake outside any slice (the reactor handing out events, a timer): a slice of
            // its own, 2 ns long, for the arrow to start from.
            let task = tag.name.as_deref().unwrap_or("task");
            self.push(Event {
                phase: Phase::Complete,
                name: Name::Static("wake"),
                cat: "wake",
                ts: now,
                dur: 2,
                flow: 0,
                args: Args::new().text("task", task).0,
            });
            self.push(flow(Phase::FlowStart, id, now + 1));
        }
    }

    fn begin(&'static self) -> Span {
        if !self.on() {
            return Span {
                recorder: self,
                start: None,
            };
        }
        enter_slice();
        Span {
            recorder: self,
            start: Some(self.now()),
        }
    }

    fn slice(&self, name: Name, cat: &'static str, start: u64, end: u64, args: String) {
        if !self.on() {
            return;
        }
        self.push(Event {
            phase: Phase::Complete,
            name,
            cat,
            ts: start,
            dur: end - start,
            flow: 0,
            args,
        });
    }

    fn instant(&self, name: &'static str, args: impl FnOnce() -> Args) {
        if !self.on() {
            return;
        }
        let ts = self.now();
        self.push(Event {
            phase: Phase::Instant,
            name: Name::Static(name),
            cat: "event",
            ts,
            dur: 0,
            flow: 0,
            args: args().0,
        });
    }

    fn name_thread(&self, name: &str) {
        if self.on() {
            self.with_buffer(|buffer| *lock(&buffer.name) = name.to_string());
        }
    }

    /// Keeps `event` unless the limit is reached; the first event past it is replaced by a
    /// note saying so, and recording stops.
    fn push(&self, event: Event) {
        let limit = self.limit.load(Ordering::Relaxed);
        let offered = self.offered.fetch_add(1, Ordering::Relaxed);
        if offered < limit {
            self.with_buffer(|buffer| buffer.push(event));
        } else if offered == limit {
            self.on.store(false, Ordering::Relaxed);
            let note = format!(
                "recording stopped after {limit} events, the limit: what came later is not here"
            );
            self.with_buffer(|buffer| {
                buffer.push(Event {
                    phase: Phase::Note,
                    name: Name::Static("timeline full"),
                    cat: "note",
                    ts: event.ts,
                    dur: 0,
                    flow: 0,
                    args: Args::new().text("note", note).0,
                })
            });
        }
    }

    /// Runs `f` with this thread's buffer, made and listed the first time.
    fn with_buffer(&self, f: impl FnOnce(&ThreadBuffer)) {
        let id = self.id();
        let _ = LOCAL.try_with(|local| {
            let mut local = local.borrow_mut();
            match &*local {
                Some((recorder, buffer)) if *recorder == id => f(buffer),
                _ => {
                    let buffer = self.new_buffer();
                    f(&buffer);
                    *local = Some((id, buffer));
                }
            }
        });
    }

    fn new_buffer(&self) -> Arc<ThreadBuffer> {
        let mut threads = lock(&self.threads);
        let tid = nix::unistd::gettid().as_raw();
        let thread = std::thread::current();
        let buffer = Arc::new(ThreadBuffer {
            tid,
            order: threads.len(),
            name: Mutex::new(
                thread
                    .name()
                    .map_or_else(|| format!("thread {tid}"), String::from),
            ),
            events: Mutex::new(Vec::new()),
        });
        threads.push(Arc::clone(&buffer));
        buffer
    }

    fn id(&self) -> usize {
        static NEXT: AtomicUsize = AtomicUsize::new(1);
        match self.id.load(Ordering::Relaxed) {
            0 => {
                let fresh = NEXT.fetch_add(1, Ordering::Relaxed);
                match self
                    .id
                    .compare_exchange(0, fresh, Ordering::Relaxed, Ordering::Relaxed)
                {
                    Ok(_) => fresh,
                    Err(taken) => taken,
                }
            }
            id => id,
        }
    }

    /// Stops recording and writes the file; the line to tell the user, or `None` if nothing
    /// was being recorded (or it was written already).
    pub(crate) fn finish(&self) -> io::Result<Option<String>> {
        self.on.store(false, Ordering::SeqCst);
        let Some(mut output) = lock(&self.output).take() else {
            return Ok(None);
        };
        let threads: Vec<Arc<ThreadBuffer>> = std::mem::take(&mut *lock(&self.threads));
        let written = write_trace(&mut output.sink, &output.program, &threads)
            .and_then(|written| output.sink.flush().map(|()| written))
            .map_err(|err| {
                io::Error::new(
                    err.kind(),
                    format!("cannot write {}: {err}", output.path.display()),
                )
            })?;
        let path = output.path.display();
        let written = crate::count(written as u64, "event");
        Ok(Some(format!(
            "timeline: {written} written to {path} (open it in ui.perfetto.dev, or draw \
             it: cargo run --bin timeline -- {path} --svg timeline.svg)"
        )))
    }
}

fn flow(phase: Phase, id: u64, ts: u64) -> Event {
    Event {
        phase,
        name: Name::Static("wake"),
        cat: "wake",
        ts,
        dur: 0,
        flow: id,
        args: String::new(),
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Writes the JSON: metadata (the process and each lane's name), then every event in time
/// order, one per line. A wake whose poll never came (the task ended first, or the limit cut
/// it off) is left out, so every flow in the file has both ends. Returns the events written.
fn write_trace(
    sink: &mut dyn Write,
    program: &str,
    threads: &[Arc<ThreadBuffer>],
) -> io::Result<usize> {
    let pid = std::process::id();
    let mut events: Vec<(i32, Event)> = Vec::new();
    for thread in threads {
        let taken = std::mem::take(&mut *lock(&thread.events));
        events.extend(taken.into_iter().flatten().map(|event| (thread.tid, event)));
    }
    let ids = |phase: Phase| -> HashSet<u64> {
        events
            .iter()
            .filter(|(_, event)| event.phase == phase)
            .map(|(_, event)| event.flow)
            .collect()
    };
    let (starts, ends) = (ids(Phase::FlowStart), ids(Phase::FlowEnd));
    events.retain(|(_, event)| match event.phase {
        Phase::FlowStart => ends.contains(&event.flow),
        Phase::FlowEnd => starts.contains(&event.flow),
        _ => true,
    });
    events.sort_by_key(|(_, event)| event.ts);

    let mut out = BufWriter::new(sink);
    writeln!(out, "{{\"traceEvents\":[")?;
    let metadata = |out: &mut BufWriter<&mut dyn Write>, name: &str, tid: i32, args: &str| {
        writeln!(
            out,
            "{{\"name\":\"{name}\",\"ph\":\"M\",\"ts\":0,\"pid\":{pid},\"tid\":{tid},\"args\":{{{args}}}}},"
        )
    };
    metadata(
        &mut out,
        "process_name",
        pid as i32,
        &Args::new().text("name", program).0,
    )?;
    for thread in threads {
        let name = lock(&thread.name).clone();
        metadata(
            &mut out,
            "thread_name",
            thread.tid,
            &Args::new().text("name", name).0,
        )?;
        let order = Args::new().number("sort_index", thread.order as i64).0;
        metadata(&mut out, "thread_sort_index", thread.tid, &order)?;
    }
    for (tid, event) in &events {
        let phase = match event.phase {
            Phase::Complete => "X",
            Phase::Instant | Phase::Note => "i",
            Phase::FlowStart => "s",
            Phase::FlowEnd => "f",
        };
        write!(
            out,
            "{{\"name\":\"{}\",\"cat\":\"{}\",\"ph\":\"{phase}\",\"ts\":{}",
            Escaped(event.name.as_str()),
            event.cat,
            Micros(event.ts)
        )?;
        match event.phase {
            Phase::Complete => write!(out, ",\"dur\":{}", Micros(event.dur))?,
            Phase::Instant => write!(out, ",\"s\":\"t\"")?,
            Phase::Note => write!(out, ",\"s\":\"g\"")?,
            Phase::FlowStart => write!(out, ",\"id\":{}", event.flow)?,
            Phase::FlowEnd => write!(out, ",\"id\":{},\"bp\":\"e\"", event.flow)?,
        }
        write!(out, ",\"pid\":{pid},\"tid\":{tid}")?;
        if !event.args.is_empty() {
            write!(out, ",\"args\":{{{}}}", event.args)?;
        }
        writeln!(out, "}},")?;
    }
    // JSON allows no comma after the last element: the metadata ends the list instead.
    writeln!(
        out,
        "{{\"name\":\"process_sort_index\",\"ph\":\"M\",\"ts\":0,\"pid\":{pid},\"tid\":{pid},\"args\":{{\"sort_index\":0}}}}"
    )?;
    writeln!(out, "],\"displayTimeUnit\":\"ms\"}}")?;
    out.flush()?;
    Ok(events.len())
}

/// ns written as µs, the format's unit, to the ns: `20843.301`.
struct Micros(u64);

impl Display for Micros {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{:03}", self.0 / 1000, self.0 % 1000)
    }
}

/// A string's inside, escaped for JSON.
struct Escaped<'a>(&'a str);

impl Display for Escaped<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for c in self.0.chars() {
            match c {
                '"' => f.write_str("\\\"")?,
                '\\' => f.write_str("\\\\")?,
                '\n' => f.write_str("\\n")?,
                c if c.is_control() => write!(f, "\\u{:04x}", c as u32)?,
                c => f.write_char(c)?,
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
