//! bake-ami against moto's server, cross-checked with the aws CLI.
//!
//! moto's instances run at once and never stop by themselves: a test stops
//! the builder (found by its `switchyard:purpose=bake` tag) as the
//! provisioning script's poweroff would. moto's console output is a fixed
//! text (a Xen kernel boot log), so the bakes that succeed set the success
//! marker to a line of it; the default marker is absent from it, which is how
//! a failed provisioning looks.

use std::collections::BTreeMap;
use std::ops::Deref;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::Value;
use switchyard_tests::aws_cli::{self, aws, tags};
use switchyard_tests::steps::{run, step, StepOutput};
use switchyard_tests::Moto;

use crate::fixture::{self, journal_actions, ok_json, read_json, runtime, sdk_config};

/// A line of moto's fixed console output.
const MOTO_CONSOLE_LINE: &str = "Enabling fast FPU save and restore... done.";

/// Images a bake made (the base images are this account's too).
const BAKED_ONLY: &str = "Name=tag-key,Values=switchyard:bake-id";

struct Fixture(fixture::Fixture);

impl Deref for Fixture {
    type Target = fixture::Fixture;

    fn deref(&self) -> &fixture::Fixture {
        &self.0
    }
}

impl Fixture {
    fn new() -> Self {
        Self(fixture::Fixture::new())
    }

    /// Registers a base image named `name` and returns its id.
    fn base_image(&self, name: &str) -> String {
        let out = aws(
            &self.moto,
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
        );
        out["ImageId"].as_str().unwrap().to_owned()
    }

    fn command(&self, args: &[&str]) -> Command {
        self.command_env(&self.moto.env(), args)
    }

    fn command_env(&self, env: &[(String, String)], args: &[&str]) -> Command {
        let mut cmd = step("bake-ami", env);
        cmd.arg("--state")
            .arg(self.state())
            .args(["--hooks-dir"])
            .arg(self.path("no-hooks"))
            .args(args);
        cmd
    }

    fn run(&self, args: &[&str]) -> StepOutput {
        run(&mut self.command(args))
    }

    /// Runs a bake while a helper thread stops its builder, as the script's poweroff would.
    fn bake_with_poweroff(&self, args: &[&str]) -> (StepOutput, String) {
        let stopper = Stopper::start(&self.moto);
        let out = self.run(args);
        let builder = stopper.finish();
        (out, builder.unwrap_or_default())
    }

