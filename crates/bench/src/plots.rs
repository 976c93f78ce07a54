//! The plots, as SVG files for the README: what the tables say, at a glance.
//!
//! - `bench-throughput.svg`: ping-pong messages/s against the number of connections, one line
//!   per server, for 64 B and for 4 KiB messages.
//! - `bench-idle-scaling.svg`: messages/s of 10 busy connections as idle ones pile up: the
//!   `select`/`poll` lines fall to a third (they scan every fd on every wakeup); the epoll
//!   lines do not fall, they wander within the run-to-run noise that tokio's own runs show.
//! - `bench-memory.svg`: peak memory holding 1,000 and 10,000 idle connections: a thread per
//!   connection costs memory, a task or a callback almost none.
//! - `bench-scheduler.svg`: lesson 7 against tokio's multi-thread runtime, each benchmark's
//!   time as a multiple of tokio's (from `bench scheduler`'s section of the same run).
//!
//! Nine lines share a plot, so each server has a marker and a dash pattern as well as a
//! colour (a colour-blind-safe palette): no two lines depend on colour alone to be told apart.
//!
//! Text: plotters is built without a font feature. Its SVG backend writes `<text>` elements
//! and leaves drawing the glyphs to whatever shows the SVG; for layout it uses a built-in
//! width estimate, which is all an SVG needs. No font file, no font crate.

use std::io;
use std::path::Path;

use plotters::coord::Shift;
use plotters::element::DashedPathElement;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use crate::measure::{Outcome, PointResult, Scenario, thousands};
use crate::report::MEMORY_TARGET_BYTES;
use crate::servers::ServerSpec;

const FONT: &str = "sans-serif";

/// Writes the SVGs into `dir`, for the scenarios the run measured (and the scheduler plot if
/// `versus_tokio` has its ratios); returns their file names.
pub fn write_all(
    results: &[PointResult],
    versus_tokio: &[(&str, f64)],
    dir: &Path,
) -> io::Result<Vec<String>> {
    std::fs::create_dir_all(dir)?;
    let mut written = Vec::new();
    let mut write =
        |name: &str, size: (u32, u32), draw: &dyn Fn(&Area) -> Drawn| -> io::Result<()> {
            let path = dir.join(name);
            let root = SVGBackend::new(&path, size).into_drawing_area();
            root.fill(&WHITE).map_err(plot_error)?;
            draw(&root).map_err(plot_error)?;
            root.present().map_err(plot_error)?;
            written.push(name.to_string());
            Ok(())
        };
    if has(results, Scenario::PingPong) {
        write("bench-throughput.svg", (1200, 520), &|root| {
            throughput(root, results)
        })?;
    }
    if has(results, Scenario::IdleScaling) {
        write("bench-idle-scaling.svg", (1000, 520), &|root| {
            idle_scaling(root, results)
        })?;
    }
    if has(results, Scenario::Memory) {
        write("bench-memory.svg", (1000, 520), &|root| {
            memory(root, results)
        })?;
    }
    if !versus_tokio.is_empty() {
        write("bench-scheduler.svg", (1000, 440), &|root| {
            scheduler(root, versus_tokio)
        })?;
    }
    Ok(written)
}

type Area<'a> = DrawingArea<SVGBackend<'a>, Shift>;
type Drawn = Result<(), Box<dyn std::error::Error>>;

fn plot_error(err: impl std::fmt::Display) -> io::Error {
    io::Error::other(format!("cannot draw the plot: {err}"))
}

fn has(results: &[PointResult], scenario: Scenario) -> bool {
    results
        .iter()
        .any(|result| result.point.scenario == scenario)
}

/// How a server's line looks, the same in every plot: a colour (Okabe and Ito's palette,
/// safe for colour-blind readers, plus two darker ones), a dash pattern and a marker. tokio,
/// the reference, is the thick solid black line with dots.
#[derive(Debug, Clone, Copy)]
struct Look {
    color: RGBColor,
    dashed: bool,
    marker: Marker,
}

/// The shape drawn on every measured point, and in the legend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Marker {
    Dot,
    Ring,
    Triangle,
    Square,
    Diamond,
    Cross,
}

