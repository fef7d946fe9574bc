//! Offline tests of image retention with the SDK mocked: what moto does not
//! emulate (a snapshot another image still uses refused, throttling, a
//! deregistration refused half-way) and which images are spared.

use std::collections::BTreeMap;

use aws_sdk_autoscaling::operation::describe_auto_scaling_groups::DescribeAutoScalingGroupsOutput;
use aws_sdk_autoscaling::types::{
    AutoScalingGroup, Instance as AsgInstance, LaunchTemplateSpecification, LifecycleState,
};
use aws_sdk_ec2::operation::delete_snapshot::DeleteSnapshotOutput;
use aws_sdk_ec2::operation::deregister_image::DeregisterImageOutput;
use aws_sdk_ec2::operation::describe_images::DescribeImagesOutput;
use aws_sdk_ec2::operation::describe_launch_template_versions::DescribeLaunchTemplateVersionsOutput;
use aws_sdk_ec2::operation::describe_launch_templates::DescribeLaunchTemplatesOutput;
use aws_sdk_ec2::operation::describe_snapshots::DescribeSnapshotsOutput;
use aws_sdk_ec2::types::{
    BlockDeviceMapping, EbsBlockDevice, Image, LaunchTemplate, LaunchTemplateVersion,
    ResponseLaunchTemplateData, Snapshot, Tag,
};
use aws_smithy_mocks::{mock, mock_client, Rule, RuleMode};
use serde_json::Value;

use super::{retire, Keep, RegionClients};
use crate::aws::config::retry_policy;
use crate::image::BakeError;
use crate::outcome::{Code, ExitStatus};
use crate::state::{RegionalStack, Stack, StateDocument, StateFile};

const REGION: &str = "us-east-1";

fn ec2_error(code: &str, message: &str) -> String {
    format!(
        "<Response><Errors><Error><Code>{code}</Code><Message>{message}</Message></Error></Errors><RequestID>r-1</RequestID></Response>"
    )
}

/// Image `ami-<n>` of go-auth, version `v<n>`, made on day `n` of January,
/// with snapshot `snap-<n>`.
fn image(n: u32) -> Image {
    Image::builder()
        .image_id(format!("ami-{n}"))
        .name(format!("go-auth-v{n}-bake"))
        .creation_date(format!("2026-01-{n:02}T00:00:00.000Z"))
        .block_device_mappings(
            BlockDeviceMapping::builder()
                .device_name("/dev/xvda")
                .ebs(
                    EbsBlockDevice::builder()
                        .snapshot_id(format!("snap-{n}"))
                        .build(),
                )
                .build(),
        )
        .tags(
            Tag::builder()
                .key("switchyard:service")
                .value("go-auth")
                .build(),
        )
        .tags(
            Tag::builder()
                .key("switchyard:version")
                .value(format!("v{n}"))
                .build(),
        )
        .tags(
            Tag::builder()
                .key("switchyard:bake-status")
                .value("complete")
                .build(),
        )
        .build()
}

/// The service's complete images (a listing) and each one by id (what
/// DeleteImage reads first).
fn images_rules(days: &'static [u32]) -> (Rule, Rule) {
    (
        mock!(aws_sdk_ec2::Client::describe_images)
            .match_requests(|r| {
                r.image_ids().is_empty()
                    && r.filters().iter().any(|f| {
                        f.name() == Some("tag:switchyard:service") && f.values() == ["go-auth"]
                    })
                    && r.filters().iter().any(|f| {
                        f.name() == Some("tag:switchyard:bake-status") && f.values() == ["complete"]
                    })
            })
            .then_output(|| {
                // Out of order: retention sorts by creation date itself.
                let mut list: Vec<Image> = days.iter().map(|n| image(*n)).collect();
                list.reverse();
                list.rotate_left(1);
                DescribeImagesOutput::builder()
                    .set_images(Some(list))
                    .build()
            }),
        mock!(aws_sdk_ec2::Client::describe_images)
            .match_requests(|r| r.image_ids().len() == 1)
            .then_compute_output(|r| {
                let n: u32 = r.image_ids()[0]["ami-".len()..].parse().unwrap();
                DescribeImagesOutput::builder().images(image(n)).build()
            }),
    )
}

