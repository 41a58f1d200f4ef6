//! The Grafana dashboard (`deploy/grafana/dashboards/larder.json`) asks only for
//! metrics larder records: a renamed metric would leave a panel silently empty.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use larder::core::metrics as m;

#[test]
fn every_panel_queries_a_metric_larder_records() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../deploy/grafana/dashboards/larder.json"
    );
    let dashboard: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let known = [
        m::REDIS_OPS,
        m::REDIS_OP_DURATION,
        m::BREAKER_TRANSITIONS,
        m::BREAKER_STATE,
        m::CACHE_REQUESTS,
        m::CACHE_ERRORS,
        m::DEGRADED_OPERATIONS,
        m::RATELIMIT_DECISIONS,
        m::SESSION_OPS,
        m::JOBS,
        m::JOB_RUN,
        m::JOB_AGE_AT_START,
        m::JOBS_QUEUED,
        m::JOBS_IN_STATE,
    ];
    let panels = dashboard["panels"].as_array().unwrap();
    assert!(panels.len() >= 10);
    let mut used = std::collections::BTreeSet::new();
    for panel in panels {
        let targets = panel["targets"].as_array().unwrap();
        assert!(!targets.is_empty(), "{}", panel["title"]);
        for target in targets {
            let expr = target["expr"].as_str().unwrap();
            let names: Vec<&str> = expr
                .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .filter(|w| w.starts_with("larder_"))
                .collect();
            assert!(!names.is_empty(), "{expr}");
            for name in names {
                let base = name.strip_suffix("_bucket").unwrap_or(name);
                assert!(
                    known.contains(&base),
                    "{name} in {expr} is not a larder metric"
                );
                used.insert(base);
            }
        }
    }
    // Every metric but the breaker's transition count (its state is shown) has a panel.
    for name in known {
        assert!(
            used.contains(name) || name == m::BREAKER_TRANSITIONS,
            "{name} has no panel"
        );
    }
}
