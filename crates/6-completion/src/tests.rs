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

pub(crate) fn available() -> bool {
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

/// Every buffer is in the ring at the start; taking and giving back each one makes it a
/// spare, and offering puts them all in the ring again.
#[test]
fn every_buffer_goes_back_exactly_once() {
    if !available() {
        return;
    }
    let ring = tiny_ring();
    let mut buffers = registered(&ring, 4);
    assert_eq!(buffers.lent(), 0);
    let starts: Vec<_> = (0..4)
        // Safety: no request selects from this ring, so the kernel never fills a buffer:
        // taking and giving back only moves the bookkeeping under test.
        .map(|id| unsafe { buffers.take(id) })
        .collect();
    assert_eq!(buffers.lent(), 4);
    // Four distinct buffers, `size` bytes apart.
    for pair in starts.windows(2) {
        assert_eq!(pair[1].as_ptr() as usize - pair[0].as_ptr() as usize, 64);
    }
    for id in 0..4 {
        // Safety: as above; the starts are only compared, never read through.
        unsafe { buffers.give_back(id) };
    }
    assert_eq!(buffers.lent(), 0);
    assert_eq!(buffers.offered(), 0);
    buffers.offer(4);
    assert_eq!(buffers.offered(), 4);
}

/// The ring is topped up with the buffer given back last first — the one most likely still
/// in the cache — and no further than asked.
#[test]
fn the_buffer_given_back_last_is_offered_first() {
    if !available() {
        return;
    }
    let ring = tiny_ring();
    let mut buffers = registered(&ring, 4);
    for id in 0..4 {
        // Safety: no request selects from this ring: the kernel never touches a buffer.
        unsafe { buffers.take(id) };
    }
    for id in [0, 1, 2, 3] {
        // Safety: as above.
        unsafe { buffers.give_back(id) };
    }
    buffers.offer(1);
    assert_eq!(buffers.offered(), 1);
    assert_eq!(
        buffers.available(),
        4,
        "the spares still count as available"
    );
    // Safety: as above. Buffer 3 was given back last: it is the one in the ring (taking a
    // buffer that is not in the ring panics).
    unsafe { buffers.take(3) };
    assert_eq!(buffers.offered(), 0);
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
    // Safety: no request selects from this ring: the kernel never touches a buffer.
    unsafe {
        buffers.take(2);
        buffers.give_back(2);
        buffers.give_back(2);
    }
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
    // Safety: no request selects from this ring: the kernel never touches a buffer.
    unsafe {
        buffers.take(1);
        buffers.take(1);
    }
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
        let writer = crate::fd::RingFd::new(writer.into());
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

// ---- Review 56: what is still wrong (each test fails on the code it was written against) ----

/// Gives `fd`'s open file the lowest free fd number from `number` up: what the kernel does
/// on its own when the next socket or file is opened — if `number` is free (its stream
/// closed it), the new file gets it; made certain here, whatever lower numbers are free.
///
/// (Review 56 asserted that `number` was free. A stream now closes its fd through the ring,
/// so the number stays taken until the next `io_uring_enter` has run the close, after every
/// entry naming it: then the next socket gets another number — which is the fix.)
fn reuse_fd_number(
    fd: impl Into<std::os::fd::OwnedFd>,
    number: std::os::fd::RawFd,
) -> std::os::fd::OwnedFd {
    use std::os::fd::{AsRawFd, FromRawFd};
    let fd: std::os::fd::OwnedFd = fd.into();
    // Safety: `F_DUPFD_CLOEXEC` makes a new fd ≥ `number` for the open file of `fd`, ours.
    let new = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_DUPFD_CLOEXEC, number) };
    assert!(new >= number, "F_DUPFD_CLOEXEC failed");
    // Safety: a new fd, ours alone.
    unsafe { std::os::fd::OwnedFd::from_raw_fd(new) }
}

