//! Offline tests of a bake with the SDK mocked: what moto does not emulate
//! (images that fail, builders that never stop, CreateImage refused while the
//! instance is still stopping) and the reuse path.

use std::time::Duration;

use aws_sdk_ec2::operation::create_image::CreateImageOutput;
use aws_sdk_ec2::operation::create_tags::CreateTagsOutput;
use aws_sdk_ec2::operation::delete_snapshot::DeleteSnapshotOutput;
use aws_sdk_ec2::operation::deregister_image::DeregisterImageOutput;
use aws_sdk_ec2::operation::describe_images::{DescribeImagesInput, DescribeImagesOutput};
use aws_sdk_ec2::operation::describe_instances::DescribeInstancesOutput;
use aws_sdk_ec2::operation::describe_snapshots::DescribeSnapshotsOutput;
use aws_sdk_ec2::operation::get_console_output::GetConsoleOutputOutput;
use aws_sdk_ec2::operation::run_instances::RunInstancesOutput;
use aws_sdk_ec2::operation::terminate_instances::TerminateInstancesOutput;
use aws_sdk_ec2::types::{
    BlockDeviceMapping, EbsBlockDevice, Image, ImageState, Instance, InstanceState,
    InstanceStateName, Reservation, StateReason, Tag,
};
use aws_smithy_mocks::{mock, mock_client, Rule, RuleMode};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use super::{bake, BakeClients, BakeOptions};
use crate::aws::config::retry_policy;
use crate::image::spec::{BakeSpec, Script, Source, DEFAULT_MARKER};
use crate::image::{BakeError, STATUS_COMPLETE, TAG_BAKE_ID, TAG_STATUS};
use crate::outcome::{Code, ExitStatus};
use crate::state::StateFile;

const SOURCE: &str = "ami-0aaaaaaaaaaaaaaa0";
const BAKED: &str = "ami-0bbbbbbbbbbbbbbb0";
const BUILDER: &str = "i-0123456789abcdef0";

fn spec() -> BakeSpec {
    BakeSpec {
        service: "go-auth".into(),
        version: "1.4.2".into(),
        source: Source::Ami(SOURCE.into()),
        script: Script::BuiltIn,
        pulls: vec!["ghcr.io/acme/go-auth:1.4.2".into()],
        marker: DEFAULT_MARKER.into(),
        instance_type: "t3.small".into(),
        subnet_id: None,
        security_group_ids: Vec::new(),
        copy_to: Vec::new(),
        force: false,
    }
}

fn clients(rules: &[&Rule]) -> BakeClients {
    // Every bake ends by looking for twins of its builder and image (made by
    // a call sent again after its answer was lost): none here.
    let (twin_builders, twin_snapshots) = no_twins();
    let mut all = vec![&twin_builders, &twin_snapshots];
    all.extend_from_slice(rules);
    BakeClients {
        home_region: "us-east-1".into(),
        home: mock_client!(aws_sdk_ec2, RuleMode::MatchAny, &all, |c| c
            .retry_config(retry_policy())),
        copies: std::collections::BTreeMap::new(),
    }
}

fn asks_for_bake(filters: &[aws_sdk_ec2::types::Filter]) -> bool {
    filters
        .iter()
        .any(|f| f.name() == Some("tag:switchyard:bake-id"))
}

/// No builder and no snapshot of this bake beside the ones it knows.
fn no_twins() -> (Rule, Rule) {
    (
        mock!(aws_sdk_ec2::Client::describe_instances)
            .match_requests(|r| asks_for_bake(r.filters()))
            .then_output(|| DescribeInstancesOutput::builder().build()),
        mock!(aws_sdk_ec2::Client::describe_snapshots)
            .then_output(|| DescribeSnapshotsOutput::builder().build()),
    )
}

fn options() -> BakeOptions {
    let mut o = BakeOptions::new(Duration::from_secs(3600), false);
    o.wait_stopped = Duration::from_secs(600);
    o.wait_console = Duration::from_secs(60);
    o.wait_image = Duration::from_secs(600);
    o
}

