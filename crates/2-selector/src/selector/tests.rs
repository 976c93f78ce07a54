//! The selector's own tests: level- and edge-triggered wakeups, budgets, errors, unregistering.

use super::*;
use std::cell::{Cell, RefCell};
use std::io::{ErrorKind, PipeReader, PipeWriter, Read, Write};
use std::rc::Rc;

fn nonblocking_pipe() -> (PipeReader, PipeWriter) {
    let (reader, writer) = std::io::pipe().unwrap();
    fdio::set_nonblocking(&reader).unwrap();
    (reader, writer)
}

fn selector(trigger: Trigger) -> Selector {
    Selector::new(trigger, Trace::new(false)).unwrap()
}

/// The callback of a readable source runs; when it unregisters itself it is dropped at
/// once — closing the source it owns — and `run` returns since nothing is registered.
#[test]
fn unregistering_drops_the_callback_and_its_source() {
    let (reader, mut writer) = nonblocking_pipe();
    writer.write_all(b"ping").unwrap();
    let calls = Rc::new(Cell::new(0));
    let mut selector = selector(Trigger::Level);
    let seen = Rc::clone(&calls);
    selector
        .register(
            "pipe".into(),
            reader,
            Interest::READ,
            move |selector, pipe, ready| {
                seen.set(seen.get() + 1);
                assert!(ready.readable);
                selector.unregister(ready.token, pipe)
            },
        )
        .unwrap();
    selector.run().unwrap();
    assert_eq!(calls.get(), 1);
    // The read end was closed with the callback: writing now fails with a broken pipe.
    let err = writer.write_all(b"more").unwrap_err();
    assert_eq!(err.kind(), ErrorKind::BrokenPipe);
}

/// A callback's error ends the loop at once: `run` returns it although a source is still
/// registered, and the rest of the turn is skipped — the other ready callback never runs.
#[test]
fn a_callback_error_ends_the_loop() {
    let mut selector = selector(Trigger::Level);
    let calls = Rc::new(Cell::new(0));
    let mut writers = Vec::new();
    for name in ["first", "second"] {
        let (reader, mut writer) = nonblocking_pipe();
        writer.write_all(b"ready").unwrap();
        writers.push(writer);
        let seen = Rc::clone(&calls);
        selector
            .register(name.into(), reader, Interest::READ, move |_, _, _| {
                seen.set(seen.get() + 1);
                Err(io::Error::other(format!("{name} failed")))
            })
            .unwrap();
    }
    let err = selector.run().unwrap_err();
    assert!(err.to_string().ends_with(" failed"), "{err}");
    assert_eq!(calls.get(), 1);
}

