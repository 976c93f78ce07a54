//! The echo tasks driven by hand, one `resume` at a time, as the scheduler would: each test
//! checks the `Step` a task returns at each point of a real loopback connection.

use super::*;
use std::io::Write;
use std::net::Shutdown;
use std::thread;

use fdio::readable_now;

const PATIENCE: Duration = Duration::from_secs(10);

/// Plays the scheduler: resumes a task with a read buffer, and keeps what it spawns.
struct Driver {
    buf: Vec<u8>,
    spawned: Vec<Box<dyn Task>>,
}

impl Driver {
    fn new() -> Driver {
        Driver {
            buf: vec![0; 64 * 1024],
            spawned: Vec::new(),
        }
    }

    fn resume(&mut self, task: &mut impl Task) -> Step {
        let mut ctx = Context::new(Trace::new(false), &mut self.buf, &mut self.spawned);
        task.resume(&mut ctx)
            .expect("echo tasks handle their own errors")
    }
}

/// A client task on the server's end of a fresh loopback connection, and the peer's end.
fn client_task() -> (ClientTask, TcpStream) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let peer = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    peer.set_read_timeout(Some(PATIENCE)).unwrap();
    let (served, peer_addr) = listener.accept().unwrap();
    served.set_nonblocking(true).unwrap();
    (ClientTask::new(served, peer_addr), peer)
}

/// Waits (bounded) until the task's socket has something to read.
fn wait_readable(task: &ClientTask) {
    let deadline = Instant::now() + PATIENCE;
    while !readable_now(&task.stream).unwrap() {
        assert!(Instant::now() < deadline, "nothing arrived");
        thread::sleep(Duration::from_millis(1));
    }
}

/// The byte at position `n` of the test stream: the pattern shows any loss or reordering.
fn pattern(n: usize) -> u8 {
    (n % 251) as u8
}

/// Has the peer keep the task's socket full while reading nothing back: the task echoes until
/// it owes [`MAX_UNSENT`], then stops reading and parks on `Write`. Returns how many bytes the
/// peer sent.
fn fill_until_parked_on_write(task: &mut ClientTask, peer: &mut TcpStream) -> usize {
    let mut driver = Driver::new();
    let fd = task.stream.as_raw_fd();
    let chunk: Vec<u8> = (0..64 * 1024).map(pattern).collect();
    peer.set_nonblocking(true).unwrap();
    let mut sent = 0;
    let deadline = Instant::now() + PATIENCE;
    loop {
        // Top up until the peer's own socket is full, so every read of the task finds bytes.
        loop {
            let from = sent % 251;
            match peer.write(&chunk[from..from + 32 * 1024]) {
                Ok(n) => sent += n,
                Err(err) if would_block(&err) => break,
                Err(err) => panic!("peer write: {err}"),
            }
        }
        if driver.resume(task) == Step::Write(fd) {
            break;
        }
        assert!(Instant::now() < deadline, "the task never parked on write");
    }
    peer.set_nonblocking(false).unwrap();
    sent
}

/// Reads `len` bytes on a thread and checks they follow the pattern.
fn read_back(peer: &TcpStream, len: usize) -> thread::JoinHandle<()> {
    let mut peer = peer.try_clone().unwrap();
    thread::spawn(move || {
        let mut echoed = vec![0; len];
        peer.read_exact(&mut echoed).expect("the whole echo");
        let wrong = echoed
            .iter()
            .enumerate()
            .position(|(n, &b)| b != pattern(n));
        assert_eq!(wrong, None, "the echo differs from what was sent");
    })
}

/// With nothing sent the task parks on `Read`; bytes that arrive are echoed at once and the
/// task yields (more may be coming); once drained it parks on `Read` again, owing nothing.
#[test]
fn client_echoes_what_arrives_and_parks_on_read_when_drained() {
    let (mut task, mut peer) = client_task();
    let fd = task.stream.as_raw_fd();
    let mut driver = Driver::new();
    assert_eq!(driver.resume(&mut task), Step::Read(fd));

    peer.write_all(b"hello").unwrap();
    wait_readable(&task);
    assert_eq!(driver.resume(&mut task), Step::Yield);
    let mut echoed = [0; 5];
    peer.read_exact(&mut echoed).unwrap();
    assert_eq!(&echoed, b"hello");

    assert_eq!(driver.resume(&mut task), Step::Read(fd));
    assert!(task.unsent.is_empty());
}

/// A peer that sends without reading: once the task owes MAX_UNSENT it parks on `Write` and
/// stops reading (the peer's bytes wait in the kernel: the task owes no more than before),
/// and once the peer reads, it delivers every byte in order and goes back to `Read`.
#[test]
fn client_stops_reading_while_it_owes_and_parks_on_write() {
    let (mut task, mut peer) = client_task();
    let fd = task.stream.as_raw_fd();
    let mut driver = Driver::new();
    let sent = fill_until_parked_on_write(&mut task, &mut peer);
    assert!(matches!(
        task.state,
        ClientState::Writing { peer_closed: false }
    ));
    let owed = task.unsent.len();
    assert!(
        (MAX_UNSENT..MAX_UNSENT + driver.buf.len()).contains(&owed),
        "owes {owed}"
    );

    for _ in 0..3 {
        assert_eq!(driver.resume(&mut task), Step::Write(fd));
    }
    assert!(task.unsent.len() <= owed, "it read while owing");

    let reader = read_back(&peer, sent);
    let deadline = Instant::now() + PATIENCE;
    while !reader.is_finished() {
        driver.resume(&mut task);
        assert!(Instant::now() < deadline, "the echo never completed");
        thread::sleep(Duration::from_millis(1));
    }
    reader.join().unwrap();
    assert_eq!(driver.resume(&mut task), Step::Read(fd));
    assert!(task.unsent.is_empty());
}

/// After the peer's EOF the task still sends everything it owes, and only then says `Done`
/// (dropping it closes the socket: the peer sees EOF after the last byte).
#[test]
fn client_flushes_what_it_owes_after_eof_then_is_done() {
    let (mut task, mut peer) = client_task();
    let mut driver = Driver::new();
    let sent = fill_until_parked_on_write(&mut task, &mut peer);
    peer.shutdown(Shutdown::Write).unwrap();

    let reader = read_back(&peer, sent);
    let deadline = Instant::now() + PATIENCE;
    while driver.resume(&mut task) != Step::Done {
        assert!(Instant::now() < deadline, "the task never finished");
        thread::sleep(Duration::from_millis(1));
    }
    assert!(task.unsent.is_empty());
    reader.join().unwrap();
    drop(task);
    assert_eq!(peer.read(&mut [0; 1]).unwrap(), 0, "no EOF after the echo");
}

/// The server task spawns one client task per waiting connection, one per turn, and parks
/// on `Read` of the listener once the backlog is empty.
#[test]
fn server_spawns_a_client_per_connection_then_parks_on_read() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let listener_fd = listener.as_raw_fd();
    let mut task = ServerTask::new(listener).unwrap();
    let _clients = [TcpStream::connect(addr), TcpStream::connect(addr)];
    let mut driver = Driver::new();

    assert_eq!(driver.resume(&mut task), Step::Yield);
    assert_eq!(driver.resume(&mut task), Step::Yield);
    assert_eq!(driver.spawned.len(), 2);
    assert_eq!(driver.resume(&mut task), Step::Read(listener_fd));
    assert_eq!(driver.spawned.len(), 2);
}
