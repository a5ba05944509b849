//! A hand-written SVG plot: panels stacked vertically sharing one time axis, each with a few
//! polylines (or bars), axis ticks, a legend and optional vertical event markers.

use std::fmt::Write as _;

/// One line of a panel.
#[derive(Clone, Debug)]
pub struct Series {
    /// Legend text.
    pub name: String,
    /// `(x, y)` points, x in seconds.
    pub points: Vec<(f64, f64)>,
    /// Draw as bars of this width (x units) instead of a line.
    pub bar_width: Option<f64>,
}

/// One panel.
#[derive(Clone, Debug)]
pub struct Panel {
    /// Title above the panel.
    pub title: String,
    /// Unit of the y axis.
    pub y_label: String,
    /// Logarithmic y axis (values ≤ 0 are skipped).
    pub log_y: bool,
    /// Lines.
    pub series: Vec<Series>,
}

/// A labelled vertical line across every panel.
#[derive(Clone, Debug)]
pub struct Marker {
    /// x, seconds.
    pub x: f64,
    /// Label.
    pub label: String,
}

const WIDTH: f64 = 960.0;
const PANEL_H: f64 = 230.0;
const LEFT: f64 = 80.0;
const RIGHT: f64 = 170.0;
const TOP: f64 = 50.0;
const GAP: f64 = 60.0;
const COLORS: [&str; 6] = [
    "#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b",
];

