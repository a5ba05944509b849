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
    let mut x_max = f64::NEG_INFINITY;
    for p in &panels {
        for s in &p.series {
            for &(x, _) in &s.points {
                x_max = x_max.max(x + s.bar_width.unwrap_or(0.0));
            }
        }
    }
    for m in markers {
        x_max = x_max.max(m.x);
    }
    let x_min = 0.0; // the time axis starts at the run's start
    if x_max <= x_min {
        x_max = x_min + 1.0;
    }
    let height = TOP + panels.len() as f64 * (PANEL_H + GAP) + 20.0;
    let plot_w = WIDTH - LEFT - RIGHT;
    let sx = |x: f64| LEFT + (x - x_min) / (x_max - x_min) * plot_w;
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
        let bottom = top + PANEL_H;
        let values = panel
            .series
            .iter()
            .flat_map(|s| s.points.iter().map(|p| p.1))
            .filter(|v| v.is_finite() && (!panel.log_y || *v > 0.0));
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
        let sy = |v: f64| {
            let f = if panel.log_y {
                (v.log10() - lo.log10()) / (hi.log10() - lo.log10())
            } else {
                (v - lo) / (hi - lo)
            };
            bottom - f.clamp(0.0, 1.0) * PANEL_H
        };
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
        // y ticks
        let mut ticks = Vec::new();
        if panel.log_y {
            let mut t = lo;
            while t <= hi * 1.0001 {
                ticks.push(t);
                t *= 10.0;
            }
        } else {
            let s = step(hi - lo, 5.0);
            let mut t = lo;
            while t <= hi + s * 0.001 {
                ticks.push(t);
                t += s;
            }
        }
        for t in ticks {
            let y = sy(t);
            let _ = writeln!(
                out,
                r##"<line x1="{LEFT}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="#ddd"/><text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"##,
                LEFT + plot_w,
                LEFT - 6.0,
                y + 4.0,
                fmt_num(t)
            );
        }
        let _ = writeln!(
            out,
            r#"<text transform="translate(18,{:.1}) rotate(-90)" text-anchor="middle">{}</text>"#,
            top + PANEL_H / 2.0,
            esc(&panel.y_label)
        );
        // x ticks
        let s = step(x_max - x_min, 10.0);
        let mut t = (x_min / s).ceil() * s;
        while t <= x_max + s * 0.001 {
            let x = sx(t);
            let _ = writeln!(
                out,
                r##"<line x1="{x:.1}" y1="{bottom}" x2="{x:.1}" y2="{:.1}" stroke="#444"/><text x="{x:.1}" y="{:.1}" text-anchor="middle">{}</text>"##,
                bottom + 5.0,
                bottom + 18.0,
                fmt_num(t)
            );
            t += s;
        }
        let _ = writeln!(
            out,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">seconds since start</text>"#,
            LEFT + plot_w / 2.0,
            bottom + 34.0
        );
        for (mi, m) in markers.iter().enumerate() {
            let x = sx(m.x);
            let _ = writeln!(
                out,
                r##"<line x1="{x:.1}" y1="{top}" x2="{x:.1}" y2="{bottom}" stroke="#888" stroke-dasharray="4,3"/>"##
            );
            if pi == 0 {
                // Staggered so that close markers stay readable; right-aligned near the edge.
                let (lx, anchor) = if x > LEFT + plot_w * 0.85 {
                    (x - 3.0, "end")
                } else {
                    (x + 3.0, "start")
                };
                let _ = writeln!(
                    out,
                    r##"<text x="{lx:.1}" y="{:.1}" font-size="10" fill="#555" text-anchor="{anchor}">{}</text>"##,
                    top + 12.0 + (mi % 3) as f64 * 11.0,
                    esc(&m.label)
                );
            }
        }
        for (si, series) in panel.series.iter().enumerate() {
            let color = COLORS[si % COLORS.len()];
            let pts: Vec<(f64, f64)> = series
                .points
                .iter()
                .copied()
                .filter(|(_, v)| v.is_finite() && (!panel.log_y || *v > 0.0))
                .collect();
            if let Some(w) = series.bar_width {
                for (x, v) in &pts {
                    let (x0, x1) = (sx(*x), sx(x + w));
                    let y = sy(*v);
                    let _ = writeln!(
                        out,
                        r#"<rect x="{x0:.1}" y="{y:.1}" width="{:.1}" height="{:.1}" fill="{color}" fill-opacity="0.7"/>"#,
                        (x1 - x0 - 0.5).max(0.5),
                        (bottom - y).max(0.0)
                    );
                }
            } else if !pts.is_empty() {
                // A gap much wider than the series' usual step is a pause (no data): the line
                // breaks there instead of drawing a slope across it.
                let mut steps: Vec<f64> = pts
                    .windows(2)
                    .map(|w| w[1].0 - w[0].0)
                    .filter(|d| *d > 0.0)
                    .collect();
                steps.sort_by(f64::total_cmp);
                let step = steps.get(steps.len() / 2).copied().unwrap_or(f64::INFINITY);
                for run in pts.chunk_by(|a, b| b.0 - a.0 <= 3.0 * step) {
                    let mut line = String::new();
                    for (x, v) in run {
                        let _ = write!(line, "{:.1},{:.1} ", sx(*x), sy(*v));
                    }
                    let _ = writeln!(
                        out,
                        r#"<polyline fill="none" stroke="{color}" stroke-width="1.6" points="{}"/>"#,
                        line.trim_end()
                    );
                }
            }
            let ly = top + 14.0 + si as f64 * 18.0;
            let lx = LEFT + plot_w + 12.0;
            let _ = writeln!(
                out,
                r#"<rect x="{lx:.1}" y="{:.1}" width="14" height="4" fill="{color}"/><text x="{:.1}" y="{ly:.1}">{}</text>"#,
                ly - 6.0,
                lx + 20.0,
                esc(&series.name)
            );
        }
    }
    out.push_str("</svg>\n");
    out
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
