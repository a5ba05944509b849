//! The Grafana dashboard and the Prometheus alert rules in deploy/ only name metrics that the
//! server registers: a renamed metric fails here instead of leaving a blank panel or a silent alert.

use std::collections::BTreeSet;

fn metric_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let bytes = text.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let rest = &text[i..];
        if rest.starts_with("ws_") || rest.starts_with("http_requests") {
            let end = rest
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(rest.len());
            let name = &rest[..end];
            let base = ["_bucket", "_count", "_sum"]
                .iter()
                .find_map(|suffix| name.strip_suffix(suffix))
                .unwrap_or(name);
            names.insert(base.to_owned());
            i += end;
        } else {
            i += rest.chars().next().map_or(1, char::len_utf8);
        }
    }
    names
}

fn registered() -> String {
    let root = env!("CARGO_MANIFEST_DIR");
    ["actors/src/metrics.rs", "src/metrics.rs"]
        .iter()
        .map(|path| std::fs::read_to_string(format!("{root}/{path}")).expect("read metrics source"))
        .collect()
}

/// Every metric named in the dashboard and the alert rules is registered by the server.
#[test]
fn dashboard_and_alerts_name_registered_metrics() {
    let root = env!("CARGO_MANIFEST_DIR");
    let source = registered();
    for asset in [
        "deploy/grafana/dashboards/websocket-service.json",
        "deploy/prometheus/alerts.yml",
    ] {
        let text = std::fs::read_to_string(format!("{root}/{asset}")).expect("read asset");
        let names = metric_names(&text);
        assert!(
            names.len() >= 3,
            "{asset}: too few metrics found: {names:?}"
        );
        for name in names {
            assert!(
                source.contains(&format!("\"{name}\"")),
                "{asset} uses unknown metric {name}"
            );
        }
    }
}