/// `wake_after` runs a callback again after the delay, even though its source never
/// became ready (this is how `accept` is retried after running out of fds).
#[test]
fn wake_after_calls_back_without_an_event() {
    let (reader, _writer) = nonblocking_pipe();
    let mut selector = selector(Trigger::Level);
    let calls = Rc::new(Cell::new(0));
    let seen = Rc::clone(&calls);
    let token = selector
        .register(
            "idle pipe".into(),
            reader,
            Interest::READ,
            move |selector, pipe, ready| {
                seen.set(seen.get() + 1);
                selector.unregister(ready.token, pipe)
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
    let (reader, mut writer) = nonblocking_pipe();
    writer.write_all(b"x").unwrap();
    let mut selector = selector(Trigger::Level);
    let calls = Rc::new(Cell::new(0));
    let seen = Rc::clone(&calls);
    let token = selector
        .register("pipe".into(), reader, Interest::READ, move |_, _, _| {
            seen.set(seen.get() + 1);
            Ok(())
        })
        .unwrap();
    let readable = Cause::Epoll(EpollFlags::EPOLLIN);
    selector.dispatch(Token(token.0 + 1), readable).unwrap();
    assert_eq!(calls.get(), 0);
    selector.dispatch(token, readable).unwrap();
    assert_eq!(calls.get(), 1);
}

/// Edge-triggered, a callback that spent its budget still owes a read. If an event that
/// says only "writable" runs it first on the next turn, it is told to read as well, and
/// the turn does not run it a second time for the budget.
#[test]
fn a_spent_budget_is_not_lost_to_an_earlier_event() {
    let (reader, _writer) = nonblocking_pipe();
    let mut selector = selector(Trigger::Edge);
    let told = Rc::new(RefCell::new(Vec::new()));
    let seen = Rc::clone(&told);
    let token = selector
        .register("pipe".into(), reader, Interest::READ, move |_, _, ready| {
            seen.borrow_mut().push((ready.readable, ready.writable));
            Ok(())
        })
        .unwrap();
    selector.budget_spent(token);
    selector
        .dispatch(token, Cause::Epoll(EpollFlags::EPOLLOUT))
        .unwrap();
    selector.turn(Some(Duration::ZERO)).unwrap();
    assert_eq!(*told.borrow(), [(true, true)]);
}

/// The deliberately wrong callback of the lesson: it reads 8 bytes per event and never
/// looks for more. Registers it on a pipe holding 64 bytes and runs turns (each waiting
/// at most 50 ms) until 20 have passed; returns the bytes it got and how often it ran.
fn read_once_per_event(trigger: Trigger) -> (Vec<u8>, usize) {
    let (reader, mut writer) = nonblocking_pipe();
    let sent: Vec<u8> = (0..64).collect();
    writer.write_all(&sent).unwrap();
    let received = Rc::new(RefCell::new(Vec::new()));
    let wakeups = Rc::new(Cell::new(0));
    let mut selector = selector(trigger);
    let (got, woken) = (Rc::clone(&received), Rc::clone(&wakeups));
    selector
        .register(
            "pipe".into(),
            reader,
            Interest::READ,
            move |_, pipe: &mut PipeReader, _| {
                woken.set(woken.get() + 1);
                let mut buf = [0; 8];
                if let Ok(n) = pipe.read(&mut buf) {
                    got.borrow_mut().extend_from_slice(&buf[..n]);
                }
                Ok(())
            },
        )
        .unwrap();
    for _ in 0..20 {
        selector.turn(Some(Duration::from_millis(50))).unwrap();
    }
    drop(selector);
    (received.take(), wakeups.get())
}

/// Level-triggered (epoll's default): reading once per event is enough — epoll reports
/// the pipe again while bytes are left. It costs a wakeup per read: 8 for 64 bytes.
#[test]
fn level_triggered_reports_what_a_callback_left_behind() {
    let (received, wakeups) = read_once_per_event(Trigger::Level);
    assert_eq!(received, (0..64).collect::<Vec<u8>>());
    assert_eq!(wakeups, 8);
}

/// Edge-triggered (`EPOLLET`): the same callback gets one event for the 64 bytes, reads
/// 8, and is never told about the other 56: the echo would stall right here.
#[test]
fn edge_triggered_never_mentions_what_a_callback_left_behind() {
    let (received, wakeups) = read_once_per_event(Trigger::Edge);
    assert_eq!(received, (0..8).collect::<Vec<u8>>());
    assert_eq!(wakeups, 1);
}

/// Edge-triggered, the right callback reads until `WouldBlock` within its budget; when
/// the budget runs out the selector runs it again on the next turn, with no new edge.
/// Here 1-byte reads with a budget of 4 drain 10 bytes in 3 turns.
#[test]
fn edge_triggered_callbacks_run_again_when_their_budget_runs_out() {
    let (reader, mut writer) = nonblocking_pipe();
    writer.write_all(&[7; 10]).unwrap();
    let received = Rc::new(Cell::new(0));
    let wakeups = Rc::new(Cell::new(0));
    let mut selector = selector(Trigger::Edge);
    let (got, woken) = (Rc::clone(&received), Rc::clone(&wakeups));
    selector
        .register(
            "pipe".into(),
            reader,
            Interest::READ,
            move |selector, pipe: &mut PipeReader, ready| {
                woken.set(woken.get() + 1);
                for _ in 0..ready.budget {
                    match pipe.read(&mut [0; 1]) {
                        Ok(n) => got.set(got.get() + n),
                        Err(_) => return Ok(()),
                    }
                }
                selector.budget_spent(ready.token);
                Ok(())
            },
        )
        .unwrap();
    for _ in 0..6 {
        selector.turn(Some(Duration::from_millis(50))).unwrap();
    }
    assert_eq!(received.get(), 10);
    assert_eq!(wakeups.get(), 3);
}