fn image(id: &str, state: ImageState) -> Image {
    Image::builder()
        .image_id(id)
        .name(id)
        .state(state)
        .creation_date("2026-01-01T00:00:00.000Z")
        .block_device_mappings(
            BlockDeviceMapping::builder()
                .device_name("/dev/xvda")
                .ebs(EbsBlockDevice::builder().snapshot_id("snap-0123").build())
                .build(),
        )
        .build()
}

fn images(list: Vec<Image>) -> DescribeImagesOutput {
    DescribeImagesOutput::builder()
        .set_images(Some(list))
        .build()
}

fn asks_for(req: &DescribeImagesInput, id: &str) -> bool {
    req.image_ids().iter().any(|i| i == id)
}

fn source_rule() -> Rule {
    mock!(aws_sdk_ec2::Client::describe_images)
        .match_requests(|r| asks_for(r, SOURCE))
        .then_output(|| images(vec![image(SOURCE, ImageState::Available)]))
}

/// No complete image with this hash yet.
fn nothing_to_reuse() -> Rule {
    mock!(aws_sdk_ec2::Client::describe_images)
        .match_requests(|r| r.image_ids().is_empty())
        .then_output(|| images(Vec::new()))
}

fn builder(state: InstanceStateName) -> DescribeInstancesOutput {
    DescribeInstancesOutput::builder()
        .reservations(
            Reservation::builder()
                .instances(
                    Instance::builder()
                        .instance_id(BUILDER)
                        .state(InstanceState::builder().name(state).build())
                        .build(),
                )
                .build(),
        )
        .build()
}

fn run_rule() -> Rule {
    mock!(aws_sdk_ec2::Client::run_instances).then_output(|| {
        RunInstancesOutput::builder()
            .instances(Instance::builder().instance_id(BUILDER).build())
            .build()
    })
}

fn stopped_rule() -> Rule {
    mock!(aws_sdk_ec2::Client::describe_instances)
        .sequence()
        .output(|| builder(InstanceStateName::Running))
        .times(2)
        .output(|| builder(InstanceStateName::Stopping))
        .output(|| builder(InstanceStateName::Stopped))
        .repeatedly()
        .build()
}

fn console_rule() -> Rule {
    mock!(aws_sdk_ec2::Client::get_console_output).then_output(|| {
        let text = format!("cloud-init: docker pulled\n{DEFAULT_MARKER}\nreboot: Power down\n");
        GetConsoleOutputOutput::builder()
            .instance_id(BUILDER)
            .output(aws_smithy_types::base64::encode(text.as_bytes()))
            .build()
    })
}

fn tags_rule() -> Rule {
    mock!(aws_sdk_ec2::Client::create_tags).then_output(|| CreateTagsOutput::builder().build())
}

fn terminate_rule() -> Rule {
    mock!(aws_sdk_ec2::Client::terminate_instances)
        .match_requests(|r| r.instance_ids() == [BUILDER])
        .then_output(|| TerminateInstancesOutput::builder().build())
}

fn deregister_rule() -> Rule {
    mock!(aws_sdk_ec2::Client::deregister_image)
        .match_requests(|r| r.image_id() == Some(BAKED))
        .then_output(|| DeregisterImageOutput::builder().build())
}

fn delete_snapshot_rule() -> Rule {
    mock!(aws_sdk_ec2::Client::delete_snapshot)
        .then_output(|| DeleteSnapshotOutput::builder().build())
}

fn create_image_ok() -> Rule {
    mock!(aws_sdk_ec2::Client::create_image)
        .match_requests(|r| r.no_reboot() == Some(true) && r.instance_id() == Some(BUILDER))
        .then_output(|| CreateImageOutput::builder().image_id(BAKED).build())
}

fn read(path: &std::path::Path) -> Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

