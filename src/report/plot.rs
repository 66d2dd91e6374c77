//! SVG charts of a run report and of a sweep, drawn with plotters' SVG backend from the typed
//! reports. Text is written as SVG `<text>` (XML-escaped by the backend) and laid out with
//! plotters' built-in size estimate, so no system fonts are needed.
//!
//! [`svg`]: accuracy and MACs over training, and the dense and pruned models in the
//! accuracy-vs-MACs plane. [`pareto_svg`]: every run of a sweep with its Pareto front.

use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use super::run::RunReport;
use super::sweep::{SweepReport, pareto_front, points};
use crate::error::{Error, Result};

const WIDTH: u32 = 1000;
const HEIGHT: u32 = 480;
const FONT: &str = "sans-serif";

const ACCURACY_COLOR: RGBColor = RGBColor(0x1f, 0x77, 0xb4);
const MACS_COLOR: RGBColor = RGBColor(0xff, 0x7f, 0x0e);
const DENSE_COLOR: RGBColor = RGBColor(0x44, 0x44, 0x44);
const PRUNED_COLOR: RGBColor = RGBColor(0xd6, 0x27, 0x28);
const SWEEP_COLOR: RGBColor = RGBColor(0x1f, 0x77, 0xb4);
const FRONT_COLOR: RGBColor = RGBColor(0x2c, 0xa0, 0x2c);
const LINK_COLOR: RGBColor = RGBColor(0x99, 0x99, 0x99);
const NOTE_COLOR: RGBColor = RGBColor(0x66, 0x66, 0x66);

type Area<'a> = DrawingArea<SVGBackend<'a>, Shift>;
type Drawn = std::result::Result<(), Box<dyn std::error::Error>>;

/// Text as XML 1.0 allows it: control characters other than tab and newline become spaces
/// (the backend escapes markup characters).
fn clean(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_control() && c != '\t' && c != '\n' {
                ' '
            } else {
                c
            }
        })
        .collect()
}