/// A stream dropped in the same turn as its receive was pushed (a `recv()` that lost a race,
/// then the stream dropped) closes its fd at once, while the receive's entry — which names
/// the socket by that fd *number* — still waits in the submission ring for the next
/// `io_uring_enter`. The next socket the program opens gets the same number, and must not
/// lose its bytes to the dead stream's receive (which takes them, and drops them with its
/// abandoned slot). The fix: close through the ring (`IORING_OP_CLOSE` after the cancel, as
/// tokio-uring's `SharedFd` does), or submit what is pending before `close(2)`.
#[test]
fn a_dropped_streams_receive_never_takes_the_bytes_of_the_next_socket_with_its_fd() {
    use std::os::fd::AsRawFd;
    if !available() {
        return;
    }
    let _watchdog = Watchdog::arm(
        "a_dropped_streams_receive_never_takes_the_bytes_of_the_next_socket_with_its_fd",
    );
    let got = run(async {
        let (a, _a_peer) = UnixStream::pair().unwrap();
        let (b, mut b_peer) = UnixStream::pair().unwrap();
        b_peer.write_all(b"for b only").unwrap();
        let number = a.as_raw_fd();
        let mut a = TcpStream::new(a.into());
        // The receive is pushed into the submission ring; the loop has not entered since.
        let _ = race(a.recv(), std::future::ready(())).await;
        drop(a);
        let mut b = TcpStream::new(reuse_fd_number(b, number));
        match race(b.recv(), sleep(Duration::from_secs(2))).await {
            Either::Left(Ok(Some(chunk))) => chunk.to_vec(),
            Either::Left(Ok(None)) => b"<EOF>".to_vec(),
            Either::Left(Err(err)) => format!("<{err}>").into_bytes(),
            Either::Right(()) => b"<nothing in 2 s>".to_vec(),
        }
    });
    assert_eq!(
        String::from_utf8_lossy(&got),
        "for b only",
        "the next socket with the dropped stream's fd number lost its bytes"
    );
}

/// The same for a send: a `write_all` that lost a race is cancelled, but its entry is still
/// in the submission ring, naming the fd number; the stream is dropped (its fd closed) and
/// the number reused by another connection before the loop enters. That connection's peer
/// must not receive bytes meant for the dropped one's.
#[test]
fn a_dropped_streams_send_never_reaches_the_next_socket_with_its_fd() {
    use std::os::fd::AsRawFd;
    if !available() {
        return;
    }
    let _watchdog =
        Watchdog::arm("a_dropped_streams_send_never_reaches_the_next_socket_with_its_fd");
    let leaked = run(async {
        let (a, _a_peer) = UnixStream::pair().unwrap();
        let (b, b_peer) = UnixStream::pair().unwrap();
        let number = a.as_raw_fd();
        let mut a = TcpStream::new(a.into());
        let _ = race(
            a.write_all(b"meant for a's peer".to_vec()),
            std::future::ready(()),
        )
        .await;
        drop(a);
        what_the_next_socket_gets(b, b_peer, number).await
    });
    nothing_leaked(&leaked);
}

/// A dropped stream closes its fd through the ring: at the loop's next `io_uring_enter`,
/// after the entries that name it. Its peer then reads EOF.
#[test]
fn a_dropped_stream_is_closed_at_the_next_turn() {
    if !available() {
        return;
    }
    let _watchdog = Watchdog::arm("a_dropped_stream_is_closed_at_the_next_turn");
    let (ours, mut peer) = UnixStream::pair().unwrap();
    peer.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let read = run(async move {
        let mut stream = TcpStream::new(ours.into());
        let _ = race(stream.recv(), std::future::ready(())).await;
        drop(stream);
        sleep(Duration::from_millis(10)).await;
        peer.read(&mut [0; 16]).map_err(|err| err.to_string())
    });
    assert_eq!(read, Ok(0), "the peer did not see the stream closed");
}

/// A stream dropped as the program ends leaves its close in the submission ring; the
/// driver submits it before it closes the ring (which would drop it: an fd never closed).
#[test]
fn a_stream_dropped_as_the_runtime_ends_is_closed() {
    if !available() {
        return;
    }
    let _watchdog = Watchdog::arm("a_stream_dropped_as_the_runtime_ends_is_closed");
    let (ours, mut peer) = UnixStream::pair().unwrap();
    run(async move { drop(TcpStream::new(ours.into())) });
    peer.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let read = peer.read(&mut [0; 16]).map_err(|err| err.to_string());
    assert_eq!(read, Ok(0), "the peer did not see the stream closed");
}