fn esc(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// A "nice" tick step for a span.
fn step(span: f64, ticks: f64) -> f64 {
    if span <= 0.0 || !span.is_finite() {
        return 1.0;
    }
    let raw = span / ticks;
    let mag = 10f64.powf(raw.log10().floor());
    let norm = raw / mag;
    let nice = if norm < 1.5 {
        1.0
    } else if norm < 3.5 {
        2.0
    } else if norm < 7.5 {
        5.0
    } else {
        10.0
    };
    nice * mag
}

fn fmt_num(v: f64) -> String {
    let a = v.abs();
    if a >= 1e6 {
        format!("{:.1}M", v / 1e6)
    } else if a >= 1e4 {
        format!("{:.0}k", v / 1e3)
    } else if a >= 1e3 {
        format!("{:.1}k", v / 1e3)
    } else if a >= 10.0 || a == 0.0 {
        format!("{v:.0}")
    } else if a >= 1.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

/// Renders `panels` (empty ones are left out) under `title`.
pub fn render(title: &str, panels: &[Panel], markers: &[Marker]) -> String {
    let panels: Vec<&Panel> = panels
        .iter()
        .filter(|p| p.series.iter().any(|s| !s.points.is_empty()))
        .collect();
    let x = XAxis::new(x_max(&panels, markers));
    let height = TOP + panels.len() as f64 * (PANEL_H + GAP) + 20.0;
    let mut out = String::new();
    let _ = writeln!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" viewBox="0 0 {WIDTH} {height}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(
        out,
        r#"<rect width="100%" height="100%" fill="white"/><text x="{}" y="24" font-size="16" text-anchor="middle">{}</text>"#,
        WIDTH / 2.0,
        esc(title)
    );
    for (pi, panel) in panels.iter().enumerate() {
        let top = TOP + pi as f64 * (PANEL_H + GAP);
        let y = YAxis::new(panel, top + PANEL_H);
        panel_frame(&mut out, panel, &y, top);
        x_ticks(&mut out, &x, y.bottom);
        marker_lines(&mut out, &x, markers, top, y.bottom, pi == 0);
        for (si, series) in panel.series.iter().enumerate() {
            let color = COLORS[si % COLORS.len()];
            draw_series(&mut out, &x, &y, series, color);
            legend_entry(&mut out, &series.name, color, top + 14.0 + si as f64 * 18.0);
        }
    }
    out.push_str("</svg>\n");
    out
}

/// The right end of the shared time axis: the last point (bars included) or marker.
fn x_max(panels: &[&Panel], markers: &[Marker]) -> f64 {
    let mut x_max = f64::NEG_INFINITY;
    for p in panels {
        for s in &p.series {
            for &(x, _) in &s.points {
                x_max = x_max.max(x + s.bar_width.unwrap_or(0.0));
            }
        }
    }
    for m in markers {
        x_max = x_max.max(m.x);
    }
    x_max
}

/// The time axis every panel shares; it starts at the run's start.
struct XAxis {
    min: f64,
    max: f64,
    /// Width of the plotting area.
    plot_w: f64,
}

impl XAxis {
    fn new(x_max: f64) -> Self {
        let min = 0.0;
        Self {
            min,
            max: if x_max <= min { min + 1.0 } else { x_max },
            plot_w: WIDTH - LEFT - RIGHT,
        }
    }

    /// Pixel column of time `x`.
    fn scale(&self, x: f64) -> f64 {
        LEFT + (x - self.min) / (self.max - self.min) * self.plot_w
    }
}

/// One panel's y axis: its range (decades when logarithmic) and where its bottom is.
struct YAxis {
    lo: f64,
    hi: f64,
    log: bool,
    bottom: f64,
}

impl YAxis {
    /// The range of `panel`'s plottable values, rounded out to whole steps or decades.
    fn new(panel: &Panel, bottom: f64) -> Self {
        let values = panel
            .series
            .iter()
            .flat_map(|s| s.points.iter().map(|p| p.1))
            .filter(|v| plottable(*v, panel.log_y));
        let (mut y_min, mut y_max) = (f64::INFINITY, f64::NEG_INFINITY);
        for v in values {
            y_min = y_min.min(v);
            y_max = y_max.max(v);
        }
        if !y_min.is_finite() {
            (y_min, y_max) = (0.0, 1.0);
        }
        let (lo, hi) = if panel.log_y {
            (
                10f64.powf(y_min.log10().floor()),
                10f64.powf(y_max.log10().ceil().max(y_min.log10().floor() + 1.0)),
            )
        } else {
            let s = step(y_max.max(0.0), 5.0);
            (0.0, (y_max / s).ceil().max(1.0) * s)
        };
        Self {
            lo,
            hi,
            log: panel.log_y,
            bottom,
        }
    }

    /// Pixel row of value `v` (clamped to the panel).
    fn scale(&self, v: f64) -> f64 {
        let f = if self.log {
            (v.log10() - self.lo.log10()) / (self.hi.log10() - self.lo.log10())
        } else {
            (v - self.lo) / (self.hi - self.lo)
        };
        self.bottom - f.clamp(0.0, 1.0) * PANEL_H
    }

    /// Tick values: every decade, or about five nice steps.
    fn ticks(&self) -> Vec<f64> {
        let mut ticks = Vec::new();
        if self.log {
            let mut t = self.lo;
            while t <= self.hi * 1.0001 {
                ticks.push(t);
                t *= 10.0;
            }
        } else {
            let s = step(self.hi - self.lo, 5.0);
            let mut t = self.lo;
            while t <= self.hi + s * 0.001 {
                ticks.push(t);
                t += s;
            }
        }
        ticks
    }
}

/// Whether `v` can be drawn (finite, and positive on a log axis).
fn plottable(v: f64, log_y: bool) -> bool {
    v.is_finite() && (!log_y || v > 0.0)
}

/// The panel's title, border, y grid with labels, and y-axis label.
fn panel_frame(out: &mut String, panel: &Panel, y: &YAxis, top: f64) {
    let plot_w = WIDTH - LEFT - RIGHT;
    let _ = writeln!(
        out,
        r#"<text x="{LEFT}" y="{}" font-size="13" font-weight="bold">{}</text>"#,
        top - 8.0,
        esc(&panel.title)
    );
    let _ = writeln!(
        out,
        r##"<rect x="{LEFT}" y="{top}" width="{plot_w}" height="{PANEL_H}" fill="none" stroke="#444"/>"##
    );
    for t in y.ticks() {
        let row = y.scale(t);
        let _ = writeln!(
            out,
            r##"<line x1="{LEFT}" y1="{row:.1}" x2="{:.1}" y2="{row:.1}" stroke="#ddd"/><text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"##,
            LEFT + plot_w,
            LEFT - 6.0,
            row + 4.0,
            fmt_num(t)
        );
    }
    let _ = writeln!(
        out,
        r#"<text transform="translate(18,{:.1}) rotate(-90)" text-anchor="middle">{}</text>"#,
        top + PANEL_H / 2.0,
        esc(&panel.y_label)
    );
}

/// Time ticks and the time-axis label under a panel.
fn x_ticks(out: &mut String, x: &XAxis, bottom: f64) {
    let s = step(x.max - x.min, 10.0);
    let mut t = (x.min / s).ceil() * s;
    while t <= x.max + s * 0.001 {
        let col = x.scale(t);
        let _ = writeln!(
            out,
            r##"<line x1="{col:.1}" y1="{bottom}" x2="{col:.1}" y2="{:.1}" stroke="#444"/><text x="{col:.1}" y="{:.1}" text-anchor="middle">{}</text>"##,
            bottom + 5.0,
            bottom + 18.0,
            fmt_num(t)
        );
        t += s;
    }
    let _ = writeln!(
        out,
        r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">seconds since start</text>"#,
        LEFT + x.plot_w / 2.0,
        bottom + 34.0
    );
}

/// A dashed line per marker across the panel; labels only on the first panel.
fn marker_lines(
    out: &mut String,
    x: &XAxis,
    markers: &[Marker],
    top: f64,
    bottom: f64,
    labelled: bool,
) {
    for (mi, m) in markers.iter().enumerate() {
        let col = x.scale(m.x);
        let _ = writeln!(
            out,
            r##"<line x1="{col:.1}" y1="{top}" x2="{col:.1}" y2="{bottom}" stroke="#888" stroke-dasharray="4,3"/>"##
        );
        if labelled {
            // Staggered so that close markers stay readable; right-aligned near the edge.
            let (lx, anchor) = if col > LEFT + x.plot_w * 0.85 {
                (col - 3.0, "end")
            } else {
                (col + 3.0, "start")
            };
            let _ = writeln!(
                out,
                r##"<text x="{lx:.1}" y="{:.1}" font-size="10" fill="#555" text-anchor="{anchor}">{}</text>"##,
                top + 12.0 + (mi % 3) as f64 * 11.0,
                esc(&m.label)
            );
        }
    }
}

/// One series: bars, or polylines broken at pauses.
fn draw_series(out: &mut String, x: &XAxis, y: &YAxis, series: &Series, color: &str) {
    let pts: Vec<(f64, f64)> = series
        .points
        .iter()
        .copied()
        .filter(|(_, v)| plottable(*v, y.log))
        .collect();
    match series.bar_width {
        Some(w) => draw_bars(out, x, y, &pts, w, color),
        None if !pts.is_empty() => draw_lines(out, x, y, &pts, color),
        None => {}
    }
}

/// A bar of width `w` per point.
fn draw_bars(out: &mut String, x: &XAxis, y: &YAxis, pts: &[(f64, f64)], w: f64, color: &str) {
    for (t, v) in pts {
        let (x0, x1) = (x.scale(*t), x.scale(t + w));
        let row = y.scale(*v);
        let _ = writeln!(
            out,
            r#"<rect x="{x0:.1}" y="{row:.1}" width="{:.1}" height="{:.1}" fill="{color}" fill-opacity="0.7"/>"#,
            (x1 - x0 - 0.5).max(0.5),
            (y.bottom - row).max(0.0)
        );
    }
}

/// Polylines through `pts`. A gap much wider than the series' usual step is a pause (no
/// data): the line breaks there instead of drawing a slope across it.
fn draw_lines(out: &mut String, x: &XAxis, y: &YAxis, pts: &[(f64, f64)], color: &str) {
    let mut steps: Vec<f64> = pts
        .windows(2)
        .map(|w| w[1].0 - w[0].0)
        .filter(|d| *d > 0.0)
        .collect();
    steps.sort_by(f64::total_cmp);
    let step = steps.get(steps.len() / 2).copied().unwrap_or(f64::INFINITY);
    for run in pts.chunk_by(|a, b| b.0 - a.0 <= 3.0 * step) {
        let mut line = String::new();
        for (t, v) in run {
            let _ = write!(line, "{:.1},{:.1} ", x.scale(*t), y.scale(*v));
        }
        let _ = writeln!(
            out,
            r#"<polyline fill="none" stroke="{color}" stroke-width="1.6" points="{}"/>"#,
            line.trim_end()
        );
    }
}

/// A legend swatch and name right of the panels, at row `ly`.
fn legend_entry(out: &mut String, name: &str, color: &str, ly: f64) {
    let lx = LEFT + (WIDTH - LEFT - RIGHT) + 12.0;
    let _ = writeln!(
        out,
        r#"<rect x="{lx:.1}" y="{:.1}" width="14" height="4" fill="{color}"/><text x="{:.1}" y="{ly:.1}">{}</text>"#,
        ly - 6.0,
        lx + 20.0,
        esc(name)
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_well_formed_svg() {
        let panel = Panel {
            title: "latency".into(),
            y_label: "ms".into(),
            log_y: true,
            series: vec![Series {
                name: "p99 <x>".into(),
                points: vec![(0.0, 0.5), (1.0, 2.0), (2.0, 0.0)],
                bar_width: None,
            }],
        };
        let empty = Panel {
            title: "none".into(),
            y_label: "".into(),
            log_y: false,
            series: vec![],
        };
        let svg = render(
            "t",
            &[panel, empty],
            &[Marker {
                x: 1.0,
                label: "go".into(),
            }],
        );
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>\n"));
        assert!(svg.contains("p99 &lt;x&gt;"));
        assert!(!svg.contains(">none<"));
        assert_eq!(svg.matches("<polyline").count(), 1);
    }
}