fn look_of(id: &str) -> Look {
    let look = |(r, g, b), dashed, marker| Look {
        color: RGBColor(r, g, b),
        dashed,
        marker,
    };
    match id {
        "sync-threads" => look((230, 159, 0), false, Marker::Triangle),
        "select" => look((213, 94, 0), true, Marker::Square),
        "select-poll" => look((204, 121, 167), true, Marker::Diamond),
        "selector" => look((0, 114, 178), false, Marker::Ring),
        "generators" => look((0, 158, 115), false, Marker::Square),
        "coroutines" => look((86, 180, 233), true, Marker::Triangle),
        "async-await" => look((136, 34, 85), false, Marker::Diamond),
        "completion" => look((110, 110, 110), true, Marker::Cross),
        "work-stealing" => look((51, 34, 136), true, Marker::Ring),
        "green-threads" => look((17, 119, 51), false, Marker::Cross),
        // The peers in black: tokio solid with dots, monoio (lesson 6's peer) dashed.
        "monoio" => look((0, 0, 0), true, Marker::Cross),
        _ => look((0, 0, 0), false, Marker::Dot),
    }
}

/// Draws `marker` at `at` (a chart's coordinates, or pixels), `color`ed; its shape is drawn
/// in pixels around that point.
fn draw_marker<DB, CT>(
    area: &DrawingArea<DB, CT>,
    marker: Marker,
    at: CT::From,
    color: RGBColor,
) -> Drawn
where
    DB: DrawingBackend,
    DB::ErrorType: 'static,
    CT: CoordTranslate,
{
    let filled = color.filled();
    let outline = color.stroke_width(2);
    match marker {
        Marker::Dot => area.draw(&Circle::new(at, 4, filled))?,
        Marker::Ring => area.draw(&Circle::new(at, 4, outline))?,
        Marker::Triangle => area.draw(&TriangleMarker::new(at, 6, filled))?,
        Marker::Square => {
            area.draw(&(EmptyElement::at(at) + Rectangle::new([(-4, -4), (4, 4)], filled)))?
        }
        Marker::Diamond => area.draw(
            &(EmptyElement::at(at) + Polygon::new(vec![(0, -6), (5, 0), (0, 6), (-5, 0)], filled)),
        )?,
        Marker::Cross => area.draw(&Cross::new(at, 4, outline))?,
    }
    Ok(())
}

/// A line to draw: who, and (x, y) per point.
struct Line {
    spec: Option<ServerSpec>,
    points: Vec<(f64, f64)>,
}

impl Line {
    fn label(&self) -> &str {
        self.spec.map_or("tokio (reference)", |spec| spec.label)
    }

    fn look(&self) -> Look {
        look_of(self.spec.map_or("tokio", |spec| spec.id))
    }

    /// tokio's line is the thick one: the reference every other line is read against.
    fn width(&self) -> u32 {
        if self.spec.is_none() { 3 } else { 2 }
    }
}

/// Messages/s per server over `points`, x taken from each point by `x`: the median of each
/// server's runs. Failed measurements leave a gap in the line's points.
fn rate_lines(points: &[&PointResult], x: impl Fn(&PointResult) -> f64) -> Vec<Line> {
    let rate = |outcome: &Outcome| outcome.traffic().map(|traffic| traffic.messages_per_sec);
    let mut lines = vec![Line {
        spec: None,
        points: points
            .iter()
            .filter_map(|result| Some((x(result), result.reference_median(rate)?)))
            .collect(),
    }];
    let specs = points.first().map(|result| result.lessons.clone());
    for (index, spec) in specs.into_iter().flatten().enumerate() {
        lines.push(Line {
            spec: Some(spec),
            points: points
                .iter()
                .filter_map(|result| Some((x(result), result.lesson_median(index, rate)?)))
                .collect(),
        });
    }
    lines
}

fn max_y(lines: &[Line]) -> f64 {
    lines
        .iter()
        .flat_map(|line| line.points.iter().map(|&(_, y)| y))
        .fold(1.0, f64::max)
}

/// `25k`, `1.2M`.
fn per_sec(value: f64) -> String {
    if value >= 1e6 {
        format!("{:.1}M", value / 1e6)
    } else if value >= 1e3 {
        format!("{:.0}k", value / 1e3)
    } else {
        format!("{value:.0}")
    }
}

