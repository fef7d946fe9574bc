//! Offline tests of the rolling strategy with the SDK mocked: what moto does
//! not emulate (instances that stay Pending, an instance that dies while
//! launching, throttling, user-data) against a small fake Auto Scaling group
//! driven by the calls the engine makes.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_sdk_autoscaling::operation::describe_auto_scaling_groups::{
    DescribeAutoScalingGroupsError, DescribeAutoScalingGroupsOutput,
};
use aws_sdk_autoscaling::operation::terminate_instance_in_auto_scaling_group::TerminateInstanceInAutoScalingGroupOutput;
use aws_sdk_autoscaling::operation::update_auto_scaling_group::UpdateAutoScalingGroupOutput;
use aws_sdk_autoscaling::types::{
    AutoScalingGroup, Instance as AsgInstance, LaunchTemplateSpecification, LifecycleState,
};
use aws_sdk_ec2::operation::create_launch_template_version::CreateLaunchTemplateVersionOutput;
use aws_sdk_ec2::operation::describe_instances::DescribeInstancesOutput;
use aws_sdk_ec2::operation::describe_launch_template_versions::DescribeLaunchTemplateVersionsOutput;
use aws_sdk_ec2::types::{Instance as Ec2Instance, LaunchTemplateVersion, Reservation};
use aws_smithy_mocks::{mock, mock_client, Rule, RuleMode};
use aws_smithy_types::error::ErrorMetadata;
use serde_json::Value;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::*;
use crate::aws::config::retry_policy;

/// A group that reacts to UpdateAutoScalingGroup and
/// TerminateInstanceInAutoScalingGroup as AWS does, one describe at a time.
#[derive(Debug)]
struct Fake {
    desired: i32,
    max: i32,
    version: String,
    /// (id, lifecycle, version, describes seen while Pending)
    instances: Vec<(String, String, String, u32)>,
    launched: u32,
    /// Describes an instance stays Pending (`u32::MAX`: for ever).
    pending_for: u32,
    /// The first instance launched dies while Pending.
    kill_first_launch: bool,
    terminations: Vec<(String, bool)>,
    target_groups: Vec<String>,
}

impl Fake {
    fn new(instances: usize) -> Arc<Mutex<Self>> {
        Arc::new(Mutex::new(Self {
            desired: i32::try_from(instances).unwrap(),
            max: i32::try_from(instances).unwrap(),
            version: "1".into(),
            instances: (1..=instances)
                .map(|n| (format!("i-old{n}"), "InService".into(), "1".into(), 0))
                .collect(),
            launched: 0,
            pending_for: 1,
            kill_first_launch: false,
            terminations: Vec::new(),
            target_groups: Vec::new(),
        }))
    }

    fn live(&self) -> usize {
        self.instances
            .iter()
            .filter(|i| !i.1.starts_with("Terminat"))
            .count()
    }

    fn reconcile(&mut self) {
        while self.live() < usize::try_from(self.desired).unwrap() {
            self.launched += 1;
            self.instances.push((
                format!("i-new{}", self.launched),
                "Pending".into(),
                self.version.clone(),
                0,
            ));
        }
    }

    fn tick(&mut self) {
        self.instances.retain(|i| !i.1.starts_with("Terminat"));
        let pending_for = self.pending_for;
        let mut died = false;
        for i in &mut self.instances {
            if i.1 == "Pending" {
                if self.kill_first_launch && i.0 == "i-new1" {
                    i.1 = "Terminating".into();
                    died = true;
                    continue;
                }
                i.3 += 1;
                if i.3 >= pending_for {
                    i.1 = "InService".into();
                }
            }
        }
        if died {
            self.kill_first_launch = false;
        }
        self.reconcile();
    }

