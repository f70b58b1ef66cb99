//! `docs/grafana-dashboard.json` is valid JSON and every metric it queries is one the
//! gateway exports (a name defined in `src/ops/` or `src/app.rs`).

use std::collections::BTreeSet;

#[test]
fn every_dashboard_metric_is_exported() {
    let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(repo.join("docs/grafana-dashboard.json")).unwrap();
    let dash: serde_json::Value = serde_json::from_str(&text).expect("dashboard is not JSON");
    let mut exprs = Vec::new();
    for p in dash["panels"].as_array().unwrap() {
        for t in p["targets"].as_array().into_iter().flatten() {
            exprs.push(t["expr"].as_str().unwrap().to_string());
        }
    }
    assert!(exprs.len() > 20, "{} queries", exprs.len());
    let names: BTreeSet<String> = exprs
        .iter()
        .flat_map(|e| {
            regex::Regex::new(r"\b(edgegw_[a-z_]+|process_[a-z_]+)")
                .unwrap()
                .find_iter(e)
                .map(|m| m.as_str().to_string())
                .collect::<Vec<_>>()
        })
        .collect();
    let mut sources = std::fs::read_to_string(repo.join("src/app.rs")).unwrap();
    for f in std::fs::read_dir(repo.join("src/ops")).unwrap() {
        sources.push_str(&std::fs::read_to_string(f.unwrap().path()).unwrap());
    }
    for name in &names {
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| name.strip_suffix(s))
            .unwrap_or(name);
        assert!(
            sources.contains(&format!("\"{family}\"")),
            "the dashboard queries {name}, which nothing exports"
        );
    }
}