/// `Op::submit`'s contract: the caller makes the entry point into the bytes `owned` keeps
/// stable, and the `Op` drops (or gives back) `owned` "only after the last completion". A
/// zero-copy send (`IORING_OP_SEND_ZC`, Linux 6.0) completes twice: its result, flagged
/// `IORING_CQE_F_MORE`, then a notification once the kernel no longer reads the buffer —
/// for TCP, once the peer has acknowledged the bytes. Here the send's bytes wait in the
/// socket (the peer's window is full), and the buffer is changed the moment the `Op` gives
/// it back; the peer must still receive the original bytes.
///
/// (Review 56 wrote this test with the peer reading only after `op.await` had returned: an
/// `Op` that rightly waits for the notification then waits for a peer that waits for it.
/// So the peer starts reading either when the buffer has come back — given back early —
/// or once 200 ms have shown that the `Op` keeps it.)
#[test]
fn an_op_gives_back_its_buffer_only_after_the_last_completion() {
    use std::os::fd::AsRawFd;
    if !available() {
        return;
    }
    let _watchdog = Watchdog::arm("an_op_gives_back_its_buffer_only_after_the_last_completion");
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let (server, _) = listener.accept().unwrap();
    let fd = server.as_raw_fd();
    let set = |fd: i32, option: i32, value: libc::c_int| {
        // Safety: setsockopt reads one int from a live local.
        let set = unsafe {
            libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                option,
                (&raw const value).cast(),
                size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        assert_eq!(set, 0);
    };
    set(client.as_raw_fd(), libc::SO_RCVBUF, 4096);
    set(fd, libc::SO_SNDBUF, 4 << 20);
    // Far more than the client's window takes: the rest waits in our socket, unacknowledged.
    let fill = vec![b'f'; 64 * 1024];
    (&server).write_all(&fill).unwrap();
    let read_everything = move || {
        thread::spawn(move || {
            let mut all = vec![0; fill.len() + 16];
            (&client).read_exact(&mut all).unwrap();
            all[fill.len()..].to_vec()
        })
    };
    let tail = run(async {
        let original = b"sixteen original".to_vec();
        // Safety: the entry points into the `Vec`'s heap bytes, which the `Op` owns until the
        // request's last completion (its contract).
        let mut op = unsafe {
            crate::op::Op::submit("send-zc", original, |bytes| {
                io_uring::opcode::SendZc::new(
                    io_uring::types::Fd(fd),
                    bytes.as_ptr(),
                    bytes.len() as u32,
                )
                .build()
            })
        };
        let changed = b"sixteen CHANGED!";
        let (sent, bytes, reader) = match race(&mut op, sleep(Duration::from_millis(200))).await {
            // Given back while the peer has read nothing: ours to change, then the peer reads.
            Either::Left((sent, mut bytes)) => {
                bytes.copy_from_slice(changed);
                (sent, bytes, read_everything())
            }
            // Kept: the peer reads, acknowledges, and the buffer comes back only then.
            Either::Right(()) => {
                let reader = read_everything();
                let (sent, mut bytes) = op.await;
                bytes.copy_from_slice(changed);
                (sent, bytes, reader)
            }
        };
        assert_eq!(sent.unwrap(), 16);
        while !reader.is_finished() {
            sleep(Duration::from_millis(5)).await;
        }
        drop(bytes);
        reader.join().unwrap()
    });
    assert_eq!(
        String::from_utf8_lossy(&tail),
        "sixteen original",
        "the kernel read the buffer after the Op gave it back"
    );
}

/// `Op::submit`'s `kind` is documented as a label (for `--trace`), and its contract says
/// nothing about it; yet the driver closes the result of any abandoned request labelled
/// `"accept"` as if it were a new fd (`Driver::discard`). A read labelled so, whose result
/// (a byte count) happens to be the number of an fd the program owns, closes that fd when
/// its `Op` is dropped unpolled: an fd closed behind its owner's back (I/O safety). Whether a
/// result is an fd must come from the request itself (its opcode), not from its label — or
/// the contract must say what the label means.
#[test]
fn a_request_labelled_accept_never_closes_an_fd_it_does_not_own() {
    use std::os::fd::{AsRawFd, OwnedFd};
    if !available() {
        return;
    }
    let _watchdog = Watchdog::arm("a_request_labelled_accept_never_closes_an_fd_it_does_not_own");
    let (canary_reader, canary_writer) = std::io::pipe().unwrap();
    let canary: OwnedFd = canary_writer.into();
    let number = canary.as_raw_fd();
    let (reader, mut writer) = std::io::pipe().unwrap();
    writer.write_all(&vec![b'r'; number as usize]).unwrap();
    let fd = reader.as_raw_fd();
    run(async {
        // Safety: the entry points into the `Vec`'s heap bytes, within its capacity, which the
        // `Op` owns until the request's last completion.
        let op = unsafe {
            crate::op::Op::submit("accept", Vec::<u8>::with_capacity(number as usize), |buf| {
                io_uring::opcode::Read::new(
                    io_uring::types::Fd(fd),
                    buf.as_mut_ptr(),
                    number as u32,
                )
                .build()
            })
        };
        // The read completes meanwhile (its bytes are there); nobody polls the `Op`.
        sleep(Duration::from_millis(20)).await;
        drop(op);
    });
    // Safety: F_GETFD reads the fd's flags; it touches no memory.
    let open = unsafe { libc::fcntl(number, libc::F_GETFD) } >= 0;
    if !open {
        std::mem::forget(canary); // closed already: never close the number twice
    }
    drop(canary_reader);
    assert!(
        open,
        "fd {number}, owned by the test, was closed by the driver"
    );
}

/// A dropped listener stops listening: its multishot accept is cancelled and its socket
/// closed (through the ring), so a client that connects afterwards is refused instead of
/// being accepted into a slot nobody reads. (Review 56 proved the same for a listener
/// dropped on another thread, where it could not reach its ring; a listener is now `!Send`
/// — see the `compile_fail` example on [`TcpListener`](crate::net::TcpListener) — so that
/// test no longer compiles, and this one keeps the behaviour it guarded.)
#[test]
fn a_dropped_listener_stops_listening() {
    if !available() {
        return;
    }
    let _watchdog = Watchdog::arm("a_dropped_listener_stops_listening");
    let refused = run(async {
        let std_listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = std_listener.local_addr().unwrap();
        let mut listener = crate::net::TcpListener::from_std(std_listener);
        // Its multishot accept is submitted (the ready future wins the race at once).
        let _ = race(listener.accept(), std::future::ready(())).await;
        sleep(Duration::from_millis(10)).await;
        drop(listener);
        sleep(Duration::from_millis(10)).await;
        std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2)).is_err()
    });
    assert!(
        refused,
        "a client connected to a listener that had been dropped"
    );
}

