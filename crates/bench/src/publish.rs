//! Where a run's report and plots go.
//!
//! By default under `target/bench/`: `benchmark.md` and the `bench-*.svg` plots beside it, so
//! a quick or partial run never touches what the repository shows. `--publish` writes the
//! same report to `docs/benchmark.md`, the plots to `imgs/`, and the summary table into the
//! README between its `bench-summary` markers.
//!
//! The report is `crates/bench/about.md` — how the benchmark works, what it taught us —
//! with this run's plots and tables where that file says `{{results}}`: the prose is written
//! by hand once, the numbers only by a run.

use std::io;
use std::path::{Path, PathBuf};

use crate::measure::PointResult;
use crate::scheduler::EchoRow;
use crate::{plots, report};

/// The hand-written part of the report.
const ABOUT: &str = include_str!("../about.md");

/// Where `{{results}}` stands in [`ABOUT`].
const RESULTS: &str = "{{results}}";

/// The README lines the summary table goes between.
const SUMMARY_START: &str =
    "<!-- bench-summary: written by `cargo run --release -p bench -- --publish` -->";
const SUMMARY_END: &str = "<!-- /bench-summary -->";

/// The files one run writes.
pub struct Destination {
    /// The markdown report.
    report: PathBuf,
    /// The folder of the SVG plots.
    plots: PathBuf,
    /// How the report links to the plots.
    plots_link: &'static str,
    /// The README whose summary table is replaced, when publishing.
    readme: Option<PathBuf>,
}

impl Destination {
    /// `DIR/benchmark.md` and the plots beside it.
    pub fn local(dir: PathBuf) -> Destination {
        Destination {
            report: dir.join("benchmark.md"),
            plots: dir,
            plots_link: "",
            readme: None,
        }
    }

    /// `docs/benchmark.md`, `imgs/bench-*.svg` and the README's summary table.
    pub fn published(workspace: &Path) -> Destination {
        Destination {
            report: workspace.join("docs").join("benchmark.md"),
            plots: workspace.join("imgs"),
            plots_link: "../imgs/",
            readme: Some(workspace.join("README.md")),
        }
    }

    /// Writes the plots, the report (`tables`: this run's markdown) and, when publishing, the
    /// README's summary (with lesson 7's `multi_threaded` echo rows). `versus_tokio` is the
    /// scheduler section's ratios (empty if it did not run). Returns the paths written.
    pub fn write(
        &self,
        results: &[PointResult],
        versus_tokio: &[(&str, f64)],
        multi_threaded: &[EchoRow],
        tables: &str,
    ) -> io::Result<Vec<PathBuf>> {
        // The README is checked before anything is written: a publish writes all or nothing.
        let readme = match &self.readme {
            Some(path) => Some((path, std::fs::read_to_string(path)?)),
            None => None,
        };
        let new_readme = match &readme {
            Some((path, text)) => Some(
                with_summary(text, &report::summary(results, multi_threaded)).ok_or_else(
                || {
                    io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!(
                            "{}: no `{SUMMARY_START}` … `{SUMMARY_END}` lines to put the summary between",
                            path.display()
                        ),
                    )
                },
            )?),
            None => None,
        };
        let mut written = Vec::new();
        let mut figures = String::new();
        for name in plots::write_all(results, versus_tokio, &self.plots)? {
            figures.push_str(&format!(
                "![{}]({}{name})\n\n",
                alt_text(&name),
                self.plots_link
            ));
            written.push(self.plots.join(name));
        }
        if let Some(parent) = self.report.parent() {
            std::fs::create_dir_all(parent)?;
        }
        // The plots go after the run's opening paragraphs, before its first table.
        let results_text = match tables.find("\n### ") {
            Some(at) => format!("{}\n{figures}{}", &tables[..=at], &tables[at + 1..]),
            None => format!("{tables}\n{figures}"),
        };
        std::fs::write(
            &self.report,
            ABOUT.replacen(RESULTS, results_text.trim_end(), 1),
        )?;
        written.push(self.report.clone());
        if let (Some((path, _)), Some(text)) = (readme, new_readme) {
            std::fs::write(path, text)?;
            written.push(path.clone());
        }
        Ok(written)
    }
}

/// `bench-idle-scaling.svg` → `idle scaling`.
fn alt_text(file: &str) -> String {
    file.trim_start_matches("bench-")
        .trim_end_matches(".svg")
        .replace('-', " ")
}

/// `readme` with the lines between the summary markers replaced by `summary`; `None` if the
/// markers are missing.
fn with_summary(readme: &str, summary: &str) -> Option<String> {
    let start = readme.find(SUMMARY_START)? + SUMMARY_START.len();
    let end = start + readme[start..].find(SUMMARY_END)?;
    Some(format!(
        "{}\n{}\n{}",
        &readme[..start],
        summary.trim_end(),
        &readme[end..]
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Publishing replaces exactly the lines between the markers, and a README without them
    /// is refused rather than left half-updated.
    #[test]
    fn the_summary_goes_between_the_markers() {
        let readme = format!("intro\n{SUMMARY_START}\n| old |\n{SUMMARY_END}\nafter\n");
        assert_eq!(
            with_summary(&readme, "| new |\n").as_deref(),
            Some(format!("intro\n{SUMMARY_START}\n| new |\n{SUMMARY_END}\nafter\n").as_str())
        );
        assert_eq!(with_summary("no markers\n", "| new |"), None);
    }

    /// The hand-written report has one place for the run's results.
    #[test]
    fn the_report_has_a_place_for_the_results() {
        assert_eq!(ABOUT.matches(RESULTS).count(), 1);
    }
}