    fn output(&self) -> DescribeAutoScalingGroupsOutput {
        let group = AutoScalingGroup::builder()
            .auto_scaling_group_name("web")
            .desired_capacity(self.desired)
            .max_size(self.max)
            .min_size(0)
            .set_target_group_arns(Some(self.target_groups.clone()))
            .launch_template(
                LaunchTemplateSpecification::builder()
                    .launch_template_id("lt-1")
                    .version(&self.version)
                    .build(),
            )
            .set_instances(Some(
                self.instances
                    .iter()
                    .map(|(id, state, version, _)| {
                        AsgInstance::builder()
                            .instance_id(id)
                            .lifecycle_state(LifecycleState::from(state.as_str()))
                            .health_status("Healthy")
                            .launch_template(
                                LaunchTemplateSpecification::builder()
                                    .launch_template_id("lt-1")
                                    .version(version)
                                    .build(),
                            )
                            .build()
                    })
                    .collect(),
            ))
            .build();
        DescribeAutoScalingGroupsOutput::builder()
            .auto_scaling_groups(group)
            .build()
    }
}

/// Auto Scaling's throttling error, as the SDK models an unmodeled service error.
fn throttling() -> DescribeAutoScalingGroupsError {
    DescribeAutoScalingGroupsError::generic(
        ErrorMetadata::builder()
            .code("Throttling")
            .message("Rate exceeded")
            .build(),
    )
}

struct Mocks {
    rules: Vec<Rule>,
    ec2: Vec<Rule>,
}

fn mocks(fake: &Arc<Mutex<Fake>>) -> Mocks {
    let f = fake.clone();
    let describe = mock!(aws_sdk_autoscaling::Client::describe_auto_scaling_groups)
        .then_compute_output(move |_| {
            let mut f = f.lock().unwrap();
            f.tick();
            f.output()
        });
    let f = fake.clone();
    let update = mock!(aws_sdk_autoscaling::Client::update_auto_scaling_group).then_compute_output(
        move |input| {
            let mut f = f.lock().unwrap();
            if let Some(v) = input.launch_template().and_then(|t| t.version()) {
                f.version = v.to_owned();
            }
            if let Some(m) = input.max_size() {
                f.max = m;
            }
            if let Some(d) = input.desired_capacity() {
                assert!(d <= f.max, "desired {d} above max {}", f.max);
                f.desired = d;
            }
            f.reconcile();
            UpdateAutoScalingGroupOutput::builder().build()
        },
    );
    let f = fake.clone();
    let terminate = mock!(aws_sdk_autoscaling::Client::terminate_instance_in_auto_scaling_group)
        .then_compute_output(move |input| {
            let mut f = f.lock().unwrap();
            let id = input.instance_id().unwrap().to_owned();
            let decrement = input.should_decrement_desired_capacity().unwrap();
            f.terminations.push((id.clone(), decrement));
            if decrement {
                f.desired -= 1;
            }
            for i in &mut f.instances {
                if i.0 == id {
                    i.1 = "Terminating".into();
                }
            }
            f.reconcile();
            TerminateInstanceInAutoScalingGroupOutput::builder().build()
        });
    let create = mock!(aws_sdk_ec2::Client::create_launch_template_version).then_output(|| {
        CreateLaunchTemplateVersionOutput::builder()
            .launch_template_version(LaunchTemplateVersion::builder().version_number(2).build())
            .build()
    });
    // No version of this update made by an earlier run.
    let versions = mock!(aws_sdk_ec2::Client::describe_launch_template_versions)
        .then_output(|| DescribeLaunchTemplateVersionsOutput::builder().build());
    let instances = mock!(aws_sdk_ec2::Client::describe_instances).then_compute_output(|input| {
        let ids: Vec<String> = input
            .filters()
            .iter()
            .flat_map(|f| f.values().to_vec())
            .collect();
        DescribeInstancesOutput::builder()
            .reservations(
                Reservation::builder()
                    .set_instances(Some(
                        ids.iter()
                            .enumerate()
                            .map(|(n, id)| {
                                Ec2Instance::builder()
                                    .instance_id(id)
                                    .private_ip_address(format!("10.0.0.{}", n + 10))
                                    .build()
                            })
                            .collect(),
                    ))
                    .build(),
            )
            .build()
    });
    Mocks {
        rules: vec![describe, update, terminate],
        ec2: vec![create, versions, instances],
    }
}

fn clients(autoscaling: &[&Rule], ec2: &[&Rule]) -> AsgClients {
    clients_with_elb(autoscaling, ec2, &[])
}

