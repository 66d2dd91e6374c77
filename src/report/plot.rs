//! Standalone SVG charts of a run report (and of a sweep of runs), written by hand: no
//! plotting dependency, every text XML-escaped.
//!
//! [`svg`] draws one run report (read as [`serde_json::Value`], so that reports of other
//! versions and sweep tooling can use it): accuracy and MACs over training, and the dense
//! and pruned models in the accuracy-vs-MACs plane. [`pareto_svg`] draws many runs with
//! their Pareto front.
//!
//! Stable ids and classes for tooling and tests: `series-accuracy`, `series-macs`,
//! `point-dense`, `point-pruned`, `pareto-front`, class `point-sweep`, `legend`, `axis-title`.

use std::fmt::Write;

use serde_json::Value;

const WIDTH: f64 = 1000.0;
const HEIGHT: f64 = 480.0;
const PANEL_TOP: f64 = 80.0;
const PANEL_W: f64 = 360.0;
const PANEL_H: f64 = 280.0;
const LEFT_X: f64 = 80.0;
const RIGHT_X: f64 = 590.0;

const ACCURACY_COLOR: &str = "#1f77b4";
const MACS_COLOR: &str = "#ff7f0e";
const DENSE_COLOR: &str = "#444444";
const PRUNED_COLOR: &str = "#d62728";
const SWEEP_COLOR: &str = "#1f77b4";
const FRONT_COLOR: &str = "#2ca02c";

/// XML-escape text for element content and attribute values.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            // Control characters other than tab/newline are not allowed in XML 1.0.
            c if (c as u32) < 0x20 && c != '\t' && c != '\n' && c != '\r' => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

/// A linear axis with "nice" tick values.
#[derive(Debug, Clone)]
struct Axis {
    lo: f64,
    hi: f64,
    step: f64,
    ticks: Vec<f64>,
}

fn nice_axis(lo: f64, hi: f64, target_ticks: usize) -> Axis {
    let (mut lo, mut hi) = if lo.is_finite() && hi.is_finite() {
        (lo.min(hi), lo.max(hi))
    } else {
        (0.0, 1.0)
    };
    if hi - lo <= f64::EPSILON * hi.abs().max(1.0) {
        let pad = if lo == 0.0 { 1.0 } else { lo.abs() * 0.1 };
        lo -= pad;
        hi += pad;
    }
    let raw = (hi - lo) / target_ticks.max(1) as f64;
    let mag = 10f64.powf(raw.log10().floor());
    let norm = raw / mag;
    let step = mag
        * if norm <= 1.0 {
            1.0
        } else if norm <= 2.0 {
            2.0
        } else if norm <= 2.5 {
            2.5
        } else if norm <= 5.0 {
            5.0
        } else {
            10.0
        };
    let lo = (lo / step).floor() * step;
    let hi = (hi / step).ceil() * step;
    let n = ((hi - lo) / step).round() as usize;
    let ticks = (0..=n).map(|i| lo + i as f64 * step).collect();
    Axis {
        lo,
        hi,
        step,
        ticks,
    }
}

/// A tick label with as many decimals as the step needs.
fn fmt_tick(v: f64, step: f64) -> String {
    // The fewest decimals that write the step exactly (0.25 needs two, 0.5 one).
    let decimals = (0..6)
        .find(|&d| {
            let scaled = step * 10f64.powi(d);
            (scaled - scaled.round()).abs() < 1e-6 * scaled.max(1.0)
        })
        .unwrap_or(6) as usize;
    let s = format!("{v:.decimals$}");
    if s.starts_with('-') && s.trim_start_matches(['-', '0', '.']).is_empty() {
        s[1..].to_string()
    } else {
        s
    }
}

/// MACs tick label with an SI suffix chosen from the tick step, so that one axis uses one
/// unit: 0.2M, 0.4M, ... or 50k, 100k, ...
fn fmt_macs(v: f64, step: f64) -> String {
    if v == 0.0 {
        return "0".to_string();
    }
    let (unit, suffix) = SI
        .into_iter()
        .find(|(u, _)| step >= u / 10.0)
        .unwrap_or((1.0, ""));
    format!("{}{suffix}", fmt_tick(v / unit, step / unit))
}