/// Template go-auth-green (lt-1): default version 3 launches ami-3, latest
/// version 4 launches ami-4; version 2 (ami-2) is what group go-auth-green
/// still names and version 1 (ami-1) what one of its instances runs.
fn templates_rules(
    group_version: &'static str,
    instance_version: &'static str,
) -> (Rule, Rule, Rule) {
    (
        mock!(aws_sdk_ec2::Client::describe_launch_templates)
            .match_requests(|r| {
                r.filters()
                    .iter()
                    .any(|f| f.name() == Some("tag:service") && f.values() == ["go-auth"])
            })
            .then_output(|| {
                DescribeLaunchTemplatesOutput::builder()
                    .launch_templates(
                        LaunchTemplate::builder()
                            .launch_template_id("lt-1")
                            .launch_template_name("go-auth-green")
                            .default_version_number(3)
                            .latest_version_number(4)
                            .build(),
                    )
                    .build()
            }),
        mock!(aws_sdk_ec2::Client::describe_launch_template_versions)
            .match_requests(|r| r.launch_template_id() == Some("lt-1"))
            .then_compute_output(|r| {
                let versions = r
                    .versions()
                    .iter()
                    .map(|v| {
                        let n: i64 = v.parse().expect("asked by number");
                        LaunchTemplateVersion::builder()
                            .launch_template_id("lt-1")
                            .version_number(n)
                            .launch_template_data(
                                ResponseLaunchTemplateData::builder()
                                    .image_id(format!("ami-{n}"))
                                    .build(),
                            )
                            .build()
                    })
                    .collect();
                DescribeLaunchTemplateVersionsOutput::builder()
                    .set_launch_template_versions(Some(versions))
                    .build()
            }),
        mock!(aws_sdk_autoscaling::Client::describe_auto_scaling_groups)
            .match_requests(|r| {
                r.filters()
                    .iter()
                    .any(|f| f.name() == Some("tag:service") && f.values() == ["go-auth"])
            })
            .then_output(move || {
                let spec = |v: &str| {
                    LaunchTemplateSpecification::builder()
                        .launch_template_id("lt-1")
                        .version(v)
                        .build()
                };
                DescribeAutoScalingGroupsOutput::builder()
                    .auto_scaling_groups(
                        AutoScalingGroup::builder()
                            .auto_scaling_group_name("go-auth-green")
                            .launch_template(spec(group_version))
                            .instances(
                                AsgInstance::builder()
                                    .instance_id("i-1")
                                    .lifecycle_state(LifecycleState::InService)
                                    .health_status("Healthy")
                                    .launch_template(spec(instance_version))
                                    .build(),
                            )
                            .build(),
                    )
                    .build()
            }),
    )
}

fn clients(ec2: &[&Rule], autoscaling: &[&Rule]) -> Vec<RegionClients> {
    // No snapshot of a deregistered image left, unless a test says otherwise.
    let no_orphans = mock!(aws_sdk_ec2::Client::describe_snapshots)
        .then_output(|| DescribeSnapshotsOutput::builder().build());
    let mut ec2 = ec2.to_vec();
    ec2.push(&no_orphans);
    vec![RegionClients {
        region: REGION.into(),
        ec2: mock_client!(aws_sdk_ec2, RuleMode::MatchAny, &ec2, |c| c
            .retry_config(retry_policy())),
        autoscaling: mock_client!(aws_sdk_autoscaling, RuleMode::MatchAny, autoscaling, |c| c
            .retry_config(retry_policy())),
    }]
}

fn deregister(id: &'static str) -> Rule {
    mock!(aws_sdk_ec2::Client::deregister_image)
        .match_requests(move |r| r.image_id() == Some(id))
        .then_output(|| DeregisterImageOutput::builder().build())
}

