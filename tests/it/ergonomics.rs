//! Pipeline ergonomics: hooks, the lock (wait, status, release) and the
//! release history, with the steps run as processes against moto.

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::Value;
use switchyard_tests::aws_cli::{self, w};
use switchyard_tests::steps::{run, step, StepOutput};
use switchyard_tests::HealthServer;

use crate::fixture::{read_json, with_state, World, NAME};

/// The world's environment with the state file `state` in its temp dir; the
/// route and the hooks folder reach the steps through the environment too,
/// as CI sets them.
fn env(world: &World, state: &str) -> Vec<(String, String)> {
    let mut env = with_state(world.moto.env(), &world.path(state));
    env.push(("SWITCHYARD_ZONE_ID".into(), world.zone.clone()));
    env.push(("SWITCHYARD_RECORD_NAME".into(), NAME.into()));
    env.push((
        "SWITCHYARD_HOOKS_DIR".into(),
        world.hooks().display().to_string(),
    ));
    env
}

fn shift(world: &World, state: &str, args: &[&str]) -> StepOutput {
    run(step("shift-weight", &env(world, state))
        .args(["--settle", "0s"])
        .args(args))
}

fn admin(world: &World, state: &str, args: &[&str]) -> StepOutput {
    run(step("switchyard", &env(world, state)).args(args))
}

fn vars(path: &Path) -> std::collections::BTreeMap<String, String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