fn clients_with_elb(autoscaling: &[&Rule], ec2: &[&Rule], elbv2: &[&Rule]) -> AsgClients {
    AsgClients {
        cloudwatch: super::super::unused_cloudwatch(),
        autoscaling: mock_client!(aws_sdk_autoscaling, RuleMode::MatchAny, autoscaling, |c| c
            .retry_config(retry_policy())),
        ec2: mock_client!(aws_sdk_ec2, RuleMode::MatchAny, ec2, |c| c
            .retry_config(retry_policy())),
        elbv2: mock_client!(aws_sdk_elasticloadbalancingv2, RuleMode::MatchAny, elbv2),
    }
}

fn settings(start_first: bool) -> RollingSettings {
    RollingSettings {
        stack: "web".into(),
        group: "web".into(),
        version: "2.0".into(),
        image: Some("ami-new".into()),
        user_data: Some("#!/bin/sh\nexport TOKEN_PATH=/etc/app\n".into()),
        batch_size: 2,
        batch_interval: Duration::from_secs(30),
        start_first,
        poll: Backoff {
            initial: Duration::from_secs(2),
            max: Duration::from_secs(10),
        },
    }
}

fn wait(secs: u64) -> Wait {
    Wait {
        deadline: Instant::now() + Duration::from_secs(secs),
        cancel: CancellationToken::new(),
    }
}

fn state() -> (tempfile::TempDir, StateFile) {
    let dir = tempfile::tempdir().unwrap();
    let file = StateFile::new(dir.path().join("state.json"));
    (dir, file)
}

fn saved(file: &StateFile) -> Value {
    serde_json::from_slice(&std::fs::read(file.path()).unwrap()).unwrap()
}

fn all(rules: &[Rule]) -> Vec<&Rule> {
    rules.iter().collect()
}

#[tokio::test(start_paused = true)]
async fn start_first_batches_keep_capacity_and_record_only_the_user_data_hash() {
    let fake = Fake::new(4);
    let m = mocks(&fake);
    let c = clients(&all(&m.rules), &all(&m.ec2));
    let (_dir, file) = state();
    let seen = Mutex::new(Vec::new());
    let check = FnCheck(|b: &Batch| {
        seen.lock().unwrap().push(b.instances.clone());
        BatchVerdict::Pass
    });
    let report = update(&c, &settings(true), &check, &file, &wait(600))
        .await
        .unwrap();
    assert_eq!(report.status, RollingStatus::Finished);
    assert_eq!(report.batches_done, 2);
    let f = fake.lock().unwrap();
    assert_eq!(f.desired, 4);
    assert_eq!(f.max, 4, "max raised for a batch is restored");
    assert!(f.instances.iter().all(|i| i.2 == "2"), "{:?}", f.instances);
    assert_eq!(f.terminations.len(), 4);
    assert!(f
        .terminations
        .iter()
        .all(|(id, dec)| id.starts_with("i-old") && *dec));
    let seen = seen.lock().unwrap();
    assert_eq!(seen[0][0].id, "i-new1");
    assert_eq!(seen[0][0].private_ip.as_deref(), Some("10.0.0.10"));
    let doc = saved(&file);
    let p = &doc["stacks"]["web"]["rolling"];
    assert_eq!(p["status"], "finished");
    assert_eq!(p["user_data_sha256"].as_str().unwrap().len(), 64);
    assert!(!doc.to_string().contains("TOKEN_PATH"));
}

