//! The scheduler's own tests. Each runs a scheduler on a thread of its own, so a task that is
//! never resumed fails its test after a bounded wait instead of hanging it.

use super::*;
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::sync::mpsc::{self, Receiver, Sender};
use std::thread;

use fdio::{set_nonblocking, would_block};

const PATIENCE: Duration = Duration::from_secs(10);

/// Runs the scheduler `build` makes on a new thread; its result comes on the receiver.
fn run_on_a_thread(
    build: impl FnOnce() -> io::Result<Scheduler> + Send + 'static,
) -> Receiver<io::Result<()>> {
    let (send_result, result) = mpsc::channel();
    thread::spawn(move || {
        let _ = send_result.send(build().and_then(|mut scheduler| scheduler.run()));
    });
    result
}

fn finished_cleanly(result: &Receiver<io::Result<()>>) -> bool {
    matches!(result.recv_timeout(PATIENCE), Ok(Ok(())))
}

/// A task that first waits for its source, then reads it one read per turn until EOF, and
/// reports every step it returns along with all it has read so far.
struct Reader<R> {
    source: R,
    started: bool,
    read: Vec<u8>,
    report: Sender<(Step, Vec<u8>)>,
}

impl<R> Reader<R> {
    fn new(source: R, report: Sender<(Step, Vec<u8>)>) -> Reader<R> {
        Reader {
            source,
            started: false,
            read: Vec::new(),
            report,
        }
    }
}

impl<R: Read + AsRawFd> Task for Reader<R> {
    fn resume(&mut self, ctx: &mut Context<'_>) -> io::Result<Step> {
        let fd = self.source.as_raw_fd();
        let step = if !self.started {
            self.started = true;
            Step::Read(fd)
        } else {
            match self.source.read(ctx.buf) {
                Ok(0) => Step::Done,
                Ok(n) => {
                    self.read.extend_from_slice(&ctx.buf[..n]);
                    Step::Yield
                }
                Err(err) if would_block(&err) => Step::Read(fd),
                Err(err) => return Err(err),
            }
        };
        let _ = self.report.send((step, self.read.clone()));
        Ok(step)
    }

    fn describe(&self) -> String {
        "reader".to_string()
    }
}

/// Collects reports until the task says `Done`; returns what it had read by then.
fn read_until_done(reports: &Receiver<(Step, Vec<u8>)>) -> Vec<u8> {
    loop {
        match reports.recv_timeout(PATIENCE) {
            Ok((Step::Done, read)) => return read,
            Ok(_) => {}
            Err(err) => panic!("the task was not resumed: {err}"),
        }
    }
}

fn nonblocking_pipe() -> (io::PipeReader, io::PipeWriter) {
    let (reader, writer) = io::pipe().unwrap();
    set_nonblocking(&reader).unwrap();
    (reader, writer)
}

/// A task parked on `Read(fd)` stays parked while the fd is empty, and is resumed once
/// bytes arrive; it reads them and, at EOF, finishes, which ends the scheduler's run.
#[test]
fn a_parked_task_is_resumed_once_its_fd_is_readable() {
    let (reader, mut writer) = nonblocking_pipe();
    let fd = reader.as_raw_fd();
    let (report, reports) = mpsc::channel();
    let result = run_on_a_thread(move || {
        let mut scheduler = Scheduler::new(Trace::new(false))?;
        scheduler.spawn(Reader::new(reader, report));
        Ok(scheduler)
    });
    assert_eq!(reports.recv_timeout(PATIENCE), Ok((Step::Read(fd), vec![])));
    // Give the scheduler time to fall asleep in epoll: nothing may wake the task before this.
    thread::sleep(Duration::from_millis(100));
    assert!(reports.try_recv().is_err(), "resumed with nothing to read");

    writer.write_all(b"hello").unwrap();
    drop(writer);
    assert_eq!(read_until_done(&reports), b"hello");
    assert!(finished_cleanly(&result));
}

