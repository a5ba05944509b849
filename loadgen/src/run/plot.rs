//! The SVG plot of a run report: latency per interval, messages per second, closes per second
//! (when any) and the server's RSS, with the phase boundaries as markers.

use crate::report::RunReport;
use crate::svg;

/// Renders `r` as an SVG document.
pub(super) fn plot(r: &RunReport) -> String {
    let s = &r.series;
    let mid = s.bin_s / 2.0;
    let pts = |v: &[f64]| -> Vec<(f64, f64)> {
        s.t_s
            .iter()
            .zip(v)
            .filter(|(_, y)| **y > 0.0)
            .map(|(t, y)| (t + mid, *y))
            .collect()
    };
    let line = |name: &str, points: Vec<(f64, f64)>| svg::Series {
        name: name.to_owned(),
        points,
        bar_width: None,
    };
    let mut panels = vec![
        svg::Panel {
            title: "Publish → receive latency per interval".into(),
            y_label: "ms (log)".into(),
            log_y: true,
            series: vec![
                line("p50", pts(&s.p50_ms)),
                line("p99", pts(&s.p99_ms)),
                line("max", pts(&s.max_ms)),
            ],
        },
        svg::Panel {
            title: "Messages per second".into(),
            y_label: "per second".into(),
            log_y: false,
            series: vec![
                line("delivered/s", pts(&s.delivered_per_s)),
                line("published/s", pts(&s.published_per_s)),
            ],
        },
    ];
    if s.closes_per_s.iter().any(|c| *c > 0.0) {
        panels.push(svg::Panel {
            title: "Closes received per second".into(),
            y_label: "closes/s".into(),
            log_y: false,
            series: vec![svg::Series {
                name: "closes/s".into(),
                points: s
                    .t_s
                    .iter()
                    .zip(&s.closes_per_s)
                    .filter(|(_, c)| **c > 0.0)
                    .map(|(t, c)| (*t, *c))
                    .collect(),
                bar_width: Some(s.bin_s),
            }],
        });
    }
    panels.push(svg::Panel {
        title: "Server RSS".into(),
        y_label: "MiB".into(),
        log_y: false,
        series: vec![line("VmRSS", s.server_rss_mb.clone())],
    });
    let markers: Vec<svg::Marker> = r
        .events
        .iter()
        .map(|(label, x)| svg::Marker {
            x: *x,
            label: label.clone(),
        })
        .collect();
    svg::render(&r.label, &panels, &markers)
}