#[tokio::test(start_paused = true)]
async fn new_instances_that_never_come_in_service_hit_the_deadline_then_roll_back() {
    let fake = Fake::new(2);
    fake.lock().unwrap().pending_for = u32::MAX;
    let m = mocks(&fake);
    let c = clients(&all(&m.rules), &all(&m.ec2));
    let (_dir, file) = state();
    let check = FnCheck(|_: &Batch| BatchVerdict::Pass);
    let started = Instant::now();
    let err = update(&c, &settings(false), &check, &file, &wait(300))
        .await
        .unwrap_err();
    assert!(
        matches!(err, RollingError::Stack(StackError::Timeout(_))),
        "{err}"
    );
    assert_eq!(err.exit_code(), Code::Provider);
    assert!(err.to_string().contains("0 new, 2 pending"), "{err}");
    assert!(started.elapsed() <= Duration::from_secs(301));
    let doc = saved(&file);
    assert_eq!(doc["stacks"]["web"]["rolling"]["status"], "failed");
    assert!(doc["stacks"]["web"]["rolling"]["message"]
        .as_str()
        .unwrap()
        .contains("--rollback"));

    // Another update is refused until this one is rolled back (or ends).
    let other = RollingSettings {
        version: "2.1".into(),
        ..settings(false)
    };
    let err = update(&c, &other, &check, &file, &wait(300))
        .await
        .unwrap_err();
    assert_eq!(err.exit_code(), Code::Conflict);
    // The same update run again continues it, here into the same wait.
    let err = update(&c, &settings(false), &check, &file, &wait(300))
        .await
        .unwrap_err();
    assert!(
        matches!(err, RollingError::Stack(StackError::Timeout(_))),
        "{err}"
    );
    let doc = saved(&file);
    let resumed = doc["journal"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == "rolling-resumed")
        .count();
    assert_eq!(resumed, 1, "{doc:#}");
    fake.lock().unwrap().pending_for = 1;
    let report = rollback(&c, &file, "web", settings(false).poll, &wait(300))
        .await
        .unwrap();
    assert_eq!(report.status, RollingStatus::RolledBack);
    let f = fake.lock().unwrap();
    assert_eq!(f.version, "1");
    assert_eq!(f.desired, 2);
    assert!(f.instances.iter().all(|i| i.2 == "1"), "{:?}", f.instances);
}

#[tokio::test(start_paused = true)]
async fn an_instance_terminated_during_launch_is_replaced_and_the_check_sees_the_survivor() {
    let fake = Fake::new(2);
    {
        let mut f = fake.lock().unwrap();
        f.kill_first_launch = true;
        f.pending_for = 2;
    }
    let m = mocks(&fake);
    let c = clients(&all(&m.rules), &all(&m.ec2));
    let (_dir, file) = state();
    let seen = Mutex::new(Vec::new());
    let check = FnCheck(|b: &Batch| {
        seen.lock()
            .unwrap()
            .extend(b.instances.iter().map(|i| i.id.clone()));
        BatchVerdict::Pass
    });
    let mut s = settings(true);
    s.batch_size = 1;
    let report = update(&c, &s, &check, &file, &wait(600)).await.unwrap();
    assert_eq!(report.batches_done, 2);
    let seen = seen.lock().unwrap().clone();
    assert!(!seen.contains(&"i-new1".to_owned()), "{seen:?}");
    assert_eq!(seen.len(), 2);
    let doc = saved(&file);
    let launched = doc["stacks"]["web"]["rolling"]["launched"]
        .as_array()
        .unwrap();
    assert_eq!(launched.len(), 2);
    assert!(!launched.contains(&Value::from("i-new1")));
}

#[tokio::test(start_paused = true)]
async fn throttled_calls_are_retried() {
    let fake = Fake::new(2);
    let m = mocks(&fake);
    // A retried call stays with the rule that answered its first attempt:
    // the throttling answers and the group's answers are one sequence.
    let f = fake.clone();
    let throttled = mock!(aws_sdk_autoscaling::Client::describe_auto_scaling_groups)
        .sequence()
        .error(throttling)
        .times(3)
        .output(move || {
            let mut f = f.lock().unwrap();
            f.tick();
            f.output()
        })
        .repeatedly()
        .build();
    let mut rules = vec![&throttled];
    rules.extend(m.rules.iter());
    let c = clients(&rules, &all(&m.ec2));
    let (_dir, file) = state();
    let check = FnCheck(|_: &Batch| BatchVerdict::Pass);
    let report = update(&c, &settings(false), &check, &file, &wait(600))
        .await
        .unwrap();
    assert_eq!(report.status, RollingStatus::Finished);
    assert!(throttled.num_calls() > 3);
    assert_eq!(
        m.rules[0].num_calls(),
        0,
        "every describe went through the throttled rule"
    );
    assert!(fake.lock().unwrap().instances.iter().all(|i| i.2 == "2"));
}