/// A count with up to two decimals of its SI unit: 420k, 1.25M.
pub fn si(v: f64) -> String {
    const UNITS: [(f64, &str); 4] = [(1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")];
    let (unit, suffix) = UNITS
        .into_iter()
        .find(|(u, _)| v.abs() >= *u)
        .unwrap_or((1.0, ""));
    let s = format!("{:.2}", v / unit);
    let s = s.trim_end_matches('0').trim_end_matches('.');
    format!("{s}{suffix}")
}

/// Draws into an SVG document of the chart size.
fn render(draw: impl FnOnce(&Area) -> Drawn) -> Result<String> {
    let mut out = String::new();
    {
        let root = SVGBackend::with_string(&mut out, (WIDTH, HEIGHT)).into_drawing_area();
        root.fill(&WHITE)
            .map_err(|e| Error::Internal(format!("plot: {e}")))?;
        draw(&root).map_err(|e| Error::Internal(format!("plot: {e}")))?;
        root.present()
            .map_err(|e| Error::Internal(format!("plot: {e}")))?;
    }
    Ok(out)
}

fn note(area: &Area, text: &str, row: i32) -> Drawn {
    let (w, h) = area.dim_in_pixel();
    let style = TextStyle::from((FONT, 15).into_font())
        .color(&NOTE_COLOR)
        .pos(Pos::new(HPos::Center, VPos::Center));
    area.draw_text(text, &style, (w as i32 / 2, h as i32 / 3 + 20 * row))?;
    Ok(())
}

/// The chart of one run report: (a) validation accuracy and deterministic MACs (% of dense)
/// per epoch, (b) dense and pruned test accuracy against MACs. A report without history
/// (0 epochs) gets a note in place of (a); values that are not finite are left out.
pub fn svg(report: &RunReport) -> Result<String> {
    let title = clean(&format!("compress: {} ({})", report.model, report.method));
    render(|root| {
        let area = root.titled(&title, (FONT, 22))?;
        let (left, right) = area.split_horizontally(WIDTH / 2);
        history_panel(&left, report)?;
        tradeoff_panel(&right, report)
    })
}

fn finite(points: impl Iterator<Item = (f64, f64)>) -> Vec<(f64, f64)> {
    points
        .filter(|(x, y)| x.is_finite() && y.is_finite())
        .collect()
}

fn history_panel(area: &Area, report: &RunReport) -> Drawn {
    const TITLE: &str = "Accuracy and MACs over training";
    let h = &report.history;
    if h.is_empty() {
        let area = area.titled(TITLE, (FONT, 18))?;
        return note(&area, "no training history (0 epochs): nothing to plot", 0);
    }
    let accuracy = finite(h.iter().map(|e| (e.epoch as f64, 100.0 * e.accuracy)));
    let dense = report.dense.macs as f64;
    let macs = if dense > 0.0 {
        finite(
            h.iter()
                .map(|e| (e.epoch as f64, 100.0 * e.deterministic_macs / dense)),
        )
    } else {
        Vec::new()
    };
    let all = || accuracy.iter().chain(&macs);
    let max_epoch = all().map(|p| p.0).fold(1.0f64, f64::max);
    let max_y = all().map(|p| p.1).fold(100.0f64, f64::max) * 1.05;
    let mut chart = ChartBuilder::on(area)
        .caption(TITLE, (FONT, 18))
        .margin(16)
        .x_label_area_size(44)
        .y_label_area_size(60)
        .build_cartesian_2d(0.0..max_epoch, 0.0..max_y)?;
    chart
        .configure_mesh()
        .x_labels((max_epoch as usize + 1).min(11))
        .x_label_formatter(&|x| format!("{x:.0}"))
        .y_label_formatter(&|y| format!("{y:.0}"))
        .light_line_style(TRANSPARENT)
        .x_desc("epoch")
        .y_desc("% (accuracy; MACs of dense)")
        .draw()?;
    for (points, color, label) in [
        (&accuracy, ACCURACY_COLOR, "validation accuracy (%)"),
        (&macs, MACS_COLOR, "deterministic MACs (% of dense)"),
    ] {
        if points.is_empty() {
            continue;
        }
        chart
            .draw_series(LineSeries::new(
                points.iter().copied(),
                color.stroke_width(2),
            ))?
            .label(label)
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], color.stroke_width(2)));
        chart.draw_series(points.iter().map(|&p| Circle::new(p, 3, color.filled())))?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerLeft)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()?;
    if macs.is_empty() {
        note(area, "dense MACs unknown: MACs series not drawn", 0)?;
    }
    Ok(())
}

/// Axis ranges for (MACs, accuracy %) points: MACs from 0 to past the largest, accuracy
/// around the points.
fn tradeoff_ranges(points: &[(f64, f64)]) -> (std::ops::Range<f64>, std::ops::Range<f64>) {
    let max_macs = points.iter().map(|p| p.0).fold(0.0f64, f64::max);
    let max_macs = if max_macs > 0.0 { max_macs * 1.1 } else { 1.0 };
    let (lo, hi) = points
        .iter()
        .map(|p| p.1)
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), a| {
            (lo.min(a), hi.max(a))
        });
    let (lo, hi) = if lo.is_finite() {
        let pad = ((hi - lo) * 0.15).max(2.0);
        ((lo - pad).max(0.0), (hi + pad).min(100.0))
    } else {
        (0.0, 100.0)
    };
    (0.0..max_macs, lo..hi)
}

/// The text style of a point's label.
fn label_font(color: RGBColor) -> TextStyle<'static> {
    TextStyle {
        color: color.to_backend_color(),
        ..TextStyle::from((FONT, 14).into_font())
    }
}