/// Parking before the first read is safe: registering an fd with epoll reports what is
/// already waiting in it (the stdin task relies on this).
#[test]
fn registering_reports_what_is_already_there() {
    let (reader, mut writer) = nonblocking_pipe();
    writer.write_all(b"early").unwrap();
    drop(writer);
    let (report, reports) = mpsc::channel();
    let result = run_on_a_thread(move || {
        let mut scheduler = Scheduler::new(Trace::new(false))?;
        scheduler.spawn(Reader::new(reader, report));
        Ok(scheduler)
    });
    assert_eq!(read_until_done(&reports), b"early");
    assert!(finished_cleanly(&result));
}

/// epoll refuses a regular file (EPERM); the scheduler then treats it as always ready, and
/// the task parked on it runs on instead of waiting forever.
#[test]
fn an_fd_epoll_refuses_counts_as_always_ready() {
    let path = std::env::temp_dir().join(format!(
        "lesson-generators-{}-always-ready",
        std::process::id()
    ));
    std::fs::write(&path, "from a file\n").unwrap();
    let file = File::open(&path).unwrap();
    std::fs::remove_file(&path).unwrap();
    let fd = file.as_raw_fd();
    let (report, reports) = mpsc::channel();
    let result = run_on_a_thread(move || {
        let mut scheduler = Scheduler::new(Trace::new(false))?;
        scheduler.spawn(Reader::new(file, report));
        Ok(scheduler)
    });
    assert_eq!(reports.recv_timeout(PATIENCE), Ok((Step::Read(fd), vec![])));
    assert_eq!(read_until_done(&reports), b"from a file\n");
    assert!(finished_cleanly(&result));
}

/// A task that sleeps until an instant, then reports when it was resumed and finishes.
struct Sleeper {
    until: Instant,
    slept: bool,
    woke: Sender<Instant>,
}

impl Task for Sleeper {
    fn resume(&mut self, _ctx: &mut Context<'_>) -> io::Result<Step> {
        if !self.slept {
            self.slept = true;
            return Ok(Step::Sleep(self.until));
        }
        let _ = self.woke.send(Instant::now());
        Ok(Step::Done)
    }

    fn describe(&self) -> String {
        "sleeper".to_string()
    }
}

/// `Sleep(until)` parks a task until its instant: it is resumed then, not before.
#[test]
fn a_sleeping_task_wakes_at_its_instant() {
    let until = Instant::now() + Duration::from_millis(200);
    let (woke, woken) = mpsc::channel();
    let result = run_on_a_thread(move || {
        let mut scheduler = Scheduler::new(Trace::new(false))?;
        scheduler.spawn(Sleeper {
            until,
            slept: false,
            woke,
        });
        Ok(scheduler)
    });
    let woke_at = woken
        .recv_timeout(PATIENCE)
        .expect("the sleeper never woke");
    assert!(woke_at >= until);
    assert!(woke_at < until + PATIENCE);
    assert!(finished_cleanly(&result));
}

/// A task that yields turn after turn until the reader it watches has read something.
struct Busy {
    reader_reports: Receiver<(Step, Vec<u8>)>,
    turns_left: u32,
}

impl Task for Busy {
    fn resume(&mut self, _ctx: &mut Context<'_>) -> io::Result<Step> {
        while let Ok((_, read)) = self.reader_reports.try_recv() {
            if !read.is_empty() {
                return Ok(Step::Done);
            }
        }
        self.turns_left = self
            .turns_left
            .checked_sub(1)
            .ok_or_else(|| io::Error::other("the reader never ran: the busy task starved it"))?;
        Ok(Step::Yield)
    }

    fn describe(&self) -> String {
        "busy".to_string()
    }
}

/// A task that always has more to do does not starve a parked one: while tasks are ready
/// the scheduler still asks epoll, without sleeping, once per turn.
#[test]
fn a_busy_task_does_not_starve_a_parked_one() {
    let (reader, mut writer) = nonblocking_pipe();
    writer.write_all(b"data").unwrap();
    drop(writer);
    let result = run_on_a_thread(move || {
        let (report, reader_reports) = mpsc::channel();
        let mut scheduler = Scheduler::new(Trace::new(false))?;
        scheduler.spawn(Busy {
            reader_reports,
            turns_left: 1_000_000,
        });
        scheduler.spawn(Reader::new(reader, report));
        Ok(scheduler)
    });
    assert!(finished_cleanly(&result));
}
