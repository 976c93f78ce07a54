//! The scheduler's own tests: the budget, parking and waking, the order tasks run in.

use super::*;
use crate::coroutine::{Error, GeneratorState};
use std::cell::RefCell;
use std::collections::VecDeque;
use std::io::Write;
use std::os::fd::AsRawFd;
use std::rc::Rc;

/// A test task: each resume notes its name and yields the next system call of its
/// script; with none left, it returns.
struct Script {
    name: &'static str,
    calls: VecDeque<Syscall>,
    log: Rc<RefCell<Vec<&'static str>>>,
}

impl Coroutine<()> for Script {
    type Yield = Syscall;
    type Return = ();

    fn resume(&mut self, (): ()) -> Step<Syscall, ()> {
        self.log.borrow_mut().push(self.name);
        Ok(match self.calls.pop_front() {
            Some(call) => State::Yielded(call),
            None => State::Complete(()),
        })
    }

    fn throw(&mut self, exception: Exception) -> Step<Syscall, ()> {
        Err(Error::raised(exception))
    }

    fn state(&self) -> GeneratorState {
        GeneratorState::Suspended
    }
}

fn task(name: &'static str, calls: Vec<Syscall>, log: &Rc<RefCell<Vec<&'static str>>>) -> Task {
    let log = Rc::clone(log);
    Task::new(
        name,
        Script {
            name,
            calls: calls.into(),
            log,
        },
    )
}

/// `b` starts `a` and ends; `a` parks on an empty pipe, and runs again only once a
/// thread has written to it; then nothing is left and `run` returns.
#[test]
fn starts_parks_and_wakes_tasks() {
    let (reader, mut writer) = std::io::pipe().unwrap();
    let log = Rc::new(RefCell::new(Vec::new()));
    let a = task("a", vec![Syscall::ReadWait(reader.as_raw_fd())], &log);
    let mut scheduler = Scheduler::new(Trace::new(false)).unwrap();
    scheduler.spawn(task("b", vec![Syscall::NewTask(a)], &log));
    let late_writer = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(50));
        writer.write_all(b"x")
    });
    scheduler.run().unwrap();
    late_writer.join().unwrap().unwrap();
    assert_eq!(*log.borrow(), ["b", "a", "b", "a"]);
}

/// A task that never has to wait: each turn it does operations until its budget is
/// spent, as the I/O sub-coroutines do, then yields `BudgetSpent`; after `turns` turns
/// it returns. It notes each turn, and checks that each one had the full budget.
struct Busy {
    turns: u32,
    log: Rc<RefCell<Vec<&'static str>>>,
}

impl Coroutine<()> for Busy {
    type Yield = Syscall;
    type Return = ();

    fn resume(&mut self, (): ()) -> Step<Syscall, ()> {
        self.log.borrow_mut().push("busy");
        let mut operations = 0;
        while budget::has_left() {
            budget::spend();
            operations += 1;
        }
        assert_eq!(
            operations,
            budget::PER_TURN,
            "each turn starts with a full budget"
        );
        self.turns -= 1;
        Ok(match self.turns {
            0 => State::Complete(()),
            _ => State::Yielded(Syscall::BudgetSpent),
        })
    }

    fn throw(&mut self, exception: Exception) -> Step<Syscall, ()> {
        Err(Error::raised(exception))
    }

    fn state(&self) -> GeneratorState {
        GeneratorState::Suspended
    }
}

/// A task that spent its budget waits until the tasks epoll woke meanwhile have run: the
/// quiet task, whose pipe has a byte, runs between the busy task's first two turns, not
/// after all of them.
#[test]
fn a_spent_budget_lets_the_others_go_first() {
    let (reader, mut writer) = std::io::pipe().unwrap();
    writer.write_all(b"x").unwrap();
    let log = Rc::new(RefCell::new(Vec::new()));
    let quiet = task("quiet", vec![Syscall::ReadWait(reader.as_raw_fd())], &log);
    let busy = Task::new(
        "busy",
        Busy {
            turns: 3,
            log: Rc::clone(&log),
        },
    );
    let mut scheduler = Scheduler::new(Trace::new(false)).unwrap();
    scheduler.spawn(quiet);
    scheduler.spawn(busy);
    scheduler.run().unwrap();
    assert_eq!(*log.borrow(), ["quiet", "busy", "quiet", "busy", "busy"]);
}

