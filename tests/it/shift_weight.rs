//! shift-weight against moto's server, cross-checked with the aws CLI.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use switchyard_tests::aws_cli::{self, w};
use switchyard_tests::health_server::OnRequest;
use switchyard_tests::steps::{run, step};
use switchyard_tests::{HealthServer, Moto};

use crate::fixture::{journal_actions, with_state, World, FAST_GATE, NAME};

fn route(doc: &Value) -> &Value {
    doc["traffic"]
        .as_object()
        .and_then(|t| t.values().next())
        .expect("one route in the state")
}

#[test]
fn canary_through_10_50_100_is_seen_by_the_aws_cli_after_every_step_and_rolls_back() {
    let world = Arc::new(World::blue_green());
    // At every gate probe (one per step, plus one before any change) the real
    // aws CLI records what Route53 holds at that moment.
    let seen: Arc<Mutex<Vec<BTreeMap<String, u64>>>> = Arc::default();
    let (record, w2) = (seen.clone(), world.clone());
    let hook: OnRequest = Arc::new(move |_| record.lock().unwrap().push(w2.weights()));
    let gate = HealthServer::start(None, Some(hook)).unwrap();

    let mut args = vec!["--to", "green", "--steps", "10,50,100", "--gate-url"];
    let url = gate.url();
    args.push(&url);
    args.extend(FAST_GATE);
    let out = world.shift(&args);
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    assert_eq!(
        *seen.lock().unwrap(),
        vec![
            w(&[("blue", 100), ("green", 0)]),
            w(&[("blue", 90), ("green", 10)]),
            w(&[("blue", 50), ("green", 50)]),
            w(&[("blue", 0), ("green", 100)]),
        ]
    );
    assert!(
        out.stdout
            .contains("blue=0,green=100 (was blue=100,green=0) in 3 step(s)"),
        "{}",
        out.stdout
    );

    let doc = world.doc();
    assert_eq!(doc["schema"], "switchyard/state/v1");
    let r = route(&doc);
    assert_eq!(r["weights"], json!({"blue": 0, "green": 100}));
    assert_eq!(r["before"], json!({"blue": 100, "green": 0}));
    assert_eq!(r["shift"]["status"], "completed");
    assert_eq!(r["shift"]["steps_done"], 3);
    assert_eq!(doc["stacks"]["green"]["role"], "active");
    assert_eq!(doc["stacks"]["blue"]["role"], "standby");
    assert_eq!(
        journal_actions(&doc),
        [
            "shift-started",
            "gate",
            "weights-submitted",
            "weights-verified",
            "gate",
            "weights-submitted",
            "weights-verified",
            "gate",
            "weights-submitted",
            "weights-verified",
            "gate",
            "shift-completed"
        ]
    );
    let submitted: Vec<&Value> = doc["journal"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == "weights-submitted")
        .collect();
    assert_eq!(
        submitted[1]["changes"][0]["before"],
        json!({"blue": 90, "green": 10})
    );
    assert_eq!(
        submitted[1]["changes"][0]["after"],
        json!({"blue": 50, "green": 50})
    );
    assert!(
        !aws_cli::lock_exists(&world.moto, &world.zone, NAME),
        "lease released"
    );

    // After promotion, --rollback still restores exactly the weights from before.
    let out = world.shift(&["--rollback"]);
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    assert_eq!(world.weights(), w(&[("blue", 100), ("green", 0)]));
    let doc = world.doc();
    assert_eq!(route(&doc)["shift"]["status"], "rolled_back");
    assert_eq!(doc["stacks"]["blue"]["role"], "active");
    assert_eq!(journal_actions(&doc).last().unwrap(), "rollback-completed");
    assert!(!aws_cli::lock_exists(&world.moto, &world.zone, NAME));
}

