//! Unit tests of the ring's parts: the buffer ring's bookkeeping, a receive that runs the
//! buffer ring dry, and requests dropped while in flight. They need a kernel with io_uring
//! (Linux ≥ 6.0); where it is unavailable they print why and return.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Poll, Waker};
use std::thread;
use std::time::Duration;

use fdio::Trace;

use std::cell::Cell;
use std::rc::Rc;

use crate::buf::IoBuf;
use crate::bufring::BufRing;
use crate::executor::{Buffers, Either, block_on_with, race, with_runtime};
use crate::io::{Reader, append};
use crate::net::TcpStream;
use crate::ring::Driver;
use crate::time::sleep;

fn available() -> bool {
    match crate::probe::check() {
        Ok(_) => true,
        Err(why) => {
            eprintln!("skipped: {why}");
            false
        }
    }
}

/// Fails the test run if the test it guards has not finished within 10 s: for the tests
/// whose failure mode is a loop that never wakes up again (a hang, not a wrong value).
struct Watchdog(Arc<AtomicBool>);

impl Watchdog {
    fn arm(test: &'static str) -> Watchdog {
        let done = Arc::new(AtomicBool::new(false));
        let finished = Arc::clone(&done);
        thread::spawn(move || {
            thread::sleep(Duration::from_secs(10));
            if !finished.load(Ordering::SeqCst) {
                eprintln!(
                    "{test}: not done in 10 s: the loop never woke up, or waits for a result that went elsewhere"
                );
                std::process::exit(101);
            }
        });
        Watchdog(done)
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

fn run<T>(future: impl Future<Output = T>) -> T {
    block_on_with(Trace::new(false), crate::executor::BUFFERS, future).expect("the ring failed")
}

/// Runs `f` with the current runtime's ring.
fn with_driver<R>(f: impl FnOnce(&mut Driver) -> R) -> R {
    with_runtime(|runtime| f(&mut runtime.driver.borrow_mut()))
}

fn tiny_ring() -> io_uring::IoUring {
    io_uring::IoUring::new(8).expect("an io_uring")
}

/// A buffer ring of `count` × 64 bytes registered with `ring`, for bookkeeping tests.
fn registered(ring: &io_uring::IoUring, count: u16) -> BufRing {
    // Safety: no request is ever submitted to these rings, so the kernel never reads the
    // entries or writes a buffer, whichever is dropped first.
    unsafe { BufRing::register(&ring.submitter(), count, 64) }.unwrap()
}

/// Every buffer is in the ring at the start; taking and giving back each one leaves them
/// all in the ring again.
#[test]
fn every_buffer_goes_back_exactly_once() {
    if !available() {
        return;
    }
    let ring = tiny_ring();
    let mut buffers = registered(&ring, 4);
    assert_eq!(buffers.lent(), 0);
    let starts: Vec<_> = (0..4).map(|id| buffers.take(id)).collect();
    assert_eq!(buffers.lent(), 4);
    // Four distinct buffers, `size` bytes apart.
    for pair in starts.windows(2) {
        assert_eq!(pair[1].as_ptr() as usize - pair[0].as_ptr() as usize, 64);
    }
    for id in 0..4 {
        buffers.give_back(id);
    }
    assert_eq!(buffers.lent(), 0);
}

/// Giving a buffer back twice would put it in the ring twice — two receives writing into
/// one buffer: the ring refuses.
#[test]
#[should_panic(expected = "buffer 2 given back twice")]
fn a_buffer_given_back_twice_is_refused() {
    if !available() {
        panic!("buffer 2 given back twice (skipped: io_uring unavailable)");
    }
    let ring = tiny_ring();
    let mut buffers = registered(&ring, 4);
    buffers.take(2);
    buffers.give_back(2);
    buffers.give_back(2);
}

/// The kernel hands a buffer to one completion at a time; a second take of the same buffer
/// is a bookkeeping bug, and the ring says so.
#[test]
#[should_panic(expected = "buffer 1 taken twice")]
fn a_buffer_taken_twice_is_refused() {
    if !available() {
        panic!("buffer 1 taken twice (skipped: io_uring unavailable)");
    }
    let ring = tiny_ring();
    let mut buffers = registered(&ring, 4);
    buffers.take(1);
    buffers.take(1);
}

/// With only 2 buffers of 64 bytes and a task that holds what it received for a while, the
/// multishot receive runs the ring dry (`ENOBUFS`) again and again; each time the next
/// receive goes into a buffer of the stream's own, then back to the ring, and all 64 KiB
/// arrive, in order, none lost. At the end every buffer is back in the ring.
#[test]
fn a_dry_buffer_ring_is_rearmed_without_losing_bytes() {
    if !available() {
        return;
    }
    let (ours, mut theirs) = UnixStream::pair().unwrap();
    let sent: Vec<u8> = (0..64 * 1024).map(|i: u32| (i % 253) as u8).collect();
    let to_send = sent.clone();
    let sender = std::thread::spawn(move || {
        theirs.write_all(&to_send).unwrap();
        // EOF for the receiver.
    });
    let tiny = Buffers { count: 2, size: 64 };
    let (received, rearmed, lent_at_end) = block_on_with(Trace::new(false), tiny, async {
        let mut stream = TcpStream::new(ours.into());
        let mut received = Vec::new();
        let mut held = Vec::new();
        while let Some(chunk) = stream.recv().await.unwrap() {
            received.extend_from_slice(&chunk);
            held.push(chunk);
            if held.len() == 2 {
                // Both buffers are ours: the kernel has none left. Let it notice.
                sleep(Duration::from_millis(1)).await;
                held.clear();
            }
        }
        drop(held);
        let lent = with_driver(|driver| driver.buffers.borrow().lent());
        (received, stream.ring_ran_dry(), lent)
    })
    .unwrap();
    sender.join().unwrap();
    assert_eq!(received.len(), sent.len());
    assert!(received == sent, "the bytes differ from what was sent");
    assert!(
        rearmed > 0,
        "the buffer ring never ran dry: the test proves nothing"
    );
    assert_eq!(lent_at_end, 0, "buffers not given back");
}

/// A `read()` that loses a race is dropped, but its request stays in flight in the
/// `Reader`: the bytes it brings come out at the next call, not lost.
#[test]
fn a_read_that_loses_a_race_keeps_its_bytes() {
    if !available() {
        return;
    }
    let (reader, mut writer) = std::io::pipe().unwrap();
    let text = block_on_with(Trace::new(false), crate::executor::BUFFERS, async {
        let mut pipe = Reader::new(reader.into(), 64);
        // Nothing in the pipe yet: the sleep wins, the read future is dropped in flight.
        let raced = race(pipe.read(), sleep(Duration::from_millis(20))).await;
        assert!(matches!(raced, Either::Right(())));
        writer.write_all(b"kept\n").unwrap();
        pipe.read().await.unwrap()
    })
    .unwrap();
    assert_eq!(text, b"kept\n");
}

/// A request whose future is dropped in flight is cancelled; the ring keeps its buffer
/// until the kernel's last completion for it, and the cancelled read took no byte: what is
/// written to the pipe afterwards is still there for a plain `read(2)`.
#[test]
fn a_dropped_request_is_cancelled_and_takes_nothing() {
    if !available() {
        return;
    }
    let (mut reader, mut writer) = std::io::pipe().unwrap();
    let fd = reader.try_clone().unwrap();
    let in_flight_after = block_on_with(Trace::new(false), crate::executor::BUFFERS, async {
        let mut pipe = Reader::new(fd.into(), 64);
        let raced = race(pipe.read(), sleep(Duration::from_millis(10))).await;
        assert!(matches!(raced, Either::Right(())));
        drop(pipe); // now the read request itself is abandoned: cancelled
        sleep(Duration::from_millis(10)).await;
        with_driver(|driver| driver.in_flight())
    })
    .unwrap();
    assert_eq!(in_flight_after, 0, "the cancelled read is still in flight");
    writer.write_all(b"after\n").unwrap();
    let mut buf = [0; 6];
    reader.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"after\n");
}

/// With both buffers of a 2-buffer ring held by one stream (a client that never reads its
/// echo holds what it sent), 8 other streams that receive bytes are still served: none waits
/// for the ring, and each finds it dry at most once (no herd of receives re-armed at every
/// returned buffer, failing again with `ENOBUFS`).
#[test]
fn streams_are_served_while_another_holds_the_whole_ring() {
    if !available() {
        return;
    }
    let _watchdog = Watchdog::arm("streams_are_served_while_another_holds_the_whole_ring");
    let (hog, mut hog_peer) = UnixStream::pair().unwrap();
    let pairs: Vec<(UnixStream, UnixStream)> =
        (0..8).map(|_| UnixStream::pair().unwrap()).collect();
    let tiny = Buffers { count: 2, size: 64 };
    let served = block_on_with(Trace::new(false), tiny, async move {
        let mut hog = TcpStream::new(hog.into());
        hog_peer.write_all(&[1; 64]).unwrap();
        let first = hog.recv().await.unwrap().unwrap();
        hog_peer.write_all(&[2; 64]).unwrap();
        let second = hog.recv().await.unwrap().unwrap();
        assert_eq!(with_driver(|driver| driver.buffers.borrow().lent()), 2);
        let mut served = Vec::new();
        for (n, (ours, mut theirs)) in pairs.into_iter().enumerate() {
            let mut stream = TcpStream::new(ours.into());
            theirs.write_all(format!("stream {n}").as_bytes()).unwrap();
            let received = race(stream.recv(), sleep(Duration::from_secs(5))).await;
            let Either::Left(received) = received else {
                panic!("stream {n} waited 5 s for a buffer the ring never had");
            };
            let chunk = received.unwrap().unwrap();
            assert_eq!(&chunk[..], format!("stream {n}").as_bytes());
            served.push(stream.ring_ran_dry());
        }
        drop((first, second));
        served
    })
    .unwrap();
    for (n, dry) in served.iter().enumerate() {
        assert!(*dry <= 1, "stream {n} found the ring dry {dry} times");
    }
}

/// A waker fired from another thread wakes the loop out of `io_uring_enter`, though no
/// request of the program is in flight to end its sleep.
#[test]
fn a_waker_from_another_thread_wakes_the_loop() {
    if !available() {
        return;
    }
    let _watchdog = Watchdog::arm("a_waker_from_another_thread_wakes_the_loop");
    let woken = block_on_with(Trace::new(false), crate::executor::BUFFERS, async {
        let fired = Arc::new(AtomicBool::new(false));
        let mut sent: Option<thread::JoinHandle<()>> = None;
        std::future::poll_fn(|cx| {
            if fired.load(Ordering::SeqCst) {
                return Poll::Ready(());
            }
            if sent.is_none() {
                let (fired, waker): (_, Waker) = (Arc::clone(&fired), cx.waker().clone());
                sent = Some(thread::spawn(move || {
                    thread::sleep(Duration::from_millis(50));
                    fired.store(true, Ordering::SeqCst);
                    waker.wake();
                }));
            }
            Poll::Pending
        })
        .await;
        sent.map(|thread| thread.join().is_ok())
    })
    .unwrap();
    assert_eq!(woken, Some(true));
}

/// A stream carried out of one `block_on` into the next names its request by a token, and
/// the next runtime hands out the same tokens: used there it must not take the results of
/// this runtime's stream (12 bytes, or a false EOF), and dropping it must not cancel that
/// stream's receive.
#[test]
fn a_stream_from_another_runtime_leaves_this_one_alone() {
    if !available() {
        return;
    }
    let _watchdog = Watchdog::arm("a_stream_from_another_runtime_leaves_this_one_alone");
    let (stray_end, _stray_peer) = UnixStream::pair().unwrap();
    let mut stray = run(async move {
        let mut stray = TcpStream::new(stray_end.into());
        // Arms its receive (the sleep wins: nothing was sent), then leaves the runtime.
        let _ = race(stray.recv(), sleep(Duration::from_millis(1))).await;
        stray
    });
    let (ours_end, mut peer) = UnixStream::pair().unwrap();
    let (strays, ours) = run(async move {
        let mut ours = TcpStream::new(ours_end.into());
        let _ = race(ours.recv(), sleep(Duration::from_millis(1))).await;
        peer.write_all(b"twelve bytes").unwrap();
        sleep(Duration::from_millis(10)).await;
        let strays = match stray.recv().await {
            Ok(Some(chunk)) => format!("{} bytes", chunk.len()),
            Ok(None) => "EOF".to_string(),
            Err(_) => "an error".to_string(),
        };
        drop(stray);
        let ours = ours.recv().await.unwrap().map(|chunk| chunk.to_vec());
        (strays, ours)
    });
    assert_eq!(
        strays, "an error",
        "the stray stream reached into this runtime"
    );
    assert_eq!(ours.as_deref(), Some(&b"twelve bytes"[..]));
}

/// A buffer that says when it is dropped.
struct Tracked {
    bytes: Vec<u8>,
    dropped: Rc<Cell<bool>>,
}

// Safety: the bytes live in the `Vec`'s heap allocation, which moving `Tracked` does not move
// and nothing changes while it exists.
unsafe impl IoBuf for Tracked {
    fn stable_ptr(&self) -> *const u8 {
        self.bytes.as_ptr()
    }

