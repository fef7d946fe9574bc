//! The steps chained through one state file, as a pipeline runs them.

use serde_json::{json, Value};
use switchyard_tests::steps::{run, step};
use switchyard_tests::{HealthServer, Moto};

use crate::aws_cli::{self, w};

#[test]
fn verify_health_then_shift_weight_through_one_state_file() {
    let moto = Moto::start().unwrap();
    let zone = aws_cli::create_zone(&moto, "example.com");
    let name = "app.example.com";
    aws_cli::create_weighted(
        &moto,
        &zone,
        name,
        &[("blue", 100, "10.0.0.1"), ("green", 0, "10.0.0.2")],
        1,
    );
    let green = HealthServer::start(None, None).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("switchyard-state.json");
    std::fs::write(
        &state,
        json!({"schema": "switchyard/state/v1", "stacks": {
            "blue": {"role": "active", "version": "1"},
            "green": {"role": "standby", "version": "2", "endpoints": [green.addr().to_string()]}}})
        .to_string(),
    )
    .unwrap();
    let mut env = moto.env();
    env.push(("SWITCHYARD_STATE".into(), state.display().to_string()));
    env.push(("SWITCHYARD_ZONE_ID".into(), zone.clone()));
    env.push(("SWITCHYARD_RECORD_NAME".into(), name.into()));

    // Before any verdict, shift-weight refuses (safety rule 1).
    let out = run(step("shift-weight", &env).args(["--to", "green", "--weight", "10"]));
    assert_eq!(out.code, 5, "{}", out.stderr);

    let out = run(step("verify-health", &env).args(["--stack", "standby", "--interval", "50ms"]));
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);

    let out =
        run(step("shift-weight", &env)
            .args(["--to", "green", "--steps", "10,100", "--settle", "0s"]));
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    assert_eq!(
        aws_cli::weights(&moto, &zone, name),
        w(&[("blue", 0), ("green", 100)])
    );

    let doc: Value = serde_json::from_slice(&std::fs::read(&state).unwrap()).unwrap();
    assert_eq!(doc["stacks"]["green"]["role"], "active");
    assert_eq!(
        doc["stacks"]["green"]["version"], "2",
        "fields of other steps are kept"
    );
    assert_eq!(doc["stacks"]["blue"]["role"], "standby");
    assert_eq!(doc["health"]["green"]["status"], "healthy");
    let steps: Vec<&str> = doc["journal"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["step"].as_str().unwrap())
        .collect();
    assert_eq!(steps.first(), Some(&"verify-health"));
    assert_eq!(steps.last(), Some(&"shift-weight"));
}
