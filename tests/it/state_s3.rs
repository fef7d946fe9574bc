//! The state in S3 (`--state s3://BUCKET/KEY`), on moto's S3: it outlives a
//! run (release N+1 sees release N), it is read with its ETag and written on a
//! condition, and a write another run overtook merges both runs' changes or
//! stops with exit 5 naming what both changed.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use serde_json::Value;
use switchyard::outcome::{Code, ExitStatus};
use switchyard::state::{StateError, StateFile, StateLocation};
use switchyard_tests::aws_cli::{self, w};
use switchyard_tests::steps::{run, step};
use switchyard_tests::HealthServer;

use crate::fixture::{runtime, sdk_config, World, FAST_GATE};

const BUCKET: &str = "acme-releases";
const KEY: &str = "go-auth/prod/switchyard-state.json";

fn url() -> String {
    format!("s3://{BUCKET}/{KEY}")
}

/// The bucket, made with the aws CLI.
fn bucket(world: &World) {
    aws_cli::aws(&world.moto, &["s3api", "create-bucket", "--bucket", BUCKET]);
}

/// The state object as the aws CLI reads it, and its ETag.
fn object(world: &World) -> (Value, String) {
    let out = world.path("object.json");
    let head = aws_cli::aws(
        &world.moto,
        &[
            "s3api",
            "get-object",
            "--bucket",
            BUCKET,
            "--key",
            KEY,
            out.to_str().unwrap(),
        ],
    );
    let doc = crate::fixture::read_json(&out);
    (doc, head["ETag"].as_str().unwrap_or_default().to_owned())
}

/// The environment of a step whose state is the S3 object: no local file.
fn env(world: &World) -> Vec<(String, String)> {
    let mut env = world.moto.env();
    env.push(("SWITCHYARD_STATE".into(), url()));
    env.push((
        "SWITCHYARD_HOOKS_DIR".into(),
        world.hooks().display().to_string(),
    ));
    env
}

fn verify(world: &World, stack: &str, health: &str) {
    let mut cmd = step("verify-health", &env(world));
    cmd.args(["--stack", stack, "--url", health]);
    let out = run(&mut cmd);
    assert_eq!(out.code, 0, "{}", out.stderr);
}

fn shift(world: &World, to: &str, gate: &str) -> switchyard_tests::steps::StepOutput {
    let mut cmd = step("shift-weight", &env(world));
    cmd.args([
        "--zone-id",
        &world.zone,
        "--record-name",
        crate::fixture::NAME,
        "--settle",
        "0s",
        "--to",
        to,
        "--steps",
        "50,100",
        "--gate-url",
        gate,
    ]);
    cmd.args(FAST_GATE);
    run(&mut cmd)
}

