//! `--dry-run` changes nothing, in every mode of every executable: each runs
//! against moto holding a released service (a weighted group after a
//! shift, an Auto Scaling group, a target group, an image) and a state file
//! with a finished rolling update, and afterwards moto's whole data
//! (`/moto-api/data.json`), the state file and the folder around it are
//! exactly as before.

use std::path::Path;

use serde_json::{json, Value};
use switchyard_tests::aws_cli::{self, aws};

use crate::fixture::{World, NAME};

const IMAGE: &str = "ami-12c6146b";

/// Everything moto holds.
fn moto_data(world: &World) -> Value {
    let url = format!("{}/moto-api/data.json", world.moto.direct_endpoint());
    let out = std::process::Command::new("curl")
        .args(["-sf", &url])
        .output()
        .expect("curl runs");
    assert!(out.status.success(), "GET {url} failed");
    let mut data: Value = serde_json::from_slice(&out.stdout).expect("moto's data is JSON");
    // moto makes a health status object when DescribeTargetHealth is asked
    // about a target it does not know: a read, not a change.
    if let Some(elbv2) = data.get_mut("elbv2").and_then(Value::as_object_mut) {
        elbv2.remove("FakeHealthStatus");
    }
    data
}

/// The JSON paths where `before` and `after` differ (at most 5), with both values.
fn differences(before: &Value, after: &Value) -> Vec<String> {
    fn walk(path: &str, old: &Value, new: &Value, out: &mut Vec<String>) {
        if out.len() >= 5 || old == new {
            return;
        }
        match (old, new) {
            (Value::Object(was), Value::Object(is)) => {
                let added = is.keys().filter(|k| !was.contains_key(*k));
                for key in was.keys().chain(added) {
                    let null = Value::Null;
                    let (from, to) = (was.get(key).unwrap_or(&null), is.get(key).unwrap_or(&null));
                    walk(&format!("{path}/{key}"), from, to, out);
                }
            }
            (Value::Array(was), Value::Array(is)) if was.len() == is.len() => {
                for (i, (from, to)) in was.iter().zip(is).enumerate() {
                    walk(&format!("{path}/{i}"), from, to, out);
                }
            }
            _ => out.push(format!("{path}: {old} -> {new}")),
        }
    }
    let mut out = Vec::new();
    walk("", before, after, &mut out);
    out
}

/// The files of `dir`, by name, with their bytes.
fn files(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut all: Vec<(String, Vec<u8>)> = std::fs::read_dir(dir)
        .expect("the test folder")
        .filter_map(Result::ok)
        .filter(|e| e.path().is_file())
        .map(|e| {
            (
                e.file_name().to_string_lossy().into_owned(),
                std::fs::read(e.path()).unwrap_or_default(),
            )
        })
        .collect();
    all.sort();
    all
}

/// A rolling update of group `web` that finished and waits for --confirm (or --rollback).
fn finished_rolling_update(world: &World) {
    let now = chrono::Utc::now().to_rfc3339();
    let template = aws(
        &world.moto,
        &[
            "ec2",
            "describe-launch-templates",
            "--launch-template-names",
            "web",
        ],
    )["LaunchTemplates"][0]["LaunchTemplateId"]
        .clone();
    let mut doc = world.doc();
    doc["stacks"]["web"] = json!({
        "version": "2",
        "rolling": {
            "group": "web",
            "launch_template_id": template,
            "previous_version": "1",
            "new_version": "2",
            "version": "2",
            "desired_before": 2,
            "max_before": 4,
            "batch_size": 1,
            "start_first": false,
            "batches": 2,
            "batches_done": 2,
            "original": [],
            "launched": [],
            "status": "finished",
            "started_at": now,
            "updated_at": now,
        }
    });
    world.write_doc(&doc);
}

