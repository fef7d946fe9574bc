//! Canary analysis (issue #17) against moto: the example analysis
//! file reads the canary's error rate through GetMetricData while
//! shift-weight holds each step; the test puts the data with the aws CLI.

use serde_json::{json, Value};
use switchyard_tests::aws_cli::{self, w};

use crate::fixture::{json, World};

/// The example, as the docs ship it.
const EXAMPLE: &str = include_str!("../../docs/examples/canary-analysis.json");

/// A blue/green world whose green stack was verified, with the example
/// file beside the state and, when given, green's error rate in CloudWatch.
fn canary(error_rate: Option<f64>) -> (World, String) {
    let world = World::blue_green();
    let verified = json!({"schema": "switchyard/state/v1",
        "health": {"green": {"status": "healthy", "at": chrono::Utc::now().to_rfc3339(), "summary": "4/4 endpoints healthy"}}});
    std::fs::write(world.state(), verified.to_string()).unwrap();
    let file = world.path("analysis.json");
    std::fs::write(&file, EXAMPLE).unwrap();
    if let Some(rate) = error_rate {
        // Half a minute ago, as a service's last minute of requests would
        // be: moto (like CloudWatch, which also lags) returns no point of
        // the current second, and a quick step would ask within it.
        let at = (chrono::Utc::now() - chrono::Duration::seconds(30)).to_rfc3339();
        aws_cli::aws(
            &world.moto,
            &[
                "cloudwatch",
                "put-metric-data",
                "--namespace",
                "App",
                "--metric-name",
                "ErrorRate",
                "--dimensions",
                "Stack=green",
                "--value",
                &rate.to_string(),
                "--timestamp",
                &at,
            ],
        );
    }
    (world, file.display().to_string())
}

fn analysis_entries(doc: &Value) -> Vec<&Value> {
    doc["journal"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == "analysis")
        .collect()
}

#[test]
fn an_error_rate_of_one_half_rolls_a_10_50_canary_back_with_the_measurement_in_the_journal() {
    let (world, file) = canary(Some(0.5));
    let out = world.shift(&[
        "--to",
        "green",
        "--steps",
        "10,50",
        "--analysis",
        &file,
        "--output",
        "json",
    ]);
    assert_eq!(out.code, 4, "{}{}", out.stdout, out.stderr);
    assert!(
        out.stderr.contains("analysis failed at step"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr
            .contains("metric error-rate failed: 0.5 does not meet result <= 0.05"),
        "{}",
        out.stderr
    );
    assert_eq!(world.weights(), w(&[("blue", 100), ("green", 0)]));
    let doc = world.doc();
    let failed = analysis_entries(&doc)
        .into_iter()
        .find(|e| e["outcome"] == "failed")
        .expect("the failed analysis is journaled");
    let m = failed["measurements"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["verdict"] == "failed")
        .expect("the failed measurement is in the journal");
    assert_eq!(m["values"][0]["value"], json!(0.5));
    assert!(
        m["query"]
            .as_str()
            .unwrap()
            .starts_with("GetMetricData Average App/ErrorRate {Stack=green}"),
        "{m}"
    );
    assert!(m["at"].is_string());
    let envelope = json(&out);
    assert_eq!(envelope["ok"], false);
    assert_eq!(envelope["exit_code"], 4);
    assert_eq!(envelope["analysis"]["verdict"], "failed");
    assert_eq!(envelope["weights"], json!({"blue": 100, "green": 0}));
    let history = world.switchyard(&["history"]);
    assert_eq!(history.code, 0, "{}", history.stderr);
    assert!(
        history.stdout.contains("why: analysis failed at step"),
        "{}",
        history.stdout
    );
}

#[test]
fn an_error_rate_of_one_percent_lets_the_canary_through() {
    let (world, file) = canary(Some(0.01));
    let out = world.shift(&["--to", "green", "--steps", "10,50", "--analysis", &file]);
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    assert_eq!(world.weights(), w(&[("blue", 50), ("green", 50)]));
    assert!(out.stdout.contains("analysis successful"), "{}", out.stdout);
    let doc = world.doc();
    let last = *analysis_entries(&doc).last().unwrap();
    assert_eq!(last["outcome"], "ok");
    assert_eq!(last["verdict"], "successful");
    assert!(
        !aws_cli::lock_exists(&world.moto, &world.zone, crate::fixture::NAME),
        "lease released"
    );
}

#[test]
fn no_data_at_all_rolls_the_canary_back() {
    let (world, file) = canary(None);
    let out = world.shift(&["--to", "green", "--steps", "10,50", "--analysis", &file]);
    assert_eq!(out.code, 4, "{}{}", out.stdout, out.stderr);
    assert!(
        out.stderr.contains("analysis inconclusive at step"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains("no data (no_data: inconclusive)"),
        "{}",
        out.stderr
    );
    assert_eq!(world.weights(), w(&[("blue", 100), ("green", 0)]));
}

#[test]
fn a_bad_analysis_file_exits_2_with_its_line_before_any_change() {
    let (world, file) = canary(Some(0.01));
    std::fs::write(&file, EXAMPLE.replace("\"500ms\"", "\"soon\"")).unwrap();
    let out = world.shift(&["--to", "green", "--steps", "10,50", "--analysis", &file]);
    assert_eq!(out.code, 2, "{}{}", out.stdout, out.stderr);
    assert!(
        out.stderr
            .contains(", line 13 column 24: \"soon\" is not a duration"),
        "{}",
        out.stderr
    );
    assert_eq!(world.weights(), w(&[("blue", 100), ("green", 0)]));
}