/// A buffer whose `Drop` uses the runtime, as a buffer that owned a stream would (closing it
/// goes through the ring): it counts the requests in flight.
struct UsesTheRuntimeWhenDropped {
    bytes: Vec<u8>,
    in_flight_when_dropped: Rc<Cell<Option<usize>>>,
}

// Safety: the bytes live in the `Vec`'s heap allocation, which moving the value does not
// move and nothing changes while it exists.
unsafe impl IoBuf for UsesTheRuntimeWhenDropped {
    fn stable_ptr(&self) -> *const u8 {
        self.bytes.as_ptr()
    }

    fn len(&self) -> usize {
        self.bytes.len()
    }
}

impl Drop for UsesTheRuntimeWhenDropped {
    fn drop(&mut self) {
        let in_flight = with_driver(|driver| driver.in_flight());
        self.in_flight_when_dropped.set(Some(in_flight));
    }
}

/// What an abandoned request kept alive is dropped once the kernel is done with it — after
/// the loop has let go of its ring, so that its `Drop` may use the runtime (before, it was
/// dropped while the loop held the ring: "already borrowed", a panic out of `block_on`).
#[test]
fn a_value_kept_for_an_abandoned_request_may_use_the_runtime_when_dropped() {
    if !available() {
        return;
    }
    let _watchdog =
        Watchdog::arm("a_value_kept_for_an_abandoned_request_may_use_the_runtime_when_dropped");
    let (_reader, writer) = std::io::pipe().unwrap();
    fill_pipe(&writer);
    let in_flight_when_dropped = Rc::new(Cell::new(None));
    let buffer = UsesTheRuntimeWhenDropped {
        bytes: b"stuck".to_vec(),
        in_flight_when_dropped: Rc::clone(&in_flight_when_dropped),
    };
    let dropped = run(async {
        let writer = crate::fd::RingFd::new(writer.into());
        // The pipe is full: the write waits; the sleep wins and the write is abandoned.
        let raced = race(append(&writer, buffer), sleep(Duration::from_millis(10))).await;
        assert!(
            matches!(raced, Either::Right(())),
            "the write was not stuck"
        );
        for _ in 0..100 {
            if in_flight_when_dropped.get().is_some() {
                break;
            }
            sleep(Duration::from_millis(10)).await;
        }
        in_flight_when_dropped.get()
    });
    assert!(dropped.is_some(), "the buffer was never dropped");
}