    fn spawn(&self, args: &[&str]) -> Child {
        self.command(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    }

    fn instances(&self, filters: &[&str]) -> Vec<Value> {
        let mut args = Vec::new();
        if !filters.is_empty() {
            args.push("--filters");
            args.extend_from_slice(filters);
        }
        aws_cli::instances(&self.moto, &args)
    }

    fn instance_state(&self, id: &str) -> String {
        let out = aws(
            &self.moto,
            &["ec2", "describe-instances", "--instance-ids", id],
        );
        out["Reservations"][0]["Instances"][0]["State"]["Name"]
            .as_str()
            .unwrap()
            .to_owned()
    }

    fn images(&self, region: &str, filters: &[&str]) -> Vec<Value> {
        let mut args = vec![
            "ec2",
            "describe-images",
            "--owners",
            "self",
            "--region",
            region,
        ];
        if !filters.is_empty() {
            args.push("--filters");
            args.extend_from_slice(filters);
        }
        aws(&self.moto, &args)["Images"].as_array().unwrap().clone()
    }

    fn image(&self, region: &str, id: &str) -> Value {
        let out = aws(
            &self.moto,
            &[
                "ec2",
                "describe-images",
                "--region",
                region,
                "--image-ids",
                id,
            ],
        );
        out["Images"][0].clone()
    }

    fn snapshot_tags(&self, region: &str, id: &str) -> BTreeMap<String, String> {
        let out = aws(
            &self.moto,
            &[
                "ec2",
                "describe-snapshots",
                "--region",
                region,
                "--snapshot-ids",
                id,
            ],
        );
        tags(&out["Snapshots"][0])
    }
}

/// Stops the first bake builder it sees running, from a thread.
struct Stopper {
    done: Arc<AtomicBool>,
    thread: JoinHandle<Option<String>>,
}

impl Stopper {
    fn start(moto: &Moto) -> Self {
        let env = moto.env();
        let done = Arc::new(AtomicBool::new(false));
        let flag = done.clone();
        let thread = std::thread::spawn(move || {
            let deadline = Instant::now() + Duration::from_secs(60);
            while !flag.load(Ordering::SeqCst) && Instant::now() < deadline {
                if let Some(id) = running_builder(&env) {
                    cli(&env, &["ec2", "stop-instances", "--instance-ids", &id]);
                    return Some(id);
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            None
        });
        Self { done, thread }
    }

    fn finish(self) -> Option<String> {
        self.done.store(true, Ordering::SeqCst);
        self.thread.join().unwrap()
    }
}

fn cli(env: &[(String, String)], args: &[&str]) -> Value {
    aws_cli::call(env, args).unwrap_or_else(|e| panic!("{e:#}"))
}

/// The id of a running instance tagged as a bake builder.
fn running_builder(env: &[(String, String)]) -> Option<String> {
    let out = cli(
        env,
        &[
            "ec2",
            "describe-instances",
            "--filters",
            "Name=tag:switchyard:purpose,Values=bake",
            "Name=instance-state-name,Values=running",
            "--query",
            "Reservations[].Instances[].InstanceId",
        ],
    );
    out.as_array()?.first()?.as_str().map(str::to_owned)
}

fn wait_for_builder(fx: &Fixture) -> String {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(id) = running_builder(&fx.moto.env()) {
            return id;
        }
        assert!(Instant::now() < deadline, "no builder was launched");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn bake_args<'a>(extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec![
        "--service",
        "go-auth",
        "--source-name",
        "switchyard-base-*",
        "--owner",
        "self",
        "--pull",
        "ghcr.io/acme/go-auth:1.4.2",
        "--success-marker",
        MOTO_CONSOLE_LINE,
        "--output",
        "json",
        "--timeout",
        "2m",
    ];
    args.extend_from_slice(extra);
    args
}

#[test]
fn a_bake_from_a_filtered_base_image_lands_in_two_regions_then_is_reused_and_force_rebuilds() {
    let fx = Fixture::new();
    let base = fx.base_image("switchyard-base-2026.01");
    fx.base_image("another-base-2026.01");
    let manifest = fx.path("manifest.json");
    let manifest_arg = manifest.to_str().unwrap();

    // A dry run resolves and plans, and launches nothing.
    let out = fx.run(&bake_args(&[
        "--app-version",
        "1.4.2",
        "--copy-to",
        "eu-west-1",
        "--dry-run",
    ]));
    let plan = ok_json(&out);
    assert_eq!(plan["dry_run"], true);
    assert!(
        plan["plan"][0]
            .as_str()
            .unwrap()
            .contains(&format!("from {base} (switchyard-base-2026.01)")),
        "{plan}"
    );
    assert_eq!(plan["plan"].as_array().unwrap().len(), 8, "{plan}");
    assert_eq!(
        plan["plan"][7],
        "remove no image of go-auth: none beyond the newest 5 in us-east-1, eu-west-1"
    );
    assert!(fx.instances(&[]).is_empty(), "a dry run launches nothing");

    let (out, builder) = fx.bake_with_poweroff(&bake_args(&[
        "--app-version",
        "1.4.2",
        "--copy-to",
        "eu-west-1",
        "--manifest",
        manifest_arg,
    ]));
    let report = ok_json(&out);
    assert_eq!(report["reused"], false);
    assert_eq!(report["source_image"], base.as_str());
    assert_eq!(report["builder"], builder.as_str());
    let bake_id = report["bake_id"].as_str().unwrap().to_owned();
    let hash = report["input_hash"].as_str().unwrap().to_owned();
    let home = report["amis"]["us-east-1"].as_str().unwrap().to_owned();
    let copy = report["amis"]["eu-west-1"].as_str().unwrap().to_owned();
    assert!(
        out.stderr.contains("waiting") || out.stderr.contains("stopped after"),
        "{}",
        out.stderr
    );

    // Available, tagged, with tagged snapshots, in both regions.
    for (region, id) in [("us-east-1", &home), ("eu-west-1", &copy)] {
        let image = fx.image(region, id);
        assert_eq!(image["State"], "available", "{region}");
        let t = tags(&image);
        assert_eq!(t["switchyard:service"], "go-auth");
        assert_eq!(t["switchyard:version"], "1.4.2");
        assert_eq!(t["switchyard:source-image"], base);
        assert_eq!(t["switchyard:input-hash"], hash);
        assert_eq!(t["switchyard:bake-id"], bake_id);
        assert_eq!(t["switchyard:bake-status"], "complete");
        let snapshot = image["BlockDeviceMappings"][0]["Ebs"]["SnapshotId"]
            .as_str()
            .unwrap();
        let st = fx.snapshot_tags(region, snapshot);
        assert_eq!(st["switchyard:bake-id"], bake_id, "{region} snapshot");
        assert_eq!(st["switchyard:bake-status"], "complete");
    }
    // The builder: launched as asked, and terminated.
    let launched = &fx
        .instances(&[])
        .into_iter()
        .find(|i| i["InstanceId"] == builder.as_str())
        .unwrap();
    assert_eq!(launched["State"]["Name"], "terminated");
    assert_eq!(launched["MetadataOptions"]["HttpTokens"], "required");
    let bt = tags(launched);
    assert_eq!(bt["switchyard:purpose"], "bake");
    assert_eq!(bt["switchyard:bake-id"], bake_id);
    // The state and the manifest.
    let doc = fx.doc();
    assert_eq!(doc["image"]["amis"]["us-east-1"], home.as_str());
    assert_eq!(doc["image"]["amis"]["eu-west-1"], copy.as_str());
    assert_eq!(doc["image"]["input_hash"], hash.as_str());
    assert_eq!(doc["image"]["bake_id"], bake_id.as_str());
    assert_eq!(doc["image"]["source_image"], base.as_str());
    assert_eq!(
        journal_actions(&doc),
        ["bake-started", "builder-launched", "image-baked"]
    );
    let m = read_json(&manifest);
    assert_eq!(
        m["builds"][0]["artifact_id"],
        format!("us-east-1:{home},eu-west-1:{copy}")
    );
    assert_eq!(m["builds"][0]["builder_type"], "amazon-ebs");
    assert_eq!(m["last_run_uuid"], m["builds"][0]["packer_run_uuid"]);

    // Same inputs, a new version: reused, nothing launched.
    let before = fx.instances(&[]).len();
    let out = fx.run(&bake_args(&[
        "--app-version",
        "1.4.3",
        "--copy-to",
        "eu-west-1",
    ]));
    let report = ok_json(&out);
    assert_eq!(report["reused"], true);
    assert_eq!(report["amis"]["us-east-1"], home.as_str());
    assert_eq!(report["amis"]["eu-west-1"], copy.as_str());
    assert_eq!(fx.instances(&[]).len(), before, "no RunInstances call");
    assert_eq!(fx.doc()["image"]["reused"], true);

    // --force rebuilds: a new builder, new images.
    let (out, second_builder) = fx.bake_with_poweroff(&bake_args(&[
        "--app-version",
        "1.4.3",
        "--copy-to",
        "eu-west-1",
        "--force",
    ]));
    let report = ok_json(&out);
    assert_eq!(report["reused"], false);
    assert_ne!(second_builder, builder);
    assert_ne!(report["amis"]["us-east-1"], home.as_str());
    assert_ne!(report["amis"]["eu-west-1"], copy.as_str());
    assert_eq!(
        report["input_hash"],
        hash.as_str(),
        "same inputs, same hash"
    );
    assert_eq!(fx.instances(&[]).len(), before + 1);

    // A sweep never touches complete images.
    let out = fx.run(&[
        "sweep",
        "--older-than",
        "0s",
        "--regions",
        "us-east-1,eu-west-1",
        "--output",
        "json",
    ]);
    let swept = ok_json(&out);
    assert_eq!(swept["leftovers"], serde_json::json!([]));
    assert_eq!(
        fx.images(
            "us-east-1",
            &["Name=tag:switchyard:bake-status,Values=complete"]
        )
        .len(),
        2
    );
    assert_eq!(
        fx.images(
            "eu-west-1",
            &["Name=tag:switchyard:bake-status,Values=complete"]
        )
        .len(),
        2
    );
}

#[test]
fn a_provisioning_without_the_success_marker_fails_and_leaves_nothing() {
    let fx = Fixture::new();
    fx.base_image("switchyard-base-2026.01");
    let mut args = bake_args(&["--app-version", "1.4.2", "--wait-console", "2s"]);
    // The default marker, which moto's console output does not hold.
    let at = args.iter().position(|a| *a == "--success-marker").unwrap();
    args.drain(at..at + 2);
    let (out, builder) = fx.bake_with_poweroff(&args);
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(
        out.stderr.contains(&format!(
            "builder {builder} stopped, but its console output does not show the success marker \
             \"switchyard-bake: provisioning complete\""
        )),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains(MOTO_CONSOLE_LINE),
        "the console tail is shown"
    );
    assert!(out
        .stderr
        .contains(&format!("terminated the builder {builder}")));
    assert_eq!(fx.instance_state(&builder), "terminated");
    assert!(
        fx.images("us-east-1", &[BAKED_ONLY]).is_empty(),
        "no image was made"
    );

    // Ambiguous or missing sources are bad input, before any launch.
    let out = fx.run(&[
        "--service",
        "go-auth",
        "--app-version",
        "1",
        "--source-name",
        "nothing-*",
        "--owner",
        "self",
    ]);
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(
        out.stderr
            .contains("no available image of that name owned by self in us-east-1"),
        "{}",
        out.stderr
    );
    assert_eq!(fx.instances(&[]).len(), 1, "only the first builder");
}

#[test]
fn sigterm_mid_bake_cleans_up_and_after_a_sigkill_sweep_removes_the_leftovers() {
    let fx = Fixture::new();
    fx.base_image("switchyard-base-2026.01");

    // SIGTERM while waiting for the builder to power off.
    let child = fx.spawn(&bake_args(&["--app-version", "1.4.2"]));
    let builder = wait_for_builder(&fx);
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(130), "{stderr}");
    assert!(stderr.contains(&format!("interrupted while waiting for builder {builder} to power off; cleaned up: terminated the builder {builder}")), "{stderr}");
    assert_eq!(fx.instance_state(&builder), "terminated");
    assert!(
        fx.images("us-east-1", &[BAKED_ONLY]).is_empty(),
        "no half-made image"
    );
    let doc = fx.doc();
    let last = doc["journal"].as_array().unwrap().last().unwrap();
    assert_eq!(last["outcome"], "interrupted");