/// Draws each line, solid or dashed, with its marker on every measured point.
fn draw_lines<'a, X, Y>(
    chart: &mut ChartContext<'a, SVGBackend<'a>, Cartesian2d<X, Y>>,
    lines: &[Line],
) -> Drawn
where
    X: plotters::coord::ranged1d::Ranged<ValueType = f64>,
    Y: plotters::coord::ranged1d::Ranged<ValueType = f64>,
{
    for line in lines {
        let look = line.look();
        let style = look.color.stroke_width(line.width());
        if look.dashed {
            chart.draw_series(DashedLineSeries::new(line.points.clone(), 8, 5, style))?;
        } else {
            chart.draw_series(LineSeries::new(line.points.clone(), style))?;
        }
        for &point in &line.points {
            draw_marker(chart.plotting_area(), look.marker, point, look.color)?;
        }
    }
    Ok(())
}

/// The legend in its own strip right of the charts, so it never hides a line: each server's
/// dash pattern and marker, as on the lines.
fn legend(area: &Area, lines: &[Line]) -> Drawn {
    for (row, line) in (0i32..).zip(lines) {
        let y = 70 + row * 24;
        let look = line.look();
        let style = look.color.stroke_width(line.width());
        if look.dashed {
            area.draw(&DashedPathElement::new(vec![(8, y), (40, y)], 8, 5, style))?;
        } else {
            area.draw(&PathElement::new(vec![(8, y), (40, y)], style))?;
        }
        draw_marker(area, look.marker, (24, y), look.color)?;
        area.draw(&Text::new(
            line.label().to_string(),
            (48, y),
            TextStyle::from((FONT, 14)).pos(Pos::new(HPos::Left, VPos::Center)),
        ))?;
    }
    Ok(())
}

/// Mesh lines light enough that the data stays in front.
fn configure_mesh<'a, X, Y>(
    chart: &mut ChartContext<'a, SVGBackend<'a>, Cartesian2d<X, Y>>,
    x_desc: &str,
    x_label: &dyn Fn(&f64) -> String,
) -> Drawn
where
    X: plotters::coord::ranged1d::Ranged<ValueType = f64>
        + plotters::coord::ranged1d::ValueFormatter<f64>,
    Y: plotters::coord::ranged1d::Ranged<ValueType = f64>
        + plotters::coord::ranged1d::ValueFormatter<f64>,
{
    chart
        .configure_mesh()
        .x_desc(x_desc)
        .y_desc("messages/s")
        .x_label_formatter(x_label)
        .y_label_formatter(&|y| per_sec(*y))
        .light_line_style(BLACK.mix(0.04))
        .bold_line_style(BLACK.mix(0.15))
        .label_style((FONT, 13))
        .draw()?;
    Ok(())
}

/// Width of the legend strip.
const LEGEND_WIDTH: u32 = 190;

fn throughput(root: &Area, results: &[PointResult]) -> Drawn {
    let (title, rest) = root.split_vertically(40);
    title.titled(
        "Ping-pong echo: messages/s by connections (higher is better)",
        (FONT, 22),
    )?;
    let (panels, legend_area) = rest.split_horizontally(rest.dim_in_pixel().0 - LEGEND_WIDTH);
    let mut legend_lines = Vec::new();
    for (area, message_size) in panels.split_evenly((1, 2)).iter().zip([64, 4096]) {
        let points: Vec<&PointResult> = results
            .iter()
            .filter(|result| {
                result.point.scenario == Scenario::PingPong
                    && result.point.shape.message_size == message_size
            })
            .collect();
        if points.is_empty() {
            continue;
        }
        let lines = rate_lines(&points, |result| result.point.shape.active as f64);
        let mut chart = ChartBuilder::on(area)
            .caption(
                format!("{} messages", crate::measure::size(message_size)),
                (FONT, 17),
            )
            .margin(12)
            .x_label_area_size(45)
            .y_label_area_size(60)
            .build_cartesian_2d((0.8f64..1300f64).log_scale(), 0f64..max_y(&lines) * 1.1)?;
        configure_mesh(
            &mut chart,
            "connections",
            &|x| thousands(x.round() as usize),
        )?;
        draw_lines(&mut chart, &lines)?;
        legend_lines = lines;
    }
    legend(&legend_area, &legend_lines)
}