#[tokio::test(start_paused = true)]
async fn a_failed_start_first_batch_is_rolled_back_with_capacity_restored() {
    let fake = Fake::new(4);
    let m = mocks(&fake);
    let c = clients(&all(&m.rules), &all(&m.ec2));
    let (_dir, file) = state();
    let check = FnCheck(|b: &Batch| {
        if b.number == 1 {
            BatchVerdict::Fail("0/2 endpoints healthy".into())
        } else {
            BatchVerdict::Pass
        }
    });
    let err = update(&c, &settings(true), &check, &file, &wait(600))
        .await
        .unwrap_err();
    assert_eq!(err.exit_code(), Code::RolledBack, "{err}");
    let f = fake.lock().unwrap();
    assert_eq!((f.desired, f.max, f.version.as_str()), (4, 4, "1"));
    let ids: Vec<&str> = f.instances.iter().map(|i| i.0.as_str()).collect();
    assert_eq!(ids, ["i-old1", "i-old2", "i-old3", "i-old4"]);
    assert!(f
        .terminations
        .iter()
        .all(|(id, dec)| id.starts_with("i-new") && *dec));
}

#[tokio::test]
async fn bad_settings_and_confirm_without_an_update_are_refused_before_any_call() {
    let c = clients(&[], &[]);
    let (_dir, file) = state();
    let check = FnCheck(|_: &Batch| BatchVerdict::Pass);
    let mut s = settings(true);
    s.batch_size = 0;
    let err = update(&c, &s, &check, &file, &wait(10)).await.unwrap_err();
    assert_eq!(err.exit_code(), Code::Usage);
    let mut s = settings(true);
    s.image = None;
    s.user_data = None;
    let err = update(&c, &s, &check, &file, &wait(10)).await.unwrap_err();
    assert!(err.to_string().contains("nothing would change"), "{err}");
    let err = confirm(&file, "web").await.unwrap_err();
    assert_eq!(err.exit_code(), Code::Conflict);
}

/// A loopback HTTP server answering every request with `status`.
async fn answering(status: u16) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = [0_u8; 2048];
                let _ = socket.read(&mut buf).await;
                let reply = format!(
                    "HTTP/1.1 {status} X\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"
                );
                let _ = socket.write_all(reply.as_bytes()).await;
            });
        }
    });
    port
}

#[tokio::test]
async fn the_health_engine_check_probes_the_new_instances() {
    let check = |port| HealthBatchCheck {
        probe: HttpProbe::new(Duration::from_secs(2)).unwrap(),
        policy: ProbePolicy {
            interval: Duration::from_millis(20),
            attempts: 3,
            successes: 1,
            failures: 2,
            deadline: Duration::from_secs(10),
            ..ProbePolicy::default()
        },
        url: UrlTemplate {
            port: Some(port),
            ..UrlTemplate::default()
        },
    };
    let batch = |ip: Option<&str>| Batch {
        number: 1,
        of: 2,
        instances: vec![NewInstance {
            id: "i-new1".into(),
            private_ip: ip.map(Into::into),
        }],
        target_groups: Vec::new(),
    };
    let cancel = CancellationToken::new();
    let ok = answering(200).await;
    assert_eq!(
        check(ok)
            .check(&batch(Some("127.0.0.1")), &cancel)
            .await
            .unwrap(),
        BatchVerdict::Pass
    );
    let failing = answering(500).await;
    let verdict = check(failing)
        .check(&batch(Some("127.0.0.1")), &cancel)
        .await
        .unwrap();
    assert!(
        matches!(&verdict, BatchVerdict::Fail(why) if why.contains("0/1")),
        "{verdict:?}"
    );
    let verdict = check(ok).check(&batch(None), &cancel).await.unwrap();
    assert_eq!(
        verdict,
        BatchVerdict::Fail("instance i-new1 has no private IP to probe".into())
    );
}