#[test]
fn a_dry_run_of_every_mode_changes_nothing() {
    let world = World::blue_green();
    let shifted = world.shift(&["--to", "green", "--weight", "100", "--force"]);
    assert_eq!(shifted.code, 0, "{}", shifted.stderr);
    // A launch template and a group of 2 on it, as deploy-standby makes for a color.
    aws_cli::create_group(&world.moto, "go-auth-blue", IMAGE, "1", (2, 4));
    aws_cli::create_group(&world.moto, "web", IMAGE, "1", (2, 4));
    let vpc = aws_cli::create_vpc(&world.moto);
    let target_group =
        aws_cli::create_target_group(&world.moto, "hosts", &vpc, &["--target-type", "ip"]);
    let subnet = aws(&world.moto, &["ec2", "describe-subnets"])["Subnets"][0]["SubnetId"]
        .as_str()
        .expect("a subnet")
        .to_owned();
    finished_rolling_update(&world);
    // Two complete images of go-auth, as bakes leave them: a bake with
    // --keep 1 would remove both.
    for name in ["go-auth-1-bake", "go-auth-2-bake"] {
        let image = aws(
            &world.moto,
            &[
                "ec2",
                "register-image",
                "--name",
                name,
                "--root-device-name",
                "/dev/xvda",
                "--block-device-mappings",
                r#"[{"DeviceName":"/dev/xvda","Ebs":{"VolumeSize":8}}]"#,
            ],
        )["ImageId"]
            .as_str()
            .expect("an image id")
            .to_owned();
        aws(
            &world.moto,
            &[
                "ec2",
                "create-tags",
                "--resources",
                &image,
                "--tags",
                "Key=switchyard:service,Value=go-auth",
                "Key=switchyard:bake-status,Value=complete",
            ],
        );
    }
    // Every service read once, so that moto's data holds them all before.
    aws(&world.moto, &["cloudwatch", "describe-alarms"]);
    aws(&world.moto, &["route53", "list-health-checks"]);
    aws(&world.moto, &["ec2", "describe-images", "--owners", "self"]);

    let touched = world.path("touched-by-up");
    let up = format!("touch {}", touched.display());
    // The example spec, aimed at this test's zone: its groups are new there,
    // so a real apply would create them (and their health checks).
    let example = std::fs::read_to_string(crate::fixture::repo().join("docs/examples/routes.json"))
        .expect("the example routes spec");
    let routes = world.path("routes.json");
    std::fs::write(&routes, example.replace("Z0EXAMPLE", &world.zone)).expect("a spec");
    let routes = routes.display().to_string();
    let zone = world.zone.as_str();
    let route = ["--zone-id", zone, "--record-name", NAME];
    let with = |head: &[&str], tail: &[&str]| -> Vec<String> {
        head.iter()
            .chain(tail.iter())
            .map(|a| (*a).to_owned())
            .collect()
    };
    let modes: Vec<(&str, Vec<String>)> = vec![
        (
            "shift-weight",
            with(&route, &["--to", "blue", "--weight", "50", "--force"]),
        ),
        ("shift-weight", with(&route, &["--rollback"])),
        (
            "verify-health",
            with(&["--url", "http://127.0.0.1:9/health"], &[]),
        ),
        (
            "verify-health",
            with(&["route53", "ensure"], &route)
                .into_iter()
                .chain(["--member".into(), "blue=http://52.94.236.10/".into()])
                .collect(),
        ),
        (
            "register-host",
            with(
                &["join", "--service", "go-auth", "--provider", "hetzner"],
                &[
                    "--host-id",
                    "h1",
                    "--address",
                    "10.0.0.7",
                    "--target-group",
                    &target_group,
                ],
            ),
        ),
        (
            "register-host",
            with(
                &["leave", "--provider", "hetzner", "--host-id", "h1"],
                &["--address", "10.0.0.7", "--target-group", &target_group],
            ),
        ),
        (
            "deploy-standby",
            with(
                &[
                    "--service",
                    "go-auth",
                    "--color",
                    "blue",
                    "--app-version",
                    "2",
                ],
                &["--image", IMAGE, "--subnet", &subnet],
            ),
        ),
        (
            "deploy-standby",
            with(
                &[
                    "--service",
                    "go-auth",
                    "--color",
                    "blue",
                    "--app-version",
                    "2",
                ],
                &[
                    "--image",
                    "ami-1234abcd",
                    "--subnet",
                    &subnet,
                    "--keep-versions",
                    "1",
                ],
            ),
        ),
        (
            "deploy-standby",
            with(
                &[
                    "--driver",
                    "command",
                    "--service",
                    "go-auth",
                    "--color",
                    "blue",
                ],
                &["--app-version", "2", "--up", &up],
            ),
        ),
        (
            "deploy-standby",
            with(
                &["retire", "--service", "go-auth", "--retire-after", "0s"],
                &[],
            ),
        ),
        (
            "deploy-standby",
            with(
                &["--strategy", "rolling", "--group", "go-auth-blue"],
                &["--app-version", "3", "--image", "ami-1234abcd"],
            ),
        ),
        (
            "deploy-standby",
            with(&["--confirm", "--group", "web"], &[]),
        ),
        (
            "deploy-standby",
            with(&["--rollback", "--group", "web"], &[]),
        ),
        (
            "bake-ami",
            with(
                &["--service", "go-auth", "--app-version", "2"],
                &["--source-ami", IMAGE],
            ),
        ),
        (
            "bake-ami",
            with(
                &["--service", "go-auth", "--app-version", "2", "--keep", "1"],
                &["--source-ami", IMAGE, "--force"],
            ),
        ),
        ("bake-ami", with(&["sweep", "--older-than", "0s"], &[])),
        ("switchyard", with(&["lock", "release"], &route)),
        (
            "switchyard",
            with(&["route", "apply", "--spec", &routes], &[]),
        ),
    ];

    let data = moto_data(&world);
    let folder = files(world.dir.path());
    for (name, args) in modes {
        let what = format!("{name} {} --dry-run", args.join(" "));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let mut line = args.clone();
        line.push("--dry-run");
        let out = world.run(name, &line);
        assert!(
            [0, 1, 2, 5].contains(&out.code),
            "{what}: exit {}\n{}{}",
            out.code,
            out.stdout,
            out.stderr
        );
        world.moto.wait_idle();
        let changed = differences(&data, &moto_data(&world));
        assert!(
            changed.is_empty(),
            "{what} changed moto's resources (exit {}):\n{}\n{}",
            out.code,
            changed.join("\n"),
            out.stderr
        );
        assert!(
            files(world.dir.path()) == folder,
            "{what} changed the state file or the folder around it (exit {}):\n{}",
            out.code,
            out.stderr
        );
        assert!(!touched.exists(), "{what} ran the --up command");
    }
    // The retention of that bake's dry run lists both images it would remove.
    let out = world.run(
        "bake-ami",
        &[
            "--service",
            "go-auth",
            "--app-version",
            "2",
            "--keep",
            "1",
            "--source-ami",
            IMAGE,
            "--force",
            "--dry-run",
            "--output",
            "json",
        ],
    );
    let plan = crate::fixture::ok_json(&out);
    let retired = plan["retention"]["retired"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert_eq!(retired.len(), 2, "{}{}", out.stdout, out.stderr);
}