fn idle_scaling(root: &Area, results: &[PointResult]) -> Drawn {
    let points: Vec<&PointResult> = results
        .iter()
        .filter(|result| result.point.scenario == Scenario::IdleScaling)
        .collect();
    let lines = rate_lines(&points, |result| result.point.shape.idle as f64);
    let max_idle = points
        .iter()
        .map(|result| result.point.shape.idle as f64)
        .fold(1.0, f64::max);
    let (chart_area, legend_area) = root.split_horizontally(root.dim_in_pixel().0 - LEGEND_WIDTH);
    let mut chart = ChartBuilder::on(&chart_area)
        .caption(
            "10 busy connections × 64 B beside N idle ones (a falling line pays for them)",
            (FONT, 19),
        )
        .margin(15)
        .x_label_area_size(45)
        .y_label_area_size(60)
        .build_cartesian_2d(-max_idle * 0.03..max_idle * 1.03, 0f64..max_y(&lines) * 1.1)?;
    configure_mesh(&mut chart, "idle connections", &|x| {
        thousands(x.round().max(0.0) as usize)
    })?;
    draw_lines(&mut chart, &lines)?;
    legend(&legend_area, &lines)
}

fn peak_rss(outcome: &Outcome) -> Option<f64> {
    outcome.memory().map(|memory| memory.peak_rss as f64)
}

fn memory(root: &Area, results: &[PointResult]) -> Drawn {
    let points: Vec<&PointResult> = results
        .iter()
        .filter(|result| result.point.scenario == Scenario::Memory)
        .collect();
    // Columns: tokio, then each lesson; within a column one bar per point (1,000, 10,000).
    let mut columns: Vec<(String, Vec<Option<&Outcome>>)> = Vec::new();
    columns.push((
        "tokio".into(),
        points
            .iter()
            .map(|result| result.representative_reference(peak_rss))
            .collect(),
    ));
    let specs = points.first().map(|result| result.lessons.clone());
    for (index, spec) in specs.into_iter().flatten().enumerate() {
        columns.push((
            spec.label.to_string(),
            points
                .iter()
                .map(|result| result.representative(index, peak_rss))
                .collect(),
        ));
    }
    let peak_of =
        |outcome: Option<&Outcome>| outcome.and_then(Outcome::memory).map(|m| m.peak_rss as f64);
    let highest = columns
        .iter()
        .flat_map(|(_, bars)| bars.iter().filter_map(|bar| peak_of(*bar)))
        .fold(MEMORY_TARGET_BYTES as f64, f64::max);

    let mut chart = ChartBuilder::on(root)
        .caption(
            "Peak memory (VmHWM) holding idle connections (lower is better)",
            (FONT, 20),
        )
        .margin(15)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(
            0f64..columns.len() as f64,
            (0.5e6..highest * 3.0).log_scale(),
        )?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(0)
        .y_desc("peak RSS (log scale)")
        .y_label_formatter(&|bytes| format!("{:.0} MB", bytes / 1e6))
        .label_style((FONT, 13))
        .draw()?;

    let shades = [RGBColor(140, 180, 230), RGBColor(30, 80, 160)];
    let bar_width = 0.8 / points.len().max(1) as f64;
    for (point_index, result) in points.iter().enumerate() {
        let shade = shades[point_index % shades.len()];
        let wanted = result.point.shape.idle;
        let mut notes = Vec::new();
        let bars: Vec<Rectangle<(f64, f64)>> = columns
            .iter()
            .enumerate()
            .filter_map(|(column, (_, bars))| {
                let outcome = bars[point_index]?;
                let memory = outcome.memory()?;
                let left = column as f64 + 0.1 + point_index as f64 * bar_width;
                let top = memory.peak_rss as f64;
                let held_all = memory.held >= wanted;
                if !held_all {
                    notes.push((left + bar_width / 2.0, top, memory.held));
                }
                let style = if held_all {
                    shade.filled()
                } else {
                    shade.mix(0.35).filled()
                };
                Some(Rectangle::new(
                    [(left, 0.5e6), (left + bar_width * 0.92, top)],
                    style,
                ))
            })
            .collect();
        chart
            .draw_series(bars)?
            .label(format!("{} idle connections", thousands(wanted)))
            .legend(move |(x, y)| Rectangle::new([(x, y - 6), (x + 16, y + 6)], shade.filled()));
        for (x, top, held) in notes {
            let at = chart.backend_coord(&(x, top));
            root.draw(&Text::new(
                format!("held {}", thousands(held)),
                (at.0, at.1 - 4),
                TextStyle::from((FONT, 12)).pos(Pos::new(HPos::Center, VPos::Bottom)),
            ))?;
        }
    }
    let target = MEMORY_TARGET_BYTES as f64;
    chart
        .draw_series(LineSeries::new(
            [(0.0, target), (columns.len() as f64, target)],
            RED.mix(0.7).stroke_width(1),
        ))?
        .label("20 MB: target for epoll lessons at 10,000")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], RED.mix(0.7)));
    for (column, (name, _)) in columns.iter().enumerate() {
        let at = chart.backend_coord(&(column as f64 + 0.5, 0.5e6));
        root.draw(&Text::new(
            name.clone(),
            (at.0, at.1 + 8),
            TextStyle::from((FONT, 13)).pos(Pos::new(HPos::Center, VPos::Top)),
        ))?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK.mix(0.4))
        .label_font((FONT, 13))
        .draw()?;
    Ok(())
}