/// A request's length field has 32 bits: a buffer of exactly 4 GiB must not become a request
/// for 0 bytes, whose result (0) would read as EOF.
#[test]
fn a_4_gib_buffer_is_read_into_not_taken_for_eof() {
    if !available() {
        return;
    }
    let _watchdog = Watchdog::arm("a_4_gib_buffer_is_read_into_not_taken_for_eof");
    let (reader, mut writer) = std::io::pipe().unwrap();
    writer.write_all(b"hello").unwrap();
    let read = run(async {
        // Address space only: the kernel touches the pages it writes, 5 bytes' worth.
        let mut pipe = Reader::new(reader.into(), 1 << 32);
        pipe.read().await.unwrap()
    });
    assert_eq!(String::from_utf8_lossy(&read), "hello");
}

/// The same for a send: a 4 GiB buffer is sent (as much as the socket takes), not refused
/// at once as a write of zero bytes.
#[test]
fn a_4_gib_buffer_is_sent_not_refused() {
    if !available() {
        return;
    }
    let _watchdog = Watchdog::arm("a_4_gib_buffer_is_sent_not_refused");
    let (ours, _peer) = UnixStream::pair().unwrap();
    let (raced, sent) = run(async {
        let mut stream = TcpStream::new(ours.into());
        // Zeroed pages the kernel maps only when read: no memory to speak of.
        let huge = vec![0u8; 1 << 32];
        let raced = race(stream.write_all(huge), sleep(Duration::from_millis(100))).await;
        let raced = match raced {
            Either::Left((result, _)) => format!("write_all returned {result:?}"),
            Either::Right(()) => "still sending".to_string(),
        };
        (raced, stream.bytes_sent())
    });
    assert_eq!(raced, "still sending");
    assert!(sent > 0, "nothing was sent");
}

/// A task that panics ends there, as in lesson 5: the other tasks and the main future go on,
/// and `block_on` returns normally (before, the panic unwound out of `block_on`, ending
/// every task — a whole server for one connection's bug).
#[test]
fn a_panicking_task_ends_alone() {
    if !available() {
        return;
    }
    let _watchdog = Watchdog::arm("a_panicking_task_ends_alone");
    let survivor_ran = Rc::new(Cell::new(false));
    let survived = Rc::clone(&survivor_ran);
    let finished = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        run(async move {
            crate::executor::spawn(async {
                sleep(Duration::from_millis(1)).await;
                panic!("a task gives up");
            });
            crate::executor::spawn(async move {
                sleep(Duration::from_millis(20)).await;
                survived.set(true);
            });
            sleep(Duration::from_millis(50)).await;
            "the main future finished"
        })
    }));
    assert_eq!(finished.ok(), Some("the main future finished"));
    assert!(survivor_ran.get(), "the other task did not run on");
}