    // SIGKILL: nothing can clean up; the builder stays.
    let mut child = fx.spawn(&bake_args(&["--app-version", "1.4.2"]));
    let killed_builder = wait_for_builder(&fx);
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(fx.instance_state(&killed_builder), "running");
    let bake_id = tags(&fx.instances(&[&format!("Name=instance-id,Values={killed_builder}")])[0])
        ["switchyard:bake-id"]
        .clone();
    let volumes = aws(
        &fx.moto,
        &[
            "ec2",
            "describe-volumes",
            "--filters",
            &format!("Name=tag:switchyard:bake-id,Values={bake_id}"),
        ],
    );
    assert_eq!(
        volumes["Volumes"].as_array().unwrap().len(),
        1,
        "the builder's volume carries the bake id"
    );
    // What a kill after CreateImage leaves too: an image tagged in progress.
    let half = aws(
        &fx.moto,
        &[
            "ec2",
            "create-image",
            "--instance-id",
            &killed_builder,
            "--name",
            "go-auth-half-made",
            "--no-reboot",
            "--tag-specifications",
            &format!("ResourceType=image,Tags=[{{Key=switchyard:bake-id,Value={bake_id}}},{{Key=switchyard:bake-status,Value=in-progress}}]"),
        ],
    )["ImageId"]
        .as_str()
        .unwrap()
        .to_owned();
    let snapshot = fx.image("us-east-1", &half)["BlockDeviceMappings"][0]["Ebs"]["SnapshotId"]
        .as_str()
        .unwrap()
        .to_owned();