#[tokio::test(start_paused = true)]
async fn an_image_that_fails_is_reported_with_its_reason_and_removed() {
    let baked = mock!(aws_sdk_ec2::Client::describe_images)
        .match_requests(|r| asks_for(r, BAKED))
        .sequence()
        .output(|| images(vec![image(BAKED, ImageState::Pending)]))
        .times(2)
        .output(|| {
            let mut failed = image(BAKED, ImageState::Failed);
            failed.state_reason = Some(
                StateReason::builder()
                    .code("Client.InternalError")
                    .message("snapshot creation failed: volume is in error state")
                    .build(),
            );
            images(vec![failed])
        })
        .repeatedly()
        .build();
    let (source, reuse, run, stopped, console) = (
        source_rule(),
        nothing_to_reuse(),
        run_rule(),
        stopped_rule(),
        console_rule(),
    );
    let (create, tags, terminate, deregister, snapshots) = (
        create_image_ok(),
        tags_rule(),
        terminate_rule(),
        deregister_rule(),
        delete_snapshot_rule(),
    );
    let clients = clients(&[
        &source,
        &reuse,
        &baked,
        &run,
        &stopped,
        &console,
        &create,
        &tags,
        &terminate,
        &deregister,
        &snapshots,
    ]);
    let dir = tempfile::tempdir().unwrap();
    let state = StateFile::new(dir.path().join("state.json"));
    let err = bake(
        &clients,
        &spec(),
        &options(),
        &state,
        &CancellationToken::new(),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, BakeError::ImageFailed { .. }), "{err}");
    assert_eq!(err.exit_code(), Code::Provider);
    let text = err.to_string();
    assert!(
        text.starts_with(&format!(
            "image {BAKED} in us-east-1 ended in state failed: snapshot creation failed: volume is in error state; cleaned up: terminated the builder {BUILDER}; deregistered the half-made image {BAKED} (us-east-1) and its snapshots snap-0123"
        )),
        "{text}"
    );
    assert_eq!(terminate.num_calls(), 1);
    assert_eq!(deregister.num_calls(), 1);
    assert_eq!(snapshots.num_calls(), 1);
    let doc = read(state.path());
    let last = doc["journal"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(last["action"], "bake-failed");
    assert_eq!(last["outcome"], "failed");
    assert!(doc.get("image").is_none(), "no image recorded: {doc}");
}

#[tokio::test(start_paused = true)]
async fn a_builder_that_never_stops_ends_at_the_deadline_naming_what_was_awaited() {
    let running = mock!(aws_sdk_ec2::Client::describe_instances)
        .then_output(|| builder(InstanceStateName::Running));
    let (source, reuse, run, create, tags, terminate) = (
        source_rule(),
        nothing_to_reuse(),
        run_rule(),
        create_image_ok(),
        tags_rule(),
        terminate_rule(),
    );
    let clients = clients(&[&source, &reuse, &run, &running, &create, &tags, &terminate]);
    let dir = tempfile::tempdir().unwrap();
    let state = StateFile::new(dir.path().join("state.json"));
    let mut opts = options();
    opts.wait_stopped = Duration::from_secs(120);
    let began = tokio::time::Instant::now();
    let err = bake(&clients, &spec(), &opts, &state, &CancellationToken::new())
        .await
        .unwrap_err();
    assert_eq!(err.exit_code(), Code::Provider);
    assert_eq!(
        err.to_string(),
        format!(
            "gave up waiting for builder {BUILDER} to power off after 2m00s (deadline \
             --wait-stopped); cleaned up: terminated the builder {BUILDER}"
        )
    );
    let waited = began.elapsed();
    assert!(
        waited >= Duration::from_secs(120) && waited < Duration::from_secs(125),
        "{waited:?}"
    );
    assert!(
        running.num_calls() >= 5,
        "polled with backoff: {}",
        running.num_calls()
    );
    assert_eq!(create.num_calls(), 0);
    assert_eq!(terminate.num_calls(), 1);

    // --timeout caps every wait, and says so.
    let mut opts = options();
    opts.timeout = Duration::from_secs(30);
    let err = bake(&clients, &spec(), &opts, &state, &CancellationToken::new())
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("after 30s (deadline --timeout)"),
        "{err}"
    );
}