#[test]
fn a_failing_pre_hook_stops_shift_weight_before_any_change() {
    let world = World::blue_green();
    world.hook(
        "pre-shift-weight",
        "echo \"change freeze until friday\"; exit 1",
    );
    let out = shift(
        &world,
        "s.json",
        &["--to", "green", "--weight", "50", "--force"],
    );
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(
        out.stderr.contains(
            "hook pre-shift-weight failed with exit code 1; the step stopped before any change"
        ),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains("change freeze until friday"),
        "{}",
        out.stderr
    );
    assert_eq!(world.weights(), w(&[("blue", 100), ("green", 0)]));
    assert!(!aws_cli::lock_exists(&world.moto, &world.zone, NAME));

    // --no-hooks skips it.
    let out = shift(
        &world,
        "s.json",
        &["--to", "green", "--weight", "50", "--force", "--no-hooks"],
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(world.weights(), w(&[("blue", 50), ("green", 50)]));
}

#[test]
fn post_and_on_rollback_hooks_receive_the_documented_variables() {
    let world = World::blue_green();
    let out_dir = world.dir.path().display().to_string();
    world.hook(
        "post-shift-weight",
        &format!("env | grep ^SWITCHYARD_ > {out_dir}/post.env"),
    );
    world.hook(
        "on-rollback",
        &format!("env | grep ^SWITCHYARD_ > {out_dir}/rollback.env"),
    );
    std::fs::write(
        world.dir.path().join("s.json"),
        r#"{"schema": "switchyard/state/v1", "deployment": {"service": "go-auth", "version": "2.4.0"},
            "stacks": {"blue": {"role": "active"}, "green": {"role": "standby"}}}"#,
    )
    .unwrap();
    let healthy = HealthServer::start(None, None).unwrap();
    let url = healthy.url();
    // A pre-hook that writes to the state: its verdict must survive the shift.
    world.hook(
        "pre-shift-weight",
        &format!(
            "{} --no-hooks --stack green --url {url} --state \"$SWITCHYARD_STATE_FILE\" >/dev/null",
            switchyard_tests::steps::bin_dir()
                .join("verify-health")
                .display()
        ),
    );
    let out = shift(
        &world,
        "s.json",
        &[
            "--to",
            "green",
            "--steps",
            "10,100",
            "--gate-url",
            &url,
            "--gate-successes",
            "1",
            "--gate-interval",
            "50ms",
        ],
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    let post = vars(&world.dir.path().join("post.env"));
    for (k, v) in [
        ("SWITCHYARD_HOOK", "post-shift-weight"),
        ("SWITCHYARD_STEP", "shift-weight"),
        ("SWITCHYARD_SERVICE", "go-auth"),
        ("SWITCHYARD_VERSION", "2.4.0"),
        ("SWITCHYARD_ACTIVE_STACK", "blue"),
        ("SWITCHYARD_STANDBY_STACK", "green"),
        ("SWITCHYARD_TARGET", "green"),
        ("SWITCHYARD_BEFORE_WEIGHTS", "blue=100,green=0"),
        ("SWITCHYARD_TARGET_WEIGHTS", "blue=0,green=100"),
        ("SWITCHYARD_WEIGHTS", "blue=0,green=100"),
        ("SWITCHYARD_OUTCOME", "ok"),
        ("SWITCHYARD_DRY_RUN", "0"),
        ("SWITCHYARD_MODE", "shift"),
    ] {
        assert_eq!(post.get(k).map(String::as_str), Some(v), "{k} in {post:?}");
    }
    assert!(post["SWITCHYARD_STATE_FILE"].ends_with("s.json"));
    let doc = read_json(&world.path("s.json"));
    assert_eq!(
        doc["health"]["green"]["status"], "healthy",
        "the pre-hook's verdict is kept: {doc:#}"
    );
    assert!(post["SWITCHYARD_ROUTE"].starts_with("route53:"));
    assert!(!post["SWITCHYARD_ACTOR"].is_empty());
    assert!(
        !world.dir.path().join("rollback.env").exists(),
        "no rollback, no on-rollback hook"
    );

    let failing = HealthServer::start(Some(2), None).unwrap();
    let url = failing.url();
    let out = shift(
        &world,
        "s.json",
        &[
            "--to",
            "blue",
            "--steps",
            "10,50,100",
            "--gate-url",
            &url,
            "--gate-successes",
            "1",
            "--gate-interval",
            "50ms",
        ],
    );
    assert_eq!(out.code, 4, "{}", out.stderr);
    let rollback = vars(&world.dir.path().join("rollback.env"));
    assert_eq!(rollback["SWITCHYARD_HOOK"], "on-rollback");
    assert_eq!(rollback["SWITCHYARD_OUTCOME"], "rolled_back");
    assert_eq!(rollback["SWITCHYARD_WEIGHTS"], "blue=0,green=100");
    assert!(
        rollback["SWITCHYARD_REASON"].contains("gate failed at step 2"),
        "{rollback:?}"
    );
}

#[test]
fn a_hanging_hook_is_stopped_at_its_deadline() {
    let world = World::blue_green();
    world.hook("pre-shift-weight", "sleep 120");
    let started = Instant::now();
    let out = shift(
        &world,
        "s.json",
        &[
            "--to",
            "green",
            "--weight",
            "50",
            "--force",
            "--hook-timeout",
            "1s",
        ],
    );
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(
        out.stderr
            .contains("did not finish within --hook-timeout 1s and was stopped"),
        "{}",
        out.stderr
    );
    assert!(started.elapsed() < Duration::from_secs(20));
    assert_eq!(world.weights(), w(&[("blue", 100), ("green", 0)]));
}

/// Two shifts of the same record to green (50, then 100 after 2 s), started
/// together from two state files (two pipelines), each with `extra`.
fn two_shifts_together(world: &World, extra: &[&str]) -> [std::process::Output; 2] {
    let spawn = |state: &str| {
        let mut cmd = step("shift-weight", &env(world, state));
        cmd.args([
            "--settle", "0s", "--force", "--to", "green", "--steps", "50,100", "--pause", "2s",
        ]);
        cmd.args(["--lock-message", &format!("job {state}")]);
        cmd.args(extra);
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        cmd.spawn().unwrap()
    };
    let (a, b) = (spawn("a.json"), spawn("b.json"));
    [a.wait_with_output().unwrap(), b.wait_with_output().unwrap()]
}

#[test]
fn two_shifts_started_together_one_proceeds_the_other_exits_5() {
    let world = World::blue_green();
    let runs = two_shifts_together(&world, &[]);
    let text = |o: &std::process::Output| String::from_utf8_lossy(&o.stderr).into_owned();
    let mut codes: Vec<Option<i32>> = runs.iter().map(|o| o.status.code()).collect();
    codes.sort_unstable();
    assert_eq!(
        codes,
        [Some(0), Some(5)],
        "{}\n---\n{}",
        text(&runs[0]),
        text(&runs[1])
    );
    let refused = runs.iter().find(|o| o.status.code() == Some(5)).unwrap();
    assert!(
        text(refused).contains("is locked by") && text(refused).contains("job "),
        "{}",
        text(refused)
    );
    assert_eq!(world.weights(), w(&[("blue", 0), ("green", 100)]));
    assert!(!aws_cli::lock_exists(&world.moto, &world.zone, NAME));
}

#[test]
fn two_shifts_started_together_with_lock_wait_both_finish_one_after_the_other() {
    let world = World::blue_green();
    let [a, b] = two_shifts_together(&world, &["--lock-wait", "30s"]);
    let text = |o: &std::process::Output| String::from_utf8_lossy(&o.stderr).into_owned();
    assert_eq!(a.status.code(), Some(0), "{}", text(&a));
    assert_eq!(b.status.code(), Some(0), "{}", text(&b));
    let waited: Vec<String> = [text(&a), text(&b)]
        .into_iter()
        .filter(|t| t.contains("waiting for the lock"))
        .collect();
    assert_eq!(
        waited.len(),
        1,
        "exactly one waited:\n{}\n---\n{}",
        text(&a),
        text(&b)
    );
    assert!(
        waited[0].contains("held by") && waited[0].contains("left of --lock-wait 30s"),
        "{}",
        waited[0]
    );
    assert!(
        waited[0].contains("took the lock after waiting"),
        "{}",
        waited[0]
    );
    assert_eq!(world.weights(), w(&[("blue", 0), ("green", 100)]));
    assert!(!aws_cli::lock_exists(&world.moto, &world.zone, NAME));
}

#[test]
fn lock_status_and_release_free_a_lock_left_by_a_killed_run() {
    let world = World::blue_green();
    let mut cmd = step("shift-weight", &env(&world, "killed.json"));
    cmd.args([
        "--settle",
        "0s",
        "--force",
        "--to",
        "green",
        "--steps",
        "10,100",
        "--pause",
        "60s",
        "--lock-message",
        "release 7",
    ]);
    cmd.stdout(Stdio::null()).stderr(Stdio::null());
    let mut child = cmd.spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while world.weights() != w(&[("blue", 90), ("green", 10)]) {
        assert!(Instant::now() < deadline, "the first step never landed");
        std::thread::sleep(Duration::from_millis(100));
    }
    child.kill().unwrap(); // SIGKILL: no cleanup
    child.wait().unwrap();
    assert!(aws_cli::lock_exists(&world.moto, &world.zone, NAME));

    let out = admin(&world, "other.json", &["lock", "status"]);
    assert_eq!(out.code, 5, "{}{}", out.stdout, out.stderr);
    assert!(
        out.stdout.contains(": held by ") && out.stdout.contains("(release 7)"),
        "{}",
        out.stdout
    );
    let out = shift(
        &world,
        "other.json",
        &["--to", "blue", "--weight", "100", "--force"],
    );
    assert_eq!(out.code, 5, "{}", out.stderr);
    let out = admin(&world, "other.json", &["lock", "release"]);
    assert_eq!(out.code, 5, "{}", out.stderr);
    assert!(out.stderr.contains("pass --force"), "{}", out.stderr);
    let out = admin(&world, "other.json", &["lock", "release", "--force"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(out.stdout.starts_with("released "), "{}", out.stdout);
    let out = admin(
        &world,
        "other.json",
        &["lock", "status", "--output", "json"],
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    let status: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(status["held"], false);
    let out = shift(
        &world,
        "other.json",
        &["--to", "blue", "--weight", "100", "--force"],
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
}

#[test]
fn the_history_of_two_releases_and_a_rollback_matches_the_journal() {
    let world = World::blue_green();
    assert_eq!(
        shift(
            &world,
            "h.json",
            &["--to", "green", "--steps", "10,100", "--force"]
        )
        .code,
        0
    );
    assert_eq!(
        shift(
            &world,
            "h.json",
            &["--to", "blue", "--steps", "50,100", "--force"]
        )
        .code,
        0
    );
    assert_eq!(shift(&world, "h.json", &["--rollback"]).code, 0);
    assert_eq!(world.weights(), w(&[("blue", 0), ("green", 100)]));

    let out = admin(&world, "h.json", &["history"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let rows: Vec<&str> = out
        .stdout
        .lines()
        .filter(|l| l.starts_with(char::is_numeric))
        .collect();
    assert_eq!(rows.len(), 3, "{}", out.stdout);
    assert!(
        rows[0].contains("shift") && rows[0].contains("green") && rows[0].contains("completed"),
        "{}",
        rows[0]
    );
    assert!(
        rows[1].contains("blue=0,green=100") && rows[1].contains("blue=100,green=0"),
        "{}",
        rows[1]
    );
    assert!(rows[2].contains("rollback"), "{}", rows[2]);
    assert!(out.stdout.contains("route route53:"), "{}", out.stdout);

    let out = admin(&world, "h.json", &["history", "--output", "json"]);
    let history: Value = serde_json::from_str(&out.stdout).unwrap();
    let releases = history["releases"].as_array().unwrap();
    let doc = read_json(&world.path("h.json"));
    let journal = doc["journal"].as_array().unwrap();
    let started: Vec<&Value> = journal
        .iter()
        .filter(|e| e["action"] == "shift-started" || e["action"] == "rollback-started")
        .collect();
    assert_eq!(releases.len(), started.len());
    for (r, e) in releases.iter().zip(&started) {
        assert_eq!(r["started_at"], e["at"]);
        assert_eq!(r["actor"], e["actor"]);
    }
    assert_eq!(releases[0]["steps"], 2);
    assert_eq!(releases[1]["outcome"], "completed");
    assert_eq!(releases[2]["kind"], "rollback");
    assert_eq!(
        releases[2]["to"],
        serde_json::json!({"blue": 0, "green": 100})
    );

    let out = admin(&world, "h.json", &["state", "validate"]);
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    std::fs::write(
        world.dir.path().join("bad.json"),
        r#"{"schema": "switchyard/state/v1", "stacks": {"green": {"role": "boss"}}}"#,
    )
    .unwrap();
    let out = admin(
        &world,
        "h.json",
        &[
            "state",
            "validate",
            world.dir.path().join("bad.json").to_str().unwrap(),
        ],
    );
    assert_eq!(out.code, 1, "{}{}", out.stdout, out.stderr);
    assert!(out.stdout.contains("/stacks/green/role"), "{}", out.stdout);
}