/// One `io_uring_enter` per turn holds only while a turn pushes no more than the submission
/// ring holds: pushing more makes one more call each time the ring fills — and the count
/// `--trace` prints says so (it used to count only the turn's own call).
#[test]
fn a_turn_that_fills_the_submission_ring_counts_every_enter() {
    if !available() {
        return;
    }
    let _watchdog = Watchdog::arm("a_turn_that_fills_the_submission_ring_counts_every_enter");
    let requests = crate::ring::SQ_ENTRIES as usize + 10;
    let enters_while_pushing = run(async move {
        let mut sleeps: Vec<_> = (0..requests)
            .map(|_| Box::pin(sleep(Duration::from_millis(1))))
            .collect();
        let before = with_driver(|driver| driver.io_uring_enters());
        // One poll of each, all in this one turn: each pushes its timeout.
        std::future::poll_fn(|cx| {
            for sleep in &mut sleeps {
                let _ = sleep.as_mut().poll(cx);
            }
            Poll::Ready(())
        })
        .await;
        let after = with_driver(|driver| driver.io_uring_enters());
        for sleep in sleeps {
            sleep.await;
        }
        after - before
    });
    assert_eq!(
        enters_while_pushing, 1,
        "a full submission ring was flushed uncounted"
    );
}

// ---- Review 6 (rev6): what is still wrong ----

/// A stream carried out of the `block_on` that made it into the next one must not put its
/// fd number into that runtime's ring: its drop closes the number through its *own* ring,
/// or, that runtime being over, with `close(2)` at once — while the send it just pushed into
/// this ring still waits for this ring's next `io_uring_enter`. The next socket opened gets
/// the number, and the bytes go to its peer.
#[test]
fn a_stream_from_another_runtime_never_sends_through_this_ones_ring() {
    use std::os::fd::AsRawFd;
    if !available() {
        return;
    }
    let _watchdog =
        Watchdog::arm("a_stream_from_another_runtime_never_sends_through_this_ones_ring");
    let (a, _a_peer) = UnixStream::pair().unwrap();
    let number = a.as_raw_fd();
    let mut a = run(async move { TcpStream::new(a.into()) });
    let leaked = run(async move {
        let (b, b_peer) = UnixStream::pair().unwrap();
        let _ = race(
            a.write_all(b"meant for a's peer".to_vec()),
            std::future::ready(()),
        )
        .await;
        drop(a);
        what_the_next_socket_gets(b, b_peer, number).await
    });
    nothing_leaked(&leaked);
}

/// The same through a `block_on` nested in a task: the outer runtime's stream pushes a send
/// into the outer ring, and is dropped inside the inner `block_on`, where its own ring is
/// out of reach — so its fd is closed with `close(2)` before the outer ring has submitted
/// the send. The next socket gets the number and the bytes.
#[test]
fn a_stream_dropped_in_a_nested_block_on_never_sends_to_the_next_socket() {
    use std::os::fd::AsRawFd;
    if !available() {
        return;
    }
    let _watchdog =
        Watchdog::arm("a_stream_dropped_in_a_nested_block_on_never_sends_to_the_next_socket");
    let leaked = std::panic::catch_unwind(|| {
        run(async move {
            let (a, _a_peer) = UnixStream::pair().unwrap();
            let (b, b_peer) = UnixStream::pair().unwrap();
            let number = a.as_raw_fd();
            let mut a = TcpStream::new(a.into());
            let _ = race(
                a.write_all(b"meant for a's peer".to_vec()),
                std::future::ready(()),
            )
            .await;
            let _ = block_on_with(Trace::new(false), crate::executor::BUFFERS, async move {
                drop(a);
            });
            what_the_next_socket_gets(b, b_peer, number).await
        })
    });
    // Refusing to nest (a panic) is as good as not leaking.
    if let Ok(leaked) = leaked {
        nothing_leaked(&leaked);
    }
}

/// Gives `b` the fd `number` a dropped stream had, lets a few turns pass (whatever waits in
/// the submission ring reaches the kernel), closes it, and returns what `b`'s peer received.
async fn what_the_next_socket_gets(
    b: UnixStream,
    b_peer: UnixStream,
    number: std::os::fd::RawFd,
) -> Vec<u8> {
    let b = reuse_fd_number(b, number);
    sleep(Duration::from_millis(50)).await;
    drop(b);
    b_peer.set_nonblocking(true).unwrap();
    let mut got = Vec::new();
    let _ = (&b_peer).read_to_end(&mut got);
    got
}