    // Younger than the threshold: left alone.
    let out = fx.run(&["sweep", "--older-than", "2h", "--output", "json"]);
    assert_eq!(ok_json(&out)["leftovers"], serde_json::json!([]));
    // A dry run lists, and removes nothing.
    let out = fx.run(&["sweep", "--older-than", "0s", "--dry-run"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stdout
            .starts_with("would remove 2 bake leftover(s) older than 0ms (dry run):"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains(&format!(
            "instance {killed_builder} in us-east-1 (bake {bake_id}"
        )),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout
            .contains(&format!("image {half} in us-east-1 (bake {bake_id}")),
        "{}",
        out.stdout
    );
    assert_eq!(fx.instance_state(&killed_builder), "running");

    let out = fx.run(&["sweep", "--older-than", "0s", "--output", "json"]);
    let report = ok_json(&out);
    assert_eq!(report["leftovers"].as_array().unwrap().len(), 2, "{report}");
    assert_eq!(fx.instance_state(&killed_builder), "terminated");
    assert!(
        fx.images("us-east-1", &[BAKED_ONLY]).is_empty(),
        "the half-made image is gone"
    );
    let snapshots = aws(
        &fx.moto,
        &["ec2", "describe-snapshots", "--owner-ids", "self"],
    );
    assert!(
        !snapshots["Snapshots"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["SnapshotId"] == snapshot.as_str()),
        "its snapshot is gone"
    );
    let last = fx.doc()["journal"]
        .as_array()
        .unwrap()
        .last()
        .unwrap()
        .clone();
    assert_eq!(last["action"], "sweep");
    assert_eq!(last["changes"].as_array().unwrap().len(), 2);
}

/// EC2 in moto through the SDK, in process and directly (not through the
/// recording proxy): the checks of many rounds stay fast, and its calls are
/// not counted as the step's.
#[derive(Clone)]
struct Ec2 {
    clients: BTreeMap<&'static str, aws_sdk_ec2::Client>,
}

impl Ec2 {
    fn new(moto: &Moto) -> Self {
        let client = |region: &'static str| {
            let config = sdk_config(&moto.direct_endpoint(), region);
            (region, aws_sdk_ec2::Client::new(&config))
        };
        Self {
            clients: BTreeMap::from([client("us-east-1"), client("us-west-2")]),
        }
    }

    fn filter(name: &str, values: &[&str]) -> aws_sdk_ec2::types::Filter {
        aws_sdk_ec2::types::Filter::builder()
            .name(name)
            .set_values(Some(values.iter().map(|v| (*v).to_owned()).collect()))
            .build()
    }

    /// The bake builders in these states, in us-east-1.
    fn builders(&self, rt: &tokio::runtime::Runtime, states: &[&str]) -> Vec<String> {
        let out = rt.block_on(
            self.clients["us-east-1"]
                .describe_instances()
                .filters(Self::filter("tag:switchyard:purpose", &["bake"]))
                .filters(Self::filter("instance-state-name", states))
                .send(),
        );
        out.expect("describe-instances")
            .reservations()
            .iter()
            .flat_map(aws_sdk_ec2::types::Reservation::instances)
            .filter_map(|i| i.instance_id().map(str::to_owned))
            .collect()
    }

    /// This account's images in `region` matching `filters`, with their tags.
    fn images(
        &self,
        rt: &tokio::runtime::Runtime,
        region: &str,
        filters: &[(&str, &str)],
    ) -> Vec<(String, BTreeMap<String, String>)> {
        let mut call = self.clients[region].describe_images().owners("self");
        for (name, value) in filters {
            call = call.filters(Self::filter(name, &[value]));
        }
        rt.block_on(call.send())
            .expect("describe-images")
            .images()
            .iter()
            .map(|i| {
                let tags = i
                    .tags()
                    .iter()
                    .map(|t| {
                        (
                            t.key().unwrap_or_default().to_owned(),
                            t.value().unwrap_or_default().to_owned(),
                        )
                    })
                    .collect();
                (i.image_id().unwrap_or_default().to_owned(), tags)
            })
            .collect()
    }

    /// This account's snapshots in `region` still tagged in progress.
    fn half_made_snapshots(&self, rt: &tokio::runtime::Runtime, region: &str) -> Vec<String> {
        rt.block_on(
            self.clients[region]
                .describe_snapshots()
                .owner_ids("self")
                .filters(Self::filter("tag:switchyard:bake-status", &["in-progress"]))
                .send(),
        )
        .expect("describe-snapshots")
        .snapshots()
        .iter()
        .filter_map(|s| s.snapshot_id().map(str::to_owned))
        .collect()
    }
}

/// Powers off every running builder, as the provisioning script would, from
/// a thread of its own.
struct PowerOff {
    done: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl PowerOff {
    fn start(ec2: &Ec2) -> Self {
        let ec2 = ec2.clone();
        let done = Arc::new(AtomicBool::new(false));
        let flag = done.clone();
        let thread = std::thread::spawn(move || {
            let rt = runtime();
            while !flag.load(Ordering::SeqCst) {
                let ids = ec2.builders(&rt, &["running"]);
                if !ids.is_empty() {
                    let _ = rt.block_on(
                        ec2.clients["us-east-1"]
                            .stop_instances()
                            .set_instance_ids(Some(ids))
                            .send(),
                    );
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        });
        Self {
            done,
            thread: Some(thread),
        }
    }
}

impl Drop for PowerOff {
    fn drop(&mut self) {
        self.done.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

const NOT_TERMINATED: &[&str] = &["pending", "running", "stopping", "stopped", "shutting-down"];

/// Kill and resume: bake-ami (with a copy to a second region) killed just
/// after each AWS call of a whole bake and at random; every retry, on the
/// same state file, removes what the killed run left (its bake id was written
/// ahead) and ends with exactly one complete image per region, no builder
/// left in any state but terminated, no half-made image or snapshot, and a
/// state file that validates and names the images. Checked after every round
/// in process, and at the end with the aws CLI over all rounds.
#[test]
fn bake_ami_killed_at_every_call_and_at_random_resumes_leaving_nothing_behind() {
    use crate::fixture::state_validates;
    use crate::kill_resume::{campaign, run_and_kill};
    let fx = Fixture::new();
    fx.base_image("switchyard-base-2026.01");
    let state = fx.state();
    let ec2 = Ec2::new(&fx.moto);
    let rt = runtime();
    let power = PowerOff::start(&ec2);
    let mut round = 0;
    campaign("bake-ami", 10, |at| {
        round += 1;
        let version = format!("1.5.{round}");
        let pull = format!("ghcr.io/acme/go-auth:{version}");
        let args = release_args(&version, &pull);
        let ran = run_and_kill(fx.command(&args), &state, at);
        fx.moto.wait_idle();
        let out = fx.run(&args);
        let context = format!("round {round} ({at:?})");
        assert_eq!(out.code, 0, "{context}: {}{}", out.stdout, out.stderr);
        assert!(state_validates(&state), "{context}");
        assert_baked(&fx, &ec2, &rt, &version, &context);
        ran
    });
    drop(power);

    // The same counts, over every round, through the aws CLI.
    let mut filters = vec!["Name=tag:switchyard:purpose,Values=bake".to_owned()];
    filters.push(format!(
        "Name=instance-state-name,Values={}",
        NOT_TERMINATED.join(",")
    ));
    let filters: Vec<&str> = filters.iter().map(String::as_str).collect();
    assert_eq!(
        fx.instances(&filters),
        Vec::<Value>::new(),
        "no builder left"
    );
    for region in ["us-east-1", "us-west-2"] {
        let half = fx.images(
            region,
            &["Name=tag:switchyard:bake-status,Values=in-progress"],
        );
        assert_eq!(half, Vec::<Value>::new(), "no half-made image in {region}");
        let complete = fx.images(region, &["Name=tag:switchyard:bake-status,Values=complete"]);
        // One image per release, the newest 5 kept (--keep's default); a
        // run killed between DeregisterImage and DeleteSnapshot leaves a
        // snapshot that the next run deletes: one snapshot per image.
        assert_eq!(
            complete.len(),
            round.min(5),
            "the newest releases' images in {region}"
        );
        let snapshots = snapshots(
            &fx,
            region,
            &["Name=tag:switchyard:bake-status,Values=complete"],
        );
        assert_eq!(
            snapshots.len(),
            complete.len(),
            "one snapshot per image in {region}"
        );
    }
}

/// A bake of release `version` with a copy to us-west-2; its image `pull` is
/// pulled in, so each release's inputs differ.
fn release_args<'a>(version: &'a str, pull: &'a str) -> Vec<&'a str> {
    bake_args(&[
        "--app-version",
        version,
        "--pull",
        pull,
        "--copy-to",
        "us-west-2",
    ])
}

/// Checks that release `version` is baked as one clean run bakes it: no
/// builder left in any state but terminated, no half-made image or snapshot,
/// exactly one complete image per region, the state naming them.
fn assert_baked(
    fx: &Fixture,
    ec2: &Ec2,
    rt: &tokio::runtime::Runtime,
    version: &str,
    context: &str,
) {
    let left = ec2.builders(rt, NOT_TERMINATED);
    assert!(left.is_empty(), "{context}: builders left {left:?}");
    let doc = fx.doc();
    for region in ["us-east-1", "us-west-2"] {
        let snapshots = ec2.half_made_snapshots(rt, region);
        assert!(
            snapshots.is_empty(),
            "{context}: in {region}: {snapshots:?}"
        );
        let made = ec2.images(
            rt,
            region,
            &[
                ("tag:switchyard:version", version),
                ("tag:switchyard:bake-status", "complete"),
            ],
        );
        assert_eq!(made.len(), 1, "{context} in {region}: {made:?}");
        assert_eq!(
            doc["image"]["amis"][region],
            made[0].0.as_str(),
            "{context}"
        );
        let half = ec2.images(rt, region, &[("tag:switchyard:bake-status", "in-progress")]);
        assert!(
            half.is_empty(),
            "{context}: half-made in {region}: {half:?}"
        );
    }
}

/// Faults: bake-ami (with a copy to a second region) through the
/// fault-injecting proxy; every run exits 0, or 3 with a state file that
/// validates, and its retry on the same state file ends with nothing left
/// behind.
#[test]
fn bake_ami_completes_or_stops_cleanly_under_20_percent_injected_faults() {
    use crate::faults::{through, Tally, FAULT_RATE};
    use switchyard_tests::fault_proxy::{FaultProxy, Faults};
    let fx = Fixture::new();
    fx.base_image("switchyard-base-2026.01");
    let proxy = FaultProxy::start(&fx.moto.direct_endpoint(), Faults::spread(FAULT_RATE)).unwrap();
    let state = fx.state();
    let ec2 = Ec2::new(&fx.moto);
    let rt = runtime();
    let _power = PowerOff::start(&ec2);
    let env = through(fx.moto.env(), &proxy);
    let mut tally = Tally::default();
    for round in 1..=5 {
        let version = format!("2.0.{round}");
        let pull = format!("ghcr.io/acme/go-auth:{version}");
        let args = release_args(&version, &pull);
        let context = format!("round {round}");
        tally.until_done(&context, &state, || run(&mut fx.command_env(&env, &args)));
        fx.moto.wait_idle();
        assert_baked(&fx, &ec2, &rt, &version, &context);
    }
    tally.report("bake-ami", &proxy);
}

/// `ec2 describe-snapshots` of this account in `region` with `filters`.
fn snapshots(fx: &Fixture, region: &str, filters: &[&str]) -> Vec<Value> {
    let mut args = vec![
        "ec2",
        "describe-snapshots",
        "--owner-ids",
        "self",
        "--region",
        region,
    ];
    if !filters.is_empty() {
        args.push("--filters");
        args.extend_from_slice(filters);
    }
    aws(&fx.moto, &args)["Snapshots"]
        .as_array()
        .unwrap()
        .clone()
}

#[test]
fn seven_bakes_with_keep_5_leave_5_images_and_their_snapshots_and_spare_one_a_template_uses() {
    let fx = Fixture::new();
    fx.base_image("switchyard-base-2026.01");
    let complete = ["Name=tag:switchyard:bake-status,Values=complete"];
    let service_snapshots = [
        "Name=tag:switchyard:service,Values=go-auth",
        "Name=tag:switchyard:bake-status,Values=complete",
    ];
    let version_of = |image: &Value| tags(image)["switchyard:version"].clone();
    let mut first = String::new();
    for n in 1..=7 {
        let version = format!("1.{n}.0");
        if n == 6 {
            // A launch template of the service (deploy-standby tags its
            // templates so) whose only version launches the first image.
            let data = format!(r#"{{"ImageId":"{first}","InstanceType":"t3.micro"}}"#);
            aws(
                &fx.moto,
                &[
                    "ec2",
                    "create-launch-template",
                    "--launch-template-name",
                    "go-auth-blue",
                    "--launch-template-data",
                    &data,
                    "--tag-specifications",
                    "ResourceType=launch-template,Tags=[{Key=service,Value=go-auth}]",
                ],
            );
            // A dry run before the sixth bake: it counts the image it would
            // bake, lists the second image (the first is spared) and changes nothing.
            let before = fx.images("us-east-1", &complete).len();
            let out = fx.run(&bake_args(&[
                "--app-version",
                &version,
                "--force",
                "--copy-to",
                "eu-west-1",
                "--keep",
                "4",
                "--dry-run",
            ]));
            let plan = ok_json(&out);
            let retention = &plan["retention"];
            assert_eq!(retention["keep"], "4", "{plan}");
            let gone: Vec<(&str, &str)> = retention["retired"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| {
                    (
                        r["region"].as_str().unwrap(),
                        r["version"].as_str().unwrap(),
                    )
                })
                .collect();
            assert_eq!(
                gone,
                [
                    ("us-east-1", "1.2.0"),
                    ("eu-west-1", "1.2.0"),
                    ("eu-west-1", "1.1.0")
                ],
                "{plan}"
            );
            assert_eq!(retention["spared"][0]["image"], first.as_str());
            assert!(out
                .stdout
                .contains("the default version of launch template go-auth-blue"));
            assert_eq!(fx.images("us-east-1", &complete).len(), before);
            assert_eq!(fx.images("eu-west-1", &complete).len(), before);
        }
        let (out, _) = fx.bake_with_poweroff(&bake_args(&[
            "--app-version",
            &version,
            "--force",
            "--copy-to",
            "eu-west-1",
            "--keep",
            "5",
        ]));
        let report = ok_json(&out);
        if n == 1 {
            first = report["amis"]["us-east-1"].as_str().unwrap().to_owned();
        }
        // Each region keeps the newest 5; home also the one the template uses.
        let home = fx.images("us-east-1", &complete);
        let copies = fx.images("eu-west-1", &complete);
        assert_eq!(home.len(), if n <= 5 { n } else { 6 }, "after bake {n}");
        assert_eq!(copies.len(), n.min(5), "after bake {n}");
        let retired = report["retention"]["retired"].as_array().unwrap().len();
        assert_eq!(retired, [0, 0, 0, 0, 0, 1, 2][n - 1], "bake {n}: {report}");
    }
    let home = fx.images("us-east-1", &complete);
    let mut versions: Vec<String> = home.iter().map(version_of).collect();
    versions.sort();
    assert_eq!(
        versions,
        ["1.1.0", "1.3.0", "1.4.0", "1.5.0", "1.6.0", "1.7.0"]
    );
    assert!(home.iter().any(|i| i["ImageId"] == first.as_str()));
    let mut versions: Vec<String> = fx
        .images("eu-west-1", &complete)
        .iter()
        .map(version_of)
        .collect();
    versions.sort();
    assert_eq!(versions, ["1.3.0", "1.4.0", "1.5.0", "1.6.0", "1.7.0"]);
    // Every remaining image's snapshots remain, and no other: the removed
    // images' snapshots went with them.
    for region in ["us-east-1", "eu-west-1"] {
        let mut used: Vec<String> = fx
            .images(region, &complete)
            .iter()
            .flat_map(|i| {
                i["BlockDeviceMappings"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .filter_map(|m| m["Ebs"]["SnapshotId"].as_str().map(str::to_owned))
                    .collect::<Vec<_>>()
            })
            .collect();
        used.sort();
        let mut kept: Vec<String> = snapshots(&fx, region, &service_snapshots)
            .iter()
            .map(|s| s["SnapshotId"].as_str().unwrap().to_owned())
            .collect();
        kept.sort();
        assert_eq!(kept, used, "{region}");
        assert_eq!(kept.len(), if region == "us-east-1" { 6 } else { 5 });
    }
    // Journaled: each removal, image and snapshot, in the bake's region.
    let doc = fx.doc();
    let removed: Vec<String> = doc["journal"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == "images-retired")
        .flat_map(|e| e["changes"].as_array().unwrap().clone())
        .map(|c| c["resource"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(removed.len(), 6, "{removed:?}");
    assert_eq!(removed.iter().filter(|r| r.contains("/image/")).count(), 3);
    assert!(crate::fixture::state_validates(&fx.state()));

    // --keep all removes nothing; --keep 0 is refused before any call.
    let out = fx.run(&bake_args(&["--app-version", "1.8.0", "--keep", "0"]));
    assert_eq!(out.code, 2, "{}{}", out.stdout, out.stderr);
    assert!(out.stderr.contains("keep 1 or more"), "{}", out.stderr);
    let (out, _) = fx.bake_with_poweroff(&bake_args(&[
        "--app-version",
        "1.8.0",
        "--force",
        "--keep",
        "all",
    ]));
    let report = ok_json(&out);
    assert!(report.get("retention").is_none(), "{report}");
    assert_eq!(fx.images("us-east-1", &complete).len(), 7);
}