#[tokio::test(start_paused = true)]
async fn create_image_is_retried_while_the_instance_is_still_stopping() {
    let refused = r"<Response><Errors><Error><Code>IncorrectInstanceState</Code><Message>The instance 'i-0123456789abcdef0' is not in a state from which it can be imaged.</Message></Error></Errors><RequestID>r-1</RequestID></Response>";
    let create = mock!(aws_sdk_ec2::Client::create_image)
        .sequence()
        .http_status(400, Some(refused.to_owned()))
        .times(2)
        .output(|| CreateImageOutput::builder().image_id(BAKED).build())
        .build();
    let baked = mock!(aws_sdk_ec2::Client::describe_images)
        .match_requests(|r| asks_for(r, BAKED))
        .then_output(|| images(vec![image(BAKED, ImageState::Available)]));
    let (source, reuse, run, stopped, console, tags, terminate, deregister) = (
        source_rule(),
        nothing_to_reuse(),
        run_rule(),
        stopped_rule(),
        console_rule(),
        tags_rule(),
        terminate_rule(),
        deregister_rule(),
    );
    let clients = clients(&[
        &source,
        &reuse,
        &baked,
        &run,
        &stopped,
        &console,
        &create,
        &tags,
        &terminate,
        &deregister,
    ]);
    let dir = tempfile::tempdir().unwrap();
    let state = StateFile::new(dir.path().join("state.json"));
    let report = bake(
        &clients,
        &spec(),
        &options(),
        &state,
        &CancellationToken::new(),
    )
    .await
    .unwrap();
    assert_eq!(create.num_calls(), 3, "two refusals, then created");
    assert_eq!(report.amis["us-east-1"], BAKED);
    assert!(!report.reused);
    assert_eq!(terminate.num_calls(), 1, "the builder goes on success too");
    assert_eq!(deregister.num_calls(), 0, "a complete image stays");
    let doc = read(state.path());
    assert_eq!(doc["image"]["amis"]["us-east-1"], BAKED);
    assert_eq!(doc["image"]["input_hash"], report.input_hash);
    assert_eq!(doc["image"]["source_image"], SOURCE);
    let actions: Vec<&str> = doc["journal"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(actions, ["bake-started", "builder-launched", "image-baked"]);
    assert!(
        !doc.to_string().contains("docker pull"),
        "the script is never stored, only its hash"
    );
}

#[tokio::test(start_paused = true)]
async fn an_image_with_the_same_inputs_is_reused_and_nothing_is_launched() {
    let spec = spec();
    let hash = spec.input_hash(SOURCE);
    let found = {
        let h = hash.clone();
        mock!(aws_sdk_ec2::Client::describe_images)
            .match_requests(move |r| {
                r.image_ids().is_empty() && r.filters().iter().any(|f| f.values() == [h.clone()])
            })
            .then_output(|| {
                let mut done = image(BAKED, ImageState::Available);
                done.tags = Some(vec![
                    Tag::builder().key(TAG_BAKE_ID).value("bake-1").build(),
                    Tag::builder()
                        .key(TAG_STATUS)
                        .value(STATUS_COMPLETE)
                        .build(),
                ]);
                images(vec![done])
            })
    };
    let (source, run) = (source_rule(), run_rule());
    let clients = clients(&[&source, &found, &run]);
    let dir = tempfile::tempdir().unwrap();
    let state = StateFile::new(dir.path().join("state.json"));
    let report = bake(
        &clients,
        &spec,
        &options(),
        &state,
        &CancellationToken::new(),
    )
    .await
    .unwrap();
    assert!(report.reused);
    assert_eq!(report.amis["us-east-1"], BAKED);
    assert_eq!(report.bake_id.as_deref(), Some("bake-1"));
    assert_eq!(run.num_calls(), 0);
    let doc = read(state.path());
    assert_eq!(doc["image"]["reused"], true);
    assert_eq!(doc["journal"][0]["action"], "image-reused");
}

#[tokio::test(start_paused = true)]
async fn a_dry_run_plans_and_changes_nothing() {
    let (source, reuse, run) = (source_rule(), nothing_to_reuse(), run_rule());
    let clients = clients(&[&source, &reuse, &run]);
    let dir = tempfile::tempdir().unwrap();
    let state = StateFile::new(dir.path().join("state.json"));
    let mut opts = options();
    opts.dry_run = true;
    let mut spec = spec();
    spec.copy_to = vec!["eu-west-1".into()];
    let report = bake(&clients, &spec, &opts, &state, &CancellationToken::new())
        .await
        .unwrap();
    assert!(report.dry_run);
    assert_eq!(run.num_calls(), 0);
    assert!(!state.path().exists());
    assert_eq!(report.plan.len(), 7, "{:#?}", report.plan);
    assert!(report.plan[0].starts_with(&format!(
        "launch a t3.small builder in us-east-1 from {SOURCE}"
    )));
    assert_eq!(
        report.plan[3],
        "copy it to eu-west-1, tag the copy, wait until available"
    );
    assert_eq!(report.plan[5], "terminate the builder");
}

#[tokio::test]
async fn the_newest_source_image_is_picked_and_a_tie_is_an_error() {
    use super::resolve_source;
    let dated = |id: &str, date: &str| {
        let mut i = image(id, ImageState::Available);
        i.creation_date = Some(date.into());
        i
    };
    let newest = mock!(aws_sdk_ec2::Client::describe_images).then_output(move || {
        images(vec![
            dated("ami-0000000000000001a", "2026-01-01T00:00:00.000Z"),
            dated("ami-0000000000000002a", "2026-02-01T00:00:00.000Z"),
        ])
    });
    let filter = Source::Filter {
        name: "base-*".into(),
        owners: vec!["self".into()],
    };
    let client = clients(&[&newest]).home;
    let found = resolve_source(&client, "us-east-1", &filter).await.unwrap();
    assert_eq!(found.id, "ami-0000000000000002a");

    let tie = mock!(aws_sdk_ec2::Client::describe_images).then_output(move || {
        images(vec![
            dated("ami-0000000000000001a", "2026-02-01T00:00:00.000Z"),
            dated("ami-0000000000000002a", "2026-02-01T00:00:00.000Z"),
        ])
    });
    let client = clients(&[&tie]).home;
    let err = resolve_source(&client, "us-east-1", &filter)
        .await
        .unwrap_err();
    assert_eq!(err.exit_code(), Code::Usage);
    assert_eq!(
        err.to_string(),
        "--source-name \"base-*\" matches 2 images created at the same newest time \
         2026-02-01T00:00:00.000Z (ami-0000000000000001a, ami-0000000000000002a); narrow the \
         pattern or give --source-ami"
    );
}

#[test]
fn the_bakes_a_killed_run_left_open_are_the_ones_to_clean_up() {
    use super::unfinished_bakes;
    use crate::state::{Change, JournalEntry, Outcome, StateDocument};
    let entry = |action: &str, id: &str| {
        JournalEntry::new(crate::image::STEP, action, Outcome::Ok).with("bake_id", id)
    };
    let mut doc = StateDocument::default();
    doc.record(entry("bake-started", "done"));
    doc.record(entry("builder-launched", "done"));
    doc.record(entry("image-baked", "done").with("clean", true));
    doc.record(entry("bake-started", "killed-early"));
    doc.record(entry("bake-started", "killed-late"));
    doc.record(entry("builder-launched", "killed-late"));
    doc.record(
        JournalEntry::new(crate::image::STEP, "bake-failed", Outcome::Failed)
            .with("bake_id", "cleanup-failed")
            .with("clean", false),
    );
    doc.record(
        JournalEntry::new(crate::image::STEP, "bake-failed", Outcome::Interrupted)
            .with("bake_id", "interrupted")
            .with("clean", true),
    );
    doc.record(entry("copies-started", "done"));
    // Another step's entry never opens a bake.
    doc.record(
        JournalEntry::new("deploy-standby", "bake-started", Outcome::Ok).with("bake_id", "x"),
    );
    assert_eq!(
        unfinished_bakes(&doc),
        ["cleanup-failed", "done", "killed-early", "killed-late"]
    );

    // A reuse that finished its copies closes the copy; a removal and a sweep close theirs.
    doc.record(entry("image-reused", "done"));
    doc.record(
        JournalEntry::new(crate::image::STEP, "leftovers-removed", Outcome::Ok).with(
            "bake_ids",
            serde_json::json!(["killed-early", "cleanup-failed"]),
        ),
    );
    doc.record(
        JournalEntry::new(crate::image::STEP, "sweep", Outcome::Ok).change(Change {
            resource: "ec2:us-east-1/instance/i-1".into(),
            before: None,
            after: Some("terminated".into()),
            reference: Some("killed-late".into()),
        }),
    );
    assert!(
        unfinished_bakes(&doc).is_empty(),
        "{:?}",
        unfinished_bakes(&doc)
    );
}

#[tokio::test(start_paused = true)]
async fn an_image_made_by_a_create_image_whose_answer_was_lost_is_taken_not_left() {
    // The first CreateImage made the image but its answer was lost (500); the
    // retry is refused: the name, which carries the bake id, is taken.
    let duplicate = r"<Response><Errors><Error><Code>InvalidAMIName.Duplicate</Code><Message>AMI name go-auth-1.4.2-bake is already in use by AMI ami-0bbbbbbbbbbbbbbb0</Message></Error></Errors><RequestID>r-2</RequestID></Response>";
    let create = mock!(aws_sdk_ec2::Client::create_image)
        .sequence()
        .http_status(500, None)
        .http_status(400, Some(duplicate.to_owned()))
        .build();
    let by_name = mock!(aws_sdk_ec2::Client::describe_images)
        .match_requests(|r| {
            r.image_ids().is_empty()
                && r.filters().iter().any(|f| {
                    f.name() == Some("name")
                        && f.values()
                            .iter()
                            .any(|v| v.starts_with("go-auth-1.4.2-bake-"))
                })
        })
        .then_output(|| images(vec![image(BAKED, ImageState::Pending)]));
    let baked = mock!(aws_sdk_ec2::Client::describe_images)
        .match_requests(|r| asks_for(r, BAKED))
        .then_output(|| images(vec![image(BAKED, ImageState::Available)]));
    let (source, reuse, run, stopped, console, tags, terminate, deregister) = (
        source_rule(),
        nothing_to_reuse(),
        run_rule(),
        stopped_rule(),
        console_rule(),
        tags_rule(),
        terminate_rule(),
        deregister_rule(),
    );
    let clients = clients(&[
        &source,
        &by_name,
        &reuse,
        &baked,
        &run,
        &stopped,
        &console,
        &create,
        &tags,
        &terminate,
        &deregister,
    ]);
    let dir = tempfile::tempdir().unwrap();
    let state = StateFile::new(dir.path().join("state.json"));
    let report = bake(
        &clients,
        &spec(),
        &options(),
        &state,
        &CancellationToken::new(),
    )
    .await
    .unwrap();
    assert_eq!(create.num_calls(), 2);
    assert_eq!(by_name.num_calls(), 1);
    assert_eq!(report.amis["us-east-1"], BAKED, "the image is the one made");
    assert_eq!(deregister.num_calls(), 0);
    assert_eq!(terminate.num_calls(), 1);
}

#[tokio::test(start_paused = true)]
async fn twins_made_by_calls_sent_again_are_removed_when_the_bake_ends() {
    // An endpoint that ignored RunInstances' client token and a second image
    // name: a second builder and a second image carry this bake's id.
    const TWIN_BUILDER: &str = "i-0fedcba987654321f";
    const TWIN_IMAGE: &str = "ami-0ccccccccccccccc0";
    let twin_builder = mock!(aws_sdk_ec2::Client::describe_instances)
        .match_requests(|r| asks_for_bake(r.filters()))
        .then_output(|| {
            DescribeInstancesOutput::builder()
                .reservations(
                    Reservation::builder()
                        .instances(
                            Instance::builder()
                                .instance_id(TWIN_BUILDER)
                                .state(
                                    InstanceState::builder()
                                        .name(InstanceStateName::Stopped)
                                        .build(),
                                )
                                .build(),
                        )
                        .build(),
                )
                .build()
        });
    let twin_image = mock!(aws_sdk_ec2::Client::describe_images)
        .match_requests(|r| {
            asks_for_bake(r.filters()) || r.image_ids().iter().any(|i| i == TWIN_IMAGE)
        })
        .then_output(|| images(vec![image(TWIN_IMAGE, ImageState::Available)]));
    let snapshots = mock!(aws_sdk_ec2::Client::describe_snapshots)
        .then_output(|| DescribeSnapshotsOutput::builder().build());
    let terminate_twin = mock!(aws_sdk_ec2::Client::terminate_instances)
        .match_requests(|r| r.instance_ids() == [TWIN_BUILDER])
        .then_output(|| TerminateInstancesOutput::builder().build());
    let deregister_twin = mock!(aws_sdk_ec2::Client::deregister_image)
        .match_requests(|r| r.image_id() == Some(TWIN_IMAGE))
        .then_output(|| DeregisterImageOutput::builder().build());
    let baked = mock!(aws_sdk_ec2::Client::describe_images)
        .match_requests(|r| asks_for(r, BAKED))
        .then_output(|| images(vec![image(BAKED, ImageState::Available)]));
    let (source, reuse, run, stopped, console, create, tags, terminate, delete) = (
        source_rule(),
        nothing_to_reuse(),
        run_rule(),
        stopped_rule(),
        console_rule(),
        create_image_ok(),
        tags_rule(),
        terminate_rule(),
        delete_snapshot_rule(),
    );
    let rules = [
        &twin_builder,
        &twin_image,
        &snapshots,
        &terminate_twin,
        &deregister_twin,
        &source,
        &reuse,
        &baked,
        &run,
        &stopped,
        &console,
        &create,
        &tags,
        &terminate,
        &delete,
    ];
    let clients = BakeClients {
        home_region: "us-east-1".into(),
        home: mock_client!(aws_sdk_ec2, RuleMode::MatchAny, &rules, |c| c
            .retry_config(retry_policy())),
        copies: std::collections::BTreeMap::new(),
    };
    let dir = tempfile::tempdir().unwrap();
    let state = StateFile::new(dir.path().join("state.json"));
    let report = bake(
        &clients,
        &spec(),
        &options(),
        &state,
        &CancellationToken::new(),
    )
    .await
    .unwrap();
    assert_eq!(report.amis["us-east-1"], BAKED);
    assert_eq!(terminate.num_calls(), 1, "the builder");
    assert_eq!(terminate_twin.num_calls(), 1, "and its twin");
    assert_eq!(deregister_twin.num_calls(), 1, "the twin image");
    let doc = read(state.path());
    let baked_entry = doc["journal"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(baked_entry["action"], "image-baked");
    assert_eq!(baked_entry["clean"], true);
    let changes = baked_entry["changes"].to_string();
    assert!(
        changes.contains(TWIN_BUILDER) && changes.contains(TWIN_IMAGE),
        "{changes}"
    );
}
