//! What `fdio::timeline` writes, read back as a viewer reads it, and drawn.
//!
//! The recorder is one per process, so this file has a single test that records.

use std::path::PathBuf;
use std::sync::Arc;
use std::thread;

use fdio::timeline::{self as recorder, Args, TaskTag};
use serde_json::Value;

/// A temporary file path, removed on drop.
struct TempFile(PathBuf);

impl TempFile {
    fn new(name: &str) -> TempFile {
        TempFile(std::env::temp_dir().join(format!("timeline-{}-{name}", std::process::id())))
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// A recording made the way a runtime makes one — a loop thread that waits and polls, a
/// worker that is woken from it and polls, an instant — is valid Trace Event Format: every
/// event has name, ph, ts, pid and tid (and dur if complete), every flow has both ends, and
/// the SVG drawn from it is well-formed XML with one lane per thread.
#[test]
fn a_recording_is_valid_and_draws_one_lane_per_thread() {
    let json = TempFile::new("recorded.json");
    let recording = recorder::record(Some(&json.0), "test program").expect("create the file");
    recorder::name_thread("loop");
    let accept = TaskTag::named("accept");
    let conn = Arc::new(TaskTag::named(format_args!("conn {}", "127.0.0.1:40212")));
    accept.poll(|| ());
    let span = recorder::begin();
    thread::sleep(std::time::Duration::from_millis(2));
    span.wait("epoll_wait", || {
        Args::new()
            .number("events", 1)
            .text("ready", "Token(0) read")
    });
    conn.woken();
    let worker = {
        let conn = Arc::clone(&conn);
        thread::spawn(move || {
            recorder::name_thread("worker 0");
            conn.poll(|| accept.woken()); // a wake from inside a poll
            recorder::instant("steal", || Args::new().number("tasks", 2));
            accept
        })
    };
    let accept = worker.join().expect("the worker");
    accept.poll(|| ());
    drop(recording);

    let text = std::fs::read_to_string(&json.0).expect("the file was written");
    let document: Value = serde_json::from_str(&text).expect("JSON");
    let events = document["traceEvents"].as_array().expect("traceEvents");
    for event in events {
        for key in ["name", "ph", "ts", "pid", "tid"] {
            assert!(event.get(key).is_some(), "no {key}: {event}");
        }
        if event["ph"] == "X" {
            assert!(
                event["dur"].is_number(),
                "a complete event without dur: {event}"
            );
        }
    }
    let flows = |phase: &str| -> Vec<u64> {
        let mut ids: Vec<u64> = events
            .iter()
            .filter(|event| event["ph"] == phase)
            .map(|event| event["id"].as_u64().expect("a flow id"))
            .collect();
        ids.sort();
        ids
    };
    assert_eq!(flows("s"), flows("f"), "every wake has both ends");
    // Each task's first poll answers its spawn; the wake from the loop finds conn's spawn not
    // yet answered (it adds nothing); the wake from inside conn's poll is accept's second.
    assert_eq!(flows("s").len(), 3, "two spawns and a wake: {text}");
    assert!(
        events
            .iter()
            .filter(|event| event["ph"] == "f")
            .all(|event| event["bp"] == "e")
    );

    let trace = ::timeline::Trace::parse(&text).expect("the drawing tool reads it");
    let names: Vec<&str> = trace.lanes.iter().map(|lane| lane.name.as_str()).collect();
    assert_eq!(names, ["loop", "worker 0"], "lanes in the order they began");
    let (from, to) = trace.span();
    let picture = ::timeline::svg::render(&trace, from, to);
    let document = roxmltree::Document::parse(&picture.svg).expect("well-formed XML");
    let lanes = document
        .descendants()
        .filter(|node| node.attribute("class") == Some("lane"))
        .count();
    assert_eq!(lanes, 2, "one lane per thread");
    assert_eq!((picture.polls, picture.waits, picture.wakes), (3, 1, 3));
}