fn delete_snapshot(id: &'static str) -> Rule {
    mock!(aws_sdk_ec2::Client::delete_snapshot)
        .match_requests(move |r| r.snapshot_id() == Some(id))
        .then_output(|| DeleteSnapshotOutput::builder().build())
}

fn state_naming(image: Option<&str>) -> (tempfile::TempDir, StateFile) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.json");
    let mut doc = StateDocument::default();
    if let Some(ami) = image {
        doc.stacks.insert(
            "blue".into(),
            Stack {
                regions: BTreeMap::from([(
                    REGION.to_owned(),
                    RegionalStack {
                        image: Some(ami.to_owned()),
                        ..RegionalStack::default()
                    },
                )]),
                ..Stack::default()
            },
        );
    }
    std::fs::write(&path, serde_json::to_vec(&doc).unwrap()).unwrap();
    (dir, StateFile::new(path))
}

fn journal(state: &StateFile) -> Vec<Value> {
    let doc: Value = serde_json::from_slice(&std::fs::read(state.path()).unwrap()).unwrap();
    doc["journal"].as_array().cloned().unwrap_or_default()
}

#[test]
fn keep_takes_a_positive_number_or_all_and_refuses_0() {
    assert_eq!(Keep::parse("3").unwrap().count(), Some(3));
    assert_eq!(Keep::parse("all").unwrap(), Keep::All);
    assert_eq!(Keep::parse("ALL").unwrap().count(), None);
    assert!(Keep::parse("0").unwrap_err().contains("keep 1 or more"));
    assert!(Keep::parse("-1").unwrap_err().contains("neither a number"));
    assert_eq!(Keep::DEFAULT.to_string(), "5");
}

#[tokio::test]
async fn images_beyond_the_newest_n_go_with_their_snapshots_unless_in_use() {
    // ami-10 (this bake's), ami-9 and ami-8 are the newest three; ami-5 is
    // what stack blue runs; ami-4 and ami-3 the template's latest and
    // default versions launch; ami-2 is the group's version's, ami-1 the
    // version one instance runs. Only ami-7 and ami-6 go.
    static DAYS: [u32; 10] = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10];
    let (list, by_id) = images_rules(&DAYS);
    let (templates, versions, groups) = templates_rules("2", "1");
    let (d6, d7) = (deregister("ami-6"), deregister("ami-7"));
    let (s6, s7) = (delete_snapshot("snap-6"), delete_snapshot("snap-7"));
    let ec2 = [&list, &by_id, &templates, &versions, &d6, &d7, &s6, &s7];
    let clients = clients(&ec2, &[&groups]);
    let (_dir, state) = state_naming(Some("ami-5"));
    let made = BTreeMap::from([(REGION.to_owned(), "ami-10".to_owned())]);
    let keep = Keep::parse("3").unwrap();
    let r = retire(&clients, "go-auth", keep, &made, (false, false), &state)
        .await
        .unwrap();
    let gone: Vec<&str> = r.retired.iter().map(|i| i.image.as_str()).collect();
    assert_eq!(gone, ["ami-7", "ami-6"], "newest first beyond the newest 3");
    assert_eq!(r.retired[0].snapshots, ["snap-7"]);
    assert_eq!(r.retired[0].version, "v7");
    let spared: BTreeMap<&str, &str> = r
        .spared
        .iter()
        .map(|s| (s.image.as_str(), s.reason.as_str()))
        .collect();
    assert_eq!(spared.len(), 5, "{spared:?}");
    assert!(spared["ami-5"].contains("stack blue"));
    assert!(spared["ami-4"].contains("latest version of launch template go-auth-green"));
    assert!(spared["ami-3"].contains("default version"));
    assert!(spared["ami-2"].contains("Auto Scaling group go-auth-green"));
    assert!(spared["ami-1"].contains("instance i-1"));
    assert_eq!(d6.num_calls() + d7.num_calls(), 2);
    assert_eq!(s6.num_calls() + s7.num_calls(), 2);
    let journal = journal(&state);
    let entry = journal.last().unwrap();
    assert_eq!(entry["action"], "images-retired");
    assert_eq!(entry["outcome"], "ok");
    let resources: Vec<&str> = entry["changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["resource"].as_str().unwrap())
        .collect();
    assert_eq!(
        resources,
        [
            "ec2:us-east-1/image/ami-7",
            "ec2:us-east-1/snapshot/snap-7",
            "ec2:us-east-1/image/ami-6",
            "ec2:us-east-1/snapshot/snap-6"
        ]
    );
    let lines = r.lines(false);
    assert!(lines[0].starts_with("deregistered ami-7 in us-east-1 (version v7"));
}

