use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::thread;

use super::*;

/// Counts the allocations made on each thread, to prove that recording while off makes none.
struct CountingAllocator;

thread_local! {
    static ALLOCATIONS: Cell<usize> = const { Cell::new(0) };
}

// Safety: every call is passed on to the system allocator unchanged; counting touches only a
// const-initialised thread-local, which allocates nothing.
unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let _ = ALLOCATIONS.try_with(|count| count.set(count.get() + 1));
        // Safety: the caller keeps GlobalAlloc::alloc's contract; System keeps the rest.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // Safety: `ptr` was allocated by `alloc` above, that is by System, with `layout`.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: CountingAllocator = CountingAllocator;

fn allocations() -> usize {
    ALLOCATIONS.with(Cell::get)
}

/// A file in memory that the test can read back.
#[derive(Clone, Default)]
struct Sink(Arc<Mutex<Vec<u8>>>);

impl Write for Sink {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        lock(&self.0).extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Sink {
    fn lines(&self) -> Vec<String> {
        String::from_utf8(lock(&self.0).clone())
            .expect("the file is UTF-8")
            .lines()
            .map(String::from)
            .collect()
    }
}

/// A recorder of its own, started, writing into memory.
fn started(limit: usize) -> (&'static Recorder, Sink) {
    let recorder: &'static Recorder = Box::leak(Box::new(Recorder::new()));
    let sink = Sink::default();
    recorder.start(Box::new(sink.clone()), "memory".into(), "test", limit);
    (recorder, sink)
}

fn tag(name: &str) -> TaskTag {
    TaskTag::of(Some(Arc::from(name)))
}

/// The event lines of a written file (not the metadata, not the brackets).
fn events(lines: &[String]) -> Vec<&String> {
    lines
        .iter()
        .filter(|line| line.starts_with("{\"name\"") && !line.contains("\"ph\":\"M\""))
        .collect()
}

/// With no timeline being recorded, naming a task, a poll, a wake, a wait and an instant
/// allocate nothing (and the poll still runs): off is one branch each.
#[test]
fn recording_while_off_allocates_nothing() {
    assert!(!enabled());
    let before = allocations();
    let tag = TaskTag::named(format_args!("conn {}", 40212));
    let polled = tag.poll(|| 6 * 7);
    tag.woken();
    begin().wait("epoll_wait", || Args::new().number("events", 1));
    instant("steal", || Args::new().number("tasks", 3));
    name_thread("loop");
    let after = allocations();
    assert_eq!(polled, 42);
    assert_eq!(after - before, 0, "recording while off allocated");
    assert!(tag.name.is_none());
}

/// Recording stops at the limit, from several threads at once, and the file ends with a note
/// that says so: never more events than the limit, however many are offered.
#[test]
fn the_event_limit_holds_across_threads() {
    let (recorder, sink) = started(100);
    thread::scope(|scope| {
        for worker in 0..4 {
            scope.spawn(move || {
                let tag = tag(&format!("task {worker}"));
                for _ in 0..1000 {
                    recorder.poll(&tag, || ());
                }
            });
        }
    });
    assert!(!recorder.on(), "still recording past the limit");
    recorder.finish().expect("written");
    let lines = sink.lines();
    let events = events(&lines);
    assert_eq!(events.len(), 101, "100 events and the note");
    let notes: Vec<_> = events
        .iter()
        .filter(|line| line.contains("\"name\":\"timeline full\""))
        .collect();
    assert_eq!(notes.len(), 1);
    assert!(notes[0].contains("recording stopped after 100 events"));
}

/// Each thread gets its own lane: a `thread_name` entry per thread, under the name it gave.
#[test]
fn each_thread_that_records_has_a_named_lane() {
    let (recorder, sink) = started(1000);
    thread::scope(|scope| {
        for name in ["reactor", "worker 0", "worker 1"] {
            scope.spawn(move || {
                recorder.name_thread(name);
                recorder.poll(&tag("t"), || ());
            });
        }
    });
    recorder.finish().expect("written");
    let lines = sink.lines();
    let lanes: Vec<_> = lines
        .iter()
        .filter(|line| line.contains("\"name\":\"thread_name\""))
        .collect();
    assert_eq!(lanes.len(), 3, "{lines:#?}");
    for name in ["reactor", "worker 0", "worker 1"] {
        assert!(
            lanes
                .iter()
                .any(|line| line.contains(&format!("\"args\":{{\"name\":\"{name}\"}}"))),
            "no lane named {name}: {lanes:#?}"
        );
    }
}

/// A wake from another thread becomes one arrow to the task's next poll: both ends carry
/// the same id, the start on the waker's thread, the end inside the poll's slice; more wakes
/// before that poll add nothing.
#[test]
fn a_wake_points_at_the_next_poll() {
    let (recorder, sink) = started(1000);
    let task = tag("conn 127.0.0.1:40212");
    thread::scope(|scope| {
        scope.spawn(|| {
            recorder.woken(&task);
            recorder.woken(&task);
        });
    });
    recorder.poll(&task, || ());
    recorder.poll(&task, || ()); // not woken: no arrow
    recorder.finish().expect("written");
    let lines = sink.lines();
    let events = events(&lines);
    let starts: Vec<_> = events
        .iter()
        .filter(|e| e.contains("\"ph\":\"s\""))
        .collect();
    let ends: Vec<_> = events
        .iter()
        .filter(|e| e.contains("\"ph\":\"f\""))
        .collect();
    assert_eq!((starts.len(), ends.len()), (1, 1), "{events:#?}");
    assert!(starts[0].contains("\"id\":1,") && ends[0].contains("\"id\":1,"));
    assert!(ends[0].contains("\"bp\":\"e\""));
    // The waker's thread had no slice open: the wake got one of its own, 2 ns long.
    assert!(
        events
            .iter()
            .any(|e| e.contains("\"name\":\"wake\",\"cat\":\"wake\",\"ph\":\"X\""))
    );
    let polls = events
        .iter()
        .filter(|e| e.contains("\"cat\":\"poll\""))
        .count();
    assert_eq!(polls, 2);
}

/// A wake whose poll never comes (the task ended first) leaves no half arrow in the file.
#[test]
fn a_wake_never_answered_is_left_out() {
    let (recorder, sink) = started(1000);
    let task = tag("done");
    recorder.poll(&task, || recorder.woken(&task));
    recorder.finish().expect("written");
    let lines = sink.lines();
    let events = events(&lines);
    assert!(
        !events
            .iter()
            .any(|e| e.contains("\"ph\":\"s\"") || e.contains("\"ph\":\"f\"")),
        "{events:#?}"
    );
    assert_eq!(events.len(), 1, "only the poll: {events:#?}");
}

/// Names and args are escaped: a quote or a newline in a name cannot break the JSON.
#[test]
fn names_and_args_are_escaped() {
    let (recorder, sink) = started(1000);
    recorder.poll(&tag("say \"hi\"\n"), || ());
    recorder.instant("note", || {
        Args::new().text("path", "C:\\tmp").number("n", -3)
    });
    recorder.finish().expect("written");
    let lines = sink.lines();
    assert!(
        lines
            .iter()
            .any(|line| line.contains("\"name\":\"say \\\"hi\\\"\\n\""))
    );
    assert!(
        lines
            .iter()
            .any(|line| line.contains("\"args\":{\"path\":\"C:\\\\tmp\",\"n\":-3}"))
    );
}

/// The file is written once: a second `finish` writes nothing more.
#[test]
fn finishing_twice_writes_once() {
    let (recorder, sink) = started(1000);
    recorder.poll(&tag("t"), || ());
    let said = recorder.finish().expect("written").expect("a summary line");
    assert!(
        said.starts_with("timeline: 1 event written to memory"),
        "{said}"
    );
    let length = sink.lines().len();
    assert_eq!(recorder.finish().expect("nothing to do"), None);
    assert_eq!(sink.lines().len(), length);
}
