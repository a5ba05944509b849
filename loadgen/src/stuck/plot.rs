//! The SVG plot of a stuck-reader report: server RSS, flood and live messages per second, and
//! the live user's latency, with the start of each flood as a marker.

use super::report::StuckReport;
use crate::svg;

/// Renders `r` as an SVG document.
pub(super) fn plot(r: &StuckReport) -> String {
    let line = |name: &str, points: &[(f64, f64)]| svg::Series {
        name: name.to_owned(),
        points: points.to_vec(),
        bar_width: None,
    };
    let panels = [
        svg::Panel {
            title: "Server RSS".into(),
            y_label: "MiB".into(),
            log_y: false,
            series: vec![line("VmRSS", &r.series.server_rss_mb)],
        },
        svg::Panel {
            title: "Messages per second".into(),
            y_label: "per second (log)".into(),
            log_y: true,
            series: vec![
                line("flood published/s", &r.series.flood_published_per_s),
                line("live delivered/s", &r.series.live_delivered_per_s),
            ],
        },
        svg::Panel {
            title: "Live user: publish → receive latency".into(),
            y_label: "ms (log)".into(),
            log_y: true,
            series: vec![
                line("median per 250 ms", &r.series.live_latency_p50_ms),
                line("max per 250 ms", &r.series.live_latency_max_ms),
            ],
        },
    ];
    // Only the flood starts: the other events are too close together to label.
    let markers: Vec<svg::Marker> = r
        .events
        .iter()
        .filter(|(label, _)| label.ends_with(": flood"))
        .map(|(label, x)| svg::Marker {
            x: *x,
            label: label.clone(),
        })
        .collect();
    svg::render(&r.label, &panels, &markers)
}