#[test]
fn a_gate_that_starts_failing_mid_shift_restores_the_original_weights_and_exits_4() {
    let world = World::blue_green();
    // Healthy for the first gate and step 10; 500 from step 50 on.
    let gate = HealthServer::start(Some(2), None).unwrap();
    let url = gate.url();
    let mut args = vec!["--to", "green", "--steps", "10,50,100", "--gate-url", &url];
    args.extend(FAST_GATE);
    let out = world.shift(&args);
    assert_eq!(out.code, 4, "{}{}", out.stdout, out.stderr);
    assert!(
        out.stderr.contains("gate failed at step 2"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains("rolled back to blue=100,green=0"),
        "{}",
        out.stderr
    );
    assert_eq!(world.weights(), w(&[("blue", 100), ("green", 0)]));
    let doc = world.doc();
    let r = route(&doc);
    assert_eq!(r["weights"], json!({"blue": 100, "green": 0}));
    assert_eq!(r["shift"]["status"], "rolled_back");
    let log = journal_actions(&doc);
    assert_eq!(
        &log[log.len() - 4..],
        [
            "gate",
            "weights-submitted",
            "weights-verified",
            "rollback-completed"
        ]
    );
    assert!(
        !aws_cli::lock_exists(&world.moto, &world.zone, NAME),
        "lease released"
    );
}

#[test]
fn bad_input_exits_2_naming_the_problem_and_changes_nothing() {
    let world = World::blue_green();
    aws_cli::change(
        &world.moto,
        &world.zone,
        &json!([{"Action": "CREATE", "ResourceRecordSet": {"Name": "simple.example.com", "Type": "A", "TTL": 60,
            "ResourceRecords": [{"Value": "10.0.0.9"}]}}]),
    );
    let future = world.dir.path().join("future.json");
    std::fs::write(
        &future,
        r#"{"schema": "switchyard/state/v2", "journal": []}"#,
    )
    .unwrap();
    let broken = world.dir.path().join("broken.json");
    std::fs::write(&broken, "{\"schema\": ").unwrap();
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec!["--to", "red", "--weight", "10", "--force"],
            "\"red\" is not a member of the group; members are blue, green",
        ),
        (
            vec!["--to", "green", "--steps", "50,10", "--force"],
            "steps must be strictly ascending",
        ),
        (
            vec!["--to", "green", "--steps", "10,120", "--force"],
            "step 120 is outside 0-100",
        ),
        (
            vec!["--weights", "blue=60,green=50", "--force"],
            "weights must sum to 100; these sum to 110",
        ),
        (
            vec!["--weights", "blue=50,red=50", "--force"],
            "\"red\" is not a member",
        ),
        (
            vec!["--to", "green", "--weight", "10", "--pause", "soon"],
            "invalid value 'soon'",
        ),
        (
            vec![
                "--to",
                "green",
                "--weight",
                "10",
                "--state",
                future.to_str().unwrap(),
            ],
            "is schema switchyard/state/v2; this build reads switchyard/state/v1",
        ),
        (
            vec![
                "--to",
                "green",
                "--weight",
                "10",
                "--state",
                broken.to_str().unwrap(),
            ],
            "is not valid JSON",
        ),
        (vec!["--rollback"], "nothing to roll back"),
    ];
    for (args, message) in cases {
        let out = world.shift(&args);
        assert_eq!(out.code, 2, "{args:?}: {}", out.stderr);
        assert!(
            out.stderr.contains(message),
            "{args:?}: expected {message:?} in {}",
            out.stderr
        );
    }
    let mut cmd = step("shift-weight", &world.moto.env());
    cmd.args([
        "--zone-id",
        &world.zone,
        "--record-name",
        "simple.example.com",
        "--to",
        "x",
        "--weight",
        "5",
    ]);
    let out = run(&mut cmd);
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(out.stderr.contains("uses simple routing"), "{}", out.stderr);
    let mut cmd = step("shift-weight", &world.moto.env());
    cmd.args([
        "--zone-id",
        &world.zone,
        "--record-name",
        "none.example.com",
        "--to",
        "x",
        "--weight",
        "5",
    ]);
    let out = run(&mut cmd);
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(out.stderr.contains("no record group"), "{}", out.stderr);

    assert_eq!(world.weights(), w(&[("blue", 100), ("green", 0)]));
    assert!(!aws_cli::lock_exists(&world.moto, &world.zone, NAME));
    assert!(
        !world.state().exists(),
        "no state written for refused input"
    );
}

