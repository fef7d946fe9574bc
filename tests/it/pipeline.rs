//! The steps chained through one state file, as a pipeline runs them.

use serde_json::json;
use switchyard_tests::aws_cli::w;
use switchyard_tests::steps::{run, step};
use switchyard_tests::HealthServer;

use crate::fixture::{World, NAME};

#[test]
fn verify_health_then_shift_weight_through_one_state_file() {
    let world = World::blue_green();
    let green = HealthServer::start(None, None).unwrap();
    std::fs::write(
        world.state(),
        json!({"schema": "switchyard/state/v1", "stacks": {
            "blue": {"role": "active", "version": "1"},
            "green": {"role": "standby", "version": "2", "endpoints": [green.addr().to_string()]}}})
        .to_string(),
    )
    .unwrap();
    let mut env = world.env();
    env.push(("SWITCHYARD_ZONE_ID".into(), world.zone.clone()));
    env.push(("SWITCHYARD_RECORD_NAME".into(), NAME.into()));

    // Before any verdict, shift-weight refuses (safety rule 1).
    let out = run(step("shift-weight", &env).args(["--to", "green", "--weight", "10"]));
    assert_eq!(out.code, 5, "{}", out.stderr);

    let out = run(step("verify-health", &env).args(["--stack", "standby", "--interval", "50ms"]));
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);

    let out =
        run(step("shift-weight", &env)
            .args(["--to", "green", "--steps", "10,100", "--settle", "0s"]));
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    assert_eq!(world.weights(), w(&[("blue", 0), ("green", 100)]));

    let doc = world.doc();
    assert_eq!(doc["stacks"]["green"]["role"], "active");
    assert_eq!(
        doc["stacks"]["green"]["version"], "2",
        "fields of other steps are kept"
    );
    assert_eq!(doc["stacks"]["blue"]["role"], "standby");
    assert_eq!(doc["health"]["green"]["status"], "healthy");
    let steps = crate::fixture::journal_steps(&doc);
    assert_eq!(steps.first(), Some(&"verify-health"));
    assert_eq!(steps.last(), Some(&"shift-weight"));
}
