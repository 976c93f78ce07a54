//! The drawing: a lane per thread, a bar per slice, an arrow per wake, a time axis.
//!
//! ```text
//!              0.0 ms        0.5 ms        1.0 ms
//!  main      ▕██ main ██░░░░ epoll_wait ░░░░░│█ conn █│░░░░░
//!  blocking-0▕                        ██ job ██╯
//! ```
//! Polls and jobs are coloured by name (one colour per task, the legend says which); waits are
//! grey; a wake is an arrow from where `wake()` ran to the start of the poll it caused. A bar
//! narrower than a pixel is drawn a pixel and a half wide, so that no poll disappears.

use std::collections::HashMap;
use std::fmt::Write;

use crate::{Slice, Trace};

const WIDTH: f64 = 1000.0;
/// The lane names' column.
const LABELS: f64 = 130.0;
const RIGHT: f64 = 45.0;
const PLOT: f64 = WIDTH - LABELS - RIGHT;
/// Where the first lane starts (below the title and the axis).
const TOP: f64 = 64.0;
const LANE: f64 = 46.0;
/// A bar's height, and its offset in its lane.
const BAR: f64 = 20.0;
const BAR_TOP: f64 = 10.0;
/// The narrowest bar drawn, in pixels.
const THINNEST: f64 = 1.5;

/// Okabe-Ito's colour-blind-safe palette (as the benchmark's plots use), then three of Paul
/// Tol's muted colours, each with the text colour that reads on it.
const PALETTE: [(&str, &str); 10] = [
    ("#E69F00", "#000"),
    ("#56B4E9", "#000"),
    ("#009E73", "#fff"),
    ("#F0E442", "#000"),
    ("#0072B2", "#fff"),
    ("#D55E00", "#fff"),
    ("#CC79A7", "#000"),
    ("#882255", "#fff"),
    ("#44AA99", "#000"),
    ("#999933", "#000"),
];
const WAIT_FILL: &str = "#dddddd";
const WAIT_TEXT: &str = "#555";

/// An SVG, and what it shows.
pub struct Picture {
    pub svg: String,
    pub polls: usize,
    pub waits: usize,
    pub wakes: usize,
}