/// The next socket's peer received none of the bytes meant for the dropped stream's.
fn nothing_leaked(leaked: &[u8]) {
    assert!(
        leaked.is_empty(),
        "another connection's peer received {:?}",
        String::from_utf8_lossy(leaked)
    );
}

/// Runs the test `name` of this binary alone in a child process, with `CHILD_TEST` set so it
/// does its part there, and returns how the child ended: for a failure that aborts the
/// whole process rather than panicking in one test.
fn in_child_process(name: &str) -> std::process::Output {
    let exe = std::env::current_exe().expect("the test binary");
    std::process::Command::new(exe)
        .args([name, "--exact", "--test-threads", "1", "--nocapture"])
        .env("CHILD_TEST", name)
        .output()
        .expect("run the test binary")
}

/// A reader still alive when its thread exits — kept in a thread-local, outlived by the
/// runtime's own — is closed quietly. Its fd's destructor asks for the current runtime, to
/// close it through the ring: with `LocalKey::with` that panicked ("cannot access a Thread
/// Local Storage value during or after destruction"), and a panic in a thread-local's
/// destructor aborts the process. `try_with` says there is none: the runtime has ended, so
/// `close(2)` is sound (see `RingFd`).
#[test]
fn a_reader_dropped_at_thread_exit_is_dropped_quietly() {
    const NAME: &str = "tests::a_reader_dropped_at_thread_exit_is_dropped_quietly";
    if !available() {
        return;
    }
    if std::env::var("CHILD_TEST").as_deref() != Ok(NAME) {
        let output = in_child_process(NAME);
        assert!(
            output.status.success(),
            "{}\n{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
        return;
    }
    thread_local! {
        static KEPT: std::cell::RefCell<Option<Reader>> = const { std::cell::RefCell::new(None) };
    }
    let thread = thread::spawn(|| {
        // First touched before the runtime's thread-local, so destroyed after it: thread-
        // locals are destroyed in the reverse order of their first use.
        KEPT.with(|_| ());
        run(async {
            let (reader, _writer) = std::io::pipe().expect("pipe");
            let reader = Reader::new(reader.into(), 1);
            KEPT.with(|kept| *kept.borrow_mut() = Some(reader));
        });
    });
    thread.join().expect("the thread");
}

/// `race` keeps each future it is given once: an `async fn race` kept both twice (the
/// arguments, then the locals that pin them), and as the echo server races each
/// connection's whole echo, every idle connection paid for its echo twice. The raced
/// future still runs: the first to finish wins.
#[test]
fn race_keeps_each_future_once() {
    if !available() {
        return;
    }
    let with_a_buffer = async {
        let buffer = [7u8; 1024];
        sleep(Duration::from_millis(1)).await;
        buffer.iter().map(|&byte| u32::from(byte)).sum::<u32>()
    };
    let alone = size_of_val(&with_a_buffer);
    let raced = race(with_a_buffer, std::future::pending::<()>());
    assert!(
        size_of_val(&raced) <= alone + 16,
        "race of a {alone}-byte future takes {} bytes",
        size_of_val(&raced)
    );
    assert_eq!(run(raced), Either::Left(7 * 1024));
}

/// A finished request's queue of results is kept for the next request, not freed: a send
/// would otherwise allocate a queue for its one result and free it again, every message.
/// (The slot's owner frees it with `abandon`, which once took the queue out first and
/// dropped it.)
#[test]
fn a_finished_request_leaves_its_result_queue_to_the_next() {
    if !available() {
        return;
    }
    let _watchdog = Watchdog::arm("a_finished_request_leaves_its_result_queue_to_the_next");
    run(async {
        let before = with_driver(|driver| driver.spare_queues());
        // One request with one result: its slot's queue is allocated for that result.
        sleep(Duration::from_millis(1)).await;
        let after = with_driver(|driver| driver.spare_queues());
        assert_eq!(after, before + 1, "the finished request's queue was freed");
        // The next request takes it: no queue is allocated for it.
        sleep(Duration::from_millis(1)).await;
        assert_eq!(with_driver(|driver| driver.spare_queues()), after);
    });
}