    fn len(&self) -> usize {
        self.bytes.len()
    }
}

impl Drop for Tracked {
    fn drop(&mut self) {
        self.dropped.set(true);
    }
}

/// A write stuck in flight (the pipe is full) whose future is dropped keeps its buffer
/// alive in the ring's slot until the kernel's last completion for it: not freed when the
/// future goes, freed once the cancel has landed. What reaches the pipe is the fill and,
/// if the write beat its cancel, the buffer's own bytes, intact — never freed memory.
#[test]
fn a_dropped_request_keeps_its_buffer_until_the_kernel_is_done() {
    if !available() {
        return;
    }
    let _watchdog = Watchdog::arm("a_dropped_request_keeps_its_buffer_until_the_kernel_is_done");
    let (mut reader, writer) = std::io::pipe().unwrap();
    let fill = fill_pipe(&writer);
    let dropped = Rc::new(Cell::new(false));
    let tracked = Tracked {
        bytes: b"tracked bytes".repeat(100),
        dropped: Rc::clone(&dropped),
    };
    let (kept_in_flight, freed_after) = run(async {
        let writer: std::os::fd::OwnedFd = writer.into();
        let raced = race(append(&writer, tracked), sleep(Duration::from_millis(10))).await;
        assert!(
            matches!(raced, Either::Right(())),
            "the write was not stuck"
        );
        // Dropped just now; the cancel has not even been submitted to the kernel yet.
        let kept_in_flight = !dropped.get() && with_driver(|driver| driver.in_flight()) == 1;
        for _ in 0..100 {
            if dropped.get() {
                break;
            }
            sleep(Duration::from_millis(10)).await;
        }
        (
            kept_in_flight,
            dropped.get() && with_driver(|driver| driver.in_flight()) == 0,
        )
    });
    assert!(
        kept_in_flight,
        "the buffer was freed while its request was in flight"
    );
    assert!(freed_after, "the buffer was never freed after the cancel");
    let mut drained = vec![0; fill];
    reader.read_exact(&mut drained).unwrap();
    assert!(drained.iter().all(|&b| b == b'f'));
    fdio::set_nonblocking(&reader).unwrap();
    let mut rest = Vec::new();
    let _ = reader.read_to_end(&mut rest);
    assert!(
        rest.is_empty() || rest == b"tracked bytes".repeat(100),
        "the pipe got {} bytes that are not the buffer's",
        rest.len()
    );
}

/// Fills a pipe until a write would block; returns how many bytes it took.
fn fill_pipe(writer: &std::io::PipeWriter) -> usize {
    fdio::set_nonblocking(writer).unwrap();
    let chunk = [b'f'; 4096];
    let mut filled = 0;
    loop {
        match (&mut &*writer).write(&chunk) {
            Ok(n) => filled += n,
            Err(err) if fdio::would_block(&err) => break,
            Err(err) => panic!("filling the pipe: {err}"),
        }
    }
    set_blocking(writer);
    filled
}

fn set_blocking(fd: &impl std::os::fd::AsRawFd) {
    let fd = fd.as_raw_fd();
    // Safety: plain fcntl calls on an fd the caller keeps open.
    unsafe {
        let flags = libc::fcntl(fd, libc::F_GETFL);
        assert!(flags >= 0 && libc::fcntl(fd, libc::F_SETFL, flags & !libc::O_NONBLOCK) == 0);
    }
}
