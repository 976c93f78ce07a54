//! What `--trace` says about each turn of the ring, and what `--timeline` records of it, kept
//! out of the loop's way: the loop makes one call here per event, and does nothing more when
//! both are off.
//!
//! `ring: submitted [recv×1, send×2], waited → completed [send×2]; io_uring_enter calls: 1 (total 57)`
//!
//! On the timeline, each `io_uring_enter` is a slice with the same counts as its args.

use fdio::Trace;
use fdio::timeline::{self, Args, Stopped};

/// The counts of one turn, printed as one line when it ends.
pub(crate) struct TurnTrace {
    trace: Trace,
    /// Pushed since the last enter: the next enter submits them.
    pushed: Vec<&'static str>,
    /// What this turn's enter submitted.
    submitted: Vec<&'static str>,
    completed: Vec<&'static str>,
    enters_before: u64,
    /// Every `io_uring_enter` the loop made.
    enters: u64,
    /// This turn's `io_uring_enter`, timed, for `--timeline`.
    enter: Option<Stopped>,
}

impl TurnTrace {
    pub(crate) fn new(trace: Trace) -> TurnTrace {
        TurnTrace {
            trace,
            pushed: Vec::new(),
            submitted: Vec::new(),
            completed: Vec::new(),
            enters_before: 0,
            enters: 0,
            enter: None,
        }
    }

    /// Says nothing more (the loop's cleanup after the program has ended is not narrated).
    pub(crate) fn silence(&mut self) {
        self.trace = Trace::new(false);
    }

    /// Whether the kinds of requests are worth collecting: `--trace` or `--timeline` is on.
    fn counting(&self) -> bool {
        self.trace.enabled() || timeline::enabled()
    }

    pub(crate) fn pushed(&mut self, kind: &'static str) {
        if self.counting() {
            self.pushed.push(kind);
        }
    }

    /// An `io_uring_enter` (timed by `span`): it submitted everything pushed so far.
    pub(crate) fn entered(&mut self, span: Stopped) {
        self.enters += 1;
        self.submitted.append(&mut self.pushed);
        // A second enter in one turn (the submission ring was full): the first one's slice
        // is drawn as it is; the turn's counts go with the last.
        if let Some(earlier) = self.enter.replace(span) {
            earlier.wait("io_uring_enter", || {
                Args::new().text("slept", "no: the submission ring was full")
            });
        }
    }

    pub(crate) fn completed(&mut self, kind: &'static str) {
        if self.counting() {
            self.completed.push(kind);
        }
    }

    pub(crate) fn say(&self, line: impl FnOnce() -> String) {
        self.trace.say(line);
    }

    /// Every `io_uring_enter` the loop made so far.
    pub(crate) fn enters(&self) -> u64 {
        self.enters
    }

    /// The turn is over: one line, the enter's slice, then the counts start again.
    pub(crate) fn end_of_turn(&mut self, waited: bool) {
        if let Some(span) = self.enter.take() {
            span.wait("io_uring_enter", || {
                Args::new()
                    .text("submitted", Tally(&self.submitted))
                    .text(
                        "slept",
                        if waited {
                            "yes"
                        } else {
                            "no: a task was ready"
                        },
                    )
                    .number("completions", self.completed.len() as i64)
                    .text("completed", Tally(&self.completed))
            });
        }
        self.trace.say(|| {
            format!(
                "ring: submitted {}, {} → completed {}; io_uring_enter calls: {} (total {})",
                Tally(&self.submitted),
                if waited { "waited" } else { "did not wait" },
                Tally(&self.completed),
                self.enters - self.enters_before,
                self.enters
            )
        });
        self.submitted.clear();
        self.completed.clear();
        self.enters_before = self.enters;
    }
}

/// `[recv×3, send×1]`: what a turn submitted or completed, counted by kind.
struct Tally<'a>(&'a [&'static str]);

impl std::fmt::Display for Tally<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut counts: Vec<(&str, usize)> = Vec::new();
        for kind in self.0 {
            match counts.iter_mut().find(|(k, _)| k == kind) {
                Some((_, n)) => *n += 1,
                None => counts.push((kind, 1)),
            }
        }
        f.write_str("[")?;
        for (i, (kind, n)) in counts.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{kind}×{n}")?;
        }
        f.write_str("]")
    }
}