#[tokio::test]
async fn a_dry_run_lists_and_counts_the_image_it_would_bake_and_changes_nothing() {
    static DAYS: [u32; 3] = [1, 2, 3];
    let (list, by_id) = images_rules(&DAYS);
    // Nothing in use: the template names no image of these.
    let (templates, versions, groups) = templates_rules("9", "9");
    let ec2 = [&list, &by_id, &templates, &versions];
    let clients = clients(&ec2, &[&groups]);
    let (_dir, state) = state_naming(None);
    let keep = Keep::parse("2").unwrap();
    // A build would add a fourth: two of the three existing would go.
    let r = retire(
        &clients,
        "go-auth",
        keep,
        &BTreeMap::new(),
        (true, true),
        &state,
    )
    .await
    .unwrap();
    let gone: Vec<&str> = r.retired.iter().map(|i| i.image.as_str()).collect();
    assert_eq!(gone, ["ami-2", "ami-1"]);
    let lines = r.lines(true);
    assert!(
        lines[0].starts_with("deregister ami-2 in us-east-1"),
        "{lines:?}"
    );
    assert!(lines[0].contains("delete its snapshot(s) snap-2"));
    assert!(journal(&state).is_empty(), "a dry run journals nothing");
    // (No DeregisterImage or DeleteSnapshot rule: a call would fail the run.)
}

#[tokio::test]
async fn keep_all_makes_no_call() {
    let clients = clients(&[], &[]);
    let (_dir, state) = state_naming(None);
    let r = retire(
        &clients,
        "go-auth",
        Keep::All,
        &BTreeMap::new(),
        (false, false),
        &state,
    )
    .await
    .unwrap();
    assert!(r.retired.is_empty() && r.spared.is_empty());
    assert_eq!(r.keep, "all");
}

#[tokio::test(start_paused = true)]
async fn a_snapshot_another_image_uses_is_kept_and_throttling_is_retried() {
    static DAYS: [u32; 2] = [1, 2];
    let (list, by_id) = images_rules(&DAYS);
    let (templates, versions, groups) = templates_rules("9", "9");
    let throttled = mock!(aws_sdk_ec2::Client::deregister_image)
        .sequence()
        .http_status(
            503,
            Some(ec2_error("RequestLimitExceeded", "Request limit exceeded.")),
        )
        .times(2)
        .output(|| DeregisterImageOutput::builder().build())
        .build();
    let in_use = mock!(aws_sdk_ec2::Client::delete_snapshot).then_http_response(|| {
        aws_smithy_runtime_api::http::Response::new(
            aws_smithy_runtime_api::http::StatusCode::try_from(400).unwrap(),
            aws_smithy_types::body::SdkBody::from(ec2_error(
                "InvalidSnapshot.InUse",
                "The snapshot snap-1 is currently in use by ami-9",
            )),
        )
    });
    let ec2 = [&list, &by_id, &templates, &versions, &throttled, &in_use];
    let clients = clients(&ec2, &[&groups]);
    let (_dir, state) = state_naming(None);
    let r = retire(
        &clients,
        "go-auth",
        Keep::parse("1").unwrap(),
        &BTreeMap::new(),
        (false, false),
        &state,
    )
    .await
    .unwrap();
    assert_eq!(throttled.num_calls(), 3, "two throttled answers, then done");
    assert_eq!(r.retired.len(), 1);
    assert!(r.retired[0].snapshots.is_empty());
    assert_eq!(r.retired[0].snapshots_kept, ["snap-1"]);
    assert!(r.lines(false)[0].contains("kept snapshot(s) snap-1: another image still uses them"));
    let journal = journal(&state);
    assert_eq!(
        journal.last().unwrap()["changes"].as_array().unwrap().len(),
        1
    );
}