fn tradeoff_panel(area: &Area, report: &RunReport) -> Drawn {
    let dense = (report.dense.macs as f64, 100.0 * report.dense.accuracy);
    let pruned = (report.pruned.macs as f64, 100.0 * report.pruned.accuracy);
    let shown = finite([dense, pruned].into_iter());
    let (xs, ys) = tradeoff_ranges(&shown);
    let mut chart = ChartBuilder::on(area)
        .caption("Accuracy vs MACs", (FONT, 18))
        .margin(16)
        .x_label_area_size(44)
        .y_label_area_size(60)
        .build_cartesian_2d(xs, ys)?;
    chart
        .configure_mesh()
        .x_labels(6)
        .x_label_formatter(&|x| si(*x))
        .light_line_style(TRANSPARENT)
        .x_desc("MACs")
        .y_desc("test accuracy (%)")
        .draw()?;
    if shown.len() == 2 {
        chart.draw_series(LineSeries::new(shown.clone(), LINK_COLOR.stroke_width(1)))?;
    }
    for (at, label, color) in [
        (dense, "dense", DENSE_COLOR),
        (pruned, "pruned", PRUNED_COLOR),
    ] {
        if !(at.0.is_finite() && at.1.is_finite()) {
            note(area, &format!("{label} accuracy is not a number"), 1)?;
            continue;
        }
        let marker = EmptyElement::at(at)
            + Circle::new((0, 0), 6, color.filled())
            + Text::new(label, (10, -22), label_font(color));
        chart
            .draw_series(std::iter::once(marker))?
            .label(label)
            .legend(move |(x, y)| Circle::new((x + 10, y), 5, color.filled()));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()?;
    Ok(())
}

/// The chart of a sweep: every run as a labelled point (pruned MACs, test accuracy), the
/// Pareto front as a line through its runs, and the dense model's point.
pub fn pareto_svg(sweep: &SweepReport) -> Result<String> {
    let runs = points(&sweep.runs);
    let front = pareto_front(&runs);
    let to_pct = |(_, m, a): &(String, f64, f64)| (*m, 100.0 * a);
    let dense = (sweep.dense.macs as f64, 100.0 * sweep.dense.accuracy);
    let shown = finite(runs.iter().map(to_pct).chain([dense]));
    render(|root| {
        let area = root.titled("Accuracy vs MACs: sweep", (FONT, 22))?;
        let (xs, ys) = tradeoff_ranges(&shown);
        let mut chart = ChartBuilder::on(&area)
            .caption(
                "Pareto front: highest test accuracy for the MACs",
                (FONT, 18),
            )
            .margin(16)
            .x_label_area_size(44)
            .y_label_area_size(60)
            .build_cartesian_2d(xs, ys)?;
        chart
            .configure_mesh()
            .x_labels(8)
            .x_label_formatter(&|x| si(*x))
            .light_line_style(TRANSPARENT)
            .x_desc("MACs")
            .y_desc("test accuracy (%)")
            .draw()?;
        chart
            .draw_series(LineSeries::new(
                front.iter().map(|&i| to_pct(&runs[i])),
                FRONT_COLOR.stroke_width(2),
            ))?
            .label("Pareto front")
            .legend(|(x, y)| PathElement::new([(x, y), (x + 20, y)], FRONT_COLOR.stroke_width(2)));
        let drawn: Vec<_> = runs
            .iter()
            .filter(|r| r.1.is_finite() && r.2.is_finite())
            .map(|r| {
                EmptyElement::at(to_pct(r))
                    + Circle::new((0, 0), 4, SWEEP_COLOR.filled())
                    + Text::new(clean(&r.0), (8, -20), label_font(SWEEP_COLOR))
            })
            .collect();
        let none = drawn.is_empty();
        chart
            .draw_series(drawn)?
            .label("runs")
            .legend(|(x, y)| Circle::new((x + 10, y), 4, SWEEP_COLOR.filled()));
        if dense.0.is_finite() && dense.1.is_finite() {
            let marker = EmptyElement::at(dense)
                + Circle::new((0, 0), 6, DENSE_COLOR.filled())
                + Text::new("dense", (10, -22), label_font(DENSE_COLOR));
            chart
                .draw_series(std::iter::once(marker))?
                .label("dense")
                .legend(|(x, y)| Circle::new((x + 10, y), 5, DENSE_COLOR.filled()));
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::LowerRight)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .draw()?;
        if none {
            note(&area, "no runs to plot", 0)?;
        }
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::sweep::tests::{sweep, sweep_report};
    use crate::train::EpochRecord;

    /// The example report renamed, with `epochs` records of history.
    fn report(model: &str, epochs: usize) -> RunReport {
        let mut r: RunReport =
            serde_json::from_value(crate::report::run::tests::example()).unwrap();
        r.model = model.to_string();
        r.method = "hc".into();
        r.dense.macs = 1_000_000;
        r.dense.accuracy = 0.91;
        r.pruned.macs = 420_000;
        r.pruned.accuracy = 0.895;
        r.history = (1..=epochs)
            .map(|e| EpochRecord {
                epoch: e,
                loss: 1.0 / e as f64,
                penalty: 0.1,
                accuracy: 0.5 + 0.05 * e as f64,
                expected_macs: 1.0e6 - 5.0e4 * e as f64,
                deterministic_macs: 1.0e6 - 6.0e4 * e as f64,
                open_gates: vec![8, 16],
                lambda: 0.01,
                seconds: 1.5,
            })
            .collect();
        r
    }

    fn parse(svg: &str) -> roxmltree::Document<'_> {
        roxmltree::Document::parse(svg).unwrap_or_else(|e| panic!("not well-formed: {e}\n{svg}"))
    }

    fn texts(doc: &roxmltree::Document) -> Vec<String> {
        doc.descendants()
            .filter(|n| n.has_tag_name("text"))
            .filter_map(|n| n.text().map(|t| t.trim().to_string()))
            .collect()
    }

    /// Point counts of the polylines drawn in `color`.
    fn lines(doc: &roxmltree::Document, color: RGBColor) -> Vec<usize> {
        let hex = format!("#{:02x}{:02x}{:02x}", color.0, color.1, color.2);
        doc.descendants()
            .filter(|n| n.has_tag_name("polyline"))
            .filter(|n| {
                n.attribute("stroke")
                    .is_some_and(|s| s.eq_ignore_ascii_case(&hex))
            })
            .map(|n| {
                n.attribute("points")
                    .unwrap_or("")
                    .split_whitespace()
                    .count()
            })
            .collect()
    }

    /// Markers (circles) filled with `color`.
    fn markers(doc: &roxmltree::Document, color: RGBColor) -> usize {
        let hex = format!("#{:02x}{:02x}{:02x}", color.0, color.1, color.2);
        doc.descendants()
            .filter(|n| n.has_tag_name("circle"))
            .filter(|n| {
                n.attribute("fill")
                    .is_some_and(|s| s.eq_ignore_ascii_case(&hex))
            })
            .count()
    }

    #[test]
    fn run_chart_has_both_panels_series_points_and_labels() {
        let s = svg(&report("models/net.onnx", 5)).unwrap();
        let doc = parse(&s);
        let root = doc.root_element();
        assert_eq!(root.tag_name().name(), "svg");
        assert_eq!(
            root.tag_name().namespace(),
            Some("http://www.w3.org/2000/svg")
        );
        let t = texts(&doc);
        for want in [
            "compress: models/net.onnx (hc)",
            "Accuracy and MACs over training",
            "Accuracy vs MACs",
            "epoch",
            "MACs",
            "test accuracy (%)",
            "% (accuracy; MACs of dense)",
            "validation accuracy (%)",
            "deterministic MACs (% of dense)",
            "dense",
            "pruned",
        ] {
            assert!(
                t.iter().any(|x| x == want),
                "missing text {want:?} in {t:?}"
            );
        }
        // Five epochs: each series is a five-point line with five markers.
        assert!(lines(&doc, ACCURACY_COLOR).contains(&5), "{s}");
        assert!(lines(&doc, MACS_COLOR).contains(&5), "{s}");
        assert!(markers(&doc, ACCURACY_COLOR) >= 5);
        // The dense and pruned points (plus their legend swatches).
        assert!(markers(&doc, DENSE_COLOR) >= 1 && markers(&doc, PRUNED_COLOR) >= 1);
        // MACs tick labels carry SI suffixes; epochs are whole numbers.
        assert!(
            t.iter().any(|x| x.ends_with('k') || x.ends_with('M')),
            "{t:?}"
        );
        assert!(t.iter().any(|x| x == "5"), "{t:?}");
    }

    #[test]
    fn model_name_is_escaped() {
        let name = "evil<&>\"'\u{1}.onnx";
        let s = svg(&report(name, 2)).unwrap();
        assert!(!s.contains("evil<&>"));
        let doc = parse(&s);
        assert!(
            texts(&doc)
                .iter()
                .any(|t| t == "compress: evil<&>\"' .onnx (hc)"),
            "{:?}",
            texts(&doc)
        );
    }

    #[test]
    fn empty_history_draws_only_the_tradeoff_panel() {
        let s = svg(&report("m.onnx", 0)).unwrap();
        let doc = parse(&s);
        assert!(lines(&doc, ACCURACY_COLOR).is_empty());
        assert!(lines(&doc, MACS_COLOR).is_empty());
        assert!(markers(&doc, DENSE_COLOR) >= 1 && markers(&doc, PRUNED_COLOR) >= 1);
        assert!(texts(&doc).iter().any(|t| t.contains("0 epochs")));
    }

    #[test]
    fn single_epoch_unknown_dense_macs_and_nan_do_not_panic() {
        parse(&svg(&report("m.onnx", 1)).unwrap());
        let mut r = report("m.onnx", 3);
        r.dense.macs = 0;
        r.history[1].accuracy = f64::NAN;
        r.pruned.accuracy = f64::NAN;
        let s = svg(&r).unwrap();
        let doc = parse(&s);
        let t = texts(&doc);
        assert!(
            t.iter().any(|t| t.contains("MACs series not drawn")),
            "{t:?}"
        );
        assert!(
            t.iter()
                .any(|t| t.contains("pruned accuracy is not a number")),
            "{t:?}"
        );
        assert!(lines(&doc, ACCURACY_COLOR).contains(&2));
    }

    #[test]
    fn si_labels() {
        assert_eq!(si(420_000.0), "420k");
        assert_eq!(si(1_250_000.0), "1.25M");
        assert_eq!(si(1_500_000.0), "1.5M");
        assert_eq!(si(0.0), "0");
    }

    #[test]
    fn pareto_chart_has_runs_front_and_dense() {
        let pts: Vec<_> = sweep().into_iter().take(4).collect();
        let s = pareto_svg(&sweep_report(&pts)).unwrap();
        let doc = parse(&s);
        // The front joins its three runs; every run is a marker (plus the legend's).
        assert!(lines(&doc, FRONT_COLOR).contains(&3), "{s}");
        assert!(markers(&doc, SWEEP_COLOR) >= 4);
        assert!(markers(&doc, DENSE_COLOR) >= 1);
        let t = texts(&doc);
        assert!(t.iter().any(|x| x == "lambda=0.1 <a&b>"), "{t:?}");
        for want in [
            "Accuracy vs MACs: sweep",
            "MACs",
            "test accuracy (%)",
            "Pareto front",
            "dense",
            "runs",
        ] {
            assert!(t.iter().any(|x| x == want), "missing {want:?} in {t:?}");
        }
        // No runs at all.
        let s = pareto_svg(&sweep_report(&[])).unwrap();
        assert!(texts(&parse(&s)).iter().any(|t| t == "no runs to plot"));
    }
}