/// A task parked on a regular file (which epoll refuses) is simply run again, every
/// time, and `run` still returns.
#[test]
fn a_regular_file_is_always_ready() {
    let file = std::fs::File::open(concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml")).unwrap();
    let log = Rc::new(RefCell::new(Vec::new()));
    let fd = file.as_raw_fd();
    let calls = vec![Syscall::ReadWait(fd), Syscall::ReadWait(fd)];
    let mut scheduler = Scheduler::new(Trace::new(false)).unwrap();
    scheduler.spawn(task("reader", calls, &log));
    scheduler.run().unwrap();
    assert_eq!(*log.borrow(), ["reader"; 3]);
}

/// An exception escaping a task stops the scheduler with an error naming the task.
#[test]
fn an_escaping_exception_stops_the_scheduler() {
    let mut scheduler = Scheduler::new(Trace::new(false)).unwrap();
    scheduler.spawn(Task::new(
        "closed",
        crate::writer::Pump::<std::io::Stdin>::Closed,
    ));
    let err = scheduler.run().unwrap_err();
    assert_eq!(err.to_string(), "closed: StopIteration");
}

/// A task that reads a pipe and, while busy elsewhere (its budget spent), gets new bytes:
/// each resume runs the next step, and checks what the readiness table says.
struct Edge {
    step: u32,
    reader: std::io::PipeReader,
    writer: std::io::PipeWriter,
}

impl Coroutine<()> for Edge {
    type Yield = Syscall;
    type Return = ();

    fn resume(&mut self, (): ()) -> Step<Syscall, ()> {
        use std::io::Read;
        let fd = self.reader.as_raw_fd();
        self.step += 1;
        match self.step {
            // Park: the byte already in the pipe is reported when epoll starts watching it.
            1 => Ok(State::Yielded(Syscall::ReadWait(fd))),
            2 => {
                assert!(readiness::may_try(fd, Interest::READABLE));
                self.reader.read_exact(&mut [0]).unwrap();
                // Nothing more: as `recv` notes a `WouldBlock`.
                readiness::drained(fd, Interest::READABLE);
                assert!(!readiness::may_try(fd, Interest::READABLE));
                // New bytes come while this task is not parked on the pipe.
                self.writer.write_all(b"y").unwrap();
                Ok(State::Yielded(Syscall::BudgetSpent))
            }
            _ => {
                assert!(
                    readiness::may_try(fd, Interest::READABLE),
                    "the edge that came while nobody waited was written down"
                );
                Ok(State::Complete(()))
            }
        }
    }

    fn throw(&mut self, exception: Exception) -> Step<Syscall, ()> {
        Err(Error::raised(exception))
    }

    fn state(&self) -> GeneratorState {
        GeneratorState::Suspended
    }
}

/// epoll reports an edge once: one that comes while the fd's task is busy elsewhere (here,
/// waiting for its next turn) is kept in the readiness table, so the task's next read is
/// tried instead of parking for an edge that has passed.
#[test]
fn an_edge_nobody_waited_for_is_kept() {
    let (reader, mut writer) = std::io::pipe().unwrap();
    writer.write_all(b"x").unwrap();
    let mut scheduler = Scheduler::new(Trace::new(false)).unwrap();
    scheduler.spawn(Task::new(
        "edge",
        Edge {
            step: 0,
            reader,
            writer,
        },
    ));
    scheduler.run().unwrap();
}

/// A task that does what a client does, from inside the scheduler, then returns: its bytes
/// are all in the server's socket before the scheduler next asks epoll, so one event
/// reports them all.
struct Peer<F>(Option<F>);

impl<F: FnOnce()> Coroutine<()> for Peer<F> {
    type Yield = Syscall;
    type Return = ();

    fn resume(&mut self, (): ()) -> Step<Syscall, ()> {
        if let Some(act) = self.0.take() {
            act();
        }
        Ok(State::Complete(()))
    }

    fn throw(&mut self, exception: Exception) -> Step<Syscall, ()> {
        Err(Error::raised(exception))
    }

    fn state(&self) -> GeneratorState {
        GeneratorState::Suspended
    }
}

/// Runs a scheduler on its own thread with a client task on our end of a fresh connection,
/// parked in `recv` on an empty socket, and then a task that runs `act` on the peer's end
/// (given a clone of it) and waits until our kernel has acknowledged all it sent. Returns the
/// peer's end and a receiver for `run`'s result.
fn serve_one_client(
    act: impl FnOnce(&mut std::net::TcpStream) + Send + 'static,
) -> (
    std::net::TcpStream,
    std::sync::mpsc::Receiver<io::Result<()>>,
) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let peer = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    peer.set_nodelay(true).unwrap();
    let (ours, addr) = listener.accept().unwrap();
    ours.set_nonblocking(true).unwrap();
    let mut theirs = peer.try_clone().unwrap();
    let (done, result) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut scheduler = Scheduler::new(Trace::new(false)).unwrap();
        let client = crate::client::Client::new(mio::net::TcpStream::from_std(ours), addr);
        // The client runs first: it finds nothing, parks, and epoll starts watching.
        scheduler.spawn(Task::new("client", client));
        scheduler.spawn(Task::new(
            "peer",
            Peer(Some(move || {
                act(&mut theirs);
                let deadline = Instant::now() + Duration::from_secs(10);
                while !fdio::all_acknowledged(&theirs).unwrap() && Instant::now() < deadline {
                    std::thread::sleep(Duration::from_millis(1));
                }
            })),
        ));
        let _ = done.send(scheduler.run());
    });
    (peer, result)
}

