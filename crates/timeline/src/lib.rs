//! `timeline`: reads a `--timeline` file (Chrome's Trace Event Format, as `fdio::timeline`
//! writes it) and draws it as an SVG a learner can open without a browser's trace viewer:
//!
//! ```text
//! cargo run --bin timeline -- echo.json --svg echo.svg [--from-ms 120 --to-ms 125]
//! ```
//!
//! One lane per thread, in the order the threads first recorded something; each poll a bar
//! coloured by its task, each wait (`epoll_wait`, `io_uring_enter`, `park`) grey, each wake an
//! arrow from the waker to the poll it caused, and a time axis in milliseconds.
//!
//! # Layout
//! - This file: the command line, and [`Trace`], the file's events read into lanes, slices,
//!   instants and wakes — strictly: an event without its `name`, `ph`, `ts`, `pid` or `tid`
//!   (or a complete event without `dur`) is an error, and so is a flow with one end.
//! - [`svg`]: the drawing.

use std::collections::HashMap;
use std::io;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use serde_json::Value;

pub mod svg;

/// Draws a --timeline file as an SVG.
#[derive(Parser, Debug)]
#[command(name = "timeline", version)]
struct Cli {
    /// The trace a lesson wrote with `--timeline FILE`.
    file: PathBuf,
    /// Where to write the picture.
    #[arg(long)]
    svg: PathBuf,
    /// Draw from this time on (milliseconds since the recording started).
    #[arg(long)]
    from_ms: Option<f64>,
    /// Draw up to this time (milliseconds since the recording started).
    #[arg(long)]
    to_ms: Option<f64>,
    /// Draw the busiest MS milliseconds (the window with the most polls) inside the others'
    /// bounds: where to look in a long recording.
    #[arg(long, value_name = "MS")]
    busiest_ms: Option<f64>,
}