/// Draws the part of `trace` from `from` to `to` (µs since the recording started).
pub fn render(trace: &Trace, from: f64, to: f64) -> Picture {
    let x = |ts: f64| LABELS + (ts - from) / (to - from) * PLOT;
    let lane_of: HashMap<i64, usize> = trace
        .lanes
        .iter()
        .enumerate()
        .map(|(index, lane)| (lane.tid, index))
        .collect();
    let lane_top = |tid: i64| TOP + lane_of.get(&tid).copied().unwrap_or(0) as f64 * LANE;
    let visible = |slice: &&Slice| slice.ts <= to && slice.ts + slice.dur >= from;

    // One colour per task, in the order the tasks first appear in the window.
    let mut colours: Vec<&str> = Vec::new();
    for slice in trace.slices.iter().filter(visible) {
        if slice.cat != "wait" && slice.cat != "wake" && !colours.contains(&slice.name.as_str()) {
            colours.push(&slice.name);
        }
    }
    let colour_of = |name: &str| {
        let index = colours.iter().position(|n| *n == name).unwrap_or(0);
        PALETTE[index % PALETTE.len()]
    };

    let legend = legend_rows(&colours);
    let height = TOP + trace.lanes.len() as f64 * LANE + 16.0 + legend.len() as f64 * 20.0 + 8.0;
    let mut svg = String::new();
    let _ = writeln!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" viewBox="0 0 {WIDTH} {height}" font-family="sans-serif" font-size="11">"#
    );
    let _ = writeln!(
        svg,
        r##"<defs><marker id="arrow" viewBox="0 0 8 8" refX="7" refY="4" markerWidth="7" markerHeight="7" orient="auto-start-reverse"><path d="M0,0 L8,4 L0,8 z" fill="#222"/></marker><clipPath id="plot"><rect x="{LABELS}" y="0" width="{PLOT}" height="{height}"/></clipPath></defs>"##
    );
    let _ = writeln!(
        svg,
        r#"<rect width="{WIDTH}" height="{height}" fill="white"/>"#
    );
    let _ = writeln!(
        svg,
        r#"<text x="8" y="18" font-size="13" font-weight="bold">{}: {:.3} ms to {:.3} ms</text>"#,
        escape(&trace.program),
        from / 1000.0,
        to / 1000.0
    );
    axis(
        &mut svg,
        from,
        to,
        TOP + trace.lanes.len() as f64 * LANE,
        &x,
    );

    for (index, lane) in trace.lanes.iter().enumerate() {
        let top = TOP + index as f64 * LANE;
        let shade = if index % 2 == 0 { "#f7f7f7" } else { "#ffffff" };
        let _ = writeln!(
            svg,
            r#"<g class="lane" data-tid="{}"><rect x="0" y="{top}" width="{WIDTH}" height="{LANE}" fill="{shade}"/><text x="8" y="{}" font-weight="bold">{}</text></g>"#,
            lane.tid,
            top + BAR_TOP + BAR / 2.0 + 4.0,
            escape(&lane.name)
        );
    }

    let mut picture = Picture {
        svg: String::new(),
        polls: 0,
        waits: 0,
        wakes: 0,
    };
    let _ = writeln!(svg, r#"<g clip-path="url(#plot)">"#);
    for slice in trace.slices.iter().filter(visible) {
        if slice.cat == "wake" {
            continue; // a wake's own 2 ns slice: its arrow shows it
        }
        let left = x(slice.ts).max(LABELS);
        let right = x(slice.ts + slice.dur).min(LABELS + PLOT);
        let width = (right - left).max(THINNEST);
        let top = lane_top(slice.tid) + BAR_TOP;
        let (fill, ink) = if slice.cat == "wait" {
            picture.waits += 1;
            (WAIT_FILL, WAIT_TEXT)
        } else {
            if slice.cat == "poll" {
                picture.polls += 1;
            }
            colour_of(&slice.name)
        };
        let stroke = if slice.cat == "wait" { "#aaa" } else { "none" };
        let _ = writeln!(
            svg,
            r#"<rect class="{}" x="{left:.2}" y="{top}" width="{width:.2}" height="{BAR}" fill="{fill}" stroke="{stroke}" stroke-width="0.5"><title>{}</title></rect>"#,
            escape(&slice.cat),
            escape(&describe(slice))
        );
        // The name inside the bar, if it fits (about 6.2 px a character at 11 px).
        if width > slice.name.chars().count() as f64 * 6.2 + 8.0 {
            let _ = writeln!(
                svg,
                r#"<text x="{:.2}" y="{}" fill="{ink}">{}</text>"#,
                left + 4.0,
                top + BAR / 2.0 + 4.0,
                escape(&slice.name)
            );
        }
        // Under a wait, what it returned, if it fits (about 5.2 px a character at 9 px).
        if let Some(found) = returned(slice)
            && width > found.chars().count() as f64 * 5.2 + 4.0
        {
            let _ = writeln!(
                svg,
                r#"<text x="{:.2}" y="{}" font-size="9" fill="{WAIT_TEXT}">{}</text>"#,
                left + 2.0,
                top + BAR + 10.0,
                escape(&found)
            );
        }
    }
    for instant in &trace.instants {
        if instant.ts < from || instant.ts > to {
            continue;
        }
        let at = x(instant.ts);
        let top = lane_top(instant.tid);
        let _ = writeln!(
            svg,
            r##"<path class="instant" d="M{:.2},{top} l-5,-0 l5,9 l5,-9 z" fill="#b2182b"><title>{} {}</title></path><text x="{:.2}" y="{}" fill="#b2182b" font-size="10">{}</text>"##,
            at,
            escape(&instant.name),
            escape(&instant.args),
            at + 6.0,
            top + 8.0,
            escape(&instant.name)
        );
    }
    for wake in &trace.wakes {
        let (from_tid, from_ts) = wake.from;
        let (to_tid, to_ts) = wake.to;
        // The arrow ends where the poll it caused begins (at `to_ts` or before).
        if to_ts < from || from_ts > to {
            continue;
        }
        let target = trace
            .slice_at(to_tid, to_ts)
            .map_or(to_ts, |slice| slice.ts);
        if target < from {
            continue;
        }
        picture.wakes += 1;
        let (x1, x2) = (x(from_ts), x(target));
        let (y1, y2) = (lane_top(from_tid) + BAR_TOP, lane_top(to_tid) + BAR_TOP);
        let path = if from_tid == to_tid {
            // Within a lane: an arc above the bars.
            let lift = y1 - 9.0;
            format!("M{x1:.2},{y1} C{x1:.2},{lift} {x2:.2},{lift} {x2:.2},{y2}")
        } else {
            let middle = (y1 + y2) / 2.0;
            format!("M{x1:.2},{y1} C{x1:.2},{middle} {x2:.2},{middle} {x2:.2},{y2}")
        };
        let _ = writeln!(
            svg,
            r##"<path class="wake" d="{path}" fill="none" stroke="#222" stroke-width="1" marker-end="url(#arrow)"/>"##
        );
    }
    let _ = writeln!(svg, "</g>");

    let mut y = TOP + trace.lanes.len() as f64 * LANE + 16.0;
    for row in &legend {
        let mut x = 8.0;
        for entry in row {
            match entry {
                Entry::Task(name) => {
                    let (fill, _) = colour_of(name);
                    let _ = writeln!(
                        svg,
                        r#"<rect x="{x}" y="{}" width="12" height="12" fill="{fill}"/><text x="{}" y="{y}">{}</text>"#,
                        y - 10.0,
                        x + 16.0,
                        escape(name)
                    );
                }
                Entry::Waiting => {
                    let _ = writeln!(
                        svg,
                        r##"<rect x="{x}" y="{}" width="12" height="12" fill="{WAIT_FILL}" stroke="#aaa" stroke-width="0.5"/><text x="{}" y="{y}">waiting (epoll_wait, io_uring_enter, park)</text>"##,
                        y - 10.0,
                        x + 16.0
                    );
                }
                Entry::Wake => {
                    let _ = writeln!(
                        svg,
                        r##"<path d="M{x},{} L{},{}" stroke="#222" marker-end="url(#arrow)"/><text x="{}" y="{y}">wake → the poll it causes</text>"##,
                        y - 4.0,
                        x + 14.0,
                        y - 4.0,
                        x + 18.0
                    );
                }
                Entry::More(n) => {
                    let _ = writeln!(svg, r#"<text x="{x}" y="{y}">and {n} more tasks</text>"#);
                }
            }
            x += entry.width();
        }
        y += 20.0;
    }
    svg.push_str("</svg>\n");
    picture.svg = svg;
    picture
}

/// What a wait returned, as its args say: `→ recv×2, send×1` (an `io_uring_enter`'s
/// `completed`) or `→ Token(3) read` (an `epoll_wait`'s `ready`).
fn returned(slice: &Slice) -> Option<String> {
    if slice.cat != "wait" {
        return None;
    }
    let args: serde_json::Value = serde_json::from_str(&slice.args).ok()?;
    let found = ["completed", "ready"]
        .iter()
        .find_map(|key| args.get(key)?.as_str())?;
    let found = found.trim_start_matches('[').trim_end_matches(']');
    (!found.is_empty()).then(|| format!("→ {found}"))
}

/// A bar's tooltip: `conn 127.0.0.1:40212: poll, 14.020 µs at 20.846 ms {"events":1}`.
fn describe(slice: &Slice) -> String {
    format!(
        "{}: {}, {:.3} µs at {:.3} ms {}",
        slice.name,
        slice.cat,
        slice.dur,
        slice.ts / 1000.0,
        slice.args
    )
}

/// The time axis along the top, with a light line down through the lanes at each tick.
fn axis(svg: &mut String, from: f64, to: f64, bottom: f64, x: &impl Fn(f64) -> f64) {
    let span_ms = (to - from) / 1000.0;
    let rough = span_ms / 8.0;
    let magnitude = 10f64.powf(rough.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * magnitude)
        .find(|step| *step >= rough)
        .unwrap_or(10.0 * magnitude);
    let decimals = (-step.log10().floor()).max(0.0) as usize;
    let axis_y = TOP - 8.0;
    let _ = writeln!(
        svg,
        r##"<line x1="{LABELS}" y1="{axis_y}" x2="{}" y2="{axis_y}" stroke="#444"/>"##,
        LABELS + PLOT
    );
    // Counted, not added up until past the end: far from zero, a step can be lost to
    // rounding.
    let first = (from / 1000.0 / step).ceil();
    let ticks = ((to / 1000.0 / step + 1e-9).floor() - first + 1.0).clamp(0.0, 20.0) as usize;
    for tick in (0..ticks).map(|n| (first + n as f64) * step) {
        let at = x(tick * 1000.0);
        let _ = writeln!(
            svg,
            r##"<line x1="{at:.2}" y1="{}" x2="{at:.2}" y2="{bottom}" stroke="#e4e4e4"/><line x1="{at:.2}" y1="{}" x2="{at:.2}" y2="{axis_y}" stroke="#444"/><text x="{at:.2}" y="{}" text-anchor="middle">{tick:.decimals$} ms</text>"##,
            axis_y,
            axis_y - 4.0,
            axis_y - 7.0
        );
    }
}

enum Entry<'a> {
    Task(&'a str),
    Waiting,
    Wake,
    More(usize),
}

impl Entry<'_> {
    fn width(&self) -> f64 {
        match self {
            Entry::Task(name) => 16.0 + name.chars().count() as f64 * 6.2 + 18.0,
            Entry::Waiting => 16.0 + 42.0 * 6.2 + 18.0,
            Entry::Wake => 18.0 + 26.0 * 6.2 + 18.0,
            Entry::More(_) => 20.0 * 6.2,
        }
    }
}