#[test]
fn releases_that_share_an_s3_state_see_each_other() {
    let world = World::blue_green();
    bucket(&world);
    let healthy = HealthServer::start(None, None).unwrap();

    // The policy names the object and nothing else of S3.
    let mut cmd = step("shift-weight", &env(&world));
    cmd.args(["--to", "green", "--weight", "50", "--print-iam-policy"]);
    cmd.args([
        "--zone-id",
        &world.zone,
        "--record-name",
        crate::fixture::NAME,
    ]);
    let out = run(&mut cmd);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let policy: Value = serde_json::from_str(&out.stdout).unwrap();
    let state = policy["Statement"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["Sid"] == "State")
        .unwrap_or_else(|| panic!("a State statement in {policy:#}"));
    assert_eq!(
        state["Action"],
        serde_json::json!(["s3:GetObject", "s3:PutObject"])
    );
    assert_eq!(
        state["Resource"],
        serde_json::json!([format!("arn:aws:s3:::{BUCKET}/{KEY}")])
    );

    // Release 1: green. Every step is a new process with no local state.
    verify(&world, "green", &healthy.url());
    let (doc, first_etag) = object(&world);
    assert_eq!(doc["health"]["green"]["status"], "healthy", "{doc:#}");
    let out = shift(&world, "green", &healthy.url());
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(world.weights(), w(&[("blue", 0), ("green", 100)]));
    let (_, etag) = object(&world);
    assert_ne!(etag, first_etag, "each write makes a new version");

    // Release 2 reads release 1's state: it moves back to blue, and the
    // rollback it would do restores release 1's weights.
    verify(&world, "blue", &healthy.url());
    let out = shift(&world, "blue", &healthy.url());
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(world.weights(), w(&[("blue", 100), ("green", 0)]));

    let mut cmd = step("switchyard", &env(&world));
    cmd.args(["history", "--output", "json"]);
    let out = run(&mut cmd);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let history: Value = serde_json::from_str(&out.stdout).unwrap();
    let releases = history["releases"].as_array().unwrap();
    let targets: Vec<&str> = releases
        .iter()
        .map(|r| r["target"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(targets, ["green", "blue"], "{history:#}");

    let mut cmd = step("switchyard", &env(&world));
    cmd.args(["state", "validate"]);
    let out = run(&mut cmd);
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    assert!(out.stdout.contains(&url()), "{}", out.stdout);
}

/// A second writer that lands while a shift is under way (at its gate): the
/// shift's next write is refused (412), merges the other run's verdict, and
/// the shift goes on.
#[test]
fn a_shift_overtaken_by_another_writer_merges_and_goes_on() {
    let world = World::blue_green();
    bucket(&world);
    let healthy = HealthServer::start(None, None).unwrap();
    verify(&world, "green", &healthy.url());

    // The gate's first probe runs verify-health on another stack, writing
    // the object while the shift holds an older version.
    let wrote = Arc::new(AtomicBool::new(false));
    let writer_env = env(&world);
    let health_url = healthy.url();
    let flag = Arc::clone(&wrote);
    let gate = HealthServer::start(
        None,
        Some(Arc::new(move |_| {
            if !flag.swap(true, Ordering::SeqCst) {
                let mut cmd = step("verify-health", &writer_env);
                cmd.args([
                    "--stack",
                    "canary-probe",
                    "--url",
                    &health_url,
                    "--no-hooks",
                ]);
                let out = run(&mut cmd);
                assert_eq!(out.code, 0, "{}", out.stderr);
            }
        })),
    )
    .unwrap();
    let out = shift(&world, "green", &gate.url());
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(wrote.load(Ordering::SeqCst));
    assert!(
        out.stderr
            .contains("merging this run's changes with the other run's"),
        "{}",
        out.stderr
    );
    let (doc, _) = object(&world);
    assert_eq!(
        doc["health"]["canary-probe"]["status"], "healthy",
        "{doc:#}"
    );
    let route = doc["traffic"].as_object().unwrap().values().next().unwrap();
    assert_eq!(route["weights"]["green"], 100, "{doc:#}");
    let steps = crate::fixture::journal_steps(&doc);
    assert!(steps.contains(&"verify-health") && steps.contains(&"shift-weight"));
    assert_eq!(world.weights(), w(&[("blue", 0), ("green", 100)]));
}

/// Two handles on one object, in-process on moto's S3 (its real 412s): a
/// change to different entries merges; the same entry changed two ways is a
/// conflict (exit 5) that writes nothing.
#[test]
fn conditional_writes_merge_or_refuse() {
    let world = World::new();
    bucket(&world);
    let config = sdk_config(&world.moto.endpoint(), "us-east-1");
    let client = aws_sdk_s3::Client::from_conf(
        aws_sdk_s3::config::Builder::from(&config)
            .force_path_style(true)
            .build(),
    );
    let location = StateLocation::parse(&url()).unwrap();
    let open = || StateFile::with_s3_client(location.clone(), client.clone());
    runtime().block_on(async {
        let (ours, theirs) = (open(), open());
        let mut mine = ours.load().await.unwrap();
        let mut other = theirs.load().await.unwrap();
        // Both saw no object: the first write wins If-None-Match, the other merges.
        other.stack_mut("green").version = Some("2.0.0".into());
        theirs.save(&mut other).await.unwrap();
        mine.stack_mut("blue").version = Some("1.9.0".into());
        ours.save(&mut mine).await.unwrap();
        let (doc, _) = object(&world);
        assert_eq!(doc["stacks"]["green"]["version"], "2.0.0", "{doc:#}");
        assert_eq!(doc["stacks"]["blue"]["version"], "1.9.0", "{doc:#}");
        assert_eq!(mine.stacks["green"].version.as_deref(), Some("2.0.0"));

        // Now both change green.
        other = theirs.load().await.unwrap();
        other.stack_mut("green").version = Some("2.0.1".into());
        mine.stack_mut("green").version = Some("2.1.0".into());
        theirs.save(&mut other).await.unwrap();
        let err = ours.save(&mut mine).await.unwrap_err();
        assert!(matches!(err, StateError::Conflict { .. }), "{err}");
        assert_eq!(err.exit_code(), Code::Conflict);
        assert!(err.to_string().contains("stacks.green"), "{err}");
        let (doc, _) = object(&world);
        assert_eq!(doc["stacks"]["green"]["version"], "2.0.1", "{doc:#}");
    });
}

#[test]
fn a_missing_bucket_or_a_bad_url_is_named() {
    let world = World::new();
    let mut cmd = step("switchyard", &world.moto.env());
    cmd.args(["history", "--state", "s3://no-such-bucket-here/k.json"]);
    let out = run(&mut cmd);
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(
        out.stderr
            .contains("bucket no-such-bucket-here does not exist"),
        "{}",
        out.stderr
    );
    let mut cmd = step("switchyard", &world.moto.env());
    cmd.args(["history", "--state", "s3://Bucket/"]);
    let out = run(&mut cmd);
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(out.stderr.contains("s3://Bucket/"), "{}", out.stderr);
}

/// One release of a service at a time: while deploy-standby holds the
/// release lock beside the S3 state (`KEY.lock`), a second deploy-standby
/// of the service exits 5 naming the holder and changes nothing, and
/// `switchyard lock status --release-lock` shows it held; once the first
/// is done the lock is gone and the next release proceeds.
#[test]
fn one_release_of_a_service_at_a_time() {
    let world = World::new();
    bucket(&world);
    let bin = switchyard_tests::steps::bin_dir();
    let deploy = |color: &str| {
        format!(
            "{} --driver command --service go-auth --color {color} --app-version 2 \
             --up 'true' --down 'true' --endpoints 'echo http://127.0.0.1:9/{{color}}'",
            bin.join("deploy-standby").display()
        )
    };
    // At its decision point (the lock taken, nothing changed yet), the first
    // run starts a second release of the service and asks who holds the lock.
    let report = world.path("second.txt");
    world.hook(
        "pre-deploy-standby",
        &format!(
            "{second} --no-hooks --lock-message 'the other pipeline' > {out} 2>&1; echo \"exit $?\" >> {out}; \
             {status} lock status --release-lock --no-hooks >> {out} 2>&1; echo \"status $?\" >> {out}",
            second = deploy("blue"),
            out = report.display(),
            status = bin.join("switchyard").display(),
        ),
    );
    let mut cmd = std::process::Command::new("sh");
    cmd.env_clear().envs(env(&world)).args([
        "-c",
        &format!("{} --lock-message 'release 2'", deploy("green")),
    ]);
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let second = std::fs::read_to_string(&report).unwrap();
    assert!(second.contains("exit 5"), "{second}");
    assert!(
        second.contains(&format!("{}.lock is held by", url()))
            && second.contains("another release of this service is running"),
        "{second}"
    );
    assert!(second.contains("status 5"), "{second}");
    assert!(second.contains("(release 2)"), "{second}");
    // The second run changed nothing: blue is not in the state.
    let (doc, _) = object(&world);
    assert!(doc["stacks"].get("blue").is_none(), "{doc:#}");
    assert_eq!(doc["stacks"]["green"]["version"], "2", "{doc:#}");

    // The lock was given back: the object is gone and the next release runs.
    let mut cmd = step("switchyard", &env(&world));
    cmd.args(["lock", "status", "--release-lock"]);
    let out = run(&mut cmd);
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    assert!(out.stdout.contains("free"), "{}", out.stdout);
    std::fs::remove_file(world.hooks().join("pre-deploy-standby")).unwrap();
    let mut cmd = std::process::Command::new("sh");
    cmd.env_clear()
        .envs(env(&world))
        .args(["-c", &format!("{} --no-hooks", deploy("blue"))]);
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