/// The `timeline` binary: reads the trace, writes the SVG, says what it drew.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(&cli) {
        Ok(summary) => {
            println!("{summary}");
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("timeline: {err}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: &Cli) -> Result<String, String> {
    let text = std::fs::read_to_string(&cli.file)
        .map_err(|err| format!("cannot read {}: {err}", cli.file.display()))?;
    let trace = Trace::parse(&text).map_err(|err| format!("{}: {err}", cli.file.display()))?;
    let (start, end) = trace.span();
    let mut from = cli.from_ms.map_or(start, |ms| (ms * 1000.0).max(start));
    let mut to = cli.to_ms.map_or(end, |ms| (ms * 1000.0).min(end));
    if let Some(ms) = cli.busiest_ms {
        (from, to) = trace.busiest(from, to, ms * 1000.0);
    }
    if to <= from {
        return Err(format!(
            "the window is empty: the trace runs from {:.3} ms to {:.3} ms",
            start / 1000.0,
            end / 1000.0
        ));
    }
    let picture = svg::render(&trace, from, to);
    std::fs::write(&cli.svg, picture.svg)
        .map_err(|err| format!("cannot write {}: {err}", cli.svg.display()))?;
    Ok(format!(
        "{}: {} from {:.3} ms to {:.3} ms: {}, {}, {} → {}",
        trace.program,
        count(trace.lanes.len(), "lane"),
        from / 1000.0,
        to / 1000.0,
        count(picture.polls, "poll"),
        count(picture.waits, "wait"),
        count(picture.wakes, "wake"),
        cli.svg.display()
    ))
}

/// `1 lane`, `3 lanes`.
fn count(n: usize, noun: &str) -> String {
    match n {
        1 => format!("1 {noun}"),
        n => format!("{n} {noun}s"),
    }
}

/// A trace file, read.
#[derive(Debug, Default)]
pub struct Trace {
    /// The process name (`async-await echo`).
    pub program: String,
    /// One per thread, in drawing order.
    pub lanes: Vec<Lane>,
    /// Complete events (`"ph":"X"`), in time order.
    pub slices: Vec<Slice>,
    /// Instant events (`"ph":"i"`): steals, signals, the note that recording stopped.
    pub instants: Vec<Instant>,
    /// Wakes: each flow's start and end, paired by id.
    pub wakes: Vec<Wake>,
}

/// One thread's lane.
#[derive(Debug, Clone)]
pub struct Lane {
    pub tid: i64,
    pub name: String,
    sort: i64,
}

/// A complete event: a poll, a wait, a job.
#[derive(Debug, Clone)]
pub struct Slice {
    pub tid: i64,
    pub name: String,
    /// `poll`, `wait`, `wake`, `work`.
    pub cat: String,
    /// µs since the recording started.
    pub ts: f64,
    pub dur: f64,
    /// The args object, as JSON text (`{"events":2}`), or empty.
    pub args: String,
}

/// An instant event.
#[derive(Debug, Clone)]
pub struct Instant {
    pub tid: i64,
    pub name: String,
    pub ts: f64,
    pub args: String,
}

/// A wake: from where `wake()` was called to the poll it caused.
#[derive(Debug, Clone)]
pub struct Wake {
    pub id: u64,
    /// The waker's thread, and when.
    pub from: (i64, f64),
    /// The polling thread, and when (inside the poll's slice).
    pub to: (i64, f64),
}

impl Trace {
    /// Reads a trace: the JSON object format (`{"traceEvents":[…]}`) or a bare array.
    pub fn parse(text: &str) -> Result<Trace, String> {
        if text.trim().is_empty() {
            return Err(
                "empty: a --timeline file is written when its program ends; was it \
                        killed before?"
                    .into(),
            );
        }
        let json: Value = serde_json::from_str(text).map_err(|err| format!("not JSON: {err}"))?;
        let events = match &json {
            Value::Array(events) => events,
            Value::Object(object) => object
                .get("traceEvents")
                .and_then(Value::as_array)
                .ok_or("no traceEvents array")?,
            _ => return Err("neither an object nor an array".into()),
        };
        let mut trace = Trace::default();
        let mut flow_starts: HashMap<u64, (i64, f64)> = HashMap::new();
        let mut flow_ends: HashMap<u64, (i64, f64)> = HashMap::new();
        let mut lanes: HashMap<i64, Lane> = HashMap::new();
        for (index, event) in events.iter().enumerate() {
            let field = |key: &str| {
                event
                    .get(key)
                    .ok_or_else(|| format!("event {index} has no \"{key}\": {event}"))
            };
            let number = |key: &str| {
                field(key)?
                    .as_f64()
                    .ok_or_else(|| format!("event {index}'s \"{key}\" is not a number: {event}"))
            };
            let text = |key: &str| {
                field(key)?
                    .as_str()
                    .map(String::from)
                    .ok_or_else(|| format!("event {index}'s \"{key}\" is not a string: {event}"))
            };
            let name = text("name")?;
            let phase = text("ph")?;
            let ts = number("ts")?;
            number("pid")?;
            let tid = number("tid")? as i64;
            let args = event.get("args").map(Value::to_string).unwrap_or_default();
            let arg = |key: &str| event.get("args").and_then(|args| args.get(key));
            match phase.as_str() {
                "X" => trace.slices.push(Slice {
                    tid,
                    name,
                    cat: event
                        .get("cat")
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .to_string(),
                    ts,
                    dur: number("dur")?,
                    args,
                }),
                "i" | "I" => trace.instants.push(Instant {
                    tid,
                    name,
                    ts,
                    args,
                }),
                "s" | "f" => {
                    let id = field("id")?
                        .as_u64()
                        .ok_or_else(|| format!("event {index}'s id is not a number: {event}"))?;
                    let ends = if phase == "s" {
                        &mut flow_starts
                    } else {
                        &mut flow_ends
                    };
                    if ends.insert(id, (tid, ts)).is_some() {
                        return Err(format!("flow {id} has two \"{phase}\" events"));
                    }
                }
                "M" => match name.as_str() {
                    "process_name" => {
                        let program = arg("name").and_then(Value::as_str);
                        trace.program = program.unwrap_or_default().into();
                    }
                    "thread_name" => {
                        let name = arg("name").and_then(Value::as_str);
                        lane(&mut lanes, tid).name = name.unwrap_or_default().into();
                    }
                    "thread_sort_index" => {
                        let sort = arg("sort_index").and_then(Value::as_i64);
                        lane(&mut lanes, tid).sort = sort.unwrap_or(0);
                    }
                    _ => {}
                },
                _ => {} // other phases (counters, async events) are not drawn
            }
        }
        for (id, from) in &flow_starts {
            let to = flow_ends
                .remove(id)
                .ok_or_else(|| format!("flow {id} starts and never ends"))?;
            trace.wakes.push(Wake {
                id: *id,
                from: *from,
                to,
            });
        }
        if let Some(id) = flow_ends.keys().next() {
            return Err(format!("flow {id} ends and never starts"));
        }
        trace.wakes.sort_by(|a, b| a.from.1.total_cmp(&b.from.1));
        trace.slices.sort_by(|a, b| a.ts.total_cmp(&b.ts));
        // A lane for every thread named in the metadata, and for any other with events.
        let busy = trace.slices.iter().map(|slice| slice.tid);
        for tid in busy.chain(trace.instants.iter().map(|instant| instant.tid)) {
            lane(&mut lanes, tid);
        }
        let mut lanes: Vec<Lane> = lanes.into_values().collect();
        lanes.sort_by_key(|lane| (lane.sort, lane.tid));
        trace.lanes = lanes;
        Ok(trace)
    }

    /// The first and last moment of any event, in µs.
    pub fn span(&self) -> (f64, f64) {
        let starts = self
            .slices
            .iter()
            .map(|slice| slice.ts)
            .chain(self.instants.iter().map(|instant| instant.ts));
        let ends = self
            .slices
            .iter()
            .map(|slice| slice.ts + slice.dur)
            .chain(self.instants.iter().map(|instant| instant.ts));
        let start = starts.fold(f64::INFINITY, f64::min);
        let end = ends.fold(f64::NEG_INFINITY, f64::max);
        if start.is_finite() {
            (start, end)
        } else {
            (0.0, 0.0)
        }
    }

    /// The window `length` µs long, inside `from..to`, in which the most polls begin (the
    /// earliest such window; it starts just before its first poll).
    pub fn busiest(&self, from: f64, to: f64, length: f64) -> (f64, f64) {
        let starts: Vec<f64> = self
            .slices
            .iter()
            .filter(|slice| slice.cat == "poll" && slice.ts >= from && slice.ts + length <= to)
            .map(|slice| slice.ts)
            .collect();
        let mut best = (0, from);
        let mut last = 0;
        for (first, &start) in starts.iter().enumerate() {
            last = last.max(first);
            while last < starts.len() && starts[last] < start + length {
                last += 1;
            }
            if last - first > best.0 {
                best = (last - first, start);
            }
        }
        // A little room before the first poll, for the wake that caused it.
        let begin = (best.1 - length / 20.0).max(from);
        (begin, (begin + length).min(to))
    }

    /// The slice on lane `tid` that contains moment `ts`, the innermost if several do.
    /// Looks back from `ts` through the slices in time order: the first that contains it
    /// began last, so it is the innermost (of two that begin together, the shorter).
    pub fn slice_at(&self, tid: i64, ts: f64) -> Option<&Slice> {
        let begun = self.slices.partition_point(|slice| slice.ts <= ts);
        let mut found: Option<&Slice> = None;
        for slice in self.slices[..begun].iter().rev() {
            if found.is_some_and(|inner| slice.ts < inner.ts) {
                break;
            }
            if slice.tid == tid
                && ts <= slice.ts + slice.dur
                && found.is_none_or(|inner| slice.dur < inner.dur)
            {
                found = Some(slice);
            }
        }
        found
    }
}

/// Lane `tid`, made (unnamed, drawn last) if it is new.
fn lane(lanes: &mut HashMap<i64, Lane>, tid: i64) -> &mut Lane {
    lanes.entry(tid).or_insert_with(|| Lane {
        tid,
        name: format!("thread {tid}"),
        sort: i64::MAX,
    })
}

/// Reads a trace file: for tests that check what a lesson wrote.
pub fn read(path: &std::path::Path) -> io::Result<Trace> {
    let text = std::fs::read_to_string(path)?;
    Trace::parse(&text).map_err(io::Error::other)
}

#[cfg(test)]
mod tests {
    use super::*;

    const META: &str =
        r#"{"name":"thread_name","ph":"M","ts":0,"pid":1,"tid":1,"args":{"name":"loop"}}"#;

    fn trace(events: &[&str]) -> Result<Trace, String> {
        Trace::parse(&format!("{{\"traceEvents\":[{}]}}", events.join(",")))
    }

    /// An event without one of the fields every event needs is refused, naming the field.
    #[test]
    fn an_event_missing_a_field_is_refused() {
        let complete = r#"{"name":"a","cat":"poll","ph":"X","ts":1,"dur":2,"pid":1,"tid":1}"#;
        assert!(trace(&[META, complete]).is_ok());
        for key in ["name", "ph", "ts", "pid", "tid", "dur"] {
            let without = complete.replace(&format!("\"{key}\":"), "\"other\":");
            let err = trace(&[META, &without]).expect_err(key);
            assert!(err.contains(&format!("no \"{key}\"")), "{key}: {err}");
        }
    }

    /// A flow with one end is refused: every wake must point at a poll.
    #[test]
    fn a_flow_with_one_end_is_refused() {
        let start = r#"{"name":"wake","cat":"wake","ph":"s","id":4,"ts":1,"pid":1,"tid":1}"#;
        let end = r#"{"name":"wake","cat":"wake","ph":"f","bp":"e","id":4,"ts":3,"pid":1,"tid":1}"#;
        assert_eq!(trace(&[start, end]).expect("paired").wakes.len(), 1);
        assert!(trace(&[start]).expect_err("no end").contains("never ends"));
        assert!(
            trace(&[end])
                .expect_err("no start")
                .contains("never starts")
        );
    }

    /// The busiest window is the one where the most polls begin.
    #[test]
    fn the_busiest_window_has_the_most_polls() {
        let poll = |ts: u32| {
            format!(r#"{{"name":"a","cat":"poll","ph":"X","ts":{ts},"dur":1,"pid":1,"tid":1}}"#)
        };
        let events: Vec<String> = [0, 500, 1000, 1010, 1020, 1030, 3000]
            .into_iter()
            .map(poll)
            .collect();
        let events: Vec<&str> = events.iter().map(String::as_str).collect();
        let trace = trace(&events).expect("valid");
        let (from, to) = trace.busiest(0.0, 3001.0, 100.0);
        assert!(from <= 1000.0 && to >= 1031.0, "{from}..{to}");
        assert_eq!(svg::render(&trace, from, to).polls, 4);
    }

    /// A window draws only what overlaps it: a poll before it is not counted.
    #[test]
    fn a_window_draws_only_what_it_overlaps() {
        let early = r#"{"name":"a","cat":"poll","ph":"X","ts":10,"dur":5,"pid":1,"tid":1}"#;
        let late = r#"{"name":"b","cat":"poll","ph":"X","ts":1000,"dur":5,"pid":1,"tid":1}"#;
        let trace = trace(&[META, early, late]).expect("valid");
        assert_eq!(svg::render(&trace, 0.0, 2000.0).polls, 2);
        let picture = svg::render(&trace, 500.0, 2000.0);
        assert_eq!(picture.polls, 1);
        assert!(!picture.svg.contains("a: poll"));
    }
    /// Runs `f` on a thread of its own and waits up to `limit` for it: catches a hang.
    fn within<T: Send + 'static>(
        limit: std::time::Duration,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> T {
        let (done, result) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = done.send(f());
        });
        result
            .recv_timeout(limit)
            .expect("it did not finish: a hang")
    }

    /// A recording at the size limit (200,000 polls on two lanes and as many wakes, what a
    /// lesson under load writes) is drawn without a hang, and each arrow ends at the poll it
    /// caused: finding that poll must not look through every slice of the trace for every
    /// wake (on a real 500,000-event recording that took four minutes).
    #[test]
    fn a_full_recording_draws_without_a_search_per_wake() {
        const POLLS: usize = 200_000;
        let mut trace = Trace {
            program: "full".into(),
            ..Trace::default()
        };
        trace.lanes = (1..=2)
            .map(|tid| Lane {
                tid,
                name: format!("worker {tid}"),
                sort: tid,
            })
            .collect();
        for n in 0..POLLS {
            let ts = n as f64 * 10.0;
            let tid = 1 + (n % 2) as i64;
            trace.slices.push(Slice {
                tid,
                name: format!("task {}", n % 7),
                cat: "poll".into(),
                ts,
                dur: 4.0,
                args: String::new(),
            });
            trace.wakes.push(Wake {
                id: n as u64 + 1,
                from: (3 - tid, ts - 3.0),
                to: (tid, ts + 2.0),
            });
        }
        let (picture, trace) = within(std::time::Duration::from_secs(60), move || {
            (svg::render(&trace, 1_000_000.0, 1_000_100.0), trace)
        });
        assert_eq!(picture.polls, 11);
        assert_eq!(
            picture.wakes, 11,
            "the wakes whose polls begin in the window"
        );
        let poll = trace.slice_at(2, 1_000_012.0).expect("a poll");
        assert_eq!(poll.ts, 1_000_010.0);
        assert!(
            trace.slice_at(2, 1_000_015.0).is_none(),
            "between two polls"
        );
        assert!(
            trace.slice_at(1, 1_000_012.0).is_none(),
            "another lane's poll"
        );
    }

    /// Of nested slices, the innermost is the one a moment falls in.
    #[test]
    fn the_innermost_slice_contains_a_moment() {
        let outer = r#"{"name":"job","cat":"work","ph":"X","ts":10,"dur":100,"pid":1,"tid":1}"#;
        let inner = r#"{"name":"a","cat":"poll","ph":"X","ts":10,"dur":20,"pid":1,"tid":1}"#;
        let later = r#"{"name":"b","cat":"poll","ph":"X","ts":50,"dur":5,"pid":1,"tid":1}"#;
        let trace = trace(&[META, later, outer, inner]).expect("valid");
        let name = |ts: f64| trace.slice_at(1, ts).map(|slice| slice.name.as_str());
        assert_eq!(name(15.0), Some("a"));
        assert_eq!(name(52.0), Some("b"));
        assert_eq!(name(40.0), Some("job"));
        assert_eq!(name(200.0), None);
    }

    /// Names and args with `<`, `&`, quotes, any Unicode, and control characters (which
    /// JSON may carry escaped, and XML 1.0 allows in no form) still make well-formed XML.
    #[test]
    fn any_name_makes_well_formed_xml() {
        let weird = r#"a<b>&c \"q\" ünï 😀 \u0001\u0007\u001b[31m"#;
        let events = [
            format!(
                r#"{{"name":"thread_name","ph":"M","ts":0,"pid":1,"tid":1,"args":{{"name":"{weird}"}}}}"#
            ),
            format!(
                r#"{{"name":"process_name","ph":"M","ts":0,"pid":1,"tid":1,"args":{{"name":"{weird}"}}}}"#
            ),
            format!(
                r#"{{"name":"{weird}","cat":"poll","ph":"X","ts":0,"dur":0,"pid":1,"tid":1,"args":{{"k":"{weird}"}}}}"#
            ),
            format!(
                r#"{{"name":"epoll_wait","cat":"wait","ph":"X","ts":0,"dur":900,"pid":1,"tid":1,"args":{{"ready":"{weird}"}}}}"#
            ),
            format!(r#"{{"name":"{weird}","ph":"i","ts":5,"pid":1,"tid":1,"s":"t"}}"#),
        ];
        let events: Vec<&str> = events.iter().map(String::as_str).collect();
        let trace = trace(&events).expect("valid");
        assert!(trace.lanes[0].name.contains('\u{1}'), "{:?}", trace.lanes);
        let picture = svg::render(&trace, 0.0, 1000.0);
        if let Err(err) = roxmltree::Document::parse(&picture.svg) {
            panic!("not well-formed: {err}\n{}", picture.svg);
        }
        assert!(
            picture
                .svg
                .contains("a&lt;b&gt;&amp;c &quot;q&quot; ünï 😀")
        );
    }

    /// A window far from the trace's start (timestamps of 10^20 µs, which JSON allows) and
    /// a single ulp wide still draws, and ends: the axis's ticks are counted, not added up
    /// until they pass the end (a step smaller than the rounding never got there).
    #[test]
    fn a_window_far_from_zero_ends() {
        let ts = 1e20_f64;
        let ulp = f64::from_bits(ts.to_bits() + 1) - ts;
        let event = format!(
            r#"{{"name":"a","cat":"poll","ph":"X","ts":{ts:e},"dur":{ulp},"pid":1,"tid":1}}"#
        );
        let trace = trace(&[META, &event]).expect("valid");
        let picture = within(std::time::Duration::from_secs(20), move || {
            svg::render(&trace, ts, ts + ulp)
        });
        assert_eq!(picture.polls, 1);
    }

    /// An empty file — what a recording leaves when its program is killed before it ends —
    /// is said to be that, not "EOF while parsing".
    #[test]
    fn an_empty_file_says_why_it_may_be() {
        let err = Trace::parse("").expect_err("empty");
        assert!(err.contains("empty"), "{err}");
        assert!(err.contains("written when"), "{err}");
    }
}