/// Lesson 7 against tokio's multi-thread runtime: one bar per benchmark, its time as a
/// multiple of tokio's, the line at 1× being tokio itself.
fn scheduler(root: &Area, versus_tokio: &[(&str, f64)]) -> Drawn {
    let highest = versus_tokio
        .iter()
        .map(|&(_, ratio)| ratio)
        .filter(|ratio| ratio.is_finite())
        .fold(1.25, f64::max);
    let mut chart = ChartBuilder::on(root)
        .caption(
            "Lesson 7 (work-stealing, 2 workers): time as a multiple of tokio multi_thread's \
             (lower is better)",
            (FONT, 19),
        )
        .margin(15)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(0f64..versus_tokio.len() as f64, 0f64..highest * 1.15)?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(0)
        .y_desc("× tokio's time")
        .y_label_formatter(&|ratio| format!("{ratio:.1}×"))
        .light_line_style(BLACK.mix(0.04))
        .bold_line_style(BLACK.mix(0.15))
        .label_style((FONT, 13))
        .draw()?;
    let look = look_of("work-stealing");
    chart.draw_series(
        versus_tokio
            .iter()
            .enumerate()
            .map(|(column, &(_, ratio))| {
                let left = column as f64 + 0.25;
                Rectangle::new([(left, 0.0), (left + 0.5, ratio)], look.color.filled())
            }),
    )?;
    chart
        .draw_series(LineSeries::new(
            [(0.0, 1.0), (versus_tokio.len() as f64, 1.0)],
            BLACK.stroke_width(2),
        ))?
        .label("tokio multi_thread, 2 workers (= 1×)")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLACK.stroke_width(2)));
    for (column, &(name, ratio)) in versus_tokio.iter().enumerate() {
        let middle = column as f64 + 0.5;
        let top = chart.backend_coord(&(middle, ratio));
        root.draw(&Text::new(
            format!("{ratio:.2}×"),
            (top.0, top.1 - 4),
            TextStyle::from((FONT, 13)).pos(Pos::new(HPos::Center, VPos::Bottom)),
        ))?;
        let foot = chart.backend_coord(&(middle, 0.0));
        root.draw(&Text::new(
            name.to_string(),
            (foot.0, foot.1 + 8),
            TextStyle::from((FONT, 13)).pos(Pos::new(HPos::Center, VPos::Top)),
        ))?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK.mix(0.4))
        .label_font((FONT, 13))
        .draw()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The scheduler plot is drawn when the scheduler section ran — one bar per benchmark,
    /// each named and labelled with its ratio, and the line of tokio's own time — and not
    /// drawn when it did not run.
    #[test]
    fn the_scheduler_plot_names_every_benchmark() {
        let dir = std::env::temp_dir().join(format!("plots-test-{}", std::process::id()));
        let versus_tokio = [("spawn_many", 0.38), ("echo, per message", 1.05)];
        let written = write_all(&[], &versus_tokio, &dir).unwrap();
        assert_eq!(written, ["bench-scheduler.svg"]);
        let svg = std::fs::read_to_string(dir.join("bench-scheduler.svg")).unwrap();
        for text in [
            "spawn_many",
            "0.38×",
            "echo, per message",
            "1.05×",
            "(= 1×)",
        ] {
            assert!(svg.contains(text), "no {text:?} in the plot");
        }
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(write_all(&[], &[], &dir).unwrap().is_empty());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