#[tokio::test]
async fn a_refused_deregistration_stops_with_exit_3_and_journals_what_went_before() {
    static DAYS: [u32; 3] = [1, 2, 3];
    let (list, by_id) = images_rules(&DAYS);
    let (templates, versions, groups) = templates_rules("9", "9");
    let d2 = deregister("ami-2");
    let s2 = delete_snapshot("snap-2");
    let refused = mock!(aws_sdk_ec2::Client::deregister_image)
        .match_requests(|r| r.image_id() == Some("ami-1"))
        .then_http_response(|| {
            aws_smithy_runtime_api::http::Response::new(
                aws_smithy_runtime_api::http::StatusCode::try_from(403).unwrap(),
                aws_smithy_types::body::SdkBody::from(ec2_error(
                    "UnauthorizedOperation",
                    "You are not authorized to perform this operation.",
                )),
            )
        });
    let ec2 = [&list, &by_id, &templates, &versions, &d2, &s2, &refused];
    let clients = clients(&ec2, &[&groups]);
    let (_dir, state) = state_naming(None);
    let err = retire(
        &clients,
        "go-auth",
        Keep::parse("1").unwrap(),
        &BTreeMap::new(),
        (false, false),
        &state,
    )
    .await
    .unwrap_err();
    assert!(matches!(err, BakeError::Provider(_)), "{err}");
    assert_eq!(err.exit_code(), Code::Provider);
    assert!(err.to_string().contains("ec2:DeregisterImage"), "{err}");
    let journal = journal(&state);
    let entry = journal.last().unwrap();
    assert_eq!(entry["action"], "images-retired");
    assert_eq!(entry["outcome"], "failed");
    assert_eq!(entry["changes"][0]["resource"], "ec2:us-east-1/image/ami-2");
    assert_eq!(entry["changes"].as_array().unwrap().len(), 2);
}

#[tokio::test]
async fn a_snapshot_whose_image_an_earlier_run_deregistered_is_deleted() {
    // Killed between DeregisterImage and DeleteSnapshot: snap-9 is tagged as
    // a complete image's, and no image uses it any more.
    static DAYS: [u32; 1] = [3];
    let (list, by_id) = images_rules(&DAYS);
    let tagged = mock!(aws_sdk_ec2::Client::describe_snapshots)
        .match_requests(|r| {
            r.filters()
                .iter()
                .any(|f| f.name() == Some("tag:switchyard:service"))
        })
        .then_output(|| {
            DescribeSnapshotsOutput::builder()
                .snapshots(Snapshot::builder().snapshot_id("snap-9").build())
                .snapshots(Snapshot::builder().snapshot_id("snap-3").build())
                .build()
        });
    let every_image = mock!(aws_sdk_ec2::Client::describe_images)
        .match_requests(|r| r.image_ids().is_empty() && r.filters().is_empty())
        .then_output(|| DescribeImagesOutput::builder().images(image(3)).build());
    let s9 = delete_snapshot("snap-9");
    let ec2 = [&list, &by_id, &tagged, &every_image, &s9];
    let clients = clients(&ec2, &[]);
    let (_dir, state) = state_naming(None);
    let r = retire(
        &clients,
        "go-auth",
        Keep::parse("1").unwrap(),
        &BTreeMap::new(),
        (false, false),
        &state,
    )
    .await
    .unwrap();
    assert!(r.retired.is_empty());
    assert_eq!(r.orphan_snapshots.len(), 1);
    assert_eq!(r.orphan_snapshots[0].snapshot, "snap-9");
    assert_eq!(s9.num_calls(), 1);
    let journal = journal(&state);
    assert_eq!(
        journal.last().unwrap()["changes"][0]["resource"],
        "ec2:us-east-1/snapshot/snap-9"
    );
}