#[tokio::test(start_paused = true)]
async fn new_instances_must_serve_in_the_target_groups_before_their_check() {
    use aws_sdk_elasticloadbalancingv2::operation::describe_target_groups::DescribeTargetGroupsOutput;
    use aws_sdk_elasticloadbalancingv2::operation::describe_target_health::DescribeTargetHealthOutput;
    use aws_sdk_elasticloadbalancingv2::types::{
        TargetDescription, TargetGroup, TargetHealth, TargetHealthDescription,
        TargetHealthStateEnum,
    };
    const ARN: &str = "arn:aws:elasticloadbalancing:us-east-1:1:targetgroup/web/1";
    let fake = Fake::new(2);
    fake.lock().unwrap().target_groups = vec![ARN.into()];
    let m = mocks(&fake);
    let groups =
        mock!(aws_sdk_elasticloadbalancingv2::Client::describe_target_groups).then_output(|| {
            DescribeTargetGroupsOutput::builder()
                .target_groups(
                    TargetGroup::builder()
                        .target_group_arn(ARN)
                        .port(8080)
                        .build(),
                )
                .build()
        });
    // Each target answers `initial` twice, then `healthy`.
    let calls = Arc::new(Mutex::new(std::collections::BTreeMap::<String, u32>::new()));
    let seen = calls.clone();
    let health = mock!(aws_sdk_elasticloadbalancingv2::Client::describe_target_health)
        .then_compute_output(move |input| {
            let target = input.targets()[0].clone();
            let mut calls = seen.lock().unwrap();
            let n = calls.entry(target.id().unwrap().to_owned()).or_default();
            *n += 1;
            let state = if *n > 2 {
                TargetHealthStateEnum::Healthy
            } else {
                TargetHealthStateEnum::Initial
            };
            DescribeTargetHealthOutput::builder()
                .target_health_descriptions(
                    TargetHealthDescription::builder()
                        .target(
                            TargetDescription::builder()
                                .id(target.id().unwrap())
                                .port(8080)
                                .build(),
                        )
                        .target_health(TargetHealth::builder().state(state).build())
                        .build(),
                )
                .build()
        });
    let c = clients_with_elb(&all(&m.rules), &all(&m.ec2), &[&groups, &health]);
    let (_dir, file) = state();
    let probed = calls.clone();
    let check = FnCheck(move |b: &Batch| {
        let calls = probed.lock().unwrap();
        for i in &b.instances {
            assert_eq!(
                calls.get(&i.id),
                Some(&3),
                "{} checked before it served",
                i.id
            );
        }
        BatchVerdict::Pass
    });
    let report = update(&c, &settings(true), &check, &file, &wait(600))
        .await
        .unwrap();
    assert_eq!(report.batches_done, 1);
    assert_eq!(calls.lock().unwrap().len(), 2);
}

#[tokio::test]
async fn plan_lists_every_batch_and_changes_nothing() {
    let fake = Fake::new(3);
    let m = mocks(&fake);
    let c = clients(&all(&m.rules), &all(&m.ec2));
    let plan = plan(&c, &settings(true)).await.unwrap();
    assert_eq!(
        plan,
        [
            "create launch template lt-1 version from version 1 with image ami-new and new user-data",
            "point group web at the new version",
            "batch 1/2: raise desired capacity to 5 (and max size with it), wait for 2 new \
             instance(s) to be InService and serving, check them, terminate i-old1, i-old2 with \
             desired capacity decremented",
            "batch 2/2: raise desired capacity to 4 (and max size with it), wait for 1 new \
             instance(s) to be InService and serving, check them, terminate i-old3 with desired \
             capacity decremented",
            "record the update as finished: --confirm keeps it, --rollback returns web to version 1",
        ]
    );
    assert_eq!(m.ec2[0].num_calls(), 0, "no version created");
    assert_eq!(m.rules[1].num_calls(), 0, "the group is not updated");
    assert_eq!(m.rules[2].num_calls(), 0, "nothing terminated");
}

/// A start-first update interrupted (as by a signal) 20 s in, while it waits.
async fn interrupted_after_20s<C: BatchCheck>(c: &AsgClients, check: &C, file: &StateFile) {
    let w = wait(600);
    let cancel = w.cancel.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(20)).await;
        cancel.cancel();
    });
    let err = update(c, &settings(true), check, file, &w)
        .await
        .unwrap_err();
    assert_eq!(err.exit_code(), Code::Interrupted, "{err}");
}