/// Reads from `peer` until `want` bytes came or 10 s passed; returns what came.
fn read_echo(peer: &mut std::net::TcpStream, want: usize) -> Vec<u8> {
    use std::io::Read;
    peer.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut echoed = Vec::new();
    let mut buf = [0; 64];
    while echoed.len() < want {
        match peer.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => echoed.extend_from_slice(&buf[..n]),
        }
    }
    echoed
}

/// The last bytes and the FIN come together, reported by one event while the client task
/// is parked: the read that takes the bytes takes the FIN too (it comes back short), and no
/// edge will follow. The task must still see the EOF — echo `last`, close, and the scheduler
/// ends — rather than park for an edge that has passed.
#[test]
fn the_eof_behind_the_last_bytes_needs_no_second_event() {
    let (mut peer, result) = serve_one_client(|peer| {
        peer.write_all(b"last").unwrap();
        peer.shutdown(std::net::Shutdown::Write).unwrap();
    });
    assert_eq!(read_echo(&mut peer, 5), b"last", "echoed, then the EOF");
    let ended = result.recv_timeout(Duration::from_secs(10));
    assert!(
        matches!(ended, Ok(Ok(()))),
        "the client task never saw the EOF: {ended:?}"
    );
}

/// `abc`, an urgent byte, `def`, all in the socket before the one event that reports them: a
/// TCP read stops at the urgent byte's mark once it has copied anything, so the first read
/// comes back short with `def` still queued, and no edge will come for it. The task must
/// read on and echo `abcdef`.
#[test]
fn the_bytes_behind_an_urgent_byte_need_no_second_event() {
    let (mut peer, result) = serve_one_client(|peer| {
        use nix::sys::socket::{MsgFlags, send};
        peer.write_all(b"abc").unwrap();
        send(peer.as_raw_fd(), b"!", MsgFlags::MSG_OOB).unwrap();
        peer.write_all(b"def").unwrap();
    });
    let echoed = read_echo(&mut peer, 6);
    peer.shutdown(std::net::Shutdown::Write).unwrap(); // lets the task end either way
    assert_eq!(
        echoed, b"abcdef",
        "the bytes behind the urgent byte were not echoed"
    );
    assert!(matches!(
        result.recv_timeout(Duration::from_secs(10)),
        Ok(Ok(()))
    ));
}

/// `abc`, an urgent byte, `def` and the FIN, all in the socket before its task first runs:
/// no event has said anything about the fd yet, so the first read's short `abc` is taken for
/// "empty" and the task parks. What saves it is that the park is where epoll starts
/// watching the fd, and epoll then reports what the fd holds already (`EPOLL_CTL_ADD` polls
/// it): that event wakes the task, which reads on — `def`, then the EOF — and ends.
#[test]
fn bytes_behind_an_urgent_byte_sent_before_the_first_read_are_echoed() {
    use nix::sys::socket::{MsgFlags, send};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let mut peer = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let (ours, addr) = listener.accept().unwrap();
    ours.set_nonblocking(true).unwrap();
    peer.write_all(b"abc").unwrap();
    send(peer.as_raw_fd(), b"!", MsgFlags::MSG_OOB).unwrap();
    peer.write_all(b"def").unwrap();
    peer.shutdown(std::net::Shutdown::Write).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !fdio::all_acknowledged(&peer).unwrap() {
        assert!(Instant::now() < deadline, "the bytes never arrived");
        std::thread::sleep(Duration::from_millis(1));
    }
    let (done, result) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut scheduler = Scheduler::new(Trace::new(false)).unwrap();
        let client = crate::client::Client::new(mio::net::TcpStream::from_std(ours), addr);
        scheduler.spawn(Task::new("client", client));
        let _ = done.send(scheduler.run());
    });
    assert_eq!(read_echo(&mut peer, 7), b"abcdef", "echoed, then the EOF");
    let ended = result.recv_timeout(Duration::from_secs(10));
    assert!(
        matches!(ended, Ok(Ok(()))),
        "the client task never ended: {ended:?}"
    );
}