const SI: [(f64, &str); 4] = [(1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")];

/// A count for point labels: up to two decimals of its own SI unit (420k, 1.25M).
fn fmt_count(v: f64) -> String {
    let (unit, suffix) = SI
        .into_iter()
        .find(|(u, _)| v.abs() >= *u)
        .unwrap_or((1.0, ""));
    let s = format!("{:.2}", v / unit);
    let s = s.trim_end_matches('0').trim_end_matches('.');
    format!("{s}{suffix}")
}

/// A plotting area with its data ranges.
struct Panel {
    x: f64,
    y: f64,
    w: f64,
    h: f64,
    xa: Axis,
    ya: Axis,
}

impl Panel {
    fn px(&self, v: f64) -> f64 {
        self.x + (v - self.xa.lo) / (self.xa.hi - self.xa.lo) * self.w
    }

    fn py(&self, v: f64) -> f64 {
        self.y + self.h - (v - self.ya.lo) / (self.ya.hi - self.ya.lo) * self.h
    }

    #[allow(clippy::too_many_arguments)]
    fn draw_frame(
        &self,
        out: &mut String,
        id: &str,
        title: &str,
        x_title: &str,
        y_title: &str,
        xfmt: &dyn Fn(f64, f64) -> String,
        yfmt: &dyn Fn(f64, f64) -> String,
    ) {
        let (x, y, w, h) = (self.x, self.y, self.w, self.h);
        let _ = writeln!(
            out,
            r#"<text class="panel-title" id="{id}-title" x="{:.1}" y="{:.1}" text-anchor="middle" font-size="15" font-weight="bold">{}</text>"#,
            x + w / 2.0,
            y - 12.0,
            escape(title)
        );
        let _ = writeln!(
            out,
            r##"<g class="grid" stroke="#e0e0e0" stroke-width="1">"##
        );
        for &t in &self.xa.ticks {
            let px = self.px(t);
            let _ = writeln!(
                out,
                r#"<line x1="{px:.1}" y1="{y:.1}" x2="{px:.1}" y2="{:.1}"/>"#,
                y + h
            );
        }
        for &t in &self.ya.ticks {
            let py = self.py(t);
            let _ = writeln!(
                out,
                r#"<line x1="{x:.1}" y1="{py:.1}" x2="{:.1}" y2="{py:.1}"/>"#,
                x + w
            );
        }
        let _ = writeln!(out, "</g>");
        let _ = writeln!(
            out,
            r##"<rect class="frame" x="{x:.1}" y="{y:.1}" width="{w:.1}" height="{h:.1}" fill="none" stroke="#333333"/>"##
        );
        let _ = writeln!(out, r#"<g class="tick-labels x" text-anchor="middle">"#);
        for &t in &self.xa.ticks {
            let _ = writeln!(
                out,
                r#"<text x="{:.1}" y="{:.1}">{}</text>"#,
                self.px(t),
                y + h + 16.0,
                escape(&xfmt(t, self.xa.step))
            );
        }
        let _ = writeln!(out, "</g>");
        let _ = writeln!(out, r#"<g class="tick-labels y" text-anchor="end">"#);
        for &t in &self.ya.ticks {
            let _ = writeln!(
                out,
                r#"<text x="{:.1}" y="{:.1}">{}</text>"#,
                x - 6.0,
                self.py(t) + 4.0,
                escape(&yfmt(t, self.ya.step))
            );
        }
        let _ = writeln!(out, "</g>");
        let _ = writeln!(
            out,
            r#"<text class="axis-title x" x="{:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
            x + w / 2.0,
            y + h + 36.0,
            escape(x_title)
        );
        let (ty_x, ty_y) = (x - 48.0, y + h / 2.0);
        let _ = writeln!(
            out,
            r#"<text class="axis-title y" x="{ty_x:.1}" y="{ty_y:.1}" text-anchor="middle" transform="rotate(-90 {ty_x:.1} {ty_y:.1})">{}</text>"#,
            escape(y_title)
        );
    }
}

/// One legend entry: a swatch (line, or marker when `marker`) and its text.
struct LegendEntry<'a> {
    color: &'a str,
    text: &'a str,
    marker: bool,
    dashed: bool,
}

fn legend(out: &mut String, x: f64, y: f64, entries: &[LegendEntry]) {
    let _ = writeln!(out, r#"<g class="legend">"#);
    for (i, e) in entries.iter().enumerate() {
        let ey = y + i as f64 * 18.0;
        if e.marker {
            let _ = writeln!(
                out,
                r#"<circle cx="{:.1}" cy="{ey:.1}" r="5" fill="{}"/>"#,
                x + 10.0,
                e.color
            );
        } else {
            let dash = if e.dashed {
                r#" stroke-dasharray="5 3""#
            } else {
                ""
            };
            let _ = writeln!(
                out,
                r#"<line x1="{x:.1}" y1="{ey:.1}" x2="{:.1}" y2="{ey:.1}" stroke="{}" stroke-width="2.5"{dash}/>"#,
                x + 20.0,
                e.color
            );
        }
        let _ = writeln!(
            out,
            r#"<text x="{:.1}" y="{:.1}">{}</text>"#,
            x + 28.0,
            ey + 4.0,
            escape(e.text)
        );
    }
    let _ = writeln!(out, "</g>");
}

fn header(out: &mut String, title: &str) {
    let _ = writeln!(out, r#"<?xml version="1.0" encoding="UTF-8"?>"#);
    let _ = writeln!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(out, "<title>{}</title>", escape(title));
    let _ = writeln!(out, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        out,
        r#"<text id="title" x="{:.1}" y="32" text-anchor="middle" font-size="18" font-weight="bold">{}</text>"#,
        WIDTH / 2.0,
        escape(title)
    );
}

fn note(out: &mut String, x: f64, y: f64, text: &str) {
    let _ = writeln!(
        out,
        r##"<text class="note" x="{x:.1}" y="{y:.1}" text-anchor="middle" fill="#666666">{}</text>"##,
        escape(text)
    );
}

fn num(v: &Value, key: &str) -> Option<f64> {
    v.get(key)?.as_f64().filter(|x| x.is_finite())
}

fn nested(v: &Value, a: &str, b: &str) -> Option<f64> {
    v.get(a).and_then(|x| num(x, b))
}

/// A polyline plus one marker per point, grouped under `id`.
fn series(out: &mut String, id: &str, label: &str, color: &str, pts: &[(f64, f64)]) {
    let _ = writeln!(
        out,
        r#"<g id="{id}" class="series {id}" fill="{color}" stroke="{color}"><title>{}</title>"#,
        escape(label)
    );
    let coords: Vec<String> = pts.iter().map(|(x, y)| format!("{x:.1},{y:.1}")).collect();
    let _ = writeln!(
        out,
        r#"<polyline points="{}" fill="none" stroke-width="2.5"/>"#,
        coords.join(" ")
    );
    for (x, y) in pts {
        let _ = writeln!(out, r#"<circle cx="{x:.1}" cy="{y:.1}" r="3"/>"#);
    }
    let _ = writeln!(out, "</g>");
}

/// A labelled point grouped under `id` (or with class `class` when `id` is empty).
#[allow(clippy::too_many_arguments)]
fn point(
    out: &mut String,
    id: &str,
    class: &str,
    label: &str,
    tooltip: &str,
    color: &str,
    x: f64,
    y: f64,
    r: f64,
) {
    let id_attr = if id.is_empty() {
        String::new()
    } else {
        format!(r#" id="{id}""#)
    };
    let _ = writeln!(
        out,
        r#"<g{id_attr} class="{class}"><title>{}</title><circle cx="{x:.1}" cy="{y:.1}" r="{r}" fill="{color}" stroke="white" stroke-width="1"/><text x="{:.1}" y="{:.1}" fill="{color}">{}</text></g>"#,
        escape(tooltip),
        x + r + 4.0,
        y - r - 2.0,
        escape(label)
    );
}

/// The chart of one run report: (a) validation accuracy and deterministic MACs (% of dense)
/// per epoch, (b) dense and pruned test accuracy against MACs. A report without history
/// (0 epochs) gets panel (b) and a note in place of (a). Missing fields never panic: what
/// cannot be drawn is left out with a note.
pub fn svg(report: &Value) -> String {
    let model = report.get("model").and_then(Value::as_str).unwrap_or("?");
    let method = report.get("method").and_then(Value::as_str).unwrap_or("?");
    let title = format!("compress: {model} ({method})");
    let mut out = String::new();
    header(&mut out, &title);

    let dense_macs = nested(report, "dense", "macs");
    let history: &[Value] = report
        .get("history")
        .and_then(Value::as_array)
        .map_or(&[], Vec::as_slice);
    history_panel(&mut out, history, dense_macs);
    comparison_panel(&mut out, report);

    let _ = writeln!(out, "</svg>");
    out
}

fn history_panel(out: &mut String, history: &[Value], dense_macs: Option<f64>) {
    let title = "Accuracy and MACs over training";
    if history.is_empty() {
        let _ = writeln!(
            out,
            r#"<text class="panel-title" id="panel-history-title" x="{:.1}" y="{:.1}" text-anchor="middle" font-size="15" font-weight="bold">{title}</text>"#,
            LEFT_X + PANEL_W / 2.0,
            PANEL_TOP - 12.0
        );
        note(
            out,
            LEFT_X + PANEL_W / 2.0,
            PANEL_TOP + PANEL_H / 2.0,
            "no training history (0 epochs): nothing to plot",
        );
        return;
    }
    let epoch_of = |i: usize, h: &Value| num(h, "epoch").unwrap_or((i + 1) as f64);
    let acc: Vec<(f64, f64)> = history
        .iter()
        .enumerate()
        .filter_map(|(i, h)| Some((epoch_of(i, h), 100.0 * num(h, "accuracy")?)))
        .collect();
    let macs: Vec<(f64, f64)> = match dense_macs.filter(|m| *m > 0.0) {
        Some(dense) => history
            .iter()
            .enumerate()
            .filter_map(|(i, h)| {
                Some((
                    epoch_of(i, h),
                    100.0 * num(h, "deterministic_macs")? / dense,
                ))
            })
            .collect(),
        None => Vec::new(),
    };
    let max_epoch = acc.iter().chain(&macs).map(|p| p.0).fold(1.0f64, f64::max);
    let min_epoch = acc.iter().chain(&macs).map(|p| p.0).fold(0.0f64, f64::min);
    let max_y = acc
        .iter()
        .chain(&macs)
        .map(|p| p.1)
        .fold(100.0f64, f64::max);
    let mut xa = nice_axis(min_epoch, max_epoch, 6);
    if xa.step < 1.0 {
        // Whole epochs only.
        xa.step = 1.0;
        xa.ticks.retain(|t| t.fract() == 0.0);
    }
    let panel = Panel {
        x: LEFT_X,
        y: PANEL_TOP,
        w: PANEL_W,
        h: PANEL_H,
        xa,
        ya: nice_axis(0.0, max_y, 5),
    };
    panel.draw_frame(
        out,
        "panel-history",
        title,
        "epoch",
        "% (accuracy; MACs of dense)",
        &fmt_tick,
        &fmt_tick,
    );
    let map = |pts: &[(f64, f64)]| -> Vec<(f64, f64)> {
        pts.iter()
            .map(|&(x, y)| (panel.px(x), panel.py(y)))
            .collect()
    };
    series(
        out,
        "series-accuracy",
        "validation accuracy (%)",
        ACCURACY_COLOR,
        &map(&acc),
    );
    series(
        out,
        "series-macs",
        "deterministic MACs (% of dense)",
        MACS_COLOR,
        &map(&macs),
    );
    if macs.is_empty() {
        note(
            out,
            LEFT_X + PANEL_W / 2.0,
            PANEL_TOP + 20.0,
            "dense MACs unknown: MACs series not drawn",
        );
    }
    legend(
        out,
        LEFT_X,
        PANEL_TOP + PANEL_H + 58.0,
        &[
            LegendEntry {
                color: ACCURACY_COLOR,
                text: "validation accuracy (%)",
                marker: false,
                dashed: false,
            },
            LegendEntry {
                color: MACS_COLOR,
                text: "deterministic MACs (% of dense)",
                marker: false,
                dashed: false,
            },
        ],
    );
}

fn comparison_panel(out: &mut String, report: &Value) {
    let title = "Accuracy vs MACs";
    let dense = nested(report, "dense", "macs").zip(nested(report, "dense", "accuracy"));
    let pruned = nested(report, "pruned", "macs").zip(nested(report, "pruned", "accuracy"));
    let pts: Vec<(f64, f64)> = dense.iter().chain(pruned.iter()).copied().collect();
    let panel = accuracy_macs_panel(RIGHT_X, PANEL_W, &pts);
    panel.draw_frame(
        out,
        "panel-tradeoff",
        title,
        "MACs",
        "test accuracy (%)",
        &fmt_macs,
        &fmt_tick,
    );
    if let (Some(d), Some(p)) = (dense, pruned) {
        let _ = writeln!(
            out,
            r##"<line class="dense-to-pruned" x1="{:.1}" y1="{:.1}" x2="{:.1}" y2="{:.1}" stroke="#999999" stroke-dasharray="4 3"/>"##,
            panel.px(d.0),
            panel.py(100.0 * d.1),
            panel.px(p.0),
            panel.py(100.0 * p.1)
        );
    }
    for (id, label, color, p) in [
        ("point-dense", "dense", DENSE_COLOR, dense),
        ("point-pruned", "pruned", PRUNED_COLOR, pruned),
    ] {
        match p {
            Some((m, a)) => point(
                out,
                id,
                "point",
                label,
                &format!(
                    "{label}: {} MACs, {:.2}% test accuracy",
                    fmt_count(m),
                    100.0 * a
                ),
                color,
                panel.px(m),
                panel.py(100.0 * a),
                6.0,
            ),
            None => note(
                out,
                RIGHT_X + PANEL_W / 2.0,
                PANEL_TOP + if id == "point-dense" { 20.0 } else { 38.0 },
                &format!("{label} MACs or accuracy missing"),
            ),
        }
    }
    legend(
        out,
        RIGHT_X,
        PANEL_TOP + PANEL_H + 58.0,
        &[
            LegendEntry {
                color: DENSE_COLOR,
                text: "dense",
                marker: true,
                dashed: false,
            },
            LegendEntry {
                color: PRUNED_COLOR,
                text: "pruned",
                marker: true,
                dashed: false,
            },
        ],
    );
}

/// A panel for (MACs, accuracy fraction) points: x from 0 to past the largest MACs, y in
/// percent around the accuracies.
fn accuracy_macs_panel(x: f64, w: f64, pts: &[(f64, f64)]) -> Panel {
    let max_macs = pts.iter().map(|p| p.0).fold(0.0f64, f64::max);
    let max_macs = if max_macs > 0.0 { max_macs * 1.1 } else { 1.0 };
    let (lo, hi) = pts
        .iter()
        .map(|p| 100.0 * p.1)
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), a| {
            (lo.min(a), hi.max(a))
        });
    let (lo, hi) = if lo.is_finite() {
        let pad = ((hi - lo) * 0.15).max(2.0);
        ((lo - pad).max(0.0), (hi + pad).min(100.0))
    } else {
        (0.0, 100.0)
    };
    Panel {
        x,
        y: PANEL_TOP,
        w,
        h: PANEL_H,
        xa: nice_axis(0.0, max_macs, 5),
        ya: nice_axis(lo, hi, 5),
    }
}

/// Indices of the Pareto-optimal points (highest accuracy for their MACs: no other point has
/// at most their MACs and at least their accuracy, one of them strictly), in increasing MACs.
/// Points with non-finite coordinates are ignored.
pub fn pareto_front(points: &[(String, f64, f64)]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..points.len())
        .filter(|&i| points[i].1.is_finite() && points[i].2.is_finite())
        .collect();
    order.sort_by(|&a, &b| {
        points[a]
            .1
            .total_cmp(&points[b].1)
            .then(points[b].2.total_cmp(&points[a].2))
    });
    let mut front = Vec::new();
    let mut best = f64::NEG_INFINITY;
    for i in order {
        if points[i].2 > best {
            best = points[i].2;
            front.push(i);
        }
    }
    front
}

/// The chart of a sweep: every run as a labelled point (`label`, MACs, test accuracy as a
/// fraction), the Pareto front as a connecting line and the dense model's point.
pub fn pareto_svg(points: &[(String, f64, f64)], dense: (f64, f64)) -> String {
    let title = "Accuracy vs MACs: sweep";
    let mut out = String::new();
    header(&mut out, title);
    let finite = |p: &(f64, f64)| p.0.is_finite() && p.1.is_finite();
    let dense = Some(dense).filter(finite);
    let pts: Vec<(f64, f64)> = points
        .iter()
        .map(|(_, m, a)| (*m, *a))
        .filter(finite)
        .chain(dense)
        .collect();
    let x = LEFT_X;
    let w = WIDTH - LEFT_X - 200.0;
    let panel = accuracy_macs_panel(x, w, &pts);
    panel.draw_frame(
        &mut out,
        "panel-pareto",
        "Pareto front: highest test accuracy for the MACs",
        "MACs",
        "test accuracy (%)",
        &fmt_macs,
        &fmt_tick,
    );
    let front = pareto_front(points);
    let coords: Vec<String> = front
        .iter()
        .map(|&i| {
            format!(
                "{:.1},{:.1}",
                panel.px(points[i].1),
                panel.py(100.0 * points[i].2)
            )
        })
        .collect();
    let _ = writeln!(
        out,
        r#"<polyline id="pareto-front" class="series" points="{}" fill="none" stroke="{FRONT_COLOR}" stroke-width="2.5"/>"#,
        coords.join(" ")
    );
    let _ = writeln!(out, r#"<g id="sweep-points">"#);
    for (i, (label, m, a)) in points.iter().enumerate() {
        if !(m.is_finite() && a.is_finite()) {
            continue;
        }
        let on_front = front.contains(&i);
        point(
            &mut out,
            "",
            if on_front {
                "point-sweep on-front"
            } else {
                "point-sweep"
            },
            label,
            &format!(
                "{label}: {} MACs, {:.2}% test accuracy",
                fmt_count(*m),
                100.0 * a
            ),
            SWEEP_COLOR,
            panel.px(*m),
            panel.py(100.0 * a),
            4.5,
        );
    }
    let _ = writeln!(out, "</g>");
    match dense {
        Some((m, a)) => point(
            &mut out,
            "point-dense",
            "point",
            "dense",
            &format!(
                "dense: {} MACs, {:.2}% test accuracy",
                fmt_count(m),
                100.0 * a
            ),
            DENSE_COLOR,
            panel.px(m),
            panel.py(100.0 * a),
            6.0,
        ),
        None => note(
            &mut out,
            x + w / 2.0,
            PANEL_TOP + 20.0,
            "dense MACs or accuracy missing",
        ),
    }
    if pts.len() == dense.iter().count() {
        note(&mut out, x + w / 2.0, PANEL_TOP + 38.0, "no runs to plot");
    }
    legend(
        &mut out,
        x + w + 20.0,
        PANEL_TOP + 10.0,
        &[
            LegendEntry {
                color: SWEEP_COLOR,
                text: "runs",
                marker: true,
                dashed: false,
            },
            LegendEntry {
                color: FRONT_COLOR,
                text: "Pareto front",
                marker: false,
                dashed: false,
            },
            LegendEntry {
                color: DENSE_COLOR,
                text: "dense",
                marker: true,
                dashed: false,
            },
        ],
    );
    let _ = writeln!(out, "</svg>");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn report(model: &str, epochs: usize) -> Value {
        let history: Vec<Value> = (1..=epochs)
            .map(|e| {
                json!({
                    "epoch": e, "loss": 1.0 / e as f64, "penalty": 0.1,
                    "accuracy": 0.5 + 0.05 * e as f64,
                    "expected_macs": 1.0e6 - 5.0e4 * e as f64,
                    "deterministic_macs": 1.0e6 - 6.0e4 * e as f64,
                    "open_gates": [8, 16], "lambda": 0.01, "seconds": 1.5
                })
            })
            .collect();
        json!({
            "schema_version": 1,
            "model": model,
            "method": "hc",
            "dense": {"accuracy": 0.91, "params": 5000, "macs": 1_000_000, "latency_ms": null},
            "pruned": {"accuracy": 0.895, "params": 3000, "macs": 420_000, "latency_ms": null},
            "history": history,
        })
    }

    fn parse(svg: &str) -> roxmltree::Document<'_> {
        roxmltree::Document::parse(svg).unwrap_or_else(|e| panic!("not well-formed: {e}\n{svg}"))
    }

    fn has_id(doc: &roxmltree::Document, id: &str) -> bool {
        doc.descendants().any(|n| n.attribute("id") == Some(id))
    }

    fn texts(doc: &roxmltree::Document) -> Vec<String> {
        doc.descendants()
            .filter(|n| n.has_tag_name("text"))
            .filter_map(|n| n.text().map(str::to_string))
            .collect()
    }

    #[test]
    fn run_chart_is_well_formed_with_both_panels() {
        let s = svg(&report("models/net.onnx", 5));
        let doc = parse(&s);
        let root = doc.root_element();
        assert_eq!(root.tag_name().name(), "svg");
        assert_eq!(
            root.tag_name().namespace(),
            Some("http://www.w3.org/2000/svg")
        );
        for id in [
            "series-accuracy",
            "series-macs",
            "point-dense",
            "point-pruned",
        ] {
            assert!(has_id(&doc, id), "missing #{id}");
        }
        let t = texts(&doc);
        for want in [
            "compress: models/net.onnx (hc)",
            "Accuracy and MACs over training",
            "Accuracy vs MACs",
            "epoch",
            "MACs",
            "test accuracy (%)",
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
        // Five epochs: five markers per series.
        let acc = doc
            .descendants()
            .find(|n| n.attribute("id") == Some("series-accuracy"))
            .unwrap();
        assert_eq!(
            acc.children().filter(|n| n.has_tag_name("circle")).count(),
            5
        );
        // MACs tick labels carry SI suffixes.
        assert!(
            t.iter().any(|x| x.ends_with('k') || x.ends_with('M')),
            "{t:?}"
        );
        // Ids are unique.
        let mut ids: Vec<&str> = doc
            .descendants()
            .filter_map(|n| n.attribute("id"))
            .collect();
        let n = ids.len();
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), n);
    }

    #[test]
    fn model_name_is_escaped() {
        let name = r#"evil<&>"'.onnx"#;
        let s = svg(&report(name, 2));
        assert!(!s.contains(name));
        assert!(s.contains("evil&lt;&amp;&gt;&quot;&apos;.onnx"));
        let doc = parse(&s);
        let title = doc
            .descendants()
            .find(|n| n.attribute("id") == Some("title"))
            .unwrap();
        assert_eq!(title.text(), Some(r#"compress: evil<&>"'.onnx (hc)"#));
    }

    #[test]
    fn empty_history_draws_only_the_tradeoff_panel() {
        let s = svg(&report("m.onnx", 0));
        let doc = parse(&s);
        assert!(!has_id(&doc, "series-accuracy"));
        assert!(!has_id(&doc, "series-macs"));
        assert!(has_id(&doc, "point-dense") && has_id(&doc, "point-pruned"));
        assert!(texts(&doc).iter().any(|t| t.contains("0 epochs")));
    }

    #[test]
    fn single_epoch_and_missing_fields_do_not_panic() {
        let s = svg(&report("m.onnx", 1));
        parse(&s);
        let s = svg(&json!({"history": [{"epoch": 1, "accuracy": null}]}));
        let doc = parse(&s);
        assert!(texts(&doc).iter().any(|t| t.contains("missing")));
        parse(&svg(&json!(null)));
    }

    #[test]
    fn nice_axis_covers_range() {
        let a = nice_axis(0.0, 1_100_000.0, 5);
        assert_eq!(a.lo, 0.0);
        assert!(a.hi >= 1_100_000.0);
        assert!(a.ticks.len() >= 3 && a.ticks.len() <= 12, "{:?}", a.ticks);
        let a = nice_axis(3.0, 3.0, 5);
        assert!(a.lo < 3.0 && a.hi > 3.0);
        assert_eq!(fmt_macs(1_500_000.0, 500_000.0), "1.5M");
        assert_eq!(fmt_macs(250_000.0, 50_000.0), "250k");
        assert_eq!(fmt_macs(1_000_000.0, 200_000.0), "1.0M");
        assert_eq!(fmt_tick(0.30000000000000004, 0.1), "0.3");
        assert_eq!(fmt_tick(0.25, 0.25), "0.25");
        assert_eq!(fmt_tick(-0.0, 0.5), "0.0");
        assert_eq!(fmt_macs(1_250_000.0, 250_000.0), "1.25M");
        assert_eq!(fmt_count(420_000.0), "420k");
        assert_eq!(fmt_count(1_250_000.0), "1.25M");
    }

    fn sweep() -> Vec<(String, f64, f64)> {
        vec![
            ("lambda=0.1 <a&b>".to_string(), 300_000.0, 0.85),
            ("lambda=0.05".to_string(), 500_000.0, 0.89),
            ("dominated".to_string(), 600_000.0, 0.87),
            ("lambda=0.01".to_string(), 700_000.0, 0.90),
            ("broken".to_string(), f64::NAN, 0.5),
        ]
    }

    #[test]
    fn pareto_front_keeps_non_dominated_points() {
        assert_eq!(pareto_front(&sweep()), vec![0, 1, 3]);
        assert!(pareto_front(&[]).is_empty());
        // Equal MACs: only the more accurate one.
        let tie = vec![("a".to_string(), 1.0, 0.5), ("b".to_string(), 1.0, 0.6)];
        assert_eq!(pareto_front(&tie), vec![1]);
    }

    #[test]
    fn pareto_chart_is_well_formed() {
        let s = pareto_svg(&sweep(), (1_000_000.0, 0.91));
        let doc = parse(&s);
        assert!(has_id(&doc, "pareto-front"));
        assert!(has_id(&doc, "point-dense"));
        let sweep_points = doc
            .descendants()
            .filter(|n| {
                n.attribute("class")
                    .is_some_and(|c| c.split(' ').any(|c| c == "point-sweep"))
            })
            .count();
        assert_eq!(sweep_points, 4);
        let front = doc
            .descendants()
            .find(|n| n.attribute("id") == Some("pareto-front"))
            .unwrap();
        assert_eq!(front.attribute("points").unwrap().split(' ').count(), 3);
        let t = texts(&doc);
        assert!(t.iter().any(|x| x == "lambda=0.1 <a&b>"), "{t:?}");
        for want in ["MACs", "test accuracy (%)", "Pareto front", "dense", "runs"] {
            assert!(t.iter().any(|x| x == want), "missing {want:?}");
        }
        // No runs at all.
        let doc_s = pareto_svg(&[], (1_000_000.0, 0.91));
        let doc = parse(&doc_s);
        assert!(texts(&doc).iter().any(|t| t == "no runs to plot"));
    }
}