#[tokio::test(start_paused = true)]
async fn a_signal_while_waiting_stops_the_update_as_interrupted() {
    let fake = Fake::new(2);
    fake.lock().unwrap().pending_for = u32::MAX;
    let m = mocks(&fake);
    let c = clients(&all(&m.rules), &all(&m.ec2));
    let (_dir, file) = state();
    let check = FnCheck(|_: &Batch| BatchVerdict::Pass);
    interrupted_after_20s(&c, &check, &file).await;
    let doc = saved(&file);
    assert_eq!(doc["stacks"]["web"]["rolling"]["status"], "interrupted");
    let last = doc["journal"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(last["action"], "rolling-stopped");
    assert_eq!(last["outcome"], "interrupted");
}

#[tokio::test(start_paused = true)]
async fn a_start_first_batch_stopped_after_its_raise_continues_without_raising_again() {
    let fake = Fake::new(4);
    fake.lock().unwrap().pending_for = u32::MAX;
    let m = mocks(&fake);
    let c = clients(&all(&m.rules), &all(&m.ec2));
    let (_dir, file) = state();
    let check = FnCheck(|_: &Batch| BatchVerdict::Pass);
    interrupted_after_20s(&c, &check, &file).await;
    {
        let f = fake.lock().unwrap();
        assert_eq!(f.desired, 6, "the first batch of two was raised");
        assert_eq!(saved(&file)["stacks"]["web"]["rolling"]["raised_from"], 4);
    }

    // The retry: the same update continues the raised batch.
    fake.lock().unwrap().pending_for = 1;
    let report = update(&c, &settings(true), &check, &file, &wait(600))
        .await
        .unwrap();
    assert_eq!(report.status, RollingStatus::Finished);
    assert_eq!(report.launch_template_version, "2");
    {
        let f = fake.lock().unwrap();
        assert_eq!(f.desired, 4);
        assert_eq!(
            f.launched, 4,
            "one new instance per old one: {:?}",
            f.instances
        );
        assert!(
            f.terminations.iter().all(|(_, dec)| *dec),
            "{:?}",
            f.terminations
        );
        assert_eq!(f.terminations.len(), 4);
    }
    let doc = saved(&file);
    assert!(doc["stacks"]["web"]["rolling"].get("raised_from").is_none());
    // Run once more: already finished, nothing changes.
    let again = update(&c, &settings(true), &check, &file, &wait(600))
        .await
        .unwrap();
    assert_eq!(again.status, RollingStatus::Finished);
    assert!(again.changes.is_empty(), "{:?}", again.changes);
    assert_eq!(fake.lock().unwrap().launched, 4);
}

#[tokio::test]
async fn a_version_left_by_a_run_stopped_before_recording_it_is_reused() {
    use aws_sdk_ec2::operation::describe_launch_template_versions::DescribeLaunchTemplateVersionsOutput as Versions;
    let fake = Fake::new(2);
    let m = mocks(&fake);
    let made = Made::new(&settings(false), "lt-1");
    let description = made.description("1");
    // The group names version 2 (as `$Latest` would, once the stopped run
    // made it): the search starts there, and the description says it was
    // made from version 1, the way back.
    fake.lock().unwrap().version = "2".into();
    let versions = mock!(aws_sdk_ec2::Client::describe_launch_template_versions)
        .match_requests(|r| r.min_version() == Some("2"))
        .then_output(move || {
            Versions::builder()
                .launch_template_versions(
                    LaunchTemplateVersion::builder()
                        .version_number(3)
                        .version_description(
                            "switchyard rolling update to 2.0 from version 1 [0123456789abcdef]",
                        )
                        .build(),
                )
                .launch_template_versions(
                    LaunchTemplateVersion::builder()
                        .version_number(2)
                        .version_description(&description)
                        .build(),
                )
                .build()
        });
    let create = mock!(aws_sdk_ec2::Client::create_launch_template_version)
        .then_output(|| panic!("the version exists: nothing is created"));
    let instances = m.ec2.last().unwrap();
    let c = clients(&all(&m.rules), &[&versions, &create, instances]);
    let (_dir, file) = state();
    let check = FnCheck(|_: &Batch| BatchVerdict::Pass);
    tokio::time::pause();
    let report = update(&c, &settings(false), &check, &file, &wait(600))
        .await
        .unwrap();
    assert_eq!(report.launch_template_version, "2");
    assert!(
        report.changes[0].contains("found launch template lt-1 version 2, made from version 1"),
        "{:?}",
        report.changes
    );
    assert_eq!(create.num_calls(), 0);
    let doc = saved(&file);
    assert_eq!(doc["stacks"]["web"]["rolling"]["previous_version"], "1");
}