/// The legend, in rows that fit the width: each task's colour (up to 14), grey, the arrow.
fn legend_rows<'a>(tasks: &[&'a str]) -> Vec<Vec<Entry<'a>>> {
    const SHOWN: usize = 14;
    let mut entries: Vec<Entry> = tasks
        .iter()
        .take(SHOWN)
        .map(|name| Entry::Task(name))
        .collect();
    if tasks.len() > SHOWN {
        entries.push(Entry::More(tasks.len() - SHOWN));
    }
    entries.push(Entry::Waiting);
    entries.push(Entry::Wake);
    let mut rows: Vec<Vec<Entry>> = vec![Vec::new()];
    let mut used = 8.0;
    for entry in entries {
        if used + entry.width() > WIDTH && !rows.last().is_some_and(Vec::is_empty) {
            rows.push(Vec::new());
            used = 8.0;
        }
        used += entry.width();
        if let Some(row) = rows.last_mut() {
            row.push(entry);
        }
    }
    rows
}

/// Text made safe for XML: the five markup characters escaped, and the characters XML 1.0
/// allows in no form (control characters other than tab and newlines, U+FFFE, U+FFFF)
/// shown as �.
fn escape(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => escaped.push_str("&amp;"),
            '<' => escaped.push_str("&lt;"),
            '>' => escaped.push_str("&gt;"),
            '"' => escaped.push_str("&quot;"),
            '\t' | '\n' | '\r' => escaped.push(c),
            c if c < ' ' || c == '\u{FFFE}' || c == '\u{FFFF}' => escaped.push('\u{FFFD}'),
            c => escaped.push(c),
        }
    }
    escaped
}