#[test]
fn a_held_lease_exits_5_and_an_expired_one_is_taken_over() {
    let world = World::blue_green();
    let lease = |expires: i64| {
        json!({"Name": format!("_switchyard-lock.{NAME}"), "Type": "TXT", "TTL": 60,
            "ResourceRecords": [{"Value": format!("\"switchyard-lease=1;token=t1;expires={expires};holder=other@ci\"")}]})
    };
    let far = 4_102_444_800; // 2100-01-01
    aws_cli::change(
        &world.moto,
        &world.zone,
        &json!([{"Action": "CREATE", "ResourceRecordSet": lease(far)}]),
    );
    let out = world.shift(&["--to", "green", "--weight", "50", "--force"]);
    assert_eq!(out.code, 5, "{}", out.stderr);
    assert!(
        out.stderr.contains("locked by other@ci until 2100-01-01"),
        "{}",
        out.stderr
    );
    assert_eq!(world.weights(), w(&[("blue", 100), ("green", 0)]));

    aws_cli::change(
        &world.moto,
        &world.zone,
        &json!([{"Action": "DELETE", "ResourceRecordSet": lease(far)}, {"Action": "CREATE", "ResourceRecordSet": lease(1000)}]),
    );
    let out = world.shift(&["--to", "green", "--weight", "50", "--force"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(out.stderr.contains("expired"), "{}", out.stderr);
    assert_eq!(world.weights(), w(&[("blue", 50), ("green", 50)]));
    assert!(
        !aws_cli::lock_exists(&world.moto, &world.zone, NAME),
        "released after the shift"
    );
}

#[test]
fn traffic_goes_only_to_a_verified_stack() {
    let world = World::blue_green();
    let out = world.shift(&["--to", "green", "--weight", "10"]);
    assert_eq!(out.code, 5, "{}", out.stderr);
    assert!(
        out.stderr.contains("refusing to move traffic to green"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains("has no health verdict"),
        "{}",
        out.stderr
    );

    let unhealthy = json!({"schema": "switchyard/state/v1",
        "health": {"green": {"status": "unhealthy", "at": chrono_now(), "summary": "3/4 endpoints failing"}}});
    std::fs::write(world.state(), unhealthy.to_string()).unwrap();
    let out = world.shift(&["--to", "green", "--weight", "10"]);
    assert_eq!(out.code, 5, "{}", out.stderr);
    assert!(
        out.stderr.contains("its last verdict is unhealthy"),
        "{}",
        out.stderr
    );
    assert_eq!(world.weights(), w(&[("blue", 100), ("green", 0)]));

    let healthy = json!({"schema": "switchyard/state/v1", "future_section": {"kept": true},
        "health": {"green": {"status": "healthy", "at": chrono_now(), "summary": "4/4 endpoints healthy"}}});
    std::fs::write(world.state(), healthy.to_string()).unwrap();
    let out = world.shift(&["--to", "green", "--weight", "10"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(world.weights(), w(&[("blue", 90), ("green", 10)]));
    assert_eq!(
        world.doc()["future_section"]["kept"],
        true,
        "unknown fields survive"
    );
}

fn chrono_now() -> String {
    chrono::Utc::now().to_rfc3339()
}

#[test]
fn dry_run_prints_every_change_and_changes_nothing() {
    let world = World::blue_green();
    let out = world.shift(&[
        "--to",
        "green",
        "--steps",
        "10,50,100",
        "--pause",
        "5m",
        "--force",
        "--dry-run",
    ]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let text = out.stdout.replace(&world.zone, "ZONE");
    insta::assert_snapshot!("dry-run-plan", text);
    assert_eq!(world.weights(), w(&[("blue", 100), ("green", 0)]));
    assert!(!aws_cli::lock_exists(&world.moto, &world.zone, NAME));
    assert!(!world.state().exists());
}

#[test]
fn explicit_weights_across_regions_and_clouds_with_json_and_github_outputs() {
    let moto = Moto::start().unwrap();
    let zone = aws_cli::create_zone(&moto, "example.org");
    let name = "api.example.org";
    aws_cli::create_weighted(
        &moto,
        &zone,
        name,
        &[
            ("us-east", 100, "10.1.0.1"),
            ("us-west", 0, "10.2.0.1"),
            ("do", 0, "10.3.0.1"),
        ],
        60,
    );
    let dir = tempfile::tempdir().unwrap();
    let github_output = dir.path().join("github-output");
    let summary = dir.path().join("summary.md");
    let mut env = with_state(moto.env(), &dir.path().join("s.json"));
    env.push(("GITHUB_OUTPUT".into(), github_output.display().to_string()));
    env.push(("GITHUB_STEP_SUMMARY".into(), summary.display().to_string()));
    let mut cmd = step("shift-weight", &env);
    cmd.args([
        "--zone-id",
        &zone,
        "--record-name",
        name,
        "--weights",
        "us-east=50,us-west=30,do=20",
    ]);
    cmd.args(["--force", "--output", "json"]);
    let out = run(&mut cmd);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let result: Value = serde_json::from_str(&out.stdout).expect("one JSON object on stdout");
    assert_eq!(
        result["weights"],
        json!({"do": 20, "us-east": 50, "us-west": 30})
    );
    assert_eq!(
        result["before"],
        json!({"do": 0, "us-east": 100, "us-west": 0})
    );
    assert_eq!(
        aws_cli::weights(&moto, &zone, name),
        w(&[("do", 20), ("us-east", 50), ("us-west", 30)])
    );
    let outputs = std::fs::read_to_string(&github_output).unwrap();
    assert!(
        outputs.contains("weights=do=20,us-east=50,us-west=30\n"),
        "{outputs}"
    );
    assert!(outputs.contains("mode=shift\n"), "{outputs}");
    assert!(std::fs::read_to_string(&summary)
        .unwrap()
        .contains("| now | do=20,us-east=50,us-west=30 |"));
}

#[test]
fn an_interrupted_shift_records_where_it_stopped_releases_the_lease_and_can_continue() {
    let world = World::blue_green();
    let mut cmd = step("shift-weight", &world.env());
    cmd.args([
        "--zone-id",
        &world.zone,
        "--record-name",
        NAME,
        "--settle",
        "0s",
        "--force",
    ]);
    cmd.args(["--to", "green", "--steps", "10,50,100", "--pause", "60s"]);
    cmd.stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let child = cmd.spawn().unwrap();
    // Wait until the first step is verified, then interrupt during the pause.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let done = std::fs::read(world.state())
            .ok()
            .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
            .is_some_and(|d| route(&d)["shift"]["steps_done"] == 1);
        if done {
            break;
        }
        assert!(Instant::now() < deadline, "the first step never completed");
        std::thread::sleep(Duration::from_millis(50));
    }
    let status = std::process::Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let out = child.wait_with_output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(130),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(world.weights(), w(&[("blue", 90), ("green", 10)]));
    let doc = world.doc();
    assert_eq!(route(&doc)["shift"]["status"], "interrupted");
    assert_eq!(route(&doc)["shift"]["steps_done"], 1);
    assert!(
        !aws_cli::lock_exists(&world.moto, &world.zone, NAME),
        "lease released on interrupt"
    );

    // Run again: it continues from where it stopped (the step it had reached
    // is re-checked, none is undone), and keeps the original rollback target.
    let out = world.shift(&["--force", "--to", "green", "--steps", "10,50,100"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stderr.contains("continuing a shift that stopped"),
        "{}",
        out.stderr
    );
    assert!(
        out.stdout.contains("step 1: blue=90,green=10\n"),
        "no change at step 1: {}",
        out.stdout
    );
    assert_eq!(world.weights(), w(&[("blue", 0), ("green", 100)]));
    assert_eq!(
        route(&world.doc())["before"],
        json!({"blue": 100, "green": 0})
    );
}
